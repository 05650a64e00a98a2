use std::collections::BTreeSet;

use serde_json::json;

use crate::helpers::{definition, spawn_app, Backend};
use crate::on_both_backends;

async fn the_openapi_document_lists_exactly_the_routes(backend: Backend) {
    let app = spawn_app(backend).await;
    let (s, doc) = app.request("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let registered: BTreeSet<(String, String)> =
        strategist::api::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, registered);
    // And every registered route answers (not the router's 404) at its documented path.
    app.create_experiment(&definition("x")).await;
    for (method, path) in &registered {
        let concrete = path.replace("{key}", "x").replace("{action}", "pause");
        let (s, v) = app.request(&method.to_uppercase(), &concrete, Some(&app.admin_key), Some(&json!({}))).await;
        assert_ne!(v["error"], "route_not_found", "{method} {concrete}: {s}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
on_both_backends!(the_openapi_document_lists_exactly_the_routes);

async fn metrics_expose_latency_decisions_writer_and_learner(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("m")).await;
    app.assign(json!({"experiment": "m", "unit_id": "u"})).await;
    app.request("POST", "/v1/assign", None, Some(&json!({}))).await;
    app.learn();
    let mut resp = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    let text = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
    for needle in [
        "strategist_http_request_duration_seconds_bucket{method=\"post\",route=\"/v1/assign\"",
        "strategist_decisions_total{arm=",
        "strategist_writer_batch_size_count",
        "strategist_writer_queue_depth",
        "strategist_learner_last_run_timestamp_seconds",
        "strategist_errors_total{code=\"unauthorized\"}",
        "strategist_database_up 1",
        "strategist_policy_version{experiment=\"m\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let (s, v) = app.request("GET", "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str(), v["experiments"].as_u64()), (200, Some("ok"), Some(1)));
    let (s, v) = app.request("GET", "/readyz", None, None).await;
    assert_eq!((s, v["database"].as_str()), (200, Some("up")));
}
on_both_backends!(metrics_expose_latency_decisions_writer_and_learner);
