use serde_json::json;

use crate::helpers::{definition, spawn_app, Backend};
use crate::on_both_backends;

async fn the_lifecycle_moves_forward_and_is_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("life");
    def.as_object_mut().unwrap().remove("status");
    let created = app.create_experiment(&def).await;
    assert_eq!(created["status"], "draft");
    let (_, v) = app.assign(json!({"experiment": "life", "unit_id": "u"})).await;
    assert_eq!((v["logged"].as_bool(), v["reason"].as_str()), (Some(false), Some("not_running")));

    let (s, v) = app.action("life", "start", json!({"reason": "launch"})).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("running")), "{v}");
    let (_, v) = app.assign(json!({"experiment": "life", "unit_id": "u"})).await;
    assert_eq!(v["logged"], true);

    let (s, _) = app.action("life", "pause", json!({})).await;
    assert_eq!(s, 200);
    let (_, v) = app.assign(json!({"experiment": "life", "unit_id": "u"})).await;
    assert_eq!((v["logged"].as_bool(), v["arm"].as_str()), (Some(false), Some("a")));

    let (s, v) = app.action("life", "start", json!({})).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("invalid_transition")));
    let (s, _) = app.action("life", "resume", json!({})).await;
    assert_eq!(s, 200);
    let (s, v) = app.action("life", "conclude", json!({"winner": "zzz"})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("unknown_arm")));
    let (s, v) = app.action("life", "conclude", json!({"winner": "b", "reason": "b won"})).await;
    assert_eq!((s, v["promoted_arm"].as_str()), (200, Some("b")), "{v}");
    let (_, v) = app.assign(json!({"experiment": "life", "unit_id": "u"})).await;
    assert_eq!((v["logged"].as_bool(), v["arm"].as_str()), (Some(false), Some("b")), "the winner is the default");
    let (s, v) = app.action("life", "explode", json!({})).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown_action")));

    let (s, log) = app.request("GET", "/v1/experiments/life/decisions", Some(&app.admin_key), None).await;
    assert_eq!(s, 200);
    let actions: Vec<&str> = log.as_array().unwrap().iter().map(|d| d["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "start", "pause", "resume", "conclude"]);
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(last["reason"], "b won");
    assert!(last["actor"].as_str().unwrap().starts_with("key:stk_"));
    assert_eq!(last["details"]["winner"], "b");
}
on_both_backends!(the_lifecycle_moves_forward_and_is_audited);

async fn changing_arms_makes_a_new_version_and_exposures_record_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("ver");
    app.create_experiment(&def).await;
    let (_, before) = app.assign(json!({"experiment": "ver", "unit_id": "u"})).await;
    def["name"] = json!("Renamed");
    let (s, v) = app.request("PUT", "/v1/experiments/ver", Some(&app.admin_key), Some(&def)).await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("updated_in_place")), "{v}");
    assert_eq!(v["experiment"]["version"], 1);
    def["arms"].as_array_mut().unwrap().push(json!({"key": "d", "payload": {"banner": "bundle"}}));
    let (s, v) = app.request("PUT", "/v1/experiments/ver", Some(&app.admin_key), Some(&def)).await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("new_version")), "{v}");
    assert_eq!(v["experiment"]["version"], 2);
    let (_, after) = app.assign(json!({"experiment": "ver", "unit_id": "u", "eligible_arms": ["d"]})).await;
    assert_eq!(after["arm"], "d");
    assert!(after["policy_version"].as_i64() > before["policy_version"].as_i64());
    let q = |id: &serde_json::Value| {
        strategist::store::queries::find_exposure(&app.db, id.as_str().unwrap(), None).unwrap()
    };
    assert_eq!(q(&before["exposure_id"]).version, 1);
    assert_eq!(q(&after["exposure_id"]).version, 2);
    let (s, v) = app.request("PUT", "/v1/experiments/ver", Some(&app.admin_key), Some(&def)).await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("unchanged")));
    let (s, v) = app.request("PUT", "/v1/experiments/other", Some(&app.admin_key), Some(&def)).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("key_mismatch")));
}
on_both_backends!(changing_arms_makes_a_new_version_and_exposures_record_it);

async fn invalid_definitions_name_every_field_and_reason(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("bad key!");
    def["arms"][1]["control"] = json!(true);
    def["traffic"] = json!(1.5);
    def["policy"] = json!({"kind": "epsilon_greedy", "epsilon": 2.0});
    def["primary_metric"]["window"] = json!("soon");
    let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_definition")));
    let msg = v["message"].as_str().unwrap();
    for field in ["key:", "arms:", "traffic:", "policy:", "primary_metric.window:"] {
        assert!(msg.contains(field), "`{field}` missing from: {msg}");
    }
    let mut unknown = definition("x");
    unknown["colour"] = json!("red");
    let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&unknown)).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_request")));
    assert!(v["message"].as_str().unwrap().contains("colour"));
    app.create_experiment(&definition("dup")).await;
    let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&definition("dup"))).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("experiment_exists")));
    let (s, v) = app.request("GET", "/v1/experiments", Some(&app.read_key), None).await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (s, v) = app.request("GET", "/v1/experiments/nope", Some(&app.read_key), None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("experiment_not_found")));
}
on_both_backends!(invalid_definitions_name_every_field_and_reason);

#[test]
fn definition_files_report_the_file_field_and_reason() {
    let dir = std::env::temp_dir().join(format!("strategist-defs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        "key = \"bad\"\nname = \"Bad\"\nmin_propensity = 0.9\n[[arms]]\nkey = \"a\"\ncontrol = true\n[[arms]]\nkey = \"b\"\n[policy]\nkind = \"fixed\"\n[primary_metric]\nname = \"m\"\nkind = \"conversion\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("broken.toml"), "key = \n").unwrap();
    let problems = strategist::experiment::files::load_definitions(&dir).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("bad.toml: min_propensity:")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("broken.toml")), "{text:?}");
    let examples = strategist::experiment::files::load_definitions(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments"
    )))
    .expect("the shipped examples are valid");
    assert!(examples.len() >= 3);
    std::fs::remove_dir_all(dir).ok();
}
