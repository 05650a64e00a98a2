//! The neural policy (`neural_pg`) end to end: a definition with a `[features]` schema,
//! profiles from /v1/events, decisions scored by the network through the micro-batcher,
//! the scored context (features, decision time, recent events) logged with each exposure,
//! and the learner retraining the network on its schedule so that a new snapshot version
//! is served with different PMFs.

use serde_json::{json, Value};
use strategist::policy::explore;
use strategist::policy::neural::{NeuralContext, NeuralPolicy};

use crate::helpers::{
    assign_shoppers, build_shopper_profiles, definition, learn_now, learn_off_thread, shopper_buys as converts,
    shopper_features, spawn_app, Backend, TestApp,
};
use crate::on_both_backends;

/// A tiny network (debug builds train slowly) over the contextual tests' schema: two
/// numeric profile features and one categorical attribute, 2 + (2 + 1) = 5 entries.
fn neural_definition(key: &str, policy: Value) -> Value {
    let mut def = definition(key);
    def["policy"] = policy;
    def["features"] = shopper_features();
    def["min_propensity"] = json!(0.02);
    def
}

fn tiny_policy() -> Value {
    json!({
        "kind": "neural_pg", "features": 5, "hidden": 8, "embedding": 8, "epochs": 30,
        "batch_size": 100, "learning_rate": 0.05, "seed": 7,
        "retrain_every": "1h", "min_new_rows": 150
    })
}

/// One decision as answered and as logged.
struct Decided {
    unit: String,
    request_id: String,
    answer: Value,
    logged_pmf: serde_json::Map<String, Value>,
    context: NeuralContext,
}

/// Assigns `n` units (half big spenders, half newcomers) in one concurrent batch, checks
/// each answer against its logged exposure, and rewards the conversions.
async fn one_round(app: &TestApp, key: &str, round: usize, n: usize) -> Vec<Decided> {
    let answers = assign_shoppers(app, key, round, n, &["mobile"]).await;
    let mut rewards = Vec::new();
    let mut out = Vec::new();
    for (u, d) in &answers {
        assert_eq!(d["logged"], true, "{d}");
        let arm = d["arm"].as_str().unwrap();
        let propensity = d["propensity"].as_f64().unwrap();
        assert!(propensity >= 0.02 - 1e-12, "propensity at least the floor: {d}");
        let row = strategist::store::queries::find_exposure(&app.db, d["exposure_id"].as_str().unwrap(), None).unwrap();
        let logged_pmf: serde_json::Map<String, Value> = serde_json::from_str(&row.pmf).unwrap();
        assert_eq!(logged_pmf[arm].as_f64(), Some(propensity), "the propensity is the PMF entry of the arm");
        assert!((logged_pmf.values().map(|p| p.as_f64().unwrap()).sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(row.policy_version, d["policy_version"].as_i64().unwrap());
        let context: NeuralContext =
            serde_json::from_str(row.features.as_deref().expect("the scored context is logged")).unwrap();
        if converts(u, arm) {
            rewards.push(json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": format!("{u}-{round}")}));
        }
        out.push(Decided { unit: u.clone(), request_id: format!("r{round}"), answer: d.clone(), logged_pmf, context });
    }
    if !rewards.is_empty() {
        app.reward_many(rewards).await;
    }
    out
}

/// The PMF the served snapshot gives a logged context, computed here without the batcher.
fn inline_pmfs(app: &TestApp, key: &str, decided: &[Decided]) -> (i64, Vec<Vec<f64>>) {
    let registry = app.state.registry.load();
    let live = registry.get(key).expect("live experiment");
    let model = &live.snapshot.neural.as_ref().expect("a neural snapshot").model;
    let policy = NeuralPolicy::from_snapshot(model, &candle_core::Device::Cpu).unwrap();
    let inputs: Vec<_> = decided.iter().map(|d| d.context.input()).collect();
    (live.policy_version, policy.pmfs(&inputs).unwrap())
}

fn mean_share(decided: &[Decided], pmfs: &[Vec<f64>], prefix: &str, arm: usize) -> f64 {
    let of: Vec<f64> =
        decided.iter().zip(pmfs).filter(|(d, _)| d.unit.starts_with(prefix)).map(|(_, p)| p[arm]).collect();
    of.iter().sum::<f64>() / of.len() as f64
}

async fn neural_pg_serves_logs_and_retrains_from_the_store(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&neural_definition("offer", tiny_policy())).await;
    let stored = strategist::store::queries::get_experiment(&app.db, "offer").unwrap();
    assert!(
        app.state.registry.load().get("offer").unwrap().neural.as_ref().is_some_and(|n| n.is_batched()),
        "served through the micro-batcher (the default for every model size)"
    );
    build_shopper_profiles(&app, 100, true).await;

    // Round 0 on the initial (seeded, untrained) network.
    let first = one_round(&app, "offer", 0, 200).await;
    assert!(first.iter().all(|d| d.answer["policy_version"] == 1));
    let big = first.iter().find(|d| d.unit.starts_with("big")).unwrap();
    assert_eq!(big.context.x.len(), 5);
    assert_eq!(&big.context.x[2..], &[1.0, 0.0, 0.0], "device=mobile one-hot");
    assert_eq!(big.context.events.len(), 2, "the big spender's purchase and view are logged");
    assert!(first.iter().filter(|d| d.unit.starts_with("new")).all(|d| d.context.events.is_empty()));

    // The scorer reports to /metrics: each of the 200 requests went through a forward pass
    // (batch sizes sum to 200), each one's wait was observed, and nothing is left queued.
    let (_, body) = app.request("GET", "/metrics", None, None).await;
    let text = body.as_str().unwrap().to_string();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{experiment=\"offer\"}} ");
        let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
        line.unwrap_or_else(|| panic!("no `{prefix}` in /metrics")).trim().parse().unwrap()
    };
    assert_eq!(value("strategist_scoring_batch_size_sum"), 200.0);
    let passes = value("strategist_scoring_batch_size_count");
    assert!((1.0..=200.0).contains(&passes), "{passes} forward passes");
    assert_eq!(value("strategist_scoring_forward_seconds_count"), passes);
    assert_eq!(value("strategist_scoring_queue_wait_seconds_count"), 200.0);
    assert_eq!(value("strategist_scoring_queue_depth"), 0.0);
    assert_eq!(value("strategist_scoring_overloaded_total"), 0.0);

    // Batched on the server = inline here: the same PMF, and the same hashed seed draws the
    // same arm from it.
    let (pv, raw) = inline_pmfs(&app, "offer", &first);
    assert_eq!(pv, 1);
    let eligible = [true; 3];
    for (d, raw) in first.iter().zip(&raw) {
        let seed = explore::draw_seed(&stored.row.salt, &d.unit, &d.request_id);
        let decision = explore::decide(raw, &eligible, 0.02, seed).unwrap();
        let arm = ["a", "b", "c"][decision.arm];
        assert_eq!(d.answer["arm"], arm, "{}", d.unit);
        for (k, p) in ["a", "b", "c"].iter().zip(explore::restrict_and_floor(raw, &eligible, 0.02).unwrap()) {
            let logged = d.logged_pmf.get(*k).and_then(Value::as_f64).unwrap_or(0.0);
            assert!((logged - p).abs() < 1e-5, "{}: {k} logged {logged}, inline {p}", d.unit);
        }
        assert!((d.answer["propensity"].as_f64().unwrap() - decision.propensity).abs() < 1e-5);
    }

    // 200 matured rows >= min_new_rows (150): the learner retrains and writes version 2.
    let report = learn_now(&app).await;
    assert_eq!(report.snapshots_written, 1, "{report:?}");
    let (pv, after_one) = inline_pmfs(&app, "offer", &first);
    assert_eq!(pv, 2);
    assert_ne!(after_one, raw, "the retrained network gives other PMFs");
    let second = one_round(&app, "offer", 1, 200).await;
    assert!(second.iter().all(|d| d.answer["policy_version"] == 2), "the new snapshot is served");

    // Within `retrain_every` (1h) nothing is retrained, however many rows matured.
    assert_eq!(learn_now(&app).await.snapshots_written, 0);
    // An hour later it is.
    let later = strategist::store::now() + chrono::Duration::minutes(61);
    let report = learn_off_thread(&app, later).await;
    assert_eq!(report.snapshots_written, 1, "{report:?}");
    let (pv, trained) = inline_pmfs(&app, "offer", &first);
    assert_eq!(pv, 3);
    let snap = app.state.registry.load().get("offer").unwrap().snapshot.clone();
    let state = snap.neural.as_ref().unwrap();
    assert_eq!(state.rows, 400, "trained on both rounds");
    assert_eq!(snap.feedback.iter().map(|f| f.n).sum::<u64>(), 400);
    assert!(state.trained_at.is_some() && snap.learned_until.is_some());
    // Warm-started training on the logged world moves mass to each group's converting arm.
    let (c_big0, c_big1) = (mean_share(&first, &raw, "big", 2), mean_share(&first, &trained, "big", 2));
    let (b_new0, b_new1) = (mean_share(&first, &raw, "new", 1), mean_share(&first, &trained, "new", 1));
    assert!(c_big1 > c_big0 + 0.1, "big spenders on free shipping: {c_big0:.3} -> {c_big1:.3}");
    assert!(b_new1 > b_new0 + 0.1, "newcomers on the coupon: {b_new0:.3} -> {b_new1:.3}");
    // The estimated value on the training rows (clipped SNIPS, 0..1 for 0/1 rewards) does
    // not fall; in this clean world the network ends up nearly deterministic on the
    // converting arm, so it is close to 1.
    let (before, after) = (state.snips_before.unwrap(), state.snips_after.unwrap());
    assert!(after >= before && after > 0.9, "SNIPS {before} -> {after}");
}
on_both_backends!(neural_pg_serves_logs_and_retrains_from_the_store);

/// Asks replica `addr` for a decision until it serves `policy_version` `want` (it polls the
/// store every 100 ms); returns the last version seen.
async fn replica_version(app: &TestApp, addr: &str, want: i64) -> i64 {
    let mut seen = 0;
    for _ in 0..100 {
        let mut resp = app
            .client
            .post(format!("{addr}/v1/assign"))
            .insert_header(("Authorization", format!("Bearer {}", app.assign_key)))
            .send_json(&json!({"experiment": "few", "unit_id": "big-1", "context": {"device": "desktop"}}))
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        seen = v["policy_version"].as_i64().unwrap_or(0);
        if seen == want {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    seen
}

async fn too_few_new_rows_wait_for_the_next_retrain_and_every_replica_hot_swaps(backend: Backend) {
    let app = spawn_app(backend).await;
    let (replica, replica_stop) = app.spawn_replica();
    app.create_experiment(&neural_definition("few", tiny_policy())).await;
    build_shopper_profiles(&app, 20, true).await;
    assert_eq!(replica_version(&app, &replica, 1).await, 1, "the replica loads the initial network");
    one_round(&app, "few", 0, 100).await;
    assert_eq!(learn_now(&app).await.snapshots_written, 0, "100 new rows < min_new_rows 150");
    one_round(&app, "few", 1, 100).await;
    assert_eq!(learn_now(&app).await.snapshots_written, 1, "200 new rows");
    assert_eq!(app.state.registry.load().get("few").unwrap().policy_version, 2);
    let seen = replica_version(&app, &replica, 2).await;
    replica_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(seen, 2, "the replica serves the retrained network");
}
on_both_backends!(too_few_new_rows_wait_for_the_next_retrain_and_every_replica_hot_swaps);

async fn invalid_neural_definitions_are_refused_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let with = |key: &str, field: &str, value: Value| {
        let mut policy = tiny_policy();
        policy[field] = value;
        neural_definition(key, policy)
    };
    let cases = [
        (with("n1", "temperature", json!(0.0)), "policy: invalid policy parameter `temperature`"),
        (with("n2", "learning_rate", json!(1.5)), "policy: invalid policy parameter `learning_rate`"),
        (with("n3", "hidden", json!(0)), "policy: invalid policy parameter `hidden`"),
        (with("n4", "retrain_every", json!("whenever")), "policy: invalid policy parameter `retrain_every`"),
        (with("n5", "min_new_rows", json!(0)), "policy: invalid policy parameter `min_new_rows`"),
        (with("n6", "features", json!(4)), "policy.features"),
        (
            {
                let mut d = neural_definition("n7", tiny_policy());
                d.as_object_mut().unwrap().remove("features");
                d
            },
            "features",
        ),
    ];
    for (def, field) in cases {
        let (s, v) = app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&def)).await;
        assert_eq!((s, v["error"].as_str()), (422, Some("invalid_definition")), "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(field), "expected `{field}` in {msg}");
    }
    // An unknown parameter is refused as well (a typo must not silently use a default).
    let (s, v) =
        app.request("POST", "/v1/experiments", Some(&app.admin_key), Some(&with("n8", "lr", json!(0.1)))).await;
    assert!(s == 400 || s == 422, "{s} {v}");
    assert!(v.to_string().contains("lr"), "{v}");
}
on_both_backends!(invalid_neural_definitions_are_refused_naming_the_field);
