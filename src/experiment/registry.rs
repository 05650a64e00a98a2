//! The in-memory registry every serving process answers from: each experiment's current
//! definition, status and latest policy snapshot. It is rebuilt from the store when the
//! store's fingerprint changes and swapped in atomically, so requests never wait on it.
//!
//! A `neural_pg` experiment also holds its network, loaded once per snapshot on the
//! process's scoring device and wrapped in [`Scoring`] (the micro-batcher, or inline
//! scoring for small CPU models): [`LiveExperiment::load`] reuses the previous registry's
//! scorer while the snapshot is the same, so a rebuild for another experiment's change
//! reloads nothing.
//!
//! A `neural_pg` shadow candidate gets its own network and scorer the same way
//! ([`LiveExperiment::shadow_neural`]); it is reused while the candidate's weights are the
//! same (the live policy's learner writes new snapshot rows far more often than the
//! candidate is retrained).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::context::{targeted, Context};
use super::definition::{Definition, Status};
use crate::policy::linear::LinearState;
use crate::policy::neural::{NeuralContext, NeuralPolicy, NeuralSnapshot};
use crate::policy::{explore, ArmFeedback, PolicyError, PolicyState};
use crate::scoring::{BatchConfig, Scoring, ScoringError};
use crate::store::models::SnapshotRow;
use crate::store::queries::StoredExperiment;
use crate::telemetry::ScoringMetrics;

/// What a policy snapshot row holds: the policy's state and the feedback it was fitted on.
/// A contextual policy (`lin_ts`, `lin_ucb`) also holds its linear model and how far the
/// learner has folded the log into it; `neural_pg` holds its network instead. Their
/// `policy` is then uniform, for display only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotState {
    pub policy: PolicyState,
    pub feedback: Vec<ArmFeedback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<LinearState>,
    /// `neural_pg`: the network and how it was last trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neural: Option<NeuralState>,
    /// Exposures created up to this time are folded into `linear` (or, for `neural_pg`,
    /// were matured when the network was last trained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_until: Option<chrono::NaiveDateTime>,
    /// Shadow mode: the candidate policy's own state (same shape: context-free PMF and
    /// feedback, a linear model, or a `neural_pg` network with its own `learned_until`),
    /// learned from the same log; `None` without a candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Box<SnapshotState>>,
}

/// The network of a `neural_pg` snapshot and what its last retrain did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeuralState {
    /// Parameters, arm count and weights (safetensors, hex).
    pub model: NeuralSnapshot,
    /// When the learner last retrained it; `None` for the initial network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_at: Option<chrono::NaiveDateTime>,
    /// Logged rows the last retrain used.
    #[serde(default)]
    pub rows: u64,
    /// Clipped self-normalised IPW value on those rows before and after the retrain
    /// (`None`: not computable, every importance weight was 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snips_before: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snips_after: Option<f64>,
}

/// Where and how this process scores neural policies: the device resolved once from
/// `--device`, the micro-batcher's bounds, and the Prometheus series the scorers report to
/// (unregistered by default; `AppState` uses its registry's).
#[derive(Debug, Clone)]
pub struct ScoringSetup {
    pub device: Device,
    pub batch: BatchConfig,
    pub metrics: ScoringMetrics,
}

impl Default for ScoringSetup {
    fn default() -> Self {
        ScoringSetup::new(Device::Cpu, BatchConfig::default())
    }
}

impl ScoringSetup {
    /// Scoring on `device` with `batch` bounds, reporting to no registry.
    pub fn new(device: Device, batch: BatchConfig) -> Self {
        ScoringSetup { device, batch, metrics: ScoringMetrics::new() }
    }
}

/// A loaded `neural_pg` network and its scorer, for one snapshot row.
pub struct NeuralServing {
    scoring: Scoring<NeuralPolicy>,
    /// The `policy_snapshots` row it was loaded from.
    snapshot_id: i64,
}

impl std::fmt::Debug for NeuralServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeuralServing")
            .field("snapshot_id", &self.snapshot_id)
            .field("batched", &self.scoring.is_batched())
            .finish()
    }
}

impl NeuralServing {
    /// Loads `model` on `setup.device` and starts its scorer, which reports under `experiment`.
    pub fn new(
        model: &NeuralSnapshot,
        snapshot_id: i64,
        setup: &ScoringSetup,
        experiment: &str,
    ) -> Result<Self, String> {
        let policy = NeuralPolicy::from_snapshot(model, &setup.device).map_err(|e| e.to_string())?;
        let metrics = setup.metrics.scorer(experiment);
        let scoring = Scoring::observed(Arc::new(policy), setup.batch, metrics).map_err(|e| e.to_string())?;
        Ok(NeuralServing { scoring, snapshot_id })
    }

    /// `π_θ(·|x)` over all arms (before eligibility and the floor), through the
    /// micro-batcher or inline.
    pub async fn pmf(&self, ctx: &NeuralContext) -> Result<Vec<f64>, ScoringError> {
        self.scoring.score(ctx.input()).await
    }

    pub fn is_batched(&self) -> bool {
        self.scoring.is_batched()
    }

    pub fn snapshot_id(&self) -> i64 {
        self.snapshot_id
    }
}

/// The context logged with a contextual exposure (its `features` column): the encoded
/// vector for the linear kinds (a JSON array, what their learner folds), the vector, the
/// decision time and the recent events for `neural_pg` (a JSON object, see
/// [`NeuralContext`]: the learner rebuilds the scored input from it).
///
/// The neural form is logged whenever the live policy *or* the shadow candidate is
/// `neural_pg` ([`Definition::logs_neural_context`]); a linear policy beside it reads its
/// `x` ([`Self::x`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LoggedContext {
    Linear(Vec<f64>),
    Neural(NeuralContext),
}

impl LoggedContext {
    /// The encoded feature vector: what `lin_ts` / `lin_ucb` read, in either form.
    pub fn x(&self) -> &[f64] {
        match self {
            LoggedContext::Linear(x) => x,
            LoggedContext::Neural(c) => &c.x,
        }
    }

    /// The scored neural context, when one was logged.
    pub fn neural(&self) -> Option<&NeuralContext> {
        match self {
            LoggedContext::Linear(_) => None,
            LoggedContext::Neural(c) => Some(c),
        }
    }
}

/// What the policy reads for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyInput<'a> {
    /// Nothing: context-free kinds.
    None,
    /// The encoded context (`lin_ts`, `lin_ucb`).
    Features(&'a [f64]),
    /// `neural_pg`: the network's PMF over all arms for this request, already scored
    /// ([`LiveExperiment::neural_pmf`]).
    Scored(&'a [f64]),
}

impl<'a> PolicyInput<'a> {
    /// What `spec` reads for one request: `scored` (its network's PMF) for `neural_pg`, the
    /// logged context's encoded vector for `lin_ts` / `lin_ucb`, nothing for the
    /// context-free kinds. A contextual kind without its input gets `None`, which
    /// [`LiveExperiment::decide`] and [`LiveExperiment::shadow_pmf`] refuse.
    pub fn for_spec(
        spec: &crate::policy::PolicySpec,
        logged: Option<&'a LoggedContext>,
        scored: Option<&'a [f64]>,
    ) -> Self {
        if spec.is_neural() {
            scored.map_or(PolicyInput::None, PolicyInput::Scored)
        } else if spec.is_contextual() {
            logged.map_or(PolicyInput::None, |c| PolicyInput::Features(c.x()))
        } else {
            PolicyInput::None
        }
    }
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
    /// `neural_pg`: the loaded network and its scorer (`None` until [`Self::load`] or
    /// [`Self::attach_scorer`] loads it).
    pub neural: Option<Arc<NeuralServing>>,
    /// A `neural_pg` shadow candidate's network and scorer, loaded the same way.
    pub shadow_neural: Option<Arc<NeuralServing>>,
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
        let arms = e.definition.arms.len();
        if snapshot.policy.pmf.len() != arms
            || snapshot.linear.as_ref().is_some_and(|l| l.arms() != arms)
            || snapshot.neural.as_ref().is_some_and(|n| n.model.arms != arms)
        {
            return Err(format!("snapshot {} of `{}` has the wrong number of arms", snap.policy_version, e.row.key));
        }
        let policy = &e.definition.policy;
        let matches_kind = if policy.is_neural() {
            snapshot.linear.is_none()
                && snapshot.neural.as_ref().is_some_and(|n| Some(&n.model.params) == policy.neural_params().as_ref())
        } else {
            snapshot.neural.is_none() && policy.is_contextual() == snapshot.linear.is_some()
        };
        if !matches_kind {
            return Err(format!(
                "snapshot {} of `{}` does not match its policy kind `{}`",
                snap.policy_version,
                e.row.key,
                e.definition.policy.kind()
            ));
        }
        if let (Some(candidate), Some(state)) = (&e.definition.shadow, &snapshot.shadow) {
            let spec = &candidate.policy;
            let fits = state.policy.pmf.len() == arms
                && if spec.is_neural() {
                    state.linear.is_none()
                        && state.neural.as_ref().is_some_and(|n| {
                            n.model.arms == arms && Some(&n.model.params) == spec.neural_params().as_ref()
                        })
                } else {
                    state.neural.is_none()
                        && state
                            .linear
                            .as_ref()
                            .map_or(!spec.is_contextual(), |l| l.arms() == arms && spec.is_contextual())
                };
            if !fits {
                return Err(format!(
                    "snapshot {} of `{}` holds a shadow state that does not match its candidate `{}`",
                    snap.policy_version,
                    e.row.key,
                    candidate.policy.kind()
                ));
            }
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
            neural: None,
            shadow_neural: None,
        })
    }

    /// [`Self::from_stored`], then, for `neural_pg`, the network loaded on `setup`'s device
    /// with its scorer — or `previous`'s scorer when it was loaded from the same snapshot row
    /// (one load per snapshot, not per registry rebuild).
    pub fn load(
        e: StoredExperiment,
        snap: &SnapshotRow,
        setup: &ScoringSetup,
        previous: Option<&LiveExperiment>,
    ) -> Result<LiveExperiment, String> {
        let mut live = Self::from_stored(e, snap)?;
        live.attach_scorer(snap.id, setup, previous)?;
        Ok(live)
    }

    /// Loads the `neural_pg` network of this experiment's snapshot (row `snapshot_id`), or
    /// reuses `previous`'s when it serves the same row; nothing for other kinds. A
    /// `neural_pg` shadow candidate's network is loaded too (its scorer reports as
    /// `<key>/shadow`), or `previous`'s reused while its weights are the same.
    pub fn attach_scorer(
        &mut self,
        snapshot_id: i64,
        setup: &ScoringSetup,
        previous: Option<&LiveExperiment>,
    ) -> Result<(), String> {
        let previous = previous.filter(|p| p.id == self.id);
        if let Some(state) = &self.snapshot.neural {
            let reusable = previous.and_then(|p| p.neural.as_ref()).filter(|n| n.snapshot_id == snapshot_id);
            self.neural = Some(match reusable {
                Some(n) => Arc::clone(n),
                None => Arc::new(
                    NeuralServing::new(&state.model, snapshot_id, setup, &self.key)
                        .map_err(|e| format!("snapshot {} of `{}`: {e}", self.policy_version, self.key))?,
                ),
            });
        }
        let neural_candidate = self.definition.shadow.as_ref().is_some_and(|s| s.policy.is_neural());
        if let Some(state) = self.snapshot.shadow.as_ref().and_then(|s| s.neural.as_ref()).filter(|_| neural_candidate)
        {
            let same_weights = |p: &&LiveExperiment| {
                p.snapshot.shadow.as_ref().and_then(|s| s.neural.as_ref()).is_some_and(|n| n.model == state.model)
            };
            let reusable = previous.filter(same_weights).and_then(|p| p.shadow_neural.as_ref());
            self.shadow_neural = Some(match reusable {
                Some(n) => Arc::clone(n),
                None => Arc::new(
                    NeuralServing::new(&state.model, snapshot_id, setup, &format!("{}/shadow", self.key)).map_err(
                        |e| format!("snapshot {} of `{}`, shadow candidate: {e}", self.policy_version, self.key),
                    )?,
                ),
            });
        }
        Ok(())
    }

    /// The `neural_pg` network's PMF over all arms for one request's context.
    pub async fn neural_pmf(&self, ctx: &NeuralContext) -> Result<Vec<f64>, ScoringError> {
        match &self.neural {
            Some(n) => n.pmf(ctx).await,
            None => Err(ScoringError::Model {
                code: "policy_not_loaded",
                message: format!("the neural policy of `{}` is not loaded in this process", self.key),
            }),
        }
    }

    /// A `neural_pg` shadow candidate's PMF over all arms for one request's context,
    /// through its own micro-batcher (or inline).
    pub async fn shadow_neural_pmf(&self, ctx: &NeuralContext) -> Result<Vec<f64>, ScoringError> {
        match &self.shadow_neural {
            Some(n) => n.pmf(ctx).await,
            None => Err(ScoringError::Model {
                code: "policy_not_loaded",
                message: format!("the neural shadow candidate of `{}` is not loaded in this process", self.key),
            }),
        }
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

    /// Decides for one request, without I/O. `eligible` has one entry per arm; `input` is
    /// what the policy reads (the encoded context for the linear kinds, the network's PMF
    /// for `neural_pg`, which is floored and drawn from exactly like the others).
    pub fn decide(
        &self,
        unit_id: &str,
        request_id: &str,
        ctx: &Context,
        input: PolicyInput<'_>,
        eligible: &[bool],
    ) -> Result<Draw, PolicyError> {
        if let Some(reason) = self.excluded(unit_id, ctx) {
            return Ok(Draw::Default { arm: self.default_arm_among(eligible), reason });
        }
        let seed = explore::draw_seed(&self.salt, unit_id, request_id);
        // The Monte Carlo draws get their own seed (a hash of the draw's seed), so the PMF
        // and the uniform that picks from it are not the same number.
        let pmf = self.state_pmf(&self.snapshot, &self.definition.policy, input, eligible, seed, "pmf")?;
        let u = explore::unit_uniform(seed);
        let arm = explore::draw(&pmf, u);
        Ok(Draw::Drawn { arm, propensity: pmf[arm], pmf })
    }

    /// Shadow mode: the candidate policy's PMF over all arms for the request that
    /// [`Self::decide`] just drew for — same eligibility, same exploration floor, the same
    /// encoded context for a linear candidate, its own network's PMF for the same logged
    /// context for a `neural_pg` candidate ([`Self::shadow_neural_pmf`], passed as
    /// [`PolicyInput::Scored`]) — without I/O and without touching the draw. `None` when
    /// the experiment has no candidate (or no candidate state yet); an error when the
    /// candidate cannot score this input.
    pub fn shadow_pmf(
        &self,
        unit_id: &str,
        request_id: &str,
        input: PolicyInput<'_>,
        eligible: &[bool],
    ) -> Result<Option<Vec<f64>>, PolicyError> {
        let (Some(candidate), Some(state)) = (&self.definition.shadow, &self.snapshot.shadow) else {
            return Ok(None);
        };
        let seed = explore::draw_seed(&self.salt, unit_id, request_id);
        self.state_pmf(state, &candidate.policy, input, eligible, seed, "shadow-pmf").map(Some)
    }

    /// The floored PMF of policy `spec` in `state` (the live snapshot or the shadow
    /// candidate's): for `neural_pg` its network's scored PMF restricted to the eligible arms;
    /// for a linear model its Monte Carlo PMF for the request's features, seeded by a hash of
    /// the draw's `seed` under `label`; else the state's fixed PMF restricted to the eligible
    /// arms.
    fn state_pmf(
        &self,
        state: &SnapshotState,
        spec: &crate::policy::PolicySpec,
        input: PolicyInput<'_>,
        eligible: &[bool],
        seed: u64,
        label: &str,
    ) -> Result<Vec<f64>, PolicyError> {
        let floor = self.definition.min_propensity;
        if spec.is_neural() {
            let PolicyInput::Scored(raw) = input else {
                return Err(PolicyError::NeedsContext { kind: spec.kind() });
            };
            if raw.len() != eligible.len() {
                return Err(PolicyError::ArmCountMismatch {
                    what: "neural PMF".into(),
                    expected: eligible.len(),
                    got: raw.len(),
                });
            }
            return explore::restrict_and_floor(raw, eligible, floor);
        }
        match (&state.linear, spec.linear_exploration()) {
            (Some(model), Some(exploration)) => {
                let PolicyInput::Features(x) = input else {
                    return Err(PolicyError::NeedsContext { kind: spec.kind() });
                };
                let mc_seed = explore::draw_seed(&self.salt, label, &seed.to_string());
                Ok(model.pmf(exploration, x, eligible, floor, mc_seed)?)
            }
            _ => Ok(explore::restrict_and_floor(&state.policy.pmf, eligible, floor)?),
        }
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

/// A running experiment as the store would hold it, with its initial snapshot (row ids
/// `id` and `snapshot_id`, created at the Unix epoch), for the tests below.
#[cfg(test)]
fn stored_running(definition: Definition, id: i64, snapshot_id: i64) -> (StoredExperiment, SnapshotRow) {
    assert!(definition.validate().is_empty(), "{:?}", definition.validate());
    let state = crate::experiment::admin::initial_snapshot(&definition, "salt", 1).unwrap();
    let at = chrono::DateTime::UNIX_EPOCH.naive_utc();
    let row = crate::store::models::ExperimentRow {
        id,
        key: definition.key.clone(),
        name: definition.name.clone(),
        status: "running".into(),
        current_version: 1,
        salt: "salt".into(),
        promoted_arm: None,
        created_at: at,
        updated_at: at,
    };
    let snap = SnapshotRow {
        id: snapshot_id,
        experiment_id: id,
        version: 1,
        policy_version: 1,
        state,
        n_feedback: 0,
        created_at: at,
    };
    (StoredExperiment { row, definition }, snap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::definition::from_toml;
    use crate::policy::neural::NeuralContext;
    use crate::profile::{Event, EventKind};
    use std::time::Duration;

    fn at(h: u32) -> chrono::NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 20).and_then(|d| d.and_hms_opt(h, 0, 0)).expect("valid time")
    }

    /// A running `neural_pg` experiment over 4 arms and 2 numeric features, as the store holds it.
    fn stored(policy: &str) -> (StoredExperiment, SnapshotRow) {
        let definition = from_toml(&format!(
            "key = \"nn\"\nname = \"Neural\"\nmin_propensity = 0.02\n\
             [[arms]]\nkey = \"a\"\ncontrol = true\n[[arms]]\nkey = \"b\"\n[[arms]]\nkey = \"c\"\n[[arms]]\nkey = \"d\"\n\
             [policy]\n{policy}\n[primary_metric]\nname = \"purchase\"\nkind = \"conversion\"\n\
             [features]\nnumeric = [{{ name = \"monetary_90d\" }}, {{ name = \"is_returning\" }}]\n"
        ))
        .unwrap();
        super::stored_running(definition, 7, 41)
    }

    const POLICY: &str = "kind = \"neural_pg\"\nfeatures = 2\nhidden = 8\nembedding = 8\nseed = 3\ntemperature = 0.3";

    fn contexts(n: usize) -> Vec<NeuralContext> {
        (0..n)
            .map(|i| {
                let events: Vec<Event> = (0..i % 7)
                    .map(|j| Event {
                        kind: EventKind::ALL[(i + j) % 4],
                        at: at(1 + j as u32),
                        amount: (i * j) as f64,
                        category: Some(["shoes", "bags", "hats"][j % 3].into()),
                    })
                    .collect();
                NeuralContext::new(vec![(i % 5) as f64 * 40.0, (i % 2) as f64], &events, at(12))
            })
            .collect()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_neural_snapshot_loads_once_and_batched_and_inline_scoring_draw_the_same_arms() {
        let (e, snap) = stored(POLICY);
        let inline_setup =
            ScoringSetup::new(Device::Cpu, BatchConfig { inline_max_params: usize::MAX, ..Default::default() });
        let batched_setup = ScoringSetup::new(
            Device::Cpu,
            BatchConfig { max_batch: 16, max_wait: Duration::from_millis(20), ..Default::default() },
        );
        let inline = LiveExperiment::load(e.clone(), &snap, &inline_setup, None).unwrap();
        let batched = LiveExperiment::load(e.clone(), &snap, &batched_setup, None).unwrap();
        assert!(!inline.neural.as_ref().unwrap().is_batched());
        assert!(batched.neural.as_ref().unwrap().is_batched());

        let xs = contexts(64);
        let rt = runtime();
        let a: Vec<Vec<f64>> = xs.iter().map(|c| rt.block_on(inline.neural_pmf(c)).unwrap()).collect();
        let b: Vec<Vec<f64>> = rt
            .block_on(futures_util::future::join_all(xs.iter().map(|c| batched.neural_pmf(c))))
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let eligible = [true, true, false, true];
        let ctx = Context::new();
        let mut arms_seen = std::collections::HashSet::new();
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            for (x, y) in p.iter().zip(q) {
                assert!((x - y).abs() < 1e-5, "{p:?} vs {q:?}");
            }
            let unit = format!("u{i}");
            let d1 = inline.decide(&unit, "r1", &ctx, PolicyInput::Scored(p), &eligible).unwrap();
            let d2 = batched.decide(&unit, "r1", &ctx, PolicyInput::Scored(q), &eligible).unwrap();
            match (d1, d2) {
                (
                    Draw::Drawn { arm: a1, propensity: p1, pmf: f1 },
                    Draw::Drawn { arm: a2, propensity: p2, pmf: f2 },
                ) => {
                    assert_eq!(a1, a2, "unit {i}");
                    assert!((p1 - p2).abs() < 1e-5);
                    assert_eq!(f1[2], 0.0, "ineligible arm");
                    assert!(f1.iter().enumerate().all(|(k, v)| k == 2 || *v >= 0.02 - 1e-12), "floor: {f1:?}");
                    assert!((f2.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                    arms_seen.insert(a1);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(arms_seen.len() > 1, "a random network with temperature 0.3 still spreads the draws: {arms_seen:?}");
        // Different contexts give different PMFs (the network reads them).
        assert!(a.iter().any(|p| p != &a[0]));

        // A rebuild over the same snapshot row reuses the loaded scorer; a new row loads anew.
        let again = LiveExperiment::load(e.clone(), &snap, &batched_setup, Some(&batched)).unwrap();
        assert!(Arc::ptr_eq(again.neural.as_ref().unwrap(), batched.neural.as_ref().unwrap()));
        let next = SnapshotRow { id: 42, policy_version: 2, ..snap.clone() };
        let fresh = LiveExperiment::load(e, &next, &batched_setup, Some(&batched)).unwrap();
        assert!(!Arc::ptr_eq(fresh.neural.as_ref().unwrap(), batched.neural.as_ref().unwrap()));
        assert_eq!(fresh.neural.as_ref().unwrap().snapshot_id(), 42);
    }

    #[test]
    fn a_neural_experiment_needs_its_scored_pmf_and_a_matching_snapshot() {
        let (e, snap) = stored(POLICY);
        let live = LiveExperiment::from_stored(e.clone(), &snap).unwrap();
        assert!(live.neural.is_none(), "from_stored loads no network");
        let err = runtime().block_on(live.neural_pmf(&contexts(1)[0])).unwrap_err();
        assert_eq!(err.code(), "policy_not_loaded");
        let ctx = Context::new();
        let all = [true; 4];
        let err = live.decide("u", "r", &ctx, PolicyInput::None, &all).unwrap_err();
        assert_eq!(err.code(), "policy_needs_context");
        let err = live.decide("u", "r", &ctx, PolicyInput::Scored(&[0.5, 0.5]), &all).unwrap_err();
        assert_eq!(err.code(), "arm_count_mismatch");

        // A snapshot written for other parameters (or another kind) is refused.
        let (other, _) = stored("kind = \"neural_pg\"\nfeatures = 2\nhidden = 9");
        let err = LiveExperiment::from_stored(other, &snap).unwrap_err();
        assert!(err.contains("does not match its policy kind"), "{err}");
        let (lin, lin_snap) = stored("kind = \"lin_ucb\"\nfeatures = 2");
        assert!(LiveExperiment::from_stored(lin.clone(), &lin_snap).unwrap().neural.is_none());
        assert!(LiveExperiment::from_stored(lin, &snap).unwrap_err().contains("does not match"));
        let (neural, _) = stored(POLICY);
        assert!(LiveExperiment::from_stored(neural, &lin_snap).unwrap_err().contains("does not match"));
    }
}

#[cfg(test)]
mod shadow_tests {
    use super::*;
    use crate::experiment::definition::from_toml;

    fn live(shadow: &str) -> LiveExperiment {
        let definition = from_toml(&format!(
            "key = \"s\"\nname = \"Shadow\"\nmin_propensity = 0.05\nstatus = \"running\"\n\
             [[arms]]\nkey = \"a\"\ncontrol = true\n[[arms]]\nkey = \"b\"\n[[arms]]\nkey = \"c\"\n\
             [policy]\nkind = \"fixed\"\nweights = {{ a = 0.8, b = 0.1, c = 0.1 }}\n\
             [primary_metric]\nname = \"purchase\"\nkind = \"conversion\"\n{shadow}"
        ))
        .unwrap();
        let (stored, snap) = super::stored_running(definition, 1, 1);
        LiveExperiment::from_stored(stored, &snap).unwrap()
    }

    #[test]
    fn the_candidates_pmf_is_floored_and_restricted_like_the_live_one_and_leaves_the_draw_alone() {
        let with = live("[shadow]\npolicy = { kind = \"fixed\", weights = { a = 0.0, b = 0.0, c = 1.0 } }\n");
        let without = live("");
        let ctx = Context::new();
        let eligible = [true, false, true];
        let cand = with.shadow_pmf("u", "r", PolicyInput::None, &eligible).unwrap().expect("a candidate");
        // Restricted to a and c, then floored at 0.05 over the two eligible arms.
        assert_eq!(cand[1], 0.0);
        assert!((cand[0] - 0.05).abs() < 1e-12 && (cand[2] - 0.95).abs() < 1e-12, "{cand:?}");
        assert_eq!(without.shadow_pmf("u", "r", PolicyInput::None, &eligible).unwrap(), None);
        // The served draw is the live policy's, with or without a candidate.
        for i in 0..50 {
            let unit = format!("u{i}");
            assert_eq!(
                with.decide(&unit, "r", &ctx, PolicyInput::None, &eligible).unwrap(),
                without.decide(&unit, "r", &ctx, PolicyInput::None, &eligible).unwrap()
            );
        }
        // A changed candidate is a new version.
        assert!(without.definition.needs_new_version(&with.definition));
    }
}

#[cfg(test)]
mod neural_shadow_tests {
    use super::*;
    use crate::experiment::definition::from_toml;
    use crate::policy::neural::LoggedRow;
    use crate::profile::{Event, EventKind};
    use std::time::Duration;

    fn at(h: u32) -> chrono::NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 20).and_then(|d| d.and_hms_opt(h, 0, 0)).expect("valid time")
    }

    const CANDIDATE: &str =
        "{ kind = \"neural_pg\", features = 2, hidden = 8, embedding = 8, seed = 5, temperature = 0.3, epochs = 3 }";

    /// A running experiment over 3 arms and 2 numeric features with the live `policy` and the
    /// shadow `candidate`, and its initial snapshot row.
    fn stored(policy: &str, candidate: &str) -> (StoredExperiment, SnapshotRow) {
        let definition = from_toml(&format!(
            "key = \"ns\"\nname = \"Neural shadow\"\nmin_propensity = 0.05\n\
             [[arms]]\nkey = \"a\"\ncontrol = true\n[[arms]]\nkey = \"b\"\n[[arms]]\nkey = \"c\"\n\
             [policy]\n{policy}\n[primary_metric]\nname = \"purchase\"\nkind = \"conversion\"\n\
             [features]\nnumeric = [{{ name = \"monetary_90d\" }}, {{ name = \"is_returning\" }}]\n\
             [shadow]\npolicy = {candidate}\n"
        ))
        .unwrap();
        super::stored_running(definition, 9, 70)
    }

    fn context(i: usize) -> NeuralContext {
        let events: Vec<Event> = (0..i % 4)
            .map(|j| Event {
                kind: EventKind::ALL[(i + j) % 4],
                at: at(1 + j as u32),
                amount: (10 * j) as f64,
                category: Some("shoes".into()),
            })
            .collect();
        NeuralContext::new(vec![(i % 5) as f64 * 50.0, (i % 2) as f64], &events, at(12))
    }

    fn batched() -> ScoringSetup {
        ScoringSetup::new(
            Device::Cpu,
            BatchConfig { max_batch: 8, max_wait: Duration::from_millis(5), ..Default::default() },
        )
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_neural_candidate_scores_through_its_own_scorer_and_its_floored_pmf_leaves_the_draw_alone() {
        let (e, snap) = stored("kind = \"fixed\"\nweights = { a = 0.8, b = 0.1, c = 0.1 }", CANDIDATE);
        let live = LiveExperiment::load(e.clone(), &snap, &batched(), None).unwrap();
        assert!(live.neural.is_none(), "the live policy is context-free");
        let scorer = live.shadow_neural.as_ref().expect("the candidate's network is loaded");
        assert!(scorer.is_batched());
        let model = &live.snapshot.shadow.as_ref().unwrap().neural.as_ref().unwrap().model;
        let inline = NeuralPolicy::from_snapshot(model, &Device::Cpu).unwrap();

        let rt = runtime();
        let eligible = [true, false, true];
        let ctx = Context::new();
        for i in 0..12 {
            let c = context(i);
            let raw = rt.block_on(live.shadow_neural_pmf(&c)).unwrap();
            let expected = inline.pmfs(&[c.input()]).unwrap().remove(0);
            assert!(raw.iter().zip(&expected).all(|(p, q)| (p - q).abs() < 1e-5), "{raw:?} vs {expected:?}");
            let logged = LoggedContext::Neural(c);
            let input =
                PolicyInput::for_spec(&live.definition.shadow.as_ref().unwrap().policy, Some(&logged), Some(&raw));
            assert_eq!(input, PolicyInput::Scored(&raw));
            let pmf = live.shadow_pmf(&format!("u{i}"), "r", input, &eligible).unwrap().expect("a candidate");
            assert_eq!(pmf, explore::restrict_and_floor(&raw, &eligible, 0.05).unwrap());
            assert_eq!(pmf[1], 0.0, "ineligible");
            assert!(pmf[0] >= 0.05 - 1e-12 && pmf[2] >= 0.05 - 1e-12, "{pmf:?}");
            // The live draw reads nothing and is the fixed policy's.
            let live_input = PolicyInput::for_spec(&live.definition.policy, Some(&logged), Some(&raw));
            assert_eq!(live_input, PolicyInput::None);
            match live.decide(&format!("u{i}"), "r", &ctx, live_input, &eligible).unwrap() {
                Draw::Drawn { pmf, .. } => assert!((pmf[0] - (0.8 / 0.9 * 0.9 + 0.05)).abs() < 1e-9, "{pmf:?}"),
                other => panic!("{other:?}"),
            }
        }
        // Without its scored PMF the candidate has nothing to log.
        let err = live.shadow_pmf("u", "r", PolicyInput::None, &eligible).unwrap_err();
        assert_eq!(err.code(), "policy_needs_context");
    }

    #[test]
    fn the_candidates_scorer_is_reused_while_its_weights_are_the_same_and_reloaded_when_they_change() {
        let (e, snap) = stored("kind = \"fixed\"", CANDIDATE);
        let setup = batched();
        let first = LiveExperiment::load(e.clone(), &snap, &setup, None).unwrap();
        // A new row for the live policy's feedback, same candidate weights: reused.
        let next = SnapshotRow { id: 71, policy_version: 2, ..snap.clone() };
        let again = LiveExperiment::load(e.clone(), &next, &setup, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(again.shadow_neural.as_ref().unwrap(), first.shadow_neural.as_ref().unwrap()));
        // The candidate retrained (new weights): loaded anew.
        let mut state: SnapshotState = serde_json::from_str(&snap.state).unwrap();
        let candidate = state.shadow.as_mut().unwrap().neural.as_mut().unwrap();
        let mut policy = NeuralPolicy::from_snapshot(&candidate.model, &Device::Cpu).unwrap();
        let rows: Vec<LoggedRow> = (0..8)
            .map(|i| LoggedRow {
                input: context(i).input(),
                arm: i % 3,
                propensity: 1.0 / 3.0,
                reward: (i % 3 == 2) as u8 as f64,
            })
            .collect();
        policy.train(&rows).unwrap();
        candidate.model = policy.snapshot().unwrap();
        let trained =
            SnapshotRow { id: 72, policy_version: 3, state: serde_json::to_string(&state).unwrap(), ..snap.clone() };
        let fresh = LiveExperiment::load(e, &trained, &setup, Some(&again)).unwrap();
        assert!(!Arc::ptr_eq(fresh.shadow_neural.as_ref().unwrap(), again.shadow_neural.as_ref().unwrap()));
        let c = context(3);
        let rt = runtime();
        let (old, new) =
            (rt.block_on(again.shadow_neural_pmf(&c)).unwrap(), rt.block_on(fresh.shadow_neural_pmf(&c)).unwrap());
        assert_ne!(old, new, "the reloaded scorer serves the new weights");
    }

    #[test]
    fn a_shadow_state_of_other_parameters_is_refused_and_a_linear_candidate_reads_a_neural_context() {
        let (_, snap) = stored("kind = \"fixed\"", CANDIDATE);
        let other = CANDIDATE.replace("hidden = 8", "hidden = 9");
        let (e, _) = stored("kind = \"fixed\"", &other);
        let err = LiveExperiment::from_stored(e, &snap).unwrap_err();
        assert!(err.contains("shadow state that does not match"), "{err}");
        // A linear candidate's state is refused for a neural candidate, and the reverse.
        let (lin, lin_snap) = stored("kind = \"fixed\"", "{ kind = \"lin_ucb\", features = 2 }");
        assert!(LiveExperiment::from_stored(lin.clone(), &snap).unwrap_err().contains("shadow state"));
        let (neural, _) = stored("kind = \"fixed\"", CANDIDATE);
        assert!(LiveExperiment::from_stored(neural, &lin_snap).unwrap_err().contains("shadow state"));

        // Beside a neural live policy, a linear candidate scores the `x` of the logged context.
        let (e, snap) = stored(
            "kind = \"neural_pg\"\nfeatures = 2\nhidden = 8\nembedding = 8",
            "{ kind = \"lin_ucb\", features = 2 }",
        );
        let live = LiveExperiment::from_stored(e, &snap).unwrap();
        let logged = LoggedContext::Neural(context(3));
        assert_eq!(logged.x(), &[150.0, 1.0]);
        let spec = &live.definition.shadow.as_ref().unwrap().policy;
        let input = PolicyInput::for_spec(spec, Some(&logged), None);
        assert_eq!(input, PolicyInput::Features(&[150.0, 1.0]));
        let pmf = live.shadow_pmf("u", "r", input, &[true; 3]).unwrap().unwrap();
        assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-9 && pmf.iter().all(|p| *p >= 0.05 - 1e-12), "{pmf:?}");
        // The logged forms read back as what was logged.
        let json = serde_json::to_string(&logged).unwrap();
        assert_eq!(serde_json::from_str::<LoggedContext>(&json).unwrap(), logged);
        let plain: LoggedContext = serde_json::from_str("[1.5, 0.0]").unwrap();
        assert_eq!((plain.x(), plain.neural()), (&[1.5, 0.0][..], None));
    }
}
