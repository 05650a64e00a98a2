//! Changes to experiments, shared by the REST API and the CLI: create, update (new
//! version when arms or policy change), lifecycle transitions with their audit record.
//!
//! Lifecycle: draft → running → paused ⇄ running → concluded | stopped. `conclude` may
//! name a winner, which becomes the default arm served to everyone.

use serde::{Deserialize, Serialize};

use super::definition::{Definition, FieldError, Status};
use super::registry::SnapshotState;
use crate::policy::{self, explore, ArmFeedback};
use crate::store::models::NewDecision;
use crate::store::queries::{self, StoredExperiment, UpdateOutcome};
use crate::store::{now, Db, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the definition is invalid: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("experiment `{0}` already exists")]
    Exists(String),
    #[error("no experiment `{0}`")]
    NotFound(String),
    #[error("cannot {action} an experiment that is {from}")]
    Transition { action: &'static str, from: &'static str },
    #[error("`{0}` is not an arm of this experiment")]
    UnknownArm(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("nothing to roll back: {0}")]
    NothingToRollBack(String),
    #[error("experiment `{0}` has no shadow candidate policy")]
    NoShadow(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Start,
    Pause,
    Resume,
    Conclude,
    Stop,
    /// Serve one arm (to all traffic, or beside a holdout on control).
    Promote,
    /// Undo the last promotion, or return to the previous version's arms and policy.
    Rollback,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Conclude => "conclude",
            Action::Stop => "stop",
            Action::Promote => "promote",
            Action::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "start" => Action::Start,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "conclude" => Action::Conclude,
            "stop" => Action::Stop,
            "promote" => Action::Promote,
            "rollback" => Action::Rollback,
            _ => return None,
        })
    }

    /// The status this action leads to from `from`, if allowed.
    pub fn apply(self, from: Status) -> Option<Status> {
        use Status::*;
        match (self, from) {
            (Action::Start, Draft) => Some(Running),
            (Action::Pause, Running) => Some(Paused),
            (Action::Resume, Paused) => Some(Running),
            (Action::Conclude, Running | Paused) => Some(Concluded),
            (Action::Stop, Draft | Running | Paused) => Some(Stopped),
            // Promotion with a holdout keeps the experiment running; see `promote`.
            (Action::Promote, Running | Paused) => Some(Concluded),
            _ => None,
        }
    }
}

/// The serialized initial snapshot of a definition's policy (priors, no feedback), with
/// the shadow candidate's initial state inside when the definition has one.
pub fn initial_snapshot(def: &Definition, salt: &str, version: i32) -> Result<String, AdminError> {
    let arm_keys = def.arm_keys();
    let seed = explore::draw_seed(salt, "policy-initial", &version.to_string());
    let mut state = initial_state(&def.policy, &arm_keys, seed, "policy")?;
    if let Some(shadow) = &def.shadow {
        let seed = explore::draw_seed(salt, "shadow-initial", &version.to_string());
        state.shadow = Some(Box::new(initial_state(&shadow.policy, &arm_keys, seed, "shadow.policy")?));
    }
    serde_json::to_string(&state).map_err(|e| AdminError::Store(StoreError::Corrupt(e.to_string())))
}

/// The initial state of one policy spec; `field` names it in errors.
fn initial_state(
    spec: &policy::PolicySpec,
    arm_keys: &[String],
    seed: u64,
    field: &str,
) -> Result<SnapshotState, AdminError> {
    let invalid =
        |e: policy::PolicyError| AdminError::Invalid(vec![FieldError { field: field.into(), reason: e.to_string() }]);
    let (state, linear, neural) = if spec.is_contextual() {
        // Shown as uniform; decisions come from the model and each request's context.
        let uniform = policy::PolicySpec::Fixed { weights: None };
        let shown = policy::initial_state(&uniform, arm_keys, seed).map_err(invalid)?;
        if spec.is_neural() {
            // A fresh network drawn from the spec's `seed`.
            let model = policy::initial_neural_state(spec, arm_keys).map_err(invalid)?;
            let neural = crate::experiment::registry::NeuralState {
                model,
                trained_at: None,
                rows: 0,
                snips_before: None,
                snips_after: None,
            };
            (shown, None, Some(neural))
        } else {
            (shown, Some(policy::initial_linear_state(spec, arm_keys).map_err(invalid)?), None)
        }
    } else {
        (policy::initial_state(spec, arm_keys, seed).map_err(invalid)?, None, None)
    };
    Ok(SnapshotState {
        policy: state,
        feedback: vec![ArmFeedback::default(); arm_keys.len()],
        linear,
        neural,
        learned_until: None,
        shadow: None,
    })
}

fn check(def: &Definition) -> Result<(), AdminError> {
    let errs = def.validate();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(AdminError::Invalid(errs))
    }
}

pub fn create(db: &Db, def: &Definition, actor: &str) -> Result<StoredExperiment, AdminError> {
    check(def)?;
    let salt = crate::keys::generate_secret()[..16].to_string();
    let snapshot = initial_snapshot(def, &salt, 1)?;
    let created = queries::create_experiment(db, def, &salt, &snapshot).map_err(|e| match e {
        StoreError::Conflict(_) => AdminError::Exists(def.key.clone()),
        other => AdminError::Store(other),
    })?;
    queries::insert_decision(
        db,
        NewDecision {
            experiment_id: created.row.id,
            action: "create".into(),
            actor: actor.into(),
            reason: "experiment created".into(),
            details: serde_json::json!({"status": created.row.status, "version": 1}).to_string(),
            created_at: now(),
        },
    )?;
    Ok(created)
}

pub fn update(db: &Db, def: &Definition, actor: &str) -> Result<(StoredExperiment, UpdateOutcome), AdminError> {
    check(def)?;
    let current = queries::get_experiment(db, &def.key).map_err(|e| not_found(e, &def.key))?;
    let snapshot = initial_snapshot(def, &current.row.salt, current.row.current_version + 1)?;
    let (stored, outcome) = queries::update_experiment(db, def, &snapshot).map_err(|e| not_found(e, &def.key))?;
    if outcome != UpdateOutcome::Unchanged {
        queries::insert_decision(
            db,
            NewDecision {
                experiment_id: stored.row.id,
                action: "update".into(),
                actor: actor.into(),
                reason: match outcome {
                    UpdateOutcome::NewVersion(v) => format!("arms or policy changed: version {v}"),
                    _ => "definition changed in place".into(),
                },
                details: serde_json::json!({"version": stored.row.current_version}).to_string(),
                created_at: now(),
            },
        )?;
    }
    Ok((stored, outcome))
}

fn not_found(e: StoreError, key: &str) -> AdminError {
    match e {
        StoreError::NotFound => AdminError::NotFound(key.to_string()),
        other => AdminError::Store(other),
    }
}

/// Applies a lifecycle action and records it in the audit log.
pub fn transition(
    db: &Db,
    key: &str,
    action: Action,
    actor: &str,
    reason: &str,
    winner: Option<&str>,
) -> Result<StoredExperiment, AdminError> {
    match action {
        Action::Promote => {
            let arm = winner.ok_or_else(|| AdminError::InvalidRequest("`promote` needs the arm: `winner`".into()))?;
            return promote(db, key, arm, 0.0, actor, reason, serde_json::Value::Null);
        }
        Action::Rollback => return rollback(db, key, actor, reason),
        _ => {}
    }
    let current = queries::get_experiment(db, key).map_err(|e| not_found(e, key))?;
    let from = current.status();
    let to = action.apply(from).ok_or(AdminError::Transition { action: action.as_str(), from: from.as_str() })?;
    if let Some(w) = winner {
        if current.definition.arm_index(w).is_none() {
            return Err(AdminError::UnknownArm(w.to_string()));
        }
    }
    let promoted = match (action, winner) {
        (Action::Conclude, Some(w)) => Some(Some(w)),
        _ => None,
    };
    let reason = if reason.trim().is_empty() { format!("{} by {actor}", action.as_str()) } else { reason.to_string() };
    let row = queries::set_status(
        db,
        current.row.id,
        to,
        promoted,
        decision(
            current.row.id,
            action.as_str(),
            actor,
            reason,
            serde_json::json!({"from": from.as_str(), "to": to.as_str(), "winner": winner,
                "statistics": latest_statistics(db, current.row.id)}),
        ),
    )?;
    Ok(StoredExperiment { row, definition: current.definition })
}

/// The experiment `key` and its status, when it is running or paused (the states a
/// promotion can start from); otherwise `action` is refused as a transition.
fn running_or_paused(db: &Db, key: &str, action: &'static str) -> Result<(StoredExperiment, Status), AdminError> {
    let current = queries::get_experiment(db, key).map_err(|e| not_found(e, key))?;
    let from = current.status();
    if !matches!(from, Status::Running | Status::Paused) {
        return Err(AdminError::Transition { action, from: from.as_str() });
    }
    Ok((current, from))
}

/// Promotes `arm`. Without a holdout the experiment is concluded and every unit gets
/// `arm` (unlogged). With `holdout` in (0, 1) it keeps running in a new version whose
/// policy serves `arm` to 1 − holdout of the traffic and control to the rest (no floor for
/// the other arms), so the long-term effect of the winner keeps being measured against
/// control. `details` (the statistics that justified it) goes to the audit log.
pub fn promote(
    db: &Db,
    key: &str,
    arm: &str,
    holdout: f64,
    actor: &str,
    reason: &str,
    details: serde_json::Value,
) -> Result<StoredExperiment, AdminError> {
    let (current, from) = running_or_paused(db, key, "promote")?;
    let def = &current.definition;
    if def.arm_index(arm).is_none() {
        return Err(AdminError::UnknownArm(arm.to_string()));
    }
    if !(0.0..1.0).contains(&holdout) {
        return Err(AdminError::InvalidRequest(format!("`holdout` must lie in [0, 1), got {holdout}")));
    }
    let control = def.arms[def.control_index()].key.clone();
    let reason = if reason.trim().is_empty() { format!("promote `{arm}` by {actor}") } else { reason.to_string() };
    let with_holdout = holdout > 0.0 && arm != control;
    let details = if details.is_null() { latest_statistics(db, current.row.id) } else { details };
    let mut record = serde_json::json!({
        "from": from.as_str(), "arm": arm, "holdout": if with_holdout { holdout } else { 0.0 },
        "version": current.row.current_version, "statistics": details,
    });
    if !with_holdout {
        let row = queries::set_status(
            db,
            current.row.id,
            Status::Concluded,
            Some(Some(arm)),
            decision(current.row.id, "promote", actor, reason, record),
        )?;
        return Ok(StoredExperiment { row, definition: current.definition });
    }
    let mut next = def.clone();
    let weights = def
        .arms
        .iter()
        .map(|a| {
            let w = if a.key == arm {
                1.0 - holdout
            } else if a.key == control {
                holdout
            } else {
                0.0
            };
            (a.key.clone(), w)
        })
        .collect();
    next.policy = crate::policy::PolicySpec::Fixed { weights: Some(weights) };
    next.min_propensity = 0.0;
    let (stored, _) = update(db, &next, actor)?;
    record["new_version"] = serde_json::json!(stored.row.current_version);
    let row = queries::set_status(
        db,
        stored.row.id,
        Status::Running,
        Some(Some(arm)),
        decision(stored.row.id, "promote", actor, reason, record),
    )?;
    Ok(StoredExperiment { row, definition: stored.definition })
}

/// Shadow mode: makes the candidate the live policy. The experiment gets a new version whose
/// `[policy]` is the candidate and whose `[shadow]` is cleared (`[features]` is dropped when
/// neither policy reads it any more); a linear candidate keeps the model it learned in
/// shadow, a `neural_pg` candidate its trained network (with when and on what it was last
/// trained, so its retrain schedule carries on). Audited as `promote_shadow` by `actor` with
/// `reason` and `details` (the evaluation that justified it, or null for an admin's decision).
pub fn promote_shadow(
    db: &Db,
    key: &str,
    actor: &str,
    reason: &str,
    details: serde_json::Value,
) -> Result<StoredExperiment, AdminError> {
    let (current, _) = running_or_paused(db, key, "promote_shadow")?;
    let Some(candidate) = current.definition.shadow.clone() else {
        return Err(AdminError::NoShadow(key.to_string()));
    };
    // The candidate's learned state, to carry over (linear kinds fold only new exposures; a
    // network is warm-started from its weights).
    let learned: Option<SnapshotState> = queries::latest_snapshot(db, current.row.id, current.row.current_version)
        .ok()
        .and_then(|row| serde_json::from_str::<SnapshotState>(&row.state).ok())
        .and_then(|s| s.shadow.map(|b| *b));
    let mut next = current.definition.clone();
    let replaced = std::mem::replace(&mut next.policy, candidate.policy.clone());
    next.shadow = None;
    if !next.policy.is_contextual() {
        next.features = None;
    }
    let (stored, _) = update(db, &next, actor)?;
    if let Some(state) = learned.filter(|s| carries_over(&candidate.policy, s)) {
        let n: u64 = state.feedback.iter().map(|f| f.n).sum();
        let json = serde_json::to_string(&state).map_err(|e| AdminError::Store(StoreError::Corrupt(e.to_string())))?;
        queries::insert_snapshot(db, stored.row.id, stored.row.current_version, &json, n as i64)?;
    }
    let reason =
        if reason.trim().is_empty() { format!("shadow candidate promoted by {actor}") } else { reason.to_string() };
    queries::insert_decision(
        db,
        decision(
            stored.row.id,
            "promote_shadow",
            actor,
            reason,
            serde_json::json!({"from_version": current.row.current_version, "new_version": stored.row.current_version,
                "previous_policy": replaced.kind(), "promoted_policy": candidate.policy.kind(),
                "evaluation": details}),
        ),
    )?;
    Ok(stored)
}

/// Whether a shadow candidate's learned `state` goes live with it: a linear model for a
/// linear candidate, a network of the candidate's parameters for `neural_pg` (what
/// [`super::registry::LiveExperiment::from_stored`] accepts for the promoted policy); a
/// context-free candidate starts the new version from its priors.
fn carries_over(spec: &policy::PolicySpec, state: &SnapshotState) -> bool {
    if spec.is_neural() {
        state.linear.is_none()
            && state.neural.as_ref().is_some_and(|n| Some(&n.model.params) == spec.neural_params().as_ref())
    } else {
        spec.is_contextual() && state.linear.is_some() && state.neural.is_none()
    }
}

/// Shadow mode: drops the candidate (a new version without `[shadow]`), audited as
/// `drop_shadow`.
pub fn drop_shadow(db: &Db, key: &str, actor: &str, reason: &str) -> Result<StoredExperiment, AdminError> {
    let current = queries::get_experiment(db, key).map_err(|e| not_found(e, key))?;
    let Some(candidate) = current.definition.shadow.clone() else {
        return Err(AdminError::NoShadow(key.to_string()));
    };
    let mut next = current.definition.clone();
    next.shadow = None;
    if !next.policy.is_contextual() {
        next.features = None;
    }
    let (stored, _) = update(db, &next, actor)?;
    let reason =
        if reason.trim().is_empty() { format!("shadow candidate dropped by {actor}") } else { reason.to_string() };
    queries::insert_decision(
        db,
        decision(
            stored.row.id,
            "drop_shadow",
            actor,
            reason,
            serde_json::json!({"from_version": current.row.current_version, "new_version": stored.row.current_version,
                "dropped_policy": candidate.policy.kind()}),
        ),
    )?;
    Ok(stored)
}

/// Rolls back the last promotion (a concluded experiment runs again; a holdout version
/// is replaced by the version before it), or else the last change of arms or policy: the
/// previous version's definition becomes a new version.
pub fn rollback(db: &Db, key: &str, actor: &str, reason: &str) -> Result<StoredExperiment, AdminError> {
    let current = queries::get_experiment(db, key).map_err(|e| not_found(e, key))?;
    let from = current.status();
    let reason = if reason.trim().is_empty() { format!("rollback by {actor}") } else { reason.to_string() };
    let promoted = current.row.promoted_arm.clone();
    if from == Status::Concluded && promoted.is_some() {
        let row = queries::set_status(
            db,
            current.row.id,
            Status::Running,
            Some(None),
            decision(
                current.row.id,
                "rollback",
                actor,
                reason,
                serde_json::json!({"undone": "promotion", "arm": promoted,
                    "statistics": latest_statistics(db, current.row.id)}),
            ),
        )?;
        return Ok(StoredExperiment { row, definition: current.definition });
    }
    if !matches!(from, Status::Running | Status::Paused) {
        return Err(AdminError::Transition { action: "rollback", from: from.as_str() });
    }
    let version = current.row.current_version;
    if version <= 1 {
        return Err(AdminError::NothingToRollBack("the experiment has a single version".into()));
    }
    let mut previous = queries::version_definition(db, current.row.id, version - 1)?;
    previous.status = current.definition.status;
    // Settings that are not part of the version (name, analysis, …) stay as they are now.
    let mut next = current.definition.clone();
    next.arms = previous.arms;
    next.policy = previous.policy;
    next.min_propensity = previous.min_propensity;
    let (stored, _) = update(db, &next, actor)?;
    let row = queries::set_status(
        db,
        stored.row.id,
        from,
        Some(None),
        decision(
            stored.row.id,
            "rollback",
            actor,
            reason,
            serde_json::json!({"undone": if promoted.is_some() { "promotion" } else { "version" },
                "restored_from_version": version - 1, "new_version": stored.row.current_version,
                "statistics": latest_statistics(db, stored.row.id)}),
        ),
    )?;
    Ok(StoredExperiment { row, definition: stored.definition })
}

/// The newest stored analysis of an experiment (what a manual decision was taken on), or
/// null when there is none or it cannot be read.
pub fn latest_statistics(db: &Db, experiment_id: i64) -> serde_json::Value {
    match crate::store::analysis::latest_analysis(db, experiment_id, None, None) {
        Ok(Some(row)) => serde_json::json!({
            "analysis_id": row.id, "version": row.version, "analyzed_at": row.created_at,
            "analysis": serde_json::from_str::<serde_json::Value>(&row.result).unwrap_or(serde_json::Value::Null),
        }),
        _ => serde_json::Value::Null,
    }
}

/// An audit-log entry made now.
pub fn decision(
    experiment_id: i64,
    action: &str,
    actor: &str,
    reason: String,
    details: serde_json::Value,
) -> NewDecision {
    NewDecision {
        experiment_id,
        action: action.into(),
        actor: actor.into(),
        reason,
        details: details.to_string(),
        created_at: now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_allows_only_forward_moves() {
        assert_eq!(Action::Start.apply(Status::Draft), Some(Status::Running));
        assert_eq!(Action::Pause.apply(Status::Running), Some(Status::Paused));
        assert_eq!(Action::Resume.apply(Status::Paused), Some(Status::Running));
        assert_eq!(Action::Conclude.apply(Status::Paused), Some(Status::Concluded));
        assert_eq!(Action::Start.apply(Status::Running), None);
        assert_eq!(Action::Resume.apply(Status::Concluded), None);
        assert_eq!(Action::Stop.apply(Status::Concluded), None);
        assert_eq!(Action::Conclude.apply(Status::Draft), None);
    }
}
