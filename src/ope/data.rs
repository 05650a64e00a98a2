//! Logged bandit feedback: one row per (decision, slate position) with the context the
//! decision saw, the action taken, its position, the reward that followed and the logging
//! policy's propensity `μ(a_i | x_i, k_i)` of that action at that position.
//!
//! Storage is columnar; categorical context values are interned per feature. Filled by
//! [`LoggedDataBuilder`] from any source (the OBD loader in [`super::obd`], a store-backed
//! exposure-log loader).

use std::collections::HashMap;

use super::OpeError;

/// A categorical context feature and its observed levels (index = encoded value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoricalFeature {
    pub name: String,
    pub levels: Vec<String>,
}

/// Validated logged bandit feedback. Positions are 0-based (`0..n_positions`); a non-slate
/// experiment has one position. Every propensity lies in (0, 1], every reward is finite.
#[derive(Debug, Clone)]
pub struct LoggedData {
    action_labels: Vec<String>,
    n_positions: usize,
    categorical: Vec<CategoricalFeature>,
    numeric_names: Vec<String>,
    cat_values: Vec<u32>,
    num_values: Vec<f64>,
    actions: Vec<usize>,
    positions: Vec<usize>,
    rewards: Vec<f64>,
    propensities: Vec<f64>,
}

/// One row handed to [`LoggedDataBuilder::push`]. `categorical` and `numeric` follow the
/// feature order given to [`LoggedDataBuilder::new`].
#[derive(Debug, Clone, Copy)]
pub struct LoggedRecord<'a, S: AsRef<str>> {
    pub categorical: &'a [S],
    pub numeric: &'a [f64],
    pub action: usize,
    pub position: usize,
    pub reward: f64,
    pub propensity: f64,
}

/// Builds a [`LoggedData`] row by row, validating and interning as it goes.
#[derive(Debug)]
pub struct LoggedDataBuilder {
    data: LoggedData,
    level_index: Vec<HashMap<String, u32>>,
}

impl LoggedDataBuilder {
    /// Starts an empty data set over `action_labels` (action `a` is `action_labels[a]`) and
    /// `n_positions` slate positions, with the named context features.
    pub fn new(
        action_labels: Vec<String>,
        n_positions: usize,
        categorical_names: Vec<String>,
        numeric_names: Vec<String>,
    ) -> Result<Self, OpeError> {
        if action_labels.is_empty() {
            return Err(OpeError::InvalidConfig { message: "logged data needs at least one action".into() });
        }
        if n_positions == 0 {
            return Err(OpeError::InvalidConfig { message: "logged data needs at least one position".into() });
        }
        let mut seen = HashMap::new();
        for (a, label) in action_labels.iter().enumerate() {
            if let Some(prev) = seen.insert(label.as_str(), a) {
                return Err(OpeError::InvalidConfig {
                    message: format!("action label {label:?} used by actions {prev} and {a}"),
                });
            }
        }
        let level_index = vec![HashMap::new(); categorical_names.len()];
        let categorical =
            categorical_names.into_iter().map(|name| CategoricalFeature { name, levels: Vec::new() }).collect();
        Ok(Self {
            data: LoggedData {
                action_labels,
                n_positions,
                categorical,
                numeric_names,
                cat_values: Vec::new(),
                num_values: Vec::new(),
                actions: Vec::new(),
                positions: Vec::new(),
                rewards: Vec::new(),
                propensities: Vec::new(),
            },
            level_index,
        })
    }

    /// Reserves room for `rows` more rows.
    pub fn reserve(&mut self, rows: usize) {
        let d = &mut self.data;
        d.cat_values.reserve(rows * d.categorical.len());
        d.num_values.reserve(rows * d.numeric_names.len());
        d.actions.reserve(rows);
        d.positions.reserve(rows);
        d.rewards.reserve(rows);
        d.propensities.reserve(rows);
    }

    /// Appends one row after validating it.
    pub fn push<S: AsRef<str>>(&mut self, record: LoggedRecord<'_, S>) -> Result<(), OpeError> {
        let row = self.data.actions.len();
        let bad = |message: String| OpeError::InvalidRow { row, message };
        let d = &mut self.data;
        if record.categorical.len() != d.categorical.len() {
            return Err(bad(format!(
                "{} categorical values for {} features",
                record.categorical.len(),
                d.categorical.len()
            )));
        }
        if record.numeric.len() != d.numeric_names.len() {
            return Err(bad(format!("{} numeric values for {} features", record.numeric.len(), d.numeric_names.len())));
        }
        if let Some(j) = record.numeric.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("numeric feature {} is not finite", d.numeric_names[j])));
        }
        if record.action >= d.action_labels.len() {
            return Err(bad(format!("action {} outside 0..{}", record.action, d.action_labels.len())));
        }
        if record.position >= d.n_positions {
            return Err(bad(format!(
                "position {} outside 0..{} (positions are 0-based here)",
                record.position, d.n_positions
            )));
        }
        if !record.reward.is_finite() {
            return Err(bad("reward is not finite".into()));
        }
        // Importance weights divide by the propensity: it must be a probability > 0.
        if !(record.propensity > 0.0 && record.propensity <= 1.0) {
            return Err(bad(format!("propensity {} outside (0, 1]", record.propensity)));
        }
        for (j, value) in record.categorical.iter().enumerate() {
            let value = value.as_ref();
            let code = match self.level_index[j].get(value) {
                Some(&code) => code,
                None => {
                    let feature = &mut d.categorical[j];
                    let code = u32::try_from(feature.levels.len())
                        .map_err(|_| bad(format!("too many levels in {}", feature.name)))?;
                    feature.levels.push(value.to_string());
                    self.level_index[j].insert(value.to_string(), code);
                    code
                }
            };
            d.cat_values.push(code);
        }
        d.num_values.extend_from_slice(record.numeric);
        d.actions.push(record.action);
        d.positions.push(record.position);
        d.rewards.push(record.reward);
        d.propensities.push(record.propensity);
        Ok(())
    }

    /// Finishes the data set; it must have at least one row.
    pub fn build(self) -> Result<LoggedData, OpeError> {
        if self.data.actions.is_empty() {
            return Err(OpeError::NotEnoughData { message: "the logged data has no rows".into() });
        }
        Ok(self.data)
    }
}

impl LoggedData {
    /// Number of logged rows.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Always false for a built data set (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn n_actions(&self) -> usize {
        self.action_labels.len()
    }

    pub fn n_positions(&self) -> usize {
        self.n_positions
    }

    pub fn action_labels(&self) -> &[String] {
        &self.action_labels
    }

    /// The action whose label is `label`.
    pub fn action_index(&self, label: &str) -> Option<usize> {
        self.action_labels.iter().position(|l| l == label)
    }

    pub fn categorical_features(&self) -> &[CategoricalFeature] {
        &self.categorical
    }

    pub fn numeric_feature_names(&self) -> &[String] {
        &self.numeric_names
    }

    /// Encoded categorical values of row `i` (index into each feature's `levels`).
    pub fn categorical(&self, i: usize) -> &[u32] {
        let k = self.categorical.len();
        &self.cat_values[i * k..(i + 1) * k]
    }

    /// Numeric context values of row `i`.
    pub fn numeric(&self, i: usize) -> &[f64] {
        let k = self.numeric_names.len();
        &self.num_values[i * k..(i + 1) * k]
    }

    pub fn actions(&self) -> &[usize] {
        &self.actions
    }

    /// 0-based positions.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    pub fn rewards(&self) -> &[f64] {
        &self.rewards
    }

    pub fn propensities(&self) -> &[f64] {
        &self.propensities
    }

    /// The logging policy's own (on-policy) value: the mean logged reward.
    pub fn on_policy_value(&self) -> f64 {
        self.rewards.iter().sum::<f64>() / self.len() as f64
    }

    /// A new data set made of rows `rows` (in that order, repeats allowed), with the same
    /// actions, positions and feature encodings.
    pub fn select(&self, rows: &[usize]) -> Result<LoggedData, OpeError> {
        if rows.is_empty() {
            return Err(OpeError::NotEnoughData { message: "selected no rows".into() });
        }
        if let Some(&bad) = rows.iter().find(|&&i| i >= self.len()) {
            return Err(OpeError::InvalidConfig { message: format!("row {bad} outside 0..{}", self.len()) });
        }
        let mut out = LoggedData {
            action_labels: self.action_labels.clone(),
            n_positions: self.n_positions,
            categorical: self.categorical.clone(),
            numeric_names: self.numeric_names.clone(),
            cat_values: Vec::with_capacity(rows.len() * self.categorical.len()),
            num_values: Vec::with_capacity(rows.len() * self.numeric_names.len()),
            actions: Vec::with_capacity(rows.len()),
            positions: Vec::with_capacity(rows.len()),
            rewards: Vec::with_capacity(rows.len()),
            propensities: Vec::with_capacity(rows.len()),
        };
        for &i in rows {
            out.cat_values.extend_from_slice(self.categorical(i));
            out.num_values.extend_from_slice(self.numeric(i));
            out.actions.push(self.actions[i]);
            out.positions.push(self.positions[i]);
            out.rewards.push(self.rewards[i]);
            out.propensities.push(self.propensities[i]);
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny data set: 2 actions, 1 position, one categorical feature.
    pub(crate) fn tiny(rows: &[(&str, usize, f64, f64)]) -> LoggedData {
        let mut b = LoggedDataBuilder::new(vec!["a".into(), "b".into()], 1, vec!["segment".into()], vec![]).unwrap();
        for &(segment, action, reward, propensity) in rows {
            b.push(LoggedRecord { categorical: &[segment], numeric: &[], action, position: 0, reward, propensity })
                .unwrap();
        }
        b.build().unwrap()
    }

    #[test]
    fn builder_interns_levels_and_exposes_rows() {
        let d = tiny(&[("x", 0, 1.0, 0.5), ("y", 1, 0.0, 0.5), ("x", 1, 1.0, 0.25)]);
        assert_eq!(d.len(), 3);
        assert_eq!(d.categorical_features()[0].levels, vec!["x", "y"]);
        assert_eq!(d.categorical(2), &[0]);
        assert_eq!(d.actions(), &[0, 1, 1]);
        assert!((d.on_policy_value() - 2.0 / 3.0).abs() < 1e-15);
        let s = d.select(&[2, 2]).unwrap();
        assert_eq!(s.actions(), &[1, 1]);
        assert_eq!(s.propensities(), &[0.25, 0.25]);
    }

    #[test]
    fn builder_rejects_bad_rows() {
        let mut b = LoggedDataBuilder::new(vec!["a".into()], 1, vec![], vec!["x".into()]).unwrap();
        let rec = |action, position, reward, propensity| LoggedRecord::<&str> {
            categorical: &[],
            numeric: &[1.0],
            action,
            position,
            reward,
            propensity,
        };
        assert_eq!(b.push(rec(0, 0, 1.0, 0.0)).unwrap_err().code(), "ope_invalid_row");
        assert_eq!(b.push(rec(0, 0, 1.0, 1.5)).unwrap_err().code(), "ope_invalid_row");
        assert_eq!(b.push(rec(1, 0, 1.0, 0.5)).unwrap_err().code(), "ope_invalid_row");
        assert_eq!(b.push(rec(0, 1, 1.0, 0.5)).unwrap_err().code(), "ope_invalid_row");
        assert_eq!(b.push(rec(0, 0, f64::NAN, 0.5)).unwrap_err().code(), "ope_invalid_row");
        assert_eq!(b.build().unwrap_err().code(), "ope_not_enough_data");
        assert!(LoggedDataBuilder::new(vec!["a".into(), "a".into()], 1, vec![], vec![]).is_err());
    }
}
