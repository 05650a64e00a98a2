//! Store behaviour that needs a real Postgres: partitions, connection errors.

use diesel::{Connection, PgConnection, RunQueryDsl};
use strategist::store::{Db, DbUrl, StoreError};

fn pg_base() -> String {
    std::env::var("STRATEGIST_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A new Postgres database, migrated through `open_store`: its name, URL, a connection to the
/// `postgres` database (to drop it at the end) and the store.
fn fresh_store() -> (String, String, PgConnection, Db) {
    let name = format!("strategist_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::establish(&format!("{}/postgres", pg_base())).unwrap();
    diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin).unwrap();
    let url = format!("{}/{name}", pg_base());
    let settings = strategist::config::Settings { database_url: url.clone(), ..Default::default() };
    let db = strategist::startup::open_store(&settings).unwrap();
    (name, url, admin, db)
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

#[test]
fn postgres_log_tables_get_monthly_partitions_ahead() {
    let (name, url, mut admin, db) = fresh_store();
    let mut c = PgConnection::establish(&url).unwrap();
    let parts: Vec<Name> = diesel::sql_query(
        "SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'exposures' ORDER BY 1",
    )
    .load(&mut c)
    .unwrap();
    let today = chrono::Utc::now().date_naive();
    let this_month = format!("exposures_p{}", today.format("%Y_%m"));
    let names: Vec<String> = parts.into_iter().map(|p| p.name).collect();
    assert!(names.contains(&this_month), "{names:?}");
    assert!(names.contains(&"exposures_default".to_string()));
    assert_eq!(names.len(), 4, "default + this month + two ahead: {names:?}");
    // Idempotent.
    strategist::store::partitions::ensure_partitions(&db, today, 2).unwrap();
    drop(db);
    drop(c);
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).unwrap();
}

#[test]
fn an_unreachable_database_reports_the_drivers_message() {
    let url = DbUrl::parse("postgres://postgres@127.0.0.1:1/nothing").unwrap();
    match Db::connect(&url, 2) {
        Err(StoreError::Connect(msg)) => assert!(msg.contains("127.0.0.1") || msg.contains("refused"), "{msg}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connected to port 1?"),
    }
    let err = DbUrl::parse("mysql://h/db").unwrap_err();
    assert!(err.to_string().contains("mysql"));
}

/// Several writer threads committing at once on Postgres: every acknowledged exposure is
/// stored once, each unit ends with exactly one sticky arm and every exposure logged for
/// it carries that arm (claims for the same unit land in different batches on different
/// threads), and a repeated idempotency key stores its reward once. Claims and keys are
/// inserted in key order, so concurrent batches cannot deadlock on each other.
#[test]
fn concurrent_writer_threads_keep_sticky_claims_and_idempotency_consistent() {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use strategist::store::models::{ExposureRow, RewardRow};
    use strategist::store::writer::{
        ExposureWrite, LogWriter, RewardWrite, StickyClaim, WriteItem, WriteOutcome, WriterConfig,
    };

    let (name, url, mut admin, db) = fresh_store();
    let metrics = Arc::new(strategist::telemetry::Metrics::new());
    let cfg = WriterConfig { max_batch: 8, threads: 4, ..Default::default() };
    let (writer, thread) = LogWriter::start(db.clone(), cfg, metrics, Arc::new(AtomicBool::new(true)));

    let now = chrono::Utc::now().naive_utc();
    let arms = ["control", "coupon10", "free_shipping"];
    let exposure = |i: usize, unit: usize| ExposureRow {
        id: uuid::Uuid::new_v4().to_string(),
        experiment_id: 1,
        version: 1,
        unit_hash: format!("unit-{unit:03}"),
        request_id: format!("r-{i}"),
        // Each request proposes a different arm, so a lost claim shows in the answer.
        arm: arms[i % 3].to_string(),
        propensity: 0.2 + 0.1 * (i % 3) as f64,
        pmf: "{}".into(),
        context: "{}".into(),
        policy_version: 1,
        created_at: now,
        features: None,
        shadow_pmf: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (answers, rewards) = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..600 {
            let w = writer.clone();
            let row = exposure(i, i % 40);
            tasks.push(tokio::spawn(async move {
                let sticky = Some(StickyClaim { eligible: None });
                let out = w.write(WriteItem::Exposure(ExposureWrite { row: row.clone(), sticky })).await.unwrap();
                (row, out)
            }));
        }
        let mut rewards = Vec::new();
        for i in 0..60 {
            let w = writer.clone();
            let key = format!("order-{}", i % 20);
            rewards.push(tokio::spawn(async move {
                let row = RewardRow {
                    id: uuid::Uuid::new_v4().to_string(),
                    exposure_id: "e-1".into(),
                    experiment_id: 1,
                    version: 1,
                    arm: "control".into(),
                    metric: "revenue".into(),
                    value: 1.0,
                    raw_value: 1.0,
                    idempotency_key: key.clone(),
                    exposure_created_at: now,
                    created_at: now,
                };
                w.write(WriteItem::Reward(RewardWrite { idempotency_key: key, rows: vec![row] })).await.unwrap()
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let mut outs = Vec::new();
        for t in rewards {
            outs.push(t.await.unwrap());
        }
        (answers, outs)
    });
    drop(writer);
    thread.join().unwrap();

    let mut c = PgConnection::establish(&url).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Held {
        #[diesel(sql_type = diesel::sql_types::Text)]
        unit_hash: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        arm: String,
    }
    let held: Vec<Held> =
        diesel::sql_query("SELECT unit_hash, arm FROM sticky_assignments ORDER BY unit_hash").load(&mut c).unwrap();
    assert_eq!(held.len(), 40, "one claim per unit");
    let held: HashMap<String, String> = held.into_iter().map(|h| (h.unit_hash, h.arm)).collect();
    let stored: Vec<Held> = diesel::sql_query("SELECT unit_hash, arm FROM exposures").load(&mut c).unwrap();
    assert_eq!(stored.len(), 600, "every acknowledged exposure is stored once");
    for s in &stored {
        assert_eq!(held[&s.unit_hash], s.arm, "an exposure of {} logged a different arm", s.unit_hash);
    }
    for (row, out) in &answers {
        let WriteOutcome::Logged { arm, sticky, .. } = out else { panic!("{out:?}") };
        assert_eq!(arm, &held[&row.unit_hash], "the caller was answered the stored arm");
        assert_eq!(sticky.as_ref().map(|s| &s.0), Some(&held[&row.unit_hash]));
    }
    let stored_rewards = rewards.iter().filter(|o| **o == WriteOutcome::Stored).count();
    let duplicates = rewards.iter().filter(|o| **o == WriteOutcome::Duplicate).count();
    assert_eq!((stored_rewards, duplicates), (20, 40));
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: Count = diesel::sql_query("SELECT count(*) AS n FROM rewards").get_result(&mut c).unwrap();
    assert_eq!(n.n, 20, "each idempotency key stored once");
    drop(db);
    drop(c);
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).unwrap();
}
