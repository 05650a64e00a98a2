//! Sample-ratio mismatch: Pearson's chi-square test of the observed unit
//! counts per arm against expected weights. Under adaptive allocation the
//! expected count of an arm is the sum of the logged propensities of that
//! arm over all exposures (Σᵢ πᵢ(arm)), so the weights are not constants;
//! any non-negative weights are normalised by their sum.

use super::error::{Reason, StatsError, StatsResult};
use super::frequentist::PValue;
use super::special::gamma_q;
use serde::Serialize;

/// Result of [`srm_test`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SrmTest {
    /// E_i = N wᵢ / Σw.
    pub expected_counts: Vec<f64>,
    pub chi2: f64,
    pub df: usize,
    pub p_value: PValue,
}

/// Pearson chi-square goodness of fit: Eᵢ = N wᵢ/Σw,
/// χ² = Σ (Oᵢ - Eᵢ)²/Eᵢ, df = k - 1, p = 1 - F_{χ²_df}(χ²) = Q(df/2, χ²/2)
/// (Pearson 1900; scipy `chisquare`). The p-value is also carried as a log
/// (an SRM at 10⁸ units underflows a double).
pub fn srm_test(observed: &[u64], expected_weights: &[f64]) -> StatsResult<SrmTest> {
    if observed.len() != expected_weights.len() {
        return Err(StatsError::invalid(
            "expected_weights",
            format!("{} observed counts but {} weights", observed.len(), expected_weights.len()),
        ));
    }
    if observed.len() < 2 {
        return Err(StatsError::invalid("observed", "need at least two arms"));
    }
    if let Some(w) = expected_weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(StatsError::invalid(
            "expected_weights",
            format!("weights must be finite and non-negative, got {w}"),
        ));
    }
    let total_w: f64 = expected_weights.iter().sum();
    if total_w <= 0.0 {
        return Err(StatsError::invalid("expected_weights", "weights sum to zero"));
    }
    let total: u64 = observed.iter().sum();
    if total == 0 {
        return Err(StatsError::cannot(Reason::EmptySample));
    }
    let n = total as f64;
    let expected_counts: Vec<f64> = expected_weights.iter().map(|w| n * w / total_w).collect();
    let mut chi2 = 0.0;
    for (&o, &e) in observed.iter().zip(&expected_counts) {
        if e <= 0.0 {
            return Err(StatsError::cannot(Reason::ZeroExpectedCount));
        }
        let d = o as f64 - e;
        chi2 += d * d / e;
    }
    let df = observed.len() - 1;
    let (_, ln_q) = gamma_q(0.5 * df as f64, 0.5 * chi2)?;
    Ok(SrmTest { expected_counts, chi2, df, p_value: PValue::from_ln(ln_q) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srm_with_propensity_sums_as_weights() {
        // Two arms whose logged propensities sum to 300 and 700.
        let r = srm_test(&[310, 690], &[300.0, 700.0]).unwrap();
        assert_eq!(r.expected_counts, vec![300.0, 700.0]);
        assert!((r.chi2 - (100.0 / 300.0 + 100.0 / 700.0)).abs() < 1e-12);
        assert!(r.p_value.p > 0.4);
    }

    #[test]
    fn srm_rejects_an_arm_expected_to_get_nothing() {
        let r = srm_test(&[10, 0], &[1.0, 0.0]);
        assert_eq!(r.unwrap_err().reason(), Reason::ZeroExpectedCount);
    }

    #[test]
    fn gross_srm_at_1e8_units_reports_a_finite_log_p_value() {
        let r = srm_test(&[51_000_000, 49_000_000], &[0.5, 0.5]).unwrap();
        assert_eq!(r.p_value.p, 0.0);
        assert!(r.p_value.ln_p.is_finite() && r.p_value.ln_p < -19_000.0);
    }
}
