//! The analyzer: a background job that, every interval (default 5 minutes), folds the new
//! part of the exposure log into sufficient statistics, re-runs the engine on each running
//! or paused experiment, stores the analysis and acts on it (promotion, futility stop).
//!
//! Incremental: per experiment and stream (`metric:NAME`, `allocation`) a watermark says up
//! to which exposure time the log has been folded; a run folds only `(watermark, until]`,
//! in one transaction with the watermark's move. For a metric, `until` is `now − window −
//! margin`: an exposure enters the decision statistics only once its attribution window
//! has closed (it is "mature") and the rewards of that window have had `margin` to commit.
//! Younger exposures are aggregated on each run (not stored) and shown as immature.
//!
//! On Postgres one process analyses at a time (advisory lock); each experiment's failure is
//! logged and the others go on; a failed run is retried at the next interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Serialize;

use super::engine::{self, AllocationCell, Analysis, AnalysisInput, Cell, MetricInput, MetricKind, MetricRole};
use crate::experiment::admin;
use crate::experiment::definition::MetricKind as DefMetricKind;
use crate::experiment::Status;
use crate::store::analysis::{self as store, CellRow, MetricSource};
use crate::store::queries::{self, StoredExperiment};
use crate::store::{Db, StoreError};
use crate::telemetry::{Metrics, RunOutcome, Task};

/// Advisory-lock key of the analyzer ("STRATANL").
const ANALYZER_LOCK: i64 = 0x5354_5241_5441_4e4c;

/// The actor the analyzer's decisions are recorded under.
pub const ACTOR: &str = "analyzer";

/// What one run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub experiments: usize,
    pub analyses: usize,
    pub folded_exposures: i64,
    pub promoted: Vec<String>,
    pub stopped: Vec<String>,
    pub failed: Vec<String>,
    pub skipped_locked: bool,
}

/// One analyzer pass as of `now`; `margin` is the time given to rewards to commit after a
/// window closes.
pub fn run_once(db: &Db, now: NaiveDateTime, margin: Duration) -> Result<RunReport, StoreError> {
    let Some(_lock) = crate::learner::take_lock(db, ANALYZER_LOCK)? else {
        return Ok(RunReport { skipped_locked: true, ..Default::default() });
    };
    let mut report = RunReport::default();
    for stored in queries::list_experiments(db)? {
        if !matches!(stored.status(), Status::Running | Status::Paused) {
            continue;
        }
        report.experiments += 1;
        match analyse_experiment(db, &stored, now, margin) {
            Ok(outcome) => {
                report.analyses += 1;
                report.folded_exposures += outcome.folded;
                match outcome.acted {
                    Some(Acted::Promoted) => report.promoted.push(stored.row.key.clone()),
                    Some(Acted::Stopped) => report.stopped.push(stored.row.key.clone()),
                    None => {}
                }
            }
            Err(e) => {
                tracing::error!(experiment = %stored.row.key, error = %e, "analysis failed; retrying next interval");
                report.failed.push(stored.row.key.clone());
            }
        }
    }
    Ok(report)
}

enum Acted {
    Promoted,
    Stopped,
}

struct Outcome {
    folded: i64,
    acted: Option<Acted>,
}

#[derive(Debug, thiserror::Error)]
enum AnalyseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the engine refused the input: {0}")]
    Engine(#[from] engine::AnalysisError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// `now − a − b` without leaving chrono's range (windows stored before `validate` bounded
/// them may be huge): the earliest representable time.
fn before(now: NaiveDateTime, a: Duration, b: Duration) -> NaiveDateTime {
    crate::experiment::definition::time_before(now, a.saturating_add(b))
}

fn metric_sources(stored: &StoredExperiment) -> Vec<(MetricSource<'_>, Duration, MetricRole)> {
    let def = &stored.definition;
    let covariate = def.analysis.covariate.as_deref();
    def.metrics()
        .enumerate()
        .map(|(i, m)| {
            // Clamped to the bound `validate` enforces: a window stored before it existed would
            // otherwise overflow the databases' interval types in the sticky per-unit SQL.
            let window = crate::experiment::definition::parse_duration(&m.window)
                .unwrap_or(Duration::ZERO)
                .min(crate::experiment::definition::MAX_WINDOW);
            let per_unit_window = def.sticky.then_some(window.as_secs_f64());
            let source =
                MetricSource { name: &m.name, binary: m.kind == DefMetricKind::Conversion, covariate, per_unit_window };
            (source, window, if i == 0 { MetricRole::Primary } else { MetricRole::Guardrail })
        })
        .collect()
}

fn cell(r: &CellRow) -> Cell {
    Cell {
        n: r.n.max(0) as u64,
        sum: r.sum,
        sum_sq: r.sum_sq,
        sum_w: r.sum_w,
        sum_wy: r.sum_wy,
        sum_wy2: r.sum_wy2,
        sum_w2: r.sum_w2,
        sum_w2y: r.sum_w2y,
        sum_w2y2: r.sum_w2y2,
        sum_x: r.sum_x,
        sum_x_sq: r.sum_x_sq,
        sum_xy: r.sum_xy,
    }
}

/// Folds the new part of the log and builds the engine's input for the current version;
/// also returns the number of primary-metric exposures folded and the watermarks after it.
pub fn build_input(
    db: &Db,
    stored: &StoredExperiment,
    now: NaiveDateTime,
    margin: Duration,
) -> Result<(AnalysisInput, i64, HashMap<String, NaiveDateTime>), StoreError> {
    let def = &stored.definition;
    let id = stored.row.id;
    let version = stored.row.current_version;
    let sources = metric_sources(stored);
    let mut folded = 0;
    for (source, window, _) in &sources {
        let n = store::fold_metric(db, id, version, source, before(now, *window, margin))?;
        if source.name == def.primary_metric.name {
            folded += n;
        }
    }
    store::fold_allocation(db, id, version, before(now, margin, Duration::ZERO), def.sticky)?;
    let marks = store::watermarks(db, id)?;

    let arms = def.arm_keys();
    let mature = store::load_cells(db, id, version)?;
    let allocation = store::load_allocation(db, id, version)?;
    let mut periods: Vec<i64> =
        mature.iter().map(|(_, c)| c.period).chain(allocation.iter().map(|a| a.period)).collect();
    periods.sort_unstable();
    periods.dedup();
    let arm_ix = |k: &str| arms.iter().position(|a| a == k);
    let period_ix = |p: i64| periods.binary_search(&p).ok();

    let mut cells = vec![vec![vec![Cell::default(); periods.len()]; arms.len()]; sources.len()];
    let mut immature = vec![vec![Cell::default(); arms.len()]; sources.len()];
    for (m, (source, _, _)) in sources.iter().enumerate() {
        for (_, c) in mature.iter().filter(|(name, _)| name == source.name) {
            if let (Some(a), Some(p)) = (arm_ix(&c.arm), period_ix(c.period)) {
                cells[m][a][p].merge(&cell(c));
            }
        }
        let from = marks.get(&store::metric_stream(source.name)).copied().unwrap_or_else(store::origin);
        for c in store::aggregate_cells(db, id, source, from, now, version)? {
            if let Some(a) = arm_ix(&c.arm) {
                immature[m][a].merge(&cell(&c));
            }
        }
    }
    let mut alloc = vec![vec![AllocationCell::default(); arms.len()]; periods.len()];
    for a in &allocation {
        if let (Some(i), Some(p)) = (arm_ix(&a.arm), period_ix(a.period)) {
            alloc[p][i].observed += a.n.max(0) as u64;
            alloc[p][i].expected += a.expected;
        }
    }
    let metrics = sources
        .iter()
        .map(|(source, _, role)| MetricInput {
            name: source.name.to_string(),
            kind: if source.binary { MetricKind::Conversion } else { MetricKind::Continuous },
            role: *role,
            has_covariate: source.covariate.is_some(),
        })
        .collect();
    let input = AnalysisInput {
        control: arms[def.control_index()].clone(),
        arms,
        metrics,
        periods,
        cells,
        immature,
        allocation: alloc,
        // Every policy kind so far allocates without looking at the context.
        contextual: false,
        config: def.analysis.clone(),
    };
    Ok((input, folded, marks))
}

/// What the results API serves: the analysis with when and on what it was made.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StoredResult {
    pub experiment: String,
    pub version: i32,
    pub status: String,
    pub promoted_arm: Option<String>,
    pub analyzed_at: NaiveDateTime,
    /// Exposures created up to these times have entered the mature statistics, per metric.
    #[schema(value_type = Object)]
    pub mature_until: std::collections::BTreeMap<String, NaiveDateTime>,
    pub analysis: Analysis,
}

fn analyse_experiment(
    db: &Db,
    stored: &StoredExperiment,
    now: NaiveDateTime,
    margin: Duration,
) -> Result<Outcome, AnalyseError> {
    let id = stored.row.id;
    let version = stored.row.current_version;
    let (input, folded, marks) = build_input(db, stored, now, margin)?;
    let prior = match store::latest_analysis(db, id, Some(version), None)? {
        Some(row) => serde_json::from_str::<StoredResult>(&row.result).ok().map(|r| r.analysis.sequential_state),
        None => None,
    };
    let analysis = engine::analyze(&input, prior.as_ref())?;
    let mature_until = stored
        .definition
        .metrics()
        .filter_map(|m| marks.get(&store::metric_stream(&m.name)).map(|t| (m.name.clone(), *t)))
        .collect();
    let result = StoredResult {
        experiment: stored.row.key.clone(),
        version,
        status: stored.row.status.clone(),
        promoted_arm: stored.row.promoted_arm.clone(),
        analyzed_at: now,
        mature_until,
        analysis,
    };
    let json = serde_json::to_string(&result)?;
    let state = serde_json::to_value(&result.analysis.decision.state)?
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("unknown")
        .to_string();
    store::insert_analysis(db, id, version, &state, &json, now)?;
    let analysis = &result.analysis;
    if analysis.srm.flagged && analysis.srm.flagged_since_look == Some(analysis.look) {
        queries::insert_decision(
            db,
            admin::decision(
                id,
                "srm_flagged",
                ACTOR,
                "sample ratio mismatch: the logged allocation does not match the logged propensities; \
                 promotion is blocked until the logging is fixed"
                    .into(),
                serde_json::json!({"statistics": &result}),
            ),
        )?;
    }
    // Automatic actions only on a running experiment that has not promoted yet.
    if stored.status() != Status::Running || stored.row.promoted_arm.is_some() {
        return Ok(Outcome { folded, acted: None });
    }
    let statistics = serde_json::to_value(&result)?;
    let acted = match (&analysis.decision.state, &analysis.decision.action) {
        (engine::DecisionState::ReadyToPromote { .. }, engine::Action::Promote { arm, holdout, .. }) => {
            let reason = format!(
                "`{arm}` cleared the always-valid, Holm-adjusted test on `{}` at alpha {} and is the best arm by \
                 posterior expected value; minimum sample, guardrails and SRM checks passed",
                stored.definition.primary_metric.name, analysis.alpha
            );
            admin::promote(db, &stored.row.key, arm, *holdout, ACTOR, &reason, statistics)?;
            tracing::info!(experiment = %stored.row.key, arm = %arm, holdout, "analyzer promoted the winner");
            Some(Acted::Promoted)
        }
        (engine::DecisionState::Futile, _) => {
            let reason = format!(
                "futility: every arm's always-valid interval of the relative uplift excludes the minimum \
                 detectable effect ({:?}); control is kept",
                stored.definition.analysis.mde
            );
            stop_futile(db, stored, &reason, statistics)?;
            Some(Acted::Stopped)
        }
        _ => None,
    };
    Ok(Outcome { folded, acted })
}

fn stop_futile(
    db: &Db,
    stored: &StoredExperiment,
    reason: &str,
    statistics: serde_json::Value,
) -> Result<(), AnalyseError> {
    queries::set_status(
        db,
        stored.row.id,
        Status::Stopped,
        None,
        admin::decision(
            stored.row.id,
            "stop",
            ACTOR,
            reason.into(),
            serde_json::json!({"from": stored.row.status, "to": "stopped", "futility": true,
                "statistics": statistics}),
        ),
    )?;
    tracing::info!(experiment = %stored.row.key, "analyzer stopped the experiment for futility");
    Ok(())
}

/// [`run_once`], counted and timed in `metrics` (`strategist_background_runs_total`, the
/// analyzer's last-run time, which a run that found the lock taken leaves alone); what the
/// background loop runs.
pub fn run_recorded(db: &Db, metrics: &Metrics, now: NaiveDateTime, margin: Duration) -> Result<RunReport, StoreError> {
    let started = std::time::Instant::now();
    let result = run_once(db, now, margin);
    let outcome = match &result {
        Ok(r) if r.skipped_locked => RunOutcome::SkippedLocked,
        Ok(_) => RunOutcome::Completed,
        Err(_) => RunOutcome::Failed,
    };
    metrics.record_run(Task::Analyzer, outcome, started.elapsed());
    result
}

/// Runs the analyzer every `every` until `stop` is set; errors are logged and the loop
/// goes on.
pub fn spawn(
    db: Db,
    metrics: Arc<Metrics>,
    every: Duration,
    margin: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("analyzer".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match run_recorded(&db, &metrics, crate::store::now(), margin) {
                    Ok(r) => {
                        if r.analyses > 0 || !r.failed.is_empty() {
                            tracing::info!(?r, "analyzer run");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "analyzer run failed; retrying next interval"),
                }
                crate::app::sleep_unless_stopped(every, &stop);
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the analyzer thread: {e}"))
}
