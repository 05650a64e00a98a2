//! `strategist demo`: the whole platform in one command on the embedded store — the
//! example experiments applied and started, keys printed, and a built-in simulated
//! storefront sending decisions and purchases over real HTTP so the learner has
//! something to learn from at once.
//!
//! The simulated world: 5,000 shoppers with a device, a country, a segment (bargain
//! hunter, loyal, lapsed, new) and a typical cart value. Whether a shopper buys depends
//! on the segment and on the strategy shown — coupons work on bargain hunters, free
//! shipping on lapsed shoppers and small carts, bundles a little on loyal ones — so the
//! policies have a real, context-dependent winner to find.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::config::Settings;
use crate::experiment::definition::MetricKind;
use crate::keys::Scope;
use crate::store::queries;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "STRATEGIST_BIND")]
    pub bind: String,
    /// Store (default: the embedded SQLite file ./data/strategist.db).
    #[arg(long, env = "DATABASE_URL", default_value = "./data/strategist.db")]
    pub database_url: String,
    /// Experiment definitions to apply.
    #[arg(long, default_value = "experiments")]
    pub experiments: PathBuf,
    /// Simulated decision requests per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Stop after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Learner interval.
    #[arg(long, default_value = "10s")]
    pub learner_interval: String,
    /// Analyzer interval (the results API shows its latest analysis).
    #[arg(long, default_value = "1m")]
    pub analyzer_interval: String,
    /// Seed of the simulated world.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, Clone)]
struct Shopper {
    id: String,
    device: &'static str,
    country: &'static str,
    segment: &'static str,
    cart: f64,
    days_since_order: f64,
}

fn shoppers(n: usize, rng: &mut StdRng) -> Vec<Shopper> {
    (0..n)
        .map(|i| {
            let segment = match rng.random_range(0..100) {
                0..=29 => "bargain",
                30..=54 => "loyal",
                55..=79 => "lapsed",
                _ => "new",
            };
            Shopper {
                id: format!("shopper-{i}"),
                device: if rng.random_bool(0.62) { "mobile" } else { "desktop" },
                country: ["DE", "FR", "US", "GB"][rng.random_range(0..4)],
                segment,
                cart: (3.4 + 0.6 * rng.random::<f64>() * 2.0).exp().round(),
                days_since_order: match segment {
                    "lapsed" => rng.random_range(90.0..400.0),
                    "new" => 9999.0,
                    _ => rng.random_range(1.0..60.0),
                },
            }
        })
        .collect()
}

/// True purchase probability of a shopper shown an arm (by its key's meaning).
fn purchase_probability(s: &Shopper, arm: &str) -> f64 {
    let base: f64 = match s.segment {
        "bargain" => 0.030,
        "loyal" => 0.060,
        "lapsed" => 0.015,
        _ => 0.025,
    };
    let lift = if arm.contains("coupon") {
        if s.segment == "bargain" {
            1.6
        } else {
            1.1
        }
    } else if arm.contains("shipping") {
        if s.segment == "lapsed" || s.cart < 50.0 {
            1.5
        } else {
            1.05
        }
    } else if arm.contains("bundle") {
        if s.segment == "loyal" {
            1.25
        } else {
            0.95
        }
    } else if arm.contains("winback") || arm.contains("reactivation") {
        1.4
    } else if arm.contains("banner") || arm.contains("hero") || arm.contains("slate") {
        if s.device == "mobile" {
            1.2
        } else {
            1.05
        }
    } else {
        1.0
    };
    (base * lift).min(1.0)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging(false);
    let settings = Settings {
        database_url: args.database_url.clone(),
        bind: args.bind.clone(),
        learner_interval: args.learner_interval.clone(),
        analyzer_interval: args.analyzer_interval.clone(),
        ..Settings::default()
    };
    let db = crate::startup::open_store(&settings)?;
    for line in super::apply_definitions(&db, &args.experiments, "demo")? {
        println!("{line}");
    }
    let admin = super::create_key(&db, Scope::Admin, "demo-admin")?;
    let assign = super::create_key(&db, Scope::Assign, "demo-storefront")?;
    let read = super::create_key(&db, Scope::Read, "demo-read")?;
    let experiments = queries::list_experiments(&db)?;
    let listener =
        std::net::TcpListener::bind(&settings.bind).with_context(|| format!("cannot listen on {}", settings.bind))?;
    let base = format!("http://{}", listener.local_addr()?);
    println!();
    println!("Strategist demo on {} ({} store)", base, db.backend_name());
    println!("  admin key:  {admin}");
    println!("  assign key: {assign}");
    println!("  read key:   {read}");
    println!();
    println!("Try:");
    println!("  curl -s {base}/v1/experiments -H 'Authorization: Bearer {read}'");
    if let Some(e) = experiments.first() {
        println!(
            "  curl -s {base}/v1/assign -H 'Authorization: Bearer {assign}' -H 'Content-Type: application/json' \\\n    -d '{{\"experiment\": \"{}\", \"unit_id\": \"u-123\", \"context\": {{\"device\": \"mobile\"}}}}'",
            e.row.key
        );
        println!(
            "  curl -s {base}/v1/experiments/{}/results -H 'Authorization: Bearer {read}'   # after the first analyzer run",
            e.row.key
        );
    }
    println!("  curl -s {base}/metrics");
    println!();
    actix_web::rt::System::new().block_on(async move {
        let app = crate::startup::Application::build_with(&settings, db, listener)?;
        let handle = app.handle();
        let state = app.state.clone();
        let stop = app.stop_flag();
        let sim = Simulator { base: base.clone(), key: assign, rate: args.rate, seed: args.seed, experiments };
        actix_web::rt::spawn(async move { sim.run().await });
        let reporter_state = state.clone();
        let reporter_stop = stop.clone();
        actix_web::rt::spawn(async move {
            while !reporter_stop.load(Ordering::Relaxed) {
                actix_web::rt::time::sleep(Duration::from_secs(15)).await;
                for e in reporter_state.registry.load().iter() {
                    if e.definition.policy.is_contextual() {
                        let n: u64 = e.snapshot.feedback.iter().map(|f| f.n).sum();
                        let kind = e.definition.policy.kind();
                        println!(
                            "[{}] {} policy v{}: {kind}, per-shopper PMF, {n} exposures learned",
                            e.status.as_str(),
                            e.key,
                            e.policy_version
                        );
                        continue;
                    }
                    let shares: Vec<String> = e
                        .definition
                        .arms
                        .iter()
                        .zip(&e.snapshot.policy.pmf)
                        .map(|(a, p)| format!("{}={:.2}", a.key, p))
                        .collect();
                    println!("[{}] {} policy v{}: {}", e.status.as_str(), e.key, e.policy_version, shares.join(" "));
                }
            }
        });
        if args.duration > 0 {
            let d = args.duration;
            actix_web::rt::spawn(async move {
                actix_web::rt::time::sleep(Duration::from_secs(d)).await;
                handle.stop(true).await;
            });
        }
        app.run_until_stopped().await?;
        anyhow::Ok(())
    })
}

struct Simulator {
    base: String,
    key: String,
    rate: f64,
    seed: u64,
    experiments: Vec<queries::StoredExperiment>,
}

impl Simulator {
    async fn post(&self, client: &awc::Client, path: &str, body: &serde_json::Value) {
        let _ = client
            .post(format!("{}{path}", self.base))
            .insert_header(("Authorization", format!("Bearer {}", self.key)))
            .send_json(body)
            .await;
    }

    /// Gives every shopper a behaviour history through `/v1/events`, by segment: loyal
    /// customers bought a few times lately, bargain hunters browse a lot and bought once
    /// cheaply, new shoppers only looked today, lapsed ones left no trace in 90 days.
    async fn seed_profiles(&self, client: &awc::Client, people: &[Shopper], rng: &mut StdRng) {
        let now = chrono::Utc::now();
        let mut events = Vec::new();
        for s in people {
            let mut push = |kind: &str, days_ago: f64, amount: Option<f64>, n: usize| {
                let at = now - chrono::Duration::seconds((days_ago * 86_400.0) as i64);
                let mut e = json!({"event_id": format!("seed-{}-{}-{n}", self.seed, s.id), "unit_id": s.id,
                                   "type": kind, "timestamp": at.to_rfc3339(), "category": "fashion"});
                if let Some(a) = amount {
                    e["amount"] = json!(a);
                }
                events.push(e);
            };
            match s.segment {
                "loyal" => {
                    for n in 0..rng.random_range(2..6) {
                        push("purchase", rng.random_range(1.0..60.0), Some(s.cart), n);
                    }
                }
                "bargain" => {
                    for n in 0..rng.random_range(5..15) {
                        push("view", rng.random_range(0.0..30.0), None, n);
                    }
                    push("purchase", rng.random_range(5.0..80.0), Some((s.cart * 0.4).round()), 99);
                }
                "new" => push("view", 0.0, None, 0),
                _ => {}
            }
        }
        for chunk in events.chunks(500) {
            self.post(client, "/v1/events/batch", &json!({ "events": chunk })).await;
        }
    }

    async fn run(self) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let people = shoppers(5000, &mut rng);
        let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
        let pause = Duration::from_secs_f64(1.0 / self.rate.max(0.1));
        self.seed_profiles(&client, &people, &mut rng).await;
        let mut sent: u64 = 0;
        loop {
            actix_web::rt::time::sleep(pause).await;
            if self.experiments.is_empty() {
                continue;
            }
            let exp = &self.experiments[rng.random_range(0..self.experiments.len())];
            let s = &people[rng.random_range(0..people.len())];
            let body = json!({
                "experiment": exp.row.key,
                "unit_id": s.id,
                "request_id": format!("visit-{sent}"),
                "context": {"device": s.device, "country": s.country, "segment": s.segment,
                             "cart_value": s.cart, "days_since_last_order": s.days_since_order},
            });
            sent += 1;
            let resp = client
                .post(format!("{}/v1/assign", self.base))
                .insert_header(("Authorization", format!("Bearer {}", self.key)))
                .send_json(&body)
                .await;
            let Ok(mut resp) = resp else { continue };
            let Ok(decision) = resp.json::<serde_json::Value>().await else { continue };
            if decision["logged"] != json!(true) {
                continue;
            }
            let arm = decision["arm"].as_str().unwrap_or_default().to_string();
            if !rng.random_bool(purchase_probability(s, &arm)) {
                continue;
            }
            let revenue = (s.cart * rng.random_range(0.8..1.3) * 100.0).round() / 100.0;
            let exposure = decision["exposure_id"].clone();
            let order = format!("order-{}-{sent}", self.seed);
            let purchase = json!({"event_id": order, "unit_id": s.id, "type": "purchase", "amount": revenue});
            self.post(&client, "/v1/events", &purchase).await;
            for m in exp.definition.metrics() {
                let value = match m.kind {
                    MetricKind::Conversion => 1.0,
                    MetricKind::Revenue | MetricKind::Profit => revenue,
                    MetricKind::Custom => 1.0,
                };
                let reward =
                    json!({"exposure_id": exposure, "metric": m.name, "value": value, "idempotency_key": order});
                let _ = client
                    .post(format!("{}/v1/rewards", self.base))
                    .insert_header(("Authorization", format!("Bearer {}", self.key)))
                    .send_json(&reward)
                    .await;
            }
        }
    }
}
