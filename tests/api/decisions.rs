use std::collections::HashMap;

use serde_json::json;

use crate::helpers::{definition, spawn_app, Backend};
use crate::on_both_backends;

async fn assign_returns_the_contract_fields_and_logs_the_exposure(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("checkout")).await;
    let (s, v) = app
        .assign(json!({"experiment": "checkout", "unit_id": "u-1", "request_id": "r-1",
                       "context": {"device": "mobile", "cart_value": 54.9}}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["experiment"], "checkout");
    assert_eq!(v["logged"], true);
    assert_eq!(v["policy_version"], 1);
    let arm = v["arm"].as_str().unwrap();
    assert!(["a", "b", "c"].contains(&arm));
    // fixed equal weights, floor 0.05: (1 - 3*0.05)/3 + 0.05 = 1/3
    assert!((v["propensity"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert!(v["payload"].is_object());
    let id = v["exposure_id"].as_str().unwrap();
    let stored = strategist::store::queries::find_exposure(&app.db, id, None).unwrap();
    assert_eq!(stored.arm, arm);
    assert_eq!(stored.propensity, v["propensity"].as_f64().unwrap());
    assert_ne!(stored.unit_hash, "u-1", "unit ids are pseudonymised");
    assert!(!stored.unit_hash.contains("u-1"));
    assert_eq!(stored.version, 1);
    let ctx: serde_json::Value = serde_json::from_str(&stored.context).unwrap();
    assert_eq!(ctx["device"], "mobile");
}
on_both_backends!(assign_returns_the_contract_fields_and_logs_the_exposure);

async fn the_same_request_gets_the_same_arm(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("checkout")).await;
    let mut arms_by_request = HashMap::new();
    for i in 0..30 {
        let body = json!({"experiment": "checkout", "unit_id": format!("u-{i}"), "request_id": "r-7"});
        let (_, first) = app.assign(body.clone()).await;
        let (_, second) = app.assign(body).await;
        assert_eq!(first["arm"], second["arm"]);
        assert_eq!(first["propensity"], second["propensity"]);
        arms_by_request.insert(i, first["arm"].as_str().unwrap().to_string());
    }
    let distinct: std::collections::HashSet<_> = arms_by_request.values().collect();
    assert!(distinct.len() > 1, "different units should not all get one arm");
}
on_both_backends!(the_same_request_gets_the_same_arm);

async fn a_sticky_unit_keeps_its_first_arm(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("banner");
    def["sticky"] = json!(true);
    app.create_experiment(&def).await;
    let mut firsts = std::collections::HashSet::new();
    for u in 0..12 {
        let (_, first) =
            app.assign(json!({"experiment": "banner", "unit_id": format!("s-{u}"), "request_id": "r-0"})).await;
        firsts.insert(first["arm"].as_str().unwrap().to_string());
        for r in 1..8 {
            let (_, v) = app
                .assign(json!({"experiment": "banner", "unit_id": format!("s-{u}"), "request_id": format!("r-{r}")}))
                .await;
            assert_eq!(v["arm"], first["arm"], "unit s-{u} changed arm");
            assert_eq!(v["propensity"], first["propensity"]);
            assert_eq!(v["logged"], true);
        }
    }
    assert!(firsts.len() > 1);
}
on_both_backends!(a_sticky_unit_keeps_its_first_arm);

async fn targeting_admits_only_matching_contexts(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("winback");
    def["targeting"] = json!([
        {"attribute": "days_since_last_order", "op": "gte", "value": 90},
        {"attribute": "country", "op": "in", "value": ["DE", "FR"]}
    ]);
    app.create_experiment(&def).await;
    let (_, v) = app
        .assign(json!({"experiment": "winback", "unit_id": "u", "context": {"days_since_last_order": 120, "country": "DE"}}))
        .await;
    assert_eq!(v["logged"], true);
    for ctx in [
        json!({"days_since_last_order": 30, "country": "DE"}),
        json!({"days_since_last_order": 120, "country": "US"}),
        json!({"country": "DE"}),
    ] {
        let (s, v) = app.assign(json!({"experiment": "winback", "unit_id": "u", "context": ctx})).await;
        assert_eq!(s, 200);
        assert_eq!(v["logged"], false, "{ctx}");
        assert_eq!(v["arm"], "a", "the default arm is control");
        assert_eq!(v["reason"], "not_targeted");
        assert!(v["exposure_id"].is_null());
    }
    let id = app.state.registry.load().get("winback").unwrap().id;
    assert_eq!(strategist::store::queries::count_exposures(&app.db, id).unwrap(), 1);
}
on_both_backends!(targeting_admits_only_matching_contexts);

async fn traffic_share_admits_a_stable_fraction_of_units(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("partial");
    def["traffic"] = json!(0.3);
    app.create_experiment(&def).await;
    let mut admitted = 0;
    for u in 0..400 {
        let body = json!({"experiment": "partial", "unit_id": format!("t-{u}")});
        let (_, v) = app.assign(body.clone()).await;
        let (_, again) = app.assign(body).await;
        assert_eq!(v["logged"], again["logged"], "traffic share is a property of the unit");
        if v["logged"] == true {
            admitted += 1;
        } else {
            assert_eq!(v["reason"], "outside_traffic");
        }
    }
    // Binomial(400, 0.3): mean 120, sd 9.2; ±5 sd.
    assert!((74..=166).contains(&admitted), "admitted {admitted} of 400");
}
on_both_backends!(traffic_share_admits_a_stable_fraction_of_units);

async fn eligible_arms_restrict_the_draw(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("elig")).await;
    for u in 0..40 {
        let (_, v) =
            app.assign(json!({"experiment": "elig", "unit_id": format!("e-{u}"), "eligible_arms": ["b", "c"]})).await;
        let arm = v["arm"].as_str().unwrap();
        assert!(arm == "b" || arm == "c");
        assert!((v["propensity"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        let stored =
            strategist::store::queries::find_exposure(&app.db, v["exposure_id"].as_str().unwrap(), None).unwrap();
        let pmf: serde_json::Value = serde_json::from_str(&stored.pmf).unwrap();
        assert!(pmf.get("a").is_none(), "ineligible arms have probability 0: {pmf}");
    }
    let (_, v) = app.assign(json!({"experiment": "elig", "unit_id": "x", "eligible_arms": ["c"]})).await;
    assert_eq!(v["arm"], "c");
    assert_eq!(v["propensity"], 1.0);
    let (s, v) = app.assign(json!({"experiment": "elig", "unit_id": "x", "eligible_arms": ["zzz"]})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("unknown_arm")));
    let (s, v) = app.assign(json!({"experiment": "elig", "unit_id": "x", "eligible_arms": []})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("no_eligible_arms")));
}
on_both_backends!(eligible_arms_restrict_the_draw);

async fn batch_assign_answers_each_request_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("batch")).await;
    let body = json!({"requests": [
        {"experiment": "batch", "unit_id": "u-1"},
        {"experiment": "nope", "unit_id": "u-2"},
        {"experiment": "batch", "unit_id": "u-3", "eligible_arms": ["c"]}
    ]});
    let (s, v) = app.request("POST", "/v1/assign/batch", Some(&app.assign_key), Some(&body)).await;
    assert_eq!(s, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["logged"], true);
    assert_eq!(r[1]["error"], "experiment_not_found");
    assert_eq!(r[2]["arm"], "c");
    let (s, v) = app.request("POST", "/v1/assign/batch", Some(&app.assign_key), Some(&json!({"requests": []}))).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_batch_size")));
}
on_both_backends!(batch_assign_answers_each_request_in_order);
