//! The analyzer end to end: log → incremental statistics → analysis → results API →
//! automatic promotion with its audit entry; manual promote (with a holdout) and rollback;
//! SRM from a logging bug blocks promotion.

use std::collections::HashMap;

use chrono::{Duration, NaiveDateTime};
use serde_json::{json, Value};

use crate::helpers::{definition, spawn_app, Backend, TestApp};
use crate::on_both_backends;

fn later(hours: i64) -> NaiveDateTime {
    strategist::store::now() + Duration::hours(hours)
}

/// Assigns `units` units and converts each with the arm's rate (deterministic by unit
/// number); returns (exposures, conversions) per arm.
async fn traffic(
    app: &TestApp,
    key: &str,
    prefix: &str,
    units: usize,
    rate: &HashMap<&str, f64>,
) -> HashMap<String, (u64, u64)> {
    let answers = app.assign_many(key, (0..units).map(|u| format!("{prefix}-{u}"))).await;
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    let mut rewards = Vec::new();
    for (u, a) in answers.iter().enumerate() {
        assert_eq!(a["logged"], true, "{a}");
        let arm = a["arm"].as_str().unwrap().to_string();
        let entry = counts.entry(arm.clone()).or_default();
        entry.0 += 1;
        // A low-discrepancy sequence: the share of converting units is the rate, exactly enough.
        let x = (u as f64 * 0.618_033_988_75).fract();
        if x < rate[arm.as_str()] {
            entry.1 += 1;
            rewards.push(json!({"exposure_id": a["exposure_id"], "metric": "purchase", "value": 1,
                                "idempotency_key": format!("{prefix}-order-{u}")}));
        }
    }
    app.reward_many(rewards).await;
    counts
}

async fn results(app: &TestApp, key: &str, query: &str) -> (u16, Value) {
    app.request("GET", &format!("/v1/experiments/{key}/results{query}"), Some(&app.read_key), None).await
}

fn arm_row<'a>(v: &'a Value, metric: &str, arm: &str) -> &'a Value {
    let m = v["analysis"]["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == metric).unwrap();
    m["arms"].as_array().unwrap().iter().find(|a| a["arm"] == arm).unwrap()
}

async fn a_clear_winner_is_promoted_with_its_statistics_in_the_audit_log(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("promo");
    def["analysis"] = json!({"min_sample_per_arm": 150, "sequential_tuning_n": 1000});
    app.create_experiment(&def).await;
    let (s, v) = results(&app, "promo", "").await;
    assert_eq!((s, v["error"].as_str()), (404, Some("no_analysis_yet")), "{v}");

    let rates = HashMap::from([("a", 0.10), ("b", 0.45), ("c", 0.10)]);
    let counts = traffic(&app, "promo", "w", 900, &rates).await;
    let report = app.analyze(later(2));
    assert_eq!(report.promoted, vec!["promo".to_string()], "{report:?}");
    assert_eq!(report.folded_exposures, 900);

    let (s, v) = results(&app, "promo", "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["experiment"], "promo");
    assert_eq!(v["analysis"]["decision"]["state"]["kind"], "ready_to_promote", "{}", v["analysis"]["decision"]);
    assert_eq!(v["analysis"]["decision"]["state"]["arm"], "b");
    for arm in ["a", "b", "c"] {
        let row = arm_row(&v, "purchase", arm);
        let (n, x) = counts[arm];
        assert_eq!(row["exposures_mature"].as_u64(), Some(n), "{row}");
        assert_eq!(row["exposures_immature"].as_u64(), Some(0));
        assert_eq!(row["conversions"].as_u64(), Some(x), "{row}");
        let mean = row["mean"].as_f64().unwrap();
        assert!((mean - x as f64 / n as f64).abs() < 1e-9, "{row}");
    }
    let b = arm_row(&v, "purchase", "b");
    let p = b["p_always_valid"]["p"].as_f64().unwrap();
    assert!(p < 0.05 && b["p_holm_adjusted"].as_f64().unwrap() < 0.05, "{b}");
    let fixed = b["p_fixed_horizon"]["p"].as_f64().unwrap();
    assert!(fixed <= p, "the fixed-horizon p-value is smaller than the always-valid one: {b}");
    let ci = &b["uplift_absolute"]["always_valid_interval"];
    assert!(ci["lower"].as_f64().unwrap() > 0.0, "{b}");
    assert!(b["prob_best"].as_f64().unwrap() > 0.95, "{b}");
    assert_eq!(v["analysis"]["srm"]["flagged"], false);

    // Promoted: concluded, the winner served to everyone (unlogged), the reason on record.
    let (_, e) = app.request("GET", "/v1/experiments/promo", Some(&app.read_key), None).await;
    assert_eq!(e["status"], "concluded", "{e}");
    assert_eq!(e["promoted_arm"], "b");
    let (_, d) = app.assign(json!({"experiment": "promo", "unit_id": "after"})).await;
    assert_eq!((d["arm"].as_str(), d["logged"].as_bool()), (Some("b"), Some(false)));
    let (_, log) = app.request("GET", "/v1/experiments/promo/decisions", Some(&app.admin_key), None).await;
    let promote = log.as_array().unwrap().iter().find(|d| d["action"] == "promote").expect("a promote decision");
    assert_eq!(promote["actor"], "analyzer");
    assert!(promote["reason"].as_str().unwrap().contains("always-valid"), "{promote}");
    let snapshot = &promote["details"]["statistics"];
    assert_eq!(snapshot["analysis"]["decision"]["state"]["arm"], "b", "{promote}");
    assert_eq!(arm_row(snapshot, "purchase", "b")["exposures_mature"].as_u64(), Some(counts["b"].0));
}
on_both_backends!(a_clear_winner_is_promoted_with_its_statistics_in_the_audit_log);

/// The fold is incremental: a second run adds nothing, new exposures are added once;
/// exposures inside their window are immature; `?at=` returns the analysis of that time.
/// (Real time: the windows are 2 s long.)
async fn statistics_are_folded_once_and_immature_exposures_shown_apart(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("fold");
    def["analysis"] = json!({"auto_promote": false});
    def["primary_metric"]["window"] = json!("2s");
    for g in def["guardrails"].as_array_mut().unwrap() {
        g["window"] = json!("2s");
    }
    app.create_experiment(&def).await;
    let rates = HashMap::from([("a", 0.2), ("b", 0.2), ("c", 0.2)]);
    let first = traffic(&app, "fold", "f", 120, &rates).await;
    let t0 = strategist::store::now();
    let r = app.analyze(t0);
    assert_eq!(r.folded_exposures, 0, "the window is still open");
    let (_, v) = results(&app, "fold", "").await;
    let sum = |v: &Value, field: &str| -> u64 {
        ["a", "b", "c"].iter().map(|a| arm_row(v, "purchase", a)[field].as_u64().unwrap()).sum()
    };
    assert_eq!((sum(&v, "exposures_mature"), sum(&v, "exposures_immature")), (0, 120), "{v}");
    assert_eq!(v["analysis"]["decision"]["state"]["kind"], "collecting");
    assert!(!v["analysis"]["decision"]["missing"].as_array().unwrap().is_empty(), "{v}");

    actix_web::rt::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app.analyze(strategist::store::now()).folded_exposures, 120);
    assert_eq!(app.analyze(strategist::store::now()).folded_exposures, 0, "nothing new: nothing folded");
    let (_, v) = results(&app, "fold", "").await;
    for arm in ["a", "b", "c"] {
        let row = arm_row(&v, "purchase", arm);
        assert_eq!(row["exposures_mature"].as_u64(), Some(first[arm].0), "folded once: {row}");
        assert_eq!(row["conversions"].as_u64(), Some(first[arm].1));
    }
    let second = traffic(&app, "fold", "g", 60, &rates).await;
    let (_, v) = {
        app.analyze(strategist::store::now());
        results(&app, "fold", "").await
    };
    assert_eq!((sum(&v, "exposures_mature"), sum(&v, "exposures_immature")), (120, 60), "{v}");
    actix_web::rt::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app.analyze(strategist::store::now()).folded_exposures, 60);
    let (_, v) = results(&app, "fold", "").await;
    for arm in ["a", "b", "c"] {
        let want = first[arm].0 + second.get(arm).map_or(0, |c| c.0);
        assert_eq!(arm_row(&v, "purchase", arm)["exposures_mature"].as_u64(), Some(want));
    }
    // The analysis in force just after the first run still shows everything immature.
    let at = (t0 + Duration::milliseconds(500)).and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (s, past) = results(&app, "fold", &format!("?at={at}")).await;
    assert_eq!(s, 200, "{past}");
    assert_eq!(sum(&past, "exposures_mature"), 0, "{past}");
    let (s, v) = results(&app, "fold", "?at=yesterday").await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_query")));
    let (s, v) = results(&app, "fold", "?since=2026-01-01T00:00:00Z").await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_query")));
    let (s, v) = results(&app, "fold", "?at=2000-01-01T00:00:00Z").await;
    assert_eq!((s, v["error"].as_str()), (404, Some("no_analysis_yet")));
    // Not promoted although nothing stops it: auto_promote is off.
    let (_, e) = app.request("GET", "/v1/experiments/fold", Some(&app.read_key), None).await;
    assert_eq!(e["status"], "running");
}
on_both_backends!(statistics_are_folded_once_and_immature_exposures_shown_apart);

/// Manual promotion keeps a holdout on control in a new version; rollback restores the
/// arms and policy of the version before; both are in the audit log with who did it.
async fn manual_promotion_with_a_holdout_and_rollback(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("manual")).await;
    let (s, v) = app.action("manual", "promote", json!({})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_request")), "{v}");
    let (s, v) = app.action("manual", "rollback", json!({})).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("nothing_to_roll_back")), "{v}");
    let (s, v) = app.action("manual", "promote", json!({"winner": "b", "holdout": 1.5})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_request")), "{v}");

    let (s, v) = app.action("manual", "promote", json!({"winner": "b", "holdout": 0.2, "reason": "Q4 call"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "running");
    assert_eq!(v["promoted_arm"], "b");
    assert_eq!(v["version"], 2, "{v}");
    let answers = app.assign_many("manual", (0..300).map(|u| format!("h-{u}"))).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for a in &answers {
        assert_eq!(a["logged"], true, "the holdout keeps being measured: {a}");
        let arm = a["arm"].as_str().unwrap();
        let p = a["propensity"].as_f64().unwrap();
        assert!((arm == "b" && (p - 0.8).abs() < 1e-9) || (arm == "a" && (p - 0.2).abs() < 1e-9), "{a}");
        *seen.entry(arm.to_string()).or_default() += 1;
    }
    assert!((40..=85).contains(&seen["a"]), "about 20% on control: {seen:?}");

    let (s, v) = app.action("manual", "rollback", json!({"reason": "holdout looks bad"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["version"].as_i64(), v["promoted_arm"].is_null()), (Some(3), true), "{v}");
    let answers = app.assign_many("manual", (0..90).map(|u| format!("r-{u}"))).await;
    assert!(answers.iter().any(|a| a["arm"] == "c"), "all arms are served again");

    let (_, log) = app.request("GET", "/v1/experiments/manual/decisions", Some(&app.admin_key), None).await;
    let actions: Vec<&str> = log.as_array().unwrap().iter().map(|d| d["action"].as_str().unwrap()).collect();
    assert!(actions.ends_with(&["update", "promote", "update", "rollback"]), "{actions:?}");
    let promote = log.as_array().unwrap().iter().find(|d| d["action"] == "promote").unwrap();
    assert_eq!(promote["reason"], "Q4 call");
    assert!(promote["actor"].as_str().unwrap().starts_with("key:"), "{promote}");
    assert_eq!(promote["details"]["holdout"], 0.2);

    // Without a holdout a promotion concludes; rollback reopens it.
    let (s, v) = app.action("manual", "promote", json!({"winner": "c", "holdout": 0})).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("concluded")), "{v}");
    let (s, v) = app.action("manual", "rollback", json!({})).await;
    assert_eq!((s, v["status"].as_str(), v["promoted_arm"].is_null()), (200, Some("running"), true), "{v}");
    let (s, v) = app.action("manual", "pause", json!({})).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("paused")));
    let (s, v) = app.action("manual", "resume", json!({})).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("running")));
}
on_both_backends!(manual_promotion_with_a_holdout_and_rollback);

/// A logging bug that loses part of one arm's exposures is flagged (SRM against the logged
/// propensities), recorded, and blocks the promotion the biased numbers would earn.
async fn a_lost_share_of_one_arms_exposures_is_flagged_and_blocks_promotion(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("srm");
    def["arms"] = json!([{"key": "a", "control": true}, {"key": "b"}]);
    def["analysis"] = json!({"min_sample_per_arm": 100, "sequential_tuning_n": 1000});
    app.create_experiment(&def).await;
    let rates = HashMap::from([("a", 0.10), ("b", 0.30)]);
    traffic(&app, "srm", "s", 2400, &rates).await;
    // The bug: 30% of control's non-converting exposures never reach the log.
    let id = app.state.registry.load().get("srm").unwrap().id;
    let sql = format!(
        "DELETE FROM exposures WHERE experiment_id = {id} AND arm = 'a' AND id NOT IN (SELECT exposure_id FROM rewards) \
         AND substr(unit_hash, 1, 2) < '4d'"
    );
    let deleted = match &app.db {
        strategist::store::Db::Pg(pool) => {
            diesel::RunQueryDsl::execute(diesel::sql_query(sql), &mut pool.get().unwrap()).unwrap()
        }
        strategist::store::Db::Sqlite(pool) => {
            diesel::RunQueryDsl::execute(diesel::sql_query(sql), &mut pool.get().unwrap()).unwrap()
        }
    };
    assert!(deleted > 200, "deleted {deleted}");
    let report = app.analyze(later(2));
    let (_, v) = results(&app, "srm", "").await;
    assert!(report.promoted.is_empty(), "{report:?} {}", v["analysis"]["srm"]);
    assert_eq!(v["analysis"]["srm"]["flagged"], true, "{}", v["analysis"]["srm"]);
    assert!(v["analysis"]["srm"]["p_value"]["p"].as_f64().unwrap() < 0.001);
    assert_eq!(v["analysis"]["decision"]["state"]["kind"], "blocked_srm");
    let (_, log) = app.request("GET", "/v1/experiments/srm/decisions", Some(&app.admin_key), None).await;
    let flagged = log.as_array().unwrap().iter().find(|d| d["action"] == "srm_flagged").expect("srm_flagged decision");
    assert_eq!(flagged["actor"], "analyzer");
    let (_, e) = app.request("GET", "/v1/experiments/srm", Some(&app.read_key), None).await;
    assert_eq!(e["status"], "running");
}
on_both_backends!(a_lost_share_of_one_arms_exposures_is_flagged_and_blocks_promotion);

/// CUPED: the covariate is each unit's revenue in the 30 days before its exposure, read from
/// the rewards of another experiment; the analysis uses it and θ matches the data.
async fn a_pre_exposure_covariate_from_other_experiments_drives_cuped(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut pre = definition("pre");
    pre["primary_metric"] = json!({"name": "revenue", "kind": "revenue", "window": "1h"});
    pre["guardrails"] = json!([]);
    app.create_experiment(&pre).await;
    let mut main = definition("main");
    main["arms"] = json!([{"key": "a", "control": true}, {"key": "b"}]);
    main["primary_metric"] = json!({"name": "revenue", "kind": "revenue", "window": "2s"});
    main["guardrails"] = json!([]);
    main["analysis"] = json!({"covariate": "revenue", "auto_promote": false});
    app.create_experiment(&main).await;
    let units = 240;
    let history = app.assign_many("pre", (0..units).map(|u| format!("c-{u}"))).await;
    let past: Vec<f64> = (0..units).map(|u| 20.0 + (u % 37) as f64).collect();
    app.reward_many(
        history
            .iter()
            .zip(&past)
            .enumerate()
            .map(|(u, (a, x))| {
                json!({"exposure_id": a["exposure_id"], "metric": "revenue", "value": x,
                                      "idempotency_key": format!("pre-{u}")})
            })
            .collect(),
    )
    .await;
    let now = app.assign_many("main", (0..units).map(|u| format!("c-{u}"))).await;
    // Spend tracks past spend (θ = 1) plus a little noise; treatment adds 2.
    app.reward_many(
        now.iter()
            .zip(&past)
            .enumerate()
            .map(|(u, (a, x))| {
                let lift = if a["arm"] == "b" { 2.0 } else { 0.0 };
                let y = x + lift + ((u * 7) % 5) as f64 - 2.0;
                json!({"exposure_id": a["exposure_id"], "metric": "revenue", "value": y,
                       "idempotency_key": format!("main-{u}")})
            })
            .collect(),
    )
    .await;
    actix_web::rt::time::sleep(std::time::Duration::from_millis(2500)).await;
    app.analyze(strategist::store::now());
    let (s, v) = results(&app, "main", "").await;
    assert_eq!(s, 200, "{v}");
    let m = &v["analysis"]["metrics"][0];
    assert_eq!(m["estimator"], "cuped", "{m}");
    let theta = m["cuped_theta"].as_f64().unwrap();
    assert!((theta - 1.0).abs() < 0.1, "θ = {theta}");
    let b = arm_row(&v, "revenue", "b");
    let uplift = b["uplift_absolute"]["point"].as_f64().unwrap();
    assert!((uplift - 2.0).abs() < 0.6, "CUPED recovers the +2 lift: {b}");
    let ci = &b["uplift_absolute"]["fixed_horizon_interval"];
    assert!(ci["upper"].as_f64().unwrap() - ci["lower"].as_f64().unwrap() < 2.0, "tight: {b}");
}
on_both_backends!(a_pre_exposure_covariate_from_other_experiments_drives_cuped);

/// Futility: when every arm's interval excludes the minimum lift worth having, the analyzer
/// stops the experiment (control is served) and records why.
async fn an_experiment_that_cannot_reach_its_mde_is_stopped_for_futility(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("futile");
    def["arms"] = json!([{"key": "a", "control": true}, {"key": "b"}]);
    def["analysis"] = json!({"mde": 0.6, "sequential_tuning_n": 2000});
    app.create_experiment(&def).await;
    let rates = HashMap::from([("a", 0.3), ("b", 0.3)]);
    traffic(&app, "futile", "z", 2000, &rates).await;
    let report = app.analyze(later(2));
    assert_eq!(report.stopped, vec!["futile".to_string()], "{report:?}");
    let (_, v) = results(&app, "futile", "").await;
    assert_eq!(v["analysis"]["decision"]["state"]["kind"], "futile", "{}", v["analysis"]["decision"]);
    let (_, e) = app.request("GET", "/v1/experiments/futile", Some(&app.read_key), None).await;
    assert_eq!(e["status"], "stopped");
    let (_, d) = app.assign(json!({"experiment": "futile", "unit_id": "after"})).await;
    assert_eq!((d["arm"].as_str(), d["logged"].as_bool()), (Some("a"), Some(false)));
    let (_, log) = app.request("GET", "/v1/experiments/futile/decisions", Some(&app.admin_key), None).await;
    let stop = log.as_array().unwrap().iter().find(|d| d["action"] == "stop").expect("a stop decision");
    assert_eq!((stop["actor"].as_str(), stop["details"]["futility"].as_bool()), (Some("analyzer"), Some(true)));
    assert!(stop["details"]["statistics"]["analysis"]["metrics"].is_array());
}
on_both_backends!(an_experiment_that_cannot_reach_its_mde_is_stopped_for_futility);

/// A sticky experiment is analysed per unit: only each unit's first exposure counts (the
/// draw that assigned it), with the rewards of all its exposures inside the window. Repeat
/// visits logged under a later, shifted PMF do not fake a sample ratio mismatch.
async fn sticky_experiments_are_analysed_per_unit(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut def = definition("sticky");
    def["arms"] = json!([{"key": "a", "control": true}, {"key": "b"}]);
    def["sticky"] = json!(true);
    def["policy"] = json!({"kind": "thompson_beta"});
    def["min_propensity"] = json!(0.05);
    def["analysis"] = json!({"auto_promote": false});
    app.create_experiment(&def).await;
    let units = 300;
    let first = app.assign_many("sticky", (0..units).map(|u| format!("v-{u}"))).await;
    let arm_of: Vec<String> = first.iter().map(|a| a["arm"].as_str().unwrap().to_string()).collect();
    // b converts far better: the learner shifts the PMF towards b.
    let mut rewards = Vec::new();
    for (u, a) in first.iter().enumerate() {
        if a["arm"] == "b" && u % 2 == 0 {
            rewards.push(json!({"exposure_id": a["exposure_id"], "metric": "purchase", "value": 1,
                                "idempotency_key": format!("first-{u}")}));
        }
    }
    app.reward_many(rewards).await;
    app.learn();
    let pmf_b = app.state.registry.load().get("sticky").unwrap().policy_version;
    assert!(pmf_b > 1, "a new snapshot is served");
    // Every unit comes back twice, keeps its arm, and control units convert on their last visit.
    for round in 0..2 {
        let again = app.assign_many("sticky", (0..units).map(|u| format!("v-{u}"))).await;
        for (u, a) in again.iter().enumerate() {
            assert_eq!(a["arm"].as_str().unwrap(), arm_of[u], "sticky");
        }
        if round == 1 {
            let rewards = (0..units)
                .filter(|u| arm_of[*u] == "a" && u % 5 == 0)
                .map(|u| {
                    json!({"unit_id": format!("v-{u}"), "experiment": "sticky", "metric": "purchase",
                                "value": 1, "idempotency_key": format!("later-{u}")})
                })
                .collect();
            app.reward_many(rewards).await;
        }
    }
    app.analyze(later(2));
    let (_, v) = results(&app, "sticky", "").await;
    let count = |arm: &str| arm_of.iter().filter(|a| *a == arm).count() as u64;
    for arm in ["a", "b"] {
        assert_eq!(arm_row(&v, "purchase", arm)["exposures_mature"].as_u64(), Some(count(arm)), "{arm}: one per unit");
    }
    let conv_b = (0..units).filter(|u| arm_of[*u] == "b" && u % 2 == 0).count() as u64;
    let conv_a = (0..units).filter(|u| arm_of[*u] == "a" && u % 5 == 0).count() as u64;
    assert_eq!(arm_row(&v, "purchase", "b")["conversions"].as_u64(), Some(conv_b));
    assert_eq!(arm_row(&v, "purchase", "a")["conversions"].as_u64(), Some(conv_a), "a later visit's conversion counts");
    assert_eq!(v["analysis"]["srm"]["flagged"], false, "{}", v["analysis"]["srm"]);
    let observed: u64 = v["analysis"]["srm"]["observed"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).sum();
    assert_eq!(observed, units as u64);
}
on_both_backends!(sticky_experiments_are_analysed_per_unit);
