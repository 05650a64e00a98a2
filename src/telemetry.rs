//! Logs (tracing) and Prometheus metrics. One `Metrics` value per process, shared by the
//! API, the writer and the background loops; `/metrics` renders its registry.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_duration: HistogramVec,
    pub http_responses: IntCounterVec,
    pub decisions: IntCounterVec,
    pub unlogged_decisions: IntCounterVec,
    pub rewards: IntCounterVec,
    pub errors: IntCounterVec,
    pub writer_batch_size: Histogram,
    pub writer_commit_seconds: Histogram,
    pub writer_queue_depth: IntGauge,
    pub learner_last_run: IntGauge,
    pub analyzer_last_run: IntGauge,
    pub learner_snapshots: IntCounterVec,
    pub db_up: IntGauge,
    pub policy_version: prometheus::IntGaugeVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric names and labels below are constants; registration fails only on a duplicate
    // name, which is a programming error caught by every test.
    r.unwrap_or_else(|e| panic!("metric registration: {e}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new("strategist_http_request_duration_seconds", "HTTP request latency by route")
                .buckets(latency_buckets.clone()),
            &["route", "method"],
        ));
        let http_responses = must(IntCounterVec::new(
            Opts::new("strategist_http_responses_total", "HTTP responses by route and status"),
            &["route", "status"],
        ));
        let decisions = must(IntCounterVec::new(
            Opts::new("strategist_decisions_total", "Logged decisions by experiment and arm"),
            &["experiment", "arm"],
        ));
        let unlogged_decisions = must(IntCounterVec::new(
            Opts::new("strategist_unlogged_decisions_total", "Default-arm answers that were not logged, by reason"),
            &["experiment", "reason"],
        ));
        let rewards = must(IntCounterVec::new(
            Opts::new("strategist_rewards_total", "Rewards by experiment, metric and outcome"),
            &["experiment", "metric", "outcome"],
        ));
        let errors = must(IntCounterVec::new(
            Opts::new("strategist_errors_total", "Error responses by stable error code"),
            &["code"],
        ));
        let writer_batch_size = must(Histogram::with_opts(
            HistogramOpts::new("strategist_writer_batch_size", "Items per group commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
        ));
        let writer_commit_seconds = must(Histogram::with_opts(
            HistogramOpts::new("strategist_writer_commit_seconds", "Duration of one group commit")
                .buckets(latency_buckets),
        ));
        let writer_queue_depth =
            must(IntGauge::new("strategist_writer_queue_depth", "Items waiting for the log writer"));
        let learner_last_run = must(IntGauge::new(
            "strategist_learner_last_run_timestamp_seconds",
            "Unix time of the learner's last completed run (0 = never in this process)",
        ));
        let analyzer_last_run = must(IntGauge::new(
            "strategist_analyzer_last_run_timestamp_seconds",
            "Unix time of the analyzer's last completed run (0 = never in this process)",
        ));
        let learner_snapshots = must(IntCounterVec::new(
            Opts::new("strategist_learner_snapshots_total", "Policy snapshots written by the learner"),
            &["experiment"],
        ));
        let db_up = must(IntGauge::new("strategist_database_up", "1 when the store answered its last probe"));
        let policy_version = must(prometheus::IntGaugeVec::new(
            Opts::new("strategist_policy_version", "Policy version served, by experiment"),
            &["experiment"],
        ));
        for c in [
            Box::new(http_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_responses.clone()),
            Box::new(decisions.clone()),
            Box::new(unlogged_decisions.clone()),
            Box::new(rewards.clone()),
            Box::new(errors.clone()),
            Box::new(writer_batch_size.clone()),
            Box::new(writer_commit_seconds.clone()),
            Box::new(writer_queue_depth.clone()),
            Box::new(learner_last_run.clone()),
            Box::new(analyzer_last_run.clone()),
            Box::new(learner_snapshots.clone()),
            Box::new(db_up.clone()),
            Box::new(policy_version.clone()),
        ] {
            must(registry.register(c));
        }
        Metrics {
            registry,
            http_duration,
            http_responses,
            decisions,
            unlogged_decisions,
            rewards,
            errors,
            writer_batch_size,
            writer_commit_seconds,
            writer_queue_depth,
            learner_last_run,
            analyzer_last_run,
            learner_snapshots,
            db_up,
            policy_version,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Installs the global tracing subscriber once (later calls are no-ops, for tests).
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STRATEGIST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
