//! The web dashboard end to end in a real browser: headless Chromium driven over the W3C
//! WebDriver protocol (chromedriver) by the small client below, written over `awc`. Each
//! test starts its own server (Postgres), chromedriver and Chromium profile, applies the
//! example experiments from `experiments/*.toml`, and saves a PNG screenshot of every page
//! it checks under `target/browser-artifacts/`. Without Chromium and chromedriver the tests
//! fail and say how to install them; they never skip. Two plain HTTP tests (both backends)
//! cover what the page relies on: `/v1/whoami` and the embedded files with their headers.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

/// How long one wait for the page may take before the test fails: generous, because a
/// loaded two-core machine starts Chromium slowly; this is a deadline, not a speed check.
const WAIT: Duration = Duration::from_secs(45);
/// The key WebDriver uses for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/browser-artifacts");
    dir
}

/// The first of `names` found as an executable file, from an environment override or PATH.
fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// Standard base64 (RFC 4648 §4, with padding) to bytes: WebDriver sends screenshots so.
fn base64_decode(text: &str) -> Vec<u8> {
    fn value(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: byte {other}"),
        }
    }
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // 4 symbols carry 3 bytes; a final group of 2 or 3 symbols carries 1 or 2.
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
}

#[test]
fn the_base64_decoder_matches_rfc_4648_test_vectors() {
    for (text, plain) in
        [("", ""), ("Zg==", "f"), ("Zm8=", "fo"), ("Zm9v", "foo"), ("Zm9vYg==", "foob"), ("Zm9vYmE=", "fooba")]
    {
        assert_eq!(base64_decode(text), plain.as_bytes(), "{text}");
    }
    assert_eq!(base64_decode("Zm9v\nYmFy"), b"foobar");
}

/// A chromedriver process, the Chromium session it drives, and a fresh profile directory.
struct Browser {
    client: awc::Client,
    driver: Child,
    port: u16,
    session: String,
    profile: PathBuf,
    name: &'static str,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    async fn launch(name: &'static str) -> Browser {
        let hint = "the browser tests need Chromium and chromedriver: \
                    `apt-get install -y chromium chromium-driver` (Debian/Ubuntu), \
                    or set STRATEGIST_CHROMIUM / STRATEGIST_CHROMEDRIVER to their paths";
        let chromium = find_program("STRATEGIST_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("Chromium not found; {hint}"));
        let chromedriver = find_program("STRATEGIST_CHROMEDRIVER", &["chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found; {hint}"));
        let profile = std::env::temp_dir().join(format!("strategist-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", profile.join("chromedriver.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {hint}", chromedriver.display()));
        let client = awc::Client::builder().timeout(Duration::from_secs(120)).finish();
        let mut browser = Browser { client, driver, port, session: String::new(), profile, name };
        let started = Instant::now();
        loop {
            if let Ok(v) = browser.call("GET", "/status", None).await {
                if v["ready"] == true {
                    break;
                }
            }
            if let Ok(Some(status)) = browser.driver.try_wait() {
                panic!("chromedriver exited at start ({status}); {hint}");
            }
            assert!(started.elapsed() < WAIT, "chromedriver did not become ready on port {port}");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", browser.profile.join("profile").display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.to_string_lossy(), "args": args},
        }}});
        let v = browser
            .call("POST", "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("Chromium ({}) did not start: {e}; {hint}", chromium.display()));
        browser.session = v["sessionId"].as_str().expect("session id").to_string();
        browser
    }

    /// One WebDriver command: its `value`, or the error WebDriver reported.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let req = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            "DELETE" => self.client.delete(url),
            other => panic!("method {other}"),
        };
        let mut resp = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .map_err(|e| format!("{method} {path}: {e}"))?;
        let bytes = resp.body().limit(64 << 20).await.map_err(|e| format!("{method} {path}: {e}"))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{method} {path}: not JSON: {e}"))?;
        if resp.status().is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("{method} {path}: {} {}", v["value"]["error"], v["value"]["message"]))
        }
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        match self.call(method, &full, body).await {
            Ok(v) => v,
            Err(e) => {
                self.screenshot("failure").await;
                panic!("{e}")
            }
        }
    }

    async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// Runs a script in the page (`arguments` are `args`) and returns its result.
    async fn exec(&self, script: &str, args: Value) -> Value {
        self.session_call("POST", "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Every element matching a CSS selector.
    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.session_call("POST", "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        v.as_array().unwrap().iter().map(|e| e[ELEMENT].as_str().unwrap().to_string()).collect()
    }

    /// Waits until `script` returns something other than null or false; returns it. On a
    /// timeout, saves a screenshot and fails with `what`.
    async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let started = Instant::now();
        loop {
            let v = self.exec(script, args.clone()).await;
            if !v.is_null() && v != false {
                return v;
            }
            if started.elapsed() > WAIT {
                let page = self.exec("return document.querySelector('main').innerText", json!([])).await;
                self.screenshot("failure").await;
                panic!("timed out waiting for {what}; the page says:\n{}", page.as_str().unwrap_or_default());
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a visible element matching `css` and returns its reference.
    async fn wait_visible(&self, css: &str) -> String {
        let script = "const e = document.querySelector(arguments[0]); \
                      return e && e.getClientRects().length && !e.closest('[hidden]') ? e : null;";
        let v = self.wait_for(&format!("`{css}` to be visible"), script, json!([css])).await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn click(&self, css: &str) {
        let id = self.wait_visible(css).await;
        self.session_call("POST", &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.wait_visible(css).await;
        self.session_call("POST", &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.session_call("POST", &format!("/element/{id}/value"), Some(json!({"text": text}))).await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.wait_visible(css).await;
        self.session_call("GET", &format!("/element/{id}/text"), None).await.as_str().unwrap().to_string()
    }

    /// Saves the whole page as `target/browser-artifacts/<test>-<page>.png`.
    async fn screenshot(&self, page: &str) -> PathBuf {
        let full = format!("/session/{}", self.session);
        // Grow the window to the page's height so the PNG holds all of it.
        let script = "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]";
        let sizes = self
            .call("POST", &format!("{full}/execute/sync"), Some(json!({"script": script, "args": []})))
            .await
            .unwrap_or(Value::Null);
        let height = sizes[0].as_i64().unwrap_or(1000).clamp(600, 6000);
        // The window's outer height includes whatever the viewport does not show.
        let chrome = sizes[1].as_i64().unwrap_or(0).clamp(0, 400);
        let _ = self
            .call("POST", &format!("{full}/window/rect"), Some(json!({"width": 1400, "height": height + chrome + 20})))
            .await;
        let path = artifacts_dir().join(format!("{}-{page}.png", self.name));
        match self.call("GET", &format!("{full}/screenshot"), None).await {
            Ok(v) => {
                let png = base64_decode(v.as_str().unwrap_or_default());
                assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
                std::fs::write(&path, png).expect("write screenshot");
            }
            Err(e) => eprintln!("screenshot {page} failed: {e}"),
        }
        path
    }

    /// Signs in on the dashboard's form with `key`.
    async fn sign_in(&self, app: &TestApp, key: &str) {
        self.goto(&format!("{}/", app.address)).await;
        self.type_into("#api-key", key).await;
        self.click("#login-submit").await;
        self.wait_visible("#whoami").await;
    }
}

/// Ends the session (so Chromium exits) with a plain blocking request, since Drop cannot
/// await, then stops chromedriver and removes the profile.
impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                let _ = write!(
                    s,
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session, self.port
                );
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A server with the example experiments applied, three rounds of traffic on
/// `homepage-banner` (the learner updating the allocation after each) and three analyzer
/// looks once the exposures are mature, so every part of the pages has something to show.
async fn demo_app() -> TestApp {
    let app = spawn_app(Backend::Postgres).await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    strategist::cli::apply_definitions(&app.db, &dir, "test").expect("apply the example experiments");
    app.state.invalidate();
    app.state.refresh_registry().expect("refresh");
    for round in 0..3 {
        let units = (round * 200..(round + 1) * 200).map(|u| format!("visitor-{u}"));
        let answers = app.assign_many("homepage-banner", units).await;
        let mut rewards = Vec::new();
        for (i, a) in answers.iter().enumerate() {
            let u = round * 200 + i;
            let rate = match a["arm"].as_str().unwrap() {
                "control" => 0.05,
                "hero_recommendation_slate" => 0.12,
                _ => 0.07,
            };
            // A low-discrepancy sequence: the share of converting units is the rate.
            if (u as f64 * 0.618_033_988_75).fract() < rate {
                rewards.push(json!({"exposure_id": a["exposure_id"], "metric": "purchase", "value": 1,
                                    "idempotency_key": format!("order-{u}")}));
            }
        }
        app.reward_many(rewards).await;
        app.learn();
    }
    // Looks after the metric's 2 h window, when every exposure is mature.
    let first_look = strategist::store::now() + chrono::Duration::hours(3);
    for look in 0..3 {
        app.analyze(first_look + chrono::Duration::minutes(20 * look));
    }
    app
}

fn example_keys() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let defs = strategist::experiment::files::load_definitions(&dir).expect("the shipped examples are valid");
    defs.into_iter().map(|(_, d)| d.key).collect()
}

/// Rows of the experiments table, as (key, cells' text).
const LIST_ROWS: &str = "return Array.from(document.querySelectorAll('#experiments tbody tr[data-key]'))\
                         .map(r => [r.dataset.key, Array.from(r.cells).map(c => c.innerText)]);";

#[actix_web::test]
async fn the_list_renders_the_demo_experiments() {
    let app = demo_app().await;
    let browser = Browser::launch("list").await;
    browser.sign_in(&app, &app.admin_key).await;
    let keys = example_keys();
    let rows = browser
        .wait_for(
            "every example experiment in the list, with its analysis",
            &format!(
                "const rows = (() => {{ {LIST_ROWS} }})(); return rows.length === arguments[0] && \
                 rows.some(r => r[0] === 'homepage-banner' && !r[1][6].includes('no analysis')) ? rows : null;"
            ),
            json!([keys.len()]),
        )
        .await;
    let rows = rows.as_array().unwrap();
    for key in &keys {
        let row = rows.iter().find(|r| r[0] == key.as_str()).unwrap_or_else(|| panic!("no row for {key}"));
        let cells: Vec<&str> = row[1].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        let (_, e) = app.request("GET", &format!("/v1/experiments/{key}"), Some(&app.read_key), None).await;
        assert!(cells[0].contains(e["name"].as_str().unwrap()) && cells[0].contains(key.as_str()), "{cells:?}");
        assert_eq!(cells[1], e["status"], "{cells:?}");
        let traffic = format!("{:.0} %", e["definition"]["traffic"].as_f64().unwrap() * 100.0);
        assert_eq!(cells[3], traffic, "{cells:?}");
    }
    let banner = rows.iter().find(|r| r[0] == "homepage-banner").unwrap()[1].as_array().unwrap().clone();
    assert_eq!(banner[4], "600", "exposures: {banner:?}");
    let (_, result) = app.request("GET", "/v1/experiments/homepage-banner/results", Some(&app.read_key), None).await;
    let leader = result["analysis"]["decision"]["checks"]["best_arm"].as_str().unwrap();
    assert_eq!(banner[5], leader, "leader: {banner:?}");
    let state = result["analysis"]["decision"]["state"]["kind"].as_str().unwrap().replace('_', " ");
    assert!(banner[6].as_str().unwrap().starts_with(&state), "decision {state}: {banner:?}");
    browser.screenshot("experiments").await;
}

#[actix_web::test]
async fn an_experiment_page_shows_its_charts_arms_and_audit_log() {
    let app = demo_app().await;
    let browser = Browser::launch("experiment").await;
    browser.sign_in(&app, &app.admin_key).await;
    browser.click("#experiments tr[data-key='homepage-banner'] a").await;
    let charts = browser
        .wait_for(
            "the four charts",
            "const f = Array.from(document.querySelectorAll('#charts figure[data-chart]')); \
             return f.length >= 4 && f.every(x => x.querySelector('svg')) ? f.map(x => x.dataset.chart) : null;",
            json!([]),
        )
        .await;
    for name in ["allocation", "cumulative", "uplift", "p_best"] {
        assert!(charts.as_array().unwrap().iter().any(|c| c == name), "chart {name} in {charts}");
    }
    // Each chart drew something (marks, not an empty frame).
    let marks = browser
        .exec(
            "return Array.from(document.querySelectorAll('#charts svg')).map(s => s.querySelectorAll('path, polyline, line, rect, circle').length)",
            json!([]),
        )
        .await;
    assert!(marks.as_array().unwrap().iter().all(|n| n.as_u64().unwrap() > 3), "{marks}");
    let arms = browser
        .wait_for(
            "the per-arm table",
            "const r = Array.from(document.querySelectorAll('#arms tbody tr[data-arm]')); \
             return r.length === 3 ? r.map(x => Array.from(x.cells).map(c => c.innerText)) : null;",
            json!([]),
        )
        .await;
    let exposures: u64 =
        arms.as_array().unwrap().iter().map(|r| r[1].as_str().unwrap().replace(',', "").parse::<u64>().unwrap()).sum();
    assert!(exposures > 0 && exposures <= 600, "{arms}");
    assert!(browser.text("#srm").await.len() > 1);
    assert!(!browser.text("#decision-state").await.contains("no analysis"));
    assert!(browser.find_all("#missing li").await.len() + browser.find_all("#reasons li").await.len() > 0);
    let audit = browser.text("#audit tbody").await;
    assert!(audit.contains("create"), "{audit}");
    browser.screenshot("homepage-banner").await;
}

#[actix_web::test]
async fn an_admin_pauses_an_experiment_through_the_page() {
    let app = demo_app().await;
    let browser = Browser::launch("pause").await;
    browser.sign_in(&app, &app.admin_key).await;
    browser.goto(&format!("{}/#/e/checkout-offer", app.address)).await;
    browser.click("#actions button[data-action='pause']").await;
    browser.wait_visible("#confirm").await;
    // No reason, no action: the dialog stays and says why.
    browser.click("#confirm-ok").await;
    let error = browser.text("#confirm-error").await;
    assert!(error.contains("reason"), "{error}");
    let (_, e) = app.request("GET", "/v1/experiments/checkout-offer", Some(&app.read_key), None).await;
    assert_eq!(e["status"], "running");
    let reason = "Coupon budget spent for November <b>&amp; \"quotes\"</b>";
    browser.type_into("#confirm-reason", reason).await;
    browser.screenshot("confirm").await;
    browser.click("#confirm-ok").await;
    browser
        .wait_for(
            "the page to show the experiment paused",
            "return document.getElementById('exp-status').innerText.startsWith('paused') && \
             !document.getElementById('confirm').open",
            json!([]),
        )
        .await;
    let (s, e) = app.request("GET", "/v1/experiments/checkout-offer", Some(&app.read_key), None).await;
    assert_eq!((s, e["status"].as_str()), (200, Some("paused")), "{e}");
    let (_, log) = app.request("GET", "/v1/experiments/checkout-offer/decisions", Some(&app.read_key), None).await;
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(last["action"], "pause");
    assert_eq!(last["reason"], reason);
    assert!(last["actor"].as_str().unwrap().starts_with("key:stk_"), "{last}");
    // The audit log on the page shows the reason as text (not as markup).
    let shown = browser
        .wait_for(
            "the reason in the page's audit log",
            "const c = document.querySelector('#audit tbody tr[data-action=pause] td.reason'); \
             return c ? [c.textContent, c.querySelectorAll('*').length] : null;",
            json!([]),
        )
        .await;
    assert_eq!(shown, json!([reason, 0]));
    // Now paused: resume is offered, pause is not.
    let enabled = browser
        .exec(
            "return Array.from(document.querySelectorAll('#actions button:not(:disabled)')).map(b => b.dataset.action)",
            json!([]),
        )
        .await;
    assert!(enabled.as_array().unwrap().contains(&json!("resume")), "{enabled}");
    assert!(!enabled.as_array().unwrap().contains(&json!("pause")), "{enabled}");
    browser.screenshot("paused").await;
}

#[actix_web::test]
async fn a_read_key_sees_everything_and_gets_no_buttons() {
    let app = demo_app().await;
    let browser = Browser::launch("read").await;
    // A wrong key is refused on the sign-in form.
    browser.goto(&format!("{}/", app.address)).await;
    browser.type_into("#api-key", "stk_0000000000000000000000000000000000000000").await;
    browser.click("#login-submit").await;
    let refused = browser.text("#login-error").await;
    assert!(refused.contains("unknown API key"), "{refused}");
    browser.sign_in(&app, &app.read_key).await;
    assert_eq!(browser.text("#whoami-scope").await, "read");
    browser
        .wait_for(
            "the experiments list",
            "return document.querySelectorAll('#experiments tbody tr[data-key]').length === arguments[0]",
            json!([example_keys().len()]),
        )
        .await;
    browser.click("#experiments tr[data-key='homepage-banner'] a").await;
    browser
        .wait_for(
            "the arms and the audit log",
            "return document.querySelectorAll('#arms tbody tr[data-arm]').length === 3 && \
             document.querySelectorAll('#audit tbody tr[data-action]').length > 0",
            json!([]),
        )
        .await;
    assert!(browser.find_all("#actions button").await.is_empty(), "a read key sees no action buttons");
    assert!(browser.find_all("button[data-action]").await.is_empty());
    browser.wait_visible("#readonly-note").await;
    browser.screenshot("homepage-banner").await;
    // And the API agrees: the same key cannot act.
    let (s, v) = app
        .request("POST", "/v1/experiments/homepage-banner/pause", Some(&app.read_key), Some(&json!({"reason": "x"})))
        .await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")));
}

/// What the page asks first: who the key is and what it may do.
async fn whoami_names_the_key_and_its_scopes(backend: Backend) {
    let app = spawn_app(backend).await;
    for (key, name, scope) in [
        (&app.admin_key, "test-admin", "admin"),
        (&app.read_key, "test-read", "read"),
        (&app.assign_key, "test-assign", "assign"),
    ] {
        let (s, v) = app.request("GET", "/v1/whoami", Some(key), None).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v, json!({"name": name, "prefix": &key[..12], "scopes": [scope]}));
    }
    let (s, v) = app.request("GET", "/v1/whoami", None, None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));
}
on_both_backends!(whoami_names_the_key_and_its_scopes);

/// The page and its files come from the binary, with a policy that allows only this origin.
async fn the_dashboard_is_served_from_the_binary(backend: Backend) {
    let app = spawn_app(backend).await;
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<title>Strategist</title>"),
        ("/assets/app.js", "text/javascript; charset=utf-8", "sessionStorage"),
        ("/assets/app.css", "text/css; charset=utf-8", "font-family"),
        ("/assets/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let mut resp = app.client.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert_eq!(header("content-type"), content_type, "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
        assert!(body.contains(needle), "{path}");
    }
    let (s, v) = app.request("GET", "/assets/nope.js", None, None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("asset_not_found")));
    let (s, v) = app.request("POST", "/", None, None).await;
    assert_eq!(s, 404, "{v}");
}
on_both_backends!(the_dashboard_is_served_from_the_binary);
