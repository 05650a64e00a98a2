//! Target policies: the policy whose value off-policy evaluation estimates, seen as its action
//! distribution `π(· | x_i, k_i)` over all actions for every logged row `i` at that row's
//! position `k_i`.
//!
//! [`TargetPolicy`] is the one contract. Provided here: [`UniformPolicy`];
//! [`PositionTablePolicy`], a context-free distribution per position, built from fixed weights
//! (or one arm), from an action-distribution CSV, or by [`fit_bernoulli_ts`] (Bernoulli
//! Thompson sampling as the Open Bandit Pipeline's `BernoulliTS.compute_batch_action_dist`
//! computes it); [`RowTablePolicy`], one distribution per logged row, for contextual policies
//! whose distribution was computed from each row's context beforehand; and [`TargetSpec`], the
//! CLI's `uniform|dist:PATH.csv|bts|fixed:item=w,...|arm:KEY|snapshot[:N]` syntax. A platform
//! policy snapshot becomes a [`PositionTablePolicy`] (context-free kinds) or a
//! [`RowTablePolicy`] (`lin_ts`, `lin_ucb`, `neural_pg`) in
//! [`super::platform::snapshot_policy`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::SeedableRng;
use rand_distr::{Beta, Distribution};

use super::csv::for_each_record;
use super::seed::{derive, STREAM_THOMPSON};
use super::{LoggedData, OpeError};

/// Tolerance on a distribution's sum for policies built in code.
const SUM_TOLERANCE: f64 = 1e-9;
/// Tolerance on a column's sum in a hand-written distribution CSV (rounded decimals); within
/// it the column is renormalised, beyond it the file is rejected.
const CSV_SUM_TOLERANCE: f64 = 1e-4;

/// A target policy's action distribution per logged row and position.
pub trait TargetPolicy: Send + Sync {
    /// A short human-readable name ("uniform", "bts(alpha=1, beta=1, …)").
    fn describe(&self) -> String;

    /// Writes `π(a | x_row, k_row)` for every action `a` into `out` (length
    /// `data.n_actions()`), where `k_row = data.positions()[row]`. The values must be
    /// probabilities summing to 1; [`super::evaluate()`] checks it.
    fn action_probs(&self, data: &LoggedData, row: usize, out: &mut [f64]) -> Result<(), OpeError>;
}

/// The uniform policy: every action with probability `1 / n_actions` at every position.
///
/// This is how the Open Bandit Dataset's `random` logging policy is described per position:
/// it ranks the items uniformly at random, so the marginal probability that item `a` occupies
/// position `k` is `1 / n_items` (the logged `propensity_score` 0.0125 for 80 items), which is
/// also the OBP's action distribution of its `Random` policy. With it, the importance weight on
/// `random` logs is exactly 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct UniformPolicy;

impl TargetPolicy for UniformPolicy {
    fn describe(&self) -> String {
        "uniform".into()
    }

    fn action_probs(&self, data: &LoggedData, _row: usize, out: &mut [f64]) -> Result<(), OpeError> {
        out.fill(1.0 / data.n_actions() as f64);
        Ok(())
    }
}

/// A context-free policy with one action distribution per position.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionTablePolicy {
    name: String,
    n_actions: usize,
    /// `probs[k][a]` = π(a | position k).
    probs: Vec<Vec<f64>>,
}

impl PositionTablePolicy {
    /// A policy from `probs[k][a]`; every position's row must be a distribution over the same
    /// number of actions.
    pub fn new(name: impl Into<String>, probs: Vec<Vec<f64>>) -> Result<Self, OpeError> {
        let bad = |message: String| OpeError::InvalidPolicy { message };
        let n_actions = probs.first().map(Vec::len).unwrap_or(0);
        if n_actions == 0 {
            return Err(bad("the distribution has no positions or no actions".into()));
        }
        for (k, row) in probs.iter().enumerate() {
            if row.len() != n_actions {
                return Err(bad(format!("position {} has {} actions, position 1 has {n_actions}", k + 1, row.len())));
            }
            if let Some(a) = row.iter().position(|p| !(0.0..=1.0).contains(p)) {
                return Err(bad(format!(
                    "probability {} of action {a} at position {} is not in [0, 1]",
                    row[a],
                    k + 1
                )));
            }
            let sum: f64 = row.iter().sum();
            if (sum - 1.0).abs() > SUM_TOLERANCE {
                return Err(bad(format!("probabilities at position {} sum to {sum}, not 1", k + 1)));
            }
        }
        Ok(Self { name: name.into(), n_actions, probs })
    }

    /// The same distribution at each of `n_positions` positions, proportional to `weights`
    /// (non-negative, finite, not all zero).
    pub fn from_weights(name: impl Into<String>, weights: &[f64], n_positions: usize) -> Result<Self, OpeError> {
        if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(OpeError::InvalidPolicy { message: format!("weight {w} is not a finite non-negative number") });
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(OpeError::InvalidPolicy { message: "the weights are all zero".into() });
        }
        let row: Vec<f64> = weights.iter().map(|w| w / total).collect();
        Self::new(name, vec![row; n_positions.max(1)])
    }

    /// Reads an action-distribution CSV for the actions and positions of `data`. Two layouts:
    ///
    /// - long: header `item,position,probability` (names containing `position` and starting
    ///   with `prob` in columns 2 and 3), one line per (item, 1-based position); pairs not
    ///   listed have probability 0;
    /// - matrix: first column the item, then one column per position in order (any header
    ///   names), one line per item; items not listed have probability 0.
    ///
    /// Items are matched by action label (OBD item ids). Each position must sum to 1 within
    /// 1e-4 (then it is renormalised).
    pub fn from_csv(path: &Path, data: &LoggedData) -> Result<Self, OpeError> {
        let n_actions = data.n_actions();
        let n_positions = data.n_positions();
        let csv_error = |line: usize, message: String| OpeError::Csv { path: path.to_path_buf(), line, message };
        let mut probs = vec![vec![0.0; n_actions]; n_positions];
        let mut seen = vec![vec![false; n_actions]; n_positions];
        let mut long: Option<bool> = None;
        for_each_record(path, |line, fields| {
            let Some(long) = long else {
                let names: Vec<String> = fields.iter().map(|f| f.trim().to_lowercase()).collect();
                let is_long = names.len() == 3 && names[1].contains("position") && names[2].starts_with("prob");
                if !is_long && names.len() != n_positions + 1 {
                    return Err(csv_error(
                        line,
                        format!(
                            "expected a header `item,position,probability` or an item column \
                             and {n_positions} position columns, found {} columns",
                            names.len()
                        ),
                    ));
                }
                long = Some(is_long);
                return Ok(());
            };
            let item = fields.first().map(|s| s.trim()).unwrap_or("");
            let action = data.action_index(item).ok_or_else(|| csv_error(line, format!("unknown item {item:?}")))?;
            let number = |s: &str| {
                let s = s.trim();
                s.parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| csv_error(line, format!("{s:?} is not a probability")))
            };
            let mut set = |k: usize, p: f64| {
                if seen[k][action] {
                    return Err(csv_error(line, format!("item {item} at position {} given twice", k + 1)));
                }
                seen[k][action] = true;
                probs[k][action] = p;
                Ok(())
            };
            if long {
                if fields.len() != 3 {
                    return Err(csv_error(line, format!("{} fields, expected 3", fields.len())));
                }
                let k =
                    fields[1].trim().parse::<usize>().ok().filter(|k| (1..=n_positions).contains(k)).ok_or_else(
                        || csv_error(line, format!("position {:?} outside 1..={n_positions}", fields[1])),
                    )?;
                set(k - 1, number(&fields[2])?)
            } else {
                if fields.len() != n_positions + 1 {
                    return Err(csv_error(line, format!("{} fields, expected {}", fields.len(), n_positions + 1)));
                }
                for k in 0..n_positions {
                    set(k, number(&fields[k + 1])?)?;
                }
                Ok(())
            }
        })?;
        if long.is_none() {
            return Err(csv_error(1, "empty file".into()));
        }
        for (k, row) in probs.iter_mut().enumerate() {
            let sum: f64 = row.iter().sum();
            if (sum - 1.0).abs() > CSV_SUM_TOLERANCE {
                return Err(OpeError::InvalidPolicy {
                    message: format!("{}: probabilities at position {} sum to {sum}, not 1", path.display(), k + 1),
                });
            }
            row.iter_mut().for_each(|p| *p /= sum);
        }
        Self::new(format!("dist:{}", path.display()), probs)
    }

    /// `π(a | position k)` for every action.
    pub fn position_probs(&self, k: usize) -> Option<&[f64]> {
        self.probs.get(k).map(Vec::as_slice)
    }

    pub fn n_positions(&self) -> usize {
        self.probs.len()
    }
}

impl TargetPolicy for PositionTablePolicy {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn action_probs(&self, data: &LoggedData, row: usize, out: &mut [f64]) -> Result<(), OpeError> {
        if data.n_actions() != self.n_actions {
            return Err(OpeError::InvalidPolicy {
                message: format!(
                    "{} covers {} actions, the logged data has {}",
                    self.name,
                    self.n_actions,
                    data.n_actions()
                ),
            });
        }
        let k = data.positions()[row];
        let probs = self.probs.get(k).ok_or_else(|| OpeError::InvalidPolicy {
            message: format!("{} covers {} positions, row {row} is at position {}", self.name, self.probs.len(), k + 1),
        })?;
        out.copy_from_slice(probs);
        Ok(())
    }
}

/// A policy given as one action distribution per logged row: `probs[row * n_actions + a]` =
/// `π(a | x_row)`. This is how a contextual policy becomes a target: its distribution is
/// computed for each row's own context ahead of the evaluation (a policy snapshot of a
/// contextual kind in [`super::platform::snapshot_policy`], a learned policy in
/// [`super::learn`]). The table belongs to the rows it was computed for: evaluated on other data
/// with the same number of rows it would silently pair distributions with the wrong contexts,
/// so build it for the `LoggedData` it is evaluated on.
#[derive(Debug, Clone, PartialEq)]
pub struct RowTablePolicy {
    name: String,
    n_actions: usize,
    probs: Vec<f64>,
}

impl RowTablePolicy {
    /// A policy from `probs` (row-major, `n_actions` per row); every row must be a distribution
    /// (entries in [0, 1] summing to 1 within 1e-9).
    pub fn new(name: impl Into<String>, n_actions: usize, probs: Vec<f64>) -> Result<Self, OpeError> {
        let name = name.into();
        let bad = |message: String| OpeError::InvalidPolicy { message };
        if n_actions == 0 || probs.is_empty() || probs.len() % n_actions != 0 {
            return Err(bad(format!("{name}: {} probabilities do not form rows of {n_actions} actions", probs.len())));
        }
        for (i, row) in probs.chunks_exact(n_actions).enumerate() {
            if let Some(a) = row.iter().position(|p| !(0.0..=1.0).contains(p)) {
                return Err(bad(format!("{name}: probability {} of action {a} at row {i} is not in [0, 1]", row[a])));
            }
            let sum: f64 = row.iter().sum();
            if (sum - 1.0).abs() > SUM_TOLERANCE {
                return Err(bad(format!("{name}: probabilities at row {i} sum to {sum}, not 1")));
            }
        }
        Ok(Self { name, n_actions, probs })
    }

    /// `π(· | x_row)`, or `None` past the last row.
    pub fn row_probs(&self, row: usize) -> Option<&[f64]> {
        self.probs.get(row * self.n_actions..(row + 1) * self.n_actions)
    }

    /// Rows covered.
    pub fn n_rows(&self) -> usize {
        self.probs.len() / self.n_actions
    }

    /// Every row's distribution, row-major.
    pub fn probs(&self) -> &[f64] {
        &self.probs
    }
}

impl TargetPolicy for RowTablePolicy {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn action_probs(&self, data: &LoggedData, row: usize, out: &mut [f64]) -> Result<(), OpeError> {
        if data.n_actions() != self.n_actions || data.len() != self.n_rows() {
            return Err(OpeError::InvalidPolicy {
                message: format!(
                    "{} has distributions for {} rows over {} actions, the logged data has {} rows over {}",
                    self.name,
                    self.n_rows(),
                    self.n_actions,
                    data.len(),
                    data.n_actions()
                ),
            });
        }
        let probs = self.row_probs(row).ok_or_else(|| OpeError::InvalidPolicy {
            message: format!("{} has no distribution for row {row}", self.name),
        })?;
        out.copy_from_slice(probs);
        Ok(())
    }
}

/// Settings of [`fit_bernoulli_ts`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BernoulliTsConfig {
    /// Beta prior `α` (pseudo-clicks), the same for every item. OBP's default is 1.
    pub alpha: f64,
    /// Beta prior `β` (pseudo-non-clicks). OBP's default is 1.
    pub beta: f64,
    /// Monte Carlo draws of the posterior. OBP's default is 100,000.
    pub n_sim: usize,
    /// Seed of the Monte Carlo draws.
    pub seed: u64,
    /// Worker threads (results do not depend on it); 0 = available parallelism.
    pub threads: usize,
}

impl Default for BernoulliTsConfig {
    fn default() -> Self {
        Self { alpha: 1.0, beta: 1.0, n_sim: 100_000, seed: 0, threads: 0 }
    }
}

/// Draws per Monte Carlo chunk; each chunk has its own derived seed.
const TS_CHUNK: usize = 1_000;

/// Bernoulli Thompson sampling over a slate of `data.n_positions()` positions, with the
/// posterior fitted on `data` and its action distribution estimated by Monte Carlo.
///
/// Posterior (conjugate Beta–Bernoulli, position ignored as in OBP's `BernoulliTS.update`):
/// `θ_a ~ Beta(α + Σ_{i: a_i = a} r_i, β + n_a − Σ_{i: a_i = a} r_i)`. One draw of the policy
/// samples every `θ_a` and fills position `k` with the item of the `k`-th largest draw (OBP's
/// `select_action`); `π(a | k)` is the share of `n_sim` draws that put `a` at `k` (OBP's
/// `compute_batch_action_dist`; Saito et al. 2020, Section 5). Rewards must lie in [0, 1].
pub fn fit_bernoulli_ts(data: &LoggedData, config: &BernoulliTsConfig) -> Result<PositionTablePolicy, OpeError> {
    let n_actions = data.n_actions();
    let slate = data.n_positions();
    if slate > n_actions {
        return Err(OpeError::InvalidPolicy {
            message: format!("a slate of {slate} positions needs at least {slate} actions"),
        });
    }
    if config.n_sim == 0 {
        return Err(OpeError::InvalidConfig {
            message: "Thompson sampling needs at least one Monte Carlo draw".into(),
        });
    }
    if !(config.alpha > 0.0 && config.beta > 0.0) {
        return Err(OpeError::InvalidConfig {
            message: format!("Beta prior needs alpha > 0 and beta > 0, got {} and {}", config.alpha, config.beta),
        });
    }
    let mut clicks = vec![0.0; n_actions];
    let mut shows = vec![0.0; n_actions];
    for (&a, &r) in data.actions().iter().zip(data.rewards()) {
        if !(0.0..=1.0).contains(&r) {
            return Err(OpeError::InvalidPolicy {
                message: format!("Bernoulli Thompson sampling needs rewards in [0, 1], got {r}"),
            });
        }
        clicks[a] += r;
        shows[a] += 1.0;
    }
    let posteriors = clicks
        .iter()
        .zip(&shows)
        .map(|(&c, &n)| {
            Beta::new(config.alpha + c, config.beta + n - c)
                .map_err(|e| OpeError::InvalidConfig { message: format!("invalid Beta posterior: {e}") })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let n_chunks = config.n_sim.div_ceil(TS_CHUNK);
    let workers = worker_count(config.threads).min(n_chunks);
    let run_chunks = |worker: usize| -> Vec<u64> {
        let mut counts = vec![0u64; slate * n_actions];
        let mut theta = vec![0.0; n_actions];
        let mut top: Vec<(f64, usize)> = Vec::with_capacity(slate + 1);
        for chunk in (worker..n_chunks).step_by(workers) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(derive(config.seed, STREAM_THOMPSON, chunk as u64));
            let draws = TS_CHUNK.min(config.n_sim - chunk * TS_CHUNK);
            for _ in 0..draws {
                for (t, post) in theta.iter_mut().zip(&posteriors) {
                    *t = post.sample(&mut rng);
                }
                top_k(&theta, slate, &mut top);
                for (k, &(_, a)) in top.iter().enumerate() {
                    counts[k * n_actions + a] += 1;
                }
            }
        }
        counts
    };
    let mut counts = vec![0u64; slate * n_actions];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..workers).map(|w| scope.spawn(move || run_chunks(w))).collect();
        let mut partials = vec![run_chunks(0)];
        for h in handles {
            match h.join() {
                Ok(part) => partials.push(part),
                // A worker only panics if the code above has a bug; re-raise it here.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        for part in partials {
            counts.iter_mut().zip(part).for_each(|(c, p)| *c += p);
        }
    });
    let probs = (0..slate)
        .map(|k| counts[k * n_actions..(k + 1) * n_actions].iter().map(|&c| c as f64 / config.n_sim as f64).collect())
        .collect();
    PositionTablePolicy::new(
        format!("bts(alpha={}, beta={}, n_sim={}, seed={})", config.alpha, config.beta, config.n_sim, config.seed),
        probs,
    )
}

/// The `k` largest entries of `values` (value, index), largest first, into `top`.
fn top_k(values: &[f64], k: usize, top: &mut Vec<(f64, usize)>) {
    top.clear();
    for (i, &v) in values.iter().enumerate() {
        if top.len() == k && top.last().is_some_and(|&(low, _)| v <= low) {
            continue;
        }
        let at = top.iter().position(|&(t, _)| v > t).unwrap_or(top.len());
        top.insert(at, (v, i));
        top.truncate(k);
    }
}

/// Number of worker threads for `requested` (0 = available parallelism).
pub(crate) fn worker_count(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

/// The CLI's target-policy syntax: `uniform`, `dist:PATH.csv`, `bts`, `fixed:item=w,...`,
/// `arm:KEY`, `snapshot` or `snapshot:N`.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    Uniform,
    Dist(PathBuf),
    /// Bernoulli Thompson sampling fitted on the logged data (Open Bandit Dataset logs only).
    Bts,
    Fixed(Vec<(String, f64)>),
    /// Always this action (arm or item), at every position.
    Arm(String),
    /// A policy snapshot of the logged experiment: its latest for the logged version (`None`)
    /// or the one with this policy version. Needs the store: resolved by
    /// [`super::platform::snapshot_policy`], not by [`TargetSpec::build`].
    Snapshot(Option<i64>),
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "uniform" {
            return Ok(Self::Uniform);
        }
        if s == "bts" {
            return Ok(Self::Bts);
        }
        if let Some(path) = s.strip_prefix("dist:") {
            if path.is_empty() {
                return Err("dist: needs a path, as in dist:policy.csv".into());
            }
            return Ok(Self::Dist(PathBuf::from(path)));
        }
        if s == "snapshot" {
            return Ok(Self::Snapshot(None));
        }
        if let Some(n) = s.strip_prefix("snapshot:") {
            let n =
                n.trim().parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("snapshot:{n} needs a policy version (a positive integer), as in snapshot:3")
                })?;
            return Ok(Self::Snapshot(Some(n)));
        }
        if let Some(key) = s.strip_prefix("arm:") {
            let key = key.trim();
            if key.is_empty() {
                return Err("arm: needs an arm key, as in arm:control".into());
            }
            return Ok(Self::Arm(key.to_string()));
        }
        if let Some(list) = s.strip_prefix("fixed:") {
            let mut weights = Vec::new();
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (item, w) = part.split_once('=').ok_or_else(|| format!("{part:?} is not item=weight"))?;
                let w = w
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|w| w.is_finite() && *w >= 0.0)
                    .ok_or_else(|| format!("weight of {item:?} is not a non-negative number"))?;
                weights.push((item.trim().to_string(), w));
            }
            if weights.is_empty() {
                return Err("fixed: needs weights, as in fixed:0=1,5=2".into());
            }
            return Ok(Self::Fixed(weights));
        }
        Err(format!(
            "unknown target policy {s:?}: expected uniform, dist:PATH.csv, bts, fixed:item=w,..., arm:KEY, \
             snapshot or snapshot:N"
        ))
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uniform => write!(f, "uniform"),
            Self::Dist(path) => write!(f, "dist:{}", path.display()),
            Self::Bts => write!(f, "bts"),
            Self::Arm(key) => write!(f, "arm:{key}"),
            Self::Snapshot(None) => write!(f, "snapshot"),
            Self::Snapshot(Some(n)) => write!(f, "snapshot:{n}"),
            Self::Fixed(weights) => {
                write!(f, "fixed:")?;
                for (i, (item, w)) in weights.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{item}={w}")?;
                }
                Ok(())
            }
        }
    }
}

impl TargetSpec {
    /// Builds the policy for `data` (Thompson sampling is fitted on `data` with `seed`).
    /// Snapshot targets need the store: here they are [`OpeError::TargetNotApplicable`].
    ///
    /// A Thompson sampling policy fitted on the very logs it is evaluated on favours the items
    /// that happened to be clicked there, so its estimated value is optimistic; to evaluate it
    /// fairly, fit it on other logs ([`fit_bernoulli_ts`]) and evaluate on these.
    pub fn build(&self, data: &LoggedData, seed: u64) -> Result<Box<dyn TargetPolicy>, OpeError> {
        Ok(match self {
            Self::Uniform => Box::new(UniformPolicy),
            Self::Arm(key) => {
                let a = data.action_index(key).ok_or_else(|| OpeError::InvalidPolicy {
                    message: format!("unknown arm {key:?} (actions: {})", data.action_labels().join(", ")),
                })?;
                let mut weights = vec![0.0; data.n_actions()];
                weights[a] = 1.0;
                Box::new(PositionTablePolicy::from_weights(self.to_string(), &weights, data.n_positions())?)
            }
            Self::Snapshot(_) => {
                return Err(OpeError::TargetNotApplicable {
                    target: self.to_string(),
                    source_kind: "these logged data",
                    reason: "a policy snapshot is read from the store: use --logged experiment:KEY".into(),
                })
            }
            Self::Dist(path) => Box::new(PositionTablePolicy::from_csv(path, data)?),
            Self::Bts => Box::new(fit_bernoulli_ts(data, &BernoulliTsConfig { seed, ..BernoulliTsConfig::default() })?),
            Self::Fixed(pairs) => {
                let mut weights = vec![0.0; data.n_actions()];
                let mut given = vec![false; data.n_actions()];
                for (item, w) in pairs {
                    let a = data.action_index(item).ok_or_else(|| OpeError::InvalidPolicy {
                        message: format!("unknown item {item:?} in fixed weights"),
                    })?;
                    if given[a] {
                        return Err(OpeError::InvalidPolicy {
                            message: format!("item {item:?} given twice in fixed weights"),
                        });
                    }
                    given[a] = true;
                    weights[a] = *w;
                }
                Box::new(PositionTablePolicy::from_weights(self.to_string(), &weights, data.n_positions())?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ope::data::{LoggedDataBuilder, LoggedRecord};

    /// 3 actions, 2 positions; action 2 is clicked much more often.
    fn slate_data() -> LoggedData {
        let labels = vec!["0".into(), "1".into(), "2".into()];
        let mut b = LoggedDataBuilder::new(labels, 2, vec![], vec![]).unwrap();
        for i in 0..300 {
            let action = i % 3;
            let reward = match action {
                2 => f64::from(i % 2 == 0),
                _ => f64::from(i % 30 == 0),
            };
            b.push(LoggedRecord::<&str> {
                categorical: &[],
                numeric: &[],
                action,
                position: i % 2,
                reward,
                propensity: 1.0 / 3.0,
            })
            .unwrap();
        }
        b.build().unwrap()
    }

    #[test]
    fn uniform_gives_one_over_n_actions() {
        let d = slate_data();
        let mut out = vec![0.0; 3];
        UniformPolicy.action_probs(&d, 0, &mut out).unwrap();
        assert_eq!(out, vec![1.0 / 3.0; 3]);
    }

    #[test]
    fn fixed_spec_parses_normalises_and_rejects_unknown_items() {
        let d = slate_data();
        let spec: TargetSpec = "fixed:0=1, 2=3".parse().unwrap();
        assert_eq!(spec.to_string(), "fixed:0=1,2=3");
        let p = spec.build(&d, 0).unwrap();
        let mut out = vec![0.0; 3];
        p.action_probs(&d, 1, &mut out).unwrap();
        assert_eq!(out, vec![0.25, 0.0, 0.75]);
        let err = "fixed:7=1".parse::<TargetSpec>().unwrap().build(&d, 0);
        assert_eq!(err.err().map(|e| e.code()), Some("ope_invalid_policy"));
        assert!("fixed:0=-1".parse::<TargetSpec>().is_err());
        assert!("fixed:".parse::<TargetSpec>().is_err());
        assert!("greedy".parse::<TargetSpec>().is_err());
        assert_eq!("dist:a.csv".parse::<TargetSpec>(), Ok(TargetSpec::Dist("a.csv".into())));
    }

    #[test]
    fn arm_spec_always_picks_the_arm_and_snapshot_needs_the_store() {
        let d = slate_data();
        let spec: TargetSpec = "arm:2".parse().unwrap();
        assert_eq!(spec.to_string(), "arm:2");
        let p = spec.build(&d, 0).unwrap();
        let mut out = vec![0.0; 3];
        p.action_probs(&d, 1, &mut out).unwrap();
        assert_eq!(out, vec![0.0, 0.0, 1.0]);
        let err = "arm:9".parse::<TargetSpec>().unwrap().build(&d, 0).err().map(|e| e.code());
        assert_eq!(err, Some("ope_invalid_policy"));
        assert_eq!("snapshot".parse::<TargetSpec>(), Ok(TargetSpec::Snapshot(None)));
        assert_eq!("snapshot:12".parse::<TargetSpec>().map(|s| s.to_string()), Ok("snapshot:12".into()));
        let err = TargetSpec::Snapshot(None).build(&d, 0).err().map(|e| e.code());
        assert_eq!(err, Some("ope_target_not_applicable"));
    }

    #[test]
    fn position_table_rejects_non_distributions() {
        assert!(PositionTablePolicy::new("x", vec![vec![0.5, 0.4]]).is_err());
        assert!(PositionTablePolicy::new("x", vec![vec![1.5, -0.5]]).is_err());
        assert!(PositionTablePolicy::new("x", vec![vec![0.5, 0.5], vec![1.0]]).is_err());
        assert!(PositionTablePolicy::new("x", vec![]).is_err());
    }

    #[test]
    fn distribution_csv_reads_matrix_and_long_layouts() {
        let d = slate_data();
        let dir = std::env::temp_dir().join(format!("ope-dist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let matrix = dir.join("matrix.csv");
        std::fs::write(&matrix, "item,pos1,pos2\n0,0.5,0.2\n1,0.5,0.3\n2,0,0.5\n").unwrap();
        let long = dir.join("long.csv");
        std::fs::write(&long, "item,position,probability\n0,1,0.5\n1,1,0.5\n0,2,0.2\n1,2,0.3\n2,2,0.5\n").unwrap();
        let a = PositionTablePolicy::from_csv(&matrix, &d).unwrap();
        let b = PositionTablePolicy::from_csv(&long, &d).unwrap();
        assert_eq!(a.position_probs(0), Some(&[0.5, 0.5, 0.0][..]));
        assert_eq!(a.position_probs(1), b.position_probs(1));
        assert_eq!(a.position_probs(0), b.position_probs(0));

        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "item,position,probability\n0,1,0.5\n").unwrap();
        assert_eq!(PositionTablePolicy::from_csv(&bad, &d).unwrap_err().code(), "ope_invalid_policy");
        std::fs::write(&bad, "item,position,probability\n0,1,0.5\n0,1,0.5\n").unwrap();
        assert_eq!(PositionTablePolicy::from_csv(&bad, &d).unwrap_err().code(), "ope_csv");
        std::fs::write(&bad, "item,position,probability\n9,1,1\n").unwrap();
        assert_eq!(PositionTablePolicy::from_csv(&bad, &d).unwrap_err().code(), "ope_csv");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_row_table_gives_each_row_its_own_distribution_and_checks_its_shape() {
        let d = slate_data();
        let mut probs = Vec::new();
        for i in 0..d.len() {
            let a = i % 3;
            let mut row = vec![0.1; 3];
            row[a] = 0.8;
            probs.extend(row);
        }
        let p = RowTablePolicy::new("per-row", 3, probs).unwrap();
        assert_eq!(p.n_rows(), d.len());
        let mut out = vec![0.0; 3];
        for i in [0, 1, 2, 299] {
            p.action_probs(&d, i, &mut out).unwrap();
            assert_eq!(out[i % 3], 0.8, "row {i}");
            assert_eq!(p.row_probs(i), Some(&out[..]));
        }
        assert_eq!(p.row_probs(300), None);
        // Built for other rows: refused rather than paired with the wrong contexts.
        let short = RowTablePolicy::new("short", 3, vec![0.2, 0.3, 0.5]).unwrap();
        assert_eq!(short.action_probs(&d, 0, &mut out).unwrap_err().code(), "ope_invalid_policy");
        assert!(RowTablePolicy::new("x", 3, vec![0.5, 0.5]).is_err());
        assert!(RowTablePolicy::new("x", 2, vec![0.5, 0.4]).is_err());
        assert!(RowTablePolicy::new("x", 2, vec![1.5, -0.5]).is_err());
        assert!(RowTablePolicy::new("x", 0, vec![]).is_err());
    }

    #[test]
    fn top_k_keeps_the_largest_in_order() {
        let mut top = Vec::new();
        top_k(&[0.1, 0.9, 0.5, 0.7, 0.2], 3, &mut top);
        assert_eq!(top, vec![(0.9, 1), (0.7, 3), (0.5, 2)]);
    }

    #[test]
    fn thompson_sampling_is_a_seeded_distribution_favouring_the_clicked_item() {
        let d = slate_data();
        let config = BernoulliTsConfig { n_sim: 5_000, seed: 7, ..BernoulliTsConfig::default() };
        let p = fit_bernoulli_ts(&d, &config).unwrap();
        for k in 0..2 {
            let row = p.position_probs(k).unwrap();
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        // Item 2 (CTR 0.5 vs ~0.03) is almost always ranked first.
        assert!(p.position_probs(0).unwrap()[2] > 0.99);
        let single = BernoulliTsConfig { threads: 1, ..config };
        assert_eq!(fit_bernoulli_ts(&d, &single).unwrap(), p);
        let other = BernoulliTsConfig { seed: 8, ..config };
        assert_ne!(fit_bernoulli_ts(&d, &other).unwrap(), p);
    }
}
