//! Multiple-comparison adjustments across arms: Holm's step-down
//! family-wise correction and Benjamini–Hochberg's false-discovery-rate
//! step-up. Adjusted p-values are returned in input order.

use super::error::{StatsError, StatsResult};

fn check(p_values: &[f64]) -> StatsResult<()> {
    match p_values.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        Some(p) => Err(StatsError::invalid("p_values", format!("p-values must lie in [0, 1], got {p}"))),
        None => Ok(()),
    }
}

/// Indices sorting `p` ascending (stable, so ties keep input order).
fn ascending(p: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    order
}

/// Holm–Bonferroni adjusted p-values: with p₍₁₎ ≤ … ≤ p₍ₘ₎,
/// adj₍ᵢ₎ = max_{j ≤ i} min(1, (m - j + 1) p₍ⱼ₎)
/// (Holm 1979, Scand. J. Statist. 6; statsmodels `multipletests('holm')`).
/// Rejecting adj ≤ α controls the family-wise error rate at α.
pub fn holm(p_values: &[f64]) -> StatsResult<Vec<f64>> {
    check(p_values)?;
    let m = p_values.len();
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0_f64;
    for (rank, &i) in ascending(p_values).iter().enumerate() {
        let value = ((m - rank) as f64 * p_values[i]).min(1.0);
        running = running.max(value);
        adjusted[i] = running;
    }
    Ok(adjusted)
}

/// Benjamini–Hochberg adjusted p-values (q-values): with p₍₁₎ ≤ … ≤ p₍ₘ₎,
/// adj₍ᵢ₎ = min_{j ≥ i} min(1, m p₍ⱼ₎ / j)
/// (Benjamini & Hochberg 1995, JRSS B 57; statsmodels `fdr_bh`).
pub fn benjamini_hochberg(p_values: &[f64]) -> StatsResult<Vec<f64>> {
    check(p_values)?;
    let m = p_values.len();
    let mut adjusted = vec![0.0; m];
    let mut running = 1.0_f64;
    let order = ascending(p_values);
    for (rank, &i) in order.iter().enumerate().rev() {
        let value = (m as f64 * p_values[i] / (rank + 1) as f64).min(1.0);
        running = running.min(value);
        adjusted[i] = running;
    }
    Ok(adjusted)
}

/// Which hypotheses are rejected at level `alpha` given adjusted p-values.
pub fn rejected(adjusted: &[f64], alpha: f64) -> Vec<bool> {
    adjusted.iter().map(|&p| p <= alpha).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_is_monotone_in_sorted_order_and_never_below_raw() {
        let p = [0.04, 0.001, 0.5, 0.03, 0.03];
        let adj = holm(&p).unwrap();
        for (a, r) in adj.iter().zip(&p) {
            assert!(a >= r && *a <= 1.0);
        }
        assert!((adj[1] - 0.005).abs() < 1e-15);
    }

    #[test]
    fn adjustments_reject_out_of_range_p_values() {
        assert!(holm(&[0.1, f64::NAN]).is_err());
        assert!(benjamini_hochberg(&[1.2]).is_err());
        assert_eq!(holm(&[]).unwrap(), Vec::<f64>::new());
    }
}
