//! Charts and the weekly uplift report end to end: traffic and rewards through the API,
//! the analyzer run at chosen times, then the charts endpoint, the report made on request
//! in every format (the numbers of CSV, JSON and Markdown agree with the HTML table), the
//! stored reports (listed, downloaded), bad input and scopes.

use std::collections::HashMap;

use chrono::{Duration, NaiveDateTime};
use serde_json::{json, Value};
use strategist::report::Week;

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

/// Arms a (control), b (a 10% coupon: cost_rate 0.1), c (free shipping: 5.0 per order);
/// conversion primary metric and a profit guardrail, 1-minute windows (the analyzer is run
/// a minute ahead of real time, so within the same week).
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
        "primary_metric": {"name": "purchase", "kind": "conversion", "window": "1m"},
        "guardrails": [{"name": "profit", "kind": "profit", "window": "1m"}],
        "min_propensity": 0.05,
        "reward_wait": "0s",
        "analysis": {"auto_promote": false, "min_sample_per_arm": 50},
        "status": "running"
    })
}

/// Assigns `units` units; a unit converts with its arm's rate (deterministic sequence) and
/// then buys for 40.0. Adds (exposures, conversions) per arm into `counts`.
async fn traffic(app: &TestApp, key: &str, prefix: &str, units: usize, counts: &mut HashMap<String, (u64, u64)>) {
    let rate = |arm: &str| match arm {
        "a" => 0.10,
        "b" => 0.30,
        _ => 0.15,
    };
    let answers = app.assign_many(key, (0..units).map(|u| format!("{prefix}-{u}"))).await;
    let mut rewards = Vec::new();
    for (u, a) in answers.iter().enumerate() {
        let arm = a["arm"].as_str().unwrap();
        let entry = counts.entry(arm.to_string()).or_default();
        entry.0 += 1;
        if (u as f64 * 0.618_033_988_75).fract() < rate(arm) {
            entry.1 += 1;
            rewards.push(json!({"exposure_id": a["exposure_id"], "metric": "purchase", "value": 1,
                                "idempotency_key": format!("{prefix}-p-{u}")}));
            rewards.push(json!({"exposure_id": a["exposure_id"], "metric": "profit", "value": 40.0,
                                "idempotency_key": format!("{prefix}-m-{u}")}));
        }
    }
    app.reward_many(rewards).await;
}

fn secs_later(t: NaiveDateTime, s: i64) -> NaiveDateTime {
    t + Duration::seconds(s)
}

/// Two rounds of traffic, then the analyzer at two times a minute after each round (when
/// its windows have closed): the first look sees round 1 mature, the second both. Returns
/// the time of the last analysis and (exposures, conversions) per arm.
async fn two_looks(app: &TestApp, key: &str) -> (NaiveDateTime, HashMap<String, (u64, u64)>) {
    let mut counts = HashMap::new();
    traffic(app, key, "r1", 600, &mut counts).await;
    let ta = strategist::store::now();
    traffic(app, key, "r2", 600, &mut counts).await;
    let tb = strategist::store::now();
    for t in [secs_later(ta, 61), secs_later(tb, 61)] {
        let r = app.analyze(t);
        assert_eq!(r.analyses, 1, "{r:?}");
    }
    (secs_later(tb, 61), counts)
}

/// Waits out the last minutes of an ISO week, so a test's traffic and analyses (a minute
/// ahead) fall in one week.
async fn away_from_the_week_end() {
    let now = strategist::store::now();
    let end = Week::containing(now).end();
    if end - now < Duration::minutes(3) {
        let wait = (end - now + Duration::seconds(1)).to_std().unwrap();
        actix_web::rt::time::sleep(wait).await;
    }
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
    let (last, _) = two_looks(&app, "charts").await;
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
    for bad in [
        "?from=yesterday",
        "?to=2026-13-01T00:00:00Z",
        &format!("?from={to}&to={from}"),
        "?colour=red",
        "?from=2026-01-01T00:00:00Z&to=2026-11-01T00:00:00Z",
    ] {
        let (s, v) =
            app.request("GET", &format!("/v1/experiments/charts/charts{bad}"), Some(&app.read_key), None).await;
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

/// A minimal RFC 4180 reader (quoted fields, doubled quotes, CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// The JSON value a CSV arm column carries (percent columns scaled to percent).
fn json_number(arm: &Value, column: &str) -> Option<f64> {
    let effect = |name: &str, tail: &str| -> Option<f64> {
        let e = &arm[name];
        match tail {
            "" => e["point"].as_f64(),
            "av_lower" => e["always_valid"]["lower"].as_f64(),
            "av_upper" => e["always_valid"]["upper"].as_f64(),
            "fh_lower" => e["fixed_horizon"]["lower"].as_f64(),
            "fh_upper" => e["fixed_horizon"]["upper"].as_f64(),
            other => panic!("{other}"),
        }
    };
    match column {
        "uplift_abs" => effect("uplift_absolute", ""),
        "uplift_rel_pct" => effect("uplift_relative", "").map(|v| v * 100.0),
        "prob_best_pct" => arm["prob_best"].as_f64().map(|v| v * 100.0),
        c if c.starts_with("uplift_abs_") => effect("uplift_absolute", &c["uplift_abs_".len()..]),
        c if c.starts_with("uplift_rel_") => {
            effect("uplift_relative", c["uplift_rel_".len()..].trim_end_matches("_pct")).map(|v| v * 100.0)
        }
        c => arm[c].as_f64(),
    }
}

/// Half a unit of the last decimal a number was written with (5% for scientific notation).
fn rounding_tolerance(text: &str, v: f64) -> f64 {
    if text.contains('e') {
        return v.abs() * 0.05;
    }
    let decimals = text.split_once('.').map(|(_, d)| d.len()).unwrap_or(0) as i32;
    0.5 * 10f64.powi(-decimals) + 1e-9
}

/// The HTML of one arm's row in one experiment's section.
fn html_row<'a>(html: &'a str, experiment: &str, arm: &str) -> &'a str {
    let section = &html[html.find(&format!("id=\"exp-{experiment}\"")).expect("the experiment's section")..];
    let row = &section[section.find(&format!("<tr data-arm=\"{arm}\">")).expect("the arm's row")..];
    &row[..row.find("</tr>").unwrap()]
}

async fn weekly_report_in_every_format_carries_the_same_numbers(backend: Backend) {
    away_from_the_week_end().await;
    let app = spawn_app(backend).await;
    let name = "Checkout <script>alert(1)</script> & \"offers\"";
    app.create_experiment(&shop("shop", name)).await;
    let mut draft = shop("idle", "Never started");
    draft["status"] = json!("draft");
    app.create_experiment(&draft).await;
    let (_, counts) = two_looks(&app, "shop").await;
    let (s, v) = app.action("shop", "pause", json!({"reason": "checking the coupon stock"})).await;
    assert_eq!(s, 200, "{v}");
    let week = Week::containing(strategist::store::now()).to_string();

    let get = |format: &str, extra: &str| format!("/v1/reports/weekly?week={week}&format={format}{extra}");
    let (s, ct, html) = get_text(&app, &get("html", ""), Some(&app.read_key)).await;
    assert_eq!(s, 200, "{html}");
    assert!(ct.starts_with("text/html"), "{ct}");
    // Self-contained: nothing loaded from elsewhere, no script; the experiment's name escaped.
    let lower = html.to_ascii_lowercase();
    for attr in ["src=", "href="] {
        for (i, _) in lower.match_indices(attr) {
            let value = lower[i + attr.len()..].trim_start_matches(['"', '\'']);
            assert!(
                !value.starts_with("http:") && !value.starts_with("https:") && !value.starts_with("//"),
                "external resource at {}",
                &html[i..(i + 80).min(html.len())]
            );
        }
    }
    assert!(
        !lower.contains("<script") && !lower.contains("@import") && !lower.contains("url("),
        "no scripts or imports"
    );
    assert!(html.contains("Checkout &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;offers&quot;"));
    assert_eq!(html.matches("<svg").count(), 4, "four charts for the one experiment that ran");
    assert!(html.contains("@media print"));
    assert!(!html.contains("id=\"exp-idle\""), "a draft that never ran is not in the report");
    assert!(html.contains("checking the coupon stock"), "the week's decisions with their reasons");

    let (s, ct, json_text) = get_text(&app, &get("json", ""), Some(&app.read_key)).await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("application/json"), "{ct}");
    let report: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(report["week"], week.as_str());
    let exps = report["experiments"].as_array().unwrap();
    assert_eq!(exps.len(), 1, "{}", report["experiments"]);
    let e = &exps[0];
    assert_eq!(e["key"], "shop");
    assert_eq!(e["status"], "paused");
    assert_eq!(e["money_metric"], "profit");
    assert!(e["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["action"] == "pause" && d["actor"].as_str().unwrap().starts_with("key:")));
    let arms = e["arms"].as_array().unwrap();
    assert_eq!(arms.iter().map(|a| a["arm"].as_str().unwrap()).collect::<Vec<_>>(), ["a", "b", "c"]);
    // The week's numbers against what the test sent.
    let (mut profits, mut exposures) = (HashMap::new(), HashMap::new());
    for a in arms {
        let arm = a["arm"].as_str().unwrap();
        let (n, conv) = counts[arm];
        assert_eq!(a["exposures"].as_u64(), Some(n), "{a}");
        assert_eq!(a["conversions"].as_u64(), Some(conv), "{a}");
        let revenue = 40.0 * conv as f64;
        let cost = match arm {
            "a" => 0.0,
            "b" => 0.1 * revenue,
            _ => 5.0 * conv as f64,
        };
        assert!((a["revenue"].as_f64().unwrap() - revenue).abs() < 1e-6, "{a}");
        assert!((a["cost"].as_f64().unwrap() - cost).abs() < 1e-6, "{a}");
        assert!((a["profit"].as_f64().unwrap() - (revenue - cost)).abs() < 1e-6, "{a}");
        assert_eq!(a["mature_exposures"].as_u64(), Some(n), "the last look saw both rounds mature: {a}");
        profits.insert(arm, revenue - cost);
        exposures.insert(arm, n as f64);
    }
    let control_ppe = profits["a"] / exposures["a"];
    let want: f64 = ["b", "c"].iter().map(|k| profits[k] - exposures[k] * control_ppe).sum();
    assert!((e["incremental_profit"].as_f64().unwrap() - want).abs() < 1e-6, "{e}");
    assert_eq!(e["series"].as_array().unwrap().len(), 2, "two analyses in the week");
    let b = &arms[1];
    for field in ["mean", "p_always_valid", "p_fixed_horizon", "p_holm_adjusted", "prob_best"] {
        assert!(b[field].is_number(), "{field}: {b}");
    }
    assert!(
        b["uplift_relative"]["always_valid"]["lower"].is_number()
            && b["uplift_absolute"]["fixed_horizon"]["upper"].is_number(),
        "{b}"
    );
    assert_eq!(e["leader"], "b", "{e}");

    // CSV: the same numbers as the JSON (to their rounding) and as the HTML table cells.
    let (s, ct, csv) = get_text(&app, &get("csv", ""), Some(&app.read_key)).await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/csv"), "{ct}");
    let rows = parse_csv(&csv);
    let header = &rows[0];
    assert_eq!(rows.len(), 4, "a header and one row per arm: {csv}");
    let (_, _, md) = get_text(&app, &get("md", ""), Some(&app.read_key)).await;
    let mut compared = 0;
    for row in &rows[1..] {
        assert_eq!(row.len(), header.len());
        let col = |name: &str| &row[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(col("experiment_name"), name);
        let arm_key = col("arm").as_str();
        let arm = arms.iter().find(|a| a["arm"] == arm_key).unwrap();
        let html_cells = html_row(&html, "shop", arm_key);
        let md_row = md.lines().find(|l| l.starts_with(&format!("| {arm_key}"))).expect("the arm's Markdown row");
        for (h, text) in header.iter().zip(row).skip(9) {
            let want = json_number(arm, h);
            if text.is_empty() {
                assert!(want.is_none(), "{arm_key} {h}: CSV empty, JSON {want:?}");
                continue;
            }
            let got: f64 = text.parse().unwrap_or_else(|_| panic!("{h} = {text}"));
            let want = want.unwrap_or_else(|| panic!("{arm_key} {h}: CSV {text}, JSON null"));
            assert!((got - want).abs() <= rounding_tolerance(text, want), "{arm_key} {h}: CSV {text}, JSON {want}");
            assert!(html_cells.contains(text.as_str()), "{arm_key} {h}: {text} not in the HTML row {html_cells}");
            assert!(md_row.contains(text.as_str()), "{arm_key} {h}: {text} not in the Markdown row {md_row}");
            compared += 1;
        }
    }
    assert!(compared >= 50, "only {compared} numbers compared");

    // One experiment only; bad input; scopes.
    let (s, v) = app.request("GET", &get("json", "&experiment=idle"), Some(&app.admin_key), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["experiments"].as_array().unwrap().len(), 1, "asked for by name, shown even if idle");
    for (q, status, code) in [
        ("?week=2026-48", 400, "invalid_week"),
        ("?week=2026-W54", 400, "invalid_week"),
        ("?week=2999-W01", 400, "invalid_week"),
        (&format!("?week={week}&format=pdf") as &str, 400, "invalid_format"),
        (&format!("?week={week}&colour=red"), 400, "invalid_query"),
        (&format!("?week={week}&experiment=nope"), 404, "experiment_not_found"),
    ] {
        let (s, v) = app.request("GET", &format!("/v1/reports/weekly{q}"), Some(&app.read_key), None).await;
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{q}: {v}");
    }
    let (s, _) = app.request("GET", &get("json", ""), Some(&app.assign_key), None).await;
    assert_eq!(s, 403);
    let (s, _) = app.request("GET", &get("json", ""), None, None).await;
    assert_eq!(s, 401);
    // Without a week: the last closed one, where nothing ran.
    let (s, v) = app.request("GET", "/v1/reports/weekly?format=json", Some(&app.read_key), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["week"], Week::last_closed(strategist::store::now()).to_string());
}
on_both_backends!(weekly_report_in_every_format_carries_the_same_numbers);

async fn stored_reports_are_written_once_per_week_listed_and_served_by_any_replica(backend: Backend) {
    away_from_the_week_end().await;
    let app = spawn_app(backend).await;
    app.create_experiment(&shop("stored", "Stored report")).await;
    two_looks(&app, "stored").await;
    let week = Week::containing(strategist::store::now());

    // The scheduled job, at the scheduled time after the week closes: writes it once.
    let schedule = strategist::report::job::Schedule::parse("mon 06:00").unwrap().unwrap();
    let due = week.end() + Duration::hours(6);
    let job = |at| strategist::report::job::run_once(&app.db, schedule, at).unwrap();
    // Before it is due, the due week is the one before.
    assert_eq!(job(due - Duration::minutes(1)), Some(week.previous()));
    assert_eq!(job(due), Some(week));
    assert_eq!(job(due + Duration::hours(1)), None, "already stored");

    let (s, v) = app.request("GET", "/v1/reports", Some(&app.read_key), None).await;
    assert_eq!(s, 200, "{v}");
    let listed = v.as_array().unwrap().iter().find(|w| w["week"] == week.to_string()).expect("the week is listed");
    let formats: Vec<&str> =
        listed["formats"].as_array().unwrap().iter().map(|f| f["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["csv", "html", "json", "md"]);
    assert!(listed["formats"].as_array().unwrap().iter().all(|f| f["bytes"].as_i64().unwrap() > 0));

    // Another replica over the same store serves it.
    let (replica, stop) = app.spawn_replica();
    let mut resp = app
        .client
        .get(format!("{replica}/v1/reports/{week}/html"))
        .insert_header(("Authorization", format!("Bearer {}", app.read_key)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let html = String::from_utf8(resp.body().limit(32 << 20).await.unwrap().to_vec()).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(html.contains("Stored report") && html.matches("<svg").count() == 4, "{}", &html[..html.len().min(500)]);
    let (s, v) = app.request("GET", &format!("/v1/reports/{week}/json"), Some(&app.read_key), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["experiments"][0]["key"], "stored");
    let (s, _, csv) = get_text(&app, &format!("/v1/reports/{week}/csv"), Some(&app.admin_key)).await;
    assert_eq!(s, 200);
    assert_eq!(parse_csv(&csv).len(), 4);

    for (path, status, code) in [
        ("/v1/reports/2020-W01/html", 404, "report_not_found"),
        ("/v1/reports/last-week/html", 400, "invalid_week"),
        (&format!("/v1/reports/{week}/pdf") as &str, 400, "invalid_format"),
    ] {
        let (s, v) = app.request("GET", path, Some(&app.read_key), None).await;
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{path}: {v}");
    }
    let (s, _) = app.request("GET", "/v1/reports", Some(&app.assign_key), None).await;
    assert_eq!(s, 403);
    let (s, _) = app.request("GET", &format!("/v1/reports/{week}/html"), Some(&app.assign_key), None).await;
    assert_eq!(s, 403);
}
on_both_backends!(stored_reports_are_written_once_per_week_listed_and_served_by_any_replica);
