//! The off-policy estimators as pure functions of per-row quantities, with their
//! normal-approximation intervals.
//!
//! Notation, for logged row `i` with context `x_i`, position `k_i`, action `a_i`, reward `r_i`
//! and logging propensity `μ_i = μ(a_i | x_i, k_i)`; target policy `π`:
//!
//! - importance weight `w_i = π(a_i | x_i, k_i) / μ_i`;
//! - `q̂_i = q̂(x_i, a_i, k_i)`, the reward model at the logged action;
//! - `q̂^π_i = Σ_a π(a | x_i, k_i) q̂(x_i, a, k_i)`, the reward model averaged over the target.
//!
//! Every estimator is written as a ratio of per-row terms `V̂ = Σ_i u_i / Σ_i v_i` (with
//! `v_i = 1` except for SNIPW). That one form gives the point estimate, the delta-method
//! standard error (influence terms `ψ_i = (u_i − V̂ v_i) / v̄`, Σψ = 0; for `v ≡ 1` this is the
//! plain standard error of the mean of `u`), and the bootstrap in [`super::bootstrap`].
//! References: Saito et al. 2020 (OBP, arXiv 2008.07146) Section 3 and Appendix; each formula
//! below names its own source.

use super::OpeError;

/// `Φ⁻¹(0.975)`, the two-sided 95% normal quantile.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// The estimators, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    Ipw,
    Snipw,
    Dm,
    Dr,
    SwitchDr,
}

impl Estimator {
    pub const ALL: [Estimator; 5] =
        [Estimator::Ipw, Estimator::Snipw, Estimator::Dm, Estimator::Dr, Estimator::SwitchDr];

    /// Position in [`Estimator::ALL`].
    pub fn index(self) -> usize {
        match self {
            Estimator::Ipw => 0,
            Estimator::Snipw => 1,
            Estimator::Dm => 2,
            Estimator::Dr => 3,
            Estimator::SwitchDr => 4,
        }
    }

    /// JSON key (`ipw`, `snipw`, `dm`, `dr`, `switch_dr`).
    pub fn key(self) -> &'static str {
        match self {
            Estimator::Ipw => "ipw",
            Estimator::Snipw => "snipw",
            Estimator::Dm => "dm",
            Estimator::Dr => "dr",
            Estimator::SwitchDr => "switch_dr",
        }
    }

    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            Estimator::Ipw => "IPW",
            Estimator::Snipw => "SNIPW",
            Estimator::Dm => "DM",
            Estimator::Dr => "DR",
            Estimator::SwitchDr => "Switch-DR",
        }
    }
}

/// How Switch-DR's weight threshold `τ` is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SwitchTau {
    /// Minimise an estimate of the mean squared error over a grid (see [`select_switch_tau`]).
    Auto,
    /// A fixed threshold `τ ≥ 0`.
    Fixed(f64),
}

/// Per-row inputs of the estimators (see the module docs for the notation).
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatorInputs {
    rewards: Vec<f64>,
    weights: Vec<f64>,
    q_logged: Vec<f64>,
    q_target: Vec<f64>,
}

impl EstimatorInputs {
    /// `rewards r_i`, `weights w_i`, `q_logged q̂_i`, `q_target q̂^π_i`: equal lengths, at least
    /// one row, all finite, weights non-negative.
    pub fn new(rewards: Vec<f64>, weights: Vec<f64>, q_logged: Vec<f64>, q_target: Vec<f64>) -> Result<Self, OpeError> {
        let n = rewards.len();
        if n == 0 {
            return Err(OpeError::NotEnoughData { message: "the estimators need at least one row".into() });
        }
        if weights.len() != n || q_logged.len() != n || q_target.len() != n {
            return Err(OpeError::InvalidConfig {
                message: format!(
                    "estimator inputs differ in length: {n} rewards, {} weights, {} q̂, {} q̂^π",
                    weights.len(),
                    q_logged.len(),
                    q_target.len()
                ),
            });
        }
        let all_finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if !(all_finite(&rewards) && all_finite(&q_logged) && all_finite(&q_target)) {
            return Err(OpeError::InvalidConfig { message: "non-finite reward or reward-model value".into() });
        }
        if let Some(i) = weights.iter().position(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(OpeError::InvalidRow {
                row: i,
                message: format!("importance weight {} is not finite and ≥ 0", weights[i]),
            });
        }
        Ok(Self { rewards, weights, q_logged, q_target })
    }

    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    /// Always false (construction rejects empty inputs).
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    pub fn rewards(&self) -> &[f64] {
        &self.rewards
    }

    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    pub fn q_logged(&self) -> &[f64] {
        &self.q_logged
    }

    pub fn q_target(&self) -> &[f64] {
        &self.q_target
    }
}

/// Per-row terms of an estimator: `V̂ = Σ numer / Σ denom`, `denom = None` meaning all ones.
#[derive(Debug, Clone, PartialEq)]
pub struct RatioTerms {
    pub numer: Vec<f64>,
    pub denom: Option<Vec<f64>>,
}

/// A point estimate with its normal-approximation 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PointEstimate {
    pub estimate: f64,
    pub std_error: f64,
    pub ci95: [f64; 2],
}

/// The per-row terms of `estimator`; `tau` is Switch-DR's threshold (ignored by the others).
pub fn terms(estimator: Estimator, inputs: &EstimatorInputs, tau: f64) -> RatioTerms {
    let r = &inputs.rewards;
    let w = &inputs.weights;
    let q = &inputs.q_logged;
    let qp = &inputs.q_target;
    let numer: Vec<f64> = match estimator {
        // IPW (Horvitz & Thompson 1952; Precup, Sutton, Singh 2000; OBP eq. for
        // InverseProbabilityWeighting): V̂ = (1/n) Σ w_i r_i.
        Estimator::Ipw | Estimator::Snipw => w.iter().zip(r).map(|(w, r)| w * r).collect(),
        // DM (Beygelzimer & Langford 2009; OBP DirectMethod): V̂ = (1/n) Σ_i Σ_a π(a|x_i) q̂(x_i, a).
        Estimator::Dm => qp.clone(),
        // DR (Dudík, Langford, Li 2011, "Doubly robust policy evaluation and learning",
        // eq. (3)): V̂ = (1/n) Σ_i [ q̂^π_i + w_i (r_i − q̂_i) ].
        Estimator::Dr => (0..r.len()).map(|i| qp[i] + w[i] * (r[i] - q[i])).collect(),
        // Switch-DR (Wang, Agarwal, Dudík 2017, "Optimal and adaptive off-policy evaluation in
        // contextual bandits", Section 4.1, with DR in the importance-sampling region as in
        // OBP's SwitchDoublyRobust): V̂ = (1/n) Σ_i [ q̂^π_i + 1{w_i ≤ τ} w_i (r_i − q̂_i) ];
        // rows whose weight exceeds τ fall back to the direct method.
        Estimator::SwitchDr => (0..r.len())
            .map(|i| {
                let correction = if w[i] <= tau { w[i] * (r[i] - q[i]) } else { 0.0 };
                qp[i] + correction
            })
            .collect(),
    };
    // SNIPW (Swaminathan & Joachims 2015, "The self-normalized estimator for counterfactual
    // learning", eq. (4)): V̂ = Σ w_i r_i / Σ w_i.
    let denom = (estimator == Estimator::Snipw).then(|| w.clone());
    RatioTerms { numer, denom }
}

/// `V̂` and its delta-method 95% interval `V̂ ± z σ̂(ψ)/√n` from `terms`.
///
/// For a ratio of means `ū / v̄` the delta method gives the influence terms
/// `ψ_i = (u_i − V̂ v_i) / v̄` (Swaminathan & Joachims 2015, Section 4, variance of the
/// self-normalised estimator); `σ̂(ψ)` is their sample standard deviation (n − 1).
pub fn point_estimate(terms: &RatioTerms, what: &'static str) -> Result<PointEstimate, OpeError> {
    let n = terms.numer.len();
    if n < 2 {
        return Err(OpeError::CannotCompute { what, reason: "an interval needs at least 2 rows".into() });
    }
    let nf = n as f64;
    let sum_u: f64 = terms.numer.iter().sum();
    let (estimate, std_error) = match &terms.denom {
        None => {
            let mean = sum_u / nf;
            let ss: f64 = terms.numer.iter().map(|u| (u - mean).powi(2)).sum();
            (mean, (ss / (nf - 1.0) / nf).sqrt())
        }
        Some(v) => {
            let sum_v: f64 = v.iter().sum();
            if sum_v <= 0.0 {
                return Err(OpeError::CannotCompute {
                    what,
                    reason: "every importance weight is zero: the target policy never takes \
                             a logged action"
                        .into(),
                });
            }
            let est = sum_u / sum_v;
            let v_bar = sum_v / nf;
            let ss: f64 = terms.numer.iter().zip(v).map(|(u, v)| ((u - est * v) / v_bar).powi(2)).sum();
            (est, (ss / (nf - 1.0) / nf).sqrt())
        }
    };
    Ok(PointEstimate { estimate, std_error, ci95: [estimate - Z_95 * std_error, estimate + Z_95 * std_error] })
}

/// One estimator end to end: terms, estimate, normal interval.
pub fn estimate(estimator: Estimator, inputs: &EstimatorInputs, tau: f64) -> Result<PointEstimate, OpeError> {
    point_estimate(&terms(estimator, inputs, tau), estimator.key())
}

/// Kish's effective sample size of the importance weights, `(Σ w_i)² / Σ w_i²` (Kong 1992;
/// Owen 2013, "Monte Carlo theory, methods and examples", Section 9.3); `n` when all weights
/// are equal, 0 when all are zero.
pub fn effective_sample_size(weights: &[f64]) -> f64 {
    let s: f64 = weights.iter().sum();
    let s2: f64 = weights.iter().map(|w| w * w).sum();
    if s2 > 0.0 {
        s * s / s2
    } else {
        0.0
    }
}

/// The largest importance weight (0 for no rows).
pub fn max_weight(weights: &[f64]) -> f64 {
    weights.iter().copied().fold(0.0, f64::max)
}

/// Switch-DR's threshold by estimated mean squared error.
///
/// Wang, Agarwal, Dudík 2017 (Section 4.2) pick `τ` minimising an estimate of
/// `Var(V̂_τ) + Bias(V̂_τ)²`. Their bias bound `R_max · E_π[1{w > τ}]` is vacuous for rare
/// clicks; we bound the bias with high confidence instead, as the OBP's tuning does
/// (`use_bias_upper_bound`, after Su, Dimakopoulou, Krishnamurthy, Dudík 2020, "Doubly robust
/// off-policy evaluation with shrinkage", Section 5): Switch-DR differs from DR (unbiased) by
/// the mean of the dropped corrections `d_i = 1{w_i > τ} w_i (r_i − q̂_i)`, so
/// `|Bias| ≤ |d̄| + z_{0.975} s(d)/√n` with 95% confidence. The score is
/// `s²(switch terms)/n + (|d̄| + z s(d)/√n)²`: a switch is made only where it provably pays.
/// Since the bound's spread term alone is about `z² s²(d)/n`, about 3.8 times the variance
/// the switch removes, this rule keeps DR unless the dropped corrections are both clearly
/// centred on zero and strongly anti-correlated with the rest; it is deliberately
/// conservative because DM's per-row variance ignores the reward model's own estimation error
/// (a rule that trusts it picks pure DM whenever DM and DR agree). Pass
/// [`SwitchTau::Fixed`] to force a threshold.
///
/// Candidates: 0 (pure DM), `{1, 2, 5} × 10^k` below the largest weight, and the largest weight
/// itself (no row switched, i.e. DR); ties go to the larger `τ`.
pub fn select_switch_tau(inputs: &EstimatorInputs) -> f64 {
    let w_max = max_weight(&inputs.weights);
    let mut candidates = vec![0.0];
    let mut scale = 0.01;
    while scale < w_max {
        for m in [1.0, 2.0, 5.0] {
            let c = m * scale;
            if c < w_max {
                candidates.push(c);
            }
        }
        scale *= 10.0;
    }
    candidates.push(w_max);
    let n = inputs.len() as f64;
    let var = |xs: &[f64]| {
        let m = xs.iter().sum::<f64>() / n;
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)
    };
    let mut best = (f64::INFINITY, w_max);
    for &tau in candidates.iter().rev() {
        let t = terms(Estimator::SwitchDr, inputs, tau).numer;
        let dropped: Vec<f64> = (0..inputs.len())
            .map(|i| {
                let w = inputs.weights[i];
                if w > tau {
                    w * (inputs.rewards[i] - inputs.q_logged[i])
                } else {
                    0.0
                }
            })
            .collect();
        let d_bar = dropped.iter().sum::<f64>() / n;
        let bias_bound = d_bar.abs() + Z_95 * (var(&dropped) / n).sqrt();
        let score = var(&t) / n + bias_bound * bias_bound;
        if score < best.0 {
            best = (score, tau);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four rows, hand-computed below.
    /// r = [1, 0, 1, 0], w = [2, 0.5, 1, 0], q̂ = [0.5, 0.2, 0.4, 0.1], q̂^π = [0.6, 0.3, 0.5, 0.2].
    fn inputs() -> EstimatorInputs {
        EstimatorInputs::new(
            vec![1.0, 0.0, 1.0, 0.0],
            vec![2.0, 0.5, 1.0, 0.0],
            vec![0.5, 0.2, 0.4, 0.1],
            vec![0.6, 0.3, 0.5, 0.2],
        )
        .unwrap()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn ipw_is_the_mean_weighted_reward() {
        // (2·1 + 0.5·0 + 1·1 + 0·0) / 4 = 0.75; terms [2, 0, 1, 0], s² = (1.5625+0.5625+0.0625+0.5625)/3.
        let e = estimate(Estimator::Ipw, &inputs(), 0.0).unwrap();
        close(e.estimate, 0.75);
        close(e.std_error, (2.75 / 3.0 / 4.0f64).sqrt());
        close(e.ci95[1] - e.estimate, Z_95 * e.std_error);
    }

    #[test]
    fn snipw_divides_by_the_weight_sum() {
        // 3 / 3.5; ψ_i = (u_i − V̂ w_i) / w̄ with w̄ = 0.875.
        let e = estimate(Estimator::Snipw, &inputs(), 0.0).unwrap();
        let v = 3.0 / 3.5;
        close(e.estimate, v);
        let psi = [(2.0 - v * 2.0) / 0.875, (0.0 - v * 0.5) / 0.875, (1.0 - v) / 0.875, 0.0];
        let ss: f64 = psi.iter().map(|p| p * p).sum();
        close(e.std_error, (ss / 3.0 / 4.0).sqrt());
        let zero = EstimatorInputs::new(vec![1.0; 2], vec![0.0; 2], vec![0.0; 2], vec![0.0; 2]).unwrap();
        let err = estimate(Estimator::Snipw, &zero, 0.0).unwrap_err();
        assert_eq!(err.code(), "ope_cannot_compute");
    }

    #[test]
    fn dm_averages_the_model_under_the_target() {
        close(estimate(Estimator::Dm, &inputs(), 0.0).unwrap().estimate, 1.6 / 4.0);
    }

    #[test]
    fn dr_adds_the_weighted_residual() {
        // 0.6 + 2·0.5 = 1.6; 0.3 + 0.5·(−0.2) = 0.2; 0.5 + 1·0.6 = 1.1; 0.2 + 0 = 0.2 → 3.1 / 4.
        close(estimate(Estimator::Dr, &inputs(), 0.0).unwrap().estimate, 3.1 / 4.0);
    }

    #[test]
    fn switch_dr_drops_corrections_above_tau() {
        let x = inputs();
        // τ = 1: row 0 (w = 2) falls back to DM → (0.6 + 0.2 + 1.1 + 0.2) / 4.
        close(estimate(Estimator::SwitchDr, &x, 1.0).unwrap().estimate, 2.1 / 4.0);
        // τ ≥ max weight is DR; τ below every positive weight is DM (w = 0 rows add 0 anyway).
        close(
            estimate(Estimator::SwitchDr, &x, 2.0).unwrap().estimate,
            estimate(Estimator::Dr, &x, 0.0).unwrap().estimate,
        );
        close(
            estimate(Estimator::SwitchDr, &x, 0.1).unwrap().estimate,
            estimate(Estimator::Dm, &x, 0.0).unwrap().estimate,
        );
    }

    #[test]
    fn estimator_index_matches_report_order() {
        for (j, e) in Estimator::ALL.iter().enumerate() {
            assert_eq!(e.index(), j);
        }
    }

    #[test]
    fn ess_and_max_weight() {
        // (3.5)² / (4 + 0.25 + 1) = 12.25 / 5.25.
        close(effective_sample_size(inputs().weights()), 12.25 / 5.25);
        close(effective_sample_size(&[1.0; 10]), 10.0);
        close(max_weight(inputs().weights()), 2.0);
        close(effective_sample_size(&[0.0; 3]), 0.0);
    }

    #[test]
    fn switch_tau_keeps_dr_when_the_model_is_biased_and_on_ties() {
        // Model off by +0.5 everywhere: dropping corrections is pure bias → keep DR (τ = max w).
        let n = 400;
        let w: Vec<f64> = (0..n).map(|i| if i % 20 == 0 { 50.0 } else { 0.5 }).collect();
        let r: Vec<f64> = (0..n).map(|i| f64::from(i % 3 == 0)).collect();
        let biased = EstimatorInputs::new(r.clone(), w.clone(), vec![0.9; n], vec![0.9; n]).unwrap();
        assert_eq!(select_switch_tau(&biased), 50.0);
        // Model exact (q̂ = r): corrections are zero, all τ tie → the largest.
        let exact = EstimatorInputs::new(r.clone(), w, r.clone(), r).unwrap();
        assert_eq!(select_switch_tau(&exact), 50.0);
    }

    #[test]
    fn inputs_are_validated() {
        assert!(EstimatorInputs::new(vec![], vec![], vec![], vec![]).is_err());
        assert!(EstimatorInputs::new(vec![1.0], vec![1.0, 2.0], vec![0.0], vec![0.0]).is_err());
        assert!(EstimatorInputs::new(vec![1.0], vec![-1.0], vec![0.0], vec![0.0]).is_err());
        assert!(EstimatorInputs::new(vec![f64::NAN], vec![1.0], vec![0.0], vec![0.0]).is_err());
        let one = EstimatorInputs::new(vec![1.0], vec![1.0], vec![0.0], vec![0.0]).unwrap();
        assert_eq!(estimate(Estimator::Ipw, &one, 0.0).unwrap_err().code(), "ope_cannot_compute");
    }
}
