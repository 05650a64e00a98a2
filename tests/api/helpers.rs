//! Spawns a real server on a random port over a fresh database (one Postgres database, or
//! one SQLite file, per test) and talks to it over real HTTP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web;
use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{json, Value};
use strategist::app::AppState;
use strategist::config::Settings;
use strategist::keys::Scope;
use strategist::store::{Db, DbUrl};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The Postgres server the tests create their databases on.
pub fn pg_base() -> String {
    std::env::var("STRATEGIST_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub struct TestApp {
    pub address: String,
    pub db: Db,
    pub db_url: String,
    pub state: web::Data<AppState>,
    pub admin_key: String,
    pub assign_key: String,
    pub read_key: String,
    pub client: awc::Client,
    pub handle: ServerHandle,
    pub backend: Backend,
    pub pg_name: Option<String>,
    stop: Arc<AtomicBool>,
    server: Option<actix_web::rt::task::JoinHandle<std::io::Result<()>>>,
}

pub fn test_settings(db_url: &str) -> Settings {
    Settings {
        database_url: db_url.into(),
        bind: "127.0.0.1:0".into(),
        refresh_interval: "100ms".into(),
        run_learner: false,
        run_analyzer: false,
        workers: 2,
        pool_size: 8,
        ..Settings::default()
    }
}

/// A fresh, empty database URL for one test.
pub fn fresh_database(backend: Backend) -> (String, Option<String>) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    match backend {
        Backend::Postgres => {
            let name = format!("strategist_test_{id}");
            let base = pg_base();
            let mut c = PgConnection::establish(&format!("{base}/postgres"))
                .unwrap_or_else(|e| panic!("tests need Postgres at {base} (set STRATEGIST_TEST_PG): {e}"));
            diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut c).expect("create test database");
            // No TLS to the test server: the harness exits while a test's background threads
            // may still be inside libpq, and OpenSSL's exit-time cleanup must not free state
            // under them (seen as heap corruption at exit). Production joins its threads first.
            (format!("{base}/{name}?sslmode=disable"), Some(name))
        }
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("strategist-test-{id}"));
            std::fs::create_dir_all(&dir).expect("temp dir");
            (dir.join("strategist.db").to_string_lossy().into_owned(), None)
        }
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (db_url, pg_name) = fresh_database(backend);
    let mut settings = test_settings(&db_url);
    tweak(&mut settings);
    let db = strategist::startup::open_store(&settings).expect("open store");
    let admin_key = strategist::cli::create_key(&db, Scope::Admin, "test-admin").unwrap();
    let assign_key = strategist::cli::create_key(&db, Scope::Assign, "test-assign").unwrap();
    let read_key = strategist::cli::create_key(&db, Scope::Read, "test-read").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app = strategist::startup::Application::build_with(&settings, db.clone(), listener).expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state.clone();
    let handle = app.handle();
    let stop = app.stop_flag();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    // The server closes a connection idle for 5 s (actix-web's default keep-alive); awc keeps
    // idle connections for 15 s by default and may write a request to one the server is
    // closing, which fails with "connector has been disconnected" (seen after a test's long
    // training pause). Idle connections are dropped here well before the server's timeout.
    let connector = awc::Connector::new().conn_keep_alive(Duration::from_secs(2));
    let client = awc::Client::builder().connector(connector).timeout(Duration::from_secs(30)).finish();
    TestApp {
        address,
        db,
        db_url,
        state,
        admin_key,
        assign_key,
        read_key,
        client,
        handle,
        backend,
        pg_name,
        stop,
        server: Some(server),
    }
}

impl TestApp {
    pub async fn request(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{}", self.address, path);
        let mut req = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            "PUT" => self.client.put(url),
            "DELETE" => self.client.delete(url),
            other => panic!("method {other}"),
        };
        if let Some(k) = key {
            req = req.insert_header(("Authorization", format!("Bearer {k}")));
        }
        let mut resp = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(16 * 1024 * 1024).await.expect("body");
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    /// Sends raw bytes with a content type.
    pub async fn raw(&self, path: &str, key: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let mut resp = self
            .client
            .post(format!("{}{}", self.address, path))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Content-Type", content_type))
            .send_body(body)
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn create_experiment(&self, def: &Value) -> Value {
        let (s, v) = self.request("POST", "/v1/experiments", Some(&self.admin_key), Some(def)).await;
        assert_eq!(s, 201, "create experiment: {v}");
        v
    }

    pub async fn action(&self, key: &str, action: &str, body: Value) -> (u16, Value) {
        self.request("POST", &format!("/v1/experiments/{key}/{action}"), Some(&self.admin_key), Some(&body)).await
    }

    pub async fn assign(&self, body: Value) -> (u16, Value) {
        self.request("POST", "/v1/assign", Some(&self.assign_key), Some(&body)).await
    }

    pub async fn reward(&self, body: Value) -> (u16, Value) {
        self.request("POST", "/v1/rewards", Some(&self.assign_key), Some(&body)).await
    }

    /// Runs one learner pass and reloads this process's registry.
    pub fn learn(&self) -> strategist::learner::RunReport {
        let r =
            strategist::learner::run_once(&self.db, &self.state.metrics, strategist::store::now()).expect("learner");
        self.state.invalidate();
        self.state.refresh_registry().expect("refresh");
        r
    }

    /// A second server over this app's store (its own registry, caches and writer): its
    /// address, and the flag that stops its background loops.
    pub fn spawn_replica(&self) -> (String, Arc<AtomicBool>) {
        let settings = test_settings(&self.db_url);
        let db = strategist::startup::open_store(&settings).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = strategist::startup::Application::build_with(&settings, db, listener).unwrap();
        let address = format!("http://127.0.0.1:{}", b.port());
        let stop = b.stop_flag();
        actix_web::rt::spawn(b.run_until_stopped());
        (address, stop)
    }

    /// Runs one analyzer pass as of `now` (no commit margin) and reloads the registry.
    pub fn analyze(&self, now: chrono::NaiveDateTime) -> strategist::analysis::job::RunReport {
        let r = strategist::analysis::job::run_once(&self.db, now, std::time::Duration::ZERO).expect("analyzer");
        self.state.invalidate();
        self.state.refresh_registry().expect("refresh");
        r
    }

    /// Assigns many units through `/v1/assign/batch` (500 per request); returns the answers.
    pub async fn assign_many(&self, experiment: &str, units: impl Iterator<Item = String>) -> Vec<Value> {
        let units: Vec<String> = units.collect();
        let mut out = Vec::new();
        for chunk in units.chunks(500) {
            let requests: Vec<Value> = chunk.iter().map(|u| json!({"experiment": experiment, "unit_id": u})).collect();
            let (s, v) = self
                .request("POST", "/v1/assign/batch", Some(&self.assign_key), Some(&json!({"requests": requests})))
                .await;
            assert_eq!(s, 200, "{v}");
            out.extend(v["results"].as_array().unwrap().iter().cloned());
        }
        out
    }

    /// Sends rewards through `/v1/rewards/batch` (500 per request).
    pub async fn reward_many(&self, rewards: Vec<Value>) {
        for chunk in rewards.chunks(500) {
            let (s, v) = self
                .request("POST", "/v1/rewards/batch", Some(&self.assign_key), Some(&json!({"rewards": chunk})))
                .await;
            assert_eq!(s, 200, "{v}");
            for r in v["results"].as_array().unwrap() {
                assert!(r.get("error").is_none(), "{r}");
            }
        }
    }

    pub async fn stop_server(&mut self) {
        self.handle.stop(true).await;
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let (Some(name), Backend::Postgres) = (&self.pg_name, self.backend) {
            if let Ok(mut c) = PgConnection::establish(&format!("{}/postgres", pg_base())) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c);
            }
        } else if let Ok(DbUrl::Sqlite(p)) = DbUrl::parse(&self.db_url) {
            if let Some(dir) = p.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// A valid definition with fixed equal weights over arms `a` (control), `b`, `c`.
pub fn definition(key: &str) -> Value {
    json!({
        "key": key,
        "name": format!("Test {key}"),
        "arms": [
            {"key": "a", "control": true, "payload": {"banner": "none"}},
            {"key": "b", "payload": {"banner": "coupon", "discount": 10}},
            {"key": "c", "payload": {"banner": "free_shipping"}, "cost": 5.0}
        ],
        "policy": {"kind": "fixed"},
        "primary_metric": {"name": "purchase", "kind": "conversion", "window": "1h"},
        "guardrails": [{"name": "revenue", "kind": "revenue", "window": "1h"},
                       {"name": "profit", "kind": "profit", "window": "1h"},
                       {"name": "returns", "kind": "custom", "window": "1h", "direction": "lower"}],
        "min_propensity": 0.05,
        "reward_wait": "0s",
        "status": "running"
    })
}

/// Runs a test body once on Postgres and once on SQLite, as two tests.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn on_postgres() {
                super::$name($crate::helpers::Backend::Postgres).await;
            }
            #[actix_web::test]
            async fn on_sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await;
            }
        }
    };
}

/// The contextual tests' world: `big-{i}` units are big spenders (a 500 purchase of shoes in
/// their profile, then a view of bags when `with_view`), newcomers have no history.
pub async fn build_shopper_profiles(app: &TestApp, n: usize, with_view: bool) {
    let mut events = Vec::new();
    for i in 0..n {
        events.push(json!({"event_id": format!("p-{i}"), "unit_id": format!("big-{i}"), "type": "purchase", "amount": 500.0, "category": "shoes"}));
        if with_view {
            events.push(
                json!({"event_id": format!("v-{i}"), "unit_id": format!("big-{i}"), "type": "view", "category": "bags"}),
            );
        }
    }
    for chunk in events.chunks(500) {
        let (s, v) =
            app.request("POST", "/v1/events/batch", Some(&app.assign_key), Some(&json!({"events": chunk}))).await;
        assert_eq!(s, 200, "{v}");
    }
}

/// The `[features]` the shoppers' experiments read: two numeric profile features and the
/// device, one-hot: 2 + (2 + 1) = 5 entries.
pub fn shopper_features() -> Value {
    json!({
        "numeric": [{"name": "monetary_90d"}, {"name": "is_returning"}],
        "categorical": [{"name": "device", "values": ["mobile", "desktop"]}]
    })
}

/// The world: big spenders buy with free shipping (arm `c`), newcomers with the coupon (`b`).
pub fn shopper_buys(unit: &str, arm: &str) -> bool {
    matches!((unit.starts_with("big"), arm), (true, "c") | (false, "b"))
}

/// Assigns `n` shoppers of `round` in one batch: even positions are big spenders
/// (`big-{i/2}`), odd ones newcomers of this round; pairs of positions take `devices` in
/// turn. Returns each unit with its answer.
pub async fn assign_shoppers(
    app: &TestApp,
    key: &str,
    round: usize,
    n: usize,
    devices: &[&str],
) -> Vec<(String, Value)> {
    let units: Vec<String> =
        (0..n).map(|i| if i % 2 == 0 { format!("big-{}", i / 2) } else { format!("new-{round}-{i}") }).collect();
    let requests: Vec<Value> = units
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let device = devices[(i / 2) % devices.len()];
            json!({"experiment": key, "unit_id": u, "request_id": format!("r{round}"), "context": {"device": device}})
        })
        .collect();
    let (s, v) =
        app.request("POST", "/v1/assign/batch", Some(&app.assign_key), Some(&json!({"requests": requests}))).await;
    assert_eq!(s, 200, "{v}");
    units.into_iter().zip(v["results"].as_array().unwrap().iter().cloned()).collect()
}

/// One learner pass at `now` off the test's async thread (a neural retrain takes seconds in a
/// debug build, and the HTTP client's connector must keep running), then a registry reload.
pub async fn learn_off_thread(app: &TestApp, now: chrono::NaiveDateTime) -> strategist::learner::RunReport {
    let (db, metrics) = (app.db.clone(), app.state.metrics.clone());
    let report = actix_web::rt::task::spawn_blocking(move || strategist::learner::run_once(&db, &metrics, now))
        .await
        .expect("learner thread")
        .expect("learner");
    app.state.invalidate();
    app.state.refresh_registry().expect("refresh");
    report
}

/// [`learn_off_thread`] as of now.
pub async fn learn_now(app: &TestApp) -> strategist::learner::RunReport {
    learn_off_thread(app, strategist::store::now()).await
}
