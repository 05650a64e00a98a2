//! Fixed allocation (A/B/n): the PMF is the experiment's weights, normalised,
//! and never learns. Weights are keyed by arm key; omitted weights mean equal
//! traffic to every arm.

use std::collections::BTreeMap;

use super::PolicyError;

/// Checks that the weights name exactly the experiment's arms, are finite and
/// non-negative, and are not all zero. `None` (equal weights) is always valid.
pub fn validate(weights: Option<&BTreeMap<String, f64>>, arm_keys: &[String]) -> Result<(), PolicyError> {
    let Some(weights) = weights else {
        return Ok(());
    };
    for (key, &w) in weights {
        if !arm_keys.contains(key) {
            return Err(PolicyError::param(
                format!("weights.{key}"),
                format!("names no arm of the experiment (arms: {})", arm_keys.join(", ")),
            ));
        }
        if !w.is_finite() || w < 0.0 {
            return Err(PolicyError::param(format!("weights.{key}"), format!("must be a finite number >= 0, got {w}")));
        }
    }
    if let Some(missing) = arm_keys.iter().find(|k| !weights.contains_key(*k)) {
        return Err(PolicyError::param(
            format!("weights.{missing}"),
            "is missing: give every arm a weight (0 to send it no traffic), or omit `weights` for equal traffic",
        ));
    }
    let total: f64 = weights.values().sum();
    if !(total.is_finite() && total > 0.0) {
        return Err(PolicyError::param("weights", format!("must have a positive, finite total, got {total}")));
    }
    Ok(())
}

/// `p_i = w_i / sum_j w_j` in arm order, or `1/k` for every arm without
/// weights. Expects weights that passed [`validate`]; an arm without a weight
/// gets 0.
pub fn pmf(weights: Option<&BTreeMap<String, f64>>, arm_keys: &[String]) -> Vec<f64> {
    let k = arm_keys.len();
    match weights {
        None => vec![1.0 / k as f64; k],
        Some(weights) => {
            let mut pmf: Vec<f64> = arm_keys.iter().map(|key| weights.get(key).copied().unwrap_or(0.0)).collect();
            super::normalise(&mut pmf);
            pmf
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{tests::keys, update_state, ArmFeedback, PolicySpec};
    use super::*;

    #[test]
    fn equal_weights_when_omitted() {
        assert_eq!(pmf(None, &keys(4)), vec![0.25; 4]);
    }

    #[test]
    fn weights_are_normalised_in_arm_order() {
        let arms = vec!["control".to_string(), "coupon".to_string(), "bundle".to_string()];
        let weights =
            BTreeMap::from([("bundle".to_string(), 1.0), ("control".to_string(), 2.0), ("coupon".to_string(), 1.0)]);
        assert_eq!(pmf(Some(&weights), &arms), vec![0.5, 0.25, 0.25]);
    }

    #[test]
    fn feedback_does_not_move_a_fixed_policy() {
        let spec = PolicySpec::Fixed { weights: None };
        let feedback = [ArmFeedback { n: 100, sum: 90.0, sum_sq: 90.0 }, ArmFeedback { n: 100, sum: 1.0, sum_sq: 1.0 }];
        let state = update_state(&spec, &keys(2), &feedback, 3).unwrap();
        assert_eq!(state.pmf, vec![0.5, 0.5]);
        assert_eq!(state.arms[0].mean, Some(0.9));
        assert_eq!(state.draws, 0);
    }
}
