//! Logs (tracing) and Prometheus metrics. One `Metrics` value per process, shared by the
//! API, the writer and the background loops; `/metrics` renders its registry. The Grafana
//! dashboards in `dashboards/` query these names; `tests/api/dashboards.rs` checks that every
//! name they use is exported.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// A background loop whose runs are counted and timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Learner,
    Analyzer,
}

impl Task {
    pub const ALL: [Task; 2] = [Task::Learner, Task::Analyzer];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Learner => "learner",
            Task::Analyzer => "analyzer",
        }
    }
}

/// How one background run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The run went through.
    Completed,
    /// Another replica holds the task's advisory lock; this one did nothing.
    SkippedLocked,
    /// The run returned an error (logged by the loop).
    Failed,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 3] = [RunOutcome::Completed, RunOutcome::SkippedLocked, RunOutcome::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::SkippedLocked => "skipped_locked",
            RunOutcome::Failed => "failed",
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub http_duration: HistogramVec,
    pub http_responses: IntCounterVec,
    pub decisions: IntCounterVec,
    /// Time to answer one decision, by experiment and whether it was logged. Requests that
    /// fail before an experiment is resolved are not observed (their `experiment` is
    /// caller-supplied text, which would make the label set unbounded).
    pub decision_duration: HistogramVec,
    pub unlogged_decisions: IntCounterVec,
    pub rewards: IntCounterVec,
    pub events: IntCounterVec,
    pub errors: IntCounterVec,
    pub writer_batch_size: Histogram,
    pub writer_commit_seconds: Histogram,
    pub writer_queue_depth: IntGauge,
    pub learner_last_run: IntGauge,
    pub analyzer_last_run: IntGauge,
    pub learner_snapshots: IntCounterVec,
    pub background_runs: IntCounterVec,
    pub background_run_duration: HistogramVec,
    pub db_up: IntGauge,
    pub policy_version: prometheus::IntGaugeVec,
    /// The `neural_pg` scorers' series (micro-batcher and inline scoring).
    pub scoring: ScoringMetrics,
}

/// What the `neural_pg` scorers report, by experiment: requests per forward pass, the time
/// a request waited for its batch, the forward pass itself, the requests queued and those
/// refused because the queue was full. One series per experiment key (bounded by the
/// definitions), kept across snapshot swaps.
#[derive(Clone)]
pub struct ScoringMetrics {
    pub batch_size: HistogramVec,
    pub queue_wait_seconds: HistogramVec,
    pub forward_seconds: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub overloaded: IntCounterVec,
}

impl ScoringMetrics {
    /// The series, not yet registered anywhere (see [`Metrics::new`]).
    pub fn new() -> ScoringMetrics {
        let fast = vec![0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];
        let sizes = (0..=12).map(|i| f64::from(1u32 << i)).collect::<Vec<_>>();
        ScoringMetrics {
            batch_size: must(HistogramVec::new(
                HistogramOpts::new("strategist_scoring_batch_size", "Requests scored per forward pass, by experiment")
                    .buckets(sizes),
                &["experiment"],
            )),
            queue_wait_seconds: must(HistogramVec::new(
                HistogramOpts::new(
                    "strategist_scoring_queue_wait_seconds",
                    "Time from a scoring request's arrival to the start of its forward pass, by experiment",
                )
                .buckets(fast.clone()),
                &["experiment"],
            )),
            forward_seconds: must(HistogramVec::new(
                HistogramOpts::new("strategist_scoring_forward_seconds", "Duration of one forward pass, by experiment")
                    .buckets(fast),
                &["experiment"],
            )),
            queue_depth: must(IntGaugeVec::new(
                Opts::new("strategist_scoring_queue_depth", "Scoring requests waiting for a batch, by experiment"),
                &["experiment"],
            )),
            overloaded: must(IntCounterVec::new(
                Opts::new(
                    "strategist_scoring_overloaded_total",
                    "Scoring requests refused because the batcher's queue was full (503 scoring_overloaded)",
                ),
                &["experiment"],
            )),
        }
    }

    /// The handles one experiment's scorer writes to.
    pub fn scorer(&self, experiment: &str) -> ScorerMetrics {
        ScorerMetrics {
            batch_size: self.batch_size.with_label_values(&[experiment]),
            queue_wait_seconds: self.queue_wait_seconds.with_label_values(&[experiment]),
            forward_seconds: self.forward_seconds.with_label_values(&[experiment]),
            queue_depth: self.queue_depth.with_label_values(&[experiment]),
            overloaded: self.overloaded.with_label_values(&[experiment]),
        }
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 5] {
        [
            Box::new(self.batch_size.clone()),
            Box::new(self.queue_wait_seconds.clone()),
            Box::new(self.forward_seconds.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.overloaded.clone()),
        ]
    }
}

impl Default for ScoringMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ScoringMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScoringMetrics")
    }
}

/// One experiment's scoring series (see [`ScoringMetrics`]).
#[derive(Clone)]
pub struct ScorerMetrics {
    pub batch_size: Histogram,
    pub queue_wait_seconds: Histogram,
    pub forward_seconds: Histogram,
    pub queue_depth: IntGauge,
    pub overloaded: IntCounter,
}

impl ScorerMetrics {
    /// Handles registered nowhere (benches, tests and the CLI, where nobody scrapes).
    pub fn unregistered() -> ScorerMetrics {
        ScoringMetrics::new().scorer("")
    }
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
        let decision_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "strategist_decision_duration_seconds",
                "Time to decide one assignment (policy draw and, when logged, the group commit), by experiment",
            )
            .buckets(latency_buckets.clone()),
            &["experiment", "logged"],
        ));
        let unlogged_decisions = must(IntCounterVec::new(
            Opts::new("strategist_unlogged_decisions_total", "Default-arm answers that were not logged, by reason"),
            &["experiment", "reason"],
        ));
        let rewards = must(IntCounterVec::new(
            Opts::new("strategist_rewards_total", "Rewards by experiment, metric and outcome"),
            &["experiment", "metric", "outcome"],
        ));
        let events = must(IntCounterVec::new(
            Opts::new("strategist_events_total", "Behaviour events (profiles) by outcome: stored or duplicate"),
            &["outcome"],
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
        // The label is `task`, not `job`: Prometheus attaches its own `job` label to every
        // scraped series and would rename ours to `exported_job`.
        let background_runs = must(IntCounterVec::new(
            Opts::new("strategist_background_runs_total", "Learner and analyzer runs by outcome"),
            &["task", "outcome"],
        ));
        let background_run_duration = must(HistogramVec::new(
            HistogramOpts::new("strategist_background_run_duration_seconds", "Duration of completed background runs")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
            &["task"],
        ));
        // Known label values start at zero so that rate() and the dashboards see them before
        // the first run.
        for task in Task::ALL {
            background_run_duration.with_label_values(&[task.as_str()]);
            for outcome in RunOutcome::ALL {
                background_runs.with_label_values(&[task.as_str(), outcome.as_str()]);
            }
        }
        let db_up = must(IntGauge::new("strategist_database_up", "1 when the store answered its last probe"));
        let policy_version = must(prometheus::IntGaugeVec::new(
            Opts::new("strategist_policy_version", "Policy version served, by experiment"),
            &["experiment"],
        ));
        let scoring = ScoringMetrics::new();
        for c in [
            Box::new(http_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_responses.clone()),
            Box::new(decisions.clone()),
            Box::new(decision_duration.clone()),
            Box::new(unlogged_decisions.clone()),
            Box::new(rewards.clone()),
            Box::new(events.clone()),
            Box::new(errors.clone()),
            Box::new(writer_batch_size.clone()),
            Box::new(writer_commit_seconds.clone()),
            Box::new(writer_queue_depth.clone()),
            Box::new(learner_last_run.clone()),
            Box::new(analyzer_last_run.clone()),
            Box::new(learner_snapshots.clone()),
            Box::new(background_runs.clone()),
            Box::new(background_run_duration.clone()),
            Box::new(db_up.clone()),
            Box::new(policy_version.clone()),
        ]
        .into_iter()
        .chain(scoring.collectors())
        {
            must(registry.register(c));
        }
        Metrics {
            registry,
            http_duration,
            http_responses,
            decisions,
            decision_duration,
            unlogged_decisions,
            rewards,
            events,
            errors,
            writer_batch_size,
            writer_commit_seconds,
            writer_queue_depth,
            learner_last_run,
            analyzer_last_run,
            learner_snapshots,
            background_runs,
            background_run_duration,
            db_up,
            policy_version,
            scoring,
        }
    }

    /// Counts one background run; a completed run also records its duration and sets the
    /// task's last-run time (lag = now − that time; a replica that never runs the task, or
    /// only finds the lock taken, keeps 0).
    pub fn record_run(&self, task: Task, outcome: RunOutcome, elapsed: Duration) {
        self.background_runs.with_label_values(&[task.as_str(), outcome.as_str()]).inc();
        if outcome == RunOutcome::Completed {
            self.background_run_duration.with_label_values(&[task.as_str()]).observe(elapsed.as_secs_f64());
            let gauge = match task {
                Task::Learner => &self.learner_last_run,
                Task::Analyzer => &self.analyzer_last_run,
            };
            gauge.set(chrono::Utc::now().timestamp());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_completed_run_moves_the_last_run_time() {
        let m = Metrics::new();
        m.record_run(Task::Analyzer, RunOutcome::SkippedLocked, Duration::from_millis(1));
        m.record_run(Task::Analyzer, RunOutcome::Failed, Duration::from_millis(1));
        assert_eq!(m.analyzer_last_run.get(), 0);
        m.record_run(Task::Analyzer, RunOutcome::Completed, Duration::from_millis(20));
        assert!(m.analyzer_last_run.get() > 1_700_000_000);
        assert_eq!(m.learner_last_run.get(), 0);
        for outcome in RunOutcome::ALL {
            assert_eq!(m.background_runs.with_label_values(&["analyzer", outcome.as_str()]).get(), 1);
        }
        assert_eq!(m.background_run_duration.with_label_values(&["analyzer"]).get_sample_count(), 1);
    }

    #[test]
    fn background_series_are_exported_before_the_first_run() {
        let text = Metrics::new().render();
        assert!(text.contains("strategist_background_runs_total{outcome=\"failed\",task=\"learner\"} 0"), "{text}");
        assert!(text.contains("strategist_background_run_duration_seconds_count{task=\"analyzer\"} 0"), "{text}");
    }
}
