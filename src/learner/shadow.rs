//! Shadow mode (issue 5): a candidate policy is scored on every logged decision but never
//! served. Its PMF for the decision is logged with the exposure (`shadow_pmf`), its state is
//! learned from the same log as the live policy's ([`learn`]; a `neural_pg` candidate is
//! retrained on its own schedule like a live one), and its value is estimated off-policy
//! from what the live policy logged ([`evaluate`]):
//!
//! * candidate value: self-normalised inverse propensity weighting (SNIPW; Swaminathan &
//!   Joachims 2015, "The self-normalized estimator for counterfactual learning", eq. (4)),
//!   `V̂ = Σ wᵢ rᵢ / Σ wᵢ` with `wᵢ = π_cand(aᵢ|xᵢ) / μ(aᵢ|xᵢ)`, the candidate's probability of
//!   the logged arm over its logged propensity, and the delta-method interval of
//!   [`crate::ope::estimators::point_estimate`];
//! * live value: the mean observed reward of the same exposures (on-policy), with the
//!   normal interval of a mean.
//!
//! The rule: with at least `min_exposures` rows, `promote` when the candidate's lower
//! confidence bound exceeds the live point estimate, else `keep_live`; `insufficient_data`
//! before that (or when the candidate never takes a logged arm: every weight 0).

use candle_core::Device;
use chrono::NaiveDateTime;
use serde::Serialize;
use utoipa::ToSchema;

use super::{contextual, neural};
use crate::experiment::definition::{MetricKind, ShadowDef};
use crate::experiment::registry::SnapshotState;
use crate::ope::estimators::{point_estimate, terms, Estimator, EstimatorInputs, RatioTerms};
use crate::store::queries::{self, StoredExperiment};
use crate::store::{Db, StoreError};

/// What the rule says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShadowDecision {
    /// The candidate's lower confidence bound beats the live value.
    Promote,
    /// Enough data, and it does not.
    KeepLive,
    /// Fewer than `min_exposures` rows, or no estimate possible yet.
    InsufficientData,
}

/// A point estimate with its two-sided interval at the configured confidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Interval {
    pub estimate: f64,
    pub std_error: f64,
    pub lower: f64,
    pub upper: f64,
}

/// The evaluation of a candidate on one experiment version's log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ShadowEvaluation {
    /// Matured exposures carrying the candidate's PMF that were used.
    pub exposures: usize,
    /// The candidate's SNIPW value (null when not computable: fewer than 2 rows, or every
    /// importance weight 0).
    pub candidate: Option<Interval>,
    /// The live policy's on-policy value over the same exposures (null under 2 rows).
    pub live: Option<Interval>,
    /// Kish's effective sample size of the importance weights, `(Σw)² / Σw²`.
    pub effective_sample_size: f64,
    pub max_weight: f64,
    pub confidence: f64,
    pub min_exposures: u64,
    pub decision: ShadowDecision,
    /// The numbers behind the decision, in words.
    pub reason: String,
}

/// Standard normal quantile for a two-sided `confidence`.
fn z_for(confidence: f64) -> f64 {
    crate::stats::special::normal_quantile(0.5 + confidence / 2.0).unwrap_or(crate::ope::estimators::Z_95)
}

fn interval(t: &RatioTerms, z: f64, what: &'static str) -> Option<Interval> {
    let p = point_estimate(t, what).ok()?;
    Some(Interval {
        estimate: p.estimate,
        std_error: p.std_error,
        lower: p.estimate - z * p.std_error,
        upper: p.estimate + z * p.std_error,
    })
}

/// Pure evaluation from per-exposure `(weight, reward)` pairs (see the module docs).
pub fn evaluate(rows: &[(f64, f64)], confidence: f64, min_exposures: u64) -> ShadowEvaluation {
    let z = z_for(confidence);
    let weights: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let rewards: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let n = rows.len();
    let candidate = EstimatorInputs::new(rewards.clone(), weights.clone(), vec![0.0; n], vec![0.0; n])
        .ok()
        .and_then(|inputs| interval(&terms(Estimator::Snipw, &inputs, 0.0), z, "shadow candidate"));
    let live = interval(&RatioTerms { numer: rewards, denom: None }, z, "live policy");
    let ess = crate::ope::estimators::effective_sample_size(&weights);
    let max_weight = crate::ope::estimators::max_weight(&weights);
    let (decision, reason) = match (candidate, live) {
        _ if (n as u64) < min_exposures => (
            ShadowDecision::InsufficientData,
            format!("{n} matured exposures with a candidate PMF; {min_exposures} needed"),
        ),
        (Some(c), Some(l)) if c.lower > l.estimate => (
            ShadowDecision::Promote,
            format!(
                "candidate lower bound {:.4} ({:.0}% interval, value {:.4}) > live value {:.4} over {n} exposures (ESS {:.1})",
                c.lower,
                confidence * 100.0,
                c.estimate,
                l.estimate,
                ess
            ),
        ),
        (Some(c), Some(l)) => (
            ShadowDecision::KeepLive,
            format!(
                "candidate lower bound {:.4} ({:.0}% interval, value {:.4}) ≤ live value {:.4} over {n} exposures (ESS {:.1})",
                c.lower,
                confidence * 100.0,
                c.estimate,
                l.estimate,
                ess
            ),
        ),
        _ => (
            ShadowDecision::InsufficientData,
            "no estimate yet: the candidate never takes a logged arm (every weight is 0)".into(),
        ),
    };
    ShadowEvaluation {
        exposures: n,
        candidate,
        live,
        effective_sample_size: ess,
        max_weight,
        confidence,
        min_exposures,
        decision,
        reason,
    }
}

/// The importance weight of one logged row: the candidate's probability of the logged arm
/// (from its logged PMF; an arm it leaves out has 0) over the logged propensity.
pub fn weight(shadow_pmf: &serde_json::Map<String, serde_json::Value>, arm: &str, propensity: f64) -> f64 {
    let p = shadow_pmf.get(arm).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    if propensity > 0.0 && p.is_finite() && p >= 0.0 {
        p / propensity
    } else {
        0.0
    }
}

/// Evaluates the candidate of `stored` (current version) on its exposures made at or before
/// `cutoff`; `None` when the experiment has no candidate.
pub fn evaluate_stored(
    db: &Db,
    stored: &StoredExperiment,
    cutoff: NaiveDateTime,
) -> Result<Option<ShadowEvaluation>, StoreError> {
    let def = &stored.definition;
    let Some(shadow) = &def.shadow else { return Ok(None) };
    let rows = queries::shadow_rows(db, stored.row.id, stored.row.current_version, &def.primary_metric.name, cutoff)?;
    let binary = def.primary_metric.kind == MetricKind::Conversion;
    let mut pairs = Vec::with_capacity(rows.len());
    for r in rows {
        let Ok(pmf) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&r.shadow_pmf) else {
            tracing::warn!(experiment = %stored.row.key, "unreadable shadow_pmf left out of the evaluation");
            continue;
        };
        let reward = if binary { f64::from(u8::from(r.max_reward > 0.0)) } else { r.reward };
        pairs.push((weight(&pmf, &r.arm, r.propensity), reward));
    }
    Ok(Some(evaluate(&pairs, shadow.confidence, shadow.min_exposures)))
}

/// The candidate's next state from the log, the same way the live policy of its kind learns
/// (context-free kinds: refit from the cumulative per-arm feedback of matured exposures;
/// `lin_ts` / `lin_ucb`: fold the newly matured exposures' logged contexts; `neural_pg`:
/// retrain its network on its own `retrain_every` / `min_new_rows` schedule from the logged
/// contexts, arms, live propensities and rewards, on `device`); `None` when nothing changed.
#[allow(clippy::too_many_arguments)]
pub fn learn(
    db: &Db,
    stored: &StoredExperiment,
    candidate: &ShadowDef,
    previous: &SnapshotState,
    until: NaiveDateTime,
    now: NaiveDateTime,
    device: &Device,
    next_policy_version: i64,
) -> Result<Option<SnapshotState>, StoreError> {
    if candidate.policy.is_neural() {
        let Some((next, done)) = neural::update(db, stored, &candidate.policy, previous, until, now, device)? else {
            return Ok(None);
        };
        let (before, after) = done.report.as_ref().map_or((f64::NAN, f64::NAN), |r| (r.snips_before, r.snips_after));
        tracing::info!(experiment = %stored.row.key, rows = done.rows, new_rows = done.new_rows, skipped = done.skipped, snips_before = before, snips_after = after, "neural shadow candidate retrained");
        return Ok(Some(next));
    }
    if candidate.policy.is_contextual() {
        return Ok(contextual::update(db, stored, previous, until)?.map(|(next, _)| next));
    }
    super::context_free_update(
        db,
        stored,
        &candidate.policy,
        Some(previous.feedback.as_slice()),
        until,
        "shadow-snapshot",
        next_policy_version,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snipw_of_known_weights_is_the_weighted_mean_and_its_interval_contains_it() {
        // Weights 2, 0, 1, 1 on rewards 1, 1, 0, 1: Σwr / Σw = (2 + 0 + 0 + 1) / 4 = 0.75.
        let rows = [(2.0, 1.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)];
        let e = evaluate(&rows, 0.95, 2);
        let c = e.candidate.expect("estimate");
        assert!((c.estimate - 0.75).abs() < 1e-12, "{c:?}");
        assert!(c.lower < c.estimate && c.estimate < c.upper, "{c:?}");
        // The live value is the plain mean reward: 3 / 4.
        let l = e.live.expect("live");
        assert!((l.estimate - 0.75).abs() < 1e-12);
        assert!(l.lower < 0.75 && 0.75 < l.upper);
        // Kish's ESS: (Σw)² / Σw² = 16 / 6.
        assert!((e.effective_sample_size - 16.0 / 6.0).abs() < 1e-12);
        assert_eq!(e.max_weight, 2.0);
        // Same estimate, wider interval at a higher confidence (z 2.576 vs 1.960).
        let wide = evaluate(&rows, 0.99, 2).candidate.unwrap();
        assert!((wide.upper - wide.lower) / (c.upper - c.lower) > 1.3);
        let z = (c.upper - c.estimate) / c.std_error;
        assert!((z - 1.959_964).abs() < 1e-5, "{z}");
    }

    #[test]
    fn the_rule_promotes_only_when_the_candidates_lower_bound_beats_the_live_value() {
        // The live policy logs arm 1 (reward 0) 90% and arm 0 (reward 1) 10% of the time; the
        // candidate plays arm 0 with 0.9: weights 9 on arm 0 and 1/9 on arm 1.
        let rows: Vec<(f64, f64)> =
            (0..1000).map(|i| if i % 10 == 0 { (0.9 / 0.1, 1.0) } else { (0.1 / 0.9, 0.0) }).collect();
        let e = evaluate(&rows, 0.95, 500);
        let c = e.candidate.unwrap();
        // Σwr / Σw = 100·9 / (100·9 + 900/9) = 900 / 1000.
        assert!((c.estimate - 0.9).abs() < 1e-9, "{c:?}");
        assert!((e.live.unwrap().estimate - 0.1).abs() < 1e-12);
        assert_eq!(e.decision, ShadowDecision::Promote, "{}", e.reason);
        // Not enough rows yet.
        assert_eq!(evaluate(&rows, 0.95, 1001).decision, ShadowDecision::InsufficientData);
        // The same world seen from the other side: the candidate favours the bad arm.
        let rows: Vec<(f64, f64)> =
            (0..1000).map(|i| if i % 10 == 0 { (0.1 / 0.1, 1.0) } else { (0.9 / 0.9, 0.0) }).collect();
        let e = evaluate(&rows, 0.95, 500);
        assert_eq!(e.decision, ShadowDecision::KeepLive, "{}", e.reason);
        // A candidate that never takes a logged arm gets no estimate.
        let e = evaluate(&[(0.0, 1.0), (0.0, 0.0), (0.0, 1.0)], 0.95, 2);
        assert!(e.candidate.is_none());
        assert_eq!(e.decision, ShadowDecision::InsufficientData);
    }

    #[test]
    fn the_weight_is_the_candidates_probability_of_the_logged_arm_over_the_propensity() {
        let pmf: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r#"{"a": 0.2, "c": 0.8}"#).unwrap();
        assert!((weight(&pmf, "c", 0.4) - 2.0).abs() < 1e-12);
        assert_eq!(weight(&pmf, "b", 0.4), 0.0);
        assert_eq!(weight(&pmf, "a", 0.0), 0.0);
    }
}
