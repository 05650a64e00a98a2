//! Hostile input (issue 7): oversized and streamed bodies, deep nesting, huge arm lists,
//! unicode and control characters, SQL metacharacters in every string field of assign,
//! rewards and definitions. A refused request gets a 4xx with a stable code and stores
//! nothing; a legal one (a quote in a unit id) is stored verbatim and harms nothing. The
//! last tests replay the fuzz corpus (`fuzz/seeds`, `fuzz/regressions`) through the same
//! calls as the cargo fuzz targets, so a crash the fuzzer found stays fixed.

use actix_web::web::Bytes;
use diesel::RunQueryDsl;
use serde_json::{json, Value};
use strategist::experiment::definition::valid_key;
use strategist::store::{queries, StoreError};

use crate::helpers::{definition, spawn_app, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;

/// SQL metacharacters, LIKE wildcards, escapes and quotes: legal text wherever text is.
const SQL_NASTIES: [&str; 9] = [
    "'; DROP TABLE exposures; --",
    "' OR '1'='1",
    "%",
    "_",
    "%_%",
    "\\",
    "\\'; --",
    "\"quoted\" `tick`",
    "x'); DELETE FROM rewards; SELECT ('",
];

/// Tables a request may write to.
const TABLES: [&str; 9] = [
    "experiments",
    "experiment_versions",
    "arms",
    "exposures",
    "rewards",
    "reward_keys",
    "decisions",
    "sticky_assignments",
    "policy_snapshots",
];

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Rows per table, in the order of `TABLES` (also proves every table still exists).
fn row_counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    TABLES
        .iter()
        .map(|t| {
            let sql = format!("SELECT COUNT(*) AS n FROM {t}");
            let count = (|| -> Result<i64, StoreError> {
                strategist::db_run!(&app.db, |conn| { Ok(diesel::sql_query(&sql).get_result::<Count>(conn)?.n) })
            })();
            (*t, count.unwrap_or_else(|e| panic!("count {t}: {e}")))
        })
        .collect()
}

/// Sends raw bytes with any method (the helper's `raw` only posts).
async fn send(app: &TestApp, method: &str, path: &str, key: &str, body: Vec<u8>) -> (u16, Value) {
    let url = format!("{}{}", app.address, path);
    let req = match method {
        "POST" => app.client.post(url),
        "PUT" => app.client.put(url),
        other => panic!("method {other}"),
    };
    let mut resp = req
        .insert_header(("Authorization", format!("Bearer {key}")))
        .insert_header(("Content-Type", "application/json"))
        .send_body(body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let bytes = resp.body().limit(1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn assert_code(got: (u16, &Value), want: (u16, &str), what: &str) {
    assert_eq!((got.0, got.1["error"].as_str()), (want.0, Some(want.1)), "{what} → {}", got.1);
    assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: no message");
}

/// Every JSON write route, with the key it needs and a path (the action route is tested
/// apart: see `an_oversized_action_body_gets_413_with_a_code`).
fn write_routes(app: &TestApp) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("POST", "/v1/assign", app.assign_key.clone()),
        ("POST", "/v1/assign/batch", app.assign_key.clone()),
        ("POST", "/v1/rewards", app.assign_key.clone()),
        ("POST", "/v1/rewards/batch", app.assign_key.clone()),
        ("POST", "/v1/experiments", app.admin_key.clone()),
        ("PUT", "/v1/experiments/shop", app.admin_key.clone()),
    ]
}

async fn oversized_bodies_get_413_on_every_write_route_and_store_nothing(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.max_body_bytes = 8 * 1024).await;
    app.create_experiment(&definition("shop")).await;
    let before = row_counts(&app);
    // Well-formed JSON, only too large: the limit is `max_body_bytes`, on every route.
    let big = serde_json::to_vec(&json!({"reason": "x".repeat(9 * 1024), "experiment": "shop"})).unwrap();
    for (method, path, key) in write_routes(&app) {
        let (s, v) = send(&app, method, path, &key, big.clone()).await;
        assert_code((s, &v), (413, "payload_too_large"), &format!("{method} {path}"));
        // Streamed, without a Content-Length: the limit holds while reading.
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            big.chunks(1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let url = format!("{}{}", app.address, path);
        let req = if method == "PUT" { app.client.put(url) } else { app.client.post(url) };
        let mut resp = req
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Content-Type", "application/json"))
            .send_stream(futures_util::stream::iter(chunks))
            .await
            .expect("send stream");
        let status = resp.status().as_u16();
        let v: Value = serde_json::from_slice(&resp.body().await.expect("body")).unwrap_or(Value::Null);
        assert_code((status, &v), (413, "payload_too_large"), &format!("{method} {path} (streamed)"));
    }
    assert_eq!(row_counts(&app), before, "nothing refused was stored");
    // Just under the limit is served.
    let mut def = definition("roomy");
    def["description"] = json!("d".repeat(6 * 1024));
    let body = serde_json::to_vec(&def).unwrap();
    assert!(body.len() < 8 * 1024);
    let (s, v) = send(&app, "POST", "/v1/experiments", &app.admin_key, body).await;
    assert_eq!(s, 201, "{v}");
}
on_both_backends!(oversized_bodies_get_413_on_every_write_route_and_store_nothing);

async fn an_oversized_action_body_gets_413_with_a_code(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.max_body_bytes = 8 * 1024).await;
    app.create_experiment(&definition("shop")).await;
    let before = row_counts(&app);
    let big = serde_json::to_vec(&json!({"reason": "x".repeat(9 * 1024)})).unwrap();
    let (s, v) = send(&app, "POST", "/v1/experiments/shop/pause", &app.admin_key, big).await;
    assert_code((s, &v), (413, "payload_too_large"), "POST /v1/experiments/shop/pause");
    assert_eq!(row_counts(&app), before, "nothing refused was stored");
}
on_both_backends!(an_oversized_action_body_gets_413_with_a_code);

fn nested(depth: usize, leaf: &str) -> String {
    format!("{}{leaf}{}", "[".repeat(depth), "]".repeat(depth))
}

async fn deeply_nested_json_gets_400_in_every_body_and_legal_nesting_is_kept(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("shop")).await;
    let before = row_counts(&app);
    let deep_arrays = nested(20_000, "1");
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(20_000), "}".repeat(20_000));
    for deep in [&deep_arrays, &deep_objects] {
        // Where the schema says "any JSON" (context, payload, rule value) the parser meets
        // the nesting limit: 400. Where it wants a typed value, the second level is already
        // the wrong type: 422.
        let with_payload = |d: &str| {
            let mut def = serde_json::to_string(&definition("deep")).unwrap();
            def = def.replacen("{\"banner\":\"none\"}", d, 1);
            def
        };
        let bodies: Vec<(&str, &str, String, u16, &str)> = vec![
            (
                "POST",
                "/v1/assign",
                format!("{{\"experiment\":\"shop\",\"unit_id\":\"u\",\"context\":{{\"x\":{deep}}}}}"),
                400,
                "invalid_json",
            ),
            (
                "POST",
                "/v1/assign/batch",
                format!(
                    "{{\"requests\":[{{\"experiment\":\"shop\",\"unit_id\":\"u\",\"context\":{{\"x\":{deep}}}}}]}}"
                ),
                400,
                "invalid_json",
            ),
            (
                "POST",
                "/v1/rewards",
                format!("{{\"unit_id\":\"u\",\"metric\":\"revenue\",\"value\":{deep},\"idempotency_key\":\"k\"}}"),
                422,
                "invalid_request",
            ),
            ("POST", "/v1/rewards/batch", format!("{{\"rewards\":{deep}}}"), 422, "invalid_request"),
            ("POST", "/v1/experiments", with_payload(deep), 400, "invalid_json"),
            (
                "PUT",
                "/v1/experiments/shop",
                {
                    let mut def = definition("shop");
                    def["targeting"] = json!([{"attribute": "x", "op": "eq", "value": "PLACEHOLDER"}]);
                    serde_json::to_string(&def).unwrap().replace("\"PLACEHOLDER\"", deep)
                },
                400,
                "invalid_json",
            ),
            ("POST", "/v1/experiments/shop/pause", format!("{{\"reason\":{deep}}}"), 422, "invalid_request"),
        ];
        for (method, path, body, status, code) in bodies {
            let key = if path.starts_with("/v1/experiments") { &app.admin_key } else { &app.assign_key };
            let (s, v) = send(&app, method, path, key, body.into_bytes()).await;
            assert_code((s, &v), (status, code), &format!("{method} {path} nested 20,000 deep"));
        }
    }
    assert_eq!(row_counts(&app), before, "nothing refused was stored");
    // Nesting within the limit in an arm payload is legal and served verbatim.
    let payload: Value =
        serde_json::from_str(&format!("{{\"banner\":{}}}", nested(100, "\"deep ' ; -- \\\\ %\""))).unwrap();
    let mut def = definition("nest");
    def["arms"][0]["payload"] = payload.clone();
    app.create_experiment(&def).await;
    let (s, d) = app.assign(json!({"experiment": "nest", "unit_id": "u", "eligible_arms": ["a"]})).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["payload"], payload);
}
on_both_backends!(deeply_nested_json_gets_400_in_every_body_and_legal_nesting_is_kept);

fn arms(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!({"key": format!("arm-{i}"), "control": i == 0, "payload": {"i": i}})).collect())
}

async fn a_definition_with_more_than_100_arms_is_refused_and_100_are_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = row_counts(&app);
    for n in [101, 2_000] {
        let mut def = definition("wide");
        def["arms"] = arms(n);
        def["min_propensity"] = json!(0.0);
        let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
        assert_code((s, &v), (422, "invalid_definition"), &format!("{n} arms"));
        assert!(v["message"].as_str().unwrap().contains("at most 100 arms"), "{v}");
    }
    assert_eq!(row_counts(&app), before, "nothing refused was stored");
    let mut def = definition("wide");
    def["arms"] = arms(100);
    def["min_propensity"] = json!(0.005);
    app.create_experiment(&def).await;
    let (s, d) = app.assign(json!({"experiment": "wide", "unit_id": "u-1"})).await;
    assert_eq!(s, 200, "{d}");
    assert!(d["arm"].as_str().unwrap().starts_with("arm-"));
    // An update to 101 arms is refused and the served version stays.
    def["arms"] = arms(101);
    let (s, v) = app.request("PUT", "/v1/experiments/wide", Some(&app.admin_key), Some(&def)).await;
    assert_code((s, &v), (422, "invalid_definition"), "PUT with 101 arms");
    let (_, got) = app.request("GET", "/v1/experiments/wide", Some(&app.admin_key), None).await;
    assert_eq!((got["version"].as_i64(), got["definition"]["arms"].as_array().map(Vec::len)), (Some(1), Some(100)));
    // A long eligibility list naming unknown arms is refused, not scanned into a 5xx.
    let many: Vec<String> = (0..5_000).map(|i| format!("nope-{i}")).collect();
    let (s, v) = app.assign(json!({"experiment": "wide", "unit_id": "u-1", "eligible_arms": many})).await;
    assert_code((s, &v), (422, "unknown_arm"), "5,000 unknown eligible arms");
}
on_both_backends!(a_definition_with_more_than_100_arms_is_refused_and_100_are_served);

/// Legal unicode: right-to-left override, zero-width joiner, combining marks, emoji,
/// non-BMP, a BOM, full-width quote — none is a control character.
const UNICODE: [&str; 6] =
    ["\u{202e}evil\u{202c}", "👩\u{200d}💻", "e\u{301}\u{301}\u{301}", "𝔘𝔫𝔦", "\u{feff}bom", "＇；"];
/// Control characters (C0, DEL, C1): refused in every id.
const CONTROLS: [&str; 6] = ["a\nb", "a\rb", "a\tb", "a\u{7f}b", "a\u{85}b", "a\u{1b}[31mred"];

async fn unicode_is_kept_and_control_characters_are_refused_in_ids_and_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("shop")).await;
    let exp_id = app.state.registry.load().get("shop").unwrap().id;
    // Legal unicode ids: assigned, sticky to the same arm, rewarded by unit, kept verbatim.
    for (i, u) in UNICODE.iter().enumerate() {
        let body = json!({"experiment": "shop", "unit_id": u, "request_id": u, "context": {*u: *u}});
        let (s, d) = app.assign(body.clone()).await;
        assert_eq!(s, 200, "unit {u:?}: {d}");
        let (_, again) = app.assign(body).await;
        assert_eq!(again["arm"], d["arm"], "same unit and request, same arm");
        let row = queries::find_exposure(&app.db, d["exposure_id"].as_str().unwrap(), None).unwrap();
        assert_eq!(row.request_id, *u);
        let ctx: Value = serde_json::from_str(&row.context).unwrap();
        assert_eq!(ctx[*u], json!(u), "context kept verbatim");
        let key = format!("{u}-{i}");
        let (s, r) = app.reward(json!({"unit_id": u, "metric": "revenue", "value": 1.5, "idempotency_key": key})).await;
        assert_eq!(s, 200, "reward for {u:?}: {r}");
        assert_eq!(r["attributions"][0]["exposure_id"], again["exposure_id"], "last touch");
        let rows = queries::rewards_for_exposure(&app.db, again["exposure_id"].as_str().unwrap()).unwrap();
        assert!(rows.iter().any(|r| r.idempotency_key == key), "idempotency key kept verbatim");
    }
    // 256 two-byte characters are 256 characters (the limit counts characters, not bytes).
    let (s, v) = app.assign(json!({"experiment": "shop", "unit_id": "é".repeat(256)})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app.assign(json!({"experiment": "shop", "unit_id": "é".repeat(257)})).await;
    assert_code((s, &v), (422, "invalid_unit_id"), "257 characters");
    let exposures = queries::count_exposures(&app.db, exp_id).unwrap();
    let before = row_counts(&app);
    let (_, d) = app.assign(json!({"experiment": "shop", "unit_id": "ok"})).await;
    let exposure = d["exposure_id"].as_str().unwrap().to_string();
    let before_refusals = row_counts(&app);
    for c in CONTROLS {
        let cases: Vec<(&str, Value, u16, &str)> = vec![
            ("/v1/assign", json!({"experiment": "shop", "unit_id": c}), 422, "invalid_unit_id"),
            ("/v1/assign", json!({"experiment": "shop", "unit_id": "u", "request_id": c}), 422, "invalid_request_id"),
            ("/v1/assign", json!({"experiment": "shop", "unit_id": "u", "context": {c: 1}}), 422, "invalid_context"),
            ("/v1/assign", json!({"experiment": "shop", "unit_id": "u", "context": {"k": c}}), 422, "invalid_context"),
            ("/v1/assign", json!({"experiment": c, "unit_id": "u"}), 404, "experiment_not_found"),
            ("/v1/assign", json!({"experiment": "shop", "unit_id": "u", "eligible_arms": [c]}), 422, "unknown_arm"),
            (
                "/v1/rewards",
                json!({"exposure_id": exposure, "metric": "revenue", "value": 1, "idempotency_key": c}),
                422,
                "invalid_idempotency_key",
            ),
            (
                "/v1/rewards",
                json!({"unit_id": c, "metric": "revenue", "value": 1, "idempotency_key": "k"}),
                422,
                "invalid_unit_id",
            ),
            (
                "/v1/rewards",
                json!({"exposure_id": exposure, "metric": c, "value": 1, "idempotency_key": "k"}),
                422,
                "unknown_metric",
            ),
            (
                "/v1/rewards",
                json!({"exposure_id": c, "metric": "revenue", "value": 1, "idempotency_key": "k"}),
                422,
                "invalid_exposure_id",
            ),
        ];
        for (path, body, status, code) in cases {
            let (s, v) = app.request("POST", path, Some(&app.assign_key), Some(&body)).await;
            assert_code((s, &v), (status, code), &format!("{path} {body}"));
        }
        // The same in a batch: one error per item, in order, nothing stored.
        let (s, v) = app
            .request(
                "POST",
                "/v1/assign/batch",
                Some(&app.assign_key),
                Some(&json!({"requests": [{"experiment": "shop", "unit_id": c}, {"experiment": c, "unit_id": "u"}]})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let codes: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["error"].as_str().unwrap()).collect();
        assert_eq!(codes, ["invalid_unit_id", "experiment_not_found"]);
        // Definitions: keys are plain ASCII, the name may hold anything printable.
        for (field, value) in [("key", json!(c)), ("arms", json!([{"key": c, "control": true}, {"key": "b"}]))] {
            let mut def = definition("ctl");
            def[field] = value;
            let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
            assert_code((s, &v), (422, "invalid_definition"), &format!("definition {field} = {c:?}"));
        }
        let mut def = definition("ctl");
        def["primary_metric"]["name"] = json!(c);
        let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
        assert_code((s, &v), (422, "invalid_definition"), &format!("metric name {c:?}"));
    }
    assert_eq!(row_counts(&app), before_refusals, "nothing refused was stored");
    assert_eq!(queries::count_exposures(&app.db, exp_id).unwrap(), exposures + 1);
    assert_ne!(before, before_refusals);
    // Unicode keys in a definition are refused (keys are ASCII); in an experiment name kept.
    for u in UNICODE {
        let mut def = definition("uni");
        def["key"] = json!(u);
        let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
        assert_code((s, &v), (422, "invalid_definition"), &format!("key {u:?}"));
    }
    let mut def = definition("uni");
    def["name"] = json!(UNICODE.concat());
    app.create_experiment(&def).await;
    let (_, got) = app.request("GET", "/v1/experiments/uni", Some(&app.read_key), None).await;
    assert_eq!(got["name"], json!(UNICODE.concat()));
    // A lone surrogate is not UTF-8: malformed JSON.
    let (s, v) = app
        .raw("/v1/assign", &app.assign_key, "application/json", br#"{"experiment":"shop","unit_id":"\ud800"}"#.to_vec())
        .await;
    assert_code((s, &v), (400, "invalid_json"), "lone surrogate");
    // Invalid UTF-8 bytes in the body.
    let mut body = br#"{"experiment":"shop","unit_id":""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
    let (s, v) = app.raw("/v1/assign", &app.assign_key, "application/json", body).await;
    assert_code((s, &v), (400, "invalid_json"), "invalid UTF-8");
}
on_both_backends!(unicode_is_kept_and_control_characters_are_refused_in_ids_and_keys);

async fn sql_metacharacters_are_data_in_every_string_field(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("shop")).await;
    let exp_id = app.state.registry.load().get("shop").unwrap().id;
    for (i, nasty) in SQL_NASTIES.iter().enumerate() {
        // Legal where text is free: unit id, request id, context keys and values.
        let (s, d) = app
            .assign(json!({"experiment": "shop", "unit_id": nasty, "request_id": nasty,
                           "context": {*nasty: *nasty, "k": *nasty}}))
            .await;
        assert_eq!(s, 200, "{nasty:?}: {d}");
        let exposure = d["exposure_id"].as_str().unwrap().to_string();
        let row = queries::find_exposure(&app.db, &exposure, None).unwrap();
        assert_eq!(row.request_id, *nasty, "request id kept verbatim");
        let ctx: Value = serde_json::from_str(&row.context).unwrap();
        assert_eq!((&ctx[*nasty], &ctx["k"]), (&json!(nasty), &json!(nasty)), "context kept verbatim");
        // Rewards: the idempotency key is free text, by exposure and by unit.
        let key = format!("{nasty}#{i}");
        let (s, r) =
            app.reward(json!({"exposure_id": exposure, "metric": "revenue", "value": 2, "idempotency_key": key})).await;
        assert_eq!((s, r["duplicate"].as_bool()), (200, Some(false)), "{r}");
        let (s, r) = app
            .reward(json!({"unit_id": nasty, "experiment": "shop", "metric": "purchase", "value": 1,
                           "idempotency_key": nasty}))
            .await;
        assert_eq!(s, 200, "reward by unit {nasty:?}: {r}");
        let stored = queries::rewards_for_exposure(&app.db, &exposure).unwrap();
        let keys: Vec<&str> = stored.iter().map(|r| r.idempotency_key.as_str()).collect();
        assert!(keys.contains(&key.as_str()) && keys.contains(nasty), "{keys:?}");
        // The same key again is a duplicate, not a wildcard match and not a second row.
        let (_, r) =
            app.reward(json!({"exposure_id": exposure, "metric": "revenue", "value": 2, "idempotency_key": key})).await;
        assert_eq!(r["duplicate"], true, "{r}");
    }
    // `%` and `_` matched nothing else: every idempotency key was new the first time.
    assert_eq!(queries::count_exposures(&app.db, exp_id).unwrap(), SQL_NASTIES.len() as i64);
    let before = row_counts(&app);
    let (_, d) = app.assign(json!({"experiment": "shop", "unit_id": "plain"})).await;
    let exposure = d["exposure_id"].as_str().unwrap().to_string();
    let before = {
        let after = row_counts(&app);
        assert_ne!(after, before);
        after
    };
    // Refused where a name must match: experiment, arm, metric, exposure id, definition keys.
    for nasty in SQL_NASTIES {
        let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
            ("POST", "/v1/assign", json!({"experiment": nasty, "unit_id": "u"}), 404, "experiment_not_found"),
            (
                "POST",
                "/v1/assign",
                json!({"experiment": "shop", "unit_id": "u", "eligible_arms": [nasty]}),
                422,
                "unknown_arm",
            ),
            (
                "POST",
                "/v1/rewards",
                json!({"exposure_id": nasty, "metric": "revenue", "value": 1, "idempotency_key": "k"}),
                422,
                "invalid_exposure_id",
            ),
            (
                "POST",
                "/v1/rewards",
                json!({"exposure_id": exposure, "metric": nasty, "value": 1, "idempotency_key": "k"}),
                422,
                "unknown_metric",
            ),
            (
                "POST",
                "/v1/rewards",
                json!({"unit_id": "plain", "experiment": nasty, "metric": "revenue", "value": 1, "idempotency_key": "k"}),
                404,
                "experiment_not_found",
            ),
            (
                "POST",
                "/v1/rewards",
                json!({"exposure_id": exposure, "experiment": nasty, "metric": "revenue", "value": 1,
                       "idempotency_key": "k"}),
                422,
                "experiment_mismatch",
            ),
            (
                "POST",
                "/v1/rewards",
                json!({"unit_id": format!("{nasty}x"), "metric": "revenue", "value": 1, "idempotency_key": "k"}),
                422,
                "no_attributable_exposure",
            ),
        ];
        for (method, path, body, status, code) in cases {
            let (s, v) = app.request(method, path, Some(&app.assign_key), Some(&body)).await;
            assert_code((s, &v), (status, code), &format!("{path} {body}"));
        }
        let mut defs = Vec::new();
        for field in ["key", "arm", "metric", "window", "reward_wait"] {
            let mut def = definition("sqlish");
            match field {
                "key" => def["key"] = json!(nasty),
                "arm" => def["arms"][1]["key"] = json!(nasty),
                "metric" => def["primary_metric"]["name"] = json!(nasty),
                "window" => def["primary_metric"]["window"] = json!(nasty),
                _ => def["reward_wait"] = json!(nasty),
            }
            defs.push((field, def));
        }
        for (field, def) in defs {
            if field != "window" && field != "reward_wait" && valid_key(nasty) {
                continue; // `_` is a legal key
            }
            let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
            assert_code((s, &v), (422, "invalid_definition"), &format!("definition {field} = {nasty:?}"));
        }
        for path in
            [format!("/v1/experiments/{}", urlencode(nasty)), format!("/v1/experiments/shop/{}", urlencode(nasty))]
        {
            let (s, v) = app.request("POST", &path, Some(&app.admin_key), Some(&json!({}))).await;
            assert!(matches!(s, 404 | 405 | 422), "{path}: {s} {v}");
            assert!(v["error"].as_str().is_some(), "{path}: {v}");
        }
        let (s, v) =
            app.request("GET", &format!("/v1/experiments/{}", urlencode(nasty)), Some(&app.admin_key), None).await;
        assert!(matches!(s, 404 | 422), "GET {nasty:?}: {s} {v}");
    }
    assert_eq!(row_counts(&app), before, "nothing refused was stored");
    // Free text in a definition and an action is stored verbatim: name, description, arm
    // payload, targeting value, the reason of a lifecycle action.
    let text = SQL_NASTIES.join(" ");
    let mut def = definition("sqlish");
    def["name"] = json!(text);
    def["description"] = json!(text);
    let mut payload = serde_json::Map::new();
    payload.insert("banner".into(), json!(text));
    payload.insert(text.clone(), json!(1));
    def["arms"][0]["payload"] = Value::Object(payload);
    def["targeting"] = json!([{"attribute": SQL_NASTIES[0], "op": "in", "value": SQL_NASTIES}]);
    app.create_experiment(&def).await;
    let (s, v) = app.action("sqlish", "pause", json!({"reason": text})).await;
    assert_eq!(s, 200, "{v}");
    let (_, got) = app.request("GET", "/v1/experiments/sqlish", Some(&app.admin_key), None).await;
    assert_eq!((&got["name"], &got["definition"]["description"]), (&json!(text), &json!(text)));
    assert_eq!(got["definition"]["arms"][0]["payload"], def["arms"][0]["payload"]);
    assert_eq!(got["definition"]["targeting"], def["targeting"]);
    let (_, log) = app.request("GET", "/v1/experiments/sqlish/decisions", Some(&app.admin_key), None).await;
    assert_eq!(log.as_array().unwrap().last().unwrap()["reason"], json!(text));
    let (s, _) = app.action("sqlish", "resume", json!({})).await;
    assert_eq!(s, 200);
    let (s, d) = app
        .assign(json!({"experiment": "sqlish", "unit_id": "u", "context": {SQL_NASTIES[0]: SQL_NASTIES[3]},
                       "eligible_arms": ["a"]}))
        .await;
    assert_eq!((s, d["logged"].as_bool()), (200, Some(true)), "targeted on a nasty attribute: {d}");
    assert_eq!(d["payload"], def["arms"][0]["payload"]);
    // Every table is still there and holds what was sent.
    assert!(row_counts(&app).iter().all(|(_, n)| *n >= 0));
}
on_both_backends!(sql_metacharacters_are_data_in_every_string_field);

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn nul_bytes_are_refused_in_ids_and_harmless_in_free_text(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("shop")).await;
    let (_, d) = app.assign(json!({"experiment": "shop", "unit_id": "u"})).await;
    let exposure = d["exposure_id"].as_str().unwrap().to_string();
    let before = row_counts(&app);
    let nul = "a\u{0}b";
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("/v1/assign", json!({"experiment": "shop", "unit_id": nul}), 422, "invalid_unit_id"),
        ("/v1/assign", json!({"experiment": "shop", "unit_id": "u", "request_id": nul}), 422, "invalid_request_id"),
        ("/v1/assign", json!({"experiment": "shop", "unit_id": "u", "context": {nul: 1}}), 422, "invalid_context"),
        ("/v1/assign", json!({"experiment": "shop", "unit_id": "u", "context": {"k": nul}}), 422, "invalid_context"),
        ("/v1/assign", json!({"experiment": nul, "unit_id": "u"}), 404, "experiment_not_found"),
        ("/v1/assign", json!({"experiment": "shop", "unit_id": "u", "eligible_arms": [nul]}), 422, "unknown_arm"),
        (
            "/v1/rewards",
            json!({"exposure_id": exposure, "metric": "revenue", "value": 1, "idempotency_key": nul}),
            422,
            "invalid_idempotency_key",
        ),
        (
            "/v1/rewards",
            json!({"unit_id": nul, "metric": "revenue", "value": 1, "idempotency_key": "k"}),
            422,
            "invalid_unit_id",
        ),
        (
            "/v1/rewards",
            json!({"exposure_id": exposure, "metric": nul, "value": 1, "idempotency_key": "k"}),
            422,
            "unknown_metric",
        ),
        (
            "/v1/rewards",
            json!({"exposure_id": nul, "metric": "revenue", "value": 1, "idempotency_key": "k"}),
            422,
            "invalid_exposure_id",
        ),
    ];
    for (path, body, status, code) in cases {
        let (s, v) = app.request("POST", path, Some(&app.assign_key), Some(&body)).await;
        assert_code((s, &v), (status, code), &format!("{path} {body}"));
    }
    for field in ["key", "arm", "metric"] {
        let mut def = definition("nul");
        match field {
            "key" => def["key"] = json!(nul),
            "arm" => def["arms"][1]["key"] = json!(nul),
            _ => def["primary_metric"]["name"] = json!(nul),
        }
        let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
        assert_code((s, &v), (422, "invalid_definition"), &format!("definition {field} with NUL"));
    }
    assert_eq!(row_counts(&app), before, "nothing refused was stored");
    // In JSON values that are stored as JSON text (payload, targeting), NUL is escaped.
    let mut def = definition("nulpay");
    def["arms"][0]["payload"] = json!({"banner": nul});
    let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
    assert_eq!(s, 201, "NUL inside an arm payload: {v}");
    let (_, d) = app.assign(json!({"experiment": "nulpay", "unit_id": "u", "eligible_arms": ["a"]})).await;
    assert_eq!(d["payload"]["banner"], json!(nul));
}
on_both_backends!(nul_bytes_are_refused_in_ids_and_harmless_in_free_text);

/// Like `send`, but a dropped connection (a handler that panicked) is a value, not a panic.
async fn attempt(app: &TestApp, method: &str, path: &str, key: &str, body: &Value) -> Result<(u16, Value), String> {
    let url = format!("{}{}", app.address, path);
    let req = match method {
        "POST" => app.client.post(url),
        _ => app.client.put(url),
    };
    let mut resp = req
        .insert_header(("Authorization", format!("Bearer {key}")))
        .send_json(body)
        .await
        .map_err(|e| format!("{method} {path}: no answer ({e})"))?;
    let status = resp.status().as_u16();
    let bytes = resp.body().await.map_err(|e| format!("{method} {path}: body ({e})"))?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Records a problem unless the answer is `ok` (a 4xx with a code, or a success).
fn judge(problems: &mut Vec<String>, what: &str, got: Result<(u16, Value), String>, ok: &[u16]) {
    match got {
        Ok((s, v)) if ok.contains(&s) || ((400..500).contains(&s) && v["error"].is_string()) => {}
        Ok((s, v)) => problems.push(format!("{what}: {s} {v}")),
        Err(e) => problems.push(format!("{what}: {e}")),
    }
}

/// NUL in free text that goes to a TEXT column as is: the experiment name (create and
/// update) and the reason of a lifecycle action. Postgres cannot store NUL in TEXT, so the
/// answer must be a 4xx with a code (or the text stored), never a 500.
async fn nul_in_a_name_or_a_reason_is_a_4xx_not_a_500(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("shop")).await;
    let before = row_counts(&app);
    let mut problems = Vec::new();
    let mut def = definition("nulname");
    def["name"] = json!("a\u{0}b");
    let got = attempt(&app, "POST", "/v1/experiments", &app.admin_key, &def).await;
    let created = matches!(got, Ok((201, _)));
    judge(&mut problems, "POST /v1/experiments, NUL in `name`", got, &[201]);
    if !created && row_counts(&app) != before {
        problems.push("a refused create stored rows".into());
    }
    let mut def = definition("shop");
    def["name"] = json!("a\u{0}b");
    let got = attempt(&app, "PUT", "/v1/experiments/shop", &app.admin_key, &def).await;
    judge(&mut problems, "PUT /v1/experiments/shop, NUL in `name`", got, &[200]);
    let got = attempt(&app, "POST", "/v1/experiments/shop/pause", &app.admin_key, &json!({"reason": "a\u{0}b"})).await;
    judge(&mut problems, "POST /v1/experiments/shop/pause, NUL in `reason`", got, &[200]);
    assert!(problems.is_empty(), "{problems:#?}");
}
on_both_backends!(nul_in_a_name_or_a_reason_is_a_4xx_not_a_500);

/// Windows and reward waits are bounded (365 and 90 days): millions of years, past chrono's
/// range, are refused with their field; the bounds themselves are served end to end (a reward
/// by exposure and by unit, the learner, the analyzer). A huge duration that is already
/// stored is covered by `a_huge_window_already_in_the_store_is_served_never_a_panic`.
async fn absurd_durations_are_refused_with_their_field_and_the_bounds_are_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = row_counts(&app);
    for (window, wait, bad) in [
        ("200000000y", "10m", vec!["primary_metric.window"]),
        ("300000000y", "300000000y", vec!["primary_metric.window", "reward_wait"]),
        ("584000000000y", "584000000000y", vec!["primary_metric.window", "reward_wait"]),
        ("366d", "91d", vec!["primary_metric.window", "reward_wait"]),
        ("1h", "2160h 1s", vec!["reward_wait"]),
    ] {
        let mut def = definition("long");
        def["primary_metric"]["window"] = json!(window);
        def["reward_wait"] = json!(wait);
        let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
        assert_code((s, &v), (422, "invalid_definition"), &format!("window {window}, reward_wait {wait}"));
        let message = v["message"].as_str().unwrap();
        for field in bad {
            assert!(message.contains(field), "{field} named in {message}");
        }
        let (s, v) = app.request("PUT", "/v1/experiments/long", Some(&app.admin_key), Some(&def)).await;
        assert!(matches!(s, 404 | 422), "{s} {v}");
    }
    assert_eq!(row_counts(&app), before, "nothing refused was stored");
    // The bounds are legal and served.
    let mut def = definition("long");
    def["primary_metric"]["window"] = json!("365d");
    def["guardrails"][0]["window"] = json!("8760h");
    def["reward_wait"] = json!("90d");
    app.create_experiment(&def).await;
    let (s, d) = app.assign(json!({"experiment": "long", "unit_id": "u"})).await;
    assert_eq!(s, 200, "{d}");
    let exposure = d["exposure_id"].as_str().unwrap();
    let (s, r) =
        app.reward(json!({"exposure_id": exposure, "metric": "purchase", "value": 1, "idempotency_key": "k1"})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = app.reward(json!({"unit_id": "u", "metric": "revenue", "value": 3, "idempotency_key": "k2"})).await;
    assert_eq!((s, &r["attributions"][0]["exposure_id"]), (200, &json!(exposure)), "{r}");
    app.learn();
    let report = app.analyze(strategist::store::now());
    assert!(report.failed.is_empty(), "{:?}", report.failed);
}
on_both_backends!(absurd_durations_are_refused_with_their_field_and_the_bounds_are_served);

/// A definition stored before `validate` bounded windows (or written to the store by hand):
/// every duration of millions of years, one past chrono's range. Rewards by exposure and by
/// unit are served, the learner and the analyzer run (sticky, so the analyzer's per-unit SQL
/// sees the window too): no panic, no 500.
async fn a_huge_window_already_in_the_store_is_served_never_a_panic(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("old");
    def["sticky"] = json!(true);
    app.create_experiment(&def).await;
    let exp_id = app.state.registry.load().get("old").unwrap().id;
    let mut huge = def.clone();
    huge["primary_metric"]["window"] = json!("200000000y");
    huge["guardrails"][0]["window"] = json!("584000000000y");
    huge["reward_wait"] = json!("584000000000y");
    let huge: strategist::experiment::definition::Definition = serde_json::from_value(huge).unwrap();
    assert_eq!(huge.validate().len(), 3, "validation refuses each duration now: {:?}", huge.validate());
    let text = serde_json::to_string(&huge).unwrap().replace('\'', "''");
    let sql = format!("UPDATE experiment_versions SET definition = '{text}' WHERE experiment_id = {exp_id}");
    let changed = (|| -> Result<usize, StoreError> {
        strategist::db_run!(&app.db, |conn| { Ok(diesel::sql_query(&sql).execute(conn)?) })
    })()
    .unwrap();
    assert_eq!(changed, 1, "the stored definition was rewritten");
    app.state.invalidate();
    app.state.refresh_registry().unwrap();
    let live = app.state.registry.load().get("old").unwrap().definition.primary_metric.window.clone();
    assert_eq!(live, "200000000y");
    let mut problems = Vec::new();
    let (s, d) = app.assign(json!({"experiment": "old", "unit_id": "u"})).await;
    assert_eq!(s, 200, "{d}");
    let exposure = d["exposure_id"].as_str().unwrap();
    for (how, metric, body) in [
        (
            "by exposure",
            "purchase",
            json!({"exposure_id": exposure, "metric": "purchase", "value": 1, "idempotency_key": "k1"}),
        ),
        ("by unit", "purchase", json!({"unit_id": "u", "metric": "purchase", "value": 1, "idempotency_key": "k2"})),
        ("by unit", "revenue", json!({"unit_id": "u", "metric": "revenue", "value": 9.5, "idempotency_key": "k3"})),
    ] {
        let got = attempt(&app, "POST", "/v1/rewards", &app.assign_key, &body).await;
        match got {
            Ok((200, v)) => assert_eq!(v["attributions"][0]["exposure_id"], json!(exposure), "{v}"),
            other => problems.push(format!("POST /v1/rewards {how} on `{metric}`: {other:?}")),
        }
    }
    if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app.learn())) {
        problems.push(format!("the learner panicked: {}", panic_text(&e)));
    }
    let now = strategist::store::now();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app.analyze(now))) {
        Ok(report) => {
            if !report.failed.is_empty() {
                problems.push(format!("the analyzer failed on {:?}", report.failed));
            }
        }
        Err(e) => problems.push(format!("the analyzer panicked: {}", panic_text(&e))),
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
on_both_backends!(a_huge_window_already_in_the_store_is_served_never_a_panic);

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// Replays every file of `fuzz/<dir>/<target>/` through `check`.
fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
            assert!(outcome.is_ok(), "{} panicked", path.display());
            n += 1;
        }
    }
    n
}

/// The `definition_toml` fuzz target's body.
fn definition_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(def) = strategist::experiment::definition::from_toml(text) {
        if def.validate().is_empty() {
            let _ = def.max_window();
            let _ = def.reward_wait_duration();
            let _ = strategist::experiment::definition::windows(&def);
        }
    }
}

/// The `context_json` fuzz target's body.
fn context_json(data: &[u8]) {
    if let Ok(map) = serde_json::from_slice::<serde_json::Map<String, Value>>(data) {
        let _ = strategist::experiment::context::parse_context(&map);
    }
    if let Ok(req) = serde_json::from_slice::<strategist::api::assign::AssignRequest>(data) {
        if let Some(ctx) = &req.context {
            let _ = strategist::experiment::context::parse_context(ctx);
        }
        let _ = strategist::api::assign::check_id("unit_id", "invalid_unit_id", &req.unit_id);
        let _ = strategist::api::assign::truncate(&req.experiment);
    }
}

#[test]
fn the_definition_fuzz_corpus_replays_without_a_panic() {
    assert!(replay("definition_toml", definition_toml) > 0, "fuzz/seeds/definition_toml is empty");
}

#[test]
fn the_context_fuzz_corpus_replays_without_a_panic() {
    assert!(replay("context_json", context_json) > 0, "fuzz/seeds/context_json is empty");
}
