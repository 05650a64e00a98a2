//! Always-valid inference, safe under continuous monitoring:
//!
//! - the mixture sequential probability ratio test (mSPRT) of Johari,
//!   Koomen, Pekelis and Walsh (2017, "Peeking at A/B Tests", KDD) and
//!   Johari, Pekelis and Walsh ("Always Valid Inference", Operations
//!   Research 2022): normal data, normal mixing distribution N(θ₀, τ²),
//!   always-valid p-values as the running minimum of 1/Λₙ, and the
//!   always-valid confidence interval obtained by inverting the test;
//! - the asymptotic confidence sequence used by GrowthBook's gbstats 0.8.0
//!   (`SequentialTwoSidedTTest`; Waudby-Smith, Arnold, Wu, Lindon, Ramdas,
//!   "Time-uniform central limit theory and asymptotic confidence
//!   sequences", arXiv 2103.06476, eqs. 9, 155, 161; the normal mixture of
//!   Howard, Ramdas, McAuliffe, Sekhon 2021, Ann. Statist. 49) tuned by a
//!   planned sample size.
//!
//! All statistics are carried as logarithms: Λ overflows a double long
//! before the evidence stops being meaningful.

use super::error::{check_alpha, finite, Reason, StatsError, StatsResult};
use super::frequentist::{DiffEstimate, Interval, PValue};
use serde::Serialize;

/// One look of the mSPRT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MsprtLook {
    /// Observed difference d = mean_b - mean_a.
    pub diff: f64,
    /// V = var_a/n_a + var_b/n_b.
    pub variance: f64,
    /// ln Λ.
    pub log_lambda: f64,
    /// min(1, 1/Λ) for this look alone.
    pub p_value: PValue,
}

impl MsprtLook {
    /// Λ itself, or `overflow` where it exceeds a double.
    pub fn lambda(&self) -> StatsResult<f64> {
        let l = self.log_lambda.exp();
        if l.is_finite() {
            Ok(l)
        } else {
            Err(StatsError::cannot(Reason::Overflow))
        }
    }
}

fn check_mixture(variance: f64, tau2: f64) -> StatsResult<()> {
    if !(tau2 > 0.0 && tau2.is_finite()) {
        return Err(StatsError::invalid("tau2", format!("must be positive, got {tau2}")));
    }
    if !(variance.is_finite() && variance >= 0.0) {
        return Err(StatsError::invalid("variance", format!("must be non-negative, got {variance}")));
    }
    if variance == 0.0 {
        return Err(StatsError::cannot(Reason::ZeroVariance));
    }
    Ok(())
}

/// mSPRT mixture likelihood ratio for H₀: θ = θ₀ from a difference `diff`
/// with variance `variance` (V) and mixing variance `tau2` (τ²):
///
/// Λ = √(V/(V+τ²)) · exp(τ² (d - θ₀)² / (2V(V+τ²)))
///
/// (Johari, Koomen, Pekelis, Walsh 2017, §4, with 2σ²/n generalised to
/// V = σ_a²/n_a + σ_b²/n_b; identical when n and σ² are equal per arm).
/// The look's p-value is min(1, 1/Λ).
pub fn msprt(diff: f64, variance: f64, tau2: f64, theta0: f64) -> StatsResult<MsprtLook> {
    finite("diff", diff)?;
    finite("theta0", theta0)?;
    check_mixture(variance, tau2)?;
    let v = variance;
    let centered = diff - theta0;
    // ½ ln(V/(V+τ²)) = -½ ln(1 + τ²/V).
    let log_lambda = -0.5 * (tau2 / v).ln_1p() + tau2 * centered * centered / (2.0 * v * (v + tau2));
    Ok(MsprtLook { diff, variance, log_lambda, p_value: PValue::from_ln(-log_lambda) })
}

/// mSPRT for a [`DiffEstimate`].
pub fn msprt_for(est: &DiffEstimate, tau2: f64, theta0: f64) -> StatsResult<MsprtLook> {
    msprt(est.point, est.variance, tau2, theta0)
}

/// Always-valid (1 - α) confidence interval: the θ₀ the mSPRT does not
/// reject at this look, {θ₀ : Λ(θ₀) < 1/α}, i.e.
/// d ± √( V(V+τ²)/τ² · (ln((V+τ²)/V) - 2 ln α) )
/// (Johari, Pekelis, Walsh 2022, §5 "confidence intervals", solved for the
/// normal mixture). Intersect successive intervals for a confidence
/// sequence.
pub fn msprt_ci(diff: f64, variance: f64, tau2: f64, alpha: f64) -> StatsResult<Interval> {
    finite("diff", diff)?;
    check_alpha(alpha)?;
    check_mixture(variance, tau2)?;
    let v = variance;
    let radius2 = v * (v + tau2) / tau2 * ((tau2 / v).ln_1p() - 2.0 * alpha.ln());
    Ok(Interval::around(diff, radius2.sqrt()))
}

/// Running minimum of p-values over looks: pₙ = min(pₙ₋₁, pₙ^look),
/// p₀ = 1 — the always-valid p-value of a sequential test
/// (Johari, Pekelis, Walsh 2022, Prop. 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunningMinimum {
    current: PValue,
}

impl Default for RunningMinimum {
    fn default() -> Self {
        RunningMinimum { current: PValue::ONE }
    }
}

impl RunningMinimum {
    /// Starts at p = 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes from a stored always-valid p-value.
    pub fn resume(current: PValue) -> Self {
        RunningMinimum { current }
    }

    /// Takes one look's p-value; returns the updated always-valid p-value.
    pub fn update(&mut self, look: PValue) -> PValue {
        self.current = self.current.min(look);
        self.current
    }

    /// The always-valid p-value so far.
    pub fn current(&self) -> PValue {
        self.current
    }
}

/// One look of a monitored mSPRT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SequentialLook {
    pub look: MsprtLook,
    /// Running minimum of the looks' p-values so far.
    pub p_always_valid: PValue,
}

/// mSPRT over successive looks `(diff, variance)` (cumulative data at each
/// look), with the always-valid p-value after every look.
pub fn msprt_sequence(looks: &[(f64, f64)], tau2: f64, theta0: f64) -> StatsResult<Vec<SequentialLook>> {
    let mut running = RunningMinimum::new();
    looks
        .iter()
        .map(|&(diff, variance)| {
            let look = msprt(diff, variance, tau2, theta0)?;
            let p_always_valid = running.update(look.p_value);
            Ok(SequentialLook { look, p_always_valid })
        })
        .collect()
}

/// Result of [`confidence_sequence`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConfidenceSequence {
    pub estimate: f64,
    pub variance: f64,
    pub interval: Interval,
    pub p_value: PValue,
}

/// Asymptotic confidence sequence at one look (gbstats 0.8.0
/// `SequentialTwoSidedTTest`), for a difference `est` whose variance is
/// that of the estimate, from `n_total` = n_a + n_b units:
///
/// ρ = √((-2 ln α + ln(1 - 2 ln α)) / tuning_n)   (mixing variance that
///     makes the boundary tightest at `tuning_n` units; Howard et al. 2021,
///     §3.5),
/// s² = Var · N,
/// half-width = √s² · √(2(Nρ² + 1) ln(√(Nρ² + 1)/α) / (Nρ)²)
///     (Waudby-Smith et al., arXiv 2103.06476, eq. 9 / 155),
/// p = min(1, 1/E), ln E = ρ² t² / (2(Nρ² + 1)) - ½ ln(Nρ² + 1),
///     t² = est² N / Var (the e-value of eq. 161).
pub fn confidence_sequence(
    est: &DiffEstimate,
    n_total: f64,
    alpha: f64,
    tuning_n: f64,
) -> StatsResult<ConfidenceSequence> {
    check_alpha(alpha)?;
    finite("estimate", est.point)?;
    if !(n_total > 0.0 && n_total.is_finite()) {
        return Err(StatsError::invalid("n_total", format!("must be positive, got {n_total}")));
    }
    if !(tuning_n > 0.0 && tuning_n.is_finite()) {
        return Err(StatsError::invalid("tuning_n", format!("must be positive, got {tuning_n}")));
    }
    if !(est.variance.is_finite() && est.variance >= 0.0) {
        return Err(StatsError::invalid("variance", "must be finite and non-negative"));
    }
    if est.variance == 0.0 {
        return Err(StatsError::cannot(Reason::ZeroVariance));
    }
    let n = n_total;
    let ln_alpha = alpha.ln();
    let rho2 = (-2.0 * ln_alpha + (-2.0 * ln_alpha).ln_1p()) / tuning_n;
    let k = n * rho2 + 1.0;
    let s2 = est.variance * n;
    // (Nρ)² = N² ρ².
    let half_width = s2.sqrt() * (2.0 * k * (0.5 * k.ln() - ln_alpha) / (n * n * rho2)).sqrt();
    let t2 = est.point * est.point * n / est.variance;
    let ln_e = rho2 * t2 / (2.0 * k) - 0.5 * k.ln();
    Ok(ConfidenceSequence {
        estimate: est.point,
        variance: est.variance,
        interval: Interval::around(est.point, half_width),
        p_value: PValue::from_ln(-ln_e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msprt_p_value_is_one_without_evidence_and_ci_contains_diff() {
        let look = msprt(0.0, 0.01, 0.01, 0.0).unwrap();
        assert_eq!(look.p_value.p, 1.0);
        let ci = msprt_ci(0.3, 0.01, 0.01, 0.05).unwrap();
        assert!(ci.contains(0.3));
        // At the CI boundary Λ(θ₀) = 1/α.
        let edge = msprt(0.3, 0.01, 0.01, ci.lower).unwrap();
        assert!((edge.log_lambda - (1.0f64 / 0.05).ln()).abs() < 1e-10);
    }

    #[test]
    fn msprt_with_zero_variance_cannot_compute() {
        assert_eq!(msprt(0.1, 0.0, 0.01, 0.0).unwrap_err().reason(), Reason::ZeroVariance);
    }

    #[test]
    fn overwhelming_evidence_keeps_a_finite_log_lambda() {
        let look = msprt(0.5, 1e-8, 0.01, 0.0).unwrap();
        assert_eq!(look.lambda().unwrap_err().reason(), Reason::Overflow);
        assert!(look.log_lambda.is_finite());
        assert_eq!(look.p_value.p, 0.0);
        assert!((look.p_value.ln_p + look.log_lambda).abs() < 1e-9);
    }

    #[test]
    fn always_valid_p_never_increases() {
        let looks = [(0.2, 0.02), (0.0, 0.01), (0.3, 0.005), (0.01, 0.002)];
        let seq = msprt_sequence(&looks, 0.01, 0.0).unwrap();
        for w in seq.windows(2) {
            assert!(w[1].p_always_valid.p <= w[0].p_always_valid.p);
        }
    }
}
