//! Shadow mode end to end (issue 5): a candidate policy is scored on live traffic and its
//! PMF logged with each exposure, while the served arm stays the live policy's; its value is
//! estimated off-policy on what was logged (`GET /v1/experiments/{key}/shadow`); it goes
//! live automatically when its lower confidence bound beats the live value, or by an
//! admin's audited decision. A `neural_pg` candidate is scored through its own network and
//! retrained by the learner from the same log, and goes live with its trained weights; a
//! linear candidate beside a `neural_pg` live policy reads the `x` of its logged context.

use serde_json::{json, Value};
use strategist::policy::explore;
use strategist::policy::neural::{NeuralContext, NeuralPolicy, NeuralSnapshot};

use crate::helpers::{
    assign_shoppers, build_shopper_profiles, definition, learn_now, shopper_buys as buys, shopper_features, spawn_app,
    Backend, TestApp,
};
use crate::on_both_backends;

/// A live policy that mostly serves `a` (which never converts) and a candidate.
fn shadow_definition(key: &str, candidate: Value, min_exposures: u64, auto_promote: bool) -> Value {
    let mut def = definition(key);
    def["policy"] = json!({"kind": "fixed", "weights": {"a": 0.8, "b": 0.1, "c": 0.1}});
    def["shadow"] =
        json!({"policy": candidate, "min_exposures": min_exposures, "confidence": 0.95, "auto_promote": auto_promote});
    def
}

/// The world: free shipping (`c`) always converts, the other arms never do.
fn converts(arm: &str) -> bool {
    arm == "c"
}

/// Assigns `n` new units, rewards the conversions; returns the decisions.
async fn round(app: &TestApp, key: &str, tag: &str, n: usize) -> Vec<Value> {
    let answers = app.assign_many(key, (0..n).map(|i| format!("{tag}-{i}"))).await;
    let rewards: Vec<Value> = answers
        .iter()
        .filter(|d| d["logged"] == true && converts(d["arm"].as_str().unwrap()))
        .map(|d| json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": d["exposure_id"]}))
        .collect();
    if !rewards.is_empty() {
        app.reward_many(rewards).await;
    }
    answers
}

async fn shadow_view(app: &TestApp, key: &str) -> Value {
    let (s, v) = app.request("GET", &format!("/v1/experiments/{key}/shadow"), Some(&app.read_key), None).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn decisions(app: &TestApp, key: &str) -> Vec<Value> {
    let (s, v) = app.request("GET", &format!("/v1/experiments/{key}/decisions"), Some(&app.read_key), None).await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

async fn a_better_candidate_is_logged_evaluated_and_promoted_automatically(backend: Backend) {
    let app = spawn_app(backend).await;
    let candidate = json!({"kind": "thompson_beta"});
    app.create_experiment(&shadow_definition("ship", candidate.clone(), 300, true)).await;
    let experiment_id = strategist::store::queries::get_experiment(&app.db, "ship").unwrap().row.id;

    let first = round(&app, "ship", "r1", 200).await;
    // Served arms follow the live policy (a: 0.8), not the candidate.
    let on_a = first.iter().filter(|d| d["arm"] == "a").count();
    assert!(on_a > 110, "live policy serves `a` about 73%: {on_a} / 200");
    // Each exposure carries the candidate's PMF beside the live one.
    let ids = strategist::store::queries::exposure_ids(&app.db, experiment_id).unwrap();
    assert_eq!(ids.len(), 200);
    for id in ids.iter().take(20) {
        let row = strategist::store::queries::find_exposure(&app.db, id, None).unwrap();
        let live: serde_json::Map<String, Value> = serde_json::from_str(&row.pmf).unwrap();
        let shadow: serde_json::Map<String, Value> =
            serde_json::from_str(row.shadow_pmf.as_deref().expect("shadow_pmf logged")).unwrap();
        // The exploration floor mixes in uniformly: 0.8 · (1 − 3 · 0.05) + 0.05.
        assert!((live["a"].as_f64().unwrap() - 0.73).abs() < 1e-9, "{live:?}");
        let total: f64 = shadow.values().map(|p| p.as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{shadow:?}");
        assert!(shadow.values().all(|p| p.as_f64().unwrap() >= 0.05 - 1e-12), "the floor applies: {shadow:?}");
    }

    let v = shadow_view(&app, "ship").await;
    assert_eq!(v["candidate_kind"], "thompson_beta");
    assert_eq!(v["live_kind"], "fixed");
    let e = &v["evaluation"];
    assert_eq!(e["exposures"], 200);
    assert_eq!(e["decision"], "insufficient_data", "{v}");
    let live_value = e["live"]["estimate"].as_f64().unwrap();
    let candidate_value = e["candidate"]["estimate"].as_f64().unwrap();
    assert!(candidate_value > live_value, "the candidate is better even before learning: {e}");
    assert!(e["candidate"]["lower"].as_f64().unwrap() <= candidate_value);
    assert!(e["effective_sample_size"].as_f64().unwrap() > 10.0, "{e}");

    // The learner updates the candidate from the same log (it learns that `c` converts),
    // but 200 < min_exposures: no promotion yet.
    let report = app.learn();
    assert_eq!((report.snapshots_written, report.promotions), (1, 0), "{report:?}");
    let v = shadow_view(&app, "ship").await;
    let c_share = v["candidate_pmf"]["c"].as_f64().unwrap();
    assert!(c_share > 0.8, "the candidate learned to favour `c`: {v}");
    let (_, exp) = app.request("GET", "/v1/experiments/ship", Some(&app.read_key), None).await;
    assert_eq!(exp["version"], 1);

    round(&app, "ship", "r2", 200).await;
    let v = shadow_view(&app, "ship").await;
    let e = &v["evaluation"];
    assert_eq!(e["exposures"], 400);
    assert_eq!(e["decision"], "promote", "{v}");
    assert!(e["candidate"]["lower"].as_f64().unwrap() > e["live"]["estimate"].as_f64().unwrap(), "{e}");

    // The next learner pass promotes it: a new version whose policy is the candidate.
    let report = app.learn();
    assert_eq!(report.promotions, 1, "{report:?}");
    let (_, exp) = app.request("GET", "/v1/experiments/ship", Some(&app.read_key), None).await;
    assert_eq!(exp["version"], 2, "{exp}");
    assert_eq!(exp["definition"]["policy"]["kind"], candidate["kind"]);
    assert!(exp["definition"].get("shadow").is_none(), "the shadow is cleared: {exp}");
    let log = decisions(&app, "ship").await;
    let promoted = log.iter().find(|d| d["action"] == "promote_shadow").expect("audited");
    assert_eq!(promoted["actor"], "learner");
    assert!(promoted["reason"].as_str().unwrap().contains("lower bound"), "{promoted}");
    assert_eq!(promoted["details"]["new_version"], 2);
    assert_eq!(promoted["details"]["evaluation"]["decision"], "promote");
    // Without a candidate there is nothing to evaluate, and new exposures log no shadow PMF.
    let (s, v) = app.request("GET", "/v1/experiments/ship/shadow", Some(&app.read_key), None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("no_shadow_policy")), "{v}");
    let after = round(&app, "ship", "r3", 20).await;
    let id = after[0]["exposure_id"].as_str().unwrap();
    let row = strategist::store::queries::find_exposure(&app.db, id, None).unwrap();
    assert_eq!(row.version, 2);
    assert!(row.shadow_pmf.is_none());
}
on_both_backends!(a_better_candidate_is_logged_evaluated_and_promoted_automatically);

async fn an_admin_promotes_a_candidate_by_decision_and_others_may_not(backend: Backend) {
    let app = spawn_app(backend).await;
    let candidate = json!({"kind": "fixed", "weights": {"a": 0.05, "b": 0.05, "c": 0.9}});
    app.create_experiment(&shadow_definition("manual", candidate.clone(), 50, false)).await;
    round(&app, "manual", "m", 150).await;
    let v = shadow_view(&app, "manual").await;
    assert_eq!(v["evaluation"]["decision"], "promote", "{v}");
    let c = v["evaluation"]["candidate"]["estimate"].as_f64().unwrap();
    assert!(c > 0.7, "a candidate serving `c` 90% converts about 90%: {v}");
    // auto_promote = false: the learner leaves it in shadow.
    let report = app.learn();
    assert_eq!(report.promotions, 0);

    for key in [&app.read_key, &app.assign_key] {
        let (s, v) = app.request("POST", "/v1/experiments/manual/shadow/promote", Some(key), Some(&json!({}))).await;
        assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    }
    let (s, v) = app
        .request(
            "POST",
            "/v1/experiments/manual/shadow/promote",
            Some(&app.admin_key),
            Some(&json!({"reason": "candidate looks right"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(v["definition"]["policy"], candidate);
    let log = decisions(&app, "manual").await;
    let promoted = log.iter().find(|d| d["action"] == "promote_shadow").expect("audited");
    assert!(promoted["actor"].as_str().unwrap().starts_with("key:"), "{promoted}");
    assert_eq!(promoted["reason"], "candidate looks right");
    assert_eq!(promoted["details"]["previous_policy"], "fixed");
    assert_eq!(promoted["details"]["evaluation"]["exposures"], 150);
    // The new live policy serves the candidate's weights.
    let served = round(&app, "manual", "after", 200).await;
    let on_c = served.iter().filter(|d| d["arm"] == "c").count();
    // The candidate's weights are served, mixed with the floor: `c` is drawn with the
    // propensity its answers carry (0.9 · (1 − 3 · 0.05) + 0.05 = 0.815); the share drawn
    // must match it within four binomial standard deviations, far from the old 0.1.
    let p_c = served.iter().find(|d| d["arm"] == "c").and_then(|d| d["propensity"].as_f64()).unwrap();
    assert!((p_c - 0.815).abs() < 1e-9, "the candidate's weights with the floor: {p_c}");
    let sd = (200.0 * p_c * (1.0 - p_c)).sqrt();
    assert!((on_c as f64 - 200.0 * p_c).abs() <= 4.0 * sd, "{on_c} / 200 on `c`, PMF {p_c}");
    // Nothing left to promote.
    let (s, v) =
        app.request("POST", "/v1/experiments/manual/shadow/promote", Some(&app.admin_key), Some(&json!({}))).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("no_shadow_policy")), "{v}");
}
on_both_backends!(an_admin_promotes_a_candidate_by_decision_and_others_may_not);

async fn a_worse_candidate_stays_in_shadow_and_can_be_dropped(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def =
        shadow_definition("worse", json!({"kind": "fixed", "weights": {"a": 0.9, "b": 0.05, "c": 0.05}}), 50, true);
    def["policy"] = json!({"kind": "fixed", "weights": {"a": 0.1, "b": 0.1, "c": 0.8}});
    app.create_experiment(&def).await;
    round(&app, "worse", "w", 200).await;
    let v = shadow_view(&app, "worse").await;
    assert_eq!(v["evaluation"]["decision"], "keep_live", "{v}");
    assert!(
        v["evaluation"]["candidate"]["estimate"].as_f64().unwrap()
            < v["evaluation"]["live"]["estimate"].as_f64().unwrap()
    );
    assert_eq!(app.learn().promotions, 0);
    let (s, _) = app.request("DELETE", "/v1/experiments/worse/shadow", Some(&app.read_key), None).await;
    assert_eq!(s, 403);
    let (s, v) = app.request("DELETE", "/v1/experiments/worse/shadow", Some(&app.admin_key), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["version"], 2);
    assert!(v["definition"].get("shadow").is_none());
    assert!(decisions(&app, "worse").await.iter().any(|d| d["action"] == "drop_shadow"));
}
on_both_backends!(a_worse_candidate_stays_in_shadow_and_can_be_dropped);

async fn a_shadow_definition_is_validated(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        // A neural candidate is contextual: it needs `[features]` of its dimension.
        (shadow_definition("v1", json!({"kind": "neural_pg", "features": 3}), 100, true), "features"),
        (
            {
                let mut d = neural_shadow_definition("v6", json!({"kind": "fixed"}), 100, true);
                d["shadow"]["policy"]["features"] = json!(4);
                d
            },
            "shadow.policy.features",
        ),
        (shadow_definition("v2", json!({"kind": "lin_ucb", "features": 3}), 100, true), "features"),
        (shadow_definition("v3", json!({"kind": "thompson_beta"}), 1, true), "shadow.min_exposures"),
        (shadow_definition("v4", json!({"kind": "fixed", "weights": {"zz": 1.0}}), 100, true), "shadow.policy"),
        (
            {
                let mut d = shadow_definition("v5", json!({"kind": "thompson_beta"}), 100, true);
                d["shadow"]["confidence"] = json!(1.5);
                d
            },
            "shadow.confidence",
        ),
    ];
    for (def, field) in cases {
        let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
        assert_eq!((s, v["error"].as_str()), (422, Some("invalid_definition")), "{v}");
        assert!(v.to_string().contains(field), "expected `{field}` in {v}");
    }
}
on_both_backends!(a_shadow_definition_is_validated);

/// One round of a context-free live policy on shoppers whose `device` decides what converts
/// (mobile: the coupon `b`; desktop: free shipping `c`).
async fn device_round(app: &TestApp, key: &str, tag: &str, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for chunk_start in (0..n).step_by(500) {
        let requests: Vec<Value> = (chunk_start..n.min(chunk_start + 500))
            .map(|i| {
                let device = if i % 2 == 0 { "mobile" } else { "desktop" };
                json!({"experiment": key, "unit_id": format!("{tag}-{i}"), "context": {"device": device}})
            })
            .collect();
        let (s, v) =
            app.request("POST", "/v1/assign/batch", Some(&app.assign_key), Some(&json!({"requests": requests}))).await;
        assert_eq!(s, 200, "{v}");
        for (r, d) in requests.iter().zip(v["results"].as_array().unwrap()) {
            out.push((r["context"]["device"].as_str().unwrap().to_string(), d.clone()));
        }
    }
    let rewards: Vec<Value> = out
        .iter()
        .filter(|(device, d)| matches!((device.as_str(), d["arm"].as_str().unwrap()), ("mobile", "b") | ("desktop", "c")))
        .map(|(_, d)| json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": d["exposure_id"]}))
        .collect();
    app.reward_many(rewards).await;
    out
}

async fn a_contextual_candidate_learns_in_shadow_and_goes_live_with_its_model(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("ctx");
    def["policy"] = json!({"kind": "fixed"});
    def["features"] = json!({"categorical": [{"name": "device", "values": ["mobile", "desktop"]}]});
    def["shadow"] = json!({"policy": {"kind": "lin_ucb", "features": 3, "alpha": 0.2}, "min_exposures": 600});
    app.create_experiment(&def).await;

    device_round(&app, "ctx", "r1", 300).await;
    let report = app.learn();
    assert_eq!((report.snapshots_written, report.promotions), (1, 0), "{report:?}");
    let second = device_round(&app, "ctx", "r2", 600).await;
    // After one learner pass the candidate's logged PMF depends on the device, while the
    // served arms stay uniform.
    let shadow_of = |device: &str| {
        let (_, d) = second.iter().find(|(dev, _)| dev == device).unwrap();
        let row = strategist::store::queries::find_exposure(&app.db, d["exposure_id"].as_str().unwrap(), None).unwrap();
        serde_json::from_str::<Value>(row.shadow_pmf.as_deref().unwrap()).unwrap()
    };
    assert!(shadow_of("mobile")["b"].as_f64().unwrap() > 0.8, "{}", shadow_of("mobile"));
    assert!(shadow_of("desktop")["c"].as_f64().unwrap() > 0.8, "{}", shadow_of("desktop"));
    let on_a = second.iter().filter(|(_, d)| d["arm"] == "a").count();
    assert!((150..250).contains(&on_a), "the live policy is uniform: {on_a} / 600 on `a`");

    let v = shadow_view(&app, "ctx").await;
    let e = &v["evaluation"];
    assert_eq!(v["candidate_kind"], "lin_ucb");
    assert_eq!(e["exposures"], 900);
    assert_eq!(e["decision"], "promote", "{v}");
    let live = e["live"]["estimate"].as_f64().unwrap();
    assert!((live - 1.0 / 3.0).abs() < 0.08, "uniform serving converts about 1/3: {e}");

    // Promoted by the learner, the candidate serves with the model it learned in shadow.
    assert_eq!(app.learn().promotions, 1);
    let (_, exp) = app.request("GET", "/v1/experiments/ctx", Some(&app.read_key), None).await;
    assert_eq!((exp["version"].as_i64(), exp["definition"]["policy"]["kind"].as_str()), (Some(2), Some("lin_ucb")));
    assert!(exp["definition"]["features"].is_object(), "the candidate keeps its features: {exp}");
    let served = device_round(&app, "ctx", "r3", 200).await;
    let right = served
        .iter()
        .filter(|(device, d)| {
            matches!((device.as_str(), d["arm"].as_str().unwrap()), ("mobile", "b") | ("desktop", "c"))
        })
        .count();
    assert!(right > 160, "the promoted model serves each device its converting arm: {right} / 200");
}
on_both_backends!(a_contextual_candidate_learns_in_shadow_and_goes_live_with_its_model);

// ---------------------------------------------------------------- a neural_pg candidate

/// A tiny network (debug builds train slowly) over `tests/api/neural.rs`'s schema: two numeric
/// profile features and one categorical attribute, 2 + (2 + 1) = 5 entries.
fn neural_candidate() -> Value {
    json!({
        "kind": "neural_pg", "features": 5, "hidden": 8, "embedding": 8, "epochs": 30,
        "batch_size": 100, "learning_rate": 0.05, "seed": 7,
        "retrain_every": "1h", "min_new_rows": 150
    })
}

/// The live policy `live` with a `neural_pg` candidate in shadow, and the features both read.
fn neural_shadow_definition(key: &str, live: Value, min_exposures: u64, auto_promote: bool) -> Value {
    let mut def = definition(key);
    def["policy"] = live;
    def["features"] = shopper_features();
    def["min_propensity"] = json!(0.02);
    def["shadow"] = json!({"policy": neural_candidate(), "min_exposures": min_exposures, "auto_promote": auto_promote});
    def
}

/// One logged decision: the unit, the answer, the logged context and both logged PMFs.
struct Logged {
    unit: String,
    answer: Value,
    context: NeuralContext,
    pmf: serde_json::Map<String, Value>,
    shadow: Option<serde_json::Map<String, Value>>,
}

/// Assigns `n` units (half big spenders, half newcomers), reads each logged exposure and
/// rewards the conversions.
async fn neural_round(app: &TestApp, key: &str, round: usize, n: usize) -> Vec<Logged> {
    let answers = assign_shoppers(app, key, round, n, &["mobile"]).await;
    let mut rewards = Vec::new();
    let mut out = Vec::new();
    for (u, d) in &answers {
        assert_eq!(d["logged"], true, "{d}");
        let row = strategist::store::queries::find_exposure(&app.db, d["exposure_id"].as_str().unwrap(), None).unwrap();
        let context: NeuralContext =
            serde_json::from_str(row.features.as_deref().expect("the neural context is logged")).unwrap();
        let pmf: serde_json::Map<String, Value> = serde_json::from_str(&row.pmf).unwrap();
        assert_eq!(pmf[d["arm"].as_str().unwrap()].as_f64(), d["propensity"].as_f64(), "{d}");
        let shadow = row.shadow_pmf.as_deref().map(|s| serde_json::from_str(s).unwrap());
        if buys(u, d["arm"].as_str().unwrap()) {
            rewards.push(json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": d["exposure_id"]}));
        }
        out.push(Logged { unit: u.clone(), answer: d.clone(), context, pmf, shadow });
    }
    if !rewards.is_empty() {
        app.reward_many(rewards).await;
    }
    out
}

/// `model`'s floored PMF for each logged context over all three arms, computed here without
/// the batcher.
fn floored(model: &NeuralSnapshot, logged: &[Logged]) -> Vec<Vec<f64>> {
    let policy = NeuralPolicy::from_snapshot(model, &candle_core::Device::Cpu).unwrap();
    let inputs: Vec<_> = logged.iter().map(|l| l.context.input()).collect();
    policy
        .pmfs(&inputs)
        .unwrap()
        .iter()
        .map(|raw| explore::restrict_and_floor(raw, &[true; 3], 0.02).unwrap())
        .collect()
}

fn entry(pmf: &serde_json::Map<String, Value>, arm: &str) -> f64 {
    pmf.get(arm).and_then(Value::as_f64).unwrap_or(0.0)
}

/// The mean logged shadow probability of `arm` among units starting with `prefix`.
fn shadow_share(logged: &[Logged], prefix: &str, arm: &str) -> f64 {
    let of: Vec<f64> = logged
        .iter()
        .filter(|l| l.unit.starts_with(prefix))
        .map(|l| entry(l.shadow.as_ref().expect("shadow_pmf logged"), arm))
        .collect();
    of.iter().sum::<f64>() / of.len() as f64
}

/// The experiment's latest snapshot as this process's registry serves it.
fn served(app: &TestApp, key: &str) -> std::sync::Arc<strategist::experiment::registry::LiveExperiment> {
    app.state.registry.load().get(key).cloned().expect("live experiment")
}

/// Logs the candidate's PMFs for a first round (checked against its network computed here),
/// lets the learner retrain it from the log, and logs a second round with the retrained
/// candidate: returns both rounds and the trained network.
async fn shadow_rounds(app: &TestApp, key: &str) -> (Vec<Logged>, Vec<Logged>, NeuralSnapshot) {
    build_shopper_profiles(app, 100, true).await;
    let initial = served(app, key);
    assert!(initial.shadow_neural.as_ref().is_some_and(|s| s.is_batched()), "the candidate's own batcher");
    let untrained = initial.snapshot.shadow.as_ref().and_then(|s| s.neural.clone()).expect("a neural shadow state");
    assert!(untrained.trained_at.is_none());

    let first = neural_round(app, key, 0, 200).await;
    let big = first.iter().find(|l| l.unit.starts_with("big")).unwrap();
    assert_eq!((big.context.x.len(), big.context.events.len()), (5, 2), "features and the two events are logged");
    // Each exposure logs the candidate's floored PMF for the same context, as its network
    // gives it here without the batcher.
    for (l, expected) in first.iter().zip(floored(&untrained.model, &first)) {
        let shadow = l.shadow.as_ref().expect("shadow_pmf logged");
        for (arm, p) in ["a", "b", "c"].iter().zip(&expected) {
            assert!((entry(shadow, arm) - p).abs() < 1e-5, "{}: {arm} logged {shadow:?}, inline {expected:?}", l.unit);
        }
    }

    // 200 matured rows >= min_new_rows (150): the learner retrains the candidate from the log
    // with the live propensities, inside the live snapshot.
    let report = learn_now(app).await;
    assert_eq!(report.snapshots_written, 1, "{report:?}");
    let after = served(app, key);
    let trained = after.snapshot.shadow.as_ref().and_then(|s| s.neural.clone()).expect("a neural shadow state");
    assert!(trained.trained_at.is_some() && trained.rows == 200, "retrained on the 200 rows: {trained:?}");
    assert_ne!(trained.model, untrained.model);
    assert!(after.snapshot.shadow.as_ref().unwrap().learned_until.is_some());
    let (before, after_snips) = (trained.snips_before.unwrap(), trained.snips_after.unwrap());
    assert!(after_snips > before, "SNIPS on the training rows {before} -> {after_snips}");

    let second = neural_round(app, key, 1, 200).await;
    for (l, expected) in second.iter().zip(floored(&trained.model, &second)) {
        let shadow = l.shadow.as_ref().expect("shadow_pmf logged");
        assert!((entry(shadow, "c") - expected[2]).abs() < 1e-5, "the retrained candidate is scored");
    }
    // Retrained on the log, the candidate moves mass to each group's converting arm.
    let (c0, c1) = (shadow_share(&first, "big", "c"), shadow_share(&second, "big", "c"));
    let (b0, b1) = (shadow_share(&first, "new", "b"), shadow_share(&second, "new", "b"));
    assert!(c1 > c0 + 0.1 && c1 > 0.8, "big spenders on free shipping: {c0:.3} -> {c1:.3}");
    assert!(b1 > b0 + 0.1 && b1 > 0.8, "newcomers on the coupon: {b0:.3} -> {b1:.3}");
    (first, second, trained.model)
}

/// After promotion: the experiment's version 2 serves the network trained in shadow, and
/// each group mostly gets its converting arm.
async fn serves_the_trained_network(app: &TestApp, key: &str, trained: &NeuralSnapshot) {
    let (_, exp) = app.request("GET", &format!("/v1/experiments/{key}"), Some(&app.read_key), None).await;
    assert_eq!((exp["version"].as_i64(), exp["definition"]["policy"]["kind"].as_str()), (Some(2), Some("neural_pg")));
    assert!(exp["definition"]["features"].is_object() && exp["definition"].get("shadow").is_none(), "{exp}");
    let live = served(app, key);
    assert_eq!(live.version, 2);
    let state = live.snapshot.neural.as_ref().expect("a neural live snapshot");
    assert_eq!(&state.model, trained, "the weights trained in shadow go live");
    assert!(state.trained_at.is_some(), "with when they were trained");
    assert!(live.neural.is_some() && live.shadow_neural.is_none());

    let third = neural_round(app, key, 2, 200).await;
    assert!(third.iter().all(|l| l.shadow.is_none() && l.answer["policy_version"] == live.policy_version));
    for (l, expected) in third.iter().zip(floored(trained, &third)) {
        for (arm, p) in ["a", "b", "c"].iter().zip(&expected) {
            assert!((entry(&l.pmf, arm) - p).abs() < 1e-5, "{}: served {:?}, trained {expected:?}", l.unit, l.pmf);
        }
    }
    let right = third.iter().filter(|l| buys(&l.unit, l.answer["arm"].as_str().unwrap())).count();
    assert!(right > 160, "the trained network serves each group its converting arm: {right} / 200");
}

async fn a_neural_candidate_beside_a_linear_policy_is_retrained_in_shadow_and_promoted_by_an_admin(backend: Backend) {
    let app = spawn_app(backend).await;
    let live = json!({"kind": "lin_ucb", "features": 5, "alpha": 0.1});
    app.create_experiment(&neural_shadow_definition("nlin", live, 300, false)).await;
    let (_, second, trained) = shadow_rounds(&app, "nlin").await;
    // The live linear policy reads the `x` of the logged neural context: its learner folded
    // the first round's 200 rows.
    let snap = served(&app, "nlin").snapshot.clone();
    assert!(snap.linear.is_some() && snap.learned_until.is_some());
    assert_eq!(snap.feedback.iter().map(|f| f.n).sum::<u64>(), 200, "the linear learner folded every row");
    assert!(second.iter().all(|l| l.pmf.values().all(|p| p.as_f64().unwrap() >= 0.02 - 1e-12)));

    let v = shadow_view(&app, "nlin").await;
    assert_eq!((v["candidate_kind"].as_str(), v["live_kind"].as_str()), (Some("neural_pg"), Some("lin_ucb")));
    let e = &v["evaluation"];
    assert_eq!(e["exposures"], 400, "{v}");
    assert!(e["candidate"]["estimate"].as_f64().is_some() && e["live"]["estimate"].as_f64().is_some(), "{e}");
    assert!(e["effective_sample_size"].as_f64().unwrap() > 10.0, "{e}");
    // auto_promote = false: the learner folds the second round into the live model and
    // leaves the candidate in shadow (not retrained again within its `retrain_every`).
    let report = learn_now(&app).await;
    assert_eq!((report.snapshots_written, report.promotions), (1, 0), "{report:?}");
    let still = served(&app, "nlin");
    assert_eq!(still.snapshot.shadow.as_ref().and_then(|s| s.neural.as_ref()).map(|n| &n.model), Some(&trained));

    let (s, v) = app
        .request(
            "POST",
            "/v1/experiments/nlin/shadow/promote",
            Some(&app.admin_key),
            Some(&json!({"reason": "ship it"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let log = decisions(&app, "nlin").await;
    let promoted = log.iter().find(|d| d["action"] == "promote_shadow").expect("audited");
    assert_eq!(
        (promoted["details"]["previous_policy"].as_str(), promoted["details"]["promoted_policy"].as_str()),
        (Some("lin_ucb"), Some("neural_pg"))
    );
    assert_eq!(promoted["details"]["evaluation"]["exposures"], 400);
    serves_the_trained_network(&app, "nlin", &trained).await;
}
on_both_backends!(a_neural_candidate_beside_a_linear_policy_is_retrained_in_shadow_and_promoted_by_an_admin);

async fn a_neural_candidate_beside_a_context_free_policy_is_promoted_automatically(backend: Backend) {
    let app = spawn_app(backend).await;
    // The live policy mostly serves `a`, which nobody buys.
    let live = json!({"kind": "fixed", "weights": {"a": 0.8, "b": 0.1, "c": 0.1}});
    app.create_experiment(&neural_shadow_definition("nfix", live, 300, true)).await;
    let (first, _, trained) = shadow_rounds(&app, "nfix").await;
    assert!(first.iter().all(|l| (entry(&l.pmf, "a") - (0.8 * 0.94 + 0.02)).abs() < 1e-9), "the live PMF is fixed");
    let v = shadow_view(&app, "nfix").await;
    let e = &v["evaluation"];
    assert_eq!((e["exposures"].as_u64(), e["decision"].as_str()), (Some(400), Some("promote")), "{v}");
    let (c, l) = (e["candidate"]["lower"].as_f64().unwrap(), e["live"]["estimate"].as_f64().unwrap());
    assert!(c > l, "{e}");

    let report = learn_now(&app).await;
    assert_eq!(report.promotions, 1, "{report:?}");
    let log = decisions(&app, "nfix").await;
    let promoted = log.iter().find(|d| d["action"] == "promote_shadow").expect("audited");
    assert_eq!(promoted["actor"], "learner");
    assert_eq!(promoted["details"]["evaluation"]["decision"], "promote");
    serves_the_trained_network(&app, "nfix", &trained).await;
}
on_both_backends!(a_neural_candidate_beside_a_context_free_policy_is_promoted_automatically);

async fn a_linear_candidate_beside_a_neural_policy_learns_from_the_logged_neural_context(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut live = neural_candidate();
    live["min_new_rows"] = json!(10_000); // the live network is not retrained in this test
    let mut def = neural_shadow_definition("lneu", live, 300, false);
    def["shadow"]["policy"] = json!({"kind": "lin_ucb", "features": 5, "alpha": 0.1});
    app.create_experiment(&def).await;
    build_shopper_profiles(&app, 100, true).await;
    let first = neural_round(&app, "lneu", 0, 200).await;
    assert!(first.iter().all(|l| l.shadow.is_some()), "the linear candidate scores the logged context's `x`");
    let report = learn_now(&app).await;
    assert_eq!(report.snapshots_written, 1, "{report:?}");
    let snap = served(&app, "lneu").snapshot.clone();
    assert!(snap.neural.as_ref().is_some_and(|n| n.trained_at.is_none()), "the live network is untouched");
    let candidate = snap.shadow.as_deref().expect("the candidate's state");
    assert!(candidate.linear.is_some() && candidate.learned_until.is_some());
    assert_eq!(candidate.feedback.iter().map(|f| f.n).sum::<u64>(), 200, "every logged context was folded");

    let second = neural_round(&app, "lneu", 1, 200).await;
    let (c0, c1) = (shadow_share(&first, "big", "c"), shadow_share(&second, "big", "c"));
    let (b0, b1) = (shadow_share(&first, "new", "b"), shadow_share(&second, "new", "b"));
    assert!(c1 > c0 + 0.1 && c1 > 0.8, "big spenders on free shipping: {c0:.3} -> {c1:.3}");
    assert!(b1 > b0 + 0.1 && b1 > 0.8, "newcomers on the coupon: {b0:.3} -> {b1:.3}");
    let v = shadow_view(&app, "lneu").await;
    assert_eq!((v["candidate_kind"].as_str(), v["live_kind"].as_str()), (Some("lin_ucb"), Some("neural_pg")));
    assert_eq!(v["evaluation"]["exposures"], 400, "{v}");
}
on_both_backends!(a_linear_candidate_beside_a_neural_policy_learns_from_the_logged_neural_context);
