use serde_json::json;

use crate::helpers::{definition, spawn_app, Backend};
use crate::on_both_backends;

async fn bad_input_gets_a_stable_code_and_nothing_is_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("errs")).await;
    let key = app.assign_key.clone();
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (b"{\"experiment\": ".to_vec(), "application/json", 400, "invalid_json"),
        (
            b"{\"experiment\": \"errs\", \"unit_id\": \"u\", \"colour\": 1}".to_vec(),
            "application/json",
            422,
            "invalid_request",
        ),
        (b"{\"experiment\": \"errs\", \"unit_id\": 42}".to_vec(), "application/json", 422, "invalid_request"),
        (
            b"{\"experiment\": \"errs\", \"unit_id\": \"u\", \"context\": {\"x\": 1e999}}".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            b"{\"experiment\": \"errs\", \"unit_id\": \"u\", \"context\": {\"x\": NaN}}".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            b"{\"experiment\": \"errs\", \"unit_id\": \"u\", \"context\": {\"x\": {\"y\": 1}}}".to_vec(),
            "application/json",
            422,
            "invalid_context",
        ),
        (b"{\"experiment\": \"errs\", \"unit_id\": \"\"}".to_vec(), "application/json", 422, "invalid_unit_id"),
        (
            b"{\"experiment\": \"errs\", \"unit_id\": \"a\\u0000b\"}".to_vec(),
            "application/json",
            422,
            "invalid_unit_id",
        ),
        (b"{\"experiment\": \"nope\", \"unit_id\": \"u\"}".to_vec(), "application/json", 404, "experiment_not_found"),
        (
            b"{\"experiment\": \"errs' OR 1=1; --\", \"unit_id\": \"u\"}".to_vec(),
            "application/json",
            404,
            "experiment_not_found",
        ),
        (b"experiment=errs".to_vec(), "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (
            format!(
                "{{\"experiment\": \"errs\", \"unit_id\": \"u\", \"context\": {{\"x\": {}{}}}}}",
                "[".repeat(300),
                "]".repeat(300)
            )
            .into_bytes(),
            "application/json",
            400,
            "invalid_json",
        ),
        (vec![b' '; 300 * 1024], "application/json", 413, "payload_too_large"),
    ];
    for (body, ct, status, code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (s, v) = app.raw("/v1/assign", &key, ct, body).await;
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{shown} → {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let many: serde_json::Map<String, serde_json::Value> = (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
    let (s, v) = app.assign(json!({"experiment": "errs", "unit_id": "u", "context": many})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_context")));
    let id = app.state.registry.load().get("errs").unwrap().id;
    assert_eq!(strategist::store::queries::count_exposures(&app.db, id).unwrap(), 0, "nothing refused was stored");
    let (s, v) = app.request("GET", "/v1/nowhere", Some(&key), None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("route_not_found")));
    let (s, v) = app.request("GET", "/v1/assign", Some(&key), None).await;
    assert_eq!((s, v["error"].as_str()), (405, Some("method_not_allowed")));
}
on_both_backends!(bad_input_gets_a_stable_code_and_nothing_is_stored);
