use serde_json::json;

use crate::helpers::{definition, spawn_app, Backend};
use crate::on_both_backends;
use strategist::keys::Scope;

/// Every route × every scope, plus missing, malformed, unknown and revoked keys.
async fn every_route_checks_the_key_and_its_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("auth")).await;
    let revoked = strategist::cli::create_key(&app.db, Scope::Admin, "old").unwrap();
    strategist::store::queries::revoke_api_key(&app.db, &revoked[..12]).unwrap();
    app.state.refresh_keys().unwrap();
    let assign_body = json!({"experiment": "auth", "unit_id": "u"});
    let routes: Vec<(&str, &str, Option<serde_json::Value>, &[Scope])> = vec![
        ("POST", "/v1/assign", Some(assign_body.clone()), &[Scope::Assign]),
        ("POST", "/v1/assign/batch", Some(json!({"requests": [assign_body]})), &[Scope::Assign]),
        (
            "POST",
            "/v1/rewards",
            Some(json!({"unit_id": "u", "metric": "purchase", "value": 1, "idempotency_key": "k"})),
            &[Scope::Assign],
        ),
        (
            "POST",
            "/v1/rewards/batch",
            Some(json!({"rewards": [{"unit_id": "u", "metric": "purchase", "value": 1, "idempotency_key": "k"}]})),
            &[Scope::Assign],
        ),
        ("POST", "/v1/events", Some(json!({"event_id": "e", "unit_id": "u", "type": "view"})), &[Scope::Assign]),
        (
            "POST",
            "/v1/events/batch",
            Some(json!({"events": [{"event_id": "e", "unit_id": "u", "type": "view"}]})),
            &[Scope::Assign],
        ),
        ("GET", "/v1/units/u/profile", None, &[Scope::Read, Scope::Admin]),
        ("GET", "/v1/experiments/auth/charts", None, &[Scope::Read, Scope::Admin]),
        ("GET", "/v1/reports", None, &[Scope::Read, Scope::Admin]),
        ("GET", "/v1/reports/weekly?week=2026-W48&format=json", None, &[Scope::Read, Scope::Admin]),
        ("GET", "/v1/reports/2026-W48/json", None, &[Scope::Read, Scope::Admin]),
        ("GET", "/v1/experiments", None, &[Scope::Read, Scope::Admin]),
        ("POST", "/v1/experiments", Some(definition("auth2")), &[Scope::Admin]),
        ("GET", "/v1/experiments/auth", None, &[Scope::Read, Scope::Admin]),
        ("PUT", "/v1/experiments/auth", Some(definition("auth")), &[Scope::Admin]),
        ("POST", "/v1/experiments/auth/pause", Some(json!({})), &[Scope::Admin]),
        ("GET", "/v1/experiments/auth/decisions", None, &[Scope::Read, Scope::Admin]),
        ("GET", "/v1/experiments/auth/results", None, &[Scope::Read, Scope::Admin]),
        ("GET", "/v1/experiments/auth/shadow", None, &[Scope::Read, Scope::Admin]),
        ("DELETE", "/v1/experiments/auth/shadow", None, &[Scope::Admin]),
        ("POST", "/v1/experiments/auth/shadow/promote", Some(json!({})), &[Scope::Admin]),
        ("GET", "/v1/whoami", None, &[Scope::Assign, Scope::Read, Scope::Admin]),
    ];
    assert_eq!(routes.len(), strategist::api::ROUTES.iter().filter(|(_, p)| p.starts_with("/v1/")).count());
    let keys = [
        (Scope::Assign, app.assign_key.clone()),
        (Scope::Admin, app.admin_key.clone()),
        (Scope::Read, app.read_key.clone()),
    ];
    for (method, path, body, allowed) in &routes {
        for bad in
            [None, Some("stk_0000000000000000000000000000000000000000"), Some("Basic abc"), Some(revoked.as_str())]
        {
            let (s, v) = app.request(method, path, bad, body.as_ref()).await;
            assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{method} {path} with {bad:?}");
        }
        for (scope, key) in &keys {
            let (s, v) = app.request(method, path, Some(key), body.as_ref()).await;
            if allowed.contains(scope) {
                assert!(s != 401 && s != 403, "{method} {path} with {scope:?}: {s} {v}");
            } else {
                assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{method} {path} with {scope:?}");
            }
        }
    }
    // Operations routes are open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let (s, _) = app.request("GET", path, None, None).await;
        assert_eq!(s, 200, "{path}");
    }
}
on_both_backends!(every_route_checks_the_key_and_its_scope);

async fn auth_is_checked_before_the_body_is_read(backend: Backend) {
    let app = spawn_app(backend).await;
    let (s, v) = app.raw("/v1/assign", "stk_nope", "application/json", b"{not json".to_vec()).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));
}
on_both_backends!(auth_is_checked_before_the_body_is_read);
