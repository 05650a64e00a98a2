//! Thompson sampling as a PMF: each arm's probability is the posterior
//! probability that it is the best arm.
//!
//! Thompson sampling draws one value from every arm's posterior and plays the
//! argmax (Chapelle & Li, "An Empirical Evaluation of Thompson Sampling",
//! NIPS 2011, Algorithm 2; Russo et al., "A Tutorial on Thompson Sampling",
//! 2018, §3). The probability that it plays arm a is therefore
//! `P(a = argmax_i theta_i | data)` ("randomized probability matching",
//! Scott, "A modern Bayesian look at the multi-armed bandit", ASMBI 2010, §3).
//! We estimate that probability once per snapshot with `draws` seeded Monte
//! Carlo draws, `w_a = (1/D) sum_d 1[a = argmax_i theta_i^(d)]` (Scott 2010,
//! §3), with exact ties sharing the draw's unit of mass. Drawing the
//! decision from `w` instead of sampling posteriors per request keeps every
//! logged propensity exact.
//!
//! Posteriors:
//! - Beta-Bernoulli (Chapelle & Li 2011, Algorithm 2): prior `Beta(a0, b0)`,
//!   `s` conversions in `n` exposures give `Beta(a0 + s, b0 + n - s)`.
//! - Gaussian, Normal prior `N(mu0, sd0^2)` on the arm's mean with a Normal
//!   likelihood of known variance `sigma^2` (Gelman et al., "Bayesian Data
//!   Analysis", 3rd ed., §2.5; Murphy, "Conjugate Bayesian analysis of the
//!   Gaussian distribution", 2007, §2):
//!   `1/sd_n^2 = 1/sd0^2 + n/sigma^2`,
//!   `mu_n = sd_n^2 * (mu0/sd0^2 + sum/sigma^2)` (where `sum = n * mean`).
//!   `sigma^2` is plugged in as the arm's unbiased sample variance. Fallback
//!   when the arm has `n < 2` or zero sample variance: the pooled within-arm
//!   variance `sum_a (n_a - 1) s_a^2 / sum_a (n_a - 1)` over arms with
//!   `n_a >= 2`, or `sd0^2` if that is not positive either.

use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Beta, Distribution, Normal};

use super::{ArmFeedback, ArmState, PolicyError, PolicyState};

/// `Beta(alpha, beta)` posterior parameters of every arm.
pub fn beta_posteriors(prior_alpha: f64, prior_beta: f64, feedback: &[ArmFeedback]) -> Vec<(f64, f64)> {
    feedback
        .iter()
        .map(|fb| {
            let failures = (fb.n as f64 - fb.sum).max(0.0);
            (prior_alpha + fb.sum, prior_beta + failures)
        })
        .collect()
}

/// Per-arm Normal posterior of the mean: `(post_mean, post_sd, obs_sd)`,
/// where `obs_sd` is the likelihood's sigma (sample sd or fallback, see the
/// module docs).
pub fn gaussian_posteriors(prior_mean: f64, prior_sd: f64, feedback: &[ArmFeedback]) -> Vec<(f64, f64, f64)> {
    let prior_var = prior_sd * prior_sd;
    let (pooled_ss, pooled_df) = feedback
        .iter()
        .filter_map(|fb| fb.sample_variance().map(|v| (v, fb.n as f64 - 1.0)))
        .fold((0.0, 0.0), |(ss, df), (v, d)| (ss + v * d, df + d));
    let pooled = if pooled_df > 0.0 { pooled_ss / pooled_df } else { 0.0 };
    let fallback = if pooled.is_finite() && pooled > 0.0 { pooled } else { prior_var };
    let prior_precision = 1.0 / prior_var;
    feedback
        .iter()
        .map(|fb| {
            let obs_var = match fb.sample_variance() {
                Some(v) if v > 0.0 => v,
                _ => fallback,
            };
            let precision = prior_precision + fb.n as f64 / obs_var;
            let post_var = 1.0 / precision;
            let post_mean = post_var * (prior_mean * prior_precision + fb.sum / obs_var);
            (post_mean, post_var.sqrt(), obs_var.sqrt())
        })
        .collect()
}

/// Monte Carlo estimate of `P(arm a has the largest draw)` from `draws`
/// draws of every distribution, seeded with `StdRng::seed_from_u64(seed)`.
/// Arms are sampled in order within each draw, so the result is a pure
/// function of the inputs (for a given `rand` version). Exact ties share the
/// draw's unit of mass equally. Sums to 1.
pub fn prob_best<D: Distribution<f64>>(dists: &[D], draws: u32, seed: u64) -> Vec<f64> {
    let k = dists.len();
    if k <= 1 {
        return vec![1.0; k];
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut wins = vec![0.0f64; k];
    let mut sample = vec![0.0f64; k];
    for _ in 0..draws {
        let mut best = f64::NEG_INFINITY;
        let mut best_arm = usize::MAX;
        let mut ties = 0u32;
        for (i, d) in dists.iter().enumerate() {
            let x = d.sample(&mut rng);
            sample[i] = x;
            if x > best {
                best = x;
                best_arm = i;
                ties = 1;
            } else if x == best {
                ties += 1;
            }
        }
        if ties == 1 {
            wins[best_arm] += 1.0;
        } else if ties > 1 {
            let share = 1.0 / f64::from(ties);
            for (w, x) in wins.iter_mut().zip(&sample) {
                if *x == best {
                    *w += share;
                }
            }
        }
    }
    let total: f64 = wins.iter().sum();
    if total <= 0.0 {
        return vec![1.0 / k as f64; k];
    }
    for w in &mut wins {
        *w /= total;
    }
    wins
}

/// True when every element equals the first: then by symmetry each arm is
/// best with probability exactly `1/k`, and no Monte Carlo is needed.
fn all_equal<T: PartialEq>(items: &[T]) -> bool {
    items.windows(2).all(|w| w[0] == w[1])
}

/// Snapshot for `thompson_beta`. Expects validated priors and binary feedback.
pub fn beta_state(
    prior_alpha: f64,
    prior_beta: f64,
    draws: u32,
    feedback: &[ArmFeedback],
    seed: u64,
) -> Result<PolicyState, PolicyError> {
    let posteriors = beta_posteriors(prior_alpha, prior_beta, feedback);
    let arms = feedback
        .iter()
        .zip(&posteriors)
        .map(|(fb, &(a, b))| {
            let s = a + b;
            ArmState {
                alpha: Some(a),
                beta: Some(b),
                post_mean: Some(a / s),
                post_sd: Some((a * b / (s * s * (s + 1.0))).sqrt()),
                ..ArmState::empirical(fb)
            }
        })
        .collect();
    let k = posteriors.len();
    if all_equal(&posteriors) {
        return Ok(uniform_state(k, arms, seed));
    }
    let dists = posteriors
        .iter()
        .map(|&(a, b)| {
            Beta::new(a, b).map_err(|e| PolicyError::param("prior_alpha/prior_beta", format!("Beta({a}, {b}): {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PolicyState { pmf: prob_best(&dists, draws, seed), arms, seed, draws })
}

/// Snapshot for `thompson_gaussian`. Expects validated priors and finite
/// feedback.
pub fn gaussian_state(
    prior_mean: f64,
    prior_sd: f64,
    draws: u32,
    feedback: &[ArmFeedback],
    seed: u64,
) -> Result<PolicyState, PolicyError> {
    let posteriors = gaussian_posteriors(prior_mean, prior_sd, feedback);
    let arms = feedback
        .iter()
        .zip(&posteriors)
        .map(|(fb, &(m, s, obs))| ArmState {
            post_mean: Some(m),
            post_sd: Some(s),
            obs_sd: Some(obs),
            ..ArmState::empirical(fb)
        })
        .collect();
    let k = posteriors.len();
    let params: Vec<(f64, f64)> = posteriors.iter().map(|&(m, s, _)| (m, s)).collect();
    if all_equal(&params) {
        return Ok(uniform_state(k, arms, seed));
    }
    let dists = params
        .iter()
        .map(|&(m, s)| {
            Normal::new(m, s).map_err(|e| PolicyError::param("prior_mean/prior_sd", format!("N({m}, {s}^2): {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PolicyState { pmf: prob_best(&dists, draws, seed), arms, seed, draws })
}

fn uniform_state(k: usize, arms: Vec<ArmState>, seed: u64) -> PolicyState {
    PolicyState { pmf: vec![1.0 / k as f64; k], arms, seed, draws: 0 }
}

#[cfg(test)]
mod tests {
    use super::super::{tests::keys, update_state, PolicySpec, DEFAULT_DRAWS};
    use super::*;

    fn beta_spec() -> PolicySpec {
        PolicySpec::ThompsonBeta { prior_alpha: 1.0, prior_beta: 1.0, draws: DEFAULT_DRAWS }
    }

    fn gaussian_spec() -> PolicySpec {
        PolicySpec::ThompsonGaussian { prior_mean: 0.0, prior_sd: 10.0, draws: DEFAULT_DRAWS }
    }

    fn conv(n: u64, c: u64) -> ArmFeedback {
        ArmFeedback { n, sum: c as f64, sum_sq: c as f64 }
    }

    /// Feedback for n rewards with the given mean and sample sd.
    fn numeric(n: u64, mean: f64, sd: f64) -> ArmFeedback {
        let nf = n as f64;
        ArmFeedback { n, sum: nf * mean, sum_sq: sd * sd * (nf - 1.0) + nf * mean * mean }
    }

    #[test]
    fn beta_posterior_adds_conversions_and_failures() {
        assert_eq!(beta_posteriors(1.0, 2.0, &[conv(10, 3), conv(0, 0)]), vec![(4.0, 9.0), (1.0, 2.0)]);
    }

    #[test]
    fn gaussian_posterior_matches_the_conjugate_formula() {
        // Prior N(0, 10^2); 25 rewards with mean 4 and sd 5:
        // precision = 1/100 + 25/25 = 1.01, mean = (0 + 100/25) / 1.01.
        let post = gaussian_posteriors(0.0, 10.0, &[numeric(25, 4.0, 5.0)]);
        let (m, s, obs) = post[0];
        assert!((m - 4.0 / 1.01).abs() < 1e-9, "{m}");
        assert!((s - (1.0 / 1.01f64).sqrt()).abs() < 1e-9, "{s}");
        assert!((obs - 5.0).abs() < 1e-9, "{obs}");
    }

    #[test]
    fn gaussian_variance_falls_back_to_pooled_then_prior() {
        // Arm 0: sd 2 from 11 rewards; arm 1: one reward; arm 2: 5 identical rewards.
        let feedback = [numeric(11, 1.0, 2.0), numeric(1, 3.0, 0.0), numeric(5, 7.0, 0.0)];
        let post = gaussian_posteriors(0.0, 10.0, &feedback);
        // Pooled variance: (10 * 4 + 4 * 0) / 14.
        let pooled_sd = (40.0f64 / 14.0).sqrt();
        assert!((post[0].2 - 2.0).abs() < 1e-9);
        assert!((post[1].2 - pooled_sd).abs() < 1e-9);
        assert!((post[2].2 - pooled_sd).abs() < 1e-9);
        // No arm with variance: prior variance.
        let post = gaussian_posteriors(0.0, 10.0, &[numeric(1, 3.0, 0.0), conv(0, 0)]);
        assert!((post[0].2 - 10.0).abs() < 1e-12);
        assert!((post[1].0 - 0.0).abs() < 1e-12 && (post[1].1 - 10.0).abs() < 1e-12);
    }

    #[test]
    fn no_feedback_and_symmetric_priors_give_a_uniform_pmf() {
        for spec in [beta_spec(), gaussian_spec()] {
            let state = update_state(&spec, &keys(4), &[ArmFeedback::default(); 4], 9).unwrap();
            assert_eq!(state.pmf, vec![0.25; 4]);
            assert_eq!(state.draws, 0);
        }
    }

    #[test]
    fn monte_carlo_of_identical_arms_is_close_to_uniform() {
        let dists = vec![Beta::new(3.0, 5.0).unwrap(); 5];
        let p = prob_best(&dists, 20_000, 42);
        // SE of each estimate ~ sqrt(0.2 * 0.8 / 20000) ~ 0.0028.
        assert!(p.iter().all(|x| (x - 0.2).abs() < 0.015), "{p:?}");
    }

    #[test]
    fn separated_feedback_puts_most_mass_on_the_best_arm() {
        let state =
            update_state(&beta_spec(), &keys(3), &[conv(1000, 50), conv(1000, 120), conv(1000, 60)], 1).unwrap();
        assert!(state.pmf[1] > 0.99, "{:?}", state.pmf);
        assert_eq!(state.draws, DEFAULT_DRAWS);
        let state = update_state(
            &gaussian_spec(),
            &keys(3),
            &[numeric(500, 10.0, 20.0), numeric(500, 3.0, 20.0), numeric(500, 14.0, 20.0)],
            1,
        )
        .unwrap();
        assert!(state.pmf[2] > 0.99, "{:?}", state.pmf);
    }

    #[test]
    fn close_arms_share_the_mass() {
        let state = update_state(&beta_spec(), &keys(2), &[conv(100, 10), conv(100, 11)], 5).unwrap();
        assert!(state.pmf[0] > 0.2 && state.pmf[1] > 0.5, "{:?}", state.pmf);
    }

    #[test]
    fn two_beta_arms_match_the_exact_probability() {
        // A ~ Beta(1, 3), B ~ Beta(2, 2): P(A > b) = (1 - b)^3 and f_B(b) = 6 b (1 - b), so
        // P(A > B) = integral_0^1 6 b (1 - b)^4 db = 6 B(2, 5) = 6 / 30 = 0.2.
        let p = prob_best(&[Beta::new(1.0, 3.0).unwrap(), Beta::new(2.0, 2.0).unwrap()], 200_000, 11);
        assert!((p[0] - 0.2).abs() < 0.005, "{p:?}");
    }

    #[test]
    fn same_seed_same_pmf_and_different_seed_differs() {
        let feedback = [conv(40, 4), conv(40, 6), conv(40, 5)];
        let a = update_state(&beta_spec(), &keys(3), &feedback, 123).unwrap();
        let b = update_state(&beta_spec(), &keys(3), &feedback, 123).unwrap();
        let c = update_state(&beta_spec(), &keys(3), &feedback, 124).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.pmf, c.pmf);
        assert_eq!(a.seed, 123);
    }

    #[test]
    fn ties_share_mass() {
        // Point-mass-like distributions that always tie.
        let dists = vec![Normal::new(1.0, 0.0).unwrap(); 3];
        let p = prob_best(&dists, super::super::MIN_DRAWS, 1);
        assert!(p.iter().all(|x| (x - 1.0 / 3.0).abs() < 1e-12), "{p:?}");
    }

    #[test]
    fn arm_state_reports_posteriors() {
        let state = update_state(&beta_spec(), &keys(2), &[conv(10, 3), conv(0, 0)], 1).unwrap();
        let arm = &state.arms[0];
        assert_eq!((arm.n, arm.alpha, arm.beta), (10, Some(4.0), Some(8.0)));
        assert_eq!(arm.mean, Some(0.3));
        assert!((arm.post_mean.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        // Var of Beta(4, 8) = 32 / (144 * 13).
        assert!((arm.post_sd.unwrap() - (32.0f64 / (144.0 * 13.0)).sqrt()).abs() < 1e-12);
        assert_eq!(state.arms[1].mean, None);
    }

    #[test]
    fn a_single_arm_gets_everything() {
        let state = update_state(&gaussian_spec(), &keys(1), &[numeric(3, 1.0, 1.0)], 1).unwrap();
        assert_eq!(state.pmf, vec![1.0]);
    }
}
