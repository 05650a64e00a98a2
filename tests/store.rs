//! Store behaviour that needs a real Postgres: partitions, connection errors.

use diesel::{Connection, PgConnection, RunQueryDsl};
use strategist::store::{Db, DbUrl, StoreError};

fn pg_base() -> String {
    std::env::var("STRATEGIST_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

#[test]
fn postgres_log_tables_get_monthly_partitions_ahead() {
    let name = format!("strategist_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::establish(&format!("{}/postgres", pg_base())).unwrap();
    diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin).unwrap();
    let url = format!("{}/{name}", pg_base());
    let settings = strategist::config::Settings { database_url: url.clone(), ..Default::default() };
    let db = strategist::startup::open_store(&settings).unwrap();
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
