//! The Grafana dashboards in `dashboards/` against the running app: every metric a PromQL
//! expression (or a template variable) queries is exported by `/metrics` after ordinary
//! traffic, and every file is a Grafana dashboard model that imports (title, uid, panels with
//! targets, a Prometheus datasource variable).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::helpers::{definition, spawn_app, Backend};
use crate::on_both_backends;

/// Every `dashboards/*.json`, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let doc = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), doc));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out
}

/// Panels, rows' nested panels included.
fn panels(doc: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in doc["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every PromQL text of a dashboard, with where it is: panel target `expr`s and the
/// queries of template variables.
fn queries(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(doc) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("panel `{}`", p["title"].as_str().unwrap_or("?")), e.to_string()));
            }
        }
    }
    for v in doc["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default();
            out.push((format!("variable `{}`", v["name"].as_str().unwrap_or("?")), q.to_string()));
        }
    }
    out
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const OPERATORS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Number,
    Punct(char),
}

/// Tokens of a PromQL expression with string literals, label matchers (`{…}`), range and
/// subquery brackets (`[…]`) and Grafana variables (`$x`, `${x}`, `$__rate_interval`)
/// removed: what is left names metrics, functions, keywords and labels of `by (…)` lists.
fn tokens(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // Skips to the character after the `close` that balances the opener at `i`.
    let skip_group = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                '"' | '\'' | '`' => {
                    let q = chars[i];
                    i += 1;
                    while i < chars.len() && chars[i] != q {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(i, '{', '}');
            } else {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // Numbers, durations (5m, 1h30m), exponents (1e3), hex.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Number);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// The metric names a PromQL expression selects (as written: `x_bucket`, not `x`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let t = tokens(expr);
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < t.len() {
        if let Token::Ident(id) = &t[i] {
            let next = t.get(i + 1);
            let lower = id.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) && next == Some(&Token::Punct('(')) {
                // Skip the label list.
                while i < t.len() && t[i] != Token::Punct(')') {
                    i += 1;
                }
            } else if next == Some(&Token::Punct('(')) || OPERATORS.contains(&lower.as_str()) {
                // A function call, or an operator keyword.
            } else if AGGREGATIONS.contains(&lower.as_str())
                && matches!(next, Some(Token::Ident(k)) if LABEL_LISTS.contains(&k.to_ascii_lowercase().as_str()))
            {
                // `sum by (…) (…)`: the aggregation comes before its label list.
            } else {
                names.insert(id.clone());
            }
        }
        i += 1;
    }
    names
}

/// The metrics a template-variable query names: `label_values(METRIC_SELECTOR, label)` (a
/// one-argument `label_values(label)` names none), `query_result(EXPR)` or
/// `metrics(REGEX)` (none).
fn variable_metric_names(query: &str) -> BTreeSet<String> {
    let q = query.trim();
    if let Some(args) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
        match args.rsplit_once(',') {
            Some((selector, _label)) => metric_names(selector),
            None => BTreeSet::new(),
        }
    } else if let Some(expr) = q.strip_prefix("query_result(").and_then(|r| r.strip_suffix(')')) {
        metric_names(expr)
    } else if q.starts_with("metrics(") || q.starts_with("label_names(") {
        BTreeSet::new()
    } else {
        metric_names(q)
    }
}

/// `/metrics` as declared families (`# TYPE name kind`) and the series names that carry
/// samples.
struct Exposition {
    families: BTreeMap<String, String>,
    series: BTreeSet<String>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut families = BTreeMap::new();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                families.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            series.insert(line[..end].to_string());
        }
    }
    Exposition { families, series }
}

impl Exposition {
    /// The family a queried series name belongs to: itself for counters and gauges; for
    /// `_bucket` the histogram it is a bucket of; for `_sum`/`_count` the histogram or summary.
    /// `None` when `/metrics` declares no such family.
    fn family_of(&self, name: &str) -> Option<String> {
        if let Some(kind) = self.families.get(name) {
            // A histogram or summary has no series under its bare name.
            return (kind != "histogram" && kind != "summary").then(|| name.to_string());
        }
        for (suffix, kinds) in [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                if self.families.get(base).is_some_and(|k| kinds.contains(&k.as_str())) {
                    return Some(base.to_string());
                }
            }
        }
        None
    }
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"histogram_quantile(0.99, sum by (experiment, le) (rate(strategist_decision_duration_seconds_bucket{experiment=~"$experiment", logged="true"}[$__rate_interval])))"#,
            &["strategist_decision_duration_seconds_bucket"],
        ),
        (
            "sum(rate(a_sum{instance=~\"$instance\"}[5m])) / sum without (instance) (rate(a_count[1h:1m] offset 5m))",
            &["a_count", "a_sum"],
        ),
        (r#"time() - max(x_seconds{i=~"${instance}"} > 0)"#, &["x_seconds"]),
        (r#"up == 1 and on (job) group_left (version) build_info{a="b{c}"}"#, &["build_info", "up"]),
        (r#"{__name__="ignored"} or vector(1) unless count by (le) (b)"#, &["b"]),
        ("sum(x) by (experiment) * 1e3 + y:recorded:rate5m", &["x", "y:recorded:rate5m"]),
    ];
    for (expr, want) in cases {
        let got = metric_names(expr);
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{expr}");
    }
    assert_eq!(
        variable_metric_names("label_values(strategist_decisions_total{a=\"b\"}, experiment)"),
        BTreeSet::from(["strategist_decisions_total".to_string()])
    );
    assert!(variable_metric_names("label_values(experiment)").is_empty());
}

#[test]
fn histogram_series_map_to_their_family_and_bare_histograms_do_not() {
    let e = parse_exposition(
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_sum 0\nh_count 0\n\
         # TYPE c_count counter\nc_count 3\n# TYPE g gauge\ng 1\n",
    );
    assert_eq!(e.family_of("h_bucket").as_deref(), Some("h"));
    assert_eq!(e.family_of("h_sum").as_deref(), Some("h"));
    assert_eq!(e.family_of("h_count").as_deref(), Some("h"));
    assert_eq!(e.family_of("h"), None, "a histogram is queried through its series");
    // A counter whose own name ends in `_count` is itself, not a histogram's count.
    assert_eq!(e.family_of("c_count").as_deref(), Some("c_count"));
    assert_eq!(e.family_of("c"), None);
    assert_eq!(e.family_of("g").as_deref(), Some("g"));
    assert_eq!(e.family_of("g_bucket"), None);
    assert!(e.series.contains("h_bucket") && e.series.contains("g") && !e.series.contains("h"));
}

#[test]
fn every_dashboard_is_a_grafana_dashboard_model() {
    let mut uids = BTreeSet::new();
    for (file, doc) in dashboards() {
        let title = doc["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "{file}: title");
        let uid = doc["uid"].as_str().unwrap_or_default();
        assert!(
            (1..=40).contains(&uid.len()) && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{file}: uid `{uid}` (Grafana: at most 40 characters, letters, digits, - and _)"
        );
        assert!(uids.insert(uid.to_string()), "{file}: uid `{uid}` used twice");
        assert!(doc["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "{file}: schemaVersion");
        assert!(doc["id"].is_null(), "{file}: `id` must be null so that import creates the dashboard");
        // A datasource variable (works for UI import and file provisioning alike) or a
        // `__inputs` entry for import.
        let vars = doc["templating"]["list"].as_array().cloned().unwrap_or_default();
        let ds_var = vars.iter().find(|v| v["type"] == "datasource" && v["query"] == "prometheus");
        let ds_input = doc["__inputs"].as_array().into_iter().flatten().find(|i| i["pluginId"] == "prometheus");
        let ds_ref = match (ds_var, ds_input) {
            (Some(v), _) => format!("${{{}}}", v["name"].as_str().unwrap()),
            (None, Some(i)) => format!("${{{}}}", i["name"].as_str().unwrap()),
            (None, None) => panic!("{file}: no Prometheus datasource variable or input"),
        };
        let all = panels(&doc);
        let mut ids = BTreeSet::new();
        let mut graphs = 0;
        for p in &all {
            let ptitle = p["title"].as_str().unwrap_or_default();
            assert!(!ptitle.is_empty(), "{file}: a panel without a title");
            assert!(p["type"].is_string(), "{file}/{ptitle}: type");
            assert!(ids.insert(p["id"].as_u64().expect("panel id")), "{file}/{ptitle}: duplicate panel id");
            let g = &p["gridPos"];
            let (x, w, h) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
            assert!(g["y"].is_u64() && w >= 1 && h >= 1 && x + w <= 24, "{file}/{ptitle}: gridPos {g}");
            if p["type"] == "row" {
                continue;
            }
            graphs += 1;
            assert_eq!(p["datasource"]["uid"], ds_ref, "{file}/{ptitle}: panel datasource");
            let targets = p["targets"].as_array().filter(|t| !t.is_empty());
            let targets = targets.unwrap_or_else(|| panic!("{file}/{ptitle}: no targets"));
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(refs.insert(t["refId"].as_str().expect("refId")), "{file}/{ptitle}: duplicate refId");
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{file}/{ptitle}: empty expr");
                assert!(!metric_names(expr).is_empty(), "{file}/{ptitle}: `{expr}` queries no metric");
            }
        }
        assert!(graphs > 0, "{file}: no panels");
    }
}

async fn every_metric_the_dashboards_query_is_exported(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_experiment(&definition("dash")).await;
    // Decisions (single and batch), rewards (stored and a duplicate), an error, unlogged answers.
    let (s, v) = app.assign(json!({"experiment": "dash", "unit_id": "u-1"})).await;
    assert_eq!(s, 200, "{v}");
    let id = v["exposure_id"].as_str().unwrap().to_string();
    app.assign_many("dash", (2..40).map(|i| format!("u-{i}"))).await;
    let reward = json!({"exposure_id": id, "metric": "purchase", "value": 1, "idempotency_key": "o-1"});
    for _ in 0..2 {
        let (s, v) = app.reward(reward.clone()).await;
        assert_eq!(s, 200, "{v}");
    }
    // A neural policy, so the scorer's series exist.
    let mut neural = definition("dash-neural");
    neural["features"] = json!({"categorical": [{"name": "device", "values": ["mobile", "desktop"]}]});
    neural["policy"] = json!({"kind": "neural_pg", "features": 3, "hidden": 4, "embedding": 4});
    app.create_experiment(&neural).await;
    app.assign_many("dash-neural", (0..5).map(|i| format!("n-{i}"))).await;
    let (s, v) = app.assign(json!({"experiment": "nope", "unit_id": "u"})).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("experiment_not_found")));
    let (s, _) = app.action("dash", "pause", json!({"reason": "dashboards test"})).await;
    assert_eq!(s, 200);
    let (s, v) = app.assign(json!({"experiment": "dash", "unit_id": "u-1"})).await;
    assert_eq!((s, v["logged"].as_bool()), (200, Some(false)), "{v}");
    // One learner and one analyzer run through the functions the background loops run.
    let metrics = &app.state.metrics;
    strategist::learner::run_recorded(&app.db, metrics, strategist::store::now()).expect("learner");
    strategist::analysis::job::run_recorded(&app.db, metrics, strategist::store::now(), std::time::Duration::ZERO)
        .expect("analyzer");
    assert!(metrics.learner_last_run.get() > 0 && metrics.analyzer_last_run.get() > 0, "lag gauges are set");

    let mut resp = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    let text = String::from_utf8(resp.body().limit(1 << 22).await.unwrap().to_vec()).unwrap();
    let exposition = parse_exposition(&text);
    for needle in [
        "strategist_decision_duration_seconds_count{experiment=\"dash\",logged=\"true\"} 39",
        "strategist_decision_duration_seconds_count{experiment=\"dash\",logged=\"false\"} 1",
        "strategist_background_runs_total{outcome=\"completed\",task=\"learner\"} 1",
        "strategist_background_runs_total{outcome=\"completed\",task=\"analyzer\"} 1",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }

    let mut queried = BTreeSet::new();
    let mut missing = Vec::new();
    for (file, doc) in dashboards() {
        for (place, query) in queries(&doc) {
            let names =
                if place.starts_with("variable") { variable_metric_names(&query) } else { metric_names(&query) };
            for name in names {
                match exposition.family_of(&name) {
                    Some(family) if exposition.series.contains(&name) => {
                        queried.insert(family);
                    }
                    _ => missing.push(format!("{file}, {place}: `{name}` (in `{query}`)")),
                }
            }
        }
    }
    assert!(missing.is_empty(), "queried but not exported by /metrics:\n  {}\n\n{text}", missing.join("\n  "));
    // What the operators asked the dashboards to show (issue 6).
    for family in [
        "strategist_decisions_total",
        "strategist_decision_duration_seconds",
        "strategist_writer_batch_size",
        "strategist_writer_queue_depth",
        "strategist_writer_commit_seconds",
        "strategist_learner_last_run_timestamp_seconds",
        "strategist_analyzer_last_run_timestamp_seconds",
        "strategist_errors_total",
        "strategist_http_request_duration_seconds",
        "strategist_http_responses_total",
        "strategist_database_up",
        "strategist_scoring_batch_size",
        "strategist_scoring_queue_depth",
    ] {
        assert!(queried.contains(family), "no dashboard shows `{family}`");
    }
}
on_both_backends!(every_metric_the_dashboards_query_is_exported);
