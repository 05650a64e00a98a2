use serde_json::json;

use crate::helpers::{definition, spawn_app, Backend};
use crate::on_both_backends;

/// experiment → assign → reward → learner → new snapshot served, for Beta Thompson sampling.
async fn the_learner_shifts_traffic_to_the_arm_that_converts(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("loop");
    def["policy"] = json!({"kind": "thompson_beta", "draws": 20000});
    app.create_experiment(&def).await;
    let mut counts = std::collections::HashMap::new();
    for u in 0..300 {
        let (_, d) = app.assign(json!({"experiment": "loop", "unit_id": format!("l-{u}")})).await;
        let arm = d["arm"].as_str().unwrap().to_string();
        *counts.entry(arm.clone()).or_insert(0) += 1;
        // Arm b converts 60% of the time, the others 5% (deterministic pattern).
        let converts = if arm == "b" { u % 5 < 3 } else { u % 20 == 0 };
        if converts {
            let (s, v) = app
                .reward(json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": format!("o-{u}")}))
                .await;
            assert_eq!(s, 200, "{v}");
        }
    }
    assert_eq!(counts.len(), 3, "the prior PMF is uniform: every arm is drawn");
    let report = app.learn();
    assert_eq!(report.snapshots_written, 1);
    assert_eq!(app.learn().snapshots_written, 0, "no new feedback: no new snapshot");
    let (_, d) = app.assign(json!({"experiment": "loop", "unit_id": "after"})).await;
    assert_eq!(d["policy_version"], 2, "the new snapshot is served");
    let (_, v) = app.request("GET", "/v1/experiments/loop", Some(&app.read_key), None).await;
    let pmf = &v["pmf"];
    assert!(pmf["b"].as_f64().unwrap() > 0.95, "P(b is best) after clear evidence: {pmf}");
    // The floor still holds at decision time.
    let (_, d) = app.assign(json!({"experiment": "loop", "unit_id": "z", "eligible_arms": ["a", "b"]})).await;
    assert!(d["propensity"].as_f64().unwrap() >= 0.05);
}
on_both_backends!(the_learner_shifts_traffic_to_the_arm_that_converts);

async fn exposures_younger_than_the_reward_wait_are_not_learned_from(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("wait");
    def["policy"] = json!({"kind": "thompson_gaussian", "prior_sd": 10.0});
    def["primary_metric"] = json!({"name": "revenue", "kind": "revenue", "window": "1h"});
    def["guardrails"] = json!([]);
    def["reward_wait"] = json!("1h");
    app.create_experiment(&def).await;
    for u in 0..20 {
        let (_, d) = app.assign(json!({"experiment": "wait", "unit_id": format!("w-{u}")})).await;
        app.reward(json!({"exposure_id": d["exposure_id"], "metric": "revenue", "value": 30.0, "idempotency_key": format!("o-{u}")}))
            .await;
    }
    assert_eq!(app.learn().snapshots_written, 0, "nothing is mature yet");
    // As of two hours from now everything is mature.
    let later = strategist::store::now() + chrono::Duration::hours(2);
    let r = strategist::learner::run_once(&app.db, &app.state.metrics, later).unwrap();
    assert_eq!(r.snapshots_written, 1);
}
on_both_backends!(exposures_younger_than_the_reward_wait_are_not_learned_from);

/// Two serving processes on one Postgres store: a snapshot written by one is served by both.
#[actix_web::test]
async fn every_replica_hot_swaps_to_the_new_snapshot() {
    let a = spawn_app(Backend::Postgres).await;
    let (b_addr, b_stop) = a.spawn_replica();
    let mut def = definition("replicas");
    def["policy"] = json!({"kind": "thompson_beta"});
    a.create_experiment(&def).await;
    for u in 0..50 {
        let (_, d) = a.assign(json!({"experiment": "replicas", "unit_id": format!("r-{u}")})).await;
        if d["arm"] == "c" {
            a.reward(json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": format!("o-{u}")}))
                .await;
        }
    }
    a.learn();
    // Replica b learns of it by polling (refresh interval 100 ms).
    let mut seen = 0;
    for _ in 0..50 {
        let mut resp = a
            .client
            .post(format!("{b_addr}/v1/assign"))
            .insert_header(("Authorization", format!("Bearer {}", a.assign_key)))
            .send_json(&json!({"experiment": "replicas", "unit_id": "probe"}))
            .await
            .unwrap();
        let v: serde_json::Value = resp.json().await.unwrap();
        seen = v["policy_version"].as_i64().unwrap_or(0);
        if seen == 2 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(seen, 2, "replica b serves the new snapshot");
}
