//! Offline learning on the Open Bandit Dataset (issue 5): train the platform's contextual
//! policies (`lin_ts`, `lin_ucb`, `neural_pg`) on the uniform-random logs of the earlier days,
//! then estimate their value on the held-out later days by off-policy evaluation, beside the
//! held-out random policy's own value and the on-policy value of the Bernoulli Thompson sampling
//! policy that ran in production (`bts`).
//!
//! **Decisions.** An OBD row is one (impression, slot) pair: the item shown at `position` with
//! the logging policy's marginal probability of that item at that slot. Every row is a separate
//! decision here, with the position in the context, and a target policy is scored by its
//! per-position action distribution `π(· | x_i, k_i)`, as the Open Bandit Pipeline scores an
//! `action_dist[i, :, k]` (Saito, Aihara, Matsutani, Narita 2020, arXiv 2008.07146, §3). A
//! learned policy may thus put the same item in two slots of one impression; the sample has
//! unique timestamps per row, so impressions cannot be regrouped into slates anyway.
//!
//! **Context** ([`ContextEncoder`]), in this order:
//! 1. one-hot of each `user_feature_j` over the levels seen in the training rows (a level first
//!    seen on a held-out day encodes as all zeros for that feature: no leakage from the
//!    evaluation days);
//! 2. `ln(1 + max(a, 0))` of each `user-item_affinity_a` (one per item; OBD's affinities are
//!    counts of the user's past interactions with the item, the log damps heavy users);
//! 3. one-hot of the 0-based position.
//!
//! **Split** ([`split_by_day`]): the last `holdout_days` calendar days (UTC, from `timestamp`)
//! are held out, the earlier days train. With fewer distinct days than `holdout_days + 1` the
//! rows are split by time order instead (the last [`TIME_ORDER_HOLDOUT`] of them held out) and
//! the report says so.
//!
//! **Training.** The `random` logs are uniform (every item at every slot with probability
//! 1/n_items), so the logged action is independent of the context and a plain per-arm ridge
//! regression of the click on the context is unbiased for `E[click | x, a]`: the linear
//! policies `observe(item, x, click)` every training row once (one shared [`LinearState`];
//! `lin_ts` and `lin_ucb` differ only in how they turn it into a PMF). `neural_pg` trains by its
//! off-policy clipped SNIPW policy gradient on the rows with their logged propensities.
//!
//! **Evaluation.** On each held-out row the learned policy's served PMF (its exploration, then
//! the floor `min_propensity` mixed in; `lin_ts` draws are seeded per row) becomes one row of a
//! [`RowTablePolicy`], and [`super::evaluate()`] gives IPW, SNIPW, DM, DR and Switch-DR with
//! normal and bootstrap 95% intervals and the effective sample size. The comparison with
//! `bts` uses two independent samples (different logs), so the interval of a difference is
//! `Δ ± 1.96 √(se₁² + se₂²)`.
//!
//! **Few clicks.** With about 0.3% clicks, a near-deterministic policy matches the logged item on
//! a few dozen held-out rows, often none of them clicked: the normal and bootstrap intervals then
//! collapse to `[0, 0]`, which is an artefact, not certainty. SNIPW of 0/1 rewards is a weighted
//! proportion, so its row also carries a Wilson score interval (Wilson 1927, JASA 22) at Kish's
//! effective sample size `n* = (Σw)²/Σw²` (Kish 1965, "Survey Sampling"; Korn & Graubard 1998,
//! Survey Methodology 24(2), use the effective sample size the same way for proportions with
//! few positive counts), which stays informative at zero clicks (`[0, z²/(n* + z²)]`), and its
//! difference with `bts` uses Newcombe's hybrid score interval from the two Wilson intervals
//! (Newcombe 1998, Statistics in Medicine 17, method 10). Rows with fewer than
//! [`MIN_EFFECTIVE_CLICKS`] clicks in the effective sample (`ESS × SNIPW`) are flagged, and their
//! IPW/DR differences with `bts` are left out rather than shown with a collapsed interval.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use super::bootstrap::{percentile_intervals, BootstrapConfig};
use super::csv::for_each_record;
use super::estimators::{point_estimate, RatioTerms};
use super::seed::derive;
use super::{
    evaluate, load_obd, LoggedData, ObdOptions, OpeConfig, OpeError, OpeReport, RowTablePolicy, UniformPolicy,
};
use crate::policy::explore::restrict_and_floor;
use crate::policy::linear::{Exploration, LinearState, DEFAULT_ALPHA, DEFAULT_LAMBDA, DEFAULT_LIN_TS_DRAWS, DEFAULT_V};
use crate::policy::neural::{LoggedRow, NeuralInput, NeuralParams, NeuralPolicy, Objective, TrainReport};

/// Share of the rows held out (the latest ones) when the logs span too few days for a day split.
pub const TIME_ORDER_HOLDOUT: f64 = 0.3;
/// Random stream of the per-row seeds of `lin_ts`'s Monte Carlo draws.
const STREAM_LIN_TS: u64 = 0x6c69_6e74_7300_0004;
/// Normal quantile of a two-sided 95% interval.
const Z_95: f64 = 1.959_963_984_540_054;

/// Wilson's score 95% interval of a proportion `p` observed on `n` (possibly effective, not
/// whole) trials: `(p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n)`.
pub fn wilson_ci95(p: f64, n: f64) -> Option<[f64; 2]> {
    if !(n > 0.0 && (0.0..=1.0).contains(&p)) {
        return None;
    }
    let z2 = Z_95 * Z_95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Some([(centre - half).max(0.0), (centre + half).min(1.0)])
}

/// Newcombe's hybrid score interval of `p1 − p2` from each proportion's Wilson interval.
pub fn newcombe_diff_ci95(p1: f64, ci1: [f64; 2], p2: f64, ci2: [f64; 2]) -> [f64; 2] {
    let d = p1 - p2;
    [
        d - ((p1 - ci1[0]).powi(2) + (ci2[1] - p2).powi(2)).sqrt(),
        d + ((ci1[1] - p1).powi(2) + (p2 - ci2[0]).powi(2)).sqrt(),
    ]
}

/// A policy kind that [`learn_and_evaluate`] trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LearnedKind {
    LinTs,
    LinUcb,
    NeuralPg,
}

impl LearnedKind {
    pub const ALL: [LearnedKind; 3] = [LearnedKind::LinTs, LearnedKind::LinUcb, LearnedKind::NeuralPg];

    pub fn key(self) -> &'static str {
        match self {
            LearnedKind::LinTs => "lin_ts",
            LearnedKind::LinUcb => "lin_ucb",
            LearnedKind::NeuralPg => "neural_pg",
        }
    }
}

impl std::str::FromStr for LearnedKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LearnedKind::ALL
            .into_iter()
            .find(|k| k.key() == s.trim())
            .ok_or_else(|| format!("unknown policy {s:?}: expected lin_ts, lin_ucb or neural_pg"))
    }
}

/// Settings of the neural policy for offline learning (the rest of [`NeuralParams`] keeps its
/// defaults; `features` is the encoder's dimension).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NeuralSettings {
    pub hidden: usize,
    pub embedding: usize,
    pub epochs: u32,
    pub learning_rate: f64,
    pub temperature: f64,
    pub clip: f64,
    pub batch_size: usize,
    /// The training objective (`snipw`, the policy's default, or `dr`).
    pub objective: Objective,
}

impl Default for NeuralSettings {
    fn default() -> Self {
        let p = NeuralParams::new(1);
        NeuralSettings {
            hidden: p.hidden,
            embedding: p.embedding,
            epochs: p.epochs,
            learning_rate: p.learning_rate,
            temperature: p.temperature,
            clip: p.clip,
            batch_size: p.batch_size,
            objective: p.objective,
        }
    }
}

/// Settings of [`learn_and_evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnConfig {
    pub policies: Vec<LearnedKind>,
    /// Calendar days held out for evaluation (the latest ones), ≥ 1.
    pub holdout_days: usize,
    /// Ridge prior precision of the linear policies.
    pub lambda: f64,
    /// `lin_ts` exploration scale and Monte Carlo draws per row.
    pub v: f64,
    pub draws: u32,
    /// `lin_ucb` confidence width.
    pub alpha: f64,
    pub neural: NeuralSettings,
    /// Exploration floor mixed into every learned PMF (the platform's default is 0).
    pub min_propensity: f64,
    /// Seed of every random step (neural initialisation and shuffles, `lin_ts` draws, folds,
    /// bootstrap).
    pub seed: u64,
    pub bootstrap: usize,
    pub folds: usize,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            policies: LearnedKind::ALL.to_vec(),
            holdout_days: 2,
            lambda: DEFAULT_LAMBDA,
            v: DEFAULT_V,
            draws: DEFAULT_LIN_TS_DRAWS,
            alpha: DEFAULT_ALPHA,
            neural: NeuralSettings::default(),
            min_propensity: 0.0,
            seed: 0,
            bootstrap: 1_000,
            folds: 2,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Context encoding
// ---------------------------------------------------------------------------------------------

/// The context vector of an OBD row (see the module docs for the layout).
#[derive(Debug, Clone, PartialEq)]
pub struct ContextEncoder {
    /// Per categorical feature: level code → column offset within the one-hot block.
    columns: Vec<HashMap<u32, usize>>,
    n_one_hot: usize,
    n_numeric: usize,
    n_positions: usize,
}

/// The encoder's layout, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncodingInfo {
    pub dim: usize,
    pub user_one_hot: usize,
    pub affinities: usize,
    pub positions: usize,
    pub layout: &'static str,
}

impl ContextEncoder {
    /// One-hot columns for the levels that occur in `train_rows` of `data`.
    pub fn fit(data: &LoggedData, train_rows: &[usize]) -> Self {
        let n_cat = data.categorical_features().len();
        let mut seen: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); n_cat];
        for &i in train_rows {
            for (j, &code) in data.categorical(i).iter().enumerate() {
                seen[j].insert(code);
            }
        }
        let mut offset = 0;
        let columns = seen
            .into_iter()
            .map(|levels| {
                levels
                    .into_iter()
                    .map(|code| {
                        offset += 1;
                        (code, offset - 1)
                    })
                    .collect()
            })
            .collect();
        ContextEncoder {
            columns,
            n_one_hot: offset,
            n_numeric: data.numeric_feature_names().len(),
            n_positions: data.n_positions(),
        }
    }

    pub fn dim(&self) -> usize {
        self.n_one_hot + self.n_numeric + self.n_positions
    }

    pub fn info(&self) -> EncodingInfo {
        EncodingInfo {
            dim: self.dim(),
            user_one_hot: self.n_one_hot,
            affinities: self.n_numeric,
            positions: self.n_positions,
            layout: "one-hot user_feature_* levels seen in training | ln(1 + affinity) per item | one-hot position",
        }
    }

    /// The context vector of row `i`.
    pub fn encode(&self, data: &LoggedData, i: usize) -> Vec<f64> {
        let mut x = vec![0.0; self.dim()];
        for (j, code) in data.categorical(i).iter().enumerate() {
            if let Some(&col) = self.columns.get(j).and_then(|m| m.get(code)) {
                x[col] = 1.0;
            }
        }
        for (k, a) in data.numeric(i).iter().enumerate() {
            x[self.n_one_hot + k] = a.max(0.0).ln_1p();
        }
        let position = data.positions()[i];
        if position < self.n_positions {
            x[self.n_one_hot + self.n_numeric + position] = 1.0;
        }
        x
    }
}

// ---------------------------------------------------------------------------------------------
// Split
// ---------------------------------------------------------------------------------------------

/// How the rows were split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// Earlier calendar days train, the last `holdout_days` are held out.
    ByDay,
    /// Too few days: the latest [`TIME_ORDER_HOLDOUT`] of the rows (by timestamp) are held out.
    ByTimeOrder,
}

/// Training and held-out rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaySplit {
    pub kind: SplitKind,
    pub train_days: Vec<String>,
    pub test_days: Vec<String>,
    #[serde(skip)]
    pub train: Vec<usize>,
    #[serde(skip)]
    pub test: Vec<usize>,
}

/// The calendar day (`YYYY-MM-DD`) of an OBD timestamp such as `2019-11-24 00:00:34.76+00:00`.
pub fn day_of(timestamp: &str) -> Option<&str> {
    let day = timestamp.trim().get(..10)?;
    let b = day.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    (digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10)).then_some(day)
}

/// Splits rows by the calendar day of `timestamps` (one per row): the last `holdout_days`
/// distinct days are held out. With fewer than `holdout_days + 1` distinct days, the latest
/// [`TIME_ORDER_HOLDOUT`] of the rows by timestamp are held out instead ([`SplitKind::ByTimeOrder`]).
pub fn split_by_day(timestamps: &[String], holdout_days: usize) -> Result<DaySplit, OpeError> {
    if holdout_days == 0 {
        return Err(OpeError::InvalidConfig { message: "holdout_days must be at least 1".into() });
    }
    if timestamps.len() < 4 {
        return Err(OpeError::NotEnoughData {
            message: format!("{} row(s): a train/held-out split needs at least 4", timestamps.len()),
        });
    }
    let days = timestamps
        .iter()
        .enumerate()
        .map(|(i, t)| {
            day_of(t).ok_or_else(|| OpeError::InvalidRow {
                row: i,
                message: format!("timestamp {t:?} does not start with a YYYY-MM-DD date"),
            })
        })
        .collect::<Result<Vec<&str>, _>>()?;
    let distinct: BTreeSet<&str> = days.iter().copied().collect();
    if distinct.len() > holdout_days {
        let cut = distinct.len() - holdout_days;
        let train_days: Vec<String> = distinct.iter().take(cut).map(|d| d.to_string()).collect();
        let test_days: Vec<String> = distinct.iter().skip(cut).map(|d| d.to_string()).collect();
        let first_test = test_days[0].as_str();
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (i, d) in days.iter().enumerate() {
            if *d < first_test {
                train.push(i);
            } else {
                test.push(i);
            }
        }
        return Ok(DaySplit { kind: SplitKind::ByDay, train_days, test_days, train, test });
    }
    // Too few days: by time order (ISO timestamps of one offset sort as text).
    let mut order: Vec<usize> = (0..timestamps.len()).collect();
    order.sort_by(|&a, &b| timestamps[a].cmp(&timestamps[b]).then(a.cmp(&b)));
    let n_test = ((timestamps.len() as f64 * TIME_ORDER_HOLDOUT).round() as usize).clamp(1, timestamps.len() - 1);
    let (train_part, test_part) = order.split_at(timestamps.len() - n_test);
    let mut train = train_part.to_vec();
    let mut test = test_part.to_vec();
    train.sort_unstable();
    test.sort_unstable();
    let days_of = |rows: &[usize]| -> Vec<String> {
        rows.iter().map(|&i| days[i].to_string()).collect::<BTreeSet<_>>().into_iter().collect()
    };
    Ok(DaySplit { kind: SplitKind::ByTimeOrder, train_days: days_of(&train), test_days: days_of(&test), train, test })
}

/// The `timestamp` column of an OBD log, one entry per row (the only I/O of this module besides
/// [`load_obd`]).
pub fn load_obd_timestamps(path: &Path) -> Result<Vec<String>, OpeError> {
    let mut column: Option<usize> = None;
    let mut out = Vec::new();
    for_each_record(path, |line, fields| {
        match column {
            None => {
                column = Some(fields.iter().position(|f| f.trim() == "timestamp").ok_or_else(|| OpeError::Csv {
                    path: path.to_path_buf(),
                    line,
                    message: "missing column \"timestamp\"".into(),
                })?);
            }
            Some(j) => out.push(fields.get(j).map(|s| s.trim().to_string()).unwrap_or_default()),
        }
        Ok(())
    })?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Learned policies as target policies
// ---------------------------------------------------------------------------------------------

fn policy_error(kind: LearnedKind, e: impl std::fmt::Display) -> OpeError {
    OpeError::InvalidPolicy { message: format!("{}: {e}", kind.key()) }
}

/// The ridge model of the linear policies, fitted on `rows` of `data`: one observation
/// `(logged item, x, click)` per row.
pub fn fit_linear(
    data: &LoggedData,
    encoder: &ContextEncoder,
    rows: &[usize],
    lambda: f64,
) -> Result<LinearState, OpeError> {
    let mut state = LinearState::new(data.n_actions(), encoder.dim(), true, lambda)
        .map_err(|e| policy_error(LearnedKind::LinTs, e))?;
    for &i in rows {
        state
            .observe(data.actions()[i], &encoder.encode(data, i), data.rewards()[i])
            .map_err(|e| policy_error(LearnedKind::LinTs, e))?;
    }
    Ok(state)
}

/// The linear policy's served PMFs on `rows` of `data` (flattened, `rows.len() × n_actions`);
/// `lin_ts` seeds row `i`'s draws with `derive(seed, ·, i)`.
pub fn linear_pmfs(
    state: &LinearState,
    exploration: Exploration,
    data: &LoggedData,
    encoder: &ContextEncoder,
    rows: &[usize],
    min_propensity: f64,
    seed: u64,
) -> Result<Vec<f64>, OpeError> {
    let kind = match exploration {
        Exploration::Thompson { .. } => LearnedKind::LinTs,
        Exploration::Ucb { .. } => LearnedKind::LinUcb,
    };
    let eligible = vec![true; data.n_actions()];
    let mut out = Vec::with_capacity(rows.len() * data.n_actions());
    for &i in rows {
        let pmf = state
            .pmf(
                exploration,
                &encoder.encode(data, i),
                &eligible,
                min_propensity,
                derive(seed, STREAM_LIN_TS, i as u64),
            )
            .map_err(|e| policy_error(kind, e))?;
        out.extend(pmf);
    }
    Ok(out)
}

/// The neural parameters for `settings` over `features` inputs.
pub fn neural_params(settings: &NeuralSettings, features: usize, seed: u64) -> NeuralParams {
    NeuralParams {
        hidden: settings.hidden,
        embedding: settings.embedding,
        epochs: settings.epochs,
        learning_rate: settings.learning_rate,
        temperature: settings.temperature,
        clip: settings.clip,
        batch_size: settings.batch_size,
        objective: settings.objective,
        seed,
        ..NeuralParams::new(features)
    }
}

/// `neural_pg` trained on `rows` of `data` with their logged propensities.
pub fn fit_neural(
    data: &LoggedData,
    encoder: &ContextEncoder,
    rows: &[usize],
    settings: &NeuralSettings,
    seed: u64,
) -> Result<(NeuralPolicy, TrainReport), OpeError> {
    let err = |e| policy_error(LearnedKind::NeuralPg, e);
    let mut policy =
        NeuralPolicy::new(neural_params(settings, encoder.dim(), seed), data.n_actions(), &Device::Cpu).map_err(err)?;
    let logged: Vec<LoggedRow> = rows
        .iter()
        .map(|&i| LoggedRow {
            input: NeuralInput::without_events(&encoder.encode(data, i)),
            arm: data.actions()[i],
            propensity: data.propensities()[i],
            reward: data.rewards()[i],
        })
        .collect();
    let report = policy.train(&logged).map_err(err)?;
    Ok((policy, report))
}

/// The neural policy's served PMFs on `rows` of `data` (flattened).
pub fn neural_pmfs(
    policy: &NeuralPolicy,
    data: &LoggedData,
    encoder: &ContextEncoder,
    rows: &[usize],
    min_propensity: f64,
) -> Result<Vec<f64>, OpeError> {
    let err = |e: String| policy_error(LearnedKind::NeuralPg, e);
    let eligible = vec![true; data.n_actions()];
    let mut out = Vec::with_capacity(rows.len() * data.n_actions());
    for chunk in rows.chunks(1_024) {
        let inputs: Vec<NeuralInput> =
            chunk.iter().map(|&i| NeuralInput::without_events(&encoder.encode(data, i))).collect();
        for pmf in policy.pmfs(&inputs).map_err(|e| err(e.to_string()))? {
            // The softmax is computed in f32; renormalise in f64 before the floor.
            out.extend(restrict_and_floor(&pmf, &eligible, min_propensity).map_err(|e| err(e.to_string()))?);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// A logging policy's own value: the mean click with its normal and bootstrap 95% intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnPolicyValue {
    pub n: usize,
    pub clicks: f64,
    pub value: f64,
    pub std_error: f64,
    pub ci95: [f64; 2],
    pub bootstrap_ci95: Option<[f64; 2]>,
    /// Wilson's score interval (0/1 rewards).
    pub wilson_ci95: Option<[f64; 2]>,
}

/// The mean of `rewards` with its intervals (`bootstrap` resamples, 0 to skip).
pub fn on_policy_value(rewards: &[f64], bootstrap: usize, seed: u64) -> Result<OnPolicyValue, OpeError> {
    let terms = RatioTerms { numer: rewards.to_vec(), denom: None };
    let p = point_estimate(&terms, "on_policy_value")?;
    let bootstrap_ci95 = if bootstrap > 0 {
        percentile_intervals(&[terms], &BootstrapConfig { resamples: bootstrap, seed, threads: 0 })?.pop()
    } else {
        None
    };
    Ok(OnPolicyValue {
        n: rewards.len(),
        clicks: rewards.iter().sum(),
        value: p.estimate,
        std_error: p.std_error,
        ci95: p.ci95,
        bootstrap_ci95,
        wilson_ci95: wilson_ci95(p.estimate, rewards.len() as f64),
    })
}

/// How a learned policy behaves on the held-out rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyShape {
    /// Mean over rows of the largest action probability (1 = deterministic).
    pub mean_max_prob: f64,
    /// Distinct most-probable items over the rows (1 = the same item for everyone).
    pub distinct_top_items: usize,
    /// Share of rows where the logged item is the policy's most probable item.
    pub logged_is_top: f64,
}

fn shape(probs: &[f64], data: &LoggedData) -> PolicyShape {
    let n_actions = data.n_actions();
    let mut tops = BTreeSet::new();
    let (mut max_sum, mut hits) = (0.0, 0usize);
    for (i, pi) in probs.chunks_exact(n_actions).enumerate() {
        let (top, p) =
            pi.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (a, &p)| if p > b.1 { (a, p) } else { b });
        tops.insert(top);
        max_sum += p;
        hits += usize::from(data.actions()[i] == top);
    }
    let n = data.len().max(1) as f64;
    PolicyShape { mean_max_prob: max_sum / n, distinct_top_items: tops.len(), logged_is_top: hits as f64 / n }
}

/// One learned policy's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnedPolicyReport {
    pub policy: LearnedKind,
    /// The policy's parameters as trained.
    pub params: serde_json::Value,
    /// `neural_pg`'s training run (SNIPW on the training rows before and after).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainReport>,
    pub shape: PolicyShape,
    pub report: OpeReport,
}

/// One line of the summary table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableRow {
    pub policy: String,
    pub estimator: String,
    pub value: f64,
    pub std_error: f64,
    pub ci95: [f64; 2],
    pub bootstrap_ci95: Option<[f64; 2]>,
    pub ess: f64,
    /// SNIPW only: Wilson's score interval at the effective sample size (see the module docs).
    pub wilson_ess_ci95: Option<[f64; 2]>,
    /// Clicks in the effective sample, `ESS × SNIPW` (the policy's; the same on its three rows).
    pub effective_clicks: f64,
    /// `effective_clicks` < [`MIN_EFFECTIVE_CLICKS`]: the normal and bootstrap intervals are not
    /// to be trusted (they collapse to the point at zero clicks); read the Wilson interval.
    pub few_clicks: bool,
    /// `value − bts` on-policy value (all days), with its 95% interval (independent samples):
    /// Newcombe's from the Wilson intervals on the SNIPW row, normal on the others (`None`
    /// there with `few_clicks`).
    pub vs_bts: f64,
    pub vs_bts_ci95: Option<[f64; 2]>,
}

/// The usual floor `n p ≥ 5` under which the normal approximation of a binomial proportion is
/// not used (a minimum, not a guarantee: Brown, Cai & DasGupta 2001, "Interval estimation for a
/// binomial proportion", Statistical Science 16(2)).
pub const MIN_EFFECTIVE_CLICKS: f64 = 5.0;

/// Rows, clicks and days of one side of the split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitSide {
    pub days: Vec<String>,
    pub rows: usize,
    pub clicks: f64,
}

/// The split as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitInfo {
    pub kind: SplitKind,
    pub train: SplitSide,
    pub test: SplitSide,
}

/// Everything [`learn_and_evaluate`] measured (the CLI's `--json` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnReport {
    pub campaign: String,
    pub n_items: usize,
    pub n_positions: usize,
    pub encoding: EncodingInfo,
    pub split: SplitInfo,
    /// The uniform logging policy on the held-out rows (IPW = SNIPW = the held-out mean click).
    pub random_heldout: OpeReport,
    /// `bts`'s on-policy value on its own logs, all days (the reference 0.0042 on `all`).
    pub bts_on_policy: OnPolicyValue,
    /// `bts`'s on-policy value on the held-out days only (same calendar days as the evaluation).
    pub bts_on_policy_heldout_days: Option<OnPolicyValue>,
    pub policies: Vec<LearnedPolicyReport>,
    pub table: Vec<TableRow>,
    pub config: LearnConfig,
}

/// The estimators shown in the table (the JSON report carries all six per policy).
pub const TABLE_ESTIMATORS: [super::Estimator; 3] =
    [super::Estimator::Ipw, super::Estimator::Snipw, super::Estimator::Dr];

fn table_rows(name: &str, report: &OpeReport, bts: &OnPolicyValue) -> Vec<TableRow> {
    let effective_clicks = report.ess * report.estimators.snipw.estimate;
    let few_clicks = effective_clicks < MIN_EFFECTIVE_CLICKS;
    TABLE_ESTIMATORS
        .iter()
        .map(|&e| {
            let s = report.estimators.get(e);
            let diff = s.estimate - bts.value;
            let se = (s.std_error.powi(2) + bts.std_error.powi(2)).sqrt();
            let wilson = if e == super::Estimator::Snipw { wilson_ci95(s.estimate, report.ess) } else { None };
            let bts_wilson = wilson_ci95(bts.value, bts.n as f64);
            let vs_bts_ci95 = match (wilson, bts_wilson) {
                (Some(w), Some(b)) => Some(newcombe_diff_ci95(s.estimate, w, bts.value, b)),
                _ if few_clicks => None,
                _ => Some([diff - Z_95 * se, diff + Z_95 * se]),
            };
            TableRow {
                policy: name.to_string(),
                estimator: e.label().to_string(),
                value: s.estimate,
                std_error: s.std_error,
                ci95: s.ci95,
                bootstrap_ci95: s.bootstrap_ci95,
                ess: report.ess,
                wilson_ess_ci95: wilson,
                effective_clicks,
                few_clicks,
                vs_bts: diff,
                vs_bts_ci95,
            }
        })
        .collect()
}

/// The logs of one OBD campaign: `DIR/{policy}/{campaign}/{campaign}.csv`.
pub fn obd_log_path(dir: &Path, policy: &str, campaign: &str) -> PathBuf {
    dir.join(policy).join(campaign).join(format!("{campaign}.csv"))
}

/// Trains `config.policies` on the earlier days of `random` and evaluates them on the held-out
/// days; `bts` is the production policy's log of the same campaign (its on-policy value is the
/// reference). `random_timestamps` / `bts_timestamps` are the logs' timestamps, one per row.
/// `progress` receives a short message before each stage.
pub fn learn_and_evaluate(
    campaign: &str,
    random: &LoggedData,
    random_timestamps: &[String],
    bts: &LoggedData,
    bts_timestamps: &[String],
    config: &LearnConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<LearnReport, OpeError> {
    if random_timestamps.len() != random.len() || bts_timestamps.len() != bts.len() {
        return Err(OpeError::InvalidConfig { message: "one timestamp per logged row is needed".into() });
    }
    if config.policies.is_empty() {
        return Err(OpeError::InvalidConfig { message: "no policy to learn".into() });
    }
    let split = split_by_day(random_timestamps, config.holdout_days)?;
    let encoder = ContextEncoder::fit(random, &split.train);
    let test = random.select(&split.test)?;
    let ope = OpeConfig::with_seed(config.seed, config.bootstrap, config.folds);
    let clicks = |rows: &[usize]| rows.iter().map(|&i| random.rewards()[i]).sum::<f64>();

    progress("evaluating the random policy on the held-out days");
    let random_heldout = evaluate(&test, &UniformPolicy, &ope)?;
    let bts_on_policy = on_policy_value(bts.rewards(), config.bootstrap, config.seed)?;
    let bts_heldout_rows: Vec<usize> = (0..bts.len())
        .filter(|&i| day_of(&bts_timestamps[i]).is_some_and(|d| split.test_days.iter().any(|t| t == d)))
        .collect();
    let bts_on_policy_heldout_days = if split.kind == SplitKind::ByDay && bts_heldout_rows.len() >= 2 {
        let rewards: Vec<f64> = bts_heldout_rows.iter().map(|&i| bts.rewards()[i]).collect();
        Some(on_policy_value(&rewards, config.bootstrap, config.seed)?)
    } else {
        None
    };

    let mut table = table_rows("random (held-out)", &random_heldout, &bts_on_policy);
    let needs_linear = config.policies.iter().any(|k| matches!(k, LearnedKind::LinTs | LearnedKind::LinUcb));
    let linear = if needs_linear {
        progress("fitting the ridge model of the linear policies");
        Some(fit_linear(random, &encoder, &split.train, config.lambda)?)
    } else {
        None
    };
    let mut policies = Vec::new();
    for &kind in &config.policies {
        progress(&format!("training and scoring {}", kind.key()));
        let (probs, params, train) = match (kind, &linear) {
            (LearnedKind::LinTs | LearnedKind::LinUcb, Some(state)) => {
                let (exploration, params) = if kind == LearnedKind::LinTs {
                    let e = Exploration::Thompson { v: config.v, draws: config.draws };
                    (e, serde_json::json!({"lambda": config.lambda, "v": config.v, "draws": config.draws}))
                } else {
                    (
                        Exploration::Ucb { alpha: config.alpha },
                        serde_json::json!({"lambda": config.lambda, "alpha": config.alpha}),
                    )
                };
                let probs =
                    linear_pmfs(state, exploration, random, &encoder, &split.test, config.min_propensity, config.seed)?;
                (probs, params, None)
            }
            (LearnedKind::NeuralPg, _) => {
                let (policy, train) = fit_neural(random, &encoder, &split.train, &config.neural, config.seed)?;
                let probs = neural_pmfs(&policy, random, &encoder, &split.test, config.min_propensity)?;
                let params = serde_json::to_value(policy.params()).unwrap_or(serde_json::Value::Null);
                (probs, params, Some(train))
            }
            _ => return Err(OpeError::InvalidConfig { message: format!("{} has no model", kind.key()) }),
        };
        let target = RowTablePolicy::new(kind.key(), random.n_actions(), probs)?;
        let shape = shape(target.probs(), &test);
        let report = evaluate(&test, &target, &ope)?;
        table.extend(table_rows(kind.key(), &report, &bts_on_policy));
        policies.push(LearnedPolicyReport { policy: kind, params, train, shape, report });
    }

    Ok(LearnReport {
        campaign: campaign.to_string(),
        n_items: random.n_actions(),
        n_positions: random.n_positions(),
        encoding: encoder.info(),
        split: SplitInfo {
            kind: split.kind,
            train: SplitSide { days: split.train_days.clone(), rows: split.train.len(), clicks: clicks(&split.train) },
            test: SplitSide { days: split.test_days.clone(), rows: split.test.len(), clicks: clicks(&split.test) },
        },
        random_heldout,
        bts_on_policy,
        bts_on_policy_heldout_days,
        policies,
        table,
        config: config.clone(),
    })
}

/// Loads `DIR/random/CAMPAIGN` and `DIR/bts/CAMPAIGN` and runs [`learn_and_evaluate`].
pub fn learn_obd(
    dir: &Path,
    campaign: &str,
    config: &LearnConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<LearnReport, OpeError> {
    progress("loading the logs");
    let random_path = obd_log_path(dir, "random", campaign);
    let bts_path = obd_log_path(dir, "bts", campaign);
    let random = load_obd(&random_path, &ObdOptions::default())?;
    let random_ts = load_obd_timestamps(&random_path)?;
    let bts = load_obd(&bts_path, &ObdOptions::default())?;
    let bts_ts = load_obd_timestamps(&bts_path)?;
    learn_and_evaluate(campaign, &random, &random_ts, &bts, &bts_ts, config, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ope::obd::tests::{obd, reference_dir};
    use crate::ope::{LoggedDataBuilder, LoggedRecord};

    /// Two categorical features, two affinities, three positions.
    fn small() -> LoggedData {
        let mut b = LoggedDataBuilder::new(
            vec!["0".into(), "1".into()],
            3,
            vec!["u0".into(), "u1".into()],
            vec!["aff0".into(), "aff1".into()],
        )
        .unwrap();
        let rows: [(&str, &str, [f64; 2], usize); 4] = [
            ("a", "x", [0.0, 2.0], 0),
            ("b", "x", [1.0, 0.0], 2),
            ("a", "y", [0.0, 0.0], 1),
            ("c", "z", [3.0, 0.0], 0),
        ];
        for (i, (u0, u1, aff, position)) in rows.iter().enumerate() {
            b.push(LoggedRecord {
                categorical: &[*u0, *u1],
                numeric: aff,
                action: i % 2,
                position: *position,
                reward: 0.0,
                propensity: 0.5,
            })
            .unwrap();
        }
        b.build().unwrap()
    }

    #[test]
    fn encoding_is_one_hot_users_log_affinities_and_one_hot_position() {
        let d = small();
        // Train on rows 0..3: u0 ∈ {a, b}, u1 ∈ {x, y}; row 3's levels c and z are unseen.
        let enc = ContextEncoder::fit(&d, &[0, 1, 2]);
        assert_eq!(enc.dim(), 2 + 2 + 2 + 3);
        let info = enc.info();
        assert_eq!((info.user_one_hot, info.affinities, info.positions), (4, 2, 3));
        // ln(1 + a) of the affinities (0, 1, 2, 3 here).
        let (l1, l2, l3) = (1f64.ln_1p(), 2f64.ln_1p(), 3f64.ln_1p());
        assert!((l2 - 3f64.ln()).abs() < 1e-15 && (l3 - 4f64.ln()).abs() < 1e-15);
        assert_eq!(enc.encode(&d, 0), vec![1.0, 0.0, 1.0, 0.0, 0.0, l2, 1.0, 0.0, 0.0]);
        assert_eq!(enc.encode(&d, 1), vec![0.0, 1.0, 1.0, 0.0, l1, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(enc.encode(&d, 2), vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        // Levels first seen outside the training rows (c, z) encode as zeros.
        assert_eq!(enc.encode(&d, 3), vec![0.0, 0.0, 0.0, 0.0, l3, 0.0, 1.0, 0.0, 0.0]);
    }

    fn ts(day: &str, hms: &str) -> String {
        format!("2019-11-{day} {hms}+00:00")
    }

    /// Wilson's interval against the formula evaluated independently (Python, z = 1.959963984540054)
    /// for 8 clicks of 2738: [0.0014812879, 0.0057552570].
    #[test]
    fn wilson_and_newcombe_intervals() {
        let [lo, hi] = wilson_ci95(8.0 / 2738.0, 2738.0).unwrap();
        assert!((lo - 0.001_481_287_9).abs() < 1e-9 && (hi - 0.005_755_257_0).abs() < 1e-9, "{lo} {hi}");
        // Zero successes: [0, z²/(n + z²)].
        let [lo, hi] = wilson_ci95(0.0, 39.0).unwrap();
        let z2 = Z_95 * Z_95;
        assert_eq!(lo, 0.0);
        assert!((hi - z2 / (39.0 + z2)).abs() < 1e-15);
        assert!(wilson_ci95(0.5, 0.0).is_none() && wilson_ci95(1.5, 10.0).is_none());
        // Newcombe: contains the difference and is wider than either side's half-width.
        let (p1, p2) = (0.0, 0.0042);
        let (c1, c2) = (wilson_ci95(p1, 39.0).unwrap(), wilson_ci95(p2, 10_000.0).unwrap());
        let [dl, dh] = newcombe_diff_ci95(p1, c1, p2, c2);
        assert!(dl < p1 - p2 && p1 - p2 < dh && dh > 0.0);
        assert!((dh - (p1 - p2) - ((c1[1] - p1).powi(2) + (p2 - c2[0]).powi(2)).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn day_split_holds_out_the_last_days_and_falls_back_to_time_order() {
        let stamps = vec![
            ts("24", "10:00:00"),
            ts("26", "00:00:01"),
            ts("25", "23:59:59"),
            ts("24", "00:00:00"),
            ts("26", "12:00:00"),
        ];
        let s = split_by_day(&stamps, 1).unwrap();
        assert_eq!(s.kind, SplitKind::ByDay);
        assert_eq!(s.train, vec![0, 2, 3]);
        assert_eq!(s.test, vec![1, 4]);
        assert_eq!(
            (s.train_days.clone(), s.test_days.clone()),
            (vec!["2019-11-24".into(), "2019-11-25".into()], vec!["2019-11-26".to_string()])
        );
        let s = split_by_day(&stamps, 2).unwrap();
        assert_eq!((s.train, s.test), (vec![0, 3], vec![1, 2, 4]));
        // Three days cannot hold out three: the latest 30% of rows by time (2 of 5), sorted.
        let s = split_by_day(&stamps, 3).unwrap();
        assert_eq!(s.kind, SplitKind::ByTimeOrder);
        assert_eq!((s.train, s.test), (vec![0, 2, 3], vec![1, 4]));
        assert_eq!(split_by_day(&stamps, 0).unwrap_err().code(), "ope_invalid_config");
        let bad = vec!["yesterday".to_string(); 5];
        assert_eq!(split_by_day(&bad, 1).unwrap_err().code(), "ope_invalid_row");
    }

    #[test]
    fn the_obd_sample_spans_seven_days_and_splits_by_day() {
        let path = obd_log_path(&reference_dir().join("obd"), "random", "all");
        let stamps = load_obd_timestamps(&path).unwrap();
        assert_eq!(stamps.len(), 10_000);
        let s = split_by_day(&stamps, 2).unwrap();
        assert_eq!(s.kind, SplitKind::ByDay);
        assert_eq!(s.train_days.len() + s.test_days.len(), 7);
        assert_eq!(s.test_days, vec!["2019-11-29".to_string(), "2019-11-30".to_string()]);
        assert_eq!(s.train.len() + s.test.len(), 10_000);
        assert!(s.train.iter().all(|&i| stamps[i].as_str() < "2019-11-29"));
        assert!(s.test.iter().all(|&i| stamps[i].as_str() >= "2019-11-29"));
    }

    fn cheap_config() -> LearnConfig {
        LearnConfig {
            neural: NeuralSettings { hidden: 8, embedding: 4, epochs: 2, ..NeuralSettings::default() },
            draws: 16,
            bootstrap: 50,
            min_propensity: 0.001,
            ..LearnConfig::default()
        }
    }

    /// On `random/men` (34 items, the cheapest campaign): every learned distribution sums to 1
    /// with the floor honoured, the uniform policy's IPW and SNIPW are exactly the held-out mean
    /// click, and each interval contains its estimate.
    #[test]
    fn learned_policies_give_distributions_and_the_random_policy_its_mean_click() {
        let campaign = "men";
        let dir = reference_dir().join("obd");
        let random = obd("random", campaign);
        let bts = obd("bts", campaign);
        let r_ts = load_obd_timestamps(&obd_log_path(&dir, "random", campaign)).unwrap();
        let b_ts = load_obd_timestamps(&obd_log_path(&dir, "bts", campaign)).unwrap();
        let config = cheap_config();
        let report = learn_and_evaluate(campaign, &random, &r_ts, &bts, &b_ts, &config, &mut |_| {}).unwrap();

        let split = split_by_day(&r_ts, config.holdout_days).unwrap();
        let held_out_mean = split.test.iter().map(|&i| random.rewards()[i]).sum::<f64>() / split.test.len() as f64;
        assert_eq!(report.split.test.rows, split.test.len());
        assert_eq!(report.random_heldout.estimators.ipw.estimate, held_out_mean);
        assert!((report.random_heldout.estimators.snipw.estimate - held_out_mean).abs() < 1e-15);
        assert_eq!(report.bts_on_policy.value, bts.on_policy_value());
        assert_eq!(report.policies.len(), 3);
        assert_eq!(report.table.len(), 3 * 4);
        for row in &report.table {
            assert!(row.ci95[0] <= row.value && row.value <= row.ci95[1], "{row:?}");
            if let Some(w) = row.wilson_ess_ci95 {
                assert!(w[0] <= row.value && row.value <= w[1] && w[1] > w[0], "{row:?}");
            }
            assert_eq!(row.wilson_ess_ci95.is_some(), row.estimator == "SNIPW", "{row:?}");
            if let Some(ci) = row.vs_bts_ci95 {
                assert!(ci[0] <= row.vs_bts && row.vs_bts <= ci[1], "{row:?}");
            }
            assert!(row.vs_bts_ci95.is_some() || (row.few_clicks && row.estimator != "SNIPW"), "{row:?}");
            assert!(row.ess > 0.0 && row.ess <= split.test.len() as f64 + 1e-9, "{row:?}");
        }
        assert!(report.policies[2].train.as_ref().is_some_and(|t| t.rows == split.train.len()));

        // The distributions themselves, re-derived through the public pieces.
        let encoder = ContextEncoder::fit(&random, &split.train);
        let state = fit_linear(&random, &encoder, &split.train, config.lambda).unwrap();
        let rows = &split.test[..200];
        let n = random.n_actions();
        let ts_probs = linear_pmfs(
            &state,
            Exploration::Thompson { v: config.v, draws: config.draws },
            &random,
            &encoder,
            rows,
            config.min_propensity,
            7,
        )
        .unwrap();
        let ucb_probs = linear_pmfs(&state, Exploration::Ucb { alpha: 0.0 }, &random, &encoder, rows, 0.0, 7).unwrap();
        let (neural, _) = fit_neural(&random, &encoder, &split.train, &config.neural, 0).unwrap();
        let nn_probs = neural_pmfs(&neural, &random, &encoder, rows, config.min_propensity).unwrap();
        for probs in [&ts_probs, &ucb_probs, &nn_probs] {
            assert_eq!(probs.len(), rows.len() * n);
            for pi in probs.chunks_exact(n) {
                assert!((pi.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                assert!(pi.iter().all(|p| (0.0..=1.0).contains(p)));
            }
        }
        for probs in [&ts_probs, &nn_probs] {
            assert!(probs.iter().all(|&p| p >= config.min_propensity - 1e-12));
        }
        // Greedy LinUCB (α = 0, no floor) puts all the mass on its best item(s), in equal shares.
        for pi in ucb_probs.chunks_exact(n) {
            let top = pi.iter().copied().fold(0.0, f64::max);
            assert!(pi.iter().all(|&p| p == 0.0 || p == top));
        }
    }
}
