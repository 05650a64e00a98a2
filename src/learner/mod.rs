//! The background learner: joins rewards to exposures, refits each running experiment's
//! policy from the cumulative feedback of its current version, and writes a new policy
//! snapshot when the feedback changed. Serving processes pick snapshots up by polling.
//!
//! Delayed rewards: an exposure is used only once it is older than the experiment's
//! `reward_wait` (the time by which most of its rewards have arrived, as Azure
//! Personalizer's "reward wait time"). Until then it is left out entirely, rather than
//! counted as a failure. Rewards arriving later, still inside the metric's attribution
//! window, are picked up on the next run, because each run refits from the cumulative
//! sums of every mature exposure (it never freezes an exposure's reward).
//!
//! `neural_pg` is retrained on a schedule instead (see [`neural`]): its spec's
//! `retrain_every` and `min_new_rows`, warm-started from the previous weights — the live
//! policy's network and a `neural_pg` shadow candidate's alike ([`shadow::learn`]).
//!
//! On Postgres only one process learns at a time: a session advisory lock is taken for
//! the run and released after it; a process that does not get it skips the run.

pub mod contextual;
pub mod neural;
pub mod shadow;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::Bool;

use crate::experiment::registry::SnapshotState;
use crate::experiment::Status;
use crate::policy::{self, explore, ArmFeedback};
use crate::store::{partitions, queries, Db, StoreError};
use crate::telemetry::{Metrics, RunOutcome, Task};

/// Advisory-lock key of the learner (an arbitrary constant: "STRATLRN").
const LEARNER_LOCK: i64 = 0x5354_5241_544c_524e;

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// A held session advisory lock on Postgres, released on drop.
pub struct PgLock {
    conn: diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<diesel::PgConnection>>,
    key: i64,
}

impl Drop for PgLock {
    fn drop(&mut self) {
        if let Err(e) =
            diesel::sql_query(format!("SELECT pg_advisory_unlock({}) AS locked", self.key)).execute(&mut self.conn)
        {
            tracing::warn!(error = %e, "advisory lock not released; it goes with the connection");
        }
    }
}

/// Takes the advisory lock `key` on Postgres; `Ok(None)` when another process holds it.
/// SQLite is single-node: always granted.
pub fn take_lock(db: &Db, key: i64) -> Result<Option<Option<PgLock>>, StoreError> {
    match db {
        Db::Pg(pool) => {
            let mut conn = pool.get()?;
            let got: Locked =
                diesel::sql_query(format!("SELECT pg_try_advisory_lock({key}) AS locked")).get_result(&mut conn)?;
            Ok(if got.locked { Some(Some(PgLock { conn, key })) } else { None })
        }
        Db::Sqlite(_) => Ok(Some(None)),
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub experiments: usize,
    pub snapshots_written: usize,
    pub skipped_locked: bool,
    /// Shadow candidates promoted to live by this run.
    pub promotions: usize,
}

/// One learner pass over every running or paused experiment, as of `now`, training
/// `neural_pg` networks on the CPU.
pub fn run_once(db: &Db, metrics: &Metrics, now: NaiveDateTime) -> Result<RunReport, StoreError> {
    run_once_on(db, metrics, now, &Device::Cpu)
}

/// [`run_once`], training `neural_pg` networks on `device` (the process's `--device`).
pub fn run_once_on(db: &Db, metrics: &Metrics, now: NaiveDateTime, device: &Device) -> Result<RunReport, StoreError> {
    let Some(_lock) = take_lock(db, LEARNER_LOCK)? else {
        return Ok(RunReport { skipped_locked: true, ..Default::default() });
    };
    let mut report = RunReport::default();
    for (stored, snap) in queries::load_live(db)? {
        if !matches!(stored.status(), Status::Running | Status::Paused) {
            continue;
        }
        report.experiments += 1;
        let def = &stored.definition;
        let until = crate::experiment::definition::time_before(now, def.reward_wait_duration());
        let previous: Option<SnapshotState> = serde_json::from_str(&snap.state).ok();
        let live_next = live_update(db, &stored, &snap, previous.as_ref(), until, now, device)?;
        // Shadow mode: the candidate learns from the same log, inside the same snapshot.
        let previous_shadow = previous.as_ref().and_then(|p| p.shadow.as_deref());
        let shadow_next = match (&def.shadow, previous_shadow) {
            (Some(candidate), Some(prev)) => {
                shadow::learn(db, &stored, candidate, prev, until, now, device, snap.policy_version + 1)?
            }
            _ => None,
        };
        let changed = live_next.is_some() || shadow_next.is_some();
        if changed {
            let base = match (live_next, &previous) {
                (Some(next), _) => next,
                (None, Some(p)) => p.clone(),
                (None, None) => {
                    return Err(StoreError::Corrupt(format!("snapshot of `{}` is unreadable", stored.row.key)))
                }
            };
            let next = SnapshotState {
                shadow: shadow_next.map(Box::new).or_else(|| previous_shadow.cloned().map(Box::new)),
                ..base
            };
            let (pv, n_feedback) = write_snapshot(db, metrics, &stored, &next)?;
            tracing::info!(experiment = %stored.row.key, policy_version = pv, n_feedback, "new policy snapshot");
            report.snapshots_written += 1;
        }
        if let Some(candidate) = &def.shadow {
            if candidate.auto_promote && stored.status() == Status::Running {
                match auto_promote(db, &stored, until) {
                    Ok(true) => report.promotions += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(experiment = %stored.row.key, error = %e, "shadow promotion check failed")
                    }
                }
            }
        }
    }
    Ok(report)
}

/// The live policy's next state, or `None` when nothing changed (see the module docs).
fn live_update(
    db: &Db,
    stored: &queries::StoredExperiment,
    snap: &crate::store::models::SnapshotRow,
    previous: Option<&SnapshotState>,
    until: NaiveDateTime,
    now: NaiveDateTime,
    device: &Device,
) -> Result<Option<SnapshotState>, StoreError> {
    let def = &stored.definition;
    let readable =
        || previous.ok_or_else(|| StoreError::Corrupt(format!("snapshot of `{}` is unreadable", stored.row.key)));
    if def.policy.is_neural() {
        let Some((next, done)) = neural::update(db, stored, &def.policy, readable()?, until, now, device)? else {
            return Ok(None);
        };
        let (before, after) = done.report.as_ref().map_or((f64::NAN, f64::NAN), |r| (r.snips_before, r.snips_after));
        tracing::info!(experiment = %stored.row.key, rows = done.rows, new_rows = done.new_rows, skipped = done.skipped, snips_before = before, snips_after = after, "neural policy retrained");
        return Ok(Some(next));
    }
    if def.policy.is_contextual() {
        let Some((next, folded)) = contextual::update(db, stored, readable()?, until)? else { return Ok(None) };
        tracing::info!(experiment = %stored.row.key, folded = folded.rows, skipped = folded.skipped, "contextual policy updated");
        return Ok(Some(next));
    }
    let previous = previous.map(|p| p.feedback.as_slice());
    context_free_update(db, stored, &def.policy, previous, until, "policy-snapshot", snap.policy_version + 1)
}

/// A context-free policy's next state (`spec`: the live policy or a shadow candidate): the
/// per-arm feedback of the current version's matured exposures on the primary metric, fed
/// to [`policy::update_state`] with a seed drawn from the experiment's salt, `label` and the
/// next policy version. `None` when the feedback is the same as `previous`, or when the
/// update fails (logged; the previous state stays).
pub(crate) fn context_free_update(
    db: &Db,
    stored: &queries::StoredExperiment,
    spec: &policy::PolicySpec,
    previous: Option<&[ArmFeedback]>,
    until: NaiveDateTime,
    label: &str,
    next_policy_version: i64,
) -> Result<Option<SnapshotState>, StoreError> {
    let def = &stored.definition;
    let arm_keys = def.arm_keys();
    let binary = spec.wants_binary_reward();
    let aggregates =
        queries::arm_feedback(db, stored.row.id, stored.row.current_version, &def.primary_metric.name, binary, until)?;
    let mut feedback = vec![ArmFeedback::default(); arm_keys.len()];
    for a in aggregates {
        if let Some(i) = def.arm_index(&a.arm) {
            feedback[i] = ArmFeedback { n: a.n.max(0) as u64, sum: a.s, sum_sq: a.ss };
        }
    }
    if previous == Some(feedback.as_slice()) {
        return Ok(None);
    }
    let seed = explore::draw_seed(&stored.row.salt, label, &next_policy_version.to_string());
    match policy::update_state(spec, &arm_keys, &feedback, seed) {
        Ok(state) => Ok(Some(SnapshotState {
            policy: state,
            feedback,
            linear: None,
            neural: None,
            learned_until: None,
            shadow: None,
        })),
        Err(e) => {
            tracing::error!(experiment = %stored.row.key, %label, error = %e, "policy update failed; keeping the previous state");
            Ok(None)
        }
    }
}

/// Shadow mode's automatic promotion: evaluates the candidate on the matured log and, when
/// the rule says `promote`, makes it the live policy (a new version), audited with actor
/// `learner` and the numbers. Returns whether it promoted.
fn auto_promote(db: &Db, stored: &queries::StoredExperiment, until: NaiveDateTime) -> Result<bool, String> {
    let Some(eval) = shadow::evaluate_stored(db, stored, until).map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    if eval.decision != shadow::ShadowDecision::Promote {
        return Ok(false);
    }
    let details = serde_json::to_value(&eval).unwrap_or(serde_json::Value::Null);
    let reason = format!("shadow candidate promoted automatically: {}", eval.reason);
    let promoted = crate::experiment::admin::promote_shadow(db, &stored.row.key, "learner", &reason, details)
        .map_err(|e| e.to_string())?;
    tracing::info!(experiment = %stored.row.key, version = promoted.row.current_version, reason = %eval.reason, "shadow candidate promoted");
    Ok(true)
}

/// Stores `state` as the experiment's next snapshot and counts it; returns its policy
/// version and the feedback it was fitted on.
fn write_snapshot(
    db: &Db,
    metrics: &Metrics,
    stored: &queries::StoredExperiment,
    state: &SnapshotState,
) -> Result<(i64, u64), StoreError> {
    let n_feedback: u64 = state.feedback.iter().map(|f| f.n).sum();
    let json = serde_json::to_string(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let pv = queries::insert_snapshot(db, stored.row.id, stored.row.current_version, &json, n_feedback as i64)?;
    metrics.learner_snapshots.with_label_values(&[&stored.row.key]).inc();
    Ok((pv, n_feedback))
}

/// [`run_once`], counted and timed in `metrics` (`strategist_background_runs_total`, the
/// learner's last-run time).
pub fn run_recorded(db: &Db, metrics: &Metrics, now: NaiveDateTime) -> Result<RunReport, StoreError> {
    run_recorded_on(db, metrics, now, &Device::Cpu)
}

/// [`run_recorded`] training on `device`; what the background loop runs.
pub fn run_recorded_on(
    db: &Db,
    metrics: &Metrics,
    now: NaiveDateTime,
    device: &Device,
) -> Result<RunReport, StoreError> {
    let started = Instant::now();
    let result = run_once_on(db, metrics, now, device);
    let outcome = match &result {
        Ok(r) if r.skipped_locked => RunOutcome::SkippedLocked,
        Ok(_) => RunOutcome::Completed,
        Err(_) => RunOutcome::Failed,
    };
    metrics.record_run(Task::Learner, outcome, started.elapsed());
    result
}

/// Runs the learner every `every` until `stop` is set, training `neural_pg` networks on
/// `device`; errors are logged and the loop goes on. Partitions are also kept ahead here,
/// once an hour.
pub fn spawn(
    db: Db,
    metrics: Arc<Metrics>,
    every: Duration,
    device: Device,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("learner".into())
        .spawn(move || {
            let mut last_partitions: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                if last_partitions.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                    match partitions::ensure_partitions(&db, chrono::Utc::now().date_naive(), 2) {
                        Ok(_) => last_partitions = Some(Instant::now()),
                        Err(e) => tracing::warn!(error = %e, "partition maintenance failed"),
                    }
                }
                match run_recorded_on(&db, &metrics, crate::store::now(), &device) {
                    Ok(r) if r.snapshots_written > 0 => tracing::debug!(?r, "learner run"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "learner run failed; retrying next interval"),
                }
                crate::app::sleep_unless_stopped(every, &stop);
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the learner thread: {e}"))
}
