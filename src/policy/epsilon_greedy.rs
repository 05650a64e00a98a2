//! Epsilon-greedy: with probability `epsilon` explore uniformly, otherwise
//! exploit the arm(s) with the best empirical mean reward.
//!
//! As a PMF over k arms (Sutton & Barto, "Reinforcement Learning: An
//! Introduction", 2nd ed. 2018, §2.2–2.3; Vowpal Wabbit's
//! `generate_epsilon_greedy`):
//!
//! `p_i = epsilon / k + (1 - epsilon) * 1[i in B] / |B|`
//!
//! where `B` is the set of tied-best arms. Arms without feedback (`n = 0`)
//! belong to `B`, so every arm is tried before it can be written off.

use super::{ArmFeedback, PolicyError};

/// `epsilon` must be a finite number in [0, 1].
pub fn validate(epsilon: f64) -> Result<(), PolicyError> {
    if (0.0..=1.0).contains(&epsilon) {
        Ok(())
    } else {
        Err(PolicyError::param("epsilon", format!("must lie in [0, 1], got {epsilon}")))
    }
}

/// Indices of the tied-best arms: every arm with `n = 0`, plus the arms whose
/// empirical mean equals the largest mean among arms with feedback (exact
/// comparison: means are correctly rounded quotients, so equal ratios tie).
pub fn best_arms(feedback: &[ArmFeedback]) -> Vec<usize> {
    let best_mean = feedback.iter().filter_map(ArmFeedback::mean).fold(f64::NEG_INFINITY, f64::max);
    feedback.iter().enumerate().filter(|(_, fb)| fb.mean().is_none_or(|m| m == best_mean)).map(|(i, _)| i).collect()
}

/// The epsilon-greedy PMF (see the module docs). Expects a validated
/// `epsilon` and non-empty, finite feedback.
pub fn pmf(epsilon: f64, feedback: &[ArmFeedback]) -> Vec<f64> {
    let k = feedback.len();
    if k == 0 {
        return Vec::new();
    }
    let mut pmf = vec![epsilon / k as f64; k];
    let best = best_arms(feedback);
    // `best` is never empty for non-empty finite feedback: either some arm has
    // n = 0, or the maximum mean is attained. Guard anyway.
    if best.is_empty() {
        return vec![1.0 / k as f64; k];
    }
    let share = (1.0 - epsilon) / best.len() as f64;
    for i in best {
        pmf[i] += share;
    }
    super::normalise(&mut pmf);
    pmf
}

#[cfg(test)]
mod tests {
    use super::super::{tests::keys, update_state, PolicySpec};
    use super::*;

    fn fb(n: u64, sum: f64) -> ArmFeedback {
        ArmFeedback { n, sum, sum_sq: sum }
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn exploits_the_best_mean() {
        let p = pmf(0.1, &[fb(100, 10.0), fb(100, 30.0), fb(100, 20.0), fb(100, 5.0)]);
        assert!(close(&p, &[0.025, 0.925, 0.025, 0.025]), "{p:?}");
    }

    #[test]
    fn ties_split_the_greedy_mass() {
        // 1/3 == 2/6 exactly in floating point.
        let p = pmf(0.2, &[fb(3, 1.0), fb(6, 2.0), fb(10, 1.0)]);
        let e = 0.2 / 3.0;
        assert!(close(&p, &[e + 0.4, e + 0.4, e]), "{p:?}");
    }

    #[test]
    fn arms_without_feedback_count_as_tied_best() {
        let p = pmf(0.0, &[fb(100, 50.0), fb(0, 0.0), fb(100, 10.0)]);
        assert!(close(&p, &[0.5, 0.5, 0.0]), "{p:?}");
        assert!(close(&pmf(0.3, &[fb(0, 0.0); 4]), &[0.25; 4]));
    }

    #[test]
    fn epsilon_one_is_uniform_and_zero_is_greedy() {
        let feedback = [fb(10, 1.0), fb(10, 9.0)];
        assert!(close(&pmf(1.0, &feedback), &[0.5, 0.5]));
        assert!(close(&pmf(0.0, &feedback), &[0.0, 1.0]));
    }

    #[test]
    fn negative_rewards_are_compared_correctly() {
        let p = pmf(0.0, &[fb(10, -5.0), fb(10, -1.0)]);
        assert!(close(&p, &[0.0, 1.0]));
    }

    #[test]
    fn initial_state_is_uniform() {
        let state =
            update_state(&PolicySpec::EpsilonGreedy { epsilon: 0.1 }, &keys(5), &[ArmFeedback::default(); 5], 1)
                .unwrap();
        assert!(close(&state.pmf, &[0.2; 5]));
    }
}
