//! Simulations that show the analysis engine's decisions can be trusted
//! (`strategist simulate aa|power|drift|srm`). Every scenario is a pure,
//! seeded function: replication r draws from `StdRng` seeded with a hash of
//! (seed, scenario, r), so a report is reproducible from its seed and
//! independent of the number of threads.
//!
//! The engine is fed exactly as the store would feed it: per tick (default 5
//! simulated minutes) the new exposures of each arm are added to the
//! (metric, arm, period) [`Cell`]s with the propensity they were drawn with,
//! and to the period's allocation (observed count, expected = Σ PMF entries
//! over the logged exposures); then [`analyze`] runs with the previous look's
//! sequential state. Outcome maturity is not modelled: every exposure's
//! conversion is known at the next look (the engine's behaviour does not
//! depend on why an exposure is not yet mature).
//!
//! - [`aa`]: two identical arms; share of replications the engine ever
//!   promotes (must be ≤ alpha) against naive fixed-horizon peeking.
//! - [`power`]: a true relative lift; share promoted, median exposures to
//!   promotion against the fixed-horizon sample size.
//! - [`drift`]: a drifting base rate while Thompson sampling (the platform's
//!   own `policy::update_state`) shifts traffic; naive pooled vs
//!   period-stratified estimates against the truth.
//! - [`srm`]: a logging bug that drops a share of one arm's exposures; share
//!   flagged and share promoted.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution, Poisson};
use serde::{Deserialize, Serialize};

use super::engine::{
    analyze, fixed_horizon_sample_size_conversion, AllocationCell, Analysis, AnalysisConfig, AnalysisError,
    AnalysisInput, Cell, DecisionState, MetricInput, MetricKind, MetricRole, SequentialState,
};
use crate::policy::{explore::restrict_and_floor, update_state, ArmFeedback, PolicyError, PolicySpec};

/// Errors of a simulation run.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("invalid simulation parameter `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> SimulationError {
    SimulationError::Invalid { field: field.into(), message: message.into() }
}

/// Shared traffic settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// Simulated days.
    pub days: f64,
    /// Minutes between two analyzer looks.
    pub tick_minutes: f64,
    /// Mean exposures per day and arm under equal allocation (Poisson
    /// arrivals; adaptive scenarios use 2× this in total).
    pub exposures_per_day_per_arm: f64,
    /// Control conversion rate.
    pub conversion_rate: f64,
}

impl Traffic {
    fn ticks(&self) -> usize {
        (self.days * 24.0 * 60.0 / self.tick_minutes).round() as usize
    }

    fn check(&self) -> Result<(), SimulationError> {
        if !(self.days > 0.0 && self.tick_minutes > 0.0 && self.ticks() >= 1) {
            return Err(invalid("days/tick_minutes", "need at least one tick"));
        }
        if !(self.exposures_per_day_per_arm > 0.0 && self.exposures_per_day_per_arm.is_finite()) {
            return Err(invalid("exposures_per_day_per_arm", "must be positive"));
        }
        if !(self.conversion_rate > 0.0 && self.conversion_rate < 1.0) {
            return Err(invalid("conversion_rate", "must lie in (0, 1)"));
        }
        Ok(())
    }

    fn per_tick_total(&self) -> f64 {
        2.0 * self.exposures_per_day_per_arm * self.tick_minutes / (24.0 * 60.0)
    }
}

/// Replications, seed and threads (threads change speed only, never results).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub replications: usize,
    pub seed: u64,
    #[serde(skip)]
    pub threads: usize,
}

/// SplitMix64 finaliser: a hash of the seed, the scenario and the
/// replication (the seed of a replication is a hash, never a counter).
fn replication_seed(seed: u64, scenario: u64, rep: usize) -> u64 {
    let mut z = seed ^ scenario.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (rep as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    for _ in 0..2 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// Receives the number of replications just finished, from whichever worker thread
/// finished them (the CLI draws a progress bar with it; the simulation stays pure).
pub type OnProgress<'a> = &'a (dyn Fn(u64) + Sync);

/// Runs `f(rep)` for every replication on `threads` threads; results in
/// replication order. `progress(1)` follows each finished replication.
fn replicate<T: Send>(
    run: &Run,
    progress: OnProgress<'_>,
    f: impl Fn(usize) -> Result<T, SimulationError> + Sync,
) -> Result<Vec<T>, SimulationError> {
    let f = |r: usize| {
        let out = f(r);
        progress(1);
        out
    };
    let n = run.replications;
    let threads = run.threads.clamp(1, n.max(1));
    if threads == 1 {
        return (0..n).map(&f).collect();
    }
    let f = &f;
    let chunks: Vec<Result<Vec<(usize, T)>, SimulationError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t..n).step_by(threads).map(|r| f(r).map(|x| (r, x))).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(invalid("threads", "a simulation thread panicked"))))
            .collect()
    });
    let mut out: Vec<(usize, T)> = Vec::with_capacity(n);
    for c in chunks {
        out.extend(c?);
    }
    out.sort_by_key(|(r, _)| *r);
    Ok(out.into_iter().map(|(_, x)| x).collect())
}

/// Adds `n` exposures with `conversions` conversions drawn with `propensity`
/// to a conversion-metric cell (the sums `Cell::observe` would build).
fn add_binary(cell: &mut Cell, n: u64, conversions: u64, propensity: f64) {
    let (nf, cf) = (n as f64, conversions as f64);
    let w = 1.0 / propensity;
    cell.n += n;
    cell.sum += cf;
    cell.sum_sq += cf;
    cell.sum_w += w * nf;
    cell.sum_wy += w * cf;
    cell.sum_wy2 += w * cf;
    cell.sum_w2 += w * w * nf;
    cell.sum_w2y += w * w * cf;
    cell.sum_w2y2 += w * w * cf;
}

fn binomial(rng: &mut StdRng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    // n > 0 and p in (0, 1): the constructor cannot fail.
    Binomial::new(n, p).map(|d| d.sample(rng)).unwrap_or(0)
}

fn poisson(rng: &mut StdRng, lambda: f64) -> u64 {
    match Poisson::new(lambda) {
        Ok(d) => {
            let x: f64 = d.sample(rng);
            x as u64
        }
        Err(_) => 0,
    }
}

fn two_arm_input(config: AnalysisConfig) -> AnalysisInput {
    AnalysisInput {
        arms: vec!["control".into(), "treatment".into()],
        control: "control".into(),
        metrics: vec![MetricInput {
            name: "conversion".into(),
            kind: MetricKind::Conversion,
            role: MetricRole::Primary,
            has_covariate: false,
        }],
        periods: vec![1],
        cells: vec![vec![vec![Cell::default()], vec![Cell::default()]]],
        immature: vec![],
        allocation: vec![vec![AllocationCell::default(); 2]],
        contextual: false,
        config,
    }
}

/// Adds one tick of a fixed 50/50 experiment to period `p`: `n` exposures
/// and `c` conversions per arm, of which `logged` are logged.
fn add_tick(input: &mut AnalysisInput, p: usize, n: [u64; 2], c: [u64; 2], pmf: [f64; 2]) {
    let total = n[0] + n[1];
    for a in 0..2 {
        add_binary(&mut input.cells[0][a][p], n[a], c[a], pmf[a]);
        input.allocation[p][a].observed += n[a];
        input.allocation[p][a].expected += total as f64 * pmf[a];
    }
}

fn is_promotion(a: &Analysis) -> bool {
    matches!(&a.decision.state, DecisionState::ReadyToPromote { arm } if arm == "treatment")
}

/// Naive rule: the engine's promotion rule with the fixed-horizon p-value of
/// the look in place of the Holm-adjusted always-valid one.
fn naive_promotion(a: &Analysis, alpha: f64) -> bool {
    let row = &a.metrics[0].arms[1];
    let c = &a.decision.checks;
    row.p_fixed_horizon.is_some_and(|p| p.p < alpha)
        && row.uplift_absolute.as_ref().and_then(|u| u.point).is_some_and(|d| d > 0.0)
        && c.best_arm.as_deref() == Some("treatment")
        && c.min_sample_reached
        && c.srm_ok
}

fn rate(count: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        count as f64 / n as f64
    }
}

/// Binomial standard error of a share.
fn share_se(p: f64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        (p * (1.0 - p) / n as f64).sqrt()
    }
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

// ---------------------------------------------------------------------------
// A/A
// ---------------------------------------------------------------------------

/// A/A scenario settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AaConfig {
    pub run: Run,
    pub traffic: Traffic,
    pub analysis: AnalysisConfig,
}

impl AaConfig {
    /// Two weeks, 5-minute looks, 3,000 exposures per day per arm at 3%.
    pub fn new(replications: usize, seed: u64) -> Self {
        AaConfig {
            run: Run { replications, seed, threads: 1 },
            traffic: Traffic {
                days: 14.0,
                tick_minutes: 5.0,
                exposures_per_day_per_arm: 3_000.0,
                conversion_rate: 0.03,
            },
            analysis: AnalysisConfig::default(),
        }
    }
}

/// A/A figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AaReport {
    pub config: AaConfig,
    pub looks_per_replication: usize,
    pub alpha: f64,
    /// Share of replications in which the engine ever reached
    /// `ready_to_promote` (for any arm).
    pub false_promotion_rate: f64,
    pub false_promotion_rate_se: f64,
    /// Share in which the same rule with the fixed-horizon p-value of each
    /// look ever promoted.
    pub naive_peeking_false_promotion_rate: f64,
    pub naive_peeking_false_promotion_rate_se: f64,
    /// Share in which the Holm-adjusted always-valid p ever fell to alpha,
    /// in either direction (a two-sided type-I error).
    pub always_valid_ever_significant_rate: f64,
    /// Share in which the fixed-horizon p ever fell below alpha, either
    /// direction.
    pub naive_ever_significant_rate: f64,
    /// Share significant (fixed-horizon) at the last look only: the one
    /// planned look, ≈ alpha.
    pub fixed_horizon_final_look_rate: f64,
    /// Share in which the SRM check flagged at some look although nothing
    /// was wrong (the price of checking SRM at every look).
    pub srm_false_flag_rate: f64,
    /// Mean exposures per arm at the end.
    pub mean_exposures_per_arm: f64,
    /// false_promotion_rate ≤ alpha + 2 standard errors.
    pub within_alpha: bool,
}

struct AaRep {
    promoted: bool,
    naive: bool,
    av_sig: bool,
    naive_sig: bool,
    final_sig: bool,
    srm_flag: bool,
    exposures: f64,
}

/// A/A: two identical arms analysed at every tick.
pub fn aa(cfg: &AaConfig) -> Result<AaReport, SimulationError> {
    aa_with_progress(cfg, &|_| {})
}

/// [`aa`], calling `progress` with each finished replication.
pub fn aa_with_progress(cfg: &AaConfig, progress: OnProgress<'_>) -> Result<AaReport, SimulationError> {
    cfg.traffic.check()?;
    let ticks = cfg.traffic.ticks();
    let alpha = cfg.analysis.alpha;
    let reps = replicate(&cfg.run, progress, |r| {
        let mut rng = StdRng::seed_from_u64(replication_seed(cfg.run.seed, 1, r));
        let mut input = two_arm_input(cfg.analysis.clone());
        let mut state: Option<SequentialState> = None;
        let mut out = AaRep {
            promoted: false,
            naive: false,
            av_sig: false,
            naive_sig: false,
            final_sig: false,
            srm_flag: false,
            exposures: 0.0,
        };
        let lambda = cfg.traffic.per_tick_total();
        let p = cfg.traffic.conversion_rate;
        for tick in 0..ticks {
            let total = poisson(&mut rng, lambda);
            let n0 = binomial(&mut rng, total, 0.5);
            let n = [n0, total - n0];
            let c = [binomial(&mut rng, n[0], p), binomial(&mut rng, n[1], p)];
            add_tick(&mut input, 0, n, c, [0.5, 0.5]);
            let a = analyze(&input, state.as_ref())?;
            let row = &a.metrics[0].arms[1];
            out.promoted |= matches!(a.decision.state, DecisionState::ReadyToPromote { .. });
            out.naive |= naive_promotion(&a, alpha);
            out.av_sig |= row.p_holm_adjusted.is_some_and(|p| p <= alpha);
            let fh = row.p_fixed_horizon.is_some_and(|p| p.p < alpha);
            out.naive_sig |= fh;
            out.srm_flag |= a.srm.flagged_now;
            if tick + 1 == ticks {
                out.final_sig = fh;
                out.exposures =
                    0.5 * (a.metrics[0].arms[0].exposures_mature + a.metrics[0].arms[1].exposures_mature) as f64;
            }
            state = Some(a.sequential_state);
        }
        Ok(out)
    })?;
    let n = reps.len();
    let count = |f: fn(&AaRep) -> bool| reps.iter().filter(|r| f(r)).count();
    let fpr = rate(count(|r| r.promoted), n);
    let naive = rate(count(|r| r.naive), n);
    let fpr_se = share_se(fpr, n);
    Ok(AaReport {
        config: cfg.clone(),
        looks_per_replication: ticks,
        alpha,
        false_promotion_rate: fpr,
        false_promotion_rate_se: fpr_se,
        naive_peeking_false_promotion_rate: naive,
        naive_peeking_false_promotion_rate_se: share_se(naive, n),
        always_valid_ever_significant_rate: rate(count(|r| r.av_sig), n),
        naive_ever_significant_rate: rate(count(|r| r.naive_sig), n),
        fixed_horizon_final_look_rate: rate(count(|r| r.final_sig), n),
        srm_false_flag_rate: rate(count(|r| r.srm_flag), n),
        mean_exposures_per_arm: reps.iter().map(|r| r.exposures).sum::<f64>() / n.max(1) as f64,
        within_alpha: fpr <= alpha + 2.0 * share_se(alpha, n),
    })
}

// ---------------------------------------------------------------------------
// Power
// ---------------------------------------------------------------------------

/// Power scenario settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerConfig {
    pub run: Run,
    pub traffic: Traffic,
    /// True relative lift of the treatment (0.05 = +5%).
    pub lift: f64,
    /// Power of the fixed-horizon design it is compared with.
    pub power: f64,
    /// When true, `analysis.sequential_tuning_n` is set to the fixed-horizon
    /// sample of both arms (the planned sample).
    pub tune_to_fixed_horizon: bool,
    pub analysis: AnalysisConfig,
}

impl PowerConfig {
    /// +5% on 3%, 30,000 exposures per day per arm, up to 28 days.
    pub fn new(replications: usize, seed: u64) -> Self {
        PowerConfig {
            run: Run { replications, seed, threads: 1 },
            traffic: Traffic {
                days: 28.0,
                tick_minutes: 5.0,
                exposures_per_day_per_arm: 30_000.0,
                conversion_rate: 0.03,
            },
            lift: 0.05,
            power: 0.8,
            tune_to_fixed_horizon: true,
            analysis: AnalysisConfig::default(),
        }
    }
}

/// Power figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerReport {
    pub config: PowerConfig,
    pub alpha: f64,
    /// Fixed-horizon sample per arm for the same alpha, power and effect.
    pub fixed_horizon_n_per_arm: f64,
    pub sequential_tuning_n: f64,
    /// Share of replications promoting the treatment within the horizon.
    pub promoted_rate: f64,
    pub promoted_rate_se: f64,
    /// Share that promoted control's rival wrongly (never expected here:
    /// the treatment is truly better) or stopped for control.
    pub wrong_decision_rate: f64,
    /// Median mature exposures per arm at promotion, over the replications
    /// that promoted.
    pub median_exposures_per_arm_at_promotion: Option<f64>,
    pub p25_exposures_per_arm_at_promotion: Option<f64>,
    pub p75_exposures_per_arm_at_promotion: Option<f64>,
    /// Exposures per arm at which 80% (the design power) of replications had
    /// promoted, counting the non-promoted as not yet; null if fewer did.
    pub exposures_per_arm_for_design_power: Option<f64>,
    /// Median / fixed-horizon n.
    pub median_ratio_to_fixed_horizon: Option<f64>,
    /// Simulated days to the median promotion.
    pub median_days_to_promotion: Option<f64>,
}

/// Power: a true relative lift, analysed at every tick until promotion or
/// the horizon.
pub fn power(cfg: &PowerConfig) -> Result<PowerReport, SimulationError> {
    power_with_progress(cfg, &|_| {})
}

/// [`power`], calling `progress` with each finished replication.
pub fn power_with_progress(cfg: &PowerConfig, progress: OnProgress<'_>) -> Result<PowerReport, SimulationError> {
    cfg.traffic.check()?;
    let p0 = cfg.traffic.conversion_rate;
    let p1 = p0 * (1.0 + cfg.lift);
    if !(p1 > 0.0 && p1 < 1.0) {
        return Err(invalid("lift", "treatment rate must lie in (0, 1)"));
    }
    let alpha = cfg.analysis.alpha;
    let n_fixed = fixed_horizon_sample_size_conversion(p0, cfg.lift, alpha, cfg.power)
        .map_err(|e| invalid("lift/power", e.to_string()))?;
    let mut analysis = cfg.analysis.clone();
    if cfg.tune_to_fixed_horizon {
        analysis.sequential_tuning_n = (2.0 * n_fixed).ceil();
    }
    let ticks = cfg.traffic.ticks();
    let lambda = cfg.traffic.per_tick_total();
    let per_day = 24.0 * 60.0 / cfg.traffic.tick_minutes;
    // (exposures per arm at promotion, day) or None; wrong decision flag.
    let reps = replicate(&cfg.run, progress, |r| {
        let mut rng = StdRng::seed_from_u64(replication_seed(cfg.run.seed, 2, r));
        let mut input = two_arm_input(analysis.clone());
        let mut state: Option<SequentialState> = None;
        for tick in 0..ticks {
            let total = poisson(&mut rng, lambda);
            let n0 = binomial(&mut rng, total, 0.5);
            let n = [n0, total - n0];
            let c = [binomial(&mut rng, n[0], p0), binomial(&mut rng, n[1], p1)];
            add_tick(&mut input, 0, n, c, [0.5, 0.5]);
            let a = analyze(&input, state.as_ref())?;
            if is_promotion(&a) {
                let arms = &a.metrics[0].arms;
                let e = 0.5 * (arms[0].exposures_mature + arms[1].exposures_mature) as f64;
                return Ok((Some((e, (tick + 1) as f64 / per_day)), false));
            }
            if matches!(a.decision.state, DecisionState::ControlBest | DecisionState::Futile) {
                return Ok((None, true));
            }
            state = Some(a.sequential_state);
        }
        Ok((None, false))
    })?;
    let n = reps.len();
    let mut exposures: Vec<f64> = reps.iter().filter_map(|r| r.0.map(|x| x.0)).collect();
    let mut days: Vec<f64> = reps.iter().filter_map(|r| r.0.map(|x| x.1)).collect();
    exposures.sort_by(f64::total_cmp);
    days.sort_by(f64::total_cmp);
    let promoted = rate(exposures.len(), n);
    let median = quantile(&exposures, 0.5);
    // The power-quantile over all replications (non-promoted = +inf).
    let design = if promoted >= cfg.power && n > 0 {
        let idx = ((cfg.power * n as f64).ceil() as usize).clamp(1, exposures.len()) - 1;
        Some(exposures[idx])
    } else {
        None
    };
    Ok(PowerReport {
        config: cfg.clone(),
        alpha,
        fixed_horizon_n_per_arm: n_fixed.ceil(),
        sequential_tuning_n: analysis.sequential_tuning_n,
        promoted_rate: promoted,
        promoted_rate_se: share_se(promoted, n),
        wrong_decision_rate: rate(reps.iter().filter(|r| r.1).count(), n),
        median_exposures_per_arm_at_promotion: median,
        p25_exposures_per_arm_at_promotion: quantile(&exposures, 0.25),
        p75_exposures_per_arm_at_promotion: quantile(&exposures, 0.75),
        exposures_per_arm_for_design_power: design,
        median_ratio_to_fixed_horizon: median.map(|m| m / n_fixed),
        median_days_to_promotion: quantile(&days, 0.5),
    })
}

// ---------------------------------------------------------------------------
// Drift under adaptive allocation
// ---------------------------------------------------------------------------

/// Drift scenario settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftConfig {
    pub run: Run,
    /// `conversion_rate` is the mean base rate; traffic is 2 ×
    /// `exposures_per_day_per_arm` in total, split by the policy.
    pub traffic: Traffic,
    /// Relative amplitude a of the base rate
    /// r(t) = rate · (1 - a cos(2π t / 7 days)): lowest at the start and
    /// end of the week, highest mid-week.
    pub amplitude: f64,
    /// True absolute uplift of the treatment, the same at every moment.
    pub effect: f64,
    /// Hours between two Thompson re-fits (one period each).
    pub refit_hours: f64,
    /// Exploration floor mixed into the Thompson PMF.
    pub min_propensity: f64,
    /// Monte Carlo draws of the Thompson PMF.
    pub draws: u32,
    pub analysis: AnalysisConfig,
}

impl DriftConfig {
    /// One week, base rate 1.8% → 4.2% → 1.8%, +0.3 points for the
    /// treatment, Thompson re-fitted every 6 hours with a 5% floor,
    /// 20,000 exposures per day in total.
    pub fn new(replications: usize, seed: u64) -> Self {
        DriftConfig {
            run: Run { replications, seed, threads: 1 },
            traffic: Traffic {
                days: 7.0,
                tick_minutes: 5.0,
                exposures_per_day_per_arm: 10_000.0,
                conversion_rate: 0.03,
            },
            amplitude: 0.4,
            effect: 0.003,
            refit_hours: 6.0,
            min_propensity: 0.05,
            draws: crate::policy::MIN_DRAWS,
            analysis: AnalysisConfig::default(),
        }
    }
}

/// Mean and spread of an estimator over replications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimatorSpread {
    pub mean: f64,
    /// Standard deviation over replications.
    pub sd: f64,
    /// mean - truth.
    pub bias: f64,
    /// Monte Carlo standard error of the mean (sd/√reps).
    pub bias_se: f64,
    /// bias / bias_se: |z| ≫ 2 is a real bias.
    pub bias_z: f64,
}

fn spread(values: &[f64], truth: f64) -> EstimatorSpread {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var =
        if values.len() > 1 { values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    let sd = var.sqrt();
    let se = sd / n.sqrt();
    EstimatorSpread {
        mean,
        sd,
        bias: mean - truth,
        bias_se: se,
        bias_z: if se > 0.0 { (mean - truth) / se } else { 0.0 },
    }
}

/// Drift figures (absolute uplift, treatment minus control).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    pub config: DriftConfig,
    pub truth: f64,
    /// Difference of the arms' pooled conversion rates.
    pub naive_pooled: EstimatorSpread,
    /// The engine's period-stratified estimate.
    pub stratified: EstimatorSpread,
    /// Share of replications whose fixed-horizon interval of the stratified
    /// estimate contains the truth.
    pub stratified_fixed_horizon_coverage: f64,
    /// Same for the always-valid interval.
    pub stratified_always_valid_coverage: f64,
    /// Mean share of the treatment's exposures over the week.
    pub mean_treatment_share: f64,
    pub periods: usize,
}

struct DriftRep {
    naive: f64,
    stratified: f64,
    covered_fh: bool,
    covered_av: bool,
    share: f64,
}

/// Drift: adaptive allocation by the platform's Thompson sampling while the
/// base rate drifts.
pub fn drift(cfg: &DriftConfig) -> Result<DriftReport, SimulationError> {
    drift_with_progress(cfg, &|_| {})
}

/// [`drift`], calling `progress` with each finished replication.
pub fn drift_with_progress(cfg: &DriftConfig, progress: OnProgress<'_>) -> Result<DriftReport, SimulationError> {
    cfg.traffic.check()?;
    if !(cfg.amplitude >= 0.0 && cfg.amplitude < 1.0) {
        return Err(invalid("amplitude", "must lie in [0, 1)"));
    }
    let hi = cfg.traffic.conversion_rate * (1.0 + cfg.amplitude) + cfg.effect;
    if !(hi < 1.0 && cfg.traffic.conversion_rate * (1.0 - cfg.amplitude) + cfg.effect.min(0.0) > 0.0) {
        return Err(invalid("effect", "rates must stay in (0, 1)"));
    }
    if !(cfg.refit_hours > 0.0 && cfg.refit_hours.is_finite()) {
        return Err(invalid("refit_hours", "must be positive"));
    }
    let ticks = cfg.traffic.ticks();
    let ticks_per_period = ((cfg.refit_hours * 60.0 / cfg.traffic.tick_minutes).round() as usize).max(1);
    let periods = ticks.div_ceil(ticks_per_period);
    let spec = PolicySpec::ThompsonBeta { prior_alpha: 1.0, prior_beta: 1.0, draws: cfg.draws };
    let keys = vec!["control".to_string(), "treatment".to_string()];
    let week_minutes = 7.0 * 24.0 * 60.0;
    let lambda = cfg.traffic.per_tick_total();
    let reps = replicate(&cfg.run, progress, |r| {
        let rep_seed = replication_seed(cfg.run.seed, 3, r);
        let mut rng = StdRng::seed_from_u64(rep_seed);
        let mut input = two_arm_input(cfg.analysis.clone());
        input.periods = (1..=periods as i64).collect();
        input.cells = vec![vec![vec![Cell::default(); periods]; 2]];
        input.allocation = vec![vec![AllocationCell::default(); 2]; periods];
        let mut feedback = [ArmFeedback::default(); 2];
        let mut pmf = [0.5, 0.5];
        for tick in 0..ticks {
            let period = tick / ticks_per_period;
            if tick % ticks_per_period == 0 {
                // Re-fit on everything so far; the snapshot seed is a hash too.
                let seed = replication_seed(rep_seed, 30, period);
                let state = update_state(&spec, &keys, &feedback, seed)?;
                let floored = restrict_and_floor(&state.pmf, &[true, true], cfg.min_propensity)?;
                pmf = [floored[0], floored[1]];
            }
            let t = (tick as f64 + 0.5) * cfg.traffic.tick_minutes;
            let base = cfg.traffic.conversion_rate
                * (1.0 - cfg.amplitude * (2.0 * std::f64::consts::PI * t / week_minutes).cos());
            let rates = [base, base + cfg.effect];
            let total = poisson(&mut rng, lambda);
            let n0 = binomial(&mut rng, total, pmf[0]);
            let n = [n0, total - n0];
            let c = [binomial(&mut rng, n[0], rates[0]), binomial(&mut rng, n[1], rates[1])];
            add_tick(&mut input, period, n, c, pmf);
            for a in 0..2 {
                feedback[a].n += n[a];
                feedback[a].sum += c[a] as f64;
                feedback[a].sum_sq += c[a] as f64;
            }
        }
        let a = analyze(&input, None)?;
        let row = &a.metrics[0].arms[1];
        let up = row.uplift_absolute.as_ref();
        let stratified =
            up.and_then(|u| u.point).ok_or_else(|| invalid("drift", "stratified estimate not computable"))?;
        let naive = feedback[1].sum / feedback[1].n as f64 - feedback[0].sum / feedback[0].n as f64;
        let truth = cfg.effect;
        Ok(DriftRep {
            naive,
            stratified,
            covered_fh: up.and_then(|u| u.fixed_horizon_interval).is_some_and(|i| i.lower <= truth && truth <= i.upper),
            covered_av: up.and_then(|u| u.always_valid_interval).is_some_and(|i| i.lower <= truth && truth <= i.upper),
            share: feedback[1].n as f64 / (feedback[0].n + feedback[1].n) as f64,
        })
    })?;
    let n = reps.len();
    let naive: Vec<f64> = reps.iter().map(|r| r.naive).collect();
    let strat: Vec<f64> = reps.iter().map(|r| r.stratified).collect();
    Ok(DriftReport {
        config: cfg.clone(),
        truth: cfg.effect,
        naive_pooled: spread(&naive, cfg.effect),
        stratified: spread(&strat, cfg.effect),
        stratified_fixed_horizon_coverage: rate(reps.iter().filter(|r| r.covered_fh).count(), n),
        stratified_always_valid_coverage: rate(reps.iter().filter(|r| r.covered_av).count(), n),
        mean_treatment_share: reps.iter().map(|r| r.share).sum::<f64>() / n.max(1) as f64,
        periods,
    })
}

// ---------------------------------------------------------------------------
// SRM
// ---------------------------------------------------------------------------

/// SRM scenario settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SrmConfig {
    pub run: Run,
    pub traffic: Traffic,
    /// Share of the treatment's exposures the logging bug drops.
    pub drop_share: f64,
    /// The dropped exposures are ones that did not convert (the bug also
    /// fakes a lift, as real logging bugs tend to: it is the case SRM must
    /// catch); false drops them at random.
    pub drop_non_converters: bool,
    pub analysis: AnalysisConfig,
}

impl SrmConfig {
    /// A/A world at 3%, two weeks, 20,000 exposures per day per arm, 3% of
    /// the treatment's non-converting exposures lost.
    pub fn new(replications: usize, seed: u64) -> Self {
        SrmConfig {
            run: Run { replications, seed, threads: 1 },
            traffic: Traffic {
                days: 14.0,
                tick_minutes: 5.0,
                exposures_per_day_per_arm: 20_000.0,
                conversion_rate: 0.03,
            },
            drop_share: 0.03,
            drop_non_converters: true,
            analysis: AnalysisConfig::default(),
        }
    }
}

/// SRM figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SrmReport {
    pub config: SrmConfig,
    /// Share of replications flagged at the last look.
    pub flagged_rate: f64,
    /// Share flagged at some look (the flag is sticky, so this equals
    /// `flagged_rate`).
    pub ever_flagged_rate: f64,
    /// Median logged exposures per arm at the first flag.
    pub median_exposures_per_arm_at_first_flag: Option<f64>,
    /// Median simulated days to the first flag.
    pub median_days_to_first_flag: Option<f64>,
    /// Share that ever reached `ready_to_promote` (must be ~0; a promotion
    /// can only happen before the mismatch is detectable, at the A/A rate).
    pub promoted_rate: f64,
    /// Share that reached `ready_to_promote` at a look after the first flag
    /// (must be 0: a flag blocks promotion).
    pub promoted_after_first_flag_rate: f64,
    /// Share in which every promotion condition but SRM held at some look:
    /// what the bug would have promoted without the SRM check.
    pub would_promote_without_srm_rate: f64,
    /// Mean observed relative uplift at the last look (the bug's fake lift).
    pub mean_observed_relative_uplift: f64,
}

struct SrmRep {
    flagged_end: bool,
    first_flag: Option<(f64, f64)>,
    promoted: bool,
    promoted_after_flag: bool,
    would: bool,
    rel: f64,
}

/// SRM: a logging bug drops a share of the treatment's exposures.
pub fn srm(cfg: &SrmConfig) -> Result<SrmReport, SimulationError> {
    srm_with_progress(cfg, &|_| {})
}

/// [`srm`], calling `progress` with each finished replication.
pub fn srm_with_progress(cfg: &SrmConfig, progress: OnProgress<'_>) -> Result<SrmReport, SimulationError> {
    cfg.traffic.check()?;
    if !(0.0..1.0).contains(&cfg.drop_share) {
        return Err(invalid("drop_share", "must lie in [0, 1)"));
    }
    let ticks = cfg.traffic.ticks();
    let lambda = cfg.traffic.per_tick_total();
    let per_day = 24.0 * 60.0 / cfg.traffic.tick_minutes;
    let p = cfg.traffic.conversion_rate;
    let reps = replicate(&cfg.run, progress, |r| {
        let mut rng = StdRng::seed_from_u64(replication_seed(cfg.run.seed, 4, r));
        let mut input = two_arm_input(cfg.analysis.clone());
        let mut state: Option<SequentialState> = None;
        let mut out = SrmRep {
            flagged_end: false,
            first_flag: None,
            promoted: false,
            promoted_after_flag: false,
            would: false,
            rel: 0.0,
        };
        for tick in 0..ticks {
            let total = poisson(&mut rng, lambda);
            let n0 = binomial(&mut rng, total, 0.5);
            let mut n = [n0, total - n0];
            let c = [binomial(&mut rng, n[0], p), binomial(&mut rng, n[1], p)];
            let dropped = if cfg.drop_non_converters {
                binomial(&mut rng, n[1], cfg.drop_share).min(n[1] - c[1])
            } else {
                binomial(&mut rng, n[1], cfg.drop_share)
            };
            let c1 = if cfg.drop_non_converters {
                c[1]
            } else {
                // Dropped at random: converters are lost in proportion.
                c[1] - binomial(&mut rng, c[1], if n[1] > 0 { dropped as f64 / n[1] as f64 } else { 0.0 })
            };
            n[1] -= dropped;
            add_tick(&mut input, 0, n, [c[0], c1.min(n[1])], [0.5, 0.5]);
            let a = analyze(&input, state.as_ref())?;
            let ch = &a.decision.checks;
            if a.srm.flagged_now && out.first_flag.is_none() {
                let e = 0.5 * (a.srm.observed[0] + a.srm.observed[1]) as f64;
                out.first_flag = Some((e, (tick + 1) as f64 / per_day));
            }
            let promoted = matches!(a.decision.state, DecisionState::ReadyToPromote { .. });
            out.promoted |= promoted;
            out.promoted_after_flag |= promoted && out.first_flag.is_some();
            out.would |= ch.best_arm.as_ref().is_some_and(|b| ch.cleared_arms.contains(b))
                && ch.min_sample_reached
                && ch.guardrails_ok;
            if tick + 1 == ticks {
                out.flagged_end = a.srm.flagged;
                out.rel = a.metrics[0].arms[1].uplift_relative.as_ref().and_then(|u| u.point).unwrap_or(0.0);
            }
            state = Some(a.sequential_state);
        }
        Ok(out)
    })?;
    let n = reps.len();
    let mut first: Vec<f64> = reps.iter().filter_map(|r| r.first_flag.map(|x| x.0)).collect();
    let mut days: Vec<f64> = reps.iter().filter_map(|r| r.first_flag.map(|x| x.1)).collect();
    first.sort_by(f64::total_cmp);
    days.sort_by(f64::total_cmp);
    Ok(SrmReport {
        config: cfg.clone(),
        flagged_rate: rate(reps.iter().filter(|r| r.flagged_end).count(), n),
        ever_flagged_rate: rate(first.len(), n),
        median_exposures_per_arm_at_first_flag: quantile(&first, 0.5),
        median_days_to_first_flag: quantile(&days, 0.5),
        promoted_rate: rate(reps.iter().filter(|r| r.promoted).count(), n),
        promoted_after_first_flag_rate: rate(reps.iter().filter(|r| r.promoted_after_flag).count(), n),
        would_promote_without_srm_rate: rate(reps.iter().filter(|r| r.would).count(), n),
        mean_observed_relative_uplift: reps.iter().map(|r| r.rel).sum::<f64>() / n.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aa_promotes_at_most_alpha_while_naive_peeking_promotes_far_more() {
        // 60 replications x 576 looks (two days at 3,000 exposures per day and arm).
        let mut cfg = AaConfig::new(60, 11);
        cfg.traffic.days = 2.0;
        let r = aa(&cfg).unwrap();
        assert_eq!(r.looks_per_replication, 576);
        // Monte Carlo error at 60 replications: sd of a 5% share ≈ 2.8%.
        assert!(r.false_promotion_rate <= 0.05 + 2.0 * share_se(0.05, 60), "{r:?}");
        assert!(r.naive_ever_significant_rate > 0.15, "{r:?}");
        assert!(r.naive_peeking_false_promotion_rate > r.false_promotion_rate, "{r:?}");
        assert!(r.within_alpha);
    }

    #[test]
    fn power_promotes_a_real_lift() {
        // A +20% lift on 3% (fixed-horizon n ≈ 14,000 per arm) over 3 days of
        // 30,000 exposures per day and arm.
        let mut cfg = PowerConfig::new(12, 5);
        cfg.lift = 0.2;
        cfg.traffic.days = 3.0;
        let r = power(&cfg).unwrap();
        assert!((r.fixed_horizon_n_per_arm - 13_911.0).abs() < 200.0, "{}", r.fixed_horizon_n_per_arm);
        assert!(r.promoted_rate >= 0.75, "{r:?}");
        assert_eq!(r.wrong_decision_rate, 0.0);
        let ratio = r.median_ratio_to_fixed_horizon.unwrap();
        assert!(ratio > 0.3 && ratio < 4.0, "{ratio}");
    }

    #[test]
    fn under_drift_and_thompson_sampling_the_pooled_estimate_is_biased_and_the_stratified_one_is_not() {
        // 8 replications, Thompson re-fitted every 12 hours (each re-fit costs
        // 10,000 posterior draws, the policy's minimum).
        let mut cfg = DriftConfig::new(8, 3);
        cfg.refit_hours = 12.0;
        let r = drift(&cfg).unwrap();
        assert_eq!(r.periods, 14);
        assert!(r.mean_treatment_share > 0.6, "Thompson shifted traffic: {r:?}");
        assert!(r.naive_pooled.bias_z > 4.0, "{:?}", r.naive_pooled);
        assert!(r.stratified.bias_z.abs() < 3.0, "{:?}", r.stratified);
        assert!(r.naive_pooled.bias.abs() > 3.0 * r.stratified.bias.abs());
    }

    #[test]
    fn a_logging_bug_is_flagged_and_never_promoted() {
        // 5 days at 20,000 exposures per day and arm: the expected chi-square
        // is ~45 against a threshold of 10.8, so a miss has probability ~1e-4.
        let mut cfg = SrmConfig::new(6, 9);
        cfg.traffic.days = 5.0;
        let r = srm(&cfg).unwrap();
        assert_eq!(r.ever_flagged_rate, 1.0, "{r:?}");
        assert_eq!(r.promoted_after_first_flag_rate, 0.0);
        assert_eq!(r.promoted_rate, 0.0);
        assert!(r.mean_observed_relative_uplift > 0.0);
    }

    #[test]
    fn reports_depend_on_the_seed_only_not_on_threads() {
        let mut cfg = AaConfig::new(6, 2);
        cfg.traffic.days = 0.5;
        let one = aa(&cfg).unwrap();
        cfg.run.threads = 3;
        let three = aa(&cfg).unwrap();
        assert_eq!(serde_json::to_string(&one).unwrap(), serde_json::to_string(&three).unwrap());
        cfg.run.seed = 3;
        let other = aa(&cfg).unwrap();
        assert_eq!(other.looks_per_replication, one.looks_per_replication);
        assert_ne!(replication_seed(2, 1, 0), replication_seed(3, 1, 0));
    }

    #[test]
    fn progress_counts_every_replication_once_whatever_the_threads() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let mut cfg = SrmConfig::new(7, 4);
        cfg.traffic.days = 0.25;
        cfg.run.threads = 3;
        let done = AtomicU64::new(0);
        let with = srm_with_progress(&cfg, &|n| {
            done.fetch_add(n, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(done.load(Ordering::Relaxed), 7);
        assert_eq!(serde_json::to_string(&with).unwrap(), serde_json::to_string(&srm(&cfg).unwrap()).unwrap());
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let mut cfg = AaConfig::new(1, 1);
        cfg.traffic.conversion_rate = 1.5;
        assert!(aa(&cfg).is_err());
        let mut cfg = SrmConfig::new(1, 1);
        cfg.drop_share = 1.0;
        assert!(srm(&cfg).is_err());
    }
}
