//! The platform's own exposure log as logged bandit feedback, and its policy snapshots as
//! target policies.
//!
//! [`load_experiment_log`] reads one experiment version's mature exposures from the store
//! (through [`crate::store::export`]) into a [`LoggedData`]: the actions are the version's arms
//! in definition order, there is one position, the propensity is the one logged with the
//! decision and the reward is the primary metric's inside its attribution window (conversion:
//! 1 if any reward of the exposure is positive, else 0; other kinds: the sum of the exposure's
//! rewards, 0 without any). [`snapshot_policy`] turns a policy snapshot into the distribution
//! the platform served from it.
//!
//! The clock is an argument (`now`), as everywhere in this room.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDateTime;
use serde::Serialize;

use super::{LoggedData, LoggedDataBuilder, LoggedRecord, OpeError, PositionTablePolicy};
use crate::experiment::context::{Context, Value};
use crate::experiment::definition::{parse_duration, Definition, MetricKind};
use crate::experiment::registry::SnapshotState;
use crate::policy::explore;
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
    Ok(ExperimentLog { data, info, experiment_id: id })
}

/// The distribution the platform served from a policy snapshot of `log`'s experiment — its
/// latest for the logged version (`policy_version = None`) or the one with that policy
/// version: the snapshot's context-free PMF with the version's exploration floor mixed in
/// (`explore::restrict_and_floor` with every arm eligible), the same at every context. That is
/// exactly the logged propensity of every decision the snapshot made for a request that allowed
/// every arm; requests that restricted `eligible_arms` were served a distribution over fewer
/// arms, which this target does not reproduce.
///
/// A snapshot of another version is accepted when that version has the same arms (matched by
/// key); its own floor applies.
pub fn snapshot_policy(
    db: &Db,
    log: &ExperimentLog,
    policy_version: Option<i64>,
) -> Result<PositionTablePolicy, OpeError> {
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
    if state.linear.is_some() {
        // A contextual snapshot's PMF differs per exposure (it needs each exposure's
        // encoded context); evaluating it is the shadow-mode work of issue 5.
        return Err(OpeError::TargetNotApplicable {
            target: format!("snapshot:{}", row.policy_version),
            source_kind: "experiment",
            reason: "the snapshot is of a contextual policy (lin_ts / lin_ucb): its PMF depends on each exposure's context, which this evaluation does not replay yet".into(),
        });
    }
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
    let by_key: HashMap<&str, f64> =
        snapshot_arms.iter().map(String::as_str).zip(state.policy.pmf.iter().copied()).collect();
    let pmf: Vec<f64> = logged_arms.iter().map(|a| by_key.get(a.as_str()).copied().unwrap_or(0.0)).collect();
    let served = explore::restrict_and_floor(&pmf, &vec![true; pmf.len()], definition.min_propensity)
        .map_err(|e| OpeError::InvalidPolicy { message: format!("policy snapshot {}: {e}", row.policy_version) })?;
    PositionTablePolicy::new(format!("snapshot:{} of {key}", row.policy_version), vec![served])
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
