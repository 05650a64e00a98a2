//! The in-memory registry every serving process answers from: each experiment's current
//! definition, status and latest policy snapshot. It is rebuilt from the store when the
//! store's fingerprint changes and swapped in atomically, so requests never wait on it.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::context::{targeted, Context};
use super::definition::{Definition, Status};
use crate::policy::linear::LinearState;
use crate::policy::{explore, ArmFeedback, PolicyError, PolicyState};
use crate::store::models::SnapshotRow;
use crate::store::queries::StoredExperiment;

/// What a policy snapshot row holds: the policy's state and the feedback it was fitted on.
/// A contextual policy (`lin_ts`, `lin_ucb`) also holds its linear model and how far the
/// learner has folded the log into it; its `policy` is then uniform, for display only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotState {
    pub policy: PolicyState,
    pub feedback: Vec<ArmFeedback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<LinearState>,
    /// Exposures created up to this time are folded into `linear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_until: Option<chrono::NaiveDateTime>,
}

#[derive(Debug, Clone)]
pub struct LiveExperiment {
    pub id: i64,
    pub key: String,
    pub status: Status,
    pub version: i32,
    pub salt: String,
    pub promoted_arm: Option<String>,
    pub definition: Definition,
    pub policy_version: i64,
    pub snapshot: SnapshotState,
    /// Arm payloads serialized once.
    pub payloads: Vec<Arc<serde_json::Value>>,
}

/// Why a unit got the default arm without a logged exposure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlogged {
    NotRunning,
    OutsideTraffic,
    NotTargeted,
    StoreUnavailable,
}

impl Unlogged {
    pub fn as_str(self) -> &'static str {
        match self {
            Unlogged::NotRunning => "not_running",
            Unlogged::OutsideTraffic => "outside_traffic",
            Unlogged::NotTargeted => "not_targeted",
            Unlogged::StoreUnavailable => "store_unavailable",
        }
    }
}

/// The outcome of the pure part of a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Draw {
    /// Drawn from `pmf` (over all arms; ineligible arms 0) with the exact `propensity`.
    Drawn { arm: usize, propensity: f64, pmf: Vec<f64> },
    /// The default arm, not logged.
    Default { arm: usize, reason: Unlogged },
}

impl LiveExperiment {
    pub fn from_stored(e: StoredExperiment, snap: &SnapshotRow) -> Result<LiveExperiment, String> {
        let snapshot: SnapshotState = serde_json::from_str(&snap.state)
            .map_err(|err| format!("snapshot {} of `{}` is unreadable: {err}", snap.policy_version, e.row.key))?;
        if snapshot.policy.pmf.len() != e.definition.arms.len()
            || snapshot.linear.as_ref().is_some_and(|l| l.arms() != e.definition.arms.len())
        {
            return Err(format!("snapshot {} of `{}` has the wrong number of arms", snap.policy_version, e.row.key));
        }
        if e.definition.policy.is_contextual() != snapshot.linear.is_some() {
            return Err(format!(
                "snapshot {} of `{}` does not match its policy kind `{}`",
                snap.policy_version,
                e.row.key,
                e.definition.policy.kind()
            ));
        }
        let status = e.status();
        Ok(LiveExperiment {
            id: e.row.id,
            key: e.row.key,
            status,
            version: e.row.current_version,
            salt: e.row.salt,
            promoted_arm: e.row.promoted_arm,
            payloads: e.definition.arms.iter().map(|a| Arc::new(a.payload.clone())).collect(),
            definition: e.definition,
            policy_version: snap.policy_version,
            snapshot,
        })
    }

    /// The promoted winner, else control.
    pub fn default_arm(&self) -> usize {
        self.promoted_arm
            .as_deref()
            .and_then(|k| self.definition.arm_index(k))
            .unwrap_or_else(|| self.definition.control_index())
    }

    /// The default arm if it is eligible, else the first eligible arm in definition order.
    pub fn default_arm_among(&self, eligible: &[bool]) -> usize {
        let d = self.default_arm();
        if eligible.get(d).copied().unwrap_or(false) {
            d
        } else {
            eligible.iter().position(|e| *e).unwrap_or(d)
        }
    }

    /// Why this unit gets the default arm without a draw (not running, outside the traffic
    /// share, not targeted), or `None` when the policy decides. Callers use it to skip
    /// work a draw would need (reading a profile) for units that get no draw.
    pub fn excluded(&self, unit_id: &str, ctx: &Context) -> Option<Unlogged> {
        if self.status != Status::Running {
            Some(Unlogged::NotRunning)
        } else if explore::traffic_bucket(&self.salt, unit_id) >= self.definition.traffic {
            Some(Unlogged::OutsideTraffic)
        } else if !targeted(&self.definition.targeting, ctx) {
            Some(Unlogged::NotTargeted)
        } else {
            None
        }
    }

    /// Decides for one request, without I/O. `eligible` has one entry per arm.
    pub fn decide(
        &self,
        unit_id: &str,
        request_id: &str,
        ctx: &Context,
        features: Option<&[f64]>,
        eligible: &[bool],
    ) -> Result<Draw, PolicyError> {
        if let Some(reason) = self.excluded(unit_id, ctx) {
            return Ok(Draw::Default { arm: self.default_arm_among(eligible), reason });
        }
        let seed = explore::draw_seed(&self.salt, unit_id, request_id);
        let pmf = match (&self.snapshot.linear, self.definition.policy.linear_exploration()) {
            (Some(model), Some(exploration)) => {
                let x = features.ok_or(PolicyError::NeedsContext { kind: self.definition.policy.kind() })?;
                // The Monte Carlo draws get their own seed (a hash of the draw's seed),
                // so the PMF and the uniform that picks from it are not the same number.
                let mc_seed = explore::draw_seed(&self.salt, "pmf", &seed.to_string());
                model.pmf(exploration, x, eligible, self.definition.min_propensity, mc_seed)?
            }
            _ => explore::restrict_and_floor(&self.snapshot.policy.pmf, eligible, self.definition.min_propensity)?,
        };
        let u = explore::unit_uniform(seed);
        let arm = explore::draw(&pmf, u);
        Ok(Draw::Drawn { arm, propensity: pmf[arm], pmf })
    }
}

/// All live experiments, by key and by id.
#[derive(Debug, Default)]
pub struct Registry {
    by_key: HashMap<String, Arc<LiveExperiment>>,
    by_id: HashMap<i64, Arc<LiveExperiment>>,
}

impl Registry {
    pub fn new(experiments: Vec<LiveExperiment>) -> Registry {
        let mut r = Registry::default();
        for e in experiments {
            let e = Arc::new(e);
            r.by_id.insert(e.id, e.clone());
            r.by_key.insert(e.key.clone(), e);
        }
        r
    }

    pub fn get(&self, key: &str) -> Option<&Arc<LiveExperiment>> {
        self.by_key.get(key)
    }

    pub fn by_id(&self, id: i64) -> Option<&Arc<LiveExperiment>> {
        self.by_id.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<LiveExperiment>> {
        self.by_key.values()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
