//! Charts and the weekly uplift report end to end: traffic and rewards through the API,
//! the analyzer run at chosen times, then the charts endpoint, the report made on request
//! in every format (the numbers of CSV, JSON and Markdown agree with the HTML table), the
//! stored reports (listed, downloaded), bad input and scopes.

use chrono::{Duration, NaiveDateTime};
use serde_json::{json, Value};
use strategist::report::Week;

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

/// Arms a (control), b (a 10% coupon: cost_rate 0.1), c (free shipping: 5.0 per order);
/// conversion primary metric and a profit guardrail, 1-second windows so the analyzer can
/// run on real time within the same week.
fn shop(key: &str, name: &str) -> Value {
    json!({
        "key": key,
        "name": name,
        "arms": [
            {"key": "a", "control": true, "payload": {"banner": "none"}},
            {"key": "b", "cost_rate": 0.1, "payload": {"banner": "coupon"}},
            {"key": "c", "cost": 5.0, "payload": {"banner": "free_shipping"}}
        ],
        "policy": {"kind": "fixed"},
        "primary_metric": {"name": "purchase", "kind": "conversion", "window": "1s"},
        "guardrails": [{"name": "profit", "kind": "profit", "window": "1s"}],
        "min_propensity": 0.05,
        "reward_wait": "0s",
        "analysis": {"auto_promote": false, "min_sample_per_arm": 50},
        "status": "running"
    })
}

/// Assigns `units` units; a unit converts with its arm's rate (deterministic sequence) and
/// then buys for 40.0. Returns the number of exposures.
async fn traffic(app: &TestApp, key: &str, prefix: &str, units: usize) -> usize {
    let rate = |arm: &str| match arm {
        "a" => 0.10,
        "b" => 0.30,
        _ => 0.15,
    };
    let answers = app.assign_many(key, (0..units).map(|u| format!("{prefix}-{u}"))).await;
    let mut rewards = Vec::new();
    for (u, a) in answers.iter().enumerate() {
        let arm = a["arm"].as_str().unwrap();
        if (u as f64 * 0.618_033_988_75).fract() < rate(arm) {
            rewards.push(json!({"exposure_id": a["exposure_id"], "metric": "purchase", "value": 1,
                                "idempotency_key": format!("{prefix}-p-{u}")}));
            rewards.push(json!({"exposure_id": a["exposure_id"], "metric": "profit", "value": 40.0,
                                "idempotency_key": format!("{prefix}-m-{u}")}));
        }
    }
    app.reward_many(rewards).await;
    answers.len()
}

fn secs_later(t: NaiveDateTime, s: i64) -> NaiveDateTime {
    t + Duration::seconds(s)
}

/// Two rounds of traffic, each followed by an analyzer run once its windows closed.
/// Returns the time of the last analysis.
async fn two_looks(app: &TestApp, key: &str) -> NaiveDateTime {
    traffic(app, key, "r1", 600).await;
    let t0 = strategist::store::now();
    let r = app.analyze(secs_later(t0, 3));
    assert_eq!(r.analyses, 1, "{r:?}");
    traffic(app, key, "r2", 600).await;
    let t1 = secs_later(strategist::store::now(), 3);
    let r = app.analyze(t1);
    assert_eq!(r.analyses, 1, "{r:?}");
    t1
}

fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn get_text(app: &TestApp, path: &str, key: Option<&str>) -> (u16, String, String) {
    let mut req = app.client.get(format!("{}{}", app.address, path));
    if let Some(k) = key {
        req = req.insert_header(("Authorization", format!("Bearer {k}")));
    }
    let mut resp = req.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = resp.body().limit(32 * 1024 * 1024).await.expect("body");
    (status, ct, String::from_utf8(body.to_vec()).expect("UTF-8"))
}

async fn charts_endpoint_draws_the_four_charts_of_an_experiment(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&shop("charts", "Charts <b>test</b>")).await;
    let t_start = strategist::store::now() - Duration::minutes(1);
    let last = two_looks(&app, "charts").await;
    let from = rfc3339(t_start);
    let to = rfc3339(last + Duration::minutes(1));
    let path = format!("/v1/experiments/charts/charts?from={from}&to={to}");
    let (s, v) = app.request("GET", &path, Some(&app.read_key), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["experiment"], "charts");
    let charts = v["charts"].as_array().unwrap();
    let names: Vec<&str> = charts.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["allocation", "cumulative", "uplift", "p_best"]);
    for c in charts {
        let svg = c["svg"].as_str().unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(!c["title"].as_str().unwrap().is_empty());
        assert!(svg.contains("time (UTC)"), "the x axis is labelled: {svg}");
        assert!(!svg.contains("no data in this period"), "{}: {svg}", c["name"]);
        // Arm colours come from the definition's order (a, b, c), the same in every chart.
        assert!(svg.contains("#E69F00"), "arm b's colour in {}", c["name"]);
    }
    let alloc = charts[0]["svg"].as_str().unwrap();
    assert!(alloc.contains("share of exposures (%)") && alloc.contains(">a<") && alloc.contains(">c<"), "{alloc}");
    let uplift = charts[2]["svg"].as_str().unwrap();
    assert!(uplift.contains("relative uplift vs control (%)"), "{uplift}");
    assert!(uplift.contains("fill-opacity=\"0.18\""), "the always-valid band is drawn: {uplift}");
    assert!(uplift.contains("b vs control") && !uplift.contains(">a vs control<"));
    assert!(charts[1]["svg"].as_str().unwrap().contains("purchase rate (%)"));

    // Default range: the last 7 days up to now (the analyses above are in the future, the
    // traffic is not).
    let (s, v) = app.request("GET", "/v1/experiments/charts/charts", Some(&app.admin_key), None).await;
    assert_eq!(s, 200, "{v}");
    assert!(!v["charts"][0]["svg"].as_str().unwrap().contains("no data"), "allocation over the last week");

    // Bad input, unknown experiment, scopes.
    for bad in ["?from=yesterday", "?to=2026-13-01T00:00:00Z", &format!("?from={to}&to={from}"), "?colour=red",
                "?from=2026-01-01T00:00:00Z&to=2026-11-01T00:00:00Z"] {
        let (s, v) = app.request("GET", &format!("/v1/experiments/charts/charts{bad}"), Some(&app.read_key), None).await;
        assert_eq!((s, v["error"].as_str()), (422, Some("invalid_query")), "{bad}: {v}");
    }
    let (s, v) = app.request("GET", "/v1/experiments/nope/charts", Some(&app.read_key), None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("experiment_not_found")), "{v}");
    let (s, _) = app.request("GET", "/v1/experiments/charts/charts", Some(&app.assign_key), None).await;
    assert_eq!(s, 403);
    let (s, _) = app.request("GET", "/v1/experiments/charts/charts", None, None).await;
    assert_eq!(s, 401);
}
on_both_backends!(charts_endpoint_draws_the_four_charts_of_an_experiment);
