//! Fixed-horizon tests from summary statistics: the two-proportion z-test,
//! Welch's t-test, and confidence intervals for the absolute and the
//! relative (delta-method) difference of two arms, t-based (Welch–
//! Satterthwaite degrees of freedom) or normal.
//!
//! Every difference is a [`DiffEstimate`] (point, variance, degrees of
//! freedom) built from two [`MeanEstimate`]s; that is what the period-
//! stratified, CUPED and IPW estimators also produce, so the same interval
//! and p-value code serves all of them.

use super::error::{check_alpha, Reason, StatsError, StatsResult};
use super::special::{normal_quantile, normal_two_sided, student_t_quantile, student_t_two_sided};
use super::suff::{Moments, Summary};
use serde::Serialize;

/// A p-value and its natural logarithm. `p` may underflow to 0 where the
/// evidence is overwhelming; `ln_p` stays finite and is what to compare then.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PValue {
    pub p: f64,
    pub ln_p: f64,
}

impl PValue {
    /// p = 1.
    pub const ONE: PValue = PValue { p: 1.0, ln_p: 0.0 };

    /// From a logarithm (clamped to ≤ 0, i.e. p ≤ 1).
    pub fn from_ln(ln_p: f64) -> PValue {
        let ln_p = ln_p.min(0.0);
        PValue { p: ln_p.exp(), ln_p }
    }

    /// Two-sided normal p-value 2(1 - Φ(|z|)).
    pub fn two_sided_normal(z: f64) -> PValue {
        let (p, ln_p) = normal_two_sided(z);
        PValue { p, ln_p }
    }

    /// Two-sided Student-t p-value 2(1 - F_ν(|t|)).
    pub fn two_sided_t(t: f64, df: f64) -> StatsResult<PValue> {
        let (p, ln_p) = student_t_two_sided(t, df)?;
        Ok(PValue { p, ln_p })
    }

    /// The smaller of two p-values (for running minima).
    pub fn min(self, other: PValue) -> PValue {
        if other.ln_p < self.ln_p {
            other
        } else {
            self
        }
    }
}

/// A closed interval [lower, upper].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

impl Interval {
    /// `center ± half_width`.
    pub fn around(center: f64, half_width: f64) -> Interval {
        Interval { lower: center - half_width, upper: center + half_width }
    }

    /// Whether `x` lies inside.
    pub fn contains(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }

    /// Intersection (for running intersections of confidence sequences);
    /// `None` if empty.
    pub fn intersect(&self, other: &Interval) -> Option<Interval> {
        let lower = self.lower.max(other.lower);
        let upper = self.upper.min(other.upper);
        (lower <= upper).then_some(Interval { lower, upper })
    }
}

/// Estimate of one arm's mean with the variance of that estimate.
///
/// `satterthwaite` is Σᵢ Vᵢ²/νᵢ over the independent variance components
/// (Vᵢ = sᵢ²/nᵢ, νᵢ = nᵢ - 1), the denominator of the Welch–Satterthwaite
/// degrees of freedom; `None` when some component has nᵢ < 2 or the
/// estimator has no t reference distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanEstimate {
    pub mean: f64,
    pub variance: f64,
    pub satterthwaite: Option<f64>,
}

impl MeanEstimate {
    /// Mean and variance s²/n of a plain sample.
    pub fn from_summary(s: &Summary) -> MeanEstimate {
        let v = s.variance_of_mean();
        MeanEstimate { mean: s.mean(), variance: v, satterthwaite: (s.n() >= 2.0).then(|| v * v / (s.n() - 1.0)) }
    }
}

/// Treatment-minus-control difference with its variance and (where defined)
/// Welch–Satterthwaite degrees of freedom.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffEstimate {
    pub point: f64,
    pub variance: f64,
    pub df: Result<f64, StatsError>,
}

/// Welch–Satterthwaite degrees of freedom ν = V²/Σ Vᵢ²/νᵢ
/// (Welch 1947, Biometrika 34; Satterthwaite 1946).
fn satterthwaite_df(a: &MeanEstimate, b: &MeanEstimate) -> StatsResult<f64> {
    let (sa, sb) = match (a.satterthwaite, b.satterthwaite) {
        (Some(sa), Some(sb)) => (sa, sb),
        _ => return Err(StatsError::cannot(Reason::InsufficientSample)),
    };
    let v = a.variance + b.variance;
    let denom = sa + sb;
    if v == 0.0 || denom == 0.0 {
        return Err(StatsError::cannot(Reason::ZeroVariance));
    }
    let df = v * v / denom;
    if df.is_finite() {
        Ok(df)
    } else {
        Err(StatsError::cannot(Reason::Overflow))
    }
}

impl DiffEstimate {
    /// Absolute difference d = m_b - m_a, Var = V_a + V_b (independent arms).
    pub fn absolute(control: &MeanEstimate, treatment: &MeanEstimate) -> DiffEstimate {
        DiffEstimate {
            point: treatment.mean - control.mean,
            variance: control.variance + treatment.variance,
            df: satterthwaite_df(control, treatment),
        }
    }

    /// Relative difference r = (m_b - m_a)/m_a by the delta method:
    /// Var(r) ≈ V_b/m_a² + m_b² V_a/m_a⁴ (first-order Taylor expansion of
    /// m_b/m_a, independent arms; Deng, Knoblich, Lu 2018, KDD, §3; gbstats
    /// `frequentist_variance` with relative=True). The degrees of freedom are
    /// those of the absolute difference, as in gbstats.
    pub fn relative(control: &MeanEstimate, treatment: &MeanEstimate) -> StatsResult<DiffEstimate> {
        let ma = control.mean;
        let mb = treatment.mean;
        if ma == 0.0 {
            return Err(StatsError::cannot(Reason::ZeroControlMean));
        }
        let ma2 = ma * ma;
        let variance = treatment.variance / ma2 + mb * mb * control.variance / (ma2 * ma2);
        if !variance.is_finite() {
            return Err(StatsError::cannot(Reason::Overflow));
        }
        Ok(DiffEstimate { point: (mb - ma) / ma, variance, df: satterthwaite_df(control, treatment) })
    }

    /// Standard error √Var.
    pub fn se(&self) -> f64 {
        self.variance.sqrt()
    }

    /// point / se.
    pub fn statistic(&self) -> StatsResult<f64> {
        if self.variance <= 0.0 {
            return Err(StatsError::cannot(Reason::ZeroVariance));
        }
        Ok(self.point / self.se())
    }

    /// Two-sided normal p-value of H₀: difference = 0.
    pub fn p_value_normal(&self) -> StatsResult<PValue> {
        Ok(PValue::two_sided_normal(self.statistic()?))
    }

    /// Two-sided Student-t p-value with the Welch degrees of freedom.
    pub fn p_value_t(&self) -> StatsResult<PValue> {
        let df = self.df.clone()?;
        PValue::two_sided_t(self.statistic()?, df)
    }

    /// point ± z_{1-α/2} se.
    pub fn ci_normal(&self, alpha: f64) -> StatsResult<Interval> {
        check_alpha(alpha)?;
        if self.variance <= 0.0 {
            return Err(StatsError::cannot(Reason::ZeroVariance));
        }
        let z = normal_quantile(1.0 - alpha / 2.0)?;
        Ok(Interval::around(self.point, z * self.se()))
    }

    /// point ± t_{1-α/2, ν} se.
    pub fn ci_t(&self, alpha: f64) -> StatsResult<Interval> {
        check_alpha(alpha)?;
        let df = self.df.clone()?;
        if self.variance <= 0.0 {
            return Err(StatsError::cannot(Reason::ZeroVariance));
        }
        let t = student_t_quantile(1.0 - alpha / 2.0, df)?;
        Ok(Interval::around(self.point, t * self.se()))
    }
}

/// Absolute difference of two summaries (treatment b minus control a).
pub fn absolute_difference(control: &impl Moments, treatment: &impl Moments) -> StatsResult<DiffEstimate> {
    let a = MeanEstimate::from_summary(&control.summary()?);
    let b = MeanEstimate::from_summary(&treatment.summary()?);
    Ok(DiffEstimate::absolute(&a, &b))
}

/// Relative difference (b - a)/a of two summaries, delta method.
pub fn relative_difference(control: &impl Moments, treatment: &impl Moments) -> StatsResult<DiffEstimate> {
    let a = MeanEstimate::from_summary(&control.summary()?);
    let b = MeanEstimate::from_summary(&treatment.summary()?);
    DiffEstimate::relative(&a, &b)
}

// ---------------------------------------------------------------------------
// Two-proportion z-test
// ---------------------------------------------------------------------------

/// Result of [`two_proportion_ztest`]. The rates are always defined (n > 0);
/// the statistic and p-value are not when the pooled rate is 0 or 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TwoProportionZTest {
    pub p_a: f64,
    pub p_b: f64,
    pub p_pooled: f64,
    pub se_pooled: f64,
    pub z: Result<f64, StatsError>,
    pub p_value: Result<PValue, StatsError>,
}

/// Pooled two-proportion z-test of H₀: p_a = p_b:
/// p = (x_a + x_b)/(n_a + n_b), se = √(p(1-p)(1/n_a + 1/n_b)),
/// z = (p_b - p_a)/se, p-value = 2Φ(-|z|) (statsmodels `proportions_ztest`).
pub fn two_proportion_ztest(x_a: u64, n_a: u64, x_b: u64, n_b: u64) -> StatsResult<TwoProportionZTest> {
    if n_a == 0 || n_b == 0 {
        return Err(StatsError::cannot(Reason::EmptySample));
    }
    if x_a > n_a || x_b > n_b {
        return Err(StatsError::invalid("x", "more conversions than units"));
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let p_a = x_a as f64 / na;
    let p_b = x_b as f64 / nb;
    let p_pooled = (x_a + x_b) as f64 / (na + nb);
    let se_pooled = (p_pooled * (1.0 - p_pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    let z = if se_pooled > 0.0 { Ok((p_b - p_a) / se_pooled) } else { Err(StatsError::cannot(Reason::ZeroVariance)) };
    let p_value = z.clone().map(PValue::two_sided_normal);
    Ok(TwoProportionZTest { p_a, p_b, p_pooled, se_pooled, z, p_value })
}

// ---------------------------------------------------------------------------
// Welch t-test
// ---------------------------------------------------------------------------

/// Result of [`welch_t_test`]: the difference and its standard error are
/// defined for n ≥ 1; t needs se > 0; the degrees of freedom need n ≥ 2 in
/// both arms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WelchTest {
    pub diff: f64,
    pub se_diff: f64,
    pub t: Result<f64, StatsError>,
    pub df: Result<f64, StatsError>,
    pub p_value: Result<PValue, StatsError>,
}

/// Welch's unequal-variance t-test from summary statistics:
/// se² = s_a²/n_a + s_b²/n_b, t = (m_b - m_a)/se,
/// ν = se⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1)),
/// p = 2(1 - F_ν(|t|)) (Welch 1947; scipy `ttest_ind_from_stats`,
/// `equal_var=False`).
pub fn welch_t_test(control: &impl Moments, treatment: &impl Moments) -> StatsResult<WelchTest> {
    let d = absolute_difference(control, treatment)?;
    let t = d.statistic();
    let p_value = d.p_value_t();
    Ok(WelchTest { diff: d.point, se_diff: d.se(), t, df: d.df, p_value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ztest_with_no_conversions_reports_zero_variance_not_a_p_value() {
        let r = two_proportion_ztest(0, 1000, 0, 1000).unwrap();
        assert_eq!(r.se_pooled, 0.0);
        assert_eq!(r.z.unwrap_err().reason(), Reason::ZeroVariance);
        assert_eq!(r.p_value.unwrap_err().reason(), Reason::ZeroVariance);
    }

    #[test]
    fn ztest_at_1e8_units_carries_an_underflowing_p_value_as_a_log() {
        // 2% vs 2.2% at 10^8 units each: z ≈ 98.6, p ≈ e^-4870.
        let r = two_proportion_ztest(2_000_000, 100_000_000, 2_200_000, 100_000_000).unwrap();
        let p = r.p_value.unwrap();
        assert_eq!(p.p, 0.0);
        let z = r.z.unwrap();
        assert!(p.ln_p.is_finite() && p.ln_p < -4_000.0);
        // ln p ≈ ln 2 - z²/2 - ln z - ½ ln 2π - 1/z² (Mills' ratio series).
        let approx =
            std::f64::consts::LN_2 - z * z / 2.0 - z.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln() - 1.0 / (z * z);
        assert!((p.ln_p - approx).abs() < 1e-6);
    }

    #[test]
    fn welch_with_one_unit_per_arm_has_t_but_no_degrees_of_freedom() {
        let a = Summary::new(1.0, 1.0, 1.0).unwrap();
        let b = Summary::new(1.0, 2.0, 1.0).unwrap();
        let w = welch_t_test(&a, &b).unwrap();
        assert!((w.t.unwrap() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-15);
        assert_eq!(w.df.unwrap_err().reason(), Reason::InsufficientSample);
        assert_eq!(w.p_value.unwrap_err().reason(), Reason::InsufficientSample);
    }

    #[test]
    fn welch_at_1e8_units_per_arm_agrees_with_the_normal_limit() {
        let a = Summary::new(1e8, 10.0, 4.0).unwrap();
        let b = Summary::new(1e8, 10.0005, 4.0).unwrap();
        let w = welch_t_test(&a, &b).unwrap();
        let t = w.t.clone().unwrap();
        let pn = PValue::two_sided_normal(t).p;
        let pt = w.p_value.unwrap().p;
        assert!(((pt - pn) / pn).abs() < 1e-6, "{pt} {pn}");
    }

    #[test]
    fn relative_difference_with_zero_control_mean_says_so() {
        let a = Summary::new(10.0, 0.0, 1.0).unwrap();
        let b = Summary::new(10.0, 1.0, 1.0).unwrap();
        assert_eq!(relative_difference(&a, &b).unwrap_err().reason(), Reason::ZeroControlMean);
    }

    #[test]
    fn running_minimum_of_p_values_compares_logs() {
        let a = PValue::from_ln(-800.0);
        let b = PValue::from_ln(-900.0);
        assert_eq!(a.p, 0.0);
        assert_eq!(a.min(b).ln_p, -900.0);
    }
}
