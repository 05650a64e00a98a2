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
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Conclude => "conclude",
            Action::Stop => "stop",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "start" => Action::Start,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "conclude" => Action::Conclude,
            "stop" => Action::Stop,
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
            _ => None,
        }
    }
}

/// The serialized initial snapshot of a definition's policy (priors, no feedback).
pub fn initial_snapshot(def: &Definition, salt: &str, version: i32) -> Result<String, AdminError> {
    let arm_keys = def.arm_keys();
    let seed = explore::draw_seed(salt, "policy-initial", &version.to_string());
    let state = policy::initial_state(&def.policy, &arm_keys, seed)
        .map_err(|e| AdminError::Invalid(vec![FieldError { field: "policy".into(), reason: e.to_string() }]))?;
    serde_json::to_string(&SnapshotState { policy: state, feedback: vec![ArmFeedback::default(); arm_keys.len()] })
        .map_err(|e| AdminError::Store(StoreError::Corrupt(e.to_string())))
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
        NewDecision {
            experiment_id: current.row.id,
            action: action.as_str().into(),
            actor: actor.into(),
            reason,
            details: serde_json::json!({"from": from.as_str(), "to": to.as_str(), "winner": winner}).to_string(),
            created_at: now(),
        },
    )?;
    Ok(StoredExperiment { row, definition: current.definition })
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
