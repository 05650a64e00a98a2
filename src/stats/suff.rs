//! Sufficient statistics per (arm, metric, period): small immutable values
//! that merge with `+` (merging periods or shards equals the statistics of
//! the union) and derive means and variances as results, never NaN.
//!
//! - [`SampleStats`]: count, sum, sum of squares (continuous metrics);
//! - [`ProportionStats`]: count and conversions (binary metrics);
//! - [`RatioStats`]: numerator and denominator moments (ratio metrics such
//!   as revenue per order, delta method);
//! - [`CupedStats`]: outcome and pre-period covariate moments (CUPED);
//! - [`WeightedStats`]: inverse-propensity-weighted sums (IPW / SNIPW).
//!
//! [`Summary`] (n, mean, per-unit variance) is what the tests consume; every
//! statistics type turns into one through [`Moments::summary`].

use super::error::{finite, Reason, StatsError, StatsResult};
use serde::Serialize;
use std::iter::Sum;
use std::ops::Add;

/// (n, mean, per-unit variance) of one arm: the variance of the arm's mean
/// estimate is `variance / n`. Constructed only through [`Summary::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    n: f64,
    mean: f64,
    variance: f64,
}

impl Summary {
    /// Validates n > 0, a finite mean and a finite non-negative variance.
    pub fn new(n: f64, mean: f64, variance: f64) -> StatsResult<Self> {
        if !(n.is_finite() && n > 0.0) {
            return if n == 0.0 {
                Err(StatsError::cannot(Reason::EmptySample))
            } else {
                Err(StatsError::invalid("n", format!("must be positive, got {n}")))
            };
        }
        finite("mean", mean)?;
        if !(variance.is_finite() && variance >= 0.0) {
            return Err(StatsError::invalid("variance", format!("must be finite and non-negative, got {variance}")));
        }
        Ok(Summary { n, mean, variance })
    }

    /// Number of units.
    pub fn n(&self) -> f64 {
        self.n
    }

    /// Mean per unit.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Per-unit variance.
    pub fn variance(&self) -> f64 {
        self.variance
    }

    /// Variance of the mean, `variance / n`.
    pub fn variance_of_mean(&self) -> f64 {
        self.variance / self.n
    }
}

/// Anything that yields a [`Summary`].
pub trait Moments {
    /// n, mean and per-unit variance, or why they cannot be computed.
    fn summary(&self) -> StatsResult<Summary>;
}

impl Moments for Summary {
    fn summary(&self) -> StatsResult<Summary> {
        Ok(*self)
    }
}

/// Sample variance from sums: (Σy² - (Σy)²/n)/(n - 1). Rounding can make the
/// numerator a tiny negative number when all values are equal; anything
/// within rounding of Σy² is clamped to 0, a larger negative value means the
/// sums are inconsistent.
fn variance_from_sums(n: u64, sum: f64, sum_sq: f64) -> StatsResult<f64> {
    if n == 0 {
        return Err(StatsError::cannot(Reason::EmptySample));
    }
    if n < 2 {
        return Err(StatsError::cannot(Reason::InsufficientSample));
    }
    let nf = n as f64;
    let centered = sum_sq - sum * (sum / nf);
    // Rounding noise of Σy² - (Σy)²/n is up to ~n ε Σy² (naive summation);
    // below that the variance is indistinguishable from 0.
    let noise = (nf * f64::EPSILON).min(1e-9) * sum_sq;
    if centered.abs() <= noise {
        return Ok(0.0);
    }
    if centered < 0.0 {
        return Err(StatsError::invalid("sum_sq", "sum of squares is smaller than sum²/n: inconsistent statistics"));
    }
    Ok(centered / (nf - 1.0))
}

/// Sample covariance from sums: (Σxy - Σx Σy / n)/(n - 1).
fn covariance_from_sums(n: u64, sum_x: f64, sum_y: f64, sum_xy: f64) -> StatsResult<f64> {
    if n == 0 {
        return Err(StatsError::cannot(Reason::EmptySample));
    }
    if n < 2 {
        return Err(StatsError::cannot(Reason::InsufficientSample));
    }
    let nf = n as f64;
    Ok((sum_xy - sum_x * (sum_y / nf)) / (nf - 1.0))
}

// ---------------------------------------------------------------------------
// Continuous metric
// ---------------------------------------------------------------------------

/// Count, sum and sum of squares of a continuous metric.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct SampleStats {
    n: u64,
    sum: f64,
    sum_sq: f64,
}

impl SampleStats {
    /// No observations.
    pub const EMPTY: SampleStats = SampleStats { n: 0, sum: 0.0, sum_sq: 0.0 };

    /// From stored sums; rejects non-finite sums, a negative sum of squares,
    /// and non-zero sums with n = 0.
    pub fn from_parts(n: u64, sum: f64, sum_sq: f64) -> StatsResult<Self> {
        finite("sum", sum)?;
        finite("sum_sq", sum_sq)?;
        if sum_sq < 0.0 {
            return Err(StatsError::invalid("sum_sq", "must be non-negative"));
        }
        if n == 0 && (sum != 0.0 || sum_sq != 0.0) {
            return Err(StatsError::invalid("n", "zero count with non-zero sums"));
        }
        Ok(SampleStats { n, sum, sum_sq })
    }

    /// Statistics of one observation.
    #[inline]
    pub fn one(y: f64) -> StatsResult<Self> {
        finite("y", y)?;
        Ok(SampleStats { n: 1, sum: y, sum_sq: y * y })
    }

    /// These statistics plus one observation.
    #[inline]
    pub fn observe(self, y: f64) -> StatsResult<Self> {
        Ok(self + SampleStats::one(y)?)
    }

    /// Statistics of a slice of observations.
    pub fn from_values(values: &[f64]) -> StatsResult<Self> {
        values.iter().try_fold(SampleStats::EMPTY, |acc, &y| acc.observe(y))
    }

    /// Count.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Σy.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Σy².
    pub fn sum_sq(&self) -> f64 {
        self.sum_sq
    }

    /// Mean Σy/n.
    pub fn mean(&self) -> StatsResult<f64> {
        if self.n == 0 {
            return Err(StatsError::cannot(Reason::EmptySample));
        }
        Ok(self.sum / self.n as f64)
    }

    /// Sample variance with n - 1 in the denominator.
    pub fn variance(&self) -> StatsResult<f64> {
        variance_from_sums(self.n, self.sum, self.sum_sq)
    }
}

impl Add for SampleStats {
    type Output = SampleStats;
    #[inline]
    fn add(self, rhs: SampleStats) -> SampleStats {
        SampleStats { n: self.n + rhs.n, sum: self.sum + rhs.sum, sum_sq: self.sum_sq + rhs.sum_sq }
    }
}

// ---------------------------------------------------------------------------
// Binary metric
// ---------------------------------------------------------------------------

/// Count and conversions of a binary (0/1) metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ProportionStats {
    n: u64,
    conversions: u64,
}

impl ProportionStats {
    /// No observations.
    pub const EMPTY: ProportionStats = ProportionStats { n: 0, conversions: 0 };

    /// Rejects more conversions than units.
    pub fn new(n: u64, conversions: u64) -> StatsResult<Self> {
        if conversions > n {
            return Err(StatsError::invalid("conversions", format!("{conversions} conversions exceed {n} units")));
        }
        Ok(ProportionStats { n, conversions })
    }

    /// These statistics plus one unit that converted or not.
    #[inline]
    pub fn observe(self, converted: bool) -> Self {
        ProportionStats { n: self.n + 1, conversions: self.conversions + u64::from(converted) }
    }

    /// Units.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Conversions.
    pub fn conversions(&self) -> u64 {
        self.conversions
    }

    /// Conversion rate x/n.
    pub fn mean(&self) -> StatsResult<f64> {
        if self.n == 0 {
            return Err(StatsError::cannot(Reason::EmptySample));
        }
        Ok(self.conversions as f64 / self.n as f64)
    }

    /// Bernoulli variance p(1 - p) (the plug-in used by gbstats'
    /// `ProportionStatistic`).
    pub fn variance(&self) -> StatsResult<f64> {
        let p = self.mean()?;
        Ok(p * (1.0 - p))
    }
}

impl Add for ProportionStats {
    type Output = ProportionStats;
    #[inline]
    fn add(self, rhs: ProportionStats) -> ProportionStats {
        ProportionStats { n: self.n + rhs.n, conversions: self.conversions + rhs.conversions }
    }
}

// ---------------------------------------------------------------------------
// Ratio metric
// ---------------------------------------------------------------------------

/// Per-unit numerator N and denominator D of a ratio metric (e.g. revenue
/// and orders per user, for revenue per order): n, ΣN, ΣN², ΣD, ΣD², ΣND.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct RatioStats {
    n: u64,
    sum_num: f64,
    sum_num_sq: f64,
    sum_den: f64,
    sum_den_sq: f64,
    sum_num_den: f64,
}

impl RatioStats {
    /// No observations.
    pub const EMPTY: RatioStats =
        RatioStats { n: 0, sum_num: 0.0, sum_num_sq: 0.0, sum_den: 0.0, sum_den_sq: 0.0, sum_num_den: 0.0 };

    /// From stored sums.
    pub fn from_parts(
        n: u64,
        sum_num: f64,
        sum_num_sq: f64,
        sum_den: f64,
        sum_den_sq: f64,
        sum_num_den: f64,
    ) -> StatsResult<Self> {
        for (field, v) in [
            ("sum_num", sum_num),
            ("sum_num_sq", sum_num_sq),
            ("sum_den", sum_den),
            ("sum_den_sq", sum_den_sq),
            ("sum_num_den", sum_num_den),
        ] {
            finite(field, v)?;
        }
        if sum_num_sq < 0.0 || sum_den_sq < 0.0 {
            return Err(StatsError::invalid("sum_sq", "must be non-negative"));
        }
        Ok(RatioStats { n, sum_num, sum_num_sq, sum_den, sum_den_sq, sum_num_den })
    }

    /// These statistics plus one unit with numerator `num` and denominator
    /// `den`.
    pub fn observe(self, num: f64, den: f64) -> StatsResult<Self> {
        finite("num", num)?;
        finite("den", den)?;
        Ok(self
            + RatioStats {
                n: 1,
                sum_num: num,
                sum_num_sq: num * num,
                sum_den: den,
                sum_den_sq: den * den,
                sum_num_den: num * den,
            })
    }

    /// Units.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Numerator statistics alone.
    pub fn numerator(&self) -> SampleStats {
        SampleStats { n: self.n, sum: self.sum_num, sum_sq: self.sum_num_sq }
    }

    /// Denominator statistics alone.
    pub fn denominator(&self) -> SampleStats {
        SampleStats { n: self.n, sum: self.sum_den, sum_sq: self.sum_den_sq }
    }

    /// Ratio of sums ΣN/ΣD.
    pub fn mean(&self) -> StatsResult<f64> {
        if self.n == 0 {
            return Err(StatsError::cannot(Reason::EmptySample));
        }
        if self.sum_den == 0.0 {
            return Err(StatsError::cannot(Reason::ZeroDenominator));
        }
        Ok(self.sum_num / self.sum_den)
    }

    /// Per-unit delta-method variance of R = μ_N/μ_D, so that the variance of
    /// the ratio estimate is this value divided by n:
    /// σ_N²/μ_D² - 2 μ_N σ_ND/μ_D³ + μ_N² σ_D²/μ_D⁴
    /// (Deng, Knoblich, Lu 2018, "Applying the Delta Method in Metric
    /// Analytics", KDD, §2.2 eq. 3; gbstats `RatioStatistic.variance`).
    pub fn variance(&self) -> StatsResult<f64> {
        let r = self.mean()?;
        let nf = self.n as f64;
        let mu_d = self.sum_den / nf;
        let var_n = variance_from_sums(self.n, self.sum_num, self.sum_num_sq)?;
        let var_d = variance_from_sums(self.n, self.sum_den, self.sum_den_sq)?;
        let cov = covariance_from_sums(self.n, self.sum_num, self.sum_den, self.sum_num_den)?;
        // Written with R = μ_N/μ_D: (σ_N² - 2R σ_ND + R² σ_D²)/μ_D².
        let v = (var_n - 2.0 * r * cov + r * r * var_d) / (mu_d * mu_d);
        Ok(v.max(0.0))
    }
}

impl Add for RatioStats {
    type Output = RatioStats;
    fn add(self, rhs: RatioStats) -> RatioStats {
        RatioStats {
            n: self.n + rhs.n,
            sum_num: self.sum_num + rhs.sum_num,
            sum_num_sq: self.sum_num_sq + rhs.sum_num_sq,
            sum_den: self.sum_den + rhs.sum_den,
            sum_den_sq: self.sum_den_sq + rhs.sum_den_sq,
            sum_num_den: self.sum_num_den + rhs.sum_num_den,
        }
    }
}

// ---------------------------------------------------------------------------
// CUPED
// ---------------------------------------------------------------------------

/// Outcome y and pre-experiment covariate x per unit: n, Σy, Σy², Σx, Σx²,
/// Σxy.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct CupedStats {
    n: u64,
    sum_y: f64,
    sum_y_sq: f64,
    sum_x: f64,
    sum_x_sq: f64,
    sum_xy: f64,
}

impl CupedStats {
    /// No observations.
    pub const EMPTY: CupedStats =
        CupedStats { n: 0, sum_y: 0.0, sum_y_sq: 0.0, sum_x: 0.0, sum_x_sq: 0.0, sum_xy: 0.0 };

    /// From stored sums.
    pub fn from_parts(n: u64, sum_y: f64, sum_y_sq: f64, sum_x: f64, sum_x_sq: f64, sum_xy: f64) -> StatsResult<Self> {
        for (field, v) in
            [("sum_y", sum_y), ("sum_y_sq", sum_y_sq), ("sum_x", sum_x), ("sum_x_sq", sum_x_sq), ("sum_xy", sum_xy)]
        {
            finite(field, v)?;
        }
        if sum_y_sq < 0.0 || sum_x_sq < 0.0 {
            return Err(StatsError::invalid("sum_sq", "must be non-negative"));
        }
        Ok(CupedStats { n, sum_y, sum_y_sq, sum_x, sum_x_sq, sum_xy })
    }

    /// These statistics plus one unit with outcome `y` and covariate `x`.
    pub fn observe(self, y: f64, x: f64) -> StatsResult<Self> {
        finite("y", y)?;
        finite("x", x)?;
        Ok(self + CupedStats { n: 1, sum_y: y, sum_y_sq: y * y, sum_x: x, sum_x_sq: x * x, sum_xy: x * y })
    }

    /// Units.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Outcome statistics alone.
    pub fn outcome(&self) -> SampleStats {
        SampleStats { n: self.n, sum: self.sum_y, sum_sq: self.sum_y_sq }
    }

    /// Covariate statistics alone.
    pub fn covariate(&self) -> SampleStats {
        SampleStats { n: self.n, sum: self.sum_x, sum_sq: self.sum_x_sq }
    }

    /// Sample covariance of x and y.
    pub fn covariance(&self) -> StatsResult<f64> {
        covariance_from_sums(self.n, self.sum_x, self.sum_y, self.sum_xy)
    }
}

impl Add for CupedStats {
    type Output = CupedStats;
    fn add(self, rhs: CupedStats) -> CupedStats {
        CupedStats {
            n: self.n + rhs.n,
            sum_y: self.sum_y + rhs.sum_y,
            sum_y_sq: self.sum_y_sq + rhs.sum_y_sq,
            sum_x: self.sum_x + rhs.sum_x,
            sum_x_sq: self.sum_x_sq + rhs.sum_x_sq,
            sum_xy: self.sum_xy + rhs.sum_xy,
        }
    }
}

// ---------------------------------------------------------------------------
// Propensity-weighted
// ---------------------------------------------------------------------------

/// Inverse-propensity-weighted sums of one arm's logged units, with
/// w = 1/propensity: n, Σw, Σwy, Σwy², Σw², Σw²y, Σw²y². Enough for IPW and
/// self-normalised IPW means, their variances and the effective sample size.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct WeightedStats {
    n: u64,
    sum_w: f64,
    sum_wy: f64,
    sum_wy2: f64,
    sum_w2: f64,
    sum_w2y: f64,
    sum_w2y2: f64,
}

impl WeightedStats {
    /// No observations.
    pub const EMPTY: WeightedStats =
        WeightedStats { n: 0, sum_w: 0.0, sum_wy: 0.0, sum_wy2: 0.0, sum_w2: 0.0, sum_w2y: 0.0, sum_w2y2: 0.0 };

    /// From stored sums.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        n: u64,
        sum_w: f64,
        sum_wy: f64,
        sum_wy2: f64,
        sum_w2: f64,
        sum_w2y: f64,
        sum_w2y2: f64,
    ) -> StatsResult<Self> {
        for (field, v) in [
            ("sum_w", sum_w),
            ("sum_wy", sum_wy),
            ("sum_wy2", sum_wy2),
            ("sum_w2", sum_w2),
            ("sum_w2y", sum_w2y),
            ("sum_w2y2", sum_w2y2),
        ] {
            finite(field, v)?;
        }
        if sum_w < 0.0 || sum_w2 < 0.0 || sum_wy2 < 0.0 || sum_w2y2 < 0.0 {
            return Err(StatsError::invalid("sum_w", "weighted sums of squares must be non-negative"));
        }
        Ok(WeightedStats { n, sum_w, sum_wy, sum_wy2, sum_w2, sum_w2y, sum_w2y2 })
    }

    /// These statistics plus one logged unit with outcome `y` that received
    /// this arm with probability `propensity` ∈ (0, 1].
    #[inline]
    pub fn observe(self, y: f64, propensity: f64) -> StatsResult<Self> {
        finite("y", y)?;
        if !(propensity > 0.0 && propensity <= 1.0) {
            return Err(bad_propensity(propensity));
        }
        let w = 1.0 / propensity;
        let wy = w * y;
        Ok(self
            + WeightedStats {
                n: 1,
                sum_w: w,
                sum_wy: wy,
                sum_wy2: wy * y,
                sum_w2: w * w,
                sum_w2y: w * wy,
                sum_w2y2: wy * wy,
            })
    }

    /// Units of this arm.
    pub fn n(&self) -> u64 {
        self.n
    }
    /// Σw.
    pub fn sum_w(&self) -> f64 {
        self.sum_w
    }
    /// Σwy.
    pub fn sum_wy(&self) -> f64 {
        self.sum_wy
    }
    /// Σwy².
    pub fn sum_wy2(&self) -> f64 {
        self.sum_wy2
    }
    /// Σw².
    pub fn sum_w2(&self) -> f64 {
        self.sum_w2
    }
    /// Σw²y.
    pub fn sum_w2y(&self) -> f64 {
        self.sum_w2y
    }
    /// Σw²y².
    pub fn sum_w2y2(&self) -> f64 {
        self.sum_w2y2
    }

    /// Kish effective sample size (Σw)²/Σw².
    pub fn effective_sample_size(&self) -> StatsResult<f64> {
        if self.n == 0 {
            return Err(StatsError::cannot(Reason::EmptySample));
        }
        Ok(self.sum_w * self.sum_w / self.sum_w2)
    }

    /// Weighted variance of y, Σwy²/Σw - (Σwy/Σw)².
    pub fn weighted_variance(&self) -> StatsResult<f64> {
        if self.n == 0 {
            return Err(StatsError::cannot(Reason::EmptySample));
        }
        let m = self.sum_wy / self.sum_w;
        Ok((self.sum_wy2 / self.sum_w - m * m).max(0.0))
    }
}

#[cold]
#[inline(never)]
fn bad_propensity(propensity: f64) -> StatsError {
    StatsError::invalid("propensity", format!("must lie in (0, 1], got {propensity}"))
}

impl Add for WeightedStats {
    type Output = WeightedStats;
    fn add(self, rhs: WeightedStats) -> WeightedStats {
        WeightedStats {
            n: self.n + rhs.n,
            sum_w: self.sum_w + rhs.sum_w,
            sum_wy: self.sum_wy + rhs.sum_wy,
            sum_wy2: self.sum_wy2 + rhs.sum_wy2,
            sum_w2: self.sum_w2 + rhs.sum_w2,
            sum_w2y: self.sum_w2y + rhs.sum_w2y,
            sum_w2y2: self.sum_w2y2 + rhs.sum_w2y2,
        }
    }
}

/// `Sum` by merging from `EMPTY` with `+`, for every mergeable statistics type.
macro_rules! sum_by_merging {
    ($($t:ty),*) => {$(
        impl Sum for $t {
            fn sum<I: Iterator<Item = $t>>(iter: I) -> $t {
                iter.fold(<$t>::EMPTY, Add::add)
            }
        }
    )*};
}
sum_by_merging!(SampleStats, ProportionStats, RatioStats, CupedStats, WeightedStats);

/// `Moments` from the type's own `mean()` and per-unit `variance()`.
macro_rules! moments_from_mean_and_variance {
    ($($t:ty),*) => {$(
        impl Moments for $t {
            fn summary(&self) -> StatsResult<Summary> {
                Summary::new(self.n as f64, self.mean()?, self.variance()?)
            }
        }
    )*};
}
moments_from_mean_and_variance!(SampleStats, ProportionStats, RatioStats);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn variance_of_an_empty_or_single_sample_says_why() {
        assert_eq!(SampleStats::EMPTY.variance().unwrap_err().reason(), Reason::EmptySample);
        let one = SampleStats::one(3.0).unwrap();
        assert_eq!(one.mean().unwrap(), 3.0);
        assert_eq!(one.variance().unwrap_err().reason(), Reason::InsufficientSample);
    }

    #[test]
    fn constant_values_have_zero_variance_not_a_negative_one() {
        let s = SampleStats::from_values(&[0.1; 1000]).unwrap();
        assert_eq!(s.variance().unwrap(), 0.0);
    }

    #[test]
    fn sample_variance_matches_two_pass_formula() {
        let v = [1.0, 2.0, 4.0, 7.0];
        let s = SampleStats::from_values(&v).unwrap();
        assert!(close(s.mean().unwrap(), 3.5));
        // Σ(y - 3.5)² = 6.25 + 2.25 + 0.25 + 12.25 = 21, /3 = 7.
        assert!(close(s.variance().unwrap(), 7.0));
    }

    #[test]
    fn ratio_metric_variance_matches_delta_method_by_hand() {
        let pairs = [(10.0, 1.0), (0.0, 1.0), (30.0, 2.0), (5.0, 1.0)];
        let s = pairs.iter().try_fold(RatioStats::EMPTY, |acc, &(n, d)| acc.observe(n, d)).unwrap();
        let r = 45.0 / 5.0;
        assert!(close(s.mean().unwrap(), r));
        // Linearisation: z_i = (N_i - r D_i)/μ_D, var = sample var of z.
        let mu_d = 5.0 / 4.0;
        let z: Vec<f64> = pairs.iter().map(|&(n, d)| (n - r * d) / mu_d).collect();
        let zs = SampleStats::from_values(&z).unwrap();
        assert!(close(s.variance().unwrap(), zs.variance().unwrap()));
        assert_eq!(RatioStats::EMPTY.observe(1.0, 0.0).unwrap().mean().unwrap_err().reason(), Reason::ZeroDenominator);
    }

    #[test]
    fn proportions_reject_more_conversions_than_units() {
        assert!(ProportionStats::new(3, 4).is_err());
        let p = ProportionStats::new(10, 3).unwrap();
        assert!(close(p.variance().unwrap(), 0.21));
    }

    fn values() -> impl Strategy<Value = Vec<(f64, f64)>> {
        prop::collection::vec((-1e3..1e3f64, 0.01..1.0f64), 0..40)
    }

    proptest! {
        #[test]
        fn merging_sample_stats_equals_stats_of_the_union(a in values(), b in values()) {
            let ya: Vec<f64> = a.iter().map(|p| p.0).collect();
            let yb: Vec<f64> = b.iter().map(|p| p.0).collect();
            let merged = SampleStats::from_values(&ya).unwrap() + SampleStats::from_values(&yb).unwrap();
            let union: Vec<f64> = ya.iter().chain(&yb).copied().collect();
            let whole = SampleStats::from_values(&union).unwrap();
            prop_assert_eq!(merged.n(), whole.n());
            prop_assert!(close(merged.sum(), whole.sum()));
            prop_assert!(close(merged.sum_sq(), whole.sum_sq()));
            match (merged.variance(), whole.variance()) {
                (Ok(x), Ok(y)) => prop_assert!(close(x, y)),
                (Err(x), Err(y)) => prop_assert_eq!(x, y),
                (x, y) => prop_assert!(false, "{:?} vs {:?}", x, y),
            }
        }

        #[test]
        fn merging_weighted_cuped_ratio_and_proportion_stats_equals_the_union(a in values(), b in values()) {
            let fold_w = |v: &[(f64, f64)]| v.iter().try_fold(WeightedStats::EMPTY, |s, &(y, p)| s.observe(y, p)).unwrap();
            let fold_c = |v: &[(f64, f64)]| v.iter().try_fold(CupedStats::EMPTY, |s, &(y, x)| s.observe(y, x)).unwrap();
            let fold_r = |v: &[(f64, f64)]| v.iter().try_fold(RatioStats::EMPTY, |s, &(y, x)| s.observe(y, x)).unwrap();
            let fold_p = |v: &[(f64, f64)]| v.iter().fold(ProportionStats::EMPTY, |s, &(y, _)| s.observe(y > 0.0));
            let union: Vec<(f64, f64)> = a.iter().chain(&b).copied().collect();

            let (m, u) = (fold_w(&a) + fold_w(&b), fold_w(&union));
            prop_assert_eq!(m.n(), u.n());
            for (x, y) in [(m.sum_w(), u.sum_w()), (m.sum_wy(), u.sum_wy()), (m.sum_wy2(), u.sum_wy2()),
                           (m.sum_w2(), u.sum_w2()), (m.sum_w2y(), u.sum_w2y()), (m.sum_w2y2(), u.sum_w2y2())] {
                prop_assert!((x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())));
            }
            let (m, u) = (fold_c(&a) + fold_c(&b), fold_c(&union));
            prop_assert_eq!(m.n(), u.n());
            prop_assert!(close(m.outcome().sum(), u.outcome().sum()));
            prop_assert!(close(m.covariate().sum_sq(), u.covariate().sum_sq()));
            if let (Ok(x), Ok(y)) = (m.covariance(), u.covariance()) { prop_assert!(close(x, y)); }
            let (m, u) = (fold_r(&a) + fold_r(&b), fold_r(&union));
            prop_assert_eq!(m.n(), u.n());
            if let (Ok(x), Ok(y)) = (m.mean(), u.mean()) { prop_assert!(close(x, y)); }
            prop_assert_eq!(fold_p(&a) + fold_p(&b), fold_p(&union));
        }
    }
}
