//! Behaviour events and user profiles: POST /v1/events (+ batch), GET /v1/units/{id}/profile.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

async fn event(app: &TestApp, body: Value) -> (u16, Value) {
    app.request("POST", "/v1/events", Some(&app.assign_key), Some(&body)).await
}

async fn profile(app: &TestApp, unit: &str) -> Value {
    let (s, v) = app.request("GET", &format!("/v1/units/{unit}/profile"), Some(&app.read_key), None).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn ago(days: i64) -> String {
    (Utc::now() - Duration::days(days)).to_rfc3339()
}

async fn events_build_rfm_features_and_a_repeat_counts_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let purchase = json!({"event_id": "o-1", "unit_id": "alice", "type": "purchase", "amount": 80.0, "category": "shoes", "timestamp": ago(20)});
    let (s, v) = event(&app, purchase.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["duplicate"], false);
    let (s, v) = event(&app, purchase).await;
    assert_eq!(s, 200);
    assert_eq!(v["duplicate"], true, "same event id: stored once");
    let (s, v) = event(
        &app,
        json!({"event_id": "o-2", "unit_id": "alice", "type": "purchase", "amount": 40.0, "category": "bags", "timestamp": ago(3)}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    event(&app, json!({"event_id": "v-1", "unit_id": "alice", "type": "view", "category": "shoes"})).await;

    let p = profile(&app, "alice").await;
    assert_eq!(p["events"], 3);
    let f = &p["features"];
    assert_eq!(f["frequency_7d"], 1.0);
    assert_eq!(f["monetary_7d"], 40.0);
    assert_eq!(f["frequency_30d"], 2.0);
    assert_eq!(f["monetary_30d"], 120.0);
    assert_eq!(f["aov"], 60.0);
    assert_eq!(f["is_returning"], 1.0);
    let recency = f["recency_days"].as_f64().unwrap();
    assert!((recency - 3.0).abs() < 0.01, "{recency}");
    assert!((f["category_affinity:shoes"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(p["recent"].as_array().unwrap().len(), 3);

    // A unit never seen has the empty profile, not an error.
    let p = profile(&app, "nobody").await;
    assert_eq!(p["events"], 0);
    assert_eq!(p["features"]["is_returning"], 0.0);
}
on_both_backends!(events_build_rfm_features_and_a_repeat_counts_once);

async fn a_batch_stores_the_valid_events_and_answers_each_invalid_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({"events": [
        {"event_id": "b-1", "unit_id": "bob", "type": "add_to_cart", "category": "toys"},
        {"event_id": "b-2", "unit_id": "bob", "type": "teleport"},
        {"event_id": "b-3", "unit_id": "bob", "type": "purchase"},
        {"event_id": "b-4", "unit_id": "bob", "type": "view", "amount": 3.0},
        {"event_id": "b-5", "unit_id": "bob", "type": "view", "timestamp": ago(200)},
        {"event_id": "b-6", "unit_id": "bob", "type": "view", "timestamp": (Utc::now() + Duration::hours(2)).to_rfc3339()},
        {"event_id": "b-7", "unit_id": "bob", "type": "purchase", "amount": -1.0},
        {"event_id": "b-8", "unit_id": "bob", "type": "purchase", "amount": 12.5},
        {"event_id": "b-1", "unit_id": "bob", "type": "add_to_cart", "category": "toys"},
    ]});
    let (s, v) = app.request("POST", "/v1/events/batch", Some(&app.assign_key), Some(&body)).await;
    assert_eq!(s, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    let codes: Vec<&str> = r.iter().map(|x| x["error"].as_str().unwrap_or("ok")).collect();
    assert_eq!(
        codes,
        [
            "ok",
            "invalid_event_type",
            "invalid_amount",
            "invalid_amount",
            "event_too_old",
            "event_in_future",
            "invalid_amount",
            "ok",
            "ok"
        ]
    );
    assert_eq!(r[0]["duplicate"], false);
    assert_eq!(r[8]["duplicate"], true, "a repeat inside the batch is folded once");
    let p = profile(&app, "bob").await;
    assert_eq!(p["events"], 2);
    assert_eq!(p["features"]["monetary_90d"], 12.5);

    let (s, v) = app.request("POST", "/v1/events/batch", Some(&app.assign_key), Some(&json!({"events": []}))).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_batch_size")));
}
on_both_backends!(a_batch_stores_the_valid_events_and_answers_each_invalid_one);

async fn events_need_the_assign_scope_and_profiles_the_read_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({"event_id": "s-1", "unit_id": "carol", "type": "click"});
    let (s, v) = app.request("POST", "/v1/events", Some(&app.read_key), Some(&body)).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, _) = app.request("POST", "/v1/events", None, Some(&body)).await;
    assert_eq!(s, 401);
    let (s, _) = app.request("GET", "/v1/units/carol/profile", Some(&app.assign_key), None).await;
    assert_eq!(s, 403);
    let (s, v) = event(&app, json!({"event_id": "", "unit_id": "carol", "type": "click"})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_event_id")));
    let (s, v) =
        event(&app, json!({"event_id": "x", "unit_id": "carol", "type": "click", "category": "a\u{7}b"})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_category")));
    let (s, v) = event(&app, json!({"event_id": "x", "unit_id": "carol", "type": "click", "colour": "red"})).await;
    assert!(s == 400 || s == 422, "unknown field: {s} {v}");
    assert_eq!(v["error"], "invalid_request", "unknown field: {v}");
}
on_both_backends!(events_need_the_assign_scope_and_profiles_the_read_scope);

/// Concurrent batches for the same unit: every event is folded exactly once (Postgres
/// locks the profile row; SQLite's immediate transaction serialises the writers).
async fn concurrent_events_for_one_unit_are_all_folded(backend: Backend) {
    let app = spawn_app(backend).await;
    let sends = (0..40).map(|i| {
        let body = json!({"event_id": format!("c-{i}"), "unit_id": "dave", "type": "purchase", "amount": 1.0});
        let app = &app;
        async move { event(app, body).await }
    });
    let results = futures_util::future::join_all(sends).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let p = profile(&app, "dave").await;
    assert_eq!(p["events"], 40);
    assert_eq!(p["features"]["frequency_7d"], 40.0);
    assert_eq!(p["features"]["monetary_7d"], 40.0);
}
on_both_backends!(concurrent_events_for_one_unit_are_all_folded);
