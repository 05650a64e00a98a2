//! Seeded nonparametric bootstrap (Efron & Tibshirani 1993, "An Introduction to the Bootstrap",
//! Chapter 13, percentile interval) over the estimators' per-row terms.
//!
//! Resample `b` draws `n` row indices with replacement from its own derived seed
//! (`hash(seed, b)`), so intervals are reproducible and independent of the thread count. All
//! estimators share the same resamples. The reward model is not refitted per resample (as in
//! the OBP's `estimate_interval`): the intervals are conditional on the cross-fitted `q̂`, and
//! Switch-DR keeps the threshold chosen on the full sample.

use rand::{Rng, SeedableRng};

use super::estimators::RatioTerms;
use super::seed::{derive, STREAM_BOOTSTRAP};
use super::target::worker_count;
use super::OpeError;

/// Settings of the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapConfig {
    /// Number of resamples B.
    pub resamples: usize,
    pub seed: u64,
    /// Worker threads (results do not depend on it); 0 = available parallelism.
    pub threads: usize,
}

/// The `q`-quantile of sorted `xs` by linear interpolation between order statistics
/// (Hyndman & Fan 1996, definition 7; NumPy's default).
fn quantile_sorted(xs: &[f64], q: f64) -> f64 {
    let h = (xs.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(xs.len() - 1);
    xs[lo] + (h - lo as f64) * (xs[hi] - xs[lo])
}

/// Bootstrap replicates `V̂*_b = Σ_{i ∈ S_b} u_i / Σ_{i ∈ S_b} v_i` of every term set,
/// `result[e][b]`. A replicate whose denominator is zero is NaN.
pub fn replicates(terms: &[RatioTerms], config: &BootstrapConfig) -> Result<Vec<Vec<f64>>, OpeError> {
    let n = terms.first().map(|t| t.numer.len()).unwrap_or(0);
    if n == 0 {
        return Err(OpeError::NotEnoughData { message: "the bootstrap needs at least one row".into() });
    }
    if terms.iter().any(|t| t.numer.len() != n || t.denom.as_ref().is_some_and(|v| v.len() != n)) {
        return Err(OpeError::InvalidConfig { message: "bootstrap term sets differ in length".into() });
    }
    if config.resamples == 0 {
        return Err(OpeError::InvalidConfig { message: "the bootstrap needs at least one resample".into() });
    }
    let n_terms = terms.len();
    let workers = worker_count(config.threads).min(config.resamples);
    let run = |worker: usize| -> Vec<(usize, Vec<f64>)> {
        let mut out = Vec::with_capacity(config.resamples / workers + 1);
        let mut num = vec![0.0; n_terms];
        let mut den = vec![0.0; n_terms];
        for b in (worker..config.resamples).step_by(workers) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(derive(config.seed, STREAM_BOOTSTRAP, b as u64));
            num.fill(0.0);
            den.fill(0.0);
            for _ in 0..n {
                let i = rng.random_range(0..n);
                for (e, t) in terms.iter().enumerate() {
                    num[e] += t.numer[i];
                    den[e] += t.denom.as_ref().map_or(1.0, |v| v[i]);
                }
            }
            let values = num.iter().zip(&den).map(|(&u, &v)| if v > 0.0 { u / v } else { f64::NAN }).collect();
            out.push((b, values));
        }
        out
    };
    let mut result = vec![vec![f64::NAN; config.resamples]; n_terms];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..workers).map(|w| scope.spawn(move || run(w))).collect();
        let mut parts = vec![run(0)];
        for h in handles {
            match h.join() {
                Ok(part) => parts.push(part),
                // A worker only panics on a bug above; re-raise it here.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        for (b, values) in parts.into_iter().flatten() {
            for (e, v) in values.into_iter().enumerate() {
                result[e][b] = v;
            }
        }
    });
    Ok(result)
}

/// Percentile 95% intervals `[q_0.025, q_0.975]` of the bootstrap replicates of every term
/// set. Replicates with a zero denominator are left out; if more than half are, the interval
/// cannot be computed.
pub fn percentile_intervals(terms: &[RatioTerms], config: &BootstrapConfig) -> Result<Vec<[f64; 2]>, OpeError> {
    replicates(terms, config)?
        .into_iter()
        .map(|mut reps| {
            reps.retain(|v| v.is_finite());
            if reps.len() * 2 < config.resamples || reps.is_empty() {
                return Err(OpeError::CannotCompute {
                    what: "bootstrap interval",
                    reason: "most resamples have no row with a positive importance weight".into(),
                });
            }
            reps.sort_by(f64::total_cmp);
            Ok([quantile_sorted(&reps, 0.025), quantile_sorted(&reps, 0.975)])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&xs, 0.0), 1.0);
        assert_eq!(quantile_sorted(&xs, 1.0), 4.0);
        assert!((quantile_sorted(&xs, 0.5) - 2.5).abs() < 1e-15);
        assert!((quantile_sorted(&xs, 0.025) - 1.075).abs() < 1e-12);
    }

    fn mean_terms(values: Vec<f64>) -> RatioTerms {
        RatioTerms { numer: values, denom: None }
    }

    #[test]
    fn bootstrap_is_seeded_and_independent_of_threads() {
        let t = vec![mean_terms((0..200).map(|i| (i % 7) as f64).collect())];
        let c = BootstrapConfig { resamples: 300, seed: 11, threads: 1 };
        let a = percentile_intervals(&t, &c).unwrap();
        let b = percentile_intervals(&t, &BootstrapConfig { threads: 3, ..c }).unwrap();
        assert_eq!(a, b);
        let other = percentile_intervals(&t, &BootstrapConfig { seed: 12, ..c }).unwrap();
        assert_ne!(a, other);
        // Mean 3 (approximately: 200 = 28·7 + 4), standard error ≈ 2/√200 ≈ 0.14.
        assert!(a[0][0] < 3.0 && a[0][1] > 3.0 && a[0][1] - a[0][0] < 1.0);
    }

    #[test]
    fn constant_terms_give_a_degenerate_interval_and_ratios_resample_both_parts() {
        let t = vec![mean_terms(vec![0.5; 50]), RatioTerms { numer: vec![2.0; 50], denom: Some(vec![4.0; 50]) }];
        let c = BootstrapConfig { resamples: 50, seed: 0, threads: 0 };
        let ci = percentile_intervals(&t, &c).unwrap();
        assert_eq!(ci[0], [0.5, 0.5]);
        assert_eq!(ci[1], [0.5, 0.5]);
    }

    #[test]
    fn zero_denominators_cannot_be_computed() {
        let t = vec![RatioTerms { numer: vec![0.0; 10], denom: Some(vec![0.0; 10]) }];
        let c = BootstrapConfig { resamples: 10, seed: 0, threads: 1 };
        assert_eq!(percentile_intervals(&t, &c).unwrap_err().code(), "ope_cannot_compute");
    }
}
