//! The learner's pass for contextual policies (`lin_ts`, `lin_ucb`): folds the exposures
//! that matured since the last snapshot (older than `reward_wait`) into the linear model,
//! one rank-1 update per exposure with the context that was scored and the exposure's
//! total on the primary metric, and writes the result as a new snapshot.
//!
//! Incremental: the snapshot remembers up to which exposure time it has folded
//! (`learned_until`); a reward that arrives after its exposure was folded is not counted
//! (the same cut-off as the context-free learner's `reward_wait`).

use chrono::NaiveDateTime;

use crate::experiment::registry::{LoggedContext, SnapshotState};
use crate::policy::ArmFeedback;
use crate::store::queries::StoredExperiment;
use crate::store::{profiles, Db, StoreError};

/// What one pass did for one experiment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Folded {
    pub rows: usize,
    /// Rows skipped because their stored context could not be used (logged).
    pub skipped: usize,
}

/// Folds new matured exposures into `previous`; `None` when nothing new matured.
pub fn update(
    db: &Db,
    stored: &StoredExperiment,
    previous: &SnapshotState,
    until: NaiveDateTime,
) -> Result<Option<(SnapshotState, Folded)>, StoreError> {
    let def = &stored.definition;
    let Some(mut model) = previous.linear.clone() else {
        return Err(StoreError::Corrupt(format!("snapshot of `{}` has no linear model", stored.row.key)));
    };
    let after = previous.learned_until.unwrap_or(chrono::DateTime::UNIX_EPOCH.naive_utc());
    if until <= after {
        return Ok(None);
    }
    let rows =
        profiles::learning_rows(db, stored.row.id, stored.row.current_version, &def.primary_metric.name, after, until)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut feedback = previous.feedback.clone();
    feedback.resize(def.arms.len(), ArmFeedback::default());
    let mut folded = Folded::default();
    for r in &rows {
        // A plain vector, or the `x` of a neural context (logged when a `neural_pg` policy,
        // live or shadow, reads the same exposures).
        let x: Option<Vec<f64>> = serde_json::from_str::<LoggedContext>(&r.features).ok().map(|c| c.x().to_vec());
        let applied = match (def.arm_index(&r.arm), x) {
            (Some(arm), Some(x)) => model.observe(arm, &x, r.reward).map(|()| arm).map_err(|e| e.to_string()),
            (None, _) => Err(format!("unknown arm `{}`", r.arm)),
            (_, None) => Err("unreadable features".to_string()),
        };
        match applied {
            Ok(arm) => {
                let f = &mut feedback[arm];
                f.n += 1;
                f.sum += r.reward;
                f.sum_sq += r.reward * r.reward;
                folded.rows += 1;
            }
            Err(reason) => {
                tracing::warn!(experiment = %stored.row.key, %reason, "exposure skipped by the contextual learner");
                folded.skipped += 1;
            }
        }
    }
    let next = SnapshotState {
        policy: previous.policy.clone(),
        feedback,
        linear: Some(model),
        neural: None,
        learned_until: Some(until),
        shadow: previous.shadow.clone(),
    };
    Ok(Some((next, folded)))
}
