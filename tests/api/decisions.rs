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

/// Sticky claims are resolved inside the log writer's group commit: first requests of one
/// unit that race (on one server and on a second server over the same store, whose
/// in-memory cache is empty) all get the one stored arm and its propensity, and every
/// logged exposure carries it. A stored arm that the request excludes is not served; the
/// request gets an eligible arm instead.
async fn racing_first_requests_of_a_sticky_unit_agree(backend: Backend) {
    let app = spawn_app(backend).await;
    let (b_addr, b_stop) = app.spawn_replica();
    let mut def = definition("racing");
    def["sticky"] = json!(true);
    app.create_experiment(&def).await;
    // Replica b polls the registry every 100 ms; wait until it serves the experiment.
    let post_b = |body: serde_json::Value| {
        let req = app
            .client
            .post(format!("{b_addr}/v1/assign"))
            .insert_header(("Authorization", format!("Bearer {}", app.assign_key)));
        async move {
            let mut resp = req.send_json(&body).await.unwrap();
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    for _ in 0..100 {
        if post_b(json!({"experiment": "racing", "unit_id": "warm-up"})).await.0 == 200 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for u in 0..6 {
        let unit = format!("racer-{u}");
        let mut answers = Vec::new();
        let on_a = futures_util::future::join_all(
            (0..16)
                .map(|r| app.assign(json!({"experiment": "racing", "unit_id": unit, "request_id": format!("a-{r}")}))),
        );
        let on_b = futures_util::future::join_all(
            (0..16).map(|r| post_b(json!({"experiment": "racing", "unit_id": unit, "request_id": format!("b-{r}")}))),
        );
        let (ra, rb) = futures_util::future::join(on_a, on_b).await;
        for (s, v) in ra.into_iter().chain(rb) {
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["logged"], true, "{v}");
            answers.push((v["arm"].as_str().unwrap().to_string(), v["propensity"].as_f64().unwrap()));
        }
        assert!(answers.iter().all(|a| *a == answers[0]), "unit {unit} got {answers:?}");
        let hash = strategist::keys::pseudonymise(&app.state.unit_secret, &unit);
        let since = chrono::Utc::now().naive_utc() - chrono::Duration::hours(1);
        let rows = strategist::store::queries::unit_exposures(&app.db, &hash, since, None).unwrap();
        assert_eq!(rows.len(), 32);
        assert!(rows.iter().all(|r| (r.arm.clone(), r.propensity) == answers[0]), "stored rows differ: {rows:?}");
        // Excluding the stored arm: another (eligible) arm is served and logged as drawn.
        let others: Vec<&str> = ["a", "b", "c"].into_iter().filter(|k| *k != answers[0].0).collect();
        let (s, v) = post_b(json!({"experiment": "racing", "unit_id": unit, "eligible_arms": others})).await;
        assert_eq!(s, 200, "{v}");
        assert!(others.contains(&v["arm"].as_str().unwrap()), "{v}");
        let (_, again) = app.assign(json!({"experiment": "racing", "unit_id": unit})).await;
        assert_eq!(again["arm"].as_str().unwrap(), answers[0].0, "the stored arm stays the unit's arm");
    }
    b_stop.store(true, std::sync::atomic::Ordering::Relaxed);
}
on_both_backends!(racing_first_requests_of_a_sticky_unit_agree);

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
