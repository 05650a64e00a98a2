use std::sync::{Arc, Mutex};

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::json;

use crate::helpers::{definition, pg_base, spawn_app, Backend};
use crate::on_both_backends;

/// Every exposure `/assign` acknowledged is in the store after a graceful shutdown in
/// the middle of concurrent load.
async fn acknowledged_exposures_survive_a_graceful_shutdown_under_load(backend: Backend) {
    let mut app = spawn_app(backend).await;
    app.create_experiment(&definition("load")).await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let client = awc::Client::builder().timeout(std::time::Duration::from_secs(10)).finish();
        let url = format!("{}/v1/assign", app.address);
        let key = app.assign_key.clone();
        let acked = acked.clone();
        tasks.push(actix_web::rt::spawn(async move {
            for i in 0.. {
                let body = json!({"experiment": "load", "unit_id": format!("w{worker}-{i}")});
                let Ok(mut resp) =
                    client.post(&url).insert_header(("Authorization", format!("Bearer {key}"))).send_json(&body).await
                else {
                    break;
                };
                let Ok(v) = resp.json::<serde_json::Value>().await else { break };
                if v["logged"] == true {
                    acked.lock().unwrap().push(v["exposure_id"].as_str().unwrap().to_string());
                }
            }
        }));
    }
    actix_web::rt::time::sleep(std::time::Duration::from_millis(1500)).await;
    app.stop_server().await;
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "the load ran: {} acknowledged", acked.len());
    let id = app.state.registry.load().get("load").unwrap().id;
    let stored: std::collections::HashSet<String> =
        strategist::store::queries::exposure_ids(&app.db, id).unwrap().into_iter().collect();
    let missing: Vec<&String> = acked.iter().filter(|e| !stored.contains(*e)).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged exposures lost", missing.len(), acked.len());
}
on_both_backends!(acknowledged_exposures_survive_a_graceful_shutdown_under_load);

fn admin_sql(sql: &str) {
    let mut c = PgConnection::establish(&format!("{}/postgres", pg_base())).unwrap();
    diesel::sql_query(sql).execute(&mut c).unwrap();
}

/// The store goes away: `/assign` answers the default arm unlogged, `/rewards` 503 with
/// Retry-After; both recover by themselves when it returns.
#[actix_web::test]
async fn a_database_outage_degrades_assign_and_refuses_rewards_then_recovers() {
    let app = spawn_app(Backend::Postgres).await;
    app.create_experiment(&definition("outage")).await;
    let (_, before) = app.assign(json!({"experiment": "outage", "unit_id": "u-0"})).await;
    assert_eq!(before["logged"], true);
    let name = app.pg_name.clone().expect("a Postgres test database");
    admin_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    admin_sql(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"));

    for u in 1..5 {
        let (s, v) = app.assign(json!({"experiment": "outage", "unit_id": format!("u-{u}")})).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!((v["logged"].as_bool(), v["arm"].as_str()), (Some(false), Some("a")), "{v}");
        assert_eq!(v["reason"], "store_unavailable");
    }
    let mut resp = app
        .client
        .post(format!("{}/v1/rewards", app.address))
        .insert_header(("Authorization", format!("Bearer {}", app.assign_key)))
        .send_json(
            &json!({"exposure_id": before["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": "k"}),
        )
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers().get("retry-after").and_then(|h| h.to_str().ok()), Some("1"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "database_unavailable");
    let (s, _) = app.request("GET", "/readyz", None, None).await;
    assert_eq!(s, 503);

    admin_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    let mut recovered = false;
    for _ in 0..100 {
        let (_, v) = app.assign(json!({"experiment": "outage", "unit_id": "u-back"})).await;
        if v["logged"] == true {
            recovered = true;
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "assign logs again without a restart");
    let (s, v) = app
        .reward(json!({"exposure_id": before["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": "k"}))
        .await;
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(false)), "{v}");
}
