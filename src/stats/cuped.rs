//! CUPED variance reduction with a pre-experiment covariate (Deng, Xu,
//! Kohavi, Walker 2013, "Improving the Sensitivity of Online Controlled
//! Experiments by Utilizing Pre-Experiment Data", WSDM, §3.2): the
//! adjusted outcome y - θ(x - E[x]) keeps the treatment effect and has
//! per-unit variance s_y² - 2θ s_xy + θ² s_x², minimal (= s_y²(1 - ρ²)) at
//! θ = cov(x, y)/var(x).

use super::error::{Reason, StatsError, StatsResult};
use super::frequentist::{absolute_difference, DiffEstimate};
use super::suff::{CupedStats, Summary};
use serde::Serialize;

/// θ and the pooled covariate mean used to centre the adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CupedAdjustment {
    pub theta: f64,
    pub covariate_mean: f64,
}

/// θ = cov(x, y)/var(x) estimated on all arms pooled (Deng et al. 2013,
/// §3.2: one θ for all arms keeps the difference of adjusted means unbiased
/// for the difference of outcome means).
pub fn cuped_adjustment(arms: &[CupedStats]) -> StatsResult<CupedAdjustment> {
    let pooled: CupedStats = arms.iter().copied().sum();
    let var_x = pooled.covariate().variance()?;
    if var_x == 0.0 {
        return Err(StatsError::cannot(Reason::ZeroVariance));
    }
    Ok(CupedAdjustment { theta: pooled.covariance()? / var_x, covariate_mean: pooled.covariate().mean()? })
}

impl CupedAdjustment {
    /// Adjusted summary of one arm: mean ȳ - θ(x̄ - x̄_pooled), per-unit
    /// variance s_y² - 2θ s_xy + θ² s_x² (Deng et al. 2013, eq. 4).
    pub fn adjust(&self, arm: &CupedStats) -> StatsResult<Summary> {
        let y = arm.outcome();
        let x = arm.covariate();
        let theta = self.theta;
        let mean = y.mean()? - theta * (x.mean()? - self.covariate_mean);
        let variance = y.variance()? - 2.0 * theta * arm.covariance()? + theta * theta * x.variance()?;
        // A quadratic form of a covariance matrix: non-negative up to rounding.
        Summary::new(y.n() as f64, mean, variance.max(0.0))
    }
}

/// CUPED-adjusted absolute difference (treatment minus control) with θ
/// pooled over both arms.
pub fn cuped_difference(control: &CupedStats, treatment: &CupedStats) -> StatsResult<(CupedAdjustment, DiffEstimate)> {
    let adj = cuped_adjustment(&[*control, *treatment])?;
    let d = absolute_difference(&adj.adjust(control)?, &adj.adjust(treatment)?)?;
    Ok((adj, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::suff::Moments;

    #[test]
    fn cuped_removes_the_variance_explained_by_the_covariate() {
        // y = 2x + small noise: θ ≈ 2 and the adjusted variance is tiny.
        let mut a = CupedStats::EMPTY;
        let mut b = CupedStats::EMPTY;
        for i in 0..200 {
            let x = (i % 17) as f64;
            let noise = if i % 2 == 0 { 0.1 } else { -0.1 };
            a = a.observe(2.0 * x + noise, x).unwrap();
            b = b.observe(2.0 * x + 1.0 - noise, x).unwrap();
        }
        let (adj, d) = cuped_difference(&a, &b).unwrap();
        assert!((adj.theta - 2.0).abs() < 1e-2);
        let raw = absolute_difference(&a.outcome().summary().unwrap(), &b.outcome().summary().unwrap()).unwrap();
        assert!((d.point - 1.0).abs() < 1e-9 && (raw.point - 1.0).abs() < 1e-9);
        assert!(d.variance < raw.variance / 100.0);
    }

    #[test]
    fn constant_covariate_cannot_compute_theta() {
        let a = CupedStats::EMPTY.observe(1.0, 3.0).unwrap().observe(2.0, 3.0).unwrap();
        assert_eq!(cuped_adjustment(&[a]).unwrap_err().reason(), Reason::ZeroVariance);
    }
}
