//! Policies: turning an experiment's policy definition and the feedback joined
//! so far into a probability mass function (PMF) over its arms.
//!
//! This room is pure (no I/O, clock or global RNG): every randomised
//! computation takes its seed as an argument. A policy is described by a
//! [`PolicySpec`] (as written in experiment definitions); [`initial_state`] and
//! [`update_state`] produce a [`PolicyState`] — the context-free PMF stored in
//! a policy snapshot plus per-arm numbers for display. At decision time
//! [`explore`] restricts that PMF to the eligible arms, mixes in the
//! exploration floor and draws the arm from a hashed seed, so the logged
//! propensity is exactly the probability with which the arm was drawn.
//!
//! One file per policy kind: [`fixed`], [`epsilon_greedy`], [`thompson`]
//! (Beta-Bernoulli and Gaussian), [`linear`] (linear Thompson sampling and
//! LinUCB), [`neural`] (`neural_pg`, a softmax network trained off-policy).
//! The linear and neural kinds are contextual: their PMF depends on the
//! request's features, so they have no context-free snapshot PMF;
//! [`initial_linear_state`] / [`linear::LinearState`] and
//! [`initial_neural_state`] / [`neural::NeuralSnapshot`] hold their models,
//! and [`update_state`] refuses them with [`PolicyError::NeedsContext`].

pub mod epsilon_greedy;
pub mod explore;
pub mod fixed;
pub mod linear;
pub mod neural;
pub mod thompson;

use std::collections::{BTreeMap, HashSet};

/// Smallest number of Monte Carlo draws a Thompson snapshot may use.
pub const MIN_DRAWS: u32 = 10_000;
/// Largest number of Monte Carlo draws a Thompson snapshot may use.
pub const MAX_DRAWS: u32 = 1_000_000;
/// Monte Carlo draws used when a Thompson spec does not say.
pub const DEFAULT_DRAWS: u32 = 10_000;
/// Prior standard deviation of an arm's mean for `thompson_gaussian` when the
/// spec does not say. Weakly informative for per-visit revenue/profit in
/// ordinary currency units; set it to the metric's scale otherwise.
pub const DEFAULT_PRIOR_SD: f64 = 100.0;

/// Errors of the policy room. Every variant has a stable [`code`](Self::code).
///
/// `InvalidParameter` and `NoArms` are definition errors (HTTP 422);
/// `NoEligibleArm` and `FloorTooHigh` arise per request from targeting /
/// eligibility; `ArmCountMismatch`, `InvalidPmf` and `InvalidFeedback` mean a
/// caller handed inconsistent data (an internal error).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PolicyError {
    /// A policy parameter is out of range or inconsistent with the arms.
    #[error("invalid policy parameter `{field}`: {reason}")]
    InvalidParameter { field: String, reason: String },
    /// The experiment defines no arm.
    #[error("the experiment defines no arm; a policy needs at least one")]
    NoArms,
    /// No arm is eligible for this request.
    #[error("no arm is eligible for this request")]
    NoEligibleArm,
    /// `arms * min_propensity > 1`: the floor cannot be honoured.
    #[error(
        "min_propensity {min_propensity} is too high for {arms} eligible arms \
         (arms x min_propensity must be at most 1)"
    )]
    FloorTooHigh { min_propensity: f64, arms: usize },
    /// A per-arm slice does not have one entry per arm.
    #[error("`{what}` has {got} entries but there are {expected} arms")]
    ArmCountMismatch { what: String, expected: usize, got: usize },
    /// A PMF entry is negative or not finite.
    #[error("invalid PMF: {reason}")]
    InvalidPmf { reason: String },
    /// Joined feedback for an arm is impossible (non-finite, negative count
    /// of conversions, more conversions than exposures, …).
    #[error("invalid feedback for arm `{arm}`: {reason}")]
    InvalidFeedback { arm: String, reason: String },
    /// A context handed to a contextual policy has the wrong dimension or a
    /// non-finite feature, or names an unknown arm.
    #[error("invalid context: {reason}")]
    InvalidContext { reason: String },
    /// A stored policy state is malformed (wrong shapes, non-finite numbers).
    #[error("invalid policy state: {reason}")]
    InvalidState { reason: String },
    /// A contextual policy kind was asked for a context-free snapshot.
    #[error(
        "policy kind `{kind}` is contextual: it needs each request's features, which the service \
         does not feed policies yet (wired by issue 5's profile work)"
    )]
    NeedsContext { kind: &'static str },
}

impl PolicyError {
    /// Stable snake_case code for API error bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::InvalidParameter { .. } => "invalid_policy_parameter",
            PolicyError::NoArms => "no_arms",
            PolicyError::NoEligibleArm => "no_eligible_arm",
            PolicyError::FloorTooHigh { .. } => "min_propensity_too_high",
            PolicyError::ArmCountMismatch { .. } => "arm_count_mismatch",
            PolicyError::InvalidPmf { .. } => "invalid_pmf",
            PolicyError::InvalidFeedback { .. } => "invalid_feedback",
            PolicyError::InvalidContext { .. } => "invalid_context",
            PolicyError::InvalidState { .. } => "invalid_policy_state",
            PolicyError::NeedsContext { .. } => "policy_needs_context",
        }
    }

    fn param(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError::InvalidParameter { field: field.into(), reason: reason.into() }
    }
}

fn one() -> f64 {
    1.0
}

fn default_draws() -> u32 {
    DEFAULT_DRAWS
}

fn default_prior_sd() -> f64 {
    DEFAULT_PRIOR_SD
}

fn yes() -> bool {
    true
}

fn default_lambda() -> f64 {
    linear::DEFAULT_LAMBDA
}

fn default_v() -> f64 {
    linear::DEFAULT_V
}

fn default_alpha() -> f64 {
    linear::DEFAULT_ALPHA
}

fn default_lin_ts_draws() -> u32 {
    linear::DEFAULT_LIN_TS_DRAWS
}

/// Default `retrain_every` of `neural_pg`: a retrain costs seconds to minutes
/// of CPU, so the learner runs it at most this often.
pub const DEFAULT_RETRAIN_EVERY: &str = "15m";
/// Default `min_new_rows` of `neural_pg`.
pub const DEFAULT_MIN_NEW_ROWS: u64 = 100;
/// Default `max_train_rows` of `neural_pg`.
pub const DEFAULT_MAX_TRAIN_ROWS: u64 = 100_000;
/// Largest `max_train_rows` of `neural_pg`.
pub const MAX_TRAIN_ROWS: u64 = 10_000_000;

fn default_retrain_every() -> String {
    DEFAULT_RETRAIN_EVERY.to_string()
}

fn default_min_new_rows() -> u64 {
    DEFAULT_MIN_NEW_ROWS
}

fn default_max_train_rows() -> u64 {
    DEFAULT_MAX_TRAIN_ROWS
}

/// A policy as written in experiment definitions (TOML/JSON), e.g.
/// `[policy] kind = "thompson_beta"`. Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicySpec {
    /// A/B/n with fixed weights keyed by arm key; omitted = equal weights.
    Fixed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weights: Option<BTreeMap<String, f64>>,
    },
    /// Epsilon-greedy on the empirical mean reward.
    EpsilonGreedy { epsilon: f64 },
    /// Beta-Bernoulli Thompson sampling (binary reward, e.g. conversion).
    ThompsonBeta {
        #[serde(default = "one")]
        prior_alpha: f64,
        #[serde(default = "one")]
        prior_beta: f64,
        #[serde(default = "default_draws")]
        draws: u32,
    },
    /// Gaussian Thompson sampling (numeric reward, e.g. revenue).
    ThompsonGaussian {
        #[serde(default)]
        prior_mean: f64,
        #[serde(default = "default_prior_sd")]
        prior_sd: f64,
        #[serde(default = "default_draws")]
        draws: u32,
    },
    /// Linear Thompson sampling on a ridge regression per arm (contextual).
    LinTs {
        /// Dimension of the context vector (required).
        features: usize,
        /// Ridge prior precision, > 0.
        #[serde(default = "default_lambda")]
        lambda: f64,
        /// Exploration scale: `theta ~ N(theta_hat, v² A⁻¹)`, > 0.
        #[serde(default = "default_v")]
        v: f64,
        /// Monte Carlo draws per decision, 1..=10,000.
        #[serde(default = "default_lin_ts_draws")]
        draws: u32,
        /// Append a constant feature (a per-arm bias).
        #[serde(default = "yes")]
        intercept: bool,
    },
    /// LinUCB, disjoint model (contextual).
    LinUcb {
        /// Dimension of the context vector (required).
        features: usize,
        /// Ridge prior precision, > 0.
        #[serde(default = "default_lambda")]
        lambda: f64,
        /// Width of the confidence bonus, >= 0.
        #[serde(default = "default_alpha")]
        alpha: f64,
        /// Append a constant feature (a per-arm bias).
        #[serde(default = "yes")]
        intercept: bool,
    },
    /// Neural softmax policy trained off-policy by policy gradient
    /// (contextual; see [`neural`]). The model fields are
    /// [`neural::NeuralParams`]' (same names, defaults and ranges); the last
    /// three say when the background learner retrains it.
    NeuralPg {
        /// Dimension of the encoded profile feature vector (required).
        features: usize,
        #[serde(default = "neural::default_hidden")]
        hidden: usize,
        #[serde(default = "neural::default_embedding")]
        embedding: usize,
        #[serde(default = "neural::default_temperature")]
        temperature: f64,
        #[serde(default = "neural::default_clip")]
        clip: f64,
        #[serde(default = "neural::default_learning_rate")]
        learning_rate: f64,
        #[serde(default = "neural::default_epochs")]
        epochs: u32,
        #[serde(default = "neural::default_batch_size")]
        batch_size: usize,
        #[serde(default)]
        l2: f64,
        #[serde(default)]
        seed: u64,
        /// Training objective: `snipw` (default) or `dr` (doubly robust, with a ridge
        /// reward model per arm as the policy gradient's baseline).
        #[serde(default)]
        objective: neural::Objective,
        /// Optimism of the `dr` objective's reward model (its upper confidence bound), >= 0.
        #[serde(default)]
        optimism: f64,
        /// Entropy bonus of the training objective, >= 0.
        #[serde(default)]
        entropy: f64,
        /// A linear path from the features to the user representation.
        #[serde(default)]
        wide: bool,
        /// Shortest time between two retrains, a duration such as "15m" (> 0, at most 30 days).
        #[serde(default = "default_retrain_every")]
        retrain_every: String,
        /// Matured exposures new since the last retrain needed to retrain, >= 1.
        #[serde(default = "default_min_new_rows")]
        min_new_rows: u64,
        /// A retrain reads at most this many of the newest matured exposures, 1..=10,000,000.
        #[serde(default = "default_max_train_rows")]
        max_train_rows: u64,
    },
}

/// When the learner retrains a `neural_pg` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrainSchedule {
    /// Shortest time between two retrains.
    pub every: std::time::Duration,
    /// New matured exposures needed since the last retrain.
    pub min_new_rows: u64,
    /// Newest matured exposures a retrain reads at most.
    pub max_train_rows: u64,
}

/// Longest `retrain_every`.
pub const MAX_RETRAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

impl PolicySpec {
    /// Checks the parameters against the experiment's arms. Rejects, naming
    /// the field and the reason: an empty or duplicated arm list, `epsilon`
    /// outside [0, 1], non-finite or negative weights, weights naming unknown
    /// arms or missing arms, all-zero weights, non-finite priors or priors
    /// <= 0 (`prior_alpha`, `prior_beta`, `prior_sd`), `draws` outside
    /// [`MIN_DRAWS`, `MAX_DRAWS`]; for the linear kinds `features` outside
    /// 1..=[`linear::MAX_FEATURES`], `lambda` or `v` not > 0, `alpha` < 0,
    /// `draws` outside 1..=[`linear::MAX_LIN_TS_DRAWS`].
    pub fn validate(&self, arm_keys: &[String]) -> Result<(), PolicyError> {
        validate_arm_keys(arm_keys)?;
        match self {
            PolicySpec::Fixed { weights } => fixed::validate(weights.as_ref(), arm_keys),
            PolicySpec::EpsilonGreedy { epsilon } => epsilon_greedy::validate(*epsilon),
            PolicySpec::ThompsonBeta { prior_alpha, prior_beta, draws } => {
                positive_finite("prior_alpha", *prior_alpha)?;
                positive_finite("prior_beta", *prior_beta)?;
                validate_draws(*draws)
            }
            PolicySpec::ThompsonGaussian { prior_mean, prior_sd, draws } => {
                if !prior_mean.is_finite() {
                    return Err(PolicyError::param("prior_mean", format!("must be a finite number, got {prior_mean}")));
                }
                positive_finite("prior_sd", *prior_sd)?;
                validate_draws(*draws)
            }
            PolicySpec::LinTs { features, lambda, .. } | PolicySpec::LinUcb { features, lambda, .. } => {
                linear::validate_model(*features, *lambda)?;
                // Both kinds carry exploration parameters: `linear_exploration` is `Some`.
                self.linear_exploration().map_or(Ok(()), linear::validate_exploration)
            }
            PolicySpec::NeuralPg { retrain_every, min_new_rows, max_train_rows, .. } => {
                if let Some(params) = self.neural_params() {
                    params.validate()?;
                }
                match humantime::parse_duration(retrain_every.trim()) {
                    Ok(d) if d > MAX_RETRAIN_EVERY => {
                        return Err(PolicyError::param("retrain_every", "must be at most 30 days"))
                    }
                    Ok(d) if d.is_zero() => {
                        return Err(PolicyError::param("retrain_every", "must be longer than zero"))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(PolicyError::param(
                            "retrain_every",
                            format!("`{retrain_every}` is not a duration like \"15m\" or \"1h\" ({e})"),
                        ))
                    }
                }
                if *min_new_rows == 0 {
                    return Err(PolicyError::param("min_new_rows", "must be at least 1"));
                }
                if !(1..=MAX_TRAIN_ROWS).contains(max_train_rows) {
                    return Err(PolicyError::param(
                        "max_train_rows",
                        format!("must be between 1 and {MAX_TRAIN_ROWS}, got {max_train_rows}"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The model parameters of `neural_pg` (`None` for other kinds).
    pub fn neural_params(&self) -> Option<neural::NeuralParams> {
        match self {
            PolicySpec::NeuralPg {
                features,
                hidden,
                embedding,
                temperature,
                clip,
                learning_rate,
                epochs,
                batch_size,
                l2,
                seed,
                objective,
                optimism,
                entropy,
                wide,
                ..
            } => Some(neural::NeuralParams {
                features: *features,
                hidden: *hidden,
                embedding: *embedding,
                temperature: *temperature,
                clip: *clip,
                learning_rate: *learning_rate,
                epochs: *epochs,
                batch_size: *batch_size,
                l2: *l2,
                seed: *seed,
                objective: *objective,
                optimism: *optimism,
                entropy: *entropy,
                wide: *wide,
            }),
            _ => None,
        }
    }

    /// When the learner retrains `neural_pg` (`None` for other kinds, or an
    /// unparsable `retrain_every`, which `validate` refuses).
    pub fn retrain_schedule(&self) -> Option<RetrainSchedule> {
        match self {
            PolicySpec::NeuralPg { retrain_every, min_new_rows, max_train_rows, .. } => {
                humantime::parse_duration(retrain_every.trim()).ok().map(|every| RetrainSchedule {
                    every,
                    min_new_rows: *min_new_rows,
                    max_train_rows: *max_train_rows,
                })
            }
            _ => None,
        }
    }

    /// The context length a contextual kind reads (`features`); `None` for context-free kinds.
    pub fn context_dimension(&self) -> Option<usize> {
        match self {
            PolicySpec::LinTs { features, .. }
            | PolicySpec::LinUcb { features, .. }
            | PolicySpec::NeuralPg { features, .. } => Some(*features),
            _ => None,
        }
    }

    /// How a linear kind explores (`None` for context-free kinds).
    pub fn linear_exploration(&self) -> Option<linear::Exploration> {
        match self {
            PolicySpec::LinTs { v, draws, .. } => Some(linear::Exploration::Thompson { v: *v, draws: *draws }),
            PolicySpec::LinUcb { alpha, .. } => Some(linear::Exploration::Ucb { alpha: *alpha }),
            _ => None,
        }
    }

    /// Whether the kind's PMF depends on the request's context (`lin_ts`,
    /// `lin_ucb`, `neural_pg`).
    pub fn is_contextual(&self) -> bool {
        self.context_dimension().is_some()
    }

    /// Whether the kind is the neural policy (`neural_pg`).
    pub fn is_neural(&self) -> bool {
        matches!(self, PolicySpec::NeuralPg { .. })
    }

    /// The `kind` tag: `fixed`, `epsilon_greedy`, `thompson_beta`,
    /// `thompson_gaussian`, `lin_ts`, `lin_ucb` or `neural_pg`.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicySpec::Fixed { .. } => "fixed",
            PolicySpec::EpsilonGreedy { .. } => "epsilon_greedy",
            PolicySpec::ThompsonBeta { .. } => "thompson_beta",
            PolicySpec::ThompsonGaussian { .. } => "thompson_gaussian",
            PolicySpec::LinTs { .. } => "lin_ts",
            PolicySpec::LinUcb { .. } => "lin_ucb",
            PolicySpec::NeuralPg { .. } => "neural_pg",
        }
    }

    /// Whether the learner must feed a binary reward (0/1 per exposure, so
    /// `ArmFeedback::sum` counts conversions): true for `thompson_beta` only.
    pub fn wants_binary_reward(&self) -> bool {
        matches!(self, PolicySpec::ThompsonBeta { .. })
    }
}

fn validate_arm_keys(arm_keys: &[String]) -> Result<(), PolicyError> {
    if arm_keys.is_empty() {
        return Err(PolicyError::NoArms);
    }
    let mut seen = HashSet::with_capacity(arm_keys.len());
    for key in arm_keys {
        if !seen.insert(key.as_str()) {
            return Err(PolicyError::param("arms", format!("arm key `{key}` appears more than once")));
        }
    }
    Ok(())
}

fn positive_finite(field: &str, value: f64) -> Result<(), PolicyError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(PolicyError::param(field, format!("must be a finite number > 0, got {value}")))
    }
}

fn validate_draws(draws: u32) -> Result<(), PolicyError> {
    if (MIN_DRAWS..=MAX_DRAWS).contains(&draws) {
        Ok(())
    } else {
        Err(PolicyError::param("draws", format!("must be between {MIN_DRAWS} and {MAX_DRAWS}, got {draws}")))
    }
}

/// Joined feedback for one arm (index = arm position in the definition),
/// cumulative over all mature exposures of the experiment version.
/// For binary rewards `sum` is the number of exposures that converted.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArmFeedback {
    /// Exposures with a joined (mature) reward.
    pub n: u64,
    /// Sum of rewards.
    pub sum: f64,
    /// Sum of squared rewards.
    pub sum_sq: f64,
}

impl ArmFeedback {
    /// Empirical mean reward, `None` without exposures.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// Unbiased sample variance `(sum_sq - sum^2/n) / (n - 1)`, clamped at 0
    /// against cancellation; `None` when `n < 2`.
    pub fn sample_variance(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let n = self.n as f64;
        let var = (self.sum_sq - self.sum * self.sum / n) / (n - 1.0);
        Some(if var.is_finite() { var.max(0.0) } else { 0.0 })
    }
}

/// A policy snapshot's content: the context-free PMF over all arms (before
/// eligibility and the exploration floor, see [`explore::restrict_and_floor`]),
/// per-arm state for display, the seed used and the number of Monte Carlo
/// draws (0 when no Monte Carlo estimate was needed).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PolicyState {
    pub pmf: Vec<f64>,
    pub arms: Vec<ArmState>,
    pub seed: u64,
    pub draws: u32,
}

/// Per-arm numbers of a snapshot, for display. Fields a kind does not use are
/// `None` (and omitted when serialized).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArmState {
    /// Exposures with joined feedback.
    pub n: u64,
    /// Empirical mean reward (`None` when `n = 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Beta posterior alpha (`thompson_beta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Beta posterior beta (`thompson_beta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// Posterior mean of the arm's mean reward (Thompson kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_mean: Option<f64>,
    /// Posterior standard deviation of the arm's mean reward (Thompson kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_sd: Option<f64>,
    /// Per-observation standard deviation used in the likelihood
    /// (`thompson_gaussian`: the sample sd or its fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obs_sd: Option<f64>,
}

impl ArmState {
    /// Count and empirical mean only.
    pub fn empirical(feedback: &ArmFeedback) -> Self {
        ArmState {
            n: feedback.n,
            mean: feedback.mean(),
            alpha: None,
            beta: None,
            post_mean: None,
            post_sd: None,
            obs_sd: None,
        }
    }
}

/// Snapshot from the priors alone (no feedback yet).
pub fn initial_state(spec: &PolicySpec, arm_keys: &[String], seed: u64) -> Result<PolicyState, PolicyError> {
    let feedback = vec![ArmFeedback::default(); arm_keys.len()];
    update_state(spec, arm_keys, &feedback, seed)
}

/// Snapshot from cumulative feedback (`feedback.len() == arm_keys.len()`).
///
/// - `fixed`: normalised weights (feedback only shown).
/// - `epsilon_greedy`: `epsilon/k + (1 - epsilon)` spread over the arms with
///   the best empirical mean; arms without feedback count as tied-best.
/// - `thompson_*`: the posterior probability that each arm is best,
///   estimated once per snapshot with `draws` Monte Carlo draws from
///   `StdRng::seed_from_u64(seed)`, so the PMF (and every propensity drawn
///   from it) is exact for the snapshot. When all arms have the same
///   posterior the PMF is exactly uniform by symmetry and `draws` is 0.
///
/// - `lin_ts`, `lin_ucb`: [`PolicyError::NeedsContext`] — a contextual
///   policy has no context-free PMF (see [`linear`]).
///
/// The spec is validated first; feedback must be finite, `sum_sq >= 0`,
/// `n = 0` implies zero sums, and for `thompson_beta` `0 <= sum <= n`.
pub fn update_state(
    spec: &PolicySpec,
    arm_keys: &[String],
    feedback: &[ArmFeedback],
    seed: u64,
) -> Result<PolicyState, PolicyError> {
    spec.validate(arm_keys)?;
    if feedback.len() != arm_keys.len() {
        return Err(PolicyError::ArmCountMismatch {
            what: "feedback".into(),
            expected: arm_keys.len(),
            got: feedback.len(),
        });
    }
    validate_feedback(arm_keys, feedback, spec.wants_binary_reward())?;
    let empirical = || feedback.iter().map(ArmState::empirical).collect();
    match spec {
        PolicySpec::Fixed { weights } => {
            Ok(PolicyState { pmf: fixed::pmf(weights.as_ref(), arm_keys), arms: empirical(), seed, draws: 0 })
        }
        PolicySpec::EpsilonGreedy { epsilon } => {
            Ok(PolicyState { pmf: epsilon_greedy::pmf(*epsilon, feedback), arms: empirical(), seed, draws: 0 })
        }
        PolicySpec::ThompsonBeta { prior_alpha, prior_beta, draws } => {
            thompson::beta_state(*prior_alpha, *prior_beta, *draws, feedback, seed)
        }
        PolicySpec::ThompsonGaussian { prior_mean, prior_sd, draws } => {
            thompson::gaussian_state(*prior_mean, *prior_sd, *draws, feedback, seed)
        }
        PolicySpec::LinTs { .. } | PolicySpec::LinUcb { .. } | PolicySpec::NeuralPg { .. } => {
            Err(PolicyError::NeedsContext { kind: spec.kind() })
        }
    }
}

/// The prior model of a linear kind (`lin_ts`, `lin_ucb`): one ridge
/// regression per arm with `A = lambda I`, `b = 0`. Validates the spec;
/// [`PolicyError::InvalidParameter`] on `kind` for a context-free kind.
pub fn initial_linear_state(spec: &PolicySpec, arm_keys: &[String]) -> Result<linear::LinearState, PolicyError> {
    spec.validate(arm_keys)?;
    match spec {
        PolicySpec::LinTs { features, lambda, intercept, .. }
        | PolicySpec::LinUcb { features, lambda, intercept, .. } => {
            linear::LinearState::new(arm_keys.len(), *features, *intercept, *lambda)
        }
        other => Err(PolicyError::param("kind", format!("`{}` is not a linear policy kind", other.kind()))),
    }
}

/// The initial model of `neural_pg`: a freshly initialised network whose
/// weights are drawn from the spec's `seed` (on the CPU, so every process
/// gets the same bytes). Validates the spec; [`PolicyError::InvalidParameter`]
/// on `kind` for another kind.
pub fn initial_neural_state(spec: &PolicySpec, arm_keys: &[String]) -> Result<neural::NeuralSnapshot, PolicyError> {
    spec.validate(arm_keys)?;
    let params = spec
        .neural_params()
        .ok_or_else(|| PolicyError::param("kind", format!("`{}` is not the neural policy kind", spec.kind())))?;
    let policy = neural::NeuralPolicy::new(params, arm_keys.len(), &candle_core::Device::Cpu)?;
    Ok(policy.snapshot()?)
}

fn validate_feedback(arm_keys: &[String], feedback: &[ArmFeedback], binary: bool) -> Result<(), PolicyError> {
    for (key, fb) in arm_keys.iter().zip(feedback) {
        let bad = |reason: String| Err(PolicyError::InvalidFeedback { arm: key.clone(), reason });
        if !fb.sum.is_finite() || !fb.sum_sq.is_finite() {
            return bad(format!("sum ({}) and sum_sq ({}) must be finite", fb.sum, fb.sum_sq));
        }
        if fb.sum_sq < 0.0 {
            return bad(format!("sum_sq must be >= 0, got {}", fb.sum_sq));
        }
        if fb.n == 0 && (fb.sum != 0.0 || fb.sum_sq != 0.0) {
            return bad("n is 0 but sum or sum_sq is not".into());
        }
        if binary && !(0.0..=fb.n as f64).contains(&fb.sum) {
            return bad(format!("binary reward: conversions (sum = {}) must lie in [0, n = {}]", fb.sum, fb.n));
        }
    }
    Ok(())
}

/// Divides by the total so the entries sum to 1 (up to one rounding step).
/// Leaves the slice unchanged when the total is not positive and finite.
fn normalise(pmf: &mut [f64]) {
    let total: f64 = pmf.iter().sum();
    if total.is_finite() && total > 0.0 {
        for p in pmf.iter_mut() {
            *p /= total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn keys(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("arm{i}")).collect()
    }

    fn beta_spec() -> PolicySpec {
        PolicySpec::ThompsonBeta { prior_alpha: 1.0, prior_beta: 1.0, draws: DEFAULT_DRAWS }
    }

    fn gaussian_spec() -> PolicySpec {
        PolicySpec::ThompsonGaussian { prior_mean: 0.0, prior_sd: 1.0, draws: DEFAULT_DRAWS }
    }

    fn field_of(err: PolicyError) -> String {
        match err {
            PolicyError::InvalidParameter { field, .. } => field,
            other => panic!("expected InvalidParameter, got {other:?}"),
        }
    }

    #[test]
    fn spec_parses_from_json_with_defaults() {
        let spec: PolicySpec = serde_json::from_str(r#"{"kind":"thompson_beta"}"#).unwrap();
        assert_eq!(spec, beta_spec());
        let spec: PolicySpec = serde_json::from_str(r#"{"kind":"thompson_gaussian"}"#).unwrap();
        assert_eq!(
            spec,
            PolicySpec::ThompsonGaussian { prior_mean: 0.0, prior_sd: DEFAULT_PRIOR_SD, draws: DEFAULT_DRAWS }
        );
        let spec: PolicySpec = serde_json::from_str(r#"{"kind":"fixed"}"#).unwrap();
        assert_eq!(spec, PolicySpec::Fixed { weights: None });
        let spec: PolicySpec = serde_json::from_str(r#"{"kind":"fixed","weights":{"a":1,"b":3}}"#).unwrap();
        assert_eq!(spec.kind(), "fixed");
        let spec: PolicySpec = serde_json::from_str(r#"{"kind":"epsilon_greedy","epsilon":0.1}"#).unwrap();
        assert_eq!(spec, PolicySpec::EpsilonGreedy { epsilon: 0.1 });
    }

    #[test]
    fn spec_round_trips_through_json() {
        for spec in [
            PolicySpec::Fixed { weights: None },
            PolicySpec::Fixed { weights: Some(BTreeMap::from([("a".to_string(), 2.0)])) },
            PolicySpec::EpsilonGreedy { epsilon: 0.25 },
            beta_spec(),
            gaussian_spec(),
        ] {
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<PolicySpec>(&json).unwrap(), spec);
        }
    }

    #[test]
    fn spec_rejects_unknown_fields_and_kinds_with_a_clear_message() {
        let err = serde_json::from_str::<PolicySpec>(r#"{"kind":"epsilon_greedy","epsilon":0.1,"epsilom":0.2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `epsilom`"), "{err}");
        let err = serde_json::from_str::<PolicySpec>(r#"{"kind":"thompson_beta","alpha":2}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `alpha`"), "{err}");
        let err = serde_json::from_str::<PolicySpec>(r#"{"kind":"ucb"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown variant `ucb`"), "{err}");
        let err = serde_json::from_str::<PolicySpec>(r#"{"kind":"epsilon_greedy"}"#).unwrap_err().to_string();
        assert!(err.contains("missing field `epsilon`"), "{err}");
    }

    #[test]
    fn kind_and_binary_reward() {
        assert_eq!(PolicySpec::Fixed { weights: None }.kind(), "fixed");
        assert_eq!(PolicySpec::EpsilonGreedy { epsilon: 0.1 }.kind(), "epsilon_greedy");
        assert_eq!(beta_spec().kind(), "thompson_beta");
        assert_eq!(gaussian_spec().kind(), "thompson_gaussian");
        assert!(beta_spec().wants_binary_reward());
        assert!(!gaussian_spec().wants_binary_reward());
        assert!(!PolicySpec::EpsilonGreedy { epsilon: 0.1 }.wants_binary_reward());
        assert!(!PolicySpec::Fixed { weights: None }.wants_binary_reward());
    }

    #[test]
    fn validate_rejects_an_empty_arm_list() {
        let err = beta_spec().validate(&[]).unwrap_err();
        assert_eq!(err, PolicyError::NoArms);
        assert_eq!(err.code(), "no_arms");
    }

    #[test]
    fn validate_rejects_duplicate_arm_keys() {
        let arms = vec!["a".to_string(), "a".to_string()];
        assert_eq!(field_of(beta_spec().validate(&arms).unwrap_err()), "arms");
    }

    #[test]
    fn validate_rejects_epsilon_outside_unit_interval() {
        for epsilon in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
            let err = PolicySpec::EpsilonGreedy { epsilon }.validate(&keys(2)).unwrap_err();
            assert_eq!(err.code(), "invalid_policy_parameter");
            assert_eq!(field_of(err), "epsilon");
        }
        for epsilon in [0.0, 0.5, 1.0] {
            PolicySpec::EpsilonGreedy { epsilon }.validate(&keys(2)).unwrap();
        }
    }

    #[test]
    fn validate_rejects_bad_weights() {
        let arms = vec!["a".to_string(), "b".to_string()];
        let spec = |pairs: &[(&str, f64)]| PolicySpec::Fixed {
            weights: Some(pairs.iter().map(|(k, w)| (k.to_string(), *w)).collect()),
        };
        let cases: [(&[(&str, f64)], &str); 6] = [
            (&[("a", -1.0), ("b", 1.0)], "weights.a"),
            (&[("a", f64::NAN), ("b", 1.0)], "weights.a"),
            (&[("a", 1.0), ("b", f64::INFINITY)], "weights.b"),
            (&[("a", 1.0), ("b", 1.0), ("c", 1.0)], "weights.c"),
            (&[("a", 1.0)], "weights.b"),
            (&[("a", 0.0), ("b", 0.0)], "weights"),
        ];
        for (pairs, field) in cases {
            let err = spec(pairs).validate(&arms).unwrap_err();
            assert_eq!(field_of(err), field, "{pairs:?}");
        }
        spec(&[("a", 0.0), ("b", 2.0)]).validate(&arms).unwrap();
        PolicySpec::Fixed { weights: None }.validate(&arms).unwrap();
    }

    #[test]
    fn validate_rejects_bad_priors_and_draws() {
        let arms = keys(2);
        let beta = |a: f64, b: f64, d: u32| PolicySpec::ThompsonBeta { prior_alpha: a, prior_beta: b, draws: d };
        let gauss = |m: f64, s: f64, d: u32| PolicySpec::ThompsonGaussian { prior_mean: m, prior_sd: s, draws: d };
        let cases = [
            (beta(0.0, 1.0, DEFAULT_DRAWS), "prior_alpha"),
            (beta(-1.0, 1.0, DEFAULT_DRAWS), "prior_alpha"),
            (beta(f64::INFINITY, 1.0, DEFAULT_DRAWS), "prior_alpha"),
            (beta(1.0, 0.0, DEFAULT_DRAWS), "prior_beta"),
            (beta(1.0, f64::NAN, DEFAULT_DRAWS), "prior_beta"),
            (beta(1.0, 1.0, MIN_DRAWS - 1), "draws"),
            (beta(1.0, 1.0, MAX_DRAWS + 1), "draws"),
            (gauss(0.0, 0.0, DEFAULT_DRAWS), "prior_sd"),
            (gauss(0.0, -2.0, DEFAULT_DRAWS), "prior_sd"),
            (gauss(f64::NAN, 1.0, DEFAULT_DRAWS), "prior_mean"),
            (gauss(0.0, 1.0, 0), "draws"),
        ];
        for (spec, field) in cases {
            assert_eq!(field_of(spec.validate(&arms).unwrap_err()), field);
        }
        beta(0.5, 2.0, MAX_DRAWS).validate(&arms).unwrap();
        gauss(-3.0, 0.1, MIN_DRAWS).validate(&arms).unwrap();
    }

    #[test]
    fn update_rejects_feedback_of_the_wrong_length() {
        let err = update_state(&beta_spec(), &keys(3), &[ArmFeedback::default(); 2], 1).unwrap_err();
        assert_eq!(err, PolicyError::ArmCountMismatch { what: "feedback".into(), expected: 3, got: 2 });
        assert_eq!(err.code(), "arm_count_mismatch");
    }

    #[test]
    fn update_rejects_impossible_feedback() {
        let fb = |n, sum, sum_sq| ArmFeedback { n, sum, sum_sq };
        let cases = [
            (beta_spec(), fb(10, 11.0, 11.0)),
            (beta_spec(), fb(10, -1.0, 1.0)),
            (gaussian_spec(), fb(10, f64::NAN, 1.0)),
            (gaussian_spec(), fb(10, 1.0, -1.0)),
            (gaussian_spec(), fb(0, 1.0, 1.0)),
            (PolicySpec::EpsilonGreedy { epsilon: 0.1 }, fb(3, 1.0, f64::INFINITY)),
        ];
        for (spec, bad) in cases {
            let err = update_state(&spec, &keys(2), &[ArmFeedback::default(), bad], 1).unwrap_err();
            assert_eq!(err.code(), "invalid_feedback", "{bad:?}");
            assert!(matches!(err, PolicyError::InvalidFeedback { ref arm, .. } if arm == "arm1"));
        }
        // Revenue may exceed n and be negative for Gaussian policies.
        update_state(&gaussian_spec(), &keys(1), &[fb(2, -50.0, 1300.0)], 1).unwrap();
    }

    #[test]
    fn update_validates_the_spec() {
        let err = update_state(&PolicySpec::EpsilonGreedy { epsilon: 2.0 }, &keys(2), &[ArmFeedback::default(); 2], 1)
            .unwrap_err();
        assert_eq!(field_of(err), "epsilon");
    }

    #[test]
    fn error_codes_are_stable() {
        let cases = [
            (PolicyError::param("x", "y"), "invalid_policy_parameter"),
            (PolicyError::NoArms, "no_arms"),
            (PolicyError::NoEligibleArm, "no_eligible_arm"),
            (PolicyError::FloorTooHigh { min_propensity: 0.5, arms: 3 }, "min_propensity_too_high"),
            (PolicyError::InvalidPmf { reason: "x".into() }, "invalid_pmf"),
            (PolicyError::InvalidContext { reason: "x".into() }, "invalid_context"),
            (PolicyError::InvalidState { reason: "x".into() }, "invalid_policy_state"),
            (PolicyError::NeedsContext { kind: "lin_ts" }, "policy_needs_context"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn state_serializes_without_unused_fields() {
        let state = initial_state(&PolicySpec::Fixed { weights: None }, &keys(2), 7).unwrap();
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json, serde_json::json!({"pmf": [0.5, 0.5], "arms": [{"n": 0}, {"n": 0}], "seed": 7, "draws": 0}));
        let back: PolicyState = serde_json::from_value(json).unwrap();
        assert_eq!(back, state);
    }

    fn lin_ts(features: usize) -> PolicySpec {
        PolicySpec::LinTs {
            features,
            lambda: linear::DEFAULT_LAMBDA,
            v: linear::DEFAULT_V,
            draws: linear::DEFAULT_LIN_TS_DRAWS,
            intercept: true,
        }
    }

    #[test]
    fn linear_specs_parse_with_defaults_and_require_the_feature_dimension() {
        let spec: PolicySpec = serde_json::from_str(r#"{"kind":"lin_ts","features":20}"#).unwrap();
        assert_eq!(spec, lin_ts(20));
        assert_eq!(spec.kind(), "lin_ts");
        assert!(spec.is_contextual() && !spec.wants_binary_reward());
        let spec: PolicySpec =
            toml::from_str("kind = \"lin_ucb\"\nfeatures = 8\nalpha = 0.3\nintercept = false").unwrap();
        assert_eq!(spec, PolicySpec::LinUcb { features: 8, lambda: 1.0, alpha: 0.3, intercept: false });
        assert_eq!(spec.linear_exploration(), Some(linear::Exploration::Ucb { alpha: 0.3 }));
        assert!(!beta_spec().is_contextual());
        let err = serde_json::from_str::<PolicySpec>(r#"{"kind":"lin_ts"}"#).unwrap_err().to_string();
        assert!(err.contains("missing field `features`"), "{err}");
        let err =
            serde_json::from_str::<PolicySpec>(r#"{"kind":"lin_ucb","features":3,"v":1}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `v`"), "{err}");
        let json = serde_json::to_string(&lin_ts(5)).unwrap();
        assert_eq!(serde_json::from_str::<PolicySpec>(&json).unwrap(), lin_ts(5));
    }

    #[test]
    fn validate_rejects_bad_linear_parameters_naming_the_field() {
        let arms = keys(3);
        let ts = |features, lambda, v, draws| PolicySpec::LinTs { features, lambda, v, draws, intercept: true };
        let ucb = |features, lambda, alpha| PolicySpec::LinUcb { features, lambda, alpha, intercept: true };
        let cases = [
            (ts(0, 1.0, 0.2, 64), "features"),
            (ts(linear::MAX_FEATURES + 1, 1.0, 0.2, 64), "features"),
            (ts(4, 0.0, 0.2, 64), "lambda"),
            (ts(4, f64::NAN, 0.2, 64), "lambda"),
            (ts(4, 1.0, 0.0, 64), "v"),
            (ts(4, 1.0, f64::INFINITY, 64), "v"),
            (ts(4, 1.0, 0.2, 0), "draws"),
            (ts(4, 1.0, 0.2, linear::MAX_LIN_TS_DRAWS + 1), "draws"),
            (ucb(4, -1.0, 1.0), "lambda"),
            (ucb(4, 1.0, -0.1), "alpha"),
            (ucb(4, 1.0, f64::NAN), "alpha"),
        ];
        for (spec, field) in cases {
            assert_eq!(field_of(spec.validate(&arms).unwrap_err()), field, "{spec:?}");
        }
        ts(20, 0.5, 0.1, 1).validate(&arms).unwrap();
        ucb(1, 1.0, 0.0).validate(&arms).unwrap();
    }

    #[test]
    fn linear_kinds_have_no_context_free_snapshot_but_an_initial_model() {
        let err = initial_state(&lin_ts(4), &keys(3), 1).unwrap_err();
        assert_eq!(err, PolicyError::NeedsContext { kind: "lin_ts" });
        assert_eq!(err.code(), "policy_needs_context");
        assert!(err.to_string().contains("issue 5"), "{err}");
        let ucb = PolicySpec::LinUcb { features: 4, lambda: 2.0, alpha: 1.0, intercept: false };
        assert_eq!(initial_state(&ucb, &keys(3), 1).unwrap_err().code(), "policy_needs_context");
        let model = initial_linear_state(&ucb, &keys(3)).unwrap();
        assert_eq!((model.arms(), model.features(), model.dim(), model.lambda()), (3, 4, 4, 2.0));
        assert_eq!(field_of(initial_linear_state(&beta_spec(), &keys(3)).unwrap_err()), "kind");
        assert_eq!(initial_linear_state(&lin_ts(4), &[]).unwrap_err(), PolicyError::NoArms);
    }

    fn neural(features: usize) -> PolicySpec {
        serde_json::from_value(serde_json::json!({"kind": "neural_pg", "features": features})).unwrap()
    }

    #[test]
    fn neural_pg_parses_with_the_neural_params_defaults_and_is_contextual() {
        let spec: PolicySpec = toml::from_str(
            "kind = \"neural_pg\"\nfeatures = 5\nhidden = 8\nepochs = 3\nlearning_rate = 0.05\nseed = 4\n\
             retrain_every = \"1h\"\nmin_new_rows = 50",
        )
        .unwrap();
        assert_eq!(spec.kind(), "neural_pg");
        assert!(spec.is_contextual() && spec.is_neural() && !spec.wants_binary_reward());
        assert_eq!(spec.linear_exploration(), None);
        assert_eq!(spec.context_dimension(), Some(5));
        let params = spec.neural_params().unwrap();
        let want =
            neural::NeuralParams { hidden: 8, epochs: 3, learning_rate: 0.05, seed: 4, ..neural::NeuralParams::new(5) };
        assert_eq!(params, want);
        assert_eq!(
            spec.retrain_schedule(),
            Some(RetrainSchedule {
                every: std::time::Duration::from_secs(3600),
                min_new_rows: 50,
                max_train_rows: DEFAULT_MAX_TRAIN_ROWS
            })
        );
        spec.validate(&keys(3)).unwrap();
        // The objective: `snipw` unless `dr` is asked for; anything else is refused by name.
        assert_eq!(params.objective, neural::Objective::Snipw);
        let dr: PolicySpec = toml::from_str("kind = \"neural_pg\"\nfeatures = 5\nobjective = \"dr\"").unwrap();
        assert_eq!(dr.neural_params().unwrap().objective, neural::Objective::Dr);
        let bad = toml::from_str::<PolicySpec>("kind = \"neural_pg\"\nfeatures = 5\nobjective = \"ips\"");
        assert!(bad.unwrap_err().to_string().contains("unknown variant `ips`"));
        // Defaults: NeuralParams' own, and the learner's schedule.
        let d = neural(20);
        assert_eq!(d.neural_params().unwrap(), neural::NeuralParams::new(20));
        assert_eq!(d.retrain_schedule().unwrap().every, std::time::Duration::from_secs(15 * 60));
        assert_eq!(d.retrain_schedule().unwrap().min_new_rows, DEFAULT_MIN_NEW_ROWS);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<PolicySpec>(&json).unwrap(), spec);
        // Required and unknown fields.
        let err = serde_json::from_str::<PolicySpec>(r#"{"kind":"neural_pg"}"#).unwrap_err().to_string();
        assert!(err.contains("missing field `features`"), "{err}");
        let err = serde_json::from_str::<PolicySpec>(r#"{"kind":"neural_pg","features":3,"lr":0.1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `lr`"), "{err}");
        assert!(
            !lin_ts(3).is_neural() && lin_ts(3).neural_params().is_none() && lin_ts(3).retrain_schedule().is_none()
        );
    }

    #[test]
    fn neural_pg_rejects_bad_parameters_naming_the_field() {
        let arms = keys(3);
        let with = |field: &str, value: serde_json::Value| {
            let mut v = serde_json::json!({"kind": "neural_pg", "features": 4});
            v[field] = value;
            serde_json::from_value::<PolicySpec>(v).unwrap()
        };
        let cases = [
            (with("features", 0.into()), "features"),
            (with("features", (neural::MAX_FEATURES + 1).into()), "features"),
            (with("hidden", 0.into()), "hidden"),
            (with("embedding", 0.into()), "embedding"),
            (with("temperature", 0.0.into()), "temperature"),
            (with("clip", 1.0.into()), "clip"),
            (with("learning_rate", 2.0.into()), "learning_rate"),
            (with("epochs", 0.into()), "epochs"),
            (with("batch_size", 0.into()), "batch_size"),
            (with("l2", (-0.5).into()), "l2"),
            (with("retrain_every", "soon".into()), "retrain_every"),
            (with("retrain_every", "0s".into()), "retrain_every"),
            (with("retrain_every", "400d".into()), "retrain_every"),
            (with("min_new_rows", 0.into()), "min_new_rows"),
            (with("max_train_rows", 0.into()), "max_train_rows"),
        ];
        for (spec, field) in cases {
            let err = spec.validate(&arms).unwrap_err();
            assert_eq!(err.code(), "invalid_policy_parameter");
            assert_eq!(field_of(err), field, "{spec:?}");
        }
        assert_eq!(neural(4).validate(&[]).unwrap_err(), PolicyError::NoArms);
    }

    #[test]
    fn neural_pg_has_no_context_free_snapshot_but_a_seeded_initial_network() {
        let spec = with_small_net(4, 3);
        assert_eq!(initial_state(&spec, &keys(3), 1).unwrap_err().code(), "policy_needs_context");
        let a = initial_neural_state(&spec, &keys(3)).unwrap();
        assert_eq!((a.arms, a.params.features, a.params.seed), (3, 4, 3));
        assert_eq!(a, initial_neural_state(&spec, &keys(3)).unwrap(), "same seed, same weights");
        assert_ne!(a.weights, initial_neural_state(&with_small_net(4, 4), &keys(3)).unwrap().weights);
        assert_eq!(field_of(initial_neural_state(&lin_ts(4), &keys(3)).unwrap_err()), "kind");
        assert_eq!(field_of(initial_linear_state(&spec, &keys(3)).unwrap_err()), "kind");
    }

    fn with_small_net(features: usize, seed: u64) -> PolicySpec {
        serde_json::from_value(
            serde_json::json!({"kind": "neural_pg", "features": features, "hidden": 4, "embedding": 4, "seed": seed}),
        )
        .unwrap()
    }

    #[test]
    fn sample_variance_matches_the_textbook_formula() {
        // Rewards 1, 2, 3, 4: mean 2.5, sample variance 5/3.
        let fb = ArmFeedback { n: 4, sum: 10.0, sum_sq: 30.0 };
        assert!((fb.sample_variance().unwrap() - 5.0 / 3.0).abs() < 1e-12);
        assert_eq!(fb.mean(), Some(2.5));
        assert_eq!(ArmFeedback::default().mean(), None);
        assert_eq!(ArmFeedback { n: 1, sum: 1.0, sum_sq: 1.0 }.sample_variance(), None);
    }

    fn any_spec() -> impl Strategy<Value = PolicySpec> {
        prop_oneof![
            Just(PolicySpec::Fixed { weights: None }),
            (0.0f64..=1.0).prop_map(|epsilon| PolicySpec::EpsilonGreedy { epsilon }),
            (0.1f64..5.0, 0.1f64..5.0).prop_map(|(a, b)| PolicySpec::ThompsonBeta {
                prior_alpha: a,
                prior_beta: b,
                draws: MIN_DRAWS,
            }),
            (-5.0f64..5.0, 0.1f64..10.0).prop_map(|(m, s)| PolicySpec::ThompsonGaussian {
                prior_mean: m,
                prior_sd: s,
                draws: MIN_DRAWS,
            }),
        ]
    }

    /// Binary feedback (valid for every kind): n exposures, c <= n conversions.
    fn any_feedback(k: usize) -> impl Strategy<Value = Vec<ArmFeedback>> {
        proptest::collection::vec(
            (0u64..500, 0.0f64..=1.0).prop_map(|(n, rate)| {
                let c = (n as f64 * rate).floor();
                ArmFeedback { n, sum: c, sum_sq: c }
            }),
            k,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn every_kind_gives_a_pmf_that_sums_to_one_and_is_reproducible(
            spec in any_spec(),
            (k, feedback) in (1usize..8).prop_flat_map(|k| (Just(k), any_feedback(k))),
            seed in any::<u64>(),
        ) {
            let arms = keys(k);
            let state = update_state(&spec, &arms, &feedback, seed).unwrap();
            prop_assert_eq!(state.pmf.len(), k);
            prop_assert_eq!(state.arms.len(), k);
            prop_assert!(state.pmf.iter().all(|p| p.is_finite() && *p >= 0.0));
            prop_assert!((state.pmf.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            let again = update_state(&spec, &arms, &feedback, seed).unwrap();
            prop_assert_eq!(again, state);
        }
    }
}
