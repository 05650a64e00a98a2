//! Contextual policies end to end: profiles from /v1/events, a `lin_ts` / `lin_ucb`
//! experiment that reads them, the encoded context logged with each exposure, and the
//! learner folding rewards into the linear model so that different shoppers get
//! different strategies.

use serde_json::{json, Value};

use crate::helpers::{
    assign_shoppers, build_shopper_profiles, definition, shopper_buys as converts, shopper_features, spawn_app,
    Backend, TestApp,
};
use crate::on_both_backends;

/// Two numeric profile features and one categorical attribute: 2 + (2 + 1) = 5 entries.
fn contextual_definition(key: &str, policy: Value) -> Value {
    let mut def = definition(key);
    def["policy"] = policy;
    def["features"] = shopper_features();
    def["min_propensity"] = json!(0.02);
    def
}

async fn one_round(app: &TestApp, key: &str, round: usize, n: usize) -> Vec<(String, String)> {
    let answers = assign_shoppers(app, key, round, n, &["mobile"]).await;
    let mut rewards = Vec::new();
    let mut out = Vec::new();
    for (u, d) in &answers {
        assert_eq!(d["logged"], true, "{d}");
        let arm = d["arm"].as_str().unwrap().to_string();
        if converts(u, &arm) {
            rewards.push(json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": format!("{u}-{round}")}));
        }
        out.push((u.clone(), arm));
    }
    if !rewards.is_empty() {
        app.reward_many(rewards).await;
    }
    out
}

async fn a_contextual_policy_learns_to_treat_big_spenders_and_newcomers_differently(backend: Backend, policy: Value) {
    let app = spawn_app(backend).await;
    let created = app.create_experiment(&contextual_definition("offer", policy)).await;
    let experiment_id = strategist::store::queries::get_experiment(&app.db, "offer").unwrap().row.id;
    assert_eq!(created["key"], "offer");
    build_shopper_profiles(&app, 200, false).await;
    for round in 0..4 {
        one_round(&app, "offer", round, 200).await;
        let report = app.learn();
        assert_eq!(report.snapshots_written, 1, "round {round}: {report:?}");
    }
    // The encoded context is logged with every exposure: 5 entries per the schema.
    let exposures = strategist::store::queries::exposure_ids(&app.db, experiment_id).unwrap();
    assert_eq!(exposures.len(), 800);
    let row = strategist::store::queries::find_exposure(&app.db, &exposures[0], None).unwrap();
    let x: Vec<f64> = serde_json::from_str(row.features.as_deref().expect("features logged")).unwrap();
    assert_eq!(x.len(), 5);
    assert_eq!(&x[2..], &[1.0, 0.0, 0.0], "device=mobile one-hot");

    // After learning, most big spenders get free shipping and most newcomers the coupon.
    let picks = one_round(&app, "offer", 99, 400).await;
    let share = |prefix: &str, arm: &str| {
        let of: Vec<_> = picks.iter().filter(|(u, _)| u.starts_with(prefix)).collect();
        of.iter().filter(|(_, a)| a == arm).count() as f64 / of.len() as f64
    };
    let (big_c, new_b) = (share("big", "c"), share("new", "b"));
    assert!(big_c > 0.8, "big spenders on free shipping: {big_c}");
    assert!(new_b > 0.8, "newcomers on the coupon: {new_b}");
}

async fn lin_ts_learns_per_profile(backend: Backend) {
    a_contextual_policy_learns_to_treat_big_spenders_and_newcomers_differently(
        backend,
        json!({"kind": "lin_ts", "features": 5, "v": 0.1, "draws": 64}),
    )
    .await;
}
on_both_backends!(lin_ts_learns_per_profile);

async fn lin_ucb_learns_per_profile(backend: Backend) {
    a_contextual_policy_learns_to_treat_big_spenders_and_newcomers_differently(
        backend,
        json!({"kind": "lin_ucb", "features": 5, "alpha": 0.2}),
    )
    .await;
}
on_both_backends!(lin_ucb_learns_per_profile);

async fn a_contextual_definition_must_declare_matching_features(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (
            {
                let mut d = contextual_definition("x1", json!({"kind": "lin_ts", "features": 5}));
                d.as_object_mut().unwrap().remove("features");
                d
            },
            "features",
        ),
        (contextual_definition("x2", json!({"kind": "lin_ts", "features": 4})), "policy.features"),
        (contextual_definition("x3", json!({"kind": "fixed"})), "features"),
        (
            {
                let mut d = contextual_definition("x4", json!({"kind": "lin_ucb", "features": 1}));
                d["features"] = json!({"numeric": [{"name": "shoe_size"}]});
                d
            },
            "features.numeric[0].name",
        ),
    ];
    for (def, field) in cases {
        let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
        assert_eq!(s, 422, "{v}");
        let text = v.to_string();
        assert!(text.contains(field), "expected `{field}` in {text}");
    }
}
on_both_backends!(a_contextual_definition_must_declare_matching_features);
