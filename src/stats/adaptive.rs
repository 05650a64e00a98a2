//! Estimates that stay unbiased under adaptive allocation.
//!
//! - Period-stratified means: a period is a span of fixed allocation; within
//!   it the arms are a randomized experiment, so each arm's period mean is
//!   unbiased for that period; weighting periods by their share of all units
//!   removes the Simpson's-paradox bias of pooling periods whose allocation
//!   and base rate differ (the approach of GrowthBook's and Optimizely's
//!   bandit analyses; Cochran 1977, "Sampling Techniques", §5.2).
//! - Inverse-propensity estimates from logged propensities: IPW
//!   (Horvitz & Thompson 1952) and self-normalised IPW (Hesterberg 1995),
//!   with plug-in variances.

use super::error::{Reason, StatsError, StatsResult};
use super::frequentist::{DiffEstimate, MeanEstimate};
use super::suff::{Moments, WeightedStats};

/// Stratified mean of one arm over periods: with N_p units of all arms in
/// period p and weight W_p = N_p / Σ N_q,
/// m = Σ W_p ȳ_p,  Var(m) = Σ W_p² s_p²/n_p
/// (Cochran 1977, eqs. 5.1 and 5.6); the Satterthwaite term is
/// Σ (W_p² s_p²/n_p)²/(n_p - 1). Periods with N_p = 0 carry no weight; a
/// weighted period where the arm has no units is `empty_stratum`.
pub fn stratified_mean<M: Moments>(arm_periods: &[M], period_units: &[u64]) -> StatsResult<MeanEstimate> {
    if arm_periods.len() != period_units.len() {
        return Err(StatsError::invalid(
            "period_units",
            format!("{} periods of arm data but {} period totals", arm_periods.len(), period_units.len()),
        ));
    }
    let total: u64 = period_units.iter().sum();
    if total == 0 {
        return Err(StatsError::cannot(Reason::EmptySample));
    }
    let total = total as f64;
    let mut mean = 0.0;
    let mut variance = 0.0;
    let mut satterthwaite = Some(0.0);
    for (stats, &units) in arm_periods.iter().zip(period_units) {
        if units == 0 {
            continue;
        }
        let s = stats.summary().map_err(|e| match e.reason() {
            Reason::EmptySample => StatsError::cannot(Reason::EmptyStratum),
            _ => e,
        })?;
        if s.n() > units as f64 {
            return Err(StatsError::invalid("period_units", "an arm has more units than its period"));
        }
        let w = units as f64 / total;
        mean += w * s.mean();
        let v = w * w * s.variance_of_mean();
        variance += v;
        satterthwaite = match satterthwaite {
            Some(acc) if s.n() >= 2.0 => Some(acc + v * v / (s.n() - 1.0)),
            _ => None,
        };
    }
    Ok(MeanEstimate { mean, variance, satterthwaite })
}

/// Absolute difference of period-stratified means (same period weights for
/// both arms; arms independent within a period).
pub fn stratified_difference<M: Moments>(
    control: &[M],
    treatment: &[M],
    period_units: &[u64],
) -> StatsResult<DiffEstimate> {
    let a = stratified_mean(control, period_units)?;
    let b = stratified_mean(treatment, period_units)?;
    Ok(DiffEstimate::absolute(&a, &b))
}

/// Relative difference of period-stratified means (delta method).
pub fn stratified_relative_difference<M: Moments>(
    control: &[M],
    treatment: &[M],
    period_units: &[u64],
) -> StatsResult<DiffEstimate> {
    let a = stratified_mean(control, period_units)?;
    let b = stratified_mean(treatment, period_units)?;
    DiffEstimate::relative(&a, &b)
}

fn check_total(arm: &WeightedStats, total_units: u64) -> StatsResult<f64> {
    if total_units < arm.n() {
        return Err(StatsError::invalid("total_units", "fewer logged units than the arm's own"));
    }
    if total_units < 2 {
        return Err(StatsError::cannot(Reason::InsufficientSample));
    }
    Ok(total_units as f64)
}

/// IPW (Horvitz–Thompson) estimate of an arm's mean outcome from `N` logged
/// units of all arms, Zᵢ = 1{aᵢ = k} yᵢ/πᵢ:
/// μ̂ = Σ wy / N, Var(μ̂) = (Σ w²y² - N μ̂²)/(N(N - 1)) (the sample variance
/// of Z over N units, divided by N; Horvitz & Thompson 1952, JASA 47).
/// Normal reference only (no t degrees of freedom).
pub fn ipw_mean(arm: &WeightedStats, total_units: u64) -> StatsResult<MeanEstimate> {
    let n = check_total(arm, total_units)?;
    let mean = arm.sum_wy() / n;
    let variance = ((arm.sum_w2y2() - n * mean * mean) / (n * (n - 1.0))).max(0.0);
    Ok(MeanEstimate { mean, variance, satterthwaite: None })
}

/// Self-normalised IPW estimate μ̂ = Σ wy / Σ w with the delta-method
/// (sandwich) variance Σ w²(y - μ̂)² / (Σ w)²
/// = (Σw²y² - 2μ̂ Σw²y + μ̂² Σw²)/(Σw)²
/// (Hesterberg 1995, Technometrics 37, §2; Owen 2013, "Monte Carlo theory,
/// methods and examples", §9.2, eq. 9.8).
pub fn snipw_mean(arm: &WeightedStats) -> StatsResult<MeanEstimate> {
    if arm.n() == 0 || arm.sum_w() <= 0.0 {
        return Err(StatsError::cannot(Reason::EmptySample));
    }
    let sw = arm.sum_w();
    let mean = arm.sum_wy() / sw;
    let num = arm.sum_w2y2() - 2.0 * mean * arm.sum_w2y() + mean * mean * arm.sum_w2();
    Ok(MeanEstimate { mean, variance: (num / (sw * sw)).max(0.0), satterthwaite: None })
}

/// IPW difference treatment - control. The arms' Z's live on disjoint units
/// of the same N, so they are negatively correlated:
/// Dᵢ = Zᵢᵇ - Zᵢᵃ, Σ Dᵢ² = Σ_b w²y² + Σ_a w²y², Var = (ΣD² - N d²)/(N(N-1)).
pub fn ipw_difference(
    control: &WeightedStats,
    treatment: &WeightedStats,
    total_units: u64,
) -> StatsResult<DiffEstimate> {
    let n = check_total(&(*control + *treatment), total_units)?;
    let point = (treatment.sum_wy() - control.sum_wy()) / n;
    let sum_d2 = treatment.sum_w2y2() + control.sum_w2y2();
    Ok(DiffEstimate {
        point,
        variance: ((sum_d2 - n * point * point) / (n * (n - 1.0))).max(0.0),
        df: Err(StatsError::cannot(Reason::NotApplicable)),
    })
}

/// SNIPW difference treatment - control; the linearised influence terms of
/// the two arms live on disjoint units and are centred, so the variances add.
pub fn snipw_difference(control: &WeightedStats, treatment: &WeightedStats) -> StatsResult<DiffEstimate> {
    let a = snipw_mean(control)?;
    let b = snipw_mean(treatment)?;
    Ok(DiffEstimate {
        point: b.mean - a.mean,
        variance: a.variance + b.variance,
        df: Err(StatsError::cannot(Reason::NotApplicable)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::suff::{ProportionStats, SampleStats};

    #[test]
    fn stratification_removes_simpsons_paradox() {
        // Period 1: base rate 10%, allocation 50/50 (1000 units each).
        // Period 2: base rate 30%, bandit gives B 90% (1800 vs 200 units).
        // B is 1 point better in both periods.
        let a = [ProportionStats::new(1000, 100).unwrap(), ProportionStats::new(200, 60).unwrap()];
        let b = [ProportionStats::new(1000, 110).unwrap(), ProportionStats::new(1800, 558).unwrap()];
        let units = [2000, 2000];
        let d = stratified_difference(&a, &b, &units).unwrap();
        assert!((d.point - 0.01).abs() < 1e-12);
        // Pooling would claim a much bigger lift.
        let pooled_a: ProportionStats = a.iter().copied().sum();
        let pooled_b: ProportionStats = b.iter().copied().sum();
        assert!(pooled_b.mean().unwrap() - pooled_a.mean().unwrap() > 0.05);
        assert!(d.df.is_ok());
    }

    #[test]
    fn an_arm_missing_from_a_weighted_period_is_an_empty_stratum() {
        let a = [SampleStats::from_values(&[1.0, 2.0]).unwrap(), SampleStats::EMPTY];
        let r = stratified_mean(&a, &[10, 10]);
        assert_eq!(r.unwrap_err().reason(), Reason::EmptyStratum);
    }

    #[test]
    fn ipw_of_a_uniform_logging_policy_is_the_on_policy_mean() {
        // Two arms logged uniformly (π = 1/2), 4 units.
        let a = WeightedStats::EMPTY.observe(1.0, 0.5).unwrap().observe(0.0, 0.5).unwrap();
        let b = WeightedStats::EMPTY.observe(1.0, 0.5).unwrap().observe(1.0, 0.5).unwrap();
        let ma = ipw_mean(&a, 4).unwrap();
        let mb = ipw_mean(&b, 4).unwrap();
        assert!((ma.mean - 0.5).abs() < 1e-15 && (mb.mean - 1.0).abs() < 1e-15);
        let sa = snipw_mean(&a).unwrap();
        assert!((sa.mean - 0.5).abs() < 1e-15);
        let d = ipw_difference(&a, &b, 4).unwrap();
        assert!((d.point - 0.5).abs() < 1e-15);
        // Z_b - Z_a over the 4 units: (-2, 0, 2, 2): mean 0.5, sample var 11/3.
        assert!((d.variance - (11.0 / 3.0) / 4.0).abs() < 1e-12);
        assert_eq!(d.df.unwrap_err().reason(), Reason::NotApplicable);
    }
}
