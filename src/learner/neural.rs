//! The learner's pass for `neural_pg`: periodic off-policy retraining of the network.
//!
//! A retrain happens when both hold: at least the spec's `retrain_every` has passed since
//! the last one (the initial network counts as never trained), and at least
//! `min_new_rows` exposures have matured (are older than `reward_wait`) since the last
//! one. It reads the newest `max_train_rows` matured exposures of the experiment's
//! current version, each with the context that was scored (rebuilt from the logged
//! [`NeuralContext`]: features, decision time and recent events), the logged arm, the
//! logged propensity and the exposure's total on the primary metric, and runs
//! [`NeuralPolicy::train`] warm-started from the current weights (`epochs` passes,
//! maximising the clipped self-normalised IPW value, see [`crate::policy::neural`]). The
//! new weights go out as a new snapshot version, which every replica picks up on its next
//! registry refresh.
//!
//! As with the other kinds, a reward that arrives after its exposure matured still counts
//! at the next retrain: every retrain re-reads the rewards of all the rows it uses.
//!
//! A `neural_pg` shadow candidate is retrained by the same [`update`] on its own spec's
//! schedule, from its own state (network, `trained_at`, `learned_until`) inside the live
//! snapshot: the same rows, the same logged (live) propensities, since every exposure of an
//! experiment with a neural candidate logs the [`NeuralContext`] too.

use candle_core::Device;
use chrono::NaiveDateTime;

use crate::experiment::registry::{NeuralState, SnapshotState};
use crate::policy::neural::{LoggedRow, NeuralContext, NeuralPolicy, TrainReport};
use crate::policy::{ArmFeedback, PolicySpec};
use crate::store::queries::StoredExperiment;
use crate::store::{Db, StoreError};

/// What one retrain did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retrained {
    /// Rows trained on.
    pub rows: usize,
    /// Of those, matured since the previous retrain.
    pub new_rows: usize,
    /// Rows skipped because their logged context or propensity could not be used (logged).
    pub skipped: usize,
    pub report: Option<TrainReport>,
}

/// One matured exposure of a `neural_pg` experiment.
#[derive(Debug, Clone, PartialEq, diesel::QueryableByName)]
pub struct NeuralRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub arm: String,
    /// The logged [`NeuralContext`] (JSON).
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub features: String,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub propensity: f64,
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    pub created_at: NaiveDateTime,
    /// The exposure's total of the metric (0 without a reward).
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub reward: f64,
}

/// The newest `limit` exposures of (experiment, version) created at or before `until`
/// that carry a logged context, with their propensity and total reward on `metric`,
/// oldest first.
pub fn training_rows(
    db: &Db,
    experiment_id: i64,
    version: i32,
    metric: &str,
    until: NaiveDateTime,
    limit: u64,
) -> Result<Vec<NeuralRow>, StoreError> {
    use diesel::sql_types::{BigInt, Integer, Text, Timestamp};
    const SQL: &str = "SELECT e.arm AS arm, e.features AS features, e.propensity AS propensity, \
         e.created_at AS created_at, COALESCE(SUM(r.value), 0.0) AS reward \
         FROM exposures e LEFT JOIN rewards r ON r.exposure_id = e.id AND r.metric = ? \
         WHERE e.experiment_id = ? AND e.version = ? AND e.created_at <= ? AND e.features IS NOT NULL \
         GROUP BY e.id, e.arm, e.features, e.propensity, e.created_at \
         ORDER BY e.created_at DESC, e.id DESC LIMIT ?";
    let sql = if db.is_postgres() { crate::store::queries::pg_placeholders(SQL) } else { SQL.to_string() };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = crate::db_run!(db, |conn| {
        use diesel::RunQueryDsl;
        diesel::sql_query(&sql)
            .bind::<Text, _>(metric)
            .bind::<BigInt, _>(experiment_id)
            .bind::<Integer, _>(version)
            .bind::<Timestamp, _>(until)
            .bind::<BigInt, _>(limit)
            .load::<NeuralRow>(conn)?
    });
    rows.reverse();
    Ok(rows)
}

/// Retrains `previous`'s network (the state of `spec`: the live policy, or a shadow
/// candidate's own state) when `spec`'s schedule says so (see the module docs); `None` when
/// it is not time yet, too few new exposures matured, or training failed (logged; the
/// previous snapshot stays).
pub fn update(
    db: &Db,
    stored: &StoredExperiment,
    spec: &PolicySpec,
    previous: &SnapshotState,
    until: NaiveDateTime,
    now: NaiveDateTime,
    device: &Device,
) -> Result<Option<(SnapshotState, Retrained)>, StoreError> {
    let def = &stored.definition;
    let key = &stored.row.key;
    let Some(state) = &previous.neural else {
        return Err(StoreError::Corrupt(format!("snapshot of `{key}` has no neural model")));
    };
    let Some(schedule) = spec.retrain_schedule() else {
        return Err(StoreError::Corrupt(format!("`{key}` is not a neural_pg experiment")));
    };
    if state.trained_at.is_some_and(|t| now < t + crate::experiment::definition::to_chrono(schedule.every)) {
        return Ok(None);
    }
    let after = previous.learned_until.unwrap_or(chrono::DateTime::UNIX_EPOCH.naive_utc());
    if until <= after {
        return Ok(None);
    }
    let rows = training_rows(
        db,
        stored.row.id,
        stored.row.current_version,
        &def.primary_metric.name,
        until,
        schedule.max_train_rows,
    )?;
    let new_rows = rows.iter().filter(|r| r.created_at > after).count();
    if (new_rows as u64) < schedule.min_new_rows {
        return Ok(None);
    }
    let features = state.model.params.features;
    let mut retrained = Retrained { new_rows, ..Default::default() };
    let mut logged = Vec::with_capacity(rows.len());
    let mut feedback = vec![ArmFeedback::default(); def.arms.len()];
    for r in &rows {
        let usable = match (def.arm_index(&r.arm), serde_json::from_str::<NeuralContext>(&r.features)) {
            (None, _) => Err(format!("unknown arm `{}`", r.arm)),
            (_, Err(e)) => Err(format!("unreadable logged context: {e}")),
            (Some(_), Ok(c)) if c.x.len() != features => {
                Err(format!("logged context has {} features; the policy reads {features}", c.x.len()))
            }
            (Some(_), Ok(_)) if !(r.propensity.is_finite() && r.propensity > 0.0 && r.propensity <= 1.0) => {
                Err(format!("propensity {} is not in (0, 1]", r.propensity))
            }
            (Some(_), Ok(_)) if !r.reward.is_finite() => Err(format!("reward {} is not finite", r.reward)),
            (Some(arm), Ok(c)) => Ok((arm, c)),
        };
        match usable {
            Ok((arm, c)) => {
                let f = &mut feedback[arm];
                f.n += 1;
                f.sum += r.reward;
                f.sum_sq += r.reward * r.reward;
                logged.push(LoggedRow { input: c.input(), arm, propensity: r.propensity, reward: r.reward });
            }
            Err(reason) => {
                tracing::warn!(experiment = %key, %reason, "exposure skipped by the neural learner");
                retrained.skipped += 1;
            }
        }
    }
    if logged.is_empty() {
        return Ok(None);
    }
    let trained = NeuralPolicy::from_snapshot(&state.model, device).and_then(|mut policy| {
        let report = policy.train(&logged)?;
        Ok((policy.snapshot()?, report))
    });
    let (model, report) = match trained {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(experiment = %key, error = %e, "neural retrain failed; keeping the previous snapshot");
            return Ok(None);
        }
    };
    let finite = |v: f64| v.is_finite().then_some(v);
    let neural = NeuralState {
        model,
        trained_at: Some(now),
        rows: logged.len() as u64,
        snips_before: finite(report.snips_before),
        snips_after: finite(report.snips_after),
    };
    retrained.rows = logged.len();
    retrained.report = Some(report);
    let next = SnapshotState {
        policy: previous.policy.clone(),
        feedback,
        linear: None,
        neural: Some(neural),
        learned_until: Some(until),
        shadow: previous.shadow.clone(),
    };
    Ok(Some((next, retrained)))
}
