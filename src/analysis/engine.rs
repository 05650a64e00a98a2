//! The analysis engine: one pure function, [`analyze`], from the sufficient
//! statistics of an experiment (per metric, arm and policy period, exactly as
//! the store keeps them) and the previous look's sequential state to the
//! results served by `GET /v1/experiments/{key}/results` and the promotion
//! decision.
//!
//! Per metric the engine picks one estimator:
//! - `snipw` (self-normalised inverse-propensity weighting over all logged
//!   exposures) when allocation depends on context (`contextual = true`);
//! - `cuped` (one θ pooled over arms and periods, then period-stratified)
//!   when the metric has a pre-exposure covariate with variance;
//! - `stratified` (period-stratified means, weights = each period's share of
//!   mature exposures) otherwise; with one period this is the pooled mean.
//!
//! Per treatment arm and metric it reports the absolute and relative uplift
//! against control with the always-valid interval (an asymptotic confidence
//! sequence tuned by [`AnalysisConfig::sequential_tuning_n`]; see
//! [`crate::stats::confidence_sequence`]) and the fixed-horizon interval,
//! the always-valid p-value (running minimum over looks, carried in
//! [`SequentialState`]), the fixed-horizon p-value (displayed only), the
//! Holm-adjusted always-valid p-value across treatment arms, P(best) and the
//! expected loss. Relative uplifts are (treatment - control)/|control|, so a
//! positive value is an improvement also for negated lower-is-better
//! metrics.
//!
//! Promotion needs, on the primary metric: Holm-adjusted always-valid
//! p ≤ alpha with a positive effect, the arm best by posterior expected value,
//! `min_sample_per_arm` mature exposures in the arm and in control, no
//! breached guardrail for that arm, and an SRM check that was computed and
//! passed. A quantity that cannot be computed is `null` with a reason code
//! (the snake_case codes of [`crate::stats::Reason`]), never NaN.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::stats::{
    best_arm, confidence_sequence, holm, normal_quantile, snipw_difference, snipw_mean, srm_test, stratified_mean,
    BetaPosterior, CupedStats, DiffEstimate, GaussianPosterior, MeanEstimate, Method, Moments, PValue, Posterior,
    ProportionStats, Reason, SampleStats, StatsError, StatsResult, Summary, WeightedStats,
};

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// Sufficient statistics of one (arm, metric, period) cell, exactly what the
/// store keeps per row. `y` is the metric value of one exposure (0/1 for
/// conversion; values of lower-is-better metrics are already negated, so
/// higher is always better); `w = 1/propensity` of the drawn arm; `x` is the
/// pre-exposure covariate (0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cell {
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub sum_w: f64,
    pub sum_wy: f64,
    pub sum_wy2: f64,
    pub sum_w2: f64,
    pub sum_w2y: f64,
    pub sum_w2y2: f64,
    pub sum_x: f64,
    pub sum_x_sq: f64,
    pub sum_xy: f64,
}

impl Cell {
    /// Adds one exposure with value `y`, logged propensity `propensity`
    /// (in (0, 1]; anything else makes the weighted sums non-finite, which the
    /// engine reports as `invalid_input`) and covariate `x`.
    #[inline]
    pub fn observe(&mut self, y: f64, propensity: f64, x: f64) {
        let w = 1.0 / propensity;
        let wy = w * y;
        self.n += 1;
        self.sum += y;
        self.sum_sq += y * y;
        self.sum_w += w;
        self.sum_wy += wy;
        self.sum_wy2 += wy * y;
        self.sum_w2 += w * w;
        self.sum_w2y += w * wy;
        self.sum_w2y2 += wy * wy;
        self.sum_x += x;
        self.sum_x_sq += x * x;
        self.sum_xy += x * y;
    }

    /// Adds another cell's statistics (the statistics of the union).
    #[inline]
    pub fn merge(&mut self, other: &Cell) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.sum_w += other.sum_w;
        self.sum_wy += other.sum_wy;
        self.sum_wy2 += other.sum_wy2;
        self.sum_w2 += other.sum_w2;
        self.sum_w2y += other.sum_w2y;
        self.sum_w2y2 += other.sum_w2y2;
        self.sum_x += other.sum_x;
        self.sum_x_sq += other.sum_x_sq;
        self.sum_xy += other.sum_xy;
    }

    /// Conversions of a 0/1 metric (Σy), rejecting a non-integer or
    /// out-of-range sum.
    fn conversions(&self) -> StatsResult<u64> {
        let c = self.sum.round();
        if !(self.sum.is_finite() && (self.sum - c).abs() <= 1e-6 && c >= 0.0 && c <= self.n as f64) {
            return Err(StatsError::invalid(
                "sum",
                format!("a conversion metric needs 0 <= sum <= n, got {}", self.sum),
            ));
        }
        Ok(c as u64)
    }

    fn proportion(&self) -> StatsResult<ProportionStats> {
        ProportionStats::new(self.n, self.conversions()?)
    }

    fn sample(&self) -> StatsResult<SampleStats> {
        SampleStats::from_parts(self.n, self.sum, self.sum_sq)
    }

    fn weighted(&self) -> StatsResult<WeightedStats> {
        WeightedStats::from_parts(
            self.n,
            self.sum_w,
            self.sum_wy,
            self.sum_wy2,
            self.sum_w2,
            self.sum_w2y,
            self.sum_w2y2,
        )
    }

    fn cuped(&self) -> StatsResult<CupedStats> {
        CupedStats::from_parts(self.n, self.sum, self.sum_sq, self.sum_x, self.sum_x_sq, self.sum_xy)
    }
}

/// Kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// 0/1 per exposure.
    Conversion,
    /// Any number per exposure (revenue, profit, custom).
    Continuous,
}

/// What a metric is for in the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricRole {
    /// The metric promotion is decided on (exactly one per experiment).
    Primary,
    /// Must not get worse than `guardrail_tolerance` (relative).
    Guardrail,
    /// Reported only.
    Secondary,
}

/// One metric of the experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricInput {
    pub name: String,
    pub kind: MetricKind,
    pub role: MetricRole,
    /// Whether the cells carry a pre-exposure covariate (CUPED is used when
    /// it also has variance).
    #[serde(default)]
    pub has_covariate: bool,
}

/// Exposures of one arm in one period: `observed` logged exposures that drew
/// the arm, `expected` = Σ over all logged exposures of the period of that
/// arm's PMF entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AllocationCell {
    pub observed: u64,
    pub expected: f64,
}

/// Everything [`analyze`] needs. Shapes: `cells[metric][arm][period]`
/// (mature exposures), `immature[metric][arm]` (may be empty: none),
/// `allocation[period][arm]` (all logged exposures).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalysisInput {
    /// Arm keys, in the experiment's order.
    pub arms: Vec<String>,
    /// Key of the control arm.
    pub control: String,
    pub metrics: Vec<MetricInput>,
    /// Period ids (policy snapshot versions), one per span of fixed
    /// allocation.
    pub periods: Vec<i64>,
    pub cells: Vec<Vec<Vec<Cell>>>,
    #[serde(default)]
    pub immature: Vec<Vec<Cell>>,
    pub allocation: Vec<Vec<AllocationCell>>,
    /// Allocation depends on context: estimate by inverse propensity
    /// weighting instead of period stratification.
    #[serde(default)]
    pub contextual: bool,
    #[serde(default)]
    pub config: AnalysisConfig,
}

/// The `[analysis]` table of an experiment definition. Every field has a
/// default; unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Significance level of every test: the always-valid, Holm-adjusted
    /// test on the primary metric must clear it to promote. In (0, 0.5].
    /// Default 0.05.
    pub alpha: f64,
    /// Mature exposures the winning arm and control must each have before a
    /// promotion. Default 1,000.
    pub min_sample_per_arm: u64,
    /// A guardrail metric is breached when the arm is worse than control by
    /// more than this share of control's mean (one-sided always-valid test),
    /// e.g. 0.02 = 2% worse. In [0, 1). Default 0.02.
    pub guardrail_tolerance: f64,
    /// Minimum detectable effect, relative (0.05 = a 5% lift is worth
    /// having). When set, the experiment is declared futile once every arm's
    /// always-valid interval of the relative uplift lies below it. Default
    /// none (no futility stop).
    pub mde: Option<f64>,
    /// Share of traffic kept on control after a promotion (a holdout to keep
    /// measuring the winner); 0 = the winner takes all traffic. In [0, 1).
    /// Default 0.
    pub holdout: f64,
    /// Whether a `ready_to_promote` decision promotes by itself (true) or
    /// waits for a person (false). Default true.
    pub auto_promote: bool,
    /// Total mature exposures of two compared arms at which the always-valid
    /// interval is tightest (the confidence sequence's tuning sample size;
    /// a sensible value is the planned sample of both arms together). The
    /// intervals are valid whatever the value. Default 100,000.
    pub sequential_tuning_n: f64,
    /// SRM chi-square p-value below which the experiment is flagged and
    /// promotion is blocked. In (0, 1). Default 0.001.
    pub srm_threshold: f64,
    /// Monte Carlo draws for P(best) and expected loss when there are more
    /// than two arms (two arms are exact). In [1,000, 10,000,000]. Default
    /// 20,000.
    pub mc_draws: u64,
    /// Seed of those draws (reported, so results are reproducible).
    /// Default 0.
    pub seed: u64,
    /// CUPED covariate: the name of a reward metric (of any experiment) whose total
    /// for the unit in the 30 days before each exposure is the pre-exposure
    /// covariate, e.g. "revenue". Read by the store's fold, not by the engine.
    /// Default none (no CUPED).
    pub covariate: Option<String>,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            alpha: 0.05,
            min_sample_per_arm: 1_000,
            guardrail_tolerance: 0.02,
            mde: None,
            holdout: 0.0,
            auto_promote: true,
            sequential_tuning_n: 100_000.0,
            srm_threshold: 0.001,
            mc_draws: 20_000,
            seed: 0,
            covariate: None,
        }
    }
}

impl AnalysisConfig {
    /// Problems as (field, reason); empty when the configuration is valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |field: &str, reason: String| out.push((field.to_string(), reason));
        if !(self.alpha > 0.0 && self.alpha <= 0.5) {
            bad("alpha", format!("must lie in (0, 0.5], got {}", self.alpha));
        }
        if !(self.guardrail_tolerance >= 0.0 && self.guardrail_tolerance < 1.0) {
            bad("guardrail_tolerance", format!("must lie in [0, 1), got {}", self.guardrail_tolerance));
        }
        if let Some(mde) = self.mde {
            if !(mde > 0.0 && mde.is_finite()) {
                bad("mde", format!("must be a positive relative lift (0.05 = 5%), got {mde}"));
            }
        }
        if !(self.holdout >= 0.0 && self.holdout < 1.0) {
            bad("holdout", format!("must lie in [0, 1), got {}", self.holdout));
        }
        if !(self.sequential_tuning_n >= 1.0 && self.sequential_tuning_n.is_finite()) {
            bad("sequential_tuning_n", format!("must be a finite number >= 1, got {}", self.sequential_tuning_n));
        }
        if !(self.srm_threshold > 0.0 && self.srm_threshold < 1.0) {
            bad("srm_threshold", format!("must lie in (0, 1), got {}", self.srm_threshold));
        }
        if !(1_000..=10_000_000).contains(&self.mc_draws) {
            bad("mc_draws", format!("must lie in [1000, 10000000], got {}", self.mc_draws));
        }
        out
    }
}

/// The previous look's always-valid state: per (metric, treatment arm) the
/// running minimum of the always-valid p-value and of the guardrail-breach
/// p-value, as natural logarithms (they underflow a double long before the
/// evidence stops mattering).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SequentialState {
    /// Looks taken so far.
    pub looks: u64,
    pub entries: Vec<SequentialEntry>,
    /// Look at which SRM was first flagged. The flag is sticky: once the
    /// logged allocation has contradicted the PMFs, automatic promotion stays
    /// blocked for the version; after fixing the logging a person promotes by
    /// hand or starts a new version (which starts from an empty state).
    #[serde(default)]
    pub srm_flagged_at_look: Option<u64>,
}

/// One (metric, arm) entry of [`SequentialState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SequentialEntry {
    pub metric: String,
    pub arm: String,
    /// ln of the always-valid p-value of "no difference".
    pub ln_p_always_valid: f64,
    /// ln of the always-valid p-value of "not worse than the guardrail
    /// tolerance" (0 for non-guardrail metrics).
    pub ln_p_guardrail_breach: f64,
}

impl SequentialState {
    fn find(&self, metric: &str, arm: &str) -> Option<&SequentialEntry> {
        self.entries.iter().find(|e| e.metric == metric && e.arm == arm)
    }
}

/// Inconsistent input: shapes that do not match, an unknown control, a
/// missing or duplicated primary metric, an invalid configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    #[error("invalid analysis input `{field}`: {message}")]
    InvalidInput { field: String, message: String },
}

impl AnalysisError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        AnalysisError::InvalidInput { field: field.to_string(), message: message.into() }
    }
}

// ---------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------

/// A closed interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Bounds {
    pub lower: f64,
    pub upper: f64,
}

impl Bounds {
    fn from(i: crate::stats::Interval) -> Bounds {
        Bounds { lower: i.lower, upper: i.upper }
    }
}

/// A p-value with its natural logarithm (`p` may underflow to 0; compare
/// `ln_p` then).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PValueOut {
    pub p: f64,
    pub ln_p: f64,
}

impl PValueOut {
    fn from(p: PValue) -> PValueOut {
        // ln_p is finite in practice; a -inf would not survive JSON.
        PValueOut { p: p.p, ln_p: p.ln_p.max(-f64::MAX) }
    }
}

/// Which estimator a metric's numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Period-stratified means (pooled means when there is one period).
    Stratified,
    /// CUPED-adjusted, period-stratified means.
    Cuped,
    /// Self-normalised inverse-propensity-weighted means.
    Snipw,
}

/// An uplift of one arm against control with both kinds of interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Uplift {
    pub point: Option<f64>,
    pub se: Option<f64>,
    /// Valid at every look (confidence sequence at level alpha): the basis
    /// of decisions.
    pub always_valid_interval: Option<Bounds>,
    /// Classical interval, valid only if this were the one planned look:
    /// displayed, never used for decisions.
    pub fixed_horizon_interval: Option<Bounds>,
    /// Why a field is null.
    pub reason: Option<String>,
}

/// One arm on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArmMetricResult {
    pub arm: String,
    pub is_control: bool,
    pub exposures_mature: u64,
    pub exposures_immature: u64,
    /// Mature conversions (conversion metrics only).
    pub conversions: Option<u64>,
    /// Conversions among immature exposures so far (conversion metrics only).
    pub conversions_immature: Option<u64>,
    /// The arm's mean by the metric's estimator.
    pub mean: Option<f64>,
    pub mean_se: Option<f64>,
    pub mean_reason: Option<String>,
    /// Plain mean of the immature exposures (shown separately; not used).
    pub immature_mean: Option<f64>,
    /// Treatment minus control (null for control).
    pub uplift_absolute: Option<Uplift>,
    /// (treatment - control)/|control| (null for control).
    pub uplift_relative: Option<Uplift>,
    /// Running minimum over looks of the always-valid p-value of "no
    /// difference" — the basis of automatic decisions.
    pub p_always_valid: Option<PValueOut>,
    /// Classical p-value of this look alone (displayed only).
    pub p_fixed_horizon: Option<PValueOut>,
    /// Holm-adjusted `p_always_valid` across the treatment arms.
    pub p_holm_adjusted: Option<f64>,
    pub p_reason: Option<String>,
    /// Posterior probability that this arm is the best.
    pub prob_best: Option<f64>,
    /// E[max over arms - this arm] under the posterior.
    pub expected_loss: Option<f64>,
    pub bayes_reason: Option<String>,
}

/// One metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricResult {
    pub metric: String,
    pub kind: MetricKind,
    pub role: MetricRole,
    pub estimator: Estimator,
    /// θ of the CUPED adjustment when the estimator is `cuped`.
    pub cuped_theta: Option<f64>,
    /// Why CUPED was not used although the metric has a covariate.
    pub cuped_reason: Option<String>,
    pub periods: usize,
    /// Periods in which every arm has at least two mature exposures (used
    /// for arm means and P(best); comparisons use the periods where both
    /// compared arms have two).
    pub periods_used: usize,
    /// How P(best) was computed: `closed_form`, `normal`, `monte_carlo`.
    pub bayes_method: Option<String>,
    /// Seed of the Monte Carlo draws when `bayes_method` is `monte_carlo`.
    pub bayes_seed: Option<u64>,
    pub arms: Vec<ArmMetricResult>,
}

/// Sample-ratio mismatch against the propensity-implied expected counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SrmResult {
    /// Per arm (input order), all logged exposures.
    pub observed: Vec<u64>,
    /// Per arm, Σ of the arm's PMF entry over all logged exposures.
    pub expected: Vec<f64>,
    pub chi2: Option<f64>,
    pub p_value: Option<PValueOut>,
    pub threshold: f64,
    /// p < threshold at this look.
    pub flagged_now: bool,
    /// Flagged at this or an earlier look (sticky; see
    /// [`SequentialState::srm_flagged_at_look`]): promotion is blocked.
    pub flagged: bool,
    /// Look of the first flag.
    pub flagged_since_look: Option<u64>,
    pub reason: Option<String>,
}

/// Outcome of a guardrail check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailStatus {
    /// Always-valid evidence that the arm is not worse than the tolerance.
    Ok,
    /// Always-valid evidence that the arm is worse than the tolerance.
    Breached,
    /// Neither yet.
    Inconclusive,
}

/// One guardrail metric for one treatment arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GuardrailResult {
    pub metric: String,
    pub arm: String,
    pub status: GuardrailStatus,
    /// Relative tolerance: breached when worse than -tolerance.
    pub tolerance: f64,
    pub relative_uplift: Option<f64>,
    pub always_valid_interval: Option<Bounds>,
    /// Running-minimum always-valid p-value of "not worse than -tolerance";
    /// breached when ≤ alpha.
    pub p_breach: Option<PValueOut>,
    pub reason: Option<String>,
}

/// State of the experiment's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecisionState {
    /// Not enough evidence yet; see `missing`.
    Collecting,
    /// Every promotion condition holds for `arm`.
    ReadyToPromote { arm: String },
    /// Every treatment arm is significantly worse than control.
    ControlBest,
    /// Every arm's always-valid interval excludes a lift of `mde`.
    Futile,
    /// SRM check failed: the logged allocation does not match the PMFs.
    BlockedSrm,
    /// `arm` is worse than control on guardrail `metric` beyond tolerance.
    GuardrailBreached { arm: String, metric: String },
    /// The primary metric's statistics are inconsistent (see `reasons`).
    NotComputable,
}

/// What the analyzer recommends doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Keep the experiment running.
    Continue,
    /// Serve `arm` to `arm_share` of traffic and control to `holdout`.
    Promote { arm: String, arm_share: f64, holdout: f64 },
    /// As `promote`, but `auto_promote = false`: a person decides.
    AwaitManualPromotion { arm: String, arm_share: f64, holdout: f64 },
    /// Stop the experiment and keep serving control.
    StopKeepControl,
    /// Fix exposure logging before trusting any number.
    InvestigateSrm,
    /// Look at the breached guardrail (consider stopping the arm).
    ReviewGuardrail { arm: String, metric: String },
}

/// The individual promotion conditions on the primary metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionChecks {
    /// Treatment arms whose Holm-adjusted always-valid p ≤ alpha with a
    /// positive uplift.
    pub cleared_arms: Vec<String>,
    /// Arm with the highest posterior expected value.
    pub best_arm: Option<String>,
    /// The best arm and control have `min_sample_per_arm` mature exposures.
    pub min_sample_reached: bool,
    /// The best arm breaches no guardrail.
    pub guardrails_ok: bool,
    /// SRM was computed and passed.
    pub srm_ok: bool,
}

/// Basis of a sample-size projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SampleBasis {
    /// n at which the always-valid test would clear at the current effect
    /// and variance.
    AlwaysValid,
    /// Fixed-horizon n at the current effect (a lower bound).
    FixedHorizonLowerBound,
}

/// Projection of the mature exposures still needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NeededSample {
    pub arm: String,
    pub basis: SampleBasis,
    pub total_per_arm: u64,
    pub additional_per_arm: u64,
}

/// The decision of this look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub state: DecisionState,
    pub action: Action,
    pub checks: DecisionChecks,
    /// Why the state is what it is, with the numbers.
    pub reasons: Vec<String>,
    /// What is still missing for a decision.
    pub missing: Vec<String>,
    pub needed: Option<NeededSample>,
}

/// Everything one look computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Analysis {
    pub control: String,
    pub alpha: f64,
    pub contextual: bool,
    /// Look number (1 = first).
    pub look: u64,
    pub metrics: Vec<MetricResult>,
    pub srm: SrmResult,
    pub guardrails: Vec<GuardrailResult>,
    pub decision: Decision,
    /// State to hand to the next look.
    pub sequential_state: SequentialState,
}

// ---------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------

fn code(e: &StatsError) -> String {
    e.reason().as_str().to_string()
}

/// Arm-level estimate of one metric.
struct ArmEst {
    est: StatsResult<MeanEstimate>,
    /// Beta posterior parameters when the exact conversion posterior applies.
    beta: Option<(u64, u64)>,
}

/// Per-metric working data.
struct MetricWork {
    estimator: Estimator,
    cuped_theta: Option<f64>,
    cuped_reason: Option<String>,
    /// Per arm, per period summary (None: fewer than two exposures or
    /// error, with the error kept in `cell_errors`).
    summaries: Vec<Vec<Option<Summary>>>,
    /// First error building the arm's summaries other than "too few".
    cell_errors: Vec<Option<StatsError>>,
    weighted: Vec<StatsResult<WeightedStats>>,
    /// Mature exposures per period, all arms.
    period_units: Vec<u64>,
}

fn summarize(kind: MetricKind, cell: &Cell) -> StatsResult<Summary> {
    match kind {
        MetricKind::Conversion => cell.proportion()?.summary(),
        MetricKind::Continuous => cell.sample()?.summary(),
    }
}

fn prepare_metric(input: &AnalysisInput, m: usize) -> MetricWork {
    let metric = &input.metrics[m];
    let cells = &input.cells[m];
    let k = input.arms.len();
    let np = input.periods.len();
    let mut period_units = vec![0u64; np];
    for arm in cells {
        for (p, c) in arm.iter().enumerate() {
            period_units[p] += c.n;
        }
    }
    let mut estimator = Estimator::Stratified;
    let mut cuped_theta = None;
    let mut cuped_reason = None;
    let mut summaries = vec![vec![None; np]; k];
    let mut cell_errors: Vec<Option<StatsError>> = vec![None; k];
    let mut weighted = Vec::new();
    if input.contextual {
        estimator = Estimator::Snipw;
        weighted = cells
            .iter()
            .map(|arm| {
                let mut all = Cell::default();
                arm.iter().for_each(|c| all.merge(c));
                all.weighted()
            })
            .collect();
        return MetricWork { estimator, cuped_theta, cuped_reason, summaries, cell_errors, weighted, period_units };
    }
    let mut adjustment = None;
    if metric.has_covariate {
        let all: StatsResult<Vec<CupedStats>> = cells.iter().flatten().map(Cell::cuped).collect();
        match all.and_then(|v| crate::stats::cuped_adjustment(&v)) {
            Ok(adj) => {
                estimator = Estimator::Cuped;
                cuped_theta = Some(adj.theta);
                adjustment = Some(adj);
            }
            Err(e) => cuped_reason = Some(code(&e)),
        }
    }
    for (a, arm) in cells.iter().enumerate() {
        for (p, c) in arm.iter().enumerate() {
            if c.n < 2 {
                continue;
            }
            let s = match &adjustment {
                Some(adj) => c.cuped().and_then(|cs| adj.adjust(&cs)),
                None => summarize(metric.kind, c),
            };
            match s {
                Ok(s) => summaries[a][p] = Some(s),
                Err(e) => {
                    if cell_errors[a].is_none() {
                        cell_errors[a] = Some(e);
                    }
                }
            }
        }
    }
    MetricWork { estimator, cuped_theta, cuped_reason, summaries, cell_errors, weighted, period_units }
}

/// Stratified mean of arm `a` over the periods where every arm in `arms`
/// has a summary; returns the estimate and the number of periods used.
fn stratified_over(work: &MetricWork, a: usize, arms: &[usize]) -> (StatsResult<MeanEstimate>, usize) {
    for &b in arms {
        if let Some(e) = &work.cell_errors[b] {
            return (Err(e.clone()), 0);
        }
    }
    let mut s = Vec::with_capacity(work.period_units.len());
    let mut units = Vec::with_capacity(work.period_units.len());
    for (p, &u) in work.period_units.iter().enumerate() {
        if arms.iter().all(|&b| work.summaries[b][p].is_some()) {
            // Checked just above.
            if let Some(sum) = work.summaries[a][p] {
                s.push(sum);
                units.push(u);
            }
        }
    }
    if s.is_empty() {
        let any = work.summaries[a].iter().any(Option::is_some);
        let reason = if any { Reason::EmptyStratum } else { Reason::InsufficientSample };
        return (Err(StatsError::cannot(reason)), 0);
    }
    let used = s.len();
    (stratified_mean(&s, &units), used)
}

/// Relative difference (t - c)/|c| by the delta method.
fn relative(c: &MeanEstimate, t: &MeanEstimate) -> StatsResult<DiffEstimate> {
    let mut d = DiffEstimate::relative(c, t)?;
    if c.mean < 0.0 {
        d.point = -d.point;
    }
    Ok(d)
}

fn fixed_p(d: &DiffEstimate) -> StatsResult<PValue> {
    match d.df {
        Ok(_) => d.p_value_t(),
        Err(_) => d.p_value_normal(),
    }
}

fn fixed_ci(d: &DiffEstimate, alpha: f64) -> StatsResult<Bounds> {
    match d.df {
        Ok(_) => d.ci_t(alpha),
        Err(_) => d.ci_normal(alpha),
    }
    .map(Bounds::from)
}

fn uplift(d: &StatsResult<DiffEstimate>, n_total: f64, cfg: &AnalysisConfig) -> Uplift {
    let d = match d {
        Ok(d) => d,
        Err(e) => {
            return Uplift {
                point: None,
                se: None,
                always_valid_interval: None,
                fixed_horizon_interval: None,
                reason: Some(code(e)),
            }
        }
    };
    let mut reason = None;
    let av = confidence_sequence(d, n_total, cfg.alpha, cfg.sequential_tuning_n);
    let fh = fixed_ci(d, cfg.alpha);
    if let Err(e) = &av {
        reason = Some(code(e));
    } else if let Err(e) = &fh {
        reason = Some(code(e));
    }
    Uplift {
        point: Some(d.point),
        se: Some(d.se()),
        always_valid_interval: av.ok().map(|c| Bounds::from(c.interval)),
        fixed_horizon_interval: fh.ok(),
        reason,
    }
}

/// Per (metric, treatment arm) comparison used by the decision.
#[derive(Clone)]
struct Comparison {
    abs: StatsResult<DiffEstimate>,
    rel: StatsResult<DiffEstimate>,
    n_total: f64,
    p_av: StatsResult<PValue>,
}

/// Runs one look. `prior` is the previous look's
/// [`Analysis::sequential_state`] (None at the first look). Errors only on
/// inconsistent input shapes or configuration; statistical impossibilities
/// are reason codes inside the result.
pub fn analyze(input: &AnalysisInput, prior: Option<&SequentialState>) -> Result<Analysis, AnalysisError> {
    check_shapes(input)?;
    let cfg = &input.config;
    let k = input.arms.len();
    let ctrl = input.arms.iter().position(|a| *a == input.control).unwrap_or(0); // checked in check_shapes
    let primary = input.metrics.iter().position(|m| m.role == MetricRole::Primary).unwrap_or(0); // checked
    let empty_state = SequentialState::default();
    let prior = prior.unwrap_or(&empty_state);
    let mut state = SequentialState { looks: prior.looks + 1, entries: Vec::new(), srm_flagged_at_look: None };
    let mut metrics = Vec::with_capacity(input.metrics.len());
    let mut guardrails = Vec::new();
    let mut primary_cmp: Vec<Option<Comparison>> = vec![None; k];
    let mut primary_best: Option<usize> = None;
    let mut primary_holm: Vec<Option<f64>> = vec![None; k];

    for (m, metric) in input.metrics.iter().enumerate() {
        let work = prepare_metric(input, m);
        let all_arms: Vec<usize> = (0..k).collect();
        // Arm-level estimates over the common periods.
        let mut periods_used = 0;
        let arm_est: Vec<ArmEst> = (0..k)
            .map(|a| match work.estimator {
                Estimator::Snipw => ArmEst { est: work.weighted[a].clone().and_then(|w| snipw_mean(&w)), beta: None },
                _ => {
                    let (est, used) = stratified_over(&work, a, &all_arms);
                    periods_used = periods_used.max(used);
                    ArmEst { est, beta: None }
                }
            })
            .collect();
        let mut arm_est = arm_est;
        if work.estimator == Estimator::Snipw {
            periods_used = input.periods.len();
        }
        // Exact Beta posteriors: conversion, stratified, all data in one period.
        let data_periods = work.period_units.iter().filter(|&&u| u > 0).count();
        if metric.kind == MetricKind::Conversion && work.estimator == Estimator::Stratified && data_periods == 1 {
            for (a, e) in arm_est.iter_mut().enumerate() {
                let mut all = Cell::default();
                input.cells[m][a].iter().for_each(|c| all.merge(c));
                if let Ok(x) = all.conversions() {
                    e.beta = Some((x, all.n));
                }
            }
        }

        // Comparisons against control.
        let mut cmps: Vec<Option<Comparison>> = vec![None; k];
        for t in (0..k).filter(|&t| t != ctrl) {
            let pair = [ctrl, t];
            let (c_est, t_est, n_total) = match work.estimator {
                Estimator::Snipw => {
                    let n = input.cells[m][ctrl].iter().chain(&input.cells[m][t]).map(|c| c.n).sum::<u64>();
                    (arm_est[ctrl].est.clone(), arm_est[t].est.clone(), n as f64)
                }
                _ => {
                    let (c, _) = stratified_over(&work, ctrl, &pair);
                    let (tr, _) = stratified_over(&work, t, &pair);
                    let n: u64 = (0..input.periods.len())
                        .filter(|&p| work.summaries[ctrl][p].is_some() && work.summaries[t][p].is_some())
                        .map(|p| input.cells[m][ctrl][p].n + input.cells[m][t][p].n)
                        .sum();
                    (c, tr, n as f64)
                }
            };
            let abs = match work.estimator {
                Estimator::Snipw => match (&work.weighted[ctrl], &work.weighted[t]) {
                    (Ok(c), Ok(tr)) => snipw_difference(c, tr),
                    (Err(e), _) | (_, Err(e)) => Err(e.clone()),
                },
                _ => match (&c_est, &t_est) {
                    (Ok(c), Ok(tr)) => Ok(DiffEstimate::absolute(c, tr)),
                    (Err(e), _) | (_, Err(e)) => Err(e.clone()),
                },
            };
            let rel = match (&c_est, &t_est) {
                (Ok(c), Ok(tr)) => relative(c, tr),
                (Err(e), _) | (_, Err(e)) => Err(e.clone()),
            };
            let look = abs
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|d| confidence_sequence(d, n_total, cfg.alpha, cfg.sequential_tuning_n))
                .map(|c| c.p_value);
            let prev = prior.find(&metric.name, &input.arms[t]);
            let prev_p = prev.map(|e| PValue::from_ln(e.ln_p_always_valid));
            let p_av = match (look, prev_p) {
                (Ok(l), Some(p)) => Ok(p.min(l)),
                (Ok(l), None) => Ok(l),
                (Err(_), Some(p)) => Ok(p),
                (Err(e), None) => Err(e),
            };
            // Guardrail breach: one-sided, running minimum.
            let mut ln_breach = prev.map(|e| e.ln_p_guardrail_breach).unwrap_or(0.0);
            if metric.role == MetricRole::Guardrail {
                if let Ok(r) = &rel {
                    if r.point < -cfg.guardrail_tolerance {
                        let shifted = DiffEstimate {
                            point: r.point + cfg.guardrail_tolerance,
                            variance: r.variance,
                            df: r.df.clone(),
                        };
                        if let Ok(cs) = confidence_sequence(&shifted, n_total, cfg.alpha, cfg.sequential_tuning_n) {
                            ln_breach = ln_breach.min(cs.p_value.ln_p);
                        }
                    }
                }
                let rel_up = uplift(&rel, n_total, cfg);
                let p_breach = PValue::from_ln(ln_breach);
                let status = if p_breach.p <= cfg.alpha {
                    GuardrailStatus::Breached
                } else if rel_up.always_valid_interval.is_some_and(|i| i.lower > -cfg.guardrail_tolerance) {
                    GuardrailStatus::Ok
                } else {
                    GuardrailStatus::Inconclusive
                };
                guardrails.push(GuardrailResult {
                    metric: metric.name.clone(),
                    arm: input.arms[t].clone(),
                    status,
                    tolerance: cfg.guardrail_tolerance,
                    relative_uplift: rel_up.point,
                    always_valid_interval: rel_up.always_valid_interval,
                    p_breach: Some(PValueOut::from(p_breach)),
                    reason: rel_up.reason,
                });
            }
            if let Ok(p) = &p_av {
                state.entries.push(SequentialEntry {
                    metric: metric.name.clone(),
                    arm: input.arms[t].clone(),
                    ln_p_always_valid: p.ln_p.max(-f64::MAX),
                    ln_p_guardrail_breach: ln_breach.max(-f64::MAX),
                });
            }
            cmps[t] = Some(Comparison { abs, rel, n_total, p_av });
        }

        // Holm across treatment arms on the always-valid p-values.
        let treat: Vec<usize> = (0..k).filter(|&t| t != ctrl).collect();
        let ps: Vec<Option<f64>> =
            treat.iter().map(|&t| cmps[t].as_ref().and_then(|c| c.p_av.as_ref().ok()).map(|p| p.p)).collect();
        let mut holm_adj: Vec<Option<f64>> = vec![None; k];
        // Arms without a p-value count as p = 1 (the family keeps its size).
        let filled: Vec<f64> = ps.iter().map(|p| p.unwrap_or(1.0)).collect();
        if let Ok(adj) = holm(&filled) {
            for ((&t, p), a) in treat.iter().zip(&ps).zip(adj) {
                if p.is_some() {
                    holm_adj[t] = Some(a);
                }
            }
        }

        // Bayesian: exact Beta when applicable, Gaussian on the estimates otherwise.
        let posteriors: StatsResult<Vec<Posterior>> = arm_est
            .iter()
            .map(|e| match (e.beta, &e.est) {
                (Some((x, n)), _) => BetaPosterior::from_conversions(x, n, 1.0, 1.0).map(Posterior::Beta),
                (None, Ok(est)) => GaussianPosterior::new(est.mean, est.variance).map(Posterior::Gaussian),
                (None, Err(e)) => Err(e.clone()),
            })
            .collect();
        let bayes = posteriors.and_then(|ps| {
            let means: Vec<f64> = ps
                .iter()
                .map(|p| match p {
                    Posterior::Beta(b) => b.mean(),
                    Posterior::Gaussian(g) => g.mean(),
                })
                .collect();
            best_arm(&ps, cfg.mc_draws, cfg.seed).map(|b| (b, means))
        });
        let (bayes_method, bayes_seed) = match &bayes {
            Ok((b, _)) => match b.method {
                Method::ClosedForm | Method::Quadrature => (Some("closed_form".to_string()), None),
                Method::Normal => (Some("normal".to_string()), None),
                Method::MonteCarlo { seed, .. } => (Some("monte_carlo".to_string()), Some(seed)),
            },
            Err(_) => (None, None),
        };
        if m == primary {
            if let Ok((_, means)) = &bayes {
                primary_best = (0..k).max_by(|&i, &j| means[i].total_cmp(&means[j]));
            }
        }

        // Per-arm rows.
        let mut rows = Vec::with_capacity(k);
        for a in 0..k {
            let mut mature = Cell::default();
            input.cells[m][a].iter().for_each(|c| mature.merge(c));
            let immature = input.immature.get(m).and_then(|v| v.get(a)).copied().unwrap_or_default();
            let is_conv = metric.kind == MetricKind::Conversion;
            let (mean, mean_se, mean_reason) = match &arm_est[a].est {
                Ok(e) => (Some(e.mean), Some(e.variance.sqrt()), None),
                Err(e) => (None, None, Some(code(e))),
            };
            let (ua, ur, p_av, p_fh, p_reason) = match &cmps[a] {
                None => (None, None, None, None, Some(Reason::NotApplicable.as_str().to_string())),
                Some(c) => {
                    let fh = c.abs.as_ref().map_err(Clone::clone).and_then(fixed_p);
                    let reason = match (&c.p_av, &fh) {
                        (Err(e), _) | (_, Err(e)) => Some(code(e)),
                        _ => None,
                    };
                    (
                        Some(uplift(&c.abs, c.n_total, cfg)),
                        Some(uplift(&c.rel, c.n_total, cfg)),
                        c.p_av.as_ref().ok().map(|p| PValueOut::from(*p)),
                        fh.ok().map(PValueOut::from),
                        reason,
                    )
                }
            };
            let (prob_best, expected_loss, bayes_reason) = match &bayes {
                Ok((b, _)) => (Some(b.prob_best[a]), Some(b.expected_loss[a]), None),
                Err(e) => (None, None, Some(code(e))),
            };
            rows.push(ArmMetricResult {
                arm: input.arms[a].clone(),
                is_control: a == ctrl,
                exposures_mature: mature.n,
                exposures_immature: immature.n,
                conversions: if is_conv { mature.conversions().ok() } else { None },
                conversions_immature: if is_conv { immature.conversions().ok() } else { None },
                mean,
                mean_se,
                mean_reason,
                immature_mean: (immature.n > 0).then(|| immature.sum / immature.n as f64),
                uplift_absolute: ua,
                uplift_relative: ur,
                p_always_valid: p_av,
                p_fixed_horizon: p_fh,
                p_holm_adjusted: holm_adj[a],
                p_reason,
                prob_best,
                expected_loss,
                bayes_reason,
            });
        }
        if m == primary {
            primary_cmp = cmps;
            primary_holm = holm_adj;
        }
        metrics.push(MetricResult {
            metric: metric.name.clone(),
            kind: metric.kind,
            role: metric.role,
            estimator: work.estimator,
            cuped_theta: work.cuped_theta,
            cuped_reason: work.cuped_reason,
            periods: input.periods.len(),
            periods_used,
            bayes_method,
            bayes_seed,
            arms: rows,
        });
    }

    let mut srm = srm_check(input);
    state.srm_flagged_at_look = prior.srm_flagged_at_look.or(srm.flagged_now.then_some(state.looks));
    srm.flagged_since_look = state.srm_flagged_at_look;
    srm.flagged = state.srm_flagged_at_look.is_some();
    let decision = decide(input, ctrl, primary, &metrics, &guardrails, &srm, &primary_cmp, &primary_holm, primary_best);
    Ok(Analysis {
        control: input.control.clone(),
        alpha: cfg.alpha,
        contextual: input.contextual,
        look: state.looks,
        metrics,
        srm,
        guardrails,
        decision,
        sequential_state: state,
    })
}

fn check_shapes(input: &AnalysisInput) -> Result<(), AnalysisError> {
    let problems = input.config.validate();
    if let Some((field, reason)) = problems.first() {
        return Err(AnalysisError::invalid(&format!("config.{field}"), reason.clone()));
    }
    let k = input.arms.len();
    if k < 2 {
        return Err(AnalysisError::invalid("arms", "need at least two arms"));
    }
    if !input.arms.contains(&input.control) {
        return Err(AnalysisError::invalid("control", format!("`{}` is not one of the arms", input.control)));
    }
    let primaries = input.metrics.iter().filter(|m| m.role == MetricRole::Primary).count();
    if primaries != 1 {
        return Err(AnalysisError::invalid("metrics", format!("need exactly one primary metric, got {primaries}")));
    }
    let np = input.periods.len();
    if input.cells.len() != input.metrics.len() {
        return Err(AnalysisError::invalid("cells", "one entry per metric"));
    }
    for (m, per_arm) in input.cells.iter().enumerate() {
        if per_arm.len() != k || per_arm.iter().any(|p| p.len() != np) {
            return Err(AnalysisError::invalid("cells", format!("metric {m}: need [arm][period] = [{k}][{np}]")));
        }
    }
    if !input.immature.is_empty()
        && (input.immature.len() != input.metrics.len() || input.immature.iter().any(|v| v.len() != k))
    {
        return Err(AnalysisError::invalid("immature", format!("need [metric][arm] = [{}][{k}]", input.metrics.len())));
    }
    if input.allocation.len() != np || input.allocation.iter().any(|v| v.len() != k) {
        return Err(AnalysisError::invalid("allocation", format!("need [period][arm] = [{np}][{k}]")));
    }
    Ok(())
}

fn srm_check(input: &AnalysisInput) -> SrmResult {
    let k = input.arms.len();
    let mut observed = vec![0u64; k];
    let mut expected = vec![0.0; k];
    for period in &input.allocation {
        for (a, c) in period.iter().enumerate() {
            observed[a] += c.observed;
            expected[a] += c.expected;
        }
    }
    let threshold = input.config.srm_threshold;
    // Arms that nobody could draw and nobody drew take no part.
    let keep: Vec<usize> = (0..k).filter(|&a| observed[a] > 0 || expected[a] > 0.0).collect();
    let obs: Vec<u64> = keep.iter().map(|&a| observed[a]).collect();
    let exp: Vec<f64> = keep.iter().map(|&a| expected[a]).collect();
    let test = if keep.len() < 2 { Err(StatsError::cannot(Reason::EmptySample)) } else { srm_test(&obs, &exp) };
    match test {
        Ok(t) => SrmResult {
            observed,
            expected,
            chi2: Some(t.chi2),
            flagged_now: t.p_value.p < threshold,
            flagged: t.p_value.p < threshold,
            flagged_since_look: None,
            p_value: Some(PValueOut::from(t.p_value)),
            threshold,
            reason: None,
        },
        Err(e) => SrmResult {
            observed,
            expected,
            chi2: None,
            p_value: None,
            threshold,
            // An arm that was drawn although its expected count is zero is a mismatch.
            flagged_now: e.reason() == Reason::ZeroExpectedCount,
            flagged: e.reason() == Reason::ZeroExpectedCount,
            flagged_since_look: None,
            reason: Some(code(&e)),
        },
    }
}

/// "12,345" with thousands separators.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Rounds to two significant figures for "~12,000"-style projections.
fn round2(n: u64) -> u64 {
    if n < 100 {
        return n;
    }
    let mag = 10u64.pow((n as f64).log10().floor() as u32 - 1);
    n.div_ceil(mag) * mag
}

/// Total units N of two arms at which the always-valid test at level
/// `level` would clear if the effect `d` and the per-unit variance
/// s² = Var·N stayed as they are: the smallest N with
/// ρ²d²N²/(2s²(Nρ²+1)) - ½ ln(Nρ²+1) ≥ ln(1/level) (the e-value of
/// [`confidence_sequence`] written in N).
fn always_valid_n(d: &DiffEstimate, n_now: f64, level: f64, tuning_n: f64) -> Option<f64> {
    if d.variance <= 0.0 || d.point == 0.0 || n_now <= 0.0 {
        return None;
    }
    let s2 = d.variance * n_now;
    let ln_alpha = level.ln();
    let rho2 = (-2.0 * ln_alpha + (-2.0 * ln_alpha).ln_1p()) / tuning_n;
    let target = -ln_alpha;
    let f = |n: f64| {
        let k = n * rho2 + 1.0;
        rho2 * d.point * d.point * n * n / (2.0 * s2 * k) - 0.5 * k.ln() - target
    };
    let (mut lo, mut hi) = (1.0_f64, n_now.max(2.0));
    while f(hi) < 0.0 {
        lo = hi;
        hi *= 2.0;
        if hi > 1e13 {
            return None;
        }
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if f(mid) >= 0.0 {
            hi = mid;
        } else {
            lo = mid;
        }
        if hi - lo < 1.0 {
            break;
        }
    }
    Some(hi)
}

#[allow(clippy::too_many_arguments)]
fn decide(
    input: &AnalysisInput,
    ctrl: usize,
    primary: usize,
    metrics: &[MetricResult],
    guardrails: &[GuardrailResult],
    srm: &SrmResult,
    cmps: &[Option<Comparison>],
    holm_adj: &[Option<f64>],
    best: Option<usize>,
) -> Decision {
    let cfg = &input.config;
    let pm = &metrics[primary];
    let k = input.arms.len();
    let treat: Vec<usize> = (0..k).filter(|&t| t != ctrl).collect();
    let point = |t: usize| cmps[t].as_ref().and_then(|c| c.abs.as_ref().ok()).map(|d| d.point);
    let cleared: Vec<usize> = treat
        .iter()
        .copied()
        .filter(|&t| holm_adj[t].is_some_and(|p| p <= cfg.alpha) && point(t).is_some_and(|d| d > 0.0))
        .collect();
    let worse: Vec<usize> = treat
        .iter()
        .copied()
        .filter(|&t| holm_adj[t].is_some_and(|p| p <= cfg.alpha) && point(t).is_some_and(|d| d < 0.0))
        .collect();
    let mature = |a: usize| pm.arms[a].exposures_mature;
    let min_ok = |a: usize| mature(a) >= cfg.min_sample_per_arm && mature(ctrl) >= cfg.min_sample_per_arm;
    let breach_of =
        |a: usize| guardrails.iter().find(|g| g.arm == input.arms[a] && g.status == GuardrailStatus::Breached).cloned();
    let srm_ok = srm.p_value.is_some() && !srm.flagged;
    let candidate = best.filter(|b| cleared.contains(b));
    let checks = DecisionChecks {
        cleared_arms: cleared.iter().map(|&t| input.arms[t].clone()).collect(),
        best_arm: best.map(|b| input.arms[b].clone()),
        min_sample_reached: best.map(min_ok).unwrap_or(false),
        guardrails_ok: best.map(|b| breach_of(b).is_none()).unwrap_or(true),
        srm_ok,
    };

    let mut reasons = Vec::new();
    let mut missing = Vec::new();
    let mut needed = None;
    let name = |a: usize| input.arms[a].as_str();

    // What is missing, whatever the state.
    for &a in [ctrl].iter().chain(candidate.iter()) {
        if mature(a) < cfg.min_sample_per_arm {
            missing.push(format!(
                "arm `{}` has {} of the {} mature exposures required on `{}`",
                name(a),
                thousands(mature(a)),
                thousands(cfg.min_sample_per_arm),
                pm.metric
            ));
        }
    }
    if srm.flagged {
        let p = srm.p_value.map(|p| format!("{:.2e}", p.p)).unwrap_or_else(|| "n/a".into());
        reasons.push(format!(
            "sample-ratio mismatch flagged at look {}: observed {:?} vs expected {:?} exposures (now p = {p}, threshold {}); fix the exposure logging, then promote by hand or start a new version",
            srm.flagged_since_look.map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
            srm.observed,
            srm.expected.iter().map(|e| e.round() as u64).collect::<Vec<_>>(),
            srm.threshold
        ));
    } else if srm.p_value.is_none() {
        missing.push(format!(
            "the SRM check cannot be computed yet ({})",
            srm.reason.as_deref().unwrap_or("no exposures")
        ));
    }
    for g in guardrails.iter().filter(|g| g.status == GuardrailStatus::Breached) {
        reasons.push(format!(
            "guardrail `{}` breached by arm `{}`: relative change {} (tolerance -{:.1}%)",
            g.metric,
            g.arm,
            g.relative_uplift.map(|r| format!("{:+.2}%", 100.0 * r)).unwrap_or_else(|| "n/a".into()),
            100.0 * g.tolerance
        ));
    }
    // Projection for the leading treatment arm when nothing has cleared yet.
    if candidate.is_none() {
        let leader = treat.iter().copied().filter_map(|t| point(t).map(|d| (t, d))).max_by(|x, y| x.1.total_cmp(&y.1));
        match leader {
            Some((t, d)) if d > 0.0 && !cleared.contains(&t) => {
                if let Some(c) = &cmps[t] {
                    if let Ok(diff) = &c.abs {
                        let level = cfg.alpha / treat.len() as f64;
                        let per_arm_now = c.n_total / 2.0;
                        let (basis, n) = match always_valid_n(diff, c.n_total, level, cfg.sequential_tuning_n) {
                            Some(n) => (SampleBasis::AlwaysValid, n / 2.0),
                            None => {
                                let z = normal_quantile(1.0 - level / 2.0).unwrap_or(1.96);
                                let s2 = diff.variance * c.n_total;
                                (SampleBasis::FixedHorizonLowerBound, z * z * s2 / (d * d) / 2.0)
                            }
                        };
                        let total = n.ceil().min(u64::MAX as f64) as u64;
                        let extra = (n - per_arm_now).max(0.0).ceil() as u64;
                        let basis_text = match basis {
                            SampleBasis::AlwaysValid => "for the always-valid test to clear",
                            SampleBasis::FixedHorizonLowerBound => "(fixed-horizon lower bound)",
                        };
                        let rel = c.rel.as_ref().map(|r| format!(", {:+.1}% relative", 100.0 * r.point)).unwrap_or_default();
                        missing.push(format!(
                            "arm `{}` needs ~{} more mature exposures per arm at the current effect size ({:+.4} absolute{rel}) {basis_text}",
                            name(t),
                            thousands(round2(extra)),
                            d
                        ));
                        needed =
                            Some(NeededSample { arm: name(t).to_string(), basis, total_per_arm: total, additional_per_arm: extra });
                    }
                }
            }
            Some(_) => missing.push(format!(
                "no treatment arm is ahead of control on `{}` yet; at the current estimates more data would not promote one",
                pm.metric
            )),
            None => missing.push(format!(
                "uplift on `{}` cannot be computed yet ({})",
                pm.metric,
                pm.arms
                    .iter()
                    .find_map(|r| r.uplift_absolute.as_ref().and_then(|u| u.reason.clone()))
                    .unwrap_or_else(|| Reason::EmptySample.as_str().into())
            )),
        }
    }

    let invalid = pm.arms.iter().any(|r| {
        r.mean_reason.as_deref() == Some(Reason::InvalidInput.as_str())
            || r.p_reason.as_deref() == Some(Reason::InvalidInput.as_str())
    });
    let futile = cfg.mde.is_some_and(|mde| {
        treat.iter().all(|&t| {
            pm.arms[t].uplift_relative.as_ref().and_then(|u| u.always_valid_interval).is_some_and(|i| i.upper < mde)
        })
    });

    let (state, action) = if invalid {
        reasons.push(format!("the statistics of `{}` are inconsistent (invalid_input)", pm.metric));
        (DecisionState::NotComputable, Action::Continue)
    } else if srm.flagged {
        (DecisionState::BlockedSrm, Action::InvestigateSrm)
    } else if let Some(w) = candidate.filter(|&w| breach_of(w).is_some()) {
        // Checked by the filter.
        let g = breach_of(w).map(|g| g.metric).unwrap_or_default();
        (
            DecisionState::GuardrailBreached { arm: name(w).into(), metric: g.clone() },
            Action::ReviewGuardrail { arm: name(w).into(), metric: g },
        )
    } else if let Some(w) = candidate.filter(|&w| min_ok(w) && srm_ok) {
        let p = holm_adj[w].unwrap_or(1.0);
        reasons.push(format!(
            "arm `{}` beats control on `{}`: Holm-adjusted always-valid p = {:.2e} <= {}, best by posterior expected value (P(best) = {}), minimum sample reached, no guardrail breached, SRM passed",
            name(w),
            pm.metric,
            p,
            cfg.alpha,
            pm.arms[w].prob_best.map(|b| format!("{b:.3}")).unwrap_or_else(|| "n/a".into())
        ));
        let arm_share = 1.0 - cfg.holdout;
        let action = if cfg.auto_promote {
            Action::Promote { arm: name(w).into(), arm_share, holdout: cfg.holdout }
        } else {
            Action::AwaitManualPromotion { arm: name(w).into(), arm_share, holdout: cfg.holdout }
        };
        (DecisionState::ReadyToPromote { arm: name(w).into() }, action)
    } else if let Some(g) = guardrails.iter().find(|g| g.status == GuardrailStatus::Breached) {
        (
            DecisionState::GuardrailBreached { arm: g.arm.clone(), metric: g.metric.clone() },
            Action::ReviewGuardrail { arm: g.arm.clone(), metric: g.metric.clone() },
        )
    } else if !treat.is_empty() && worse.len() == treat.len() {
        reasons.push(format!("every treatment arm is significantly worse than control on `{}`", pm.metric));
        (DecisionState::ControlBest, Action::StopKeepControl)
    } else if futile {
        let mde = cfg.mde.unwrap_or_default();
        reasons.push(format!(
            "every arm's always-valid interval of the relative uplift on `{}` lies below the minimum detectable effect {:+.1}%",
            pm.metric,
            100.0 * mde
        ));
        (DecisionState::Futile, Action::StopKeepControl)
    } else {
        if let Some(c) = candidate {
            reasons.push(format!("arm `{}` clears the always-valid test but not every other condition", name(c)));
        }
        (DecisionState::Collecting, Action::Continue)
    };
    if matches!(state, DecisionState::ReadyToPromote { .. }) {
        missing.clear();
        needed = None;
    }
    Decision { state, action, checks, reasons, missing, needed }
}

/// Fixed-horizon sample size per arm of a two-sided test at level `alpha`
/// with power `power` for an absolute difference `effect` between arms of
/// per-unit variances `var_control` and `var_treatment`:
/// n = (z_{1-α/2} + z_{power})² (σ_c² + σ_t²)/δ² (e.g. Chow, Shao, Wang,
/// "Sample Size Calculations in Clinical Research", 2nd ed., §4.2).
pub fn fixed_horizon_sample_size(
    var_control: f64,
    var_treatment: f64,
    effect: f64,
    alpha: f64,
    power: f64,
) -> StatsResult<f64> {
    if !(alpha > 0.0 && alpha < 1.0 && power > 0.0 && power < 1.0) {
        return Err(StatsError::invalid("alpha/power", "must lie in (0, 1)"));
    }
    if !(var_control >= 0.0 && var_treatment >= 0.0 && var_control.is_finite() && var_treatment.is_finite()) {
        return Err(StatsError::invalid("variance", "must be finite and non-negative"));
    }
    if effect == 0.0 || !effect.is_finite() {
        return Err(StatsError::cannot(Reason::NotApplicable));
    }
    let z = normal_quantile(1.0 - alpha / 2.0)? + normal_quantile(power)?;
    Ok(z * z * (var_control + var_treatment) / (effect * effect))
}

/// [`fixed_horizon_sample_size`] for a conversion rate `p_control` and a
/// relative lift `lift` (Bernoulli variances p(1-p)).
pub fn fixed_horizon_sample_size_conversion(p_control: f64, lift: f64, alpha: f64, power: f64) -> StatsResult<f64> {
    let p_t = p_control * (1.0 + lift);
    if !(p_control > 0.0 && p_control < 1.0 && p_t > 0.0 && p_t < 1.0) {
        return Err(StatsError::invalid("p_control", "rates must lie in (0, 1)"));
    }
    fixed_horizon_sample_size(p_control * (1.0 - p_control), p_t * (1.0 - p_t), p_t - p_control, alpha, power)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv_cell(n: u64, conversions: u64, propensity: f64) -> Cell {
        let mut c = Cell::default();
        for i in 0..n {
            c.observe(if i < conversions { 1.0 } else { 0.0 }, propensity, 0.0);
        }
        c
    }

    fn metric(name: &str, kind: MetricKind, role: MetricRole) -> MetricInput {
        MetricInput { name: name.into(), kind, role, has_covariate: false }
    }

    /// One period, 50/50, a conversion primary metric; `arms[i] = (n, conversions)`.
    fn one_period(arms: &[(u64, u64)]) -> AnalysisInput {
        let k = arms.len();
        let keys: Vec<String> = (0..k).map(|i| if i == 0 { "control".into() } else { format!("t{i}") }).collect();
        let p = 1.0 / k as f64;
        let total: u64 = arms.iter().map(|a| a.0).sum();
        AnalysisInput {
            arms: keys,
            control: "control".into(),
            metrics: vec![metric("conversion", MetricKind::Conversion, MetricRole::Primary)],
            periods: vec![7],
            cells: vec![arms.iter().map(|&(n, c)| vec![conv_cell(n, c, p)]).collect()],
            immature: vec![],
            allocation: vec![arms
                .iter()
                .map(|&(n, _)| AllocationCell { observed: n, expected: total as f64 * p })
                .collect()],
            contextual: false,
            config: AnalysisConfig::default(),
        }
    }

    fn run(input: &AnalysisInput) -> Analysis {
        analyze(input, None).unwrap()
    }

    #[test]
    fn cell_observe_and_merge_build_the_sums_of_the_union() {
        let mut a = Cell::default();
        a.observe(1.0, 0.5, 2.0);
        let mut b = Cell::default();
        b.observe(3.0, 0.25, -1.0);
        let mut m = a;
        m.merge(&b);
        assert_eq!(m.n, 2);
        assert_eq!(m.sum, 4.0);
        assert_eq!(m.sum_sq, 10.0);
        assert_eq!(m.sum_w, 6.0);
        assert_eq!(m.sum_wy, 2.0 + 12.0);
        assert_eq!(m.sum_w2y2, 4.0 + 144.0);
        assert_eq!(m.sum_xy, 2.0 - 3.0);
    }

    #[test]
    fn default_config_is_valid_and_bad_fields_are_named() {
        assert!(AnalysisConfig::default().validate().is_empty());
        let bad = AnalysisConfig { alpha: 0.0, holdout: 1.0, mde: Some(-0.1), mc_draws: 5, ..Default::default() };
        let fields: Vec<String> = bad.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, vec!["alpha", "mde", "holdout", "mc_draws"]);
        let parsed: Result<AnalysisConfig, _> = serde_json::from_str(r#"{"alpha": 0.01, "typo": 1}"#);
        assert!(parsed.is_err());
        let parsed: AnalysisConfig = serde_json::from_str(r#"{"alpha": 0.01}"#).unwrap();
        assert_eq!(parsed.alpha, 0.01);
        assert_eq!(parsed.min_sample_per_arm, AnalysisConfig::default().min_sample_per_arm);
    }

    #[test]
    fn equal_arms_are_not_promoted_and_say_what_is_missing() {
        let a = run(&one_period(&[(20_000, 600), (20_000, 600)]));
        assert_eq!(a.decision.state, DecisionState::Collecting);
        assert_eq!(a.decision.action, Action::Continue);
        let row = &a.metrics[0].arms[1];
        assert_eq!(row.uplift_absolute.as_ref().unwrap().point, Some(0.0));
        assert!(row.p_always_valid.unwrap().p > 0.9);
        assert!((row.prob_best.unwrap() - 0.5).abs() < 1e-9);
        assert!(!a.decision.missing.is_empty());
    }

    #[test]
    fn a_big_lift_is_promoted_with_the_holdout_recorded() {
        let mut input = one_period(&[(20_000, 600), (20_000, 800)]);
        input.config.holdout = 0.1;
        let a = run(&input);
        assert_eq!(a.decision.state, DecisionState::ReadyToPromote { arm: "t1".into() });
        match &a.decision.action {
            Action::Promote { arm, arm_share, holdout } => {
                assert_eq!(arm, "t1");
                assert!((arm_share - 0.9).abs() < 1e-12 && (holdout - 0.1).abs() < 1e-12);
            }
            other => panic!("{other:?}"),
        }
        assert!(a.decision.missing.is_empty());
        assert!(a.decision.checks.srm_ok && a.decision.checks.min_sample_reached);
        let row = &a.metrics[0].arms[1];
        let abs = row.uplift_absolute.as_ref().unwrap();
        assert!((abs.point.unwrap() - 0.01).abs() < 1e-12);
        let (av, fh) = (abs.always_valid_interval.unwrap(), abs.fixed_horizon_interval.unwrap());
        assert!(av.lower < fh.lower && av.upper > fh.upper, "always-valid is wider: {av:?} {fh:?}");
        let rel = row.uplift_relative.as_ref().unwrap();
        assert!((rel.point.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!(row.prob_best.unwrap() > 0.999 && row.expected_loss.unwrap() < 1e-6);
        assert_eq!(a.metrics[0].bayes_method.as_deref(), Some("closed_form"));
        assert_eq!(row.conversions, Some(800));
        assert_eq!(a.metrics[0].estimator, Estimator::Stratified);

        input.config.auto_promote = false;
        assert!(matches!(run(&input).decision.action, Action::AwaitManualPromotion { .. }));
    }

    #[test]
    fn the_minimum_sample_holds_back_a_clear_winner() {
        let mut input = one_period(&[(2_000, 40), (2_000, 120)]);
        input.config.min_sample_per_arm = 5_000;
        let a = run(&input);
        assert_eq!(a.decision.state, DecisionState::Collecting);
        assert!(!a.decision.checks.min_sample_reached);
        assert!(
            a.decision.missing.iter().any(|m| m.contains("of the 5,000 mature exposures")),
            "{:?}",
            a.decision.missing
        );
    }

    #[test]
    fn srm_blocks_promotion() {
        let mut input = one_period(&[(20_000, 600), (20_000, 800)]);
        // The PMF said 60/40, but 50/50 was logged.
        input.allocation[0][0].expected = 24_000.0;
        input.allocation[0][1].expected = 16_000.0;
        let a = run(&input);
        assert!(a.srm.flagged && a.srm.flagged_now && a.srm.p_value.unwrap().p < 1e-3);
        assert_eq!(a.srm.flagged_since_look, Some(1));
        assert_eq!(a.decision.state, DecisionState::BlockedSrm);
        assert_eq!(a.decision.action, Action::InvestigateSrm);
        assert!(!a.decision.checks.srm_ok);
        // The flag is sticky: a later look whose counts look fine stays blocked.
        let healthy = one_period(&[(20_000, 600), (20_000, 800)]);
        let later = analyze(&healthy, Some(&a.sequential_state)).unwrap();
        assert!(!later.srm.flagged_now && later.srm.flagged);
        assert_eq!(later.decision.state, DecisionState::BlockedSrm);
        assert_eq!(run(&healthy).decision.state, DecisionState::ReadyToPromote { arm: "t1".into() });
    }

    #[test]
    fn a_breached_guardrail_blocks_the_winner() {
        let mut input = one_period(&[(20_000, 600), (20_000, 800)]);
        input.metrics.push(metric("margin", MetricKind::Continuous, MetricRole::Guardrail));
        // Margin per exposure: control 10 ± ~1, treatment 9 (10% worse).
        let cell = |mean: f64| {
            let mut c = Cell::default();
            for i in 0..20_000 {
                c.observe(mean + if i % 2 == 0 { 1.0 } else { -1.0 }, 0.5, 0.0);
            }
            c
        };
        input.cells.push(vec![vec![cell(10.0)], vec![cell(9.0)]]);
        let a = run(&input);
        assert_eq!(a.guardrails.len(), 1);
        let g = &a.guardrails[0];
        assert_eq!(g.status, GuardrailStatus::Breached);
        assert!((g.relative_uplift.unwrap() + 0.1).abs() < 1e-9);
        assert_eq!(a.decision.state, DecisionState::GuardrailBreached { arm: "t1".into(), metric: "margin".into() });
        assert!(!a.decision.checks.guardrails_ok);

        // Within tolerance (1% worse, tolerance 2%): ok, promotion goes ahead.
        input.cells[1][1] = vec![cell(9.9)];
        let a = run(&input);
        assert_eq!(a.guardrails[0].status, GuardrailStatus::Ok);
        assert_eq!(a.decision.state, DecisionState::ReadyToPromote { arm: "t1".into() });
    }

    #[test]
    fn futility_when_every_interval_excludes_the_mde() {
        let mut input = one_period(&[(400_000, 12_000), (400_000, 12_000)]);
        input.config.mde = Some(0.05);
        let a = run(&input);
        assert_eq!(a.decision.state, DecisionState::Futile);
        assert_eq!(a.decision.action, Action::StopKeepControl);
        input.config.mde = None;
        assert_eq!(run(&input).decision.state, DecisionState::Collecting);
    }

    #[test]
    fn control_best_when_every_treatment_is_significantly_worse() {
        let a = run(&one_period(&[(20_000, 800), (20_000, 600)]));
        assert_eq!(a.decision.state, DecisionState::ControlBest);
    }

    #[test]
    fn contextual_allocation_uses_snipw_and_periods_use_stratification() {
        let mut input = one_period(&[(5_000, 150), (5_000, 200)]);
        input.contextual = true;
        let a = run(&input);
        assert_eq!(a.metrics[0].estimator, Estimator::Snipw);
        // Uniform logging: SNIPW means are the plain means.
        assert!((a.metrics[0].arms[0].mean.unwrap() - 0.03).abs() < 1e-12);
        assert_eq!(a.metrics[0].bayes_method.as_deref(), Some("normal"));

        // Simpson's paradox across two periods (the stats::adaptive example).
        let input = AnalysisInput {
            periods: vec![1, 2],
            cells: vec![vec![
                vec![conv_cell(1000, 100, 0.5), conv_cell(200, 60, 0.1)],
                vec![conv_cell(1000, 110, 0.5), conv_cell(1800, 558, 0.9)],
            ]],
            allocation: vec![
                vec![AllocationCell { observed: 1000, expected: 1000.0 }; 2],
                vec![
                    AllocationCell { observed: 200, expected: 200.0 },
                    AllocationCell { observed: 1800, expected: 1800.0 },
                ],
            ],
            ..one_period(&[(1, 0), (1, 0)])
        };
        let a = run(&input);
        assert_eq!(a.metrics[0].estimator, Estimator::Stratified);
        assert_eq!(a.metrics[0].periods_used, 2);
        let d = a.metrics[0].arms[1].uplift_absolute.as_ref().unwrap().point.unwrap();
        assert!((d - 0.01).abs() < 1e-12, "{d}");
    }

    #[test]
    fn cuped_is_used_when_the_covariate_has_variance() {
        let mut input = one_period(&[(1, 0), (1, 0)]);
        input.metrics =
            vec![MetricInput { has_covariate: true, ..metric("revenue", MetricKind::Continuous, MetricRole::Primary) }];
        let mut cells = [Cell::default(), Cell::default()];
        for i in 0..2_000 {
            let x = (i % 13) as f64;
            let noise = if i % 2 == 0 { 0.5 } else { -0.5 };
            cells[0].observe(2.0 * x + noise, 0.5, x);
            cells[1].observe(2.0 * x + 0.2 - noise, 0.5, x);
        }
        input.cells = vec![vec![vec![cells[0]], vec![cells[1]]]];
        input.allocation = vec![vec![AllocationCell { observed: 2_000, expected: 2_000.0 }; 2]];
        let a = run(&input);
        let m = &a.metrics[0];
        assert_eq!(m.estimator, Estimator::Cuped);
        assert!((m.cuped_theta.unwrap() - 2.0).abs() < 0.01);
        let up = m.arms[1].uplift_absolute.as_ref().unwrap();
        assert!((up.point.unwrap() - 0.2).abs() < 1e-9);
        assert!(up.se.unwrap() < 0.02);

        // A constant covariate: no CUPED, and why.
        for c in &mut input.cells[0] {
            c.iter_mut().for_each(|c| {
                c.sum_x = 0.0;
                c.sum_x_sq = 0.0;
                c.sum_xy = 0.0;
            });
        }
        let a = run(&input);
        assert_eq!(a.metrics[0].estimator, Estimator::Stratified);
        assert_eq!(a.metrics[0].cuped_reason.as_deref(), Some("zero_variance"));
    }

    #[test]
    fn always_valid_p_is_a_running_minimum_across_looks() {
        let first = run(&one_period(&[(10_000, 300), (10_000, 370)]));
        let p1 = first.metrics[0].arms[1].p_always_valid.unwrap();
        assert_eq!(first.look, 1);
        // Next look: the difference has shrunk, but the always-valid p keeps its minimum.
        let input = one_period(&[(20_000, 600), (20_000, 610)]);
        let fresh = run(&input).metrics[0].arms[1].p_always_valid.unwrap();
        let second = analyze(&input, Some(&first.sequential_state)).unwrap();
        let p2 = second.metrics[0].arms[1].p_always_valid.unwrap();
        assert!(fresh.p > p1.p);
        assert_eq!(p2, p1);
        assert_eq!(second.look, 2);
        // The state survives JSON.
        let json = serde_json::to_string(&second.sequential_state).unwrap();
        let back: SequentialState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.looks, 2);
        let (x, y) = (back.entries[0].ln_p_always_valid, second.sequential_state.entries[0].ln_p_always_valid);
        assert!((x - y).abs() < 1e-12);
    }

    #[test]
    fn empty_and_constant_data_give_reason_codes_not_nan() {
        let a = run(&one_period(&[(0, 0), (0, 0)]));
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
        let row = &a.metrics[0].arms[1];
        assert_eq!(row.mean, None);
        assert_eq!(row.mean_reason.as_deref(), Some("insufficient_sample"));
        assert_eq!(row.uplift_absolute.as_ref().unwrap().reason.as_deref(), Some("insufficient_sample"));
        assert_eq!(a.srm.reason.as_deref(), Some("empty_sample"));
        assert_eq!(a.decision.state, DecisionState::Collecting);

        // No conversions at all: zero variance.
        let a = run(&one_period(&[(5_000, 0), (5_000, 0)]));
        let row = &a.metrics[0].arms[1];
        assert_eq!(row.uplift_absolute.as_ref().unwrap().point, Some(0.0));
        assert_eq!(row.p_reason.as_deref(), Some("zero_variance"));
        assert_eq!(row.uplift_relative.as_ref().unwrap().reason.as_deref(), Some("zero_control_mean"));
        assert_eq!(a.metrics[0].arms[0].p_reason.as_deref(), Some("not_applicable"));
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("NaN"));
        let back: Analysis = serde_json::from_str(&json).unwrap();
        assert_eq!(back.decision, a.decision);
    }

    #[test]
    fn inconsistent_shapes_are_errors() {
        let mut input = one_period(&[(10, 1), (10, 1)]);
        input.control = "nobody".into();
        assert!(analyze(&input, None).is_err());
        let mut input = one_period(&[(10, 1), (10, 1)]);
        input.allocation.clear();
        assert!(analyze(&input, None).is_err());
        let mut input = one_period(&[(10, 1), (10, 1)]);
        input.metrics[0].role = MetricRole::Secondary;
        assert!(analyze(&input, None).is_err());
        let mut input = one_period(&[(10, 1), (10, 1)]);
        input.config.alpha = 2.0;
        assert!(analyze(&input, None).is_err());
    }

    #[test]
    fn inconsistent_conversion_sums_are_not_computable() {
        let mut input = one_period(&[(100, 3), (100, 3)]);
        input.cells[0][1][0].sum = 2.5;
        let a = run(&input);
        assert_eq!(a.metrics[0].arms[1].mean_reason.as_deref(), Some("invalid_input"));
        assert_eq!(a.decision.state, DecisionState::NotComputable);
    }

    #[test]
    fn holm_adjusts_across_treatment_arms_and_pbest_uses_seeded_monte_carlo() {
        let a = run(&one_period(&[(20_000, 600), (20_000, 700), (20_000, 640), (20_000, 600)]));
        let m = &a.metrics[0];
        for row in &m.arms[1..] {
            assert!(row.p_holm_adjusted.unwrap() >= row.p_always_valid.unwrap().p);
        }
        assert_eq!(m.bayes_method.as_deref(), Some("monte_carlo"));
        assert_eq!(m.bayes_seed, Some(0));
        let total: f64 = m.arms.iter().map(|r| r.prob_best.unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert_eq!(a.decision.checks.best_arm.as_deref(), Some("t1"));
        assert_eq!(run(&one_period(&[(20_000, 600), (20_000, 700), (20_000, 640), (20_000, 600)])), a);
    }

    #[test]
    fn the_missing_sample_is_projected_at_the_current_effect() {
        let a = run(&one_period(&[(10_000, 300), (10_000, 330)]));
        let needed = a.decision.needed.clone().unwrap();
        assert_eq!(needed.basis, SampleBasis::AlwaysValid);
        assert!(needed.additional_per_arm > 10_000 && needed.total_per_arm > 20_000, "{needed:?}");
        assert!(a
            .decision
            .missing
            .iter()
            .any(|m| m.contains("more mature exposures per arm at the current effect size")));
        // The projection is conservative relative to the fixed-horizon n at 50% power.
        let fixed = fixed_horizon_sample_size(0.03 * 0.97, 0.033 * 0.967, 0.003, 0.05, 0.5).unwrap();
        assert!(needed.total_per_arm as f64 > fixed);
    }

    #[test]
    fn negated_metrics_keep_higher_is_better_in_the_relative_uplift() {
        let mut input = one_period(&[(1, 0), (1, 0)]);
        input.metrics = vec![metric("neg_refunds", MetricKind::Continuous, MetricRole::Primary)];
        let cell = |mean: f64| {
            let mut c = Cell::default();
            for i in 0..1_000 {
                c.observe(mean + if i % 2 == 0 { 0.1 } else { -0.1 }, 0.5, 0.0);
            }
            c
        };
        // Refunds 2.0 vs 1.5 per exposure, negated: treatment is 25% better.
        input.cells = vec![vec![vec![cell(-2.0)], vec![cell(-1.5)]]];
        input.allocation = vec![vec![AllocationCell { observed: 1_000, expected: 1_000.0 }; 2]];
        let a = run(&input);
        let rel = a.metrics[0].arms[1].uplift_relative.as_ref().unwrap().point.unwrap();
        assert!((rel - 0.25).abs() < 1e-9, "{rel}");
    }

    #[test]
    fn immature_exposures_are_shown_separately() {
        let mut input = one_period(&[(1_000, 30), (1_000, 30)]);
        input.immature = vec![vec![conv_cell(50, 1, 0.5), conv_cell(40, 0, 0.5)]];
        let a = run(&input);
        let row = &a.metrics[0].arms[0];
        assert_eq!((row.exposures_mature, row.exposures_immature), (1_000, 50));
        assert_eq!(row.conversions_immature, Some(1));
        assert_eq!(row.immature_mean, Some(0.02));
    }

    #[test]
    fn fixed_horizon_sample_size_matches_the_textbook_formula() {
        // 3% vs 3.15%, alpha 0.05, power 0.8: (1.95996 + 0.84162)² (0.0291 + 0.03050775)/0.0015².
        let n = fixed_horizon_sample_size_conversion(0.03, 0.05, 0.05, 0.8).unwrap();
        let z: f64 = 1.959_963_985 + 0.841_621_234;
        let expected = z * z * (0.03 * 0.97 + 0.0315 * 0.9685) / (0.0015 * 0.0015);
        assert!((n - expected).abs() < 1e-3 * expected, "{n} vs {expected}");
        assert!(fixed_horizon_sample_size(1.0, 1.0, 0.0, 0.05, 0.8).is_err());
    }
}
