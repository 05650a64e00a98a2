//! Exploration and the draw: restricting a policy's PMF to the eligible arms,
//! mixing in the exploration floor, hashing a request to a seed and drawing
//! the arm.
//!
//! As in Vowpal Wabbit's exploration library, this is pure and separate from
//! learning: a policy produces a PMF, this module turns it into a decision.
//! The seed of a draw is a hash of the request, never a counter, so the same
//! request always gets the same arm and sequential seeds cannot bias draws.
//! The propensity logged with a decision is the entry of the final PMF for
//! the drawn arm, which is exactly the probability with which it was drawn.

use sha2::{Digest, Sha256};

use super::PolicyError;

/// Slack allowed when checking `k * min_propensity <= 1` and the floor
/// guarantee, to absorb floating-point rounding.
pub const FLOOR_TOLERANCE: f64 = 1e-12;

/// `2^-53`, the spacing of the 53-bit grid [`unit_uniform`] maps onto.
const TWO_POW_MINUS_53: f64 = 1.0 / 9_007_199_254_740_992.0;

/// Keeps the eligible arms only, renormalises them (uniform over the
/// eligible arms if their mass is 0), then mixes with the floor `f`:
///
/// `p_i = (1 - k f) q_i + f` for each of the `k` eligible arms, `0` for the
/// others.
///
/// This is the uniform-mixing exploration of Exp3 (Auer, Cesa-Bianchi,
/// Freund & Schapire, "The nonstochastic multiarmed bandit problem", SIAM J.
/// Comput. 2002, §3: `p_i = (1 - gamma) q_i + gamma / K` with `gamma = k f`).
/// The result is renormalised to remove rounding; it sums to 1 and every
/// eligible arm has `p_i >= f - 1e-12`.
///
/// Errors: `eligible.len() != pmf.len()`; `min_propensity` not in [0, 1];
/// a negative or non-finite PMF entry; no eligible arm; `k f > 1`.
pub fn restrict_and_floor(pmf: &[f64], eligible: &[bool], min_propensity: f64) -> Result<Vec<f64>, PolicyError> {
    if eligible.len() != pmf.len() {
        return Err(PolicyError::ArmCountMismatch {
            what: "eligible".into(),
            expected: pmf.len(),
            got: eligible.len(),
        });
    }
    if !(0.0..=1.0).contains(&min_propensity) {
        return Err(PolicyError::param("min_propensity", format!("must lie in [0, 1], got {min_propensity}")));
    }
    if let Some((i, p)) = pmf.iter().enumerate().find(|(_, p)| !(p.is_finite() && **p >= 0.0)) {
        return Err(PolicyError::InvalidPmf { reason: format!("entry {i} is {p}; entries must be finite and >= 0") });
    }
    let k = eligible.iter().filter(|e| **e).count();
    if k == 0 {
        return Err(PolicyError::NoEligibleArm);
    }
    let floor_mass = k as f64 * min_propensity;
    if floor_mass > 1.0 + FLOOR_TOLERANCE {
        return Err(PolicyError::FloorTooHigh { min_propensity, arms: k });
    }
    let mix = (1.0 - floor_mass).max(0.0);

    // Scale by the largest eligible entry before summing so huge (finite)
    // entries cannot overflow the total.
    let max = pmf.iter().zip(eligible).filter(|(_, e)| **e).fold(0.0f64, |m, (p, _)| m.max(*p));
    let mass: f64 =
        if max > 0.0 { pmf.iter().zip(eligible).filter(|(_, e)| **e).map(|(p, _)| p / max).sum() } else { 0.0 };
    let uniform = 1.0 / k as f64;
    let mut out: Vec<f64> = pmf
        .iter()
        .zip(eligible)
        .map(|(p, e)| {
            if !e {
                0.0
            } else {
                let q = if mass > 0.0 { p / max / mass } else { uniform };
                mix * q + min_propensity
            }
        })
        .collect();
    // Total is 1 up to rounding and at least k f > 0 or mix > 0, so positive.
    super::normalise(&mut out);
    Ok(out)
}

/// SHA-256 over length-prefixed parts (`u64` little-endian byte length, then
/// the bytes), first 8 bytes of the digest read little-endian. The length
/// prefixes make the encoding injective, so distinct part lists never share
/// an input.
fn hash_parts(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    // A SHA-256 digest is 32 bytes, so `..8` is in range.
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Stable 64-bit seed of a decision: SHA-256 over the length-prefixed parts
/// `("draw", salt, unit_id, request_id)` (each part: its byte length as `u64`
/// little-endian, then its bytes), first 8 bytes of the digest little-endian. The leading domain tag keeps it independent
/// of [`traffic_bucket`]. Never a counter.
pub fn draw_seed(salt: &str, unit_id: &str, request_id: &str) -> u64 {
    hash_parts(&[b"draw", salt.as_bytes(), unit_id.as_bytes(), request_id.as_bytes()])
}

/// Uniform in [0, 1) from a seed: the top 53 bits as an integer times
/// `2^-53`, i.e. `(seed >> 11) as f64 * 2^-53` — exact (53 bits fit an f64
/// mantissa) and at most `1 - 2^-53`.
pub fn unit_uniform(seed: u64) -> f64 {
    (seed >> 11) as f64 * TWO_POW_MINUS_53
}

/// Inverse-CDF draw: the index of the first arm whose cumulative probability
/// exceeds `u` (`u < p_0 + … + p_i`), skipping arms with `p <= 0` so such an
/// arm is never returned. If rounding leaves `u` at or above the total, the
/// last arm with `p > 0`. `u` should be in [0, 1) (see [`unit_uniform`]).
///
/// Expects a PMF with at least one positive entry (as returned by
/// [`restrict_and_floor`]); otherwise returns 0.
pub fn draw(pmf: &[f64], u: f64) -> usize {
    let mut cumulative = 0.0;
    let mut last_positive = 0;
    for (i, &p) in pmf.iter().enumerate() {
        if p > 0.0 {
            cumulative += p;
            last_positive = i;
            if u < cumulative {
                return i;
            }
        }
    }
    last_positive
}

/// Deterministic bucket in [0, 1) for the traffic share:
/// [`unit_uniform`] of the SHA-256 seed of the length-prefixed parts
/// `("traffic", salt, unit_id)` (encoded as in [`draw_seed`]). It depends on the
/// unit only (not the request), and its domain tag keeps it independent of
/// the draw seed, so being in the experiment does not correlate with the arm.
pub fn traffic_bucket(salt: &str, unit_id: &str) -> f64 {
    unit_uniform(hash_parts(&[b"traffic", salt.as_bytes(), unit_id.as_bytes()]))
}

/// A decision: the drawn arm, its propensity and the full final PMF (to log).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index of the drawn arm.
    pub arm: usize,
    /// `pmf[arm]`: the exact probability with which `arm` was drawn (> 0).
    pub propensity: f64,
    /// The PMF after eligibility and the floor.
    pub pmf: Vec<f64>,
}

/// [`restrict_and_floor`], then [`draw`] with `u = unit_uniform(seed)`
/// (`seed` normally from [`draw_seed`]).
pub fn decide(pmf: &[f64], eligible: &[bool], min_propensity: f64, seed: u64) -> Result<Decision, PolicyError> {
    let pmf = restrict_and_floor(pmf, eligible, min_propensity)?;
    let arm = draw(&pmf, unit_uniform(seed));
    // `pmf` has an entry per arm and at least one eligible (positive) entry,
    // and `draw` returns an index with a positive entry; `get` keeps this
    // panic-free regardless.
    let propensity = pmf.get(arm).copied().ok_or(PolicyError::NoEligibleArm)?;
    Ok(Decision { arm, propensity, pmf })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use statrs::distribution::{ChiSquared, ContinuousCDF};

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn floor_mixes_with_the_restricted_pmf() {
        let p = restrict_and_floor(&[0.5, 0.3, 0.2], &[true, true, false], 0.1).unwrap();
        // q = (0.625, 0.375); p = 0.8 q + 0.1.
        assert!(close(&p, &[0.6, 0.4, 0.0]), "{p:?}");
        assert_eq!(p[2], 0.0);
    }

    #[test]
    fn zero_eligible_mass_becomes_uniform_over_eligible() {
        let p = restrict_and_floor(&[1.0, 0.0, 0.0], &[false, true, true], 0.0).unwrap();
        assert!(close(&p, &[0.0, 0.5, 0.5]), "{p:?}");
    }

    #[test]
    fn floor_of_one_over_k_is_uniform() {
        let p = restrict_and_floor(&[1.0, 0.0, 0.0, 0.0], &[true; 4], 0.25).unwrap();
        assert!(close(&p, &[0.25; 4]), "{p:?}");
        let p = restrict_and_floor(&[1.0; 10], &[true; 10], 0.1).unwrap();
        assert!(close(&p, &[0.1; 10]), "{p:?}");
    }

    #[test]
    fn unnormalised_and_huge_inputs_are_fine() {
        let p = restrict_and_floor(&[f64::MAX, f64::MAX], &[true, true], 0.0).unwrap();
        assert!(close(&p, &[0.5, 0.5]), "{p:?}");
        let p = restrict_and_floor(&[3.0, 1.0], &[true, true], 0.0).unwrap();
        assert!(close(&p, &[0.75, 0.25]), "{p:?}");
    }

    #[test]
    fn restrict_errors() {
        assert_eq!(restrict_and_floor(&[0.5, 0.5], &[false, false], 0.0).unwrap_err(), PolicyError::NoEligibleArm);
        assert_eq!(restrict_and_floor(&[], &[], 0.0).unwrap_err(), PolicyError::NoEligibleArm);
        assert_eq!(
            restrict_and_floor(&[0.5, 0.5, 0.0], &[true; 3], 0.34).unwrap_err(),
            PolicyError::FloorTooHigh { min_propensity: 0.34, arms: 3 }
        );
        // Only eligible arms count towards the floor.
        restrict_and_floor(&[0.5, 0.5, 0.0], &[true, true, false], 0.34).unwrap();
        for bad in [f64::NAN, f64::INFINITY, -0.1] {
            let err = restrict_and_floor(&[0.5, bad], &[true, true], 0.0).unwrap_err();
            assert_eq!(err.code(), "invalid_pmf");
        }
        for bad in [f64::NAN, -0.01, 1.5] {
            let err = restrict_and_floor(&[0.5, 0.5], &[true, true], bad).unwrap_err();
            assert_eq!(err.code(), "invalid_policy_parameter");
        }
        let err = restrict_and_floor(&[0.5, 0.5], &[true], 0.0).unwrap_err();
        assert_eq!(err.code(), "arm_count_mismatch");
    }

    #[test]
    fn draw_picks_the_first_arm_whose_cumulative_probability_exceeds_u() {
        let pmf = [0.2, 0.0, 0.5, 0.3];
        assert_eq!(draw(&pmf, 0.0), 0);
        assert_eq!(draw(&pmf, 0.1999), 0);
        assert_eq!(draw(&pmf, 0.2), 2);
        assert_eq!(draw(&pmf, 0.69), 2);
        assert_eq!(draw(&pmf, 0.7), 3);
        assert_eq!(draw(&pmf, 0.999_999), 3);
    }

    #[test]
    fn draw_never_returns_a_zero_probability_arm() {
        // Leading zeros, and rounding that leaves u above the total.
        assert_eq!(draw(&[0.0, 1.0], 0.0), 1);
        assert_eq!(draw(&[0.3, 0.3, 0.3, 0.0], 0.95), 2);
        assert_eq!(draw(&[0.5, 0.5, 0.0], 1.0), 1);
        assert_eq!(draw(&[0.5, 0.5, 0.0], f64::NAN), 1);
    }

    #[test]
    fn unit_uniform_spans_zero_to_just_below_one() {
        assert_eq!(unit_uniform(0), 0.0);
        assert_eq!(unit_uniform(u64::MAX), 1.0 - TWO_POW_MINUS_53);
        assert!(unit_uniform(u64::MAX) < 1.0);
        assert_eq!(unit_uniform(1 << 63), 0.5);
    }

    #[test]
    fn seeds_are_stable_and_sensitive_to_every_part() {
        let s = draw_seed("salt", "unit-1", "req-1");
        assert_eq!(s, draw_seed("salt", "unit-1", "req-1"));
        assert_ne!(s, draw_seed("salt", "unit-1", "req-2"));
        assert_ne!(s, draw_seed("salt", "unit-2", "req-1"));
        assert_ne!(s, draw_seed("pepper", "unit-1", "req-1"));
        // Length prefixes: moving a boundary changes the seed.
        assert_ne!(draw_seed("ab", "c", "d"), draw_seed("a", "bc", "d"));
        // Golden value: guards against accidental changes of the encoding.
        let mut h = Sha256::new();
        for part in [&b"draw"[..], b"salt", b"unit-1", b"req-1"] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let d = h.finalize();
        let expected = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        assert_eq!(s, expected);
    }

    #[test]
    fn traffic_bucket_is_per_unit_and_independent_of_the_draw() {
        let b = traffic_bucket("salt", "unit-1");
        assert!((0.0..1.0).contains(&b));
        assert_eq!(b, traffic_bucket("salt", "unit-1"));
        assert_ne!(b, traffic_bucket("salt", "unit-2"));
        assert_ne!(b, traffic_bucket("other", "unit-1"));
        assert_ne!(b, unit_uniform(draw_seed("salt", "traffic", "unit-1")));
        // Roughly uniform: 10% share admits about 10% of 20,000 units.
        let admitted = (0..20_000).filter(|i| traffic_bucket("exp-7", &format!("user-{i}")) < 0.1).count();
        assert!((1_800..2_200).contains(&admitted), "{admitted}");
        // Correlation between the bucket and the draw's uniform is ~0.
        let n = 20_000;
        let pairs: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let unit = format!("user-{i}");
                (traffic_bucket("exp-7", &unit), unit_uniform(draw_seed("exp-7", &unit, "r")))
            })
            .collect();
        let mean = |f: &dyn Fn(&(f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / n as f64;
        let cov = mean(&|p| p.0 * p.1) - mean(&|p| p.0) * mean(&|p| p.1);
        // Uniform variance is 1/12; correlation SE ~ 1/sqrt(n) ~ 0.007.
        assert!((cov * 12.0).abs() < 0.03, "{}", cov * 12.0);
    }

    /// Chi-square goodness of fit of `units` draws (seeded by hashed unit ids)
    /// against `pmf`; returns the p-value and the counts.
    fn chi_square_p_value(pmf: &[f64], units: usize, salt: &str) -> (f64, Vec<u64>) {
        let mut counts = vec![0u64; pmf.len()];
        for i in 0..units {
            let seed = draw_seed(salt, &format!("unit-{i}"), "request-0");
            counts[draw(pmf, unit_uniform(seed))] += 1;
        }
        let mut stat = 0.0;
        let mut cells = 0;
        for (&c, &p) in counts.iter().zip(pmf) {
            if p > 0.0 {
                let expected = p * units as f64;
                stat += (c as f64 - expected).powi(2) / expected;
                cells += 1;
            }
        }
        let df = (cells - 1) as f64;
        let p_value = ChiSquared::new(df).map(|d| d.sf(stat)).unwrap();
        (p_value, counts)
    }

    #[test]
    fn empirical_frequencies_match_the_pmf() {
        let base: [&[f64]; 4] = [
            &[0.25, 0.25, 0.25, 0.25],
            &[0.7, 0.1, 0.05, 0.0, 0.15],
            &[0.01, 0.02, 0.03, 0.04, 0.1, 0.2, 0.6],
            &[0.0, 0.999, 0.001],
        ];
        for (j, pmf) in base.iter().enumerate() {
            let mut eligible = vec![true; pmf.len()];
            eligible[0] = j % 2 == 1; // some cases exclude arm 0
            let floored = restrict_and_floor(pmf, &eligible, 0.02).unwrap();
            let (p, counts) = chi_square_p_value(&floored, 20_000, &format!("exp-{j}"));
            assert!(p > 1e-4, "pmf {floored:?}, counts {counts:?}, p = {p}");
            for (c, q) in counts.iter().zip(&floored) {
                if *q == 0.0 {
                    assert_eq!(*c, 0);
                }
            }
        }
    }

    #[test]
    fn decide_returns_the_drawn_arm_and_its_propensity() {
        let d = decide(&[0.6, 0.4, 0.0], &[true, true, true], 0.05, 7).unwrap();
        // 0.85 * (0.6, 0.4, 0) + 0.05.
        assert!(close(&d.pmf, &[0.56, 0.39, 0.05]), "{:?}", d.pmf);
        assert_eq!(d.arm, draw(&d.pmf, unit_uniform(7)));
        assert_eq!(d.propensity, d.pmf[d.arm]);
    }

    /// A PMF-like vector (some zeros) with an eligibility mask that has at
    /// least one eligible arm, and a feasible floor.
    fn case() -> impl Strategy<Value = (Vec<f64>, Vec<bool>, f64)> {
        (1usize..12)
            .prop_flat_map(|k| {
                (
                    proptest::collection::vec(prop_oneof![Just(0.0), 0.0f64..10.0], k),
                    proptest::collection::vec(any::<bool>(), k),
                    0usize..k,
                    0.0f64..=1.0,
                )
            })
            .prop_map(|(pmf, mut eligible, forced, frac)| {
                eligible[forced] = true;
                let k = eligible.iter().filter(|e| **e).count();
                (pmf, eligible, frac / k as f64)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn restricted_pmf_invariants((pmf, eligible, floor) in case()) {
            let p = restrict_and_floor(&pmf, &eligible, floor).unwrap();
            prop_assert_eq!(p.len(), pmf.len());
            prop_assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for (q, e) in p.iter().zip(&eligible) {
                if *e {
                    prop_assert!(*q >= floor - FLOOR_TOLERANCE, "{} < {}", q, floor);
                } else {
                    prop_assert_eq!(*q, 0.0);
                }
            }
        }

        #[test]
        fn drawn_arm_is_eligible_with_its_pmf_probability(
            (pmf, eligible, floor) in case(),
            unit in "[a-z0-9]{1,12}",
            request in "[a-z0-9]{1,12}",
        ) {
            let seed = draw_seed("salt", &unit, &request);
            let d = decide(&pmf, &eligible, floor, seed).unwrap();
            prop_assert!(eligible[d.arm]);
            prop_assert!(d.propensity > 0.0);
            prop_assert_eq!(d.propensity, d.pmf[d.arm]);
            prop_assert_eq!(d.pmf.clone(), restrict_and_floor(&pmf, &eligible, floor).unwrap());
            // Same seed, same arm.
            let again = decide(&pmf, &eligible, floor, draw_seed("salt", &unit, &request)).unwrap();
            prop_assert_eq!(again, d);
        }

        #[test]
        fn draw_never_picks_a_zero_arm(
            pmf in proptest::collection::vec(prop_oneof![Just(0.0), 0.0f64..1.0], 1..10),
            u in 0.0f64..1.0,
        ) {
            prop_assume!(pmf.iter().any(|p| *p > 0.0));
            let i = draw(&pmf, u);
            prop_assert!(pmf[i] > 0.0);
        }

        #[test]
        fn unit_uniform_is_in_unit_interval(seed in any::<u64>()) {
            let u = unit_uniform(seed);
            prop_assert!((0.0..1.0).contains(&u));
        }
    }
}
