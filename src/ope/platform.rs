//! The platform's own exposure log as logged bandit feedback, and its policy snapshots as
//! target policies.
//!
//! [`load_experiment_log`] reads one experiment version's mature exposures from the store
//! (through [`crate::store::export`]) into a [`LoggedData`]: the actions are the version's arms
//! in definition order, there is one position, the propensity is the one logged with the
//! decision and the reward is the primary metric's inside its attribution window (conversion:
//! 1 if any reward of the exposure is positive, else 0; other kinds: the sum of the exposure's
//! rewards, 0 without any). [`snapshot_policy`] turns a policy snapshot into the distribution
//! the platform served from it: one distribution for a context-free kind, one per exposure for a
//! contextual kind (`lin_ts`, `lin_ucb`, `neural_pg`), computed from the context the exposure
//! logged ([`contextual_pmfs`]).
//!
//! The clock is an argument (`now`), as everywhere in this room.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDateTime;
use serde::Serialize;

use super::{LoggedData, LoggedDataBuilder, LoggedRecord, OpeError, PositionTablePolicy, RowTablePolicy, TargetPolicy};
use crate::experiment::context::{Context, Value};
use crate::experiment::definition::{parse_duration, Definition, MetricKind};
use crate::experiment::registry::{LoggedContext, SnapshotState};
use crate::policy::explore;
use crate::policy::linear::{Exploration, LinearState};
use crate::policy::neural::{NeuralInput, NeuralPolicy};
use crate::store::export::{self, RewardRule};
use crate::store::queries;
use crate::store::{Db, StoreError};

/// A categorical attribute with more distinct values than this is left out of the features:
/// its one-hot block would dwarf the reward model, and such attributes are identifiers more
/// often than segments.
pub const MAX_CATEGORICAL_LEVELS: usize = 64;

/// The level of a categorical feature in a row whose context lacks the attribute.
pub const MISSING_LEVEL: &str = "(missing)";

/// Suffix of the 0/1 indicator added beside a numeric feature missing in some rows.
pub const MISSING_SUFFIX: &str = ":missing";

/// Which part of the store's log was read, and how; serialised into the CLI's JSON report as
/// `source`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentLogInfo {
    pub experiment: String,
    pub version: i32,
    /// The primary metric whose reward is evaluated.
    pub metric: String,
    pub metric_kind: MetricKind,
    pub window: String,
    /// Exposures created at or before this time (UTC) are mature: `now − window`.
    pub cutoff: NaiveDateTime,
    /// Mature exposures used.
    pub n_mature: usize,
    /// Exposures left out because their attribution window is still open.
    pub n_immature: i64,
    pub categorical_features: Vec<String>,
    pub numeric_features: Vec<String>,
    /// Context attributes left out (more than [`MAX_CATEGORICAL_LEVELS`] distinct values).
    pub dropped_features: Vec<String>,
}

/// An experiment version's log, ready for evaluation.
#[derive(Debug, Clone)]
pub struct ExperimentLog {
    pub data: LoggedData,
    pub info: ExperimentLogInfo,
    experiment_id: i64,
    /// The experiment's salt (seeds of the `lin_ts` draws of a snapshot target).
    salt: String,
    /// The logged version's definition (its `[features]` schema encoded the logged contexts).
    definition: Definition,
    /// Per row of `data`, in row order: the exposure and the context its policy read.
    exposures: Vec<LoggedExposureContext>,
}

/// What a contextual snapshot target needs of one logged exposure.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedExposureContext {
    /// The exposure's id (the seed of a `lin_ts` target's draws derives from it).
    pub id: String,
    /// `exposures.features` as stored: the encoded vector (`lin_ts`, `lin_ucb`, or a linear
    /// shadow candidate), `neural_pg`'s `{x, at, events}`, or `None` when no policy read one.
    pub features: Option<String>,
}

impl ExperimentLog {
    /// Per row of [`Self::data`]: the exposure id and its logged context.
    pub fn exposures(&self) -> &[LoggedExposureContext] {
        &self.exposures
    }
}

/// `--logged experiment:KEY[@VERSION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExperimentRef {
    pub key: String,
    /// `None`: the experiment's current version.
    pub version: Option<i32>,
}

fn version_definition(db: &Db, key: &str, id: i64, version: i32, current: i32) -> Result<Definition, OpeError> {
    queries::version_definition(db, id, version).map_err(|e| match e {
        StoreError::NotFound => OpeError::UnknownVersion { key: key.to_string(), version, current },
        e => e.into(),
    })
}

/// Reads the mature part of an experiment version's exposure log as of `now`.
///
/// Context features: a context is a flat object of numbers, strings and booleans, and
/// attributes may differ from row to row. An attribute that is ever a string or a boolean is
/// categorical (a number in another row becomes its decimal text; `true`/`false` are levels);
/// one that is always a number is numeric. A row without a categorical attribute gets the level
/// `(missing)`, so missingness is a level of its own. A row without a numeric attribute gets
/// the attribute's mean over the rows that have it, and a 0/1 feature `NAME:missing` is added
/// (only when some row lacks the attribute) so the reward model can tell imputed values apart.
/// Categorical attributes with more than [`MAX_CATEGORICAL_LEVELS`] levels are dropped and
/// reported in [`ExperimentLogInfo::dropped_features`].
pub fn load_experiment_log(db: &Db, source: &ExperimentRef, now: NaiveDateTime) -> Result<ExperimentLog, OpeError> {
    let key = &source.key;
    let experiment = queries::get_experiment(db, key).map_err(|e| match e {
        StoreError::NotFound => OpeError::UnknownExperiment { key: key.clone() },
        e => e.into(),
    })?;
    let id = experiment.row.id;
    let current = experiment.row.current_version;
    let version = source.version.unwrap_or(current);
    let definition = match source.version {
        Some(v) if v != current => version_definition(db, key, id, v, current)?,
        _ => experiment.definition,
    };
    let metric = &definition.primary_metric;
    let window =
        parse_duration(&metric.window).ok().and_then(|w| chrono::Duration::from_std(w).ok()).ok_or_else(|| {
            OpeError::Store {
                message: format!("experiment `{key}` has an invalid window `{}` on `{}`", metric.window, metric.name),
            }
        })?;
    let cutoff = crate::experiment::definition::time_before(now, window.to_std().unwrap_or_default());
    let rule = RewardRule { metric: &metric.name, binary: metric.kind == MetricKind::Conversion, window };
    let arms: HashMap<&str, usize> = definition.arms.iter().enumerate().map(|(i, a)| (a.key.as_str(), i)).collect();

    let mut rows = RowCollector::default();
    let mut exposures = Vec::new();
    export::for_each_exposure(db, id, version, &rule, cutoff, |e| {
        let action = *arms.get(e.arm.as_str()).ok_or_else(|| OpeError::InvalidRow {
            row: rows.len(),
            message: format!("exposure {} has arm `{}`, not an arm of version {version}", e.id, e.arm),
        })?;
        let context: Context = serde_json::from_str(&e.context).map_err(|err| OpeError::InvalidRow {
            row: rows.len(),
            message: format!("exposure {} has an unreadable context: {err}", e.id),
        })?;
        rows.push(action, e.propensity, e.reward, &context);
        exposures.push(LoggedExposureContext { id: e.id, features: e.features });
        Ok::<(), OpeError>(())
    })?;
    let immature = export::count_exposures_after(db, id, version, cutoff)?;
    if rows.len() == 0 {
        return Err(OpeError::NoMatureExposures {
            key: key.clone(),
            version,
            immature,
            metric: metric.name.clone(),
            window: metric.window.clone(),
        });
    }
    let (data, features) = rows.build(definition.arm_keys())?;
    let info = ExperimentLogInfo {
        experiment: key.clone(),
        version,
        metric: metric.name.clone(),
        metric_kind: metric.kind,
        window: metric.window.clone(),
        cutoff,
        n_mature: data.len(),
        n_immature: immature,
        categorical_features: features.categorical,
        numeric_features: features.numeric,
        dropped_features: features.dropped,
    };
    Ok(ExperimentLog { data, info, experiment_id: id, salt: experiment.row.salt, definition, exposures })
}

/// The distribution the platform served from a policy snapshot of `log`'s experiment — its
/// latest for the logged version (`policy_version = None`) or the one with that policy
/// version — with every arm eligible and the snapshot version's exploration floor
/// `min_propensity` mixed in (`explore::restrict_and_floor`), as served to a request that
/// allowed every arm:
///
/// - a context-free kind: the snapshot's PMF, the same at every context (a
///   [`PositionTablePolicy`]);
/// - `lin_ts`, `lin_ucb`, `neural_pg`: the snapshot's PMF for each exposure's own logged context
///   (a [`RowTablePolicy`], see [`contextual_pmfs`]). The logged contexts were encoded by the
///   logged version's `[features]` schema, so the snapshot's version must declare the same
///   schema.
///
/// For the snapshot that served an exposure this is exactly the exposure's logged propensity
/// (importance weight 1), except for `lin_ts`, whose served PMF is a Monte Carlo estimate
/// seeded by the request (see [`contextual_pmfs`]), and `neural_pg`, whose f32 network may
/// differ in the last digits between the batch it was served in and the batch it is scored in
/// here. Requests that restricted `eligible_arms` were served a distribution over fewer arms,
/// which this target does not reproduce.
///
/// A snapshot of another version is accepted when that version has the same arms (matched by
/// key); its own floor and policy parameters apply.
pub fn snapshot_policy(
    db: &Db,
    log: &ExperimentLog,
    policy_version: Option<i64>,
) -> Result<Box<dyn TargetPolicy>, OpeError> {
    let key = &log.info.experiment;
    let unknown = |pv: String| OpeError::UnknownSnapshot { key: key.clone(), policy_version: pv };
    let row = match policy_version {
        None => queries::latest_snapshot(db, log.experiment_id, log.info.version),
        Some(n) => export::snapshot_by_policy_version(db, log.experiment_id, n),
    }
    .map_err(|e| match e {
        StoreError::NotFound => {
            unknown(policy_version.map_or_else(|| "for the logged version".into(), |n| n.to_string()))
        }
        e => e.into(),
    })?;
    let state: SnapshotState = serde_json::from_str(&row.state).map_err(|e| OpeError::Store {
        message: format!("policy snapshot {} of `{key}` is unreadable: {e}", row.policy_version),
    })?;
    let definition = queries::version_definition(db, log.experiment_id, row.version)?;
    let snapshot_arms = definition.arm_keys();
    let logged_arms = log.data.action_labels();
    let mut sorted_snapshot = snapshot_arms.clone();
    let mut sorted_logged = logged_arms.to_vec();
    sorted_snapshot.sort();
    sorted_logged.sort();
    if sorted_snapshot != sorted_logged {
        return Err(OpeError::InvalidPolicy {
            message: format!(
                "policy snapshot {} belongs to version {} with arms [{}], the logged version {} has arms [{}]",
                row.policy_version,
                row.version,
                snapshot_arms.join(", "),
                log.info.version,
                logged_arms.join(", ")
            ),
        });
    }
    // The snapshot's arm index of each logged action (the same keys, maybe in another order).
    let by_key: HashMap<&str, usize> = snapshot_arms.iter().enumerate().map(|(i, a)| (a.as_str(), i)).collect();
    let arm_order: Vec<usize> = logged_arms.iter().filter_map(|a| by_key.get(a.as_str()).copied()).collect();
    let name = format!("snapshot:{} of {key}", row.policy_version);
    let target = format!("snapshot:{}", row.policy_version);
    let floor = definition.min_propensity;

    if state.linear.is_some() || state.neural.is_some() {
        let model = match (state.linear, state.neural, definition.policy.linear_exploration()) {
            (Some(linear), None, Some(exploration)) => {
                ContextualModel::Linear { state: linear, exploration, salt: log.salt.clone() }
            }
            (None, Some(neural), None) if definition.policy.is_neural() => ContextualModel::Neural(
                NeuralPolicy::from_snapshot(&neural.model, &candle_core::Device::Cpu).map_err(|e| OpeError::Store {
                    message: format!("policy snapshot {} of `{key}` has an unusable network: {e}", row.policy_version),
                })?,
            ),
            _ => {
                return Err(OpeError::Store {
                    message: format!(
                        "policy snapshot {} of `{key}` does not match the `{}` policy of version {}",
                        row.policy_version,
                        definition.policy.kind(),
                        row.version
                    ),
                })
            }
        };
        if definition.features != log.definition.features {
            return Err(OpeError::TargetNotApplicable {
                target,
                source_kind: "this exposure log",
                reason: format!(
                    "the snapshot's version {} encodes contexts with another [features] schema than the \
                     logged version {}, so the logged contexts are not its inputs",
                    row.version, log.info.version
                ),
            });
        }
        let missing = log.exposures.iter().filter(|e| e.features.is_none()).count();
        if missing > 0 {
            return Err(OpeError::TargetNotApplicable {
                target,
                source_kind: "this exposure log",
                reason: format!(
                    "{missing} of {} exposures logged no context (version {}'s policy `{}` did not read one), and \
                     the snapshot's `{}` PMF depends on it",
                    log.exposures.len(),
                    log.info.version,
                    log.definition.policy.kind(),
                    definition.policy.kind()
                ),
            });
        }
        let probs = contextual_pmfs(&model, floor, &log.exposures, &arm_order).map_err(|e| match e {
            ContextError::Row { row, message } => OpeError::InvalidRow { row, message },
            ContextError::NotApplicable { reason } => {
                OpeError::TargetNotApplicable { target: target.clone(), source_kind: "this exposure log", reason }
            }
            ContextError::Policy { message } => {
                OpeError::InvalidPolicy { message: format!("policy snapshot {}: {message}", row.policy_version) }
            }
        })?;
        return Ok(Box::new(RowTablePolicy::new(name, logged_arms.len(), probs)?));
    }

    if state.policy.pmf.len() != snapshot_arms.len() {
        return Err(OpeError::Store {
            message: format!(
                "policy snapshot {} of `{key}` has {} probabilities for {} arms",
                row.policy_version,
                state.policy.pmf.len(),
                snapshot_arms.len()
            ),
        });
    }
    let pmf: Vec<f64> = arm_order.iter().map(|&j| state.policy.pmf[j]).collect();
    let served = explore::restrict_and_floor(&pmf, &vec![true; pmf.len()], floor)
        .map_err(|e| OpeError::InvalidPolicy { message: format!("policy snapshot {}: {e}", row.policy_version) })?;
    Ok(Box::new(PositionTablePolicy::new(name, vec![served])?))
}

/// A contextual snapshot's model, ready to score logged contexts.
#[derive(Debug)]
pub enum ContextualModel {
    /// `lin_ts` or `lin_ucb`: the ridge model and how it explores; `salt` is the experiment's
    /// (the `lin_ts` draws' seeds derive from it and the exposure id).
    Linear { state: LinearState, exploration: Exploration, salt: String },
    /// `neural_pg`: the network, loaded on the CPU.
    Neural(NeuralPolicy),
}

/// Why [`contextual_pmfs`] could not score a log.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextError {
    /// One exposure's logged context is unreadable or has the wrong length.
    Row { row: usize, message: String },
    /// The log lacks what the model reads (a `neural_pg` snapshot on contexts logged without
    /// their events and decision time).
    NotApplicable { reason: String },
    /// The model refused an input (an arm-count mismatch, a floor too high for the arms…).
    Policy { message: String },
}

/// Inputs scored by one forward pass of a `neural_pg` target.
const NEURAL_CHUNK: usize = 256;

/// The model's served PMF for every exposure's logged context, row-major in the logged
/// version's arm order (`arm_order[a]` is the model's index of logged action `a`): every arm
/// eligible, the floor `min_propensity` mixed in, as `LiveExperiment::decide` serves it.
///
/// - `lin_ucb` (deterministic): `LinearState::pmf` of the logged vector — for the snapshot
///   that served the exposure, bit for bit the logged PMF.
/// - `lin_ts`: `LinearState::pmf` estimates `P(arm = argmax)` from `draws` seeded draws. At
///   serving time the seed is a hash of the experiment's salt, the unit id and the request id;
///   the store keeps the unit only pseudonymised, so that seed cannot be rebuilt. Here each
///   exposure's draws are seeded by `explore::draw_seed(salt, "ope-pmf", exposure_id)`:
///   deterministic, the same for every snapshot evaluated (common random numbers when two
///   snapshots are compared), and independent of the logged draw. The served policy's
///   probability of an arm is the expectation of the Monte Carlo PMF over the seed, so the
///   importance weights stay unbiased; they are not exactly 1 for the serving snapshot (the
///   Monte Carlo noise of `draws` draws, with the floor bounding it below).
/// - `neural_pg`: the network's softmax for the rebuilt input (`NeuralContext::input`: the
///   features, the events and their ages at the logged decision time), scored in batches of
///   256 on the CPU. A `lin_ts` / `lin_ucb` snapshot also reads a `neural_pg` log (the vector
///   `x` of each logged context); a `neural_pg` snapshot cannot read a linear log, which lacks
///   the events and the decision time.
pub fn contextual_pmfs(
    model: &ContextualModel,
    min_propensity: f64,
    exposures: &[LoggedExposureContext],
    arm_order: &[usize],
) -> Result<Vec<f64>, ContextError> {
    let k = arm_order.len();
    let eligible = vec![true; k];
    let policy_error = |e: crate::policy::PolicyError| ContextError::Policy { message: e.to_string() };
    let parse = |row: usize, e: &LoggedExposureContext| -> Result<LoggedContext, ContextError> {
        let raw = e
            .features
            .as_deref()
            .ok_or_else(|| ContextError::Row { row, message: format!("exposure {} logged no context", e.id) })?;
        serde_json::from_str(raw).map_err(|err| ContextError::Row {
            row,
            message: format!("exposure {} has an unreadable logged context: {err}", e.id),
        })
    };
    let features = match model {
        ContextualModel::Linear { state, .. } => state.features(),
        ContextualModel::Neural(policy) => policy.params().features,
    };
    let wrong_length = |row: usize, e: &LoggedExposureContext, got: usize| ContextError::Row {
        row,
        message: format!("exposure {} logged {got} features; the snapshot reads {features}", e.id),
    };
    let mut out = Vec::with_capacity(exposures.len() * k);
    let mut push_reordered = |pmf: &[f64]| -> Result<(), ContextError> {
        if pmf.len() != k {
            return Err(ContextError::Policy { message: format!("a PMF over {} arms, expected {k}", pmf.len()) });
        }
        out.extend(arm_order.iter().map(|&j| pmf[j]));
        Ok(())
    };
    match model {
        ContextualModel::Linear { state, exploration, salt } => {
            for (row, e) in exposures.iter().enumerate() {
                let x = match parse(row, e)? {
                    LoggedContext::Linear(x) => x,
                    LoggedContext::Neural(c) => c.x,
                };
                if x.len() != features {
                    return Err(wrong_length(row, e, x.len()));
                }
                let seed = explore::draw_seed(salt, "ope-pmf", &e.id);
                let pmf = state.pmf(*exploration, &x, &eligible, min_propensity, seed).map_err(policy_error)?;
                push_reordered(&pmf)?;
            }
        }
        ContextualModel::Neural(policy) => {
            let mut inputs: Vec<NeuralInput> = Vec::with_capacity(NEURAL_CHUNK);
            for (start, chunk) in exposures.chunks(NEURAL_CHUNK).enumerate().map(|(c, ch)| (c * NEURAL_CHUNK, ch)) {
                inputs.clear();
                for (i, e) in chunk.iter().enumerate() {
                    let row = start + i;
                    let LoggedContext::Neural(c) = parse(row, e)? else {
                        return Err(ContextError::NotApplicable {
                            reason: format!(
                                "exposure {} logged a plain feature vector, without the events and the decision time \
                                 a neural_pg snapshot reads",
                                e.id
                            ),
                        });
                    };
                    if c.x.len() != features {
                        return Err(wrong_length(row, e, c.x.len()));
                    }
                    inputs.push(c.input());
                }
                let pmfs = policy.pmfs(&inputs).map_err(|e| ContextError::Policy { message: e.to_string() })?;
                for raw in pmfs {
                    // The softmax is f32; `restrict_and_floor` renormalises in f64 as at serving.
                    let pmf = explore::restrict_and_floor(&raw, &eligible, min_propensity).map_err(policy_error)?;
                    push_reordered(&pmf)?;
                }
            }
        }
    }
    Ok(out)
}

/// One context value as collected: a number, or an interned text.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Number(f64),
    Text(u32),
}

/// What is known of one attribute so far.
#[derive(Debug, Default)]
struct AttributeStats {
    any_text: bool,
    present: usize,
    sum: f64,
}

/// The feature names chosen by [`RowCollector::build`].
#[derive(Debug, Default)]
struct Features {
    categorical: Vec<String>,
    numeric: Vec<String>,
    dropped: Vec<String>,
}

/// Rows collected while streaming, before the feature set is known: each row's attributes as
/// (attribute, cell) pairs in a flat buffer, strings interned once.
#[derive(Debug, Default)]
struct RowCollector {
    attribute_index: HashMap<String, u32>,
    attributes: Vec<(String, AttributeStats)>,
    text_index: HashMap<String, u32>,
    texts: Vec<String>,
    cells: Vec<(u32, Cell)>,
    row_ends: Vec<usize>,
    actions: Vec<usize>,
    propensities: Vec<f64>,
    rewards: Vec<f64>,
}

impl RowCollector {
    fn len(&self) -> usize {
        self.actions.len()
    }

    fn intern(&mut self, text: &str) -> u32 {
        if let Some(&i) = self.text_index.get(text) {
            return i;
        }
        // Fewer distinct strings than rows × attributes, far below u32::MAX in any store.
        let i = self.texts.len() as u32;
        self.texts.push(text.to_string());
        self.text_index.insert(text.to_string(), i);
        i
    }

    fn push(&mut self, action: usize, propensity: f64, reward: f64, context: &Context) {
        for (name, value) in context {
            let attribute = match self.attribute_index.get(name) {
                Some(&a) => a,
                None => {
                    let a = self.attributes.len() as u32;
                    self.attributes.push((name.clone(), AttributeStats::default()));
                    self.attribute_index.insert(name.clone(), a);
                    a
                }
            };
            let cell = match value {
                Value::Number(x) => Cell::Number(*x),
                Value::Bool(b) => Cell::Text(self.intern(if *b { "true" } else { "false" })),
                Value::Text(s) => Cell::Text(self.intern(s)),
            };
            let stats = &mut self.attributes[attribute as usize].1;
            stats.present += 1;
            match cell {
                Cell::Number(x) => stats.sum += x,
                Cell::Text(_) => stats.any_text = true,
            }
            self.cells.push((attribute, cell));
        }
        self.row_ends.push(self.cells.len());
        self.actions.push(action);
        self.propensities.push(propensity);
        self.rewards.push(reward);
    }

    fn build(self, action_labels: Vec<String>) -> Result<(LoggedData, Features), OpeError> {
        let n = self.len();
        // Attributes in name order, so the feature order does not depend on row order.
        let by_name: BTreeMap<&str, usize> =
            self.attributes.iter().enumerate().map(|(i, (name, _))| (name.as_str(), i)).collect();
        // Distinct levels of each categorical attribute (numbers as text, plus the missing level).
        let mut levels: HashMap<usize, std::collections::HashSet<String>> = HashMap::new();
        for &(a, cell) in &self.cells {
            if self.attributes[a as usize].1.any_text {
                let set = levels.entry(a as usize).or_default();
                if set.len() <= MAX_CATEGORICAL_LEVELS {
                    set.insert(match cell {
                        Cell::Number(x) => x.to_string(),
                        Cell::Text(t) => self.texts[t as usize].clone(),
                    });
                }
            }
        }
        let mut features = Features::default();
        // Per attribute: Some(categorical slot) / Some(numeric slot, mean, indicator slot).
        let mut categorical_slot: Vec<Option<usize>> = vec![None; self.attributes.len()];
        let mut numeric_slot: Vec<Option<(usize, f64, Option<usize>)>> = vec![None; self.attributes.len()];
        for (&name, &a) in &by_name {
            let stats = &self.attributes[a].1;
            if stats.any_text {
                let distinct = levels.get(&a).map_or(0, |s| s.len()) + usize::from(stats.present < n);
                if distinct > MAX_CATEGORICAL_LEVELS {
                    features.dropped.push(name.to_string());
                } else {
                    categorical_slot[a] = Some(features.categorical.len());
                    features.categorical.push(name.to_string());
                }
            } else {
                let slot = features.numeric.len();
                features.numeric.push(name.to_string());
                let indicator = (stats.present < n).then(|| {
                    features.numeric.push(format!("{name}{MISSING_SUFFIX}"));
                    slot + 1
                });
                numeric_slot[a] = Some((slot, stats.sum / stats.present.max(1) as f64, indicator));
            }
        }
        let mut builder =
            LoggedDataBuilder::new(action_labels, 1, features.categorical.clone(), features.numeric.clone())?;
        builder.reserve(n);
        let mut cat: Vec<String> = vec![String::new(); features.categorical.len()];
        let mut num: Vec<f64> = vec![0.0; features.numeric.len()];
        let mut seen: Vec<bool> = vec![false; self.attributes.len()];
        let mut start = 0;
        for (i, &end) in self.row_ends.iter().enumerate() {
            seen.iter_mut().for_each(|s| *s = false);
            for &(a, cell) in &self.cells[start..end] {
                let a = a as usize;
                seen[a] = true;
                if let Some(slot) = categorical_slot[a] {
                    cat[slot] = match cell {
                        Cell::Number(x) => x.to_string(),
                        Cell::Text(t) => self.texts[t as usize].clone(),
                    };
                } else if let (Some((slot, _, indicator)), Cell::Number(x)) = (numeric_slot[a], cell) {
                    num[slot] = x;
                    if let Some(j) = indicator {
                        num[j] = 0.0;
                    }
                }
            }
            for a in 0..self.attributes.len() {
                if seen[a] {
                    continue;
                }
                if let Some(slot) = categorical_slot[a] {
                    cat[slot] = MISSING_LEVEL.to_string();
                } else if let Some((slot, mean, indicator)) = numeric_slot[a] {
                    num[slot] = mean;
                    if let Some(j) = indicator {
                        num[j] = 1.0;
                    }
                }
            }
            builder.push(LoggedRecord {
                categorical: &cat,
                numeric: &num,
                action: self.actions[i],
                position: 0,
                reward: self.rewards[i],
                propensity: self.propensities[i],
            })?;
            start = end;
        }
        Ok((builder.build()?, features))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::neural::{NeuralContext, NeuralParams};
    use crate::profile::{Event, EventKind};

    const FLOOR: f64 = 0.05;

    /// A ridge model over 3 features and 3 arms that has seen arm 0 pay off for x₀ > 0 and
    /// arm 2 for x₀ < 0.
    fn trained_linear() -> LinearState {
        let mut state = LinearState::new(3, 3, true, 1.0).unwrap();
        for i in 0..60 {
            let x = [if i % 2 == 0 { 1.0 } else { -1.0 }, (i % 5) as f64 / 5.0, 0.5];
            let arm = i % 3;
            let reward = f64::from(u8::from((arm == 0 && x[0] > 0.0) || (arm == 2 && x[0] < 0.0)));
            state.observe(arm, &x, reward).unwrap();
        }
        state
    }

    fn linear_contexts(n: usize) -> Vec<Vec<f64>> {
        (0..n).map(|i| vec![((i * 7) % 11) as f64 / 5.0 - 1.0, (i % 3) as f64, 0.5]).collect()
    }

    fn logged(id: String, features: &impl Serialize) -> LoggedExposureContext {
        LoggedExposureContext { id, features: Some(serde_json::to_string(features).unwrap()) }
    }

    /// What the platform served: the PMF with every arm eligible and the floor, an arm drawn
    /// from it, and that arm's probability as the logged propensity.
    fn serve(pmf: &[f64], i: usize) -> (usize, f64) {
        let arm = explore::draw(pmf, explore::unit_uniform(explore::draw_seed("salt", &format!("u{i}"), "r")));
        (arm, pmf[arm])
    }

    #[test]
    fn a_lin_ucb_snapshot_gives_the_exposures_it_served_importance_weight_one() {
        let state = trained_linear();
        let exploration = Exploration::Ucb { alpha: 0.5 };
        let all = [true; 3];
        let mut exposures = Vec::new();
        let mut served = Vec::new();
        for (i, x) in linear_contexts(200).into_iter().enumerate() {
            let pmf = state.pmf(exploration, &x, &all, FLOOR, 0).unwrap();
            served.push(serve(&pmf, i));
            exposures.push(logged(format!("e{i}"), &x));
        }
        let model = ContextualModel::Linear { state, exploration, salt: "salt".into() };
        let probs = contextual_pmfs(&model, FLOOR, &exposures, &[0, 1, 2]).unwrap();
        let table = RowTablePolicy::new("snapshot", 3, probs).unwrap();
        let mut differs = false;
        for (i, &(arm, propensity)) in served.iter().enumerate() {
            let pi = table.row_probs(i).unwrap();
            assert_eq!(pi[arm] / propensity, 1.0, "row {i}");
            assert!(pi.iter().all(|p| *p >= FLOOR - 1e-12), "row {i}: {pi:?}");
            differs |= table.row_probs(0).unwrap() != pi;
        }
        assert!(differs, "the PMF depends on the context");

        // The logged version lists the arms in another order: each action keeps its probability.
        let reordered = contextual_pmfs(&model, FLOOR, &exposures, &[2, 0, 1]).unwrap();
        for i in 0..served.len() {
            let (a, b) = (&table.probs()[i * 3..i * 3 + 3], &reordered[i * 3..i * 3 + 3]);
            assert_eq!((b[0], b[1], b[2]), (a[2], a[0], a[1]));
        }
    }

    #[test]
    fn a_lin_ts_snapshot_is_seeded_per_exposure_and_close_to_what_it_served() {
        let state = trained_linear();
        let exploration = Exploration::Thompson { v: 0.2, draws: 64 };
        let all = [true; 3];
        let mut exposures = Vec::new();
        let mut served = Vec::new();
        for (i, x) in linear_contexts(400).into_iter().enumerate() {
            // Served with the request's seed, which the store cannot rebuild.
            let pmf =
                state.pmf(exploration, &x, &all, FLOOR, explore::draw_seed("salt", "pmf", &i.to_string())).unwrap();
            served.push(serve(&pmf, i));
            exposures.push(logged(format!("e{i}"), &x));
        }
        let model = ContextualModel::Linear { state: state.clone(), exploration, salt: "salt".into() };
        let probs = contextual_pmfs(&model, FLOOR, &exposures, &[0, 1, 2]).unwrap();
        assert_eq!(contextual_pmfs(&model, FLOOR, &exposures, &[0, 1, 2]).unwrap(), probs, "deterministic");
        // Each exposure's draws are seeded by its id (and the salt), as documented.
        let x = linear_contexts(1).remove(0);
        let seed = explore::draw_seed("salt", "ope-pmf", "e0");
        assert_eq!(state.pmf(exploration, &x, &all, FLOOR, seed).unwrap(), probs[..3].to_vec());
        let table = RowTablePolicy::new("snapshot", 3, probs).unwrap();
        let weights: Vec<f64> =
            served.iter().enumerate().map(|(i, &(arm, p))| table.row_probs(i).unwrap()[arm] / p).collect();
        let mean = weights.iter().sum::<f64>() / weights.len() as f64;
        // Monte Carlo noise of 64 draws only: the weights scatter around 1.
        assert!((mean - 1.0).abs() < 0.1, "mean weight {mean}");
        assert!(weights.iter().any(|w| *w != 1.0), "other seeds than at serving time");
        assert!(weights.iter().all(|w| w.is_finite() && *w > 0.0));
    }

    fn tiny_network() -> NeuralPolicy {
        let params = NeuralParams { hidden: 8, embedding: 8, seed: 3, temperature: 0.5, ..NeuralParams::new(2) };
        NeuralPolicy::new(params, 3, &candle_core::Device::Cpu).unwrap()
    }

    fn neural_contexts(n: usize) -> Vec<NeuralContext> {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap().naive_utc();
        (0..n)
            .map(|i| {
                let events: Vec<Event> = (0..i % 4)
                    .map(|j| Event {
                        kind: if j % 2 == 0 { EventKind::Purchase } else { EventKind::View },
                        at: at - chrono::Duration::days(j as i64 + 1),
                        amount: if j % 2 == 0 { 40.0 * (i % 3) as f64 } else { 0.0 },
                        category: Some(format!("c{}", i % 5)),
                    })
                    .collect();
                NeuralContext::new(vec![(i % 7) as f64 / 3.0 - 1.0, (i % 2) as f64], &events, at)
            })
            .collect()
    }

    #[test]
    fn a_neural_snapshot_rebuilds_each_scored_input_and_gives_its_exposures_weight_one() {
        let network = tiny_network();
        let all = [true; 3];
        let contexts = neural_contexts(300);
        let mut exposures = Vec::new();
        let mut served = Vec::new();
        for (i, c) in contexts.iter().enumerate() {
            // Served one request at a time (inline scoring).
            let pmf = network.decision_pmf(&c.input(), &all, FLOOR).unwrap();
            served.push(serve(&pmf, i));
            exposures.push(logged(format!("e{i}"), &LoggedContext::Neural(c.clone())));
        }
        let model = ContextualModel::Neural(network);
        let probs = contextual_pmfs(&model, FLOOR, &exposures, &[0, 1, 2]).unwrap();
        let table = RowTablePolicy::new("snapshot", 3, probs).unwrap();
        for (i, &(arm, p)) in served.iter().enumerate() {
            let w = table.row_probs(i).unwrap()[arm] / p;
            // f32 forward passes in batches of 256 here, of one at serving time.
            assert!((w - 1.0).abs() < 1e-5, "row {i}: weight {w}");
        }

        // A neural snapshot cannot read a linear log (no events, no decision time); a linear
        // snapshot reads a neural log's vector.
        let linear_log = vec![logged("l0".into(), &vec![0.5, 1.0])];
        let err = contextual_pmfs(&model, FLOOR, &linear_log, &[0, 1, 2]).unwrap_err();
        assert!(matches!(&err, ContextError::NotApplicable { reason } if reason.contains("l0")), "{err:?}");
        let linear = ContextualModel::Linear {
            state: LinearState::new(3, 2, true, 1.0).unwrap(),
            exploration: Exploration::Ucb { alpha: 0.5 },
            salt: "salt".into(),
        };
        let probs = contextual_pmfs(&linear, FLOOR, &exposures[..5], &[0, 1, 2]).unwrap();
        assert_eq!(probs.len(), 15);
    }

    fn err_text(err: &ContextError) -> String {
        format!("{err:?}")
    }

    #[test]
    fn unreadable_or_misshapen_logged_contexts_name_their_row() {
        let model = ContextualModel::Linear {
            state: trained_linear(),
            exploration: Exploration::Ucb { alpha: 0.5 },
            salt: "salt".into(),
        };
        let mut exposures: Vec<LoggedExposureContext> =
            linear_contexts(3).into_iter().enumerate().map(|(i, x)| logged(format!("e{i}"), &x)).collect();
        exposures[1].features = Some("{not json".into());
        let err = contextual_pmfs(&model, FLOOR, &exposures, &[0, 1, 2]).unwrap_err();
        assert!(matches!(&err, ContextError::Row { row: 1, message } if message.contains("e1")), "{err:?}");
        exposures[1] = logged("e1".into(), &vec![1.0, 2.0]);
        let err = contextual_pmfs(&model, FLOOR, &exposures, &[0, 1, 2]).unwrap_err();
        let named = matches!(&err, ContextError::Row { row: 1, message } if message.contains("logged 2 features"));
        assert!(named && err_text(&err).contains("reads 3"), "{err:?}");
        exposures[1].features = None;
        assert!(matches!(
            contextual_pmfs(&model, FLOOR, &exposures, &[0, 1, 2]),
            Err(ContextError::Row { row: 1, .. })
        ));
        // A floor too high for the arms is the policy's error.
        let err = contextual_pmfs(&model, 0.5, &exposures[..1], &[0, 1, 2]).unwrap_err();
        assert!(matches!(err, ContextError::Policy { .. }), "{err:?}");
    }

    fn ctx(json: &str) -> Context {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn features_are_typed_by_their_values_and_missing_values_are_explicit() {
        let mut rows = RowCollector::default();
        rows.push(0, 0.5, 1.0, &ctx(r#"{"segment": "new", "cart": 10, "mobile": true, "tier": 2}"#));
        rows.push(1, 0.5, 0.0, &ctx(r#"{"segment": "returning", "tier": "gold"}"#));
        rows.push(1, 0.25, 0.0, &ctx(r#"{"cart": 30, "mobile": false}"#));
        let (data, features) = rows.build(vec!["a".into(), "b".into()]).unwrap();
        assert_eq!(features.categorical, vec!["mobile", "segment", "tier"]);
        assert_eq!(features.numeric, vec!["cart", "cart:missing"]);
        assert!(features.dropped.is_empty());
        let levels = |j: usize, i: usize| {
            let f = &data.categorical_features()[j];
            f.levels[data.categorical(i)[j] as usize].clone()
        };
        assert_eq!((levels(0, 0), levels(0, 1), levels(0, 2)), ("true".into(), MISSING_LEVEL.into(), "false".into()));
        assert_eq!((levels(1, 2), levels(2, 0), levels(2, 1)), (MISSING_LEVEL.into(), "2".into(), "gold".into()));
        // The missing cart is the mean of the others, flagged.
        assert_eq!(data.numeric(0), &[10.0, 0.0]);
        assert_eq!(data.numeric(1), &[20.0, 1.0]);
        assert_eq!(data.numeric(2), &[30.0, 0.0]);
        assert_eq!(data.actions(), &[0, 1, 1]);
        assert_eq!(data.propensities(), &[0.5, 0.5, 0.25]);
        assert_eq!(data.n_positions(), 1);
    }

    #[test]
    fn identifiers_with_too_many_levels_are_dropped() {
        let mut rows = RowCollector::default();
        for i in 0..(MAX_CATEGORICAL_LEVELS + 5) {
            rows.push(0, 1.0, 0.0, &ctx(&format!(r#"{{"order_id": "o-{i}", "segment": "s{}"}}"#, i % 3)));
        }
        let (data, features) = rows.build(vec!["a".into()]).unwrap();
        assert_eq!(features.dropped, vec!["order_id"]);
        assert_eq!(features.categorical, vec!["segment"]);
        assert_eq!(data.categorical_features()[0].levels.len(), 3);
    }
}
