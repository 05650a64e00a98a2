//! One off-policy evaluation end to end: cross-fit the reward model, score the target policy on
//! every logged row, compute the six estimators with normal and bootstrap intervals, the
//! effective sample size and the largest importance weight, and gather them in an
//! [`OpeReport`] (serialised as the CLI's `--json` output).

use serde::Serialize;

use super::bootstrap::{percentile_intervals, BootstrapConfig};
use super::estimators::{
    dr_terms, effective_sample_size, fit_dr, max_weight, point_estimate, select_switch_tau, terms, Estimator,
    EstimatorInputs, PointEstimate, SwitchTau,
};
use super::{LoggedData, OpeError, RewardModelConfig, RewardModelKind, RewardPredictions, TargetPolicy};

/// Tolerance on the sum of a target policy's action distribution.
const POLICY_SUM_TOLERANCE: f64 = 1e-6;

/// Settings of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpeConfig {
    /// Seed of the bootstrap (the reward model's folds use `reward_model.seed`).
    pub seed: u64,
    /// Bootstrap resamples; 0 skips the bootstrap (`bootstrap_ci95` is then `None`).
    pub bootstrap: usize,
    pub reward_model: RewardModelConfig,
    pub switch_tau: SwitchTau,
    /// Worker threads for the bootstrap; 0 = available parallelism.
    pub threads: usize,
}

impl Default for OpeConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            bootstrap: 1_000,
            reward_model: RewardModelConfig::default(),
            switch_tau: SwitchTau::Auto,
            threads: 0,
        }
    }
}

impl OpeConfig {
    /// The CLI's settings: one seed for folds and bootstrap.
    pub fn with_seed(seed: u64, bootstrap: usize, folds: usize) -> Self {
        Self {
            seed,
            bootstrap,
            reward_model: RewardModelConfig { seed, folds, ..RewardModelConfig::default() },
            ..Self::default()
        }
    }
}

/// One estimator's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EstimateSummary {
    pub estimate: f64,
    pub std_error: f64,
    /// Normal-approximation 95% interval.
    pub ci95: [f64; 2],
    /// Bootstrap percentile 95% interval (`None` when the bootstrap was skipped).
    pub bootstrap_ci95: Option<[f64; 2]>,
    /// `estimate / on_policy_value − 1` (`None` when the logged policy earned 0).
    pub relative_to_logged: Option<f64>,
    /// Switch-DR's threshold τ (only on `switch_dr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau: Option<f64>,
    /// DR's control-variate coefficient (only on `dr`): 0 = IPW, 1 = classic DR, else fitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
}

/// The six estimators, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimates {
    pub ipw: EstimateSummary,
    pub snipw: EstimateSummary,
    pub dm: EstimateSummary,
    /// DR with its control-variate coefficient chosen on the data (see [`fit_dr`]).
    pub dr: EstimateSummary,
    /// Classic DR (Dudík, Langford, Li 2011), coefficient 1.
    pub dr_classic: EstimateSummary,
    pub switch_dr: EstimateSummary,
}

impl Estimates {
    pub fn get(&self, estimator: Estimator) -> &EstimateSummary {
        match estimator {
            Estimator::Ipw => &self.ipw,
            Estimator::Snipw => &self.snipw,
            Estimator::Dm => &self.dm,
            Estimator::Dr => &self.dr,
            Estimator::DrClassic => &self.dr_classic,
            Estimator::SwitchDr => &self.switch_dr,
        }
    }
}

/// Result of [`evaluate`]; its JSON form is the CLI's `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpeReport {
    /// Logged rows.
    pub n: usize,
    /// Effective sample size of the importance weights, `(Σw)²/Σw²`.
    pub ess: f64,
    /// Largest importance weight.
    pub max_weight: f64,
    /// The logging policy's own value (mean logged reward).
    pub on_policy_value: f64,
    pub estimators: Estimates,
    /// The target policy's description.
    pub target: String,
    pub seed: u64,
    pub bootstrap_resamples: usize,
    pub folds: usize,
    pub reward_model: RewardModelKind,
}

/// The target policy's action distribution on every logged row: `π(a | x_i, k_i)` at
/// `[i * n_actions + a]`, validated (probabilities summing to 1).
pub fn score_target(data: &LoggedData, target: &dyn TargetPolicy) -> Result<Vec<f64>, OpeError> {
    let n_actions = data.n_actions();
    let mut probs = vec![0.0; data.len() * n_actions];
    for (i, pi) in probs.chunks_exact_mut(n_actions).enumerate() {
        target.action_probs(data, i, pi)?;
        if let Some(a) = pi.iter().position(|p| !(0.0..=1.0).contains(p)) {
            return Err(OpeError::InvalidPolicy {
                message: format!("{} gives action {a} probability {} at row {i}", target.describe(), pi[a]),
            });
        }
        let sum: f64 = pi.iter().sum();
        if (sum - 1.0).abs() > POLICY_SUM_TOLERANCE {
            return Err(OpeError::InvalidPolicy {
                message: format!("{}'s probabilities sum to {sum} at row {i}", target.describe()),
            });
        }
    }
    Ok(probs)
}

/// The estimators' per-row inputs from the target's action distribution `probs` (as returned
/// by [`score_target`]) and the reward model's predictions: `w_i = π(a_i|x_i,k_i)/μ_i`,
/// `q̂_i = q̂(x_i,a_i,k_i)` and `q̂^π_i = Σ_a π(a|x_i,k_i) q̂(x_i,a,k_i)`.
pub fn estimator_inputs(
    data: &LoggedData,
    probs: &[f64],
    predictions: &RewardPredictions,
) -> Result<EstimatorInputs, OpeError> {
    let n = data.len();
    let n_actions = data.n_actions();
    if probs.len() != n * n_actions {
        return Err(OpeError::InvalidConfig {
            message: format!("{} target probabilities for {n} rows × {n_actions} actions", probs.len()),
        });
    }
    let mut weights = Vec::with_capacity(n);
    let mut q_logged = Vec::with_capacity(n);
    let mut q_target = Vec::with_capacity(n);
    for (i, pi) in probs.chunks_exact(n_actions).enumerate() {
        let a = data.actions()[i];
        let q = predictions.row(i);
        weights.push(pi[a] / data.propensities()[i]);
        q_logged.push(q[a]);
        q_target.push(pi.iter().zip(q).map(|(p, q)| p * q).sum());
    }
    EstimatorInputs::new(data.rewards().to_vec(), weights, q_logged, q_target)
}

/// [`evaluate_with_progress`] without progress messages.
pub fn evaluate(data: &LoggedData, target: &dyn TargetPolicy, config: &OpeConfig) -> Result<OpeReport, OpeError> {
    evaluate_with_progress(data, target, config, &mut |_| {})
}

/// Estimates the value of `target` from `data`; `progress` receives a short message before
/// each stage.
pub fn evaluate_with_progress(
    data: &LoggedData,
    target: &dyn TargetPolicy,
    config: &OpeConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<OpeReport, OpeError> {
    if data.len() < 2 {
        return Err(OpeError::NotEnoughData {
            message: format!("{} logged row(s); intervals need at least 2", data.len()),
        });
    }
    progress("scoring the target policy");
    let probs = score_target(data, target)?;
    progress("fitting the reward model");
    let n_actions = data.n_actions();
    let logged_probs: Vec<f64> = (0..data.len()).map(|i| probs[i * n_actions + data.actions()[i]]).collect();
    let sample_weights = config.reward_model.fitting.sample_weights(&logged_probs, data.propensities());
    let predictions = RewardPredictions::cross_fit(data, sample_weights.as_deref(), &config.reward_model)?;
    let inputs = estimator_inputs(data, &probs, &predictions)?;
    let tau = match config.switch_tau {
        SwitchTau::Auto => select_switch_tau(&inputs),
        SwitchTau::Fixed(t) if t >= 0.0 && !t.is_nan() => t,
        SwitchTau::Fixed(t) => {
            return Err(OpeError::InvalidConfig { message: format!("Switch-DR threshold must be ≥ 0, got {t}") })
        }
    };
    // DR's coefficient is chosen once on the full sample; its bootstrap resamples the per-row
    // terms with that coefficient fixed (as for the reward model and Switch-DR's threshold).
    let dr = fit_dr(&inputs)?;
    let beta = dr.beta;
    let all_terms: Vec<_> = Estimator::ALL
        .iter()
        .map(|&e| if e == Estimator::Dr { dr_terms(&inputs, beta) } else { terms(e, &inputs, tau) })
        .collect();
    let points = Estimator::ALL
        .iter()
        .zip(&all_terms)
        .map(|(&e, t)| if e == Estimator::Dr { Ok(dr.estimate) } else { point_estimate(t, e.key()) })
        .collect::<Result<Vec<PointEstimate>, _>>()?;
    let bootstrap = if config.bootstrap > 0 {
        progress("bootstrapping");
        let cis = percentile_intervals(
            &all_terms,
            &BootstrapConfig { resamples: config.bootstrap, seed: config.seed, threads: config.threads },
        )?;
        cis.into_iter().map(Some).collect()
    } else {
        vec![None; Estimator::ALL.len()]
    };
    let on_policy_value = data.on_policy_value();
    let summary = |e: Estimator| {
        let j = e.index();
        let p = points[j];
        EstimateSummary {
            estimate: p.estimate,
            std_error: p.std_error,
            ci95: p.ci95,
            bootstrap_ci95: bootstrap[j],
            relative_to_logged: (on_policy_value != 0.0).then(|| p.estimate / on_policy_value - 1.0),
            tau: (e == Estimator::SwitchDr).then_some(tau),
            beta: (e == Estimator::Dr).then_some(beta),
        }
    };
    Ok(OpeReport {
        n: data.len(),
        ess: effective_sample_size(inputs.weights()),
        max_weight: max_weight(inputs.weights()),
        on_policy_value,
        estimators: Estimates {
            ipw: summary(Estimator::Ipw),
            snipw: summary(Estimator::Snipw),
            dm: summary(Estimator::Dm),
            dr: summary(Estimator::Dr),
            dr_classic: summary(Estimator::DrClassic),
            switch_dr: summary(Estimator::SwitchDr),
        },
        target: target.describe(),
        seed: config.seed,
        bootstrap_resamples: config.bootstrap,
        folds: predictions.folds(),
        reward_model: predictions.kind(),
    })
}

#[cfg(test)]
mod tests {
    //! Golden tests on the Open Bandit Dataset sample in `../shared/reference/obd` (or
    //! `$STRATEGIST_REFERENCE_DIR/obd`): 38 clicks in `random/all`, 42 in `bts/all`.

    use super::*;
    use crate::ope::bootstrap::{replicates, BootstrapConfig};
    use crate::ope::estimators::{estimate, terms, Estimator, EstimatorInputs};
    use crate::ope::obd::tests::obd;
    use crate::ope::{BernoulliTsConfig, PositionTablePolicy, TargetSpec, UniformPolicy};

    /// The uniform policy's value, known from the uniform-random logs: 38 / 10,000.
    const TRUTH_UNIFORM_ALL: f64 = 0.0038;

    fn config(bootstrap: usize) -> OpeConfig {
        OpeConfig::with_seed(0, bootstrap, 2)
    }

    fn width(ci: [f64; 2]) -> f64 {
        ci[1] - ci[0]
    }

    #[test]
    fn uniform_target_on_random_logs_gives_ipw_and_snipw_of_exactly_0_0038() {
        let data = obd("random", "all");
        let r = evaluate(&data, &UniformPolicy, &config(200)).unwrap();
        let e = &r.estimators;
        // OBD's random policy puts each of the 80 items at each position with probability
        // 1/80 = 0.0125, the logged propensity: every importance weight is exactly 1.
        assert_eq!(r.max_weight, 1.0);
        assert_eq!(r.ess, 10_000.0);
        assert_eq!(e.ipw.estimate, 0.0038);
        assert_eq!(e.snipw.estimate, 0.0038);
        assert_eq!(r.on_policy_value, 0.0038);
        assert_eq!(e.ipw.relative_to_logged, Some(0.0));
        for est in [e.dm, e.dr, e.dr_classic, e.switch_dr] {
            assert!(est.estimate > e.ipw.ci95[0] && est.estimate < e.ipw.ci95[1]);
        }
        // The bootstrap interval of a mean of 38 clicks brackets it, like the normal one.
        let boot = e.ipw.bootstrap_ci95.unwrap();
        assert!(boot[0] < 0.0038 && boot[1] > 0.0038);
        assert!((width(boot) / width(e.ipw.ci95) - 1.0).abs() < 0.15);
    }

    #[test]
    fn evaluating_the_logging_policy_gives_its_on_policy_value() {
        // random/all: the logging policy is the uniform one, known in full.
        let data = obd("random", "all");
        let r = evaluate(&data, &UniformPolicy, &config(0)).unwrap();
        assert_eq!(r.estimators.ipw.estimate, r.on_policy_value);
        assert_eq!(r.estimators.snipw.estimate, r.on_policy_value);
        // DR = on-policy value + mean(q̂^π − q̂): the residual mean of a model of the same data.
        let dr = r.estimators.dr;
        assert!((dr.estimate - r.on_policy_value).abs() < 0.05 * dr.std_error);

        // bts/all: the logging policy's full distribution is not in the data, but its weight on
        // every logged action is π_b/μ = 1, which is all IPW and SNIPW use.
        let data = obd("bts", "all");
        let n = data.len();
        let x = EstimatorInputs::new(data.rewards().to_vec(), vec![1.0; n], vec![0.0; n], vec![0.0; n]).unwrap();
        assert_eq!(estimate(Estimator::Ipw, &x, 0.0).unwrap().estimate, 0.0042);
        assert_eq!(estimate(Estimator::Snipw, &x, 0.0).unwrap().estimate, 0.0042);
        assert_eq!(data.on_policy_value(), 0.0042);
    }

    #[test]
    fn ipw_of_the_uniform_policy_from_thompson_logs_is_centred_on_the_truth() {
        let data = obd("bts", "all");
        let r = evaluate(&data, &UniformPolicy, &config(1_000)).unwrap();
        let ipw = r.estimators.ipw;
        // The truth is itself an estimate (38 clicks): compare with both errors combined.
        let truth_se = (0.0038f64 * (1.0 - 0.0038) / 10_000.0).sqrt();
        let z = (ipw.estimate - TRUTH_UNIFORM_ALL) / ipw.std_error.hypot(truth_se);
        assert!(z.abs() < 2.576, "IPW {} is {z:.2} standard errors from 0.0038", ipw.estimate);
        assert!(ipw.ci95[0] < TRUTH_UNIFORM_ALL && TRUTH_UNIFORM_ALL < ipw.ci95[1]);

        // Resampling check: the bootstrap distribution of IPW is centred on the full-sample IPW
        // (no resampling bias) and its percentile interval covers the truth.
        let n = data.len();
        let mut pi = vec![0.0; data.n_actions()];
        let mut w = Vec::with_capacity(n);
        for i in 0..n {
            UniformPolicy.action_probs(&data, i, &mut pi).unwrap();
            w.push(pi[data.actions()[i]] / data.propensities()[i]);
        }
        let x = EstimatorInputs::new(data.rewards().to_vec(), w, vec![0.0; n], vec![0.0; n]).unwrap();
        let reps =
            replicates(&[terms(Estimator::Ipw, &x, 0.0)], &BootstrapConfig { resamples: 2_000, seed: 1, threads: 0 })
                .unwrap();
        let mean = reps[0].iter().sum::<f64>() / reps[0].len() as f64;
        let sd = (reps[0].iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (reps[0].len() - 1) as f64).sqrt();
        assert!((mean - ipw.estimate).abs() < 3.0 * sd / (reps[0].len() as f64).sqrt());
        assert!((sd / ipw.std_error - 1.0).abs() < 0.1);
        let boot = r.estimators.ipw.bootstrap_ci95.unwrap();
        assert!(boot[0] < TRUTH_UNIFORM_ALL && TRUTH_UNIFORM_ALL < boot[1]);
        // DR's interval covers it too.
        let dr = r.estimators.dr;
        assert!(dr.ci95[0] < TRUTH_UNIFORM_ALL && TRUTH_UNIFORM_ALL < dr.ci95[1]);
    }

    #[test]
    fn dr_interval_is_no_wider_than_ipw_or_classic_dr_on_obd() {
        // On these logs the click model carries almost no signal (its cross-validated log loss
        // is no better than a constant's). Classic DR (β = 1) pays for that: its interval is
        // 1.0000× IPW's on random/all and 1.022–1.034× on bts/all over fold seeds 0–9 (the model's
        // intercept, fitted where Thompson sampling showed items, overshoots the click rate of the
        // rarely shown, high-weight items). DR fits β̂ instead (β̂ = −0.32 on random/all and 0.045
        // on bts/all at seed 0): the control variate explains ~0.01% of IPW's variance, so DR is
        // IPW in all but name and its honest (HC2) interval is IPW's to within the noise of an
        // interval width: at seed 0 the ratios are 0.99994 (random) and 0.99923 (bts); over fold
        // seeds 0–9 they span 0.9980–1.0015 and 0.9982–1.0035. The bound below is the measured
        // seed-0 fact, not a guarantee at every seed.
        for policy in ["random", "bts"] {
            let data = obd(policy, "all");
            let r = evaluate(&data, &UniformPolicy, &config(0)).unwrap();
            let e = &r.estimators;
            let ratio = width(e.dr.ci95) / width(e.ipw.ci95);
            assert!(ratio <= 1.0, "{policy}/all: DR/IPW interval width {ratio}");
            assert!(e.dr.std_error <= e.dr_classic.std_error, "{policy}/all: DR wider than classic DR");
            let beta = e.dr.beta.unwrap();
            assert!(beta.is_finite() && e.dr_classic.beta.is_none());
            // β̂ shifts the estimate by β̂ · mean(c), a small fraction of its standard error.
            assert!((e.dr.estimate - e.ipw.estimate).abs() < 0.05 * e.ipw.std_error, "{policy}/all: β̂ = {beta}");
        }
        // Classic DR is wider than IPW on bts/all: the reason DR fits β.
        let r = evaluate(&obd("bts", "all"), &UniformPolicy, &config(0)).unwrap();
        assert!(width(r.estimators.dr_classic.ci95) > 1.02 * width(r.estimators.ipw.ci95));
    }

    #[test]
    fn every_target_kind_evaluates_on_obd() {
        let data = obd("random", "all");
        // Fixed equal weights and an all-1/80 distribution file are the uniform policy.
        let all_items: Vec<String> = (0..80).map(|i| format!("{i}=1")).collect();
        let fixed: TargetSpec = format!("fixed:{}", all_items.join(",")).parse().unwrap();
        let dir = std::env::temp_dir().join(format!("ope-eval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("uniform.csv");
        let mut text = String::from("item,position,probability\n");
        for i in 0..80 {
            for k in 1..=3 {
                text.push_str(&format!("{i},{k},0.0125\n"));
            }
        }
        std::fs::write(&path, text).unwrap();
        for spec in [fixed, TargetSpec::Dist(path.clone())] {
            let target = spec.build(&data, 0).unwrap();
            let r = evaluate(&data, target.as_ref(), &config(0)).unwrap();
            assert!((r.estimators.ipw.estimate - 0.0038).abs() < 1e-15, "{spec}");
        }
        std::fs::remove_dir_all(&dir).unwrap();

        // Bernoulli Thompson sampling fitted on the logs: a seeded slate distribution.
        let config_ts = BernoulliTsConfig { n_sim: 20_000, seed: 3, ..BernoulliTsConfig::default() };
        let ts = crate::ope::fit_bernoulli_ts(&data, &config_ts).unwrap();
        assert_eq!(ts.n_positions(), 3);
        for k in 0..3 {
            let p = ts.position_probs(k).unwrap();
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let r = evaluate(&data, &ts, &config(100)).unwrap();
        assert!(r.ess < 10_000.0 && r.max_weight > 1.0);
        let again = evaluate(&data, &ts, &config(100)).unwrap();
        assert_eq!(r, again);
        let e = r.estimators;
        for est in [e.ipw, e.snipw, e.dm, e.dr, e.dr_classic, e.switch_dr] {
            assert!(est.estimate.is_finite() && est.ci95[0] <= est.estimate);
        }
    }

    #[test]
    fn a_policy_for_other_actions_or_a_bad_threshold_is_rejected() {
        let data = obd("random", "men");
        let wrong = PositionTablePolicy::from_weights("x", &[1.0; 5], 3).unwrap();
        let err = evaluate(&data, &wrong, &config(0)).unwrap_err();
        assert_eq!(err.code(), "ope_invalid_policy");
        let bad = OpeConfig { switch_tau: SwitchTau::Fixed(-1.0), ..config(0) };
        assert_eq!(evaluate(&data, &UniformPolicy, &bad).unwrap_err().code(), "ope_invalid_config");
        let fixed = OpeConfig { switch_tau: SwitchTau::Fixed(0.5), ..config(0) };
        let r = evaluate(&data, &UniformPolicy, &fixed).unwrap();
        // τ below every weight (all 1): Switch-DR is DM.
        assert_eq!(r.estimators.switch_dr.estimate, r.estimators.dm.estimate);
        assert_eq!(r.estimators.switch_dr.tau, Some(0.5));
    }
}
