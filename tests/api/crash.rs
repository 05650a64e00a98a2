//! Crash safety: the real `strategist serve` binary, SIGKILLed in the middle of concurrent
//! assign and reward traffic and restarted on the same store, has kept every exposure a
//! client received and every reward it acknowledged, each reward exactly once. Also the
//! store checks the fault tests share (`stored_log`, `check_log`).

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::{json, Value};
use strategist::keys::Scope;
use strategist::store::{Db, DbUrl, StoreError};

use crate::helpers::{definition, fresh_database, pg_base, test_settings, Backend};
use crate::on_both_backends;

/// What the store holds after a fault test: exposure ids, and per reward idempotency key
/// (as sent, unscoped) the number of reward rows; `scoped_keys` are the rows of
/// `reward_keys` (`metric:key`).
pub struct StoredLog {
    pub exposures: HashSet<String>,
    pub reward_rows: HashMap<String, i64>,
    pub scoped_keys: HashSet<String>,
}

#[derive(QueryableByName)]
struct KeyCount {
    #[diesel(sql_type = Text)]
    idempotency_key: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct ScopedKey {
    #[diesel(sql_type = Text)]
    idempotency_key: String,
}

/// Reads the log of one experiment back (blocking: call it from `spawn_blocking`).
pub fn stored_log(db: &Db, experiment_id: i64) -> Result<StoredLog, StoreError> {
    let exposures = strategist::store::queries::exposure_ids(db, experiment_id)?.into_iter().collect();
    let (counts, scoped): (Vec<KeyCount>, Vec<ScopedKey>) = strategist::db_run!(db, |conn| {
        let counts: Vec<KeyCount> = diesel::sql_query(format!(
            "SELECT idempotency_key, COUNT(*) AS n FROM rewards WHERE experiment_id = {experiment_id} \
             GROUP BY idempotency_key"
        ))
        .load(conn)?;
        let scoped: Vec<ScopedKey> = diesel::sql_query("SELECT idempotency_key FROM reward_keys").load(conn)?;
        (counts, scoped)
    });
    Ok(StoredLog {
        exposures,
        reward_rows: counts.into_iter().map(|c| (c.idempotency_key, c.n)).collect(),
        scoped_keys: scoped.into_iter().map(|k| k.idempotency_key).collect(),
    })
}

/// Every exposure id a client received is stored; every acknowledged reward is stored
/// exactly once (one row, one scoped key), and nothing else is stored.
pub fn check_log(log: &StoredLog, received: &[String], acked: &HashSet<String>, metric: &str) {
    let missing: Vec<&String> = received.iter().filter(|e| !log.exposures.contains(*e)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} received exposures lost, e.g. {:?}",
        missing.len(),
        received.len(),
        missing[0]
    );
    let lost: Vec<&String> = acked.iter().filter(|k| !log.reward_rows.contains_key(*k)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged rewards lost, e.g. {}", lost.len(), acked.len(), lost[0]);
    let twice: Vec<(&String, &i64)> = log.reward_rows.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "rewards stored more than once: {twice:?}");
    let unknown: Vec<&String> = log.reward_rows.keys().filter(|k| !acked.contains(*k)).collect();
    assert!(unknown.is_empty(), "stored rewards no client sent or saw acknowledged: {unknown:?}");
    let unscoped: Vec<&String> = acked.iter().filter(|k| !log.scoped_keys.contains(&format!("{metric}:{k}"))).collect();
    assert!(unscoped.is_empty(), "acknowledged rewards without their idempotency key: {unscoped:?}");
}

/// A fresh store (Postgres database or SQLite file), removed when dropped.
struct Store {
    url: String,
    pg_name: Option<String>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut c) = PgConnection::establish(&format!("{}/postgres", pg_base())) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c);
            }
        } else if let Ok(DbUrl::Sqlite(p)) = DbUrl::parse(&self.url) {
            if let Some(dir) = p.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// `strategist serve` as a child process; killed when dropped.
struct Server {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Server {
    /// Starts the binary on `port` and waits until `/readyz` answers 200.
    async fn start(db_url: &str, port: u16, log: &PathBuf) -> Server {
        let out = OpenOptions::new().create(true).append(true).open(log).expect("server log file");
        let err = out.try_clone().expect("server log file");
        let child = Command::new(env!("CARGO_BIN_EXE_strategist"))
            .args(["serve", "--database-url", db_url, "--bind", &format!("127.0.0.1:{port}")])
            .args(["--workers", "2", "--pool-size", "8", "--refresh-interval", "100ms"])
            .args(["--run-learner", "false", "--run-analyzer", "false"])
            .env_remove("STRATEGIST_CONFIG")
            .env_remove("STRATEGIST_UNIT_ID_SECRET")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start strategist serve");
        let mut server = Server { child, address: format!("http://127.0.0.1:{port}"), log: log.clone() };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let client = awc::Client::builder().timeout(Duration::from_secs(1)).finish();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("strategist serve exited with {status}:\n{}", self.log_tail());
            }
            if let Ok(resp) = client.get(format!("{}/readyz", self.address)).send().await {
                if resp.status().as_u16() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "strategist serve not ready after 30 s:\n{}", self.log_tail());
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown hook, no drain of the writer queue.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        let status = self.child.wait().expect("reap the server");
        assert!(!status.success(), "the server was killed, not stopped: {status}");
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the binary binds it itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// POSTs JSON with the key; `Err` when no HTTP answer came back (the server is gone).
pub async fn post(client: &awc::Client, url: &str, key: &str, body: &Value) -> Result<(u16, Value), String> {
    let mut resp = client
        .post(url)
        .insert_header(("Authorization", format!("Bearer {key}")))
        .send_json(body)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let value = resp.json::<Value>().limit(1 << 20).await.map_err(|e| e.to_string())?;
    Ok((status, value))
}

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    /// Exposure ids received in a logged answer.
    exposures: Vec<String>,
    /// Rewards sent at least once: idempotency key → exposure id.
    sent: Vec<(String, String)>,
    /// Acknowledged rewards: idempotency key → answered `duplicate`.
    acked: HashMap<String, bool>,
    /// HTTP answers that should not happen while the server is up.
    unexpected: Vec<String>,
}

const WORKERS: usize = 8;

/// SIGKILL in the middle of concurrent `/assign` and `/rewards`, restart on the same store,
/// retry every unacknowledged reward with its idempotency key: every exposure a client
/// received is stored and every acknowledged reward is stored exactly once.
async fn acknowledged_writes_survive_a_sigkill_under_load(backend: Backend) {
    let (url, pg_name) = fresh_database(backend);
    let store = Store { url: url.clone(), pg_name };
    let setup_url = url.clone();
    let (db, assign_key, experiment_id) = actix_web::rt::task::spawn_blocking(move || {
        let db = strategist::startup::open_store(&test_settings(&setup_url)).expect("open store");
        let key = strategist::cli::create_key(&db, Scope::Assign, "crash-assign").expect("assign key");
        let def: strategist::experiment::Definition = serde_json::from_value(definition("crash")).expect("definition");
        let exp = strategist::experiment::admin::create(&db, &def, "crash-test").expect("create experiment");
        (db, key, exp.row.id)
    })
    .await
    .expect("setup");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let log = std::env::temp_dir().join(format!("strategist-crash-{id}.log"));
    let port = free_port();
    let mut server = Server::start(&store.url, port, &log).await;
    let started = Instant::now();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
        let (assign_url, reward_url) =
            (format!("{}/v1/assign", server.address), format!("{}/v1/rewards", server.address));
        let (key, ledger, stop) = (assign_key.clone(), ledger.clone(), stop.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = json!({"experiment": "crash", "unit_id": format!("w{worker}-{i}")});
                let exposure = match post(&client, &assign_url, &key, &body).await {
                    Ok((200, v)) if v["logged"] == true => {
                        let e = v["exposure_id"].as_str().unwrap_or_default().to_string();
                        ledger.lock().unwrap().exposures.push(e.clone());
                        e
                    }
                    Ok((s, v)) => {
                        ledger.lock().unwrap().unexpected.push(format!("assign {s}: {v}"));
                        continue;
                    }
                    Err(_) => {
                        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let rk = format!("crash-w{worker}-{i}");
                ledger.lock().unwrap().sent.push((rk.clone(), exposure.clone()));
                let body = json!({"exposure_id": exposure, "metric": "purchase", "value": 1, "idempotency_key": rk});
                match post(&client, &reward_url, &key, &body).await {
                    Ok((200, v)) if v["accepted"] == true => {
                        ledger.lock().unwrap().acked.insert(rk, v["duplicate"] == true);
                    }
                    Ok((s, v)) => ledger.lock().unwrap().unexpected.push(format!("reward {s}: {v}")),
                    Err(_) => {}
                }
            }
        }));
    }

    // Kill once the load has clearly run (a few hundred writes), whatever the machine's speed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ledger.lock().unwrap().acked.len() < 150 && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    let killed_after = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("worker");
    }
    let (acked_before, sent_before, exposures_before) = {
        let l = ledger.lock().unwrap();
        (l.acked.len(), l.sent.len(), l.exposures.len())
    };
    assert!(acked_before >= 50, "the load ran before the kill: {acked_before} rewards acknowledged");

    let mut server = Server::start(&store.url, port, &log).await;
    let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
    let reward_url = format!("{}/v1/rewards", server.address);
    let unacked: Vec<(String, String)> = {
        let l = ledger.lock().unwrap();
        l.sent.iter().filter(|(k, _)| !l.acked.contains_key(k)).cloned().collect()
    };
    for (rk, exposure) in &unacked {
        let body = json!({"exposure_id": exposure, "metric": "purchase", "value": 1, "idempotency_key": rk});
        let mut answer = None;
        for _ in 0..100 {
            match post(&client, &reward_url, &assign_key, &body).await {
                Ok((200, v)) if v["accepted"] == true => {
                    answer = Some(v["duplicate"] == true);
                    break;
                }
                Ok((s, v)) => panic!("retry of {rk} after the restart: {s} {v}"),
                Err(_) => actix_web::rt::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let duplicate = answer.unwrap_or_else(|| panic!("retry of {rk} never acknowledged"));
        ledger.lock().unwrap().acked.insert(rk.clone(), duplicate);
    }
    // The restarted server logs again.
    for u in 0..5 {
        let body = json!({"experiment": "crash", "unit_id": format!("after-{u}")});
        let (s, v) = post(&client, &format!("{}/v1/assign", server.address), &assign_key, &body)
            .await
            .expect("assign after the restart");
        assert_eq!((s, v["logged"].as_bool()), (200, Some(true)), "{v}");
        ledger.lock().unwrap().exposures.push(v["exposure_id"].as_str().unwrap().to_string());
    }
    server.kill();

    let stored = actix_web::rt::task::spawn_blocking(move || stored_log(&db, experiment_id))
        .await
        .expect("read the store")
        .expect("read the store");
    let l = ledger.lock().unwrap();
    assert!(
        l.unexpected.is_empty(),
        "answers that should not happen: {:?}",
        &l.unexpected[..l.unexpected.len().min(5)]
    );
    let acked: HashSet<String> = l.acked.keys().cloned().collect();
    check_log(&stored, &l.exposures, &acked, "purchase");
    let duplicates = unacked.iter().filter(|(k, _)| l.acked[k]).count();
    println!(
        "{backend:?}: killed after {killed_after:?}: {exposures_before} exposures received, {sent_before} rewards sent, \
         {acked_before} acknowledged; after the restart {} retried ({duplicates} had been stored: duplicate), \
         {} exposures and {} rewards checked in the store",
        unacked.len(),
        l.exposures.len(),
        acked.len()
    );
    let _ = std::fs::remove_file(&log);
}
on_both_backends!(acknowledged_writes_survive_a_sigkill_under_load);
