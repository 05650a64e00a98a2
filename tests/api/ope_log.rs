//! `strategist ope --logged experiment:KEY`: real experiments run through the HTTP API, then
//! the real binary evaluates target policies on their exposure logs in the same store.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use serde_json::{json, Value};
use strategist::store::export::{self, RewardRule};
use strategist::store::models::RewardRow;
use strategist::store::schema::rewards;
use strategist::store::{Db, StoreError};

use crate::helpers::{
    assign_shoppers, build_shopper_profiles, definition, shopper_buys, shopper_features, spawn_app, Backend, TestApp,
};
use crate::on_both_backends;

/// Attribution window of the experiments below: long enough to send the rewards, short enough
/// to wait for.
const WINDOW: Duration = Duration::from_secs(3);

fn insert_reward(db: &Db, row: &RewardRow) -> Result<(), StoreError> {
    strategist::db_run!(db, |conn| {
        diesel::insert_into(rewards::table).values(row).execute(conn)?;
        Ok(())
    })
}

/// What `strategist ope` did: success, stdout as JSON (Null if not JSON), stderr.
struct Run {
    ok: bool,
    out: Value,
    err: String,
}

/// Runs the binary off the test's runtime thread, so the HTTP client's connection pool on
/// that thread keeps running while the command does.
async fn ope(app: &TestApp, logged: &str, target: &str, extra: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strategist"));
    cmd.args(["ope", "--logged", logged, "--target", target, "--json", "--database-url", &app.db_url]).args(extra);
    let out = actix_web::rt::task::spawn_blocking(move || cmd.output().expect("run strategist")).await.unwrap();
    Run {
        ok: out.status.success(),
        out: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `ope` and expects a report.
async fn report(app: &TestApp, logged: &str, target: &str) -> Value {
    let run = ope(app, logged, target, &["--bootstrap", "0"]).await;
    assert!(run.ok, "ope {logged} {target}: {}", run.err);
    run.out
}

/// Runs `ope` and expects a failure with this code, on stdout (JSON) and stderr.
async fn failure(app: &TestApp, logged: &str, target: &str, code: &str) -> String {
    let run = ope(app, logged, target, &["--bootstrap", "0"]).await;
    assert!(!run.ok, "ope {logged} {target} should fail with {code}: {}", run.out);
    assert_eq!(run.out["error"], code, "{}", run.err);
    assert!(run.err.contains(&format!("[{code}]")), "{}", run.err);
    run.out["message"].as_str().unwrap_or_default().to_string()
}

fn estimate(report: &Value, estimator: &str) -> f64 {
    report["estimators"][estimator]["estimate"].as_f64().unwrap()
}

fn ci95(report: &Value, estimator: &str) -> (f64, f64) {
    let ci = &report["estimators"][estimator]["ci95"];
    (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// One logged decision as the test saw it.
struct Decision {
    arm: String,
    reward: f64,
}

/// Assigns units `from..to` of the weighted conversion experiment `key`, with contexts; sends
/// conversions (arm a 10%, b 30%, c 50% by unit number, some duplicated, some explicit zeros).
async fn run_conversion_traffic(
    app: &TestApp,
    key: &str,
    units: std::ops::Range<usize>,
    reward: bool,
) -> Vec<Decision> {
    let requests: Vec<Value> = units
        .clone()
        .map(|u| {
            let mut context = json!({"segment": if u % 3 == 0 { "new" } else { "returning" }, "mobile": u % 2 == 0});
            if u % 4 != 0 {
                context["cart"] = json!(10.0 + (u % 7) as f64);
            }
            json!({"experiment": key, "unit_id": format!("u-{u}"), "context": context})
        })
        .collect();
    let (s, v) =
        app.request("POST", "/v1/assign/batch", Some(&app.assign_key), Some(&json!({"requests": requests}))).await;
    assert_eq!(s, 200, "{v}");
    let mut decisions = Vec::new();
    let mut rewards = Vec::new();
    for (u, d) in units.zip(v["results"].as_array().unwrap()) {
        assert_eq!(d["logged"], true, "{d}");
        let arm = d["arm"].as_str().unwrap().to_string();
        let converts = match arm.as_str() {
            "a" => u % 10 == 0,
            "b" => u % 10 < 3,
            _ => u % 2 == 0,
        };
        if reward && converts {
            rewards.push(json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": format!("{key}-{u}")}));
            if u % 3 == 0 {
                // A second conversion of the same exposure still counts once.
                rewards.push(json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": format!("{key}-{u}-again")}));
            }
        } else if reward && u % 7 == 0 {
            rewards.push(json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 0, "idempotency_key": format!("{key}-{u}")}));
        }
        decisions.push(Decision { arm, reward: f64::from(u8::from(reward && converts)) });
    }
    app.reward_many(rewards).await;
    decisions
}

async fn ope_on_the_platform_log_recovers_what_the_experiment_observed(backend: Backend) {
    let app = spawn_app(backend).await;
    let window = format!("{}s", WINDOW.as_secs());
    let mut def = definition("ope-log");
    def["policy"] = json!({"kind": "fixed", "weights": {"a": 5.0, "b": 3.0, "c": 2.0}});
    def["primary_metric"] = json!({"name": "purchase", "kind": "conversion", "window": window});
    def["guardrails"] = json!([]);
    app.create_experiment(&def).await;
    let mut uniform = definition("ope-uniform");
    uniform["primary_metric"] = json!({"name": "revenue", "kind": "revenue", "window": window});
    uniform["guardrails"] = json!([]);
    app.create_experiment(&uniform).await;
    let mut fresh = definition("ope-fresh");
    fresh["guardrails"] = json!([]);
    app.create_experiment(&fresh).await;

    let decisions = run_conversion_traffic(&app, "ope-log", 0..240, true).await;
    let answers = app.assign_many("ope-uniform", (0..90).map(|u| format!("v-{u}"))).await;
    let mut revenue = Vec::new();
    let mut total = 0.0;
    for (u, d) in answers.iter().enumerate() {
        // Revenue sums over the exposure's rewards: 12.5 from two rewards, 4 from one, or 0.
        let values: &[f64] = match u % 3 {
            0 => &[10.0, 2.5],
            1 => &[4.0],
            _ => &[],
        };
        for (i, v) in values.iter().enumerate() {
            total += v;
            revenue.push(json!({"exposure_id": d["exposure_id"], "metric": "revenue", "value": v, "idempotency_key": format!("rev-{u}-{i}")}));
        }
    }
    app.reward_many(revenue).await;
    app.assign_many("ope-fresh", (0..3).map(|u| format!("f-{u}"))).await;
    let sent = Instant::now();
    actix_web::rt::time::sleep(WINDOW + Duration::from_millis(400)).await;
    assert!(sent.elapsed() > WINDOW);

    // The logging policy evaluated on itself: every importance weight is 1.
    let n = decisions.len() as f64;
    let mean_conversion = decisions.iter().map(|d| d.reward).sum::<f64>() / n;
    let r = report(&app, "experiment:ope-log", "snapshot").await;
    assert_eq!(r["n"], 240);
    assert_eq!(r["source"]["n_mature"], 240);
    assert_eq!(r["source"]["n_immature"], 0);
    assert_eq!(r["source"]["version"], 1);
    assert_eq!(r["source"]["metric"], "purchase");
    assert_eq!(r["source"]["categorical_features"], json!(["mobile", "segment"]));
    assert_eq!(r["source"]["numeric_features"], json!(["cart", "cart:missing"]));
    assert!(close(r["on_policy_value"].as_f64().unwrap(), mean_conversion), "{r}");
    assert!(close(estimate(&r, "ipw"), mean_conversion) && close(estimate(&r, "snipw"), mean_conversion), "{r}");
    assert!(close(r["max_weight"].as_f64().unwrap(), 1.0) && close(r["ess"].as_f64().unwrap(), n), "{r}");
    assert!(r["target"].as_str().unwrap().starts_with("snapshot:1"), "{r}");
    let by_number = report(&app, "experiment:ope-log@1", "snapshot:1").await;
    assert_eq!(estimate(&by_number, "ipw"), estimate(&r, "ipw"));

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strategist"));
    cmd.args(["ope", "--logged", "experiment:ope-log", "--target", "snapshot", "--bootstrap", "0"])
        .args(["--database-url", &app.db_url]);
    let table = actix_web::rt::task::spawn_blocking(move || cmd.output().expect("run strategist")).await.unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    assert!(text.contains("experiment ope-log version 1") && text.contains("240 mature exposures"), "{text}");
    assert!(text.contains("Switch-DR"), "{text}");

    // Always one arm: SNIPW is that arm's observed conversion rate, inside both intervals.
    let mut per_arm: HashMap<&str, (f64, f64)> = HashMap::new();
    for d in &decisions {
        let e = per_arm.entry(d.arm.as_str()).or_default();
        e.0 += 1.0;
        e.1 += d.reward;
    }
    for arm in ["a", "b", "c"] {
        let (shown, converted) = per_arm[arm];
        assert!(shown > 10.0, "arm {arm} drawn {shown} times");
        let rate = converted / shown;
        let r = report(&app, "experiment:ope-log", &format!("arm:{arm}")).await;
        assert!(close(estimate(&r, "snipw"), rate), "arm {arm}: rate {rate}, {r}");
        for est in ["ipw", "snipw"] {
            let (lo, hi) = ci95(&r, est);
            assert!(
                lo <= rate && rate <= hi,
                "arm {arm} {est}: rate {rate} outside [{lo}, {hi}]; shown {per_arm:?}, {r}"
            );
        }
    }

    // Uniform on a uniform log: the mean revenue (rewards summed per exposure).
    let run = ope(&app, "experiment:ope-uniform", "uniform", &["--bootstrap", "100"]).await;
    assert!(run.ok, "{}", run.err);
    let r = run.out;
    let mean = total / 90.0;
    assert_eq!(r["n"], 90);
    assert_eq!(r["source"]["metric_kind"], "revenue");
    assert_eq!(r["reward_model"], "linear");
    for est in ["ipw", "snipw"] {
        assert!(close(estimate(&r, est), mean), "{est}: {} vs {mean}", estimate(&r, est));
    }
    assert!(r["estimators"]["dr"]["bootstrap_ci95"].is_array(), "{r}");

    // Errors name their cause with a stable code.
    let message = failure(&app, "experiment:nope", "uniform", "ope_unknown_experiment").await;
    assert!(message.contains("`nope`"), "{message}");
    failure(&app, "experiment:ope-log@7", "uniform", "ope_unknown_version").await;
    failure(&app, "experiment:ope-log", "snapshot:99", "ope_unknown_snapshot").await;
    failure(&app, "experiment:ope-log", "bts", "ope_target_not_applicable").await;
    let message = failure(&app, "experiment:ope-log", "arm:zzz", "ope_invalid_policy").await;
    assert!(message.contains("zzz"), "{message}");
    let message = failure(&app, "experiment:ope-fresh", "uniform", "ope_no_mature_exposures").await;
    assert!(message.contains("3 still inside"), "{message}");
    let run = ope(&app, "experiment:ope-log", "greedy", &[]).await;
    assert!(!run.ok && run.err.contains("unknown target policy"), "{}", run.err);

    // The store's export reads the same rows whatever its page size, and ignores a reward
    // stored after the attribution window (as a later, shorter window would leave one).
    let id = strategist::store::queries::get_experiment(&app.db, "ope-log").unwrap().row.id;
    let rule = RewardRule { metric: "purchase", binary: true, window: chrono::Duration::from_std(WINDOW).unwrap() };
    let cutoff = strategist::store::now() - rule.window;
    let read = |page_size| {
        let mut rows = Vec::new();
        export::for_each_exposure_paged(&app.db, id, 1, &rule, cutoff, page_size, |e| {
            rows.push(e);
            Ok::<(), StoreError>(())
        })
        .unwrap();
        rows
    };
    let all = read(export::EXPORT_PAGE_SIZE);
    assert_eq!(all.len(), 240);
    assert_eq!(read(7), all);
    let unconverted = all.iter().find(|e| e.reward == 0.0).unwrap();
    let late = RewardRow {
        id: "late-reward".into(),
        exposure_id: unconverted.id.clone(),
        experiment_id: id,
        version: 1,
        arm: unconverted.arm.clone(),
        metric: "purchase".into(),
        value: 1.0,
        raw_value: 1.0,
        idempotency_key: "late-reward".into(),
        exposure_created_at: unconverted.created_at,
        created_at: unconverted.created_at + chrono::Duration::seconds(10),
    };
    insert_reward(&app.db, &late).unwrap();
    let again = read(50);
    assert_eq!(again, all, "a reward after the window changes nothing");
    let r = report(&app, "experiment:ope-log", "snapshot").await;
    assert!(close(estimate(&r, "ipw"), mean_conversion), "{r}");

    // Exposures whose window is still open are left out and counted.
    run_conversion_traffic(&app, "ope-log", 1000..1007, false).await;
    let r = report(&app, "experiment:ope-log", "uniform").await;
    assert_eq!(r["n"], 240);
    assert_eq!(r["source"]["n_immature"], 7);
}
on_both_backends!(ope_on_the_platform_log_recovers_what_the_experiment_observed);

// ---------------------------------------------------------------------------------------------
// Contextual snapshots: each exposure's PMF from the context it logged
// ---------------------------------------------------------------------------------------------

/// Two numeric profile features and one categorical attribute: 2 + (2 + 1) = 5 entries, as in
/// `contextual.rs`; a 3 s conversion window so the test can wait for maturity.
fn contextual_definition(key: &str, policy: Value) -> Value {
    let mut def = definition(key);
    def["policy"] = policy;
    def["features"] = shopper_features();
    def["min_propensity"] = json!(0.05);
    def["primary_metric"] =
        json!({"name": "purchase", "kind": "conversion", "window": format!("{}s", WINDOW.as_secs())});
    def["guardrails"] = json!([]);
    def
}

/// Serves `n` units (half big spenders, half newcomers, on two devices) and rewards the world's
/// conversions: big spenders buy with free shipping (c), newcomers with the coupon (b).
/// Returns exposure id → (policy version that served it, reward).
async fn contextual_round(app: &TestApp, key: &str, round: usize, n: usize) -> HashMap<String, (i64, f64)> {
    let answers = assign_shoppers(app, key, round, n, &["mobile", "desktop"]).await;
    let mut rewards = Vec::new();
    let mut out = HashMap::new();
    for (u, d) in &answers {
        assert_eq!(d["logged"], true, "{d}");
        let arm = d["arm"].as_str().unwrap();
        let converts = shopper_buys(u, arm);
        if converts {
            rewards.push(json!({"exposure_id": d["exposure_id"], "metric": "purchase", "value": 1, "idempotency_key": format!("{u}-{round}")}));
        }
        let id = d["exposure_id"].as_str().unwrap().to_string();
        out.insert(id, (d["policy_version"].as_i64().unwrap(), f64::from(u8::from(converts))));
    }
    if !rewards.is_empty() {
        app.reward_many(rewards).await;
    }
    out
}

async fn wait_for_maturity() {
    actix_web::rt::time::sleep(WINDOW + Duration::from_millis(400)).await;
}

/// Each mature exposure's importance weight `π(logged arm | its context) / logged propensity`
/// under `snapshot[:N]`, through the library (`platform::snapshot_policy`), by exposure id.
fn weights(app: &TestApp, key: &str, policy_version: Option<i64>) -> HashMap<String, f64> {
    use strategist::ope::platform::{load_experiment_log, snapshot_policy, ExperimentRef};
    let source = ExperimentRef { key: key.into(), version: None };
    let log = load_experiment_log(&app.db, &source, strategist::store::now()).unwrap();
    let target = snapshot_policy(&app.db, &log, policy_version).unwrap();
    let mut pi = vec![0.0; log.data.n_actions()];
    log.exposures()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            target.action_probs(&log.data, i, &mut pi).unwrap();
            (e.id.clone(), pi[log.data.actions()[i]] / log.data.propensities()[i])
        })
        .collect()
}

fn mean_reward(served: &HashMap<String, (i64, f64)>) -> f64 {
    served.values().map(|(_, r)| r).sum::<f64>() / served.len() as f64
}

/// Every estimator finite, inside its own 95% interval.
fn assert_finite_with_intervals(r: &Value) {
    for est in ["ipw", "snipw", "dm", "dr", "dr_classic", "switch_dr"] {
        let v = estimate(r, est);
        let (lo, hi) = ci95(r, est);
        assert!(v.is_finite() && lo.is_finite() && hi.is_finite(), "{est}: {r}");
        assert!(lo <= v + 1e-12 && v <= hi + 1e-12, "{est}: {v} outside [{lo}, {hi}]");
    }
}

async fn a_contextual_snapshot_is_evaluated_per_exposure_from_its_logged_context(backend: Backend, policy: Value) {
    let exact = policy["kind"] == "lin_ucb";
    let app = spawn_app(backend).await;
    let key = "ope-ctx";
    app.create_experiment(&contextual_definition(key, policy.clone())).await;
    build_shopper_profiles(&app, 100, true).await;

    // Round 1, served by the prior model (policy version 1).
    let first = contextual_round(&app, key, 1, 200).await;
    assert!(first.values().all(|(pv, _)| *pv == 1));
    wait_for_maturity().await;
    let mean = mean_reward(&first);

    // The snapshot that served the log, evaluated on it: every weight is 1 (lin_ucb, bit for
    // bit), or 1 up to the Monte Carlo noise of lin_ts's draws, seeded per exposure here.
    let w = weights(&app, key, None);
    assert_eq!(w.len(), 200);
    let mean_weight = w.values().sum::<f64>() / w.len() as f64;
    if exact {
        assert!(w.values().all(|w| *w == 1.0), "{w:?}");
    } else {
        assert!((mean_weight - 1.0).abs() < 0.1 && w.values().all(|w| w.is_finite() && *w > 0.0), "{w:?}");
    }
    let r = report(&app, &format!("experiment:{key}"), "snapshot").await;
    assert_eq!(r["n"], 200);
    assert!(r["target"].as_str().unwrap().starts_with("snapshot:1"), "{r}");
    assert!(close(r["on_policy_value"].as_f64().unwrap(), mean), "{r}");
    if exact {
        assert!(close(estimate(&r, "ipw"), mean) && close(estimate(&r, "snipw"), mean), "{r}");
        assert!(close(r["max_weight"].as_f64().unwrap(), 1.0) && close(r["ess"].as_f64().unwrap(), 200.0), "{r}");
    } else {
        assert!((estimate(&r, "snipw") - mean).abs() < 0.05, "mean {mean}: {r}");
    }
    assert_finite_with_intervals(&r);

    // The learner folds round 1 into version 2 of the model; evaluated on round 1's log it
    // finds what round 1 taught it (the converting arm per profile), above the logged value.
    let learned = app.learn();
    assert_eq!(learned.snapshots_written, 1, "{learned:?}");
    let r = report(&app, &format!("experiment:{key}"), "snapshot").await;
    assert!(r["target"].as_str().unwrap().starts_with("snapshot:2"), "{r}");
    assert_eq!(r["n"], 200);
    assert_finite_with_intervals(&r);
    let snipw = estimate(&r, "snipw");
    assert!(snipw > 0.6 && ci95(&r, "snipw").0 > mean, "logged {mean}, learned snapshot {r}");
    assert!(r["max_weight"].as_f64().unwrap() > 1.0, "another policy than the logging one: {r}");

    // Round 2 is served by version 2: its exposures get weight 1 under snapshot:2, round 1's
    // do not; evaluated on both rounds, either snapshot gives finite estimates.
    let second = contextual_round(&app, key, 2, 200).await;
    assert!(second.values().all(|(pv, _)| *pv == 2), "{second:?}");
    wait_for_maturity().await;
    let w = weights(&app, key, Some(2));
    assert_eq!(w.len(), 400);
    let own: Vec<f64> = second.keys().map(|id| w[id]).collect();
    if exact {
        assert!(own.iter().all(|w| *w == 1.0), "{own:?}");
    } else {
        let m = own.iter().sum::<f64>() / own.len() as f64;
        assert!((m - 1.0).abs() < 0.15, "mean weight {m}: {own:?}");
    }
    assert!(first.keys().any(|id| (w[id] - 1.0).abs() > 0.1), "round 1 was served by another model");
    for target in ["snapshot:1", "snapshot:2"] {
        let r = report(&app, &format!("experiment:{key}"), target).await;
        assert_eq!(r["n"], 400);
        assert_finite_with_intervals(&r);
    }

    // A new version with another [features] schema: its snapshots do not read version 1's
    // contexts.
    let mut def = contextual_definition(key, policy);
    def["policy"]["features"] = json!(6);
    def["features"]["categorical"][0]["values"] = json!(["mobile", "desktop", "tablet"]);
    let (s, v) = app.request("PUT", &format!("/v1/experiments/{key}"), Some(&app.admin_key), Some(&def)).await;
    assert_eq!((s, v["outcome"].as_str()), (200, Some("new_version")), "{v}");
    let id = strategist::store::queries::get_experiment(&app.db, key).unwrap().row.id;
    let pv = strategist::store::queries::latest_snapshot(&app.db, id, 2).unwrap().policy_version;
    let message =
        failure(&app, &format!("experiment:{key}@1"), &format!("snapshot:{pv}"), "ope_target_not_applicable").await;
    assert!(message.contains("[features]"), "{message}");
}

async fn lin_ucb_snapshots_are_evaluated_per_exposure(backend: Backend) {
    a_contextual_snapshot_is_evaluated_per_exposure_from_its_logged_context(
        backend,
        json!({"kind": "lin_ucb", "features": 5, "alpha": 0.2}),
    )
    .await;
}
on_both_backends!(lin_ucb_snapshots_are_evaluated_per_exposure);

async fn lin_ts_snapshots_are_evaluated_per_exposure(backend: Backend) {
    a_contextual_snapshot_is_evaluated_per_exposure_from_its_logged_context(
        backend,
        json!({"kind": "lin_ts", "features": 5, "v": 0.1, "draws": 64}),
    )
    .await;
}
on_both_backends!(lin_ts_snapshots_are_evaluated_per_exposure);

/// `neural_pg`: the initial network evaluated on the log it served (weights 1 up to the f32
/// scoring of another batch), then the retrained network on that log.
async fn neural_pg_snapshots_are_evaluated_per_exposure(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = "ope-neural";
    let policy = json!({
        "kind": "neural_pg", "features": 5, "hidden": 8, "embedding": 8, "epochs": 10,
        "batch_size": 100, "learning_rate": 0.05, "seed": 7, "temperature": 0.5,
        "retrain_every": "1h", "min_new_rows": 150
    });
    app.create_experiment(&contextual_definition(key, policy)).await;
    build_shopper_profiles(&app, 100, true).await;
    let served = contextual_round(&app, key, 1, 200).await;
    wait_for_maturity().await;
    let mean = mean_reward(&served);

    let w = weights(&app, key, None);
    assert_eq!(w.len(), 200);
    assert!(w.values().all(|w| (w - 1.0).abs() < 1e-4), "{w:?}");
    let r = report(&app, &format!("experiment:{key}"), "snapshot").await;
    assert!(r["target"].as_str().unwrap().starts_with("snapshot:1"), "{r}");
    assert!(close(r["on_policy_value"].as_f64().unwrap(), mean), "{r}");
    for est in ["ipw", "snipw"] {
        assert!((estimate(&r, est) - mean).abs() < 1e-4, "{est}: mean {mean}, {r}");
    }
    assert!((r["max_weight"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{r}");
    assert_finite_with_intervals(&r);

    // One retrain (off the test's async thread: seconds in a debug build), then the new
    // network evaluated on the log of the old one.
    let (db, metrics) = (app.db.clone(), app.state.metrics.clone());
    let learned = actix_web::rt::task::spawn_blocking(move || {
        strategist::learner::run_once(&db, &metrics, strategist::store::now())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(learned.snapshots_written, 1, "{learned:?}");
    let r = report(&app, &format!("experiment:{key}"), "snapshot:2").await;
    assert_eq!(r["n"], 200);
    assert!(r["max_weight"].as_f64().unwrap() > 1.0 + 1e-3, "a different network: {r}");
    assert_finite_with_intervals(&r);
}
on_both_backends!(neural_pg_snapshots_are_evaluated_per_exposure);
