//! The neural softmax policy (`neural_pg`): an attention-based recommender
//! built with candle-nn, trained off-policy by policy gradient on logged
//! exposures, and scored in batches on whatever candle `Device` it is given.
//!
//! Architecture ([`NeuralNet`], weight names in brackets):
//!
//! - user encoder: an MLP over the encoded profile feature vector (dimension
//!   `features`): `u = relu(W₂ relu(W₁ x + b₁) + b₂)` [`user.in`, `user.out`];
//! - behaviour encoder: the unit's last ≤ [`MAX_EVENTS`] events, each encoded
//!   by [`encode_events`] (kind one-hot, hashed category bucket, `log1p`
//!   amount, `log1p` age in days), projected to `e_t` [`events.in`], then one
//!   masked single-head self-attention layer
//!   `c_t = e_t + Σ_s softmax_s(q_t·k_s/√h) v_s` [`events.q|k|v`] (Vaswani et
//!   al., "Attention Is All You Need", NeurIPS 2017, §3.2.1), mean-pooled over
//!   the real (unmasked) events;
//! - user representation `q = W_f [u; pooled] + b_f` [`fuse`];
//! - learned arm embeddings `k_a` [`arms.weight`], and scaled dot-product
//!   attention between the user and each arm: `score_a = q·k_a / √h`;
//! - `π_θ(a|x) = softmax_a(score_a / temperature)`; at decision time the
//!   exploration floor is mixed in by [`explore::restrict_and_floor`].
//!
//! Training ([`NeuralPolicy::train`]) maximises, by AdamW, the clipped
//! self-normalised IPW estimate of the policy's value on logged rows
//! `(x_i, a_i, p_i, r_i)` (Swaminathan & Joachims, "The Self-Normalized
//! Estimator for Counterfactual Learning", NeurIPS 2015, eq. 6 — Norm-POEM's
//! estimator; the clipping of the weights at `M` is POEM's, Swaminathan &
//! Joachims, "Counterfactual Risk Minimization", ICML 2015, §3):
//!
//! `V̂(θ) = Σ_i w_i (r_i − b) / Σ_i w_i`, with `w_i = min(π_θ(a_i|x_i) / p_i, clip)`
//!
//! over each minibatch, `b` the mean logged reward. Note that for a constant
//! `b` this is `V̂_SN(θ) − b`, so the baseline does not change the gradient
//! `∇V̂ = Σ_i ∇w_i (r_i − V̂_SN) / Σ_j w_j`: the self-normalised estimator
//! carries its own baseline `V̂_SN`; centring the rewards by `b` only keeps
//! the sums small. Clipped weights (`w_i = clip`) carry no gradient. The
//! objective is over the softmax `π_θ` (before the floor); `l2` is AdamW's
//! decoupled weight decay (Loshchilov & Hutter, ICLR 2019).
//!
//! Weights are initialised from the seed (candle cannot seed its CPU RNG),
//! minibatches are shuffled with the seed, so training on CPU is
//! deterministic for a seed. The same struct serves: [`NeuralPolicy::snapshot`]
//! stores the weights as safetensors bytes (hex) in JSON, and
//! [`NeuralPolicy::from_snapshot`] loads them on any device.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{linear, linear_no_bias, Linear, Optimizer, VarBuilder, VarMap};
use chrono::NaiveDateTime;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{explore, PolicyError};
use crate::profile::{Event, EventKind, RECENT_EVENTS};

/// Events read per unit (the profile keeps this many).
pub const MAX_EVENTS: usize = RECENT_EVENTS;
/// Hash buckets of an event's category (one-hot; no category sets none).
pub const CATEGORY_BUCKETS: usize = 16;
/// Width of one encoded event: kind one-hot (4), category buckets, `log1p`
/// amount, `log1p` age in days.
pub const EVENT_DIM: usize = 4 + CATEGORY_BUCKETS + 2;
/// Largest declared feature dimension.
pub const MAX_FEATURES: usize = 1_024;
/// Largest hidden / embedding size.
pub const MAX_WIDTH: usize = 1_024;
/// Largest number of training epochs.
pub const MAX_EPOCHS: u32 = 10_000;
/// Largest minibatch.
pub const MAX_BATCH: usize = 65_536;

/// Errors of the neural policy. [`code`](Self::code) gives the stable code;
/// `From<NeuralError> for PolicyError` maps them into the policy room's errors.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum NeuralError {
    /// A parameter is out of range.
    #[error("invalid policy parameter `{field}`: {reason}")]
    InvalidParameter { field: String, reason: String },
    /// The policy has no arm.
    #[error("the experiment defines no arm; a policy needs at least one")]
    NoArms,
    /// An input row (context, logged arm, propensity, reward) is malformed.
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    /// Stored weights do not fit the declared model.
    #[error("invalid neural weights: {reason}")]
    InvalidWeights { reason: String },
    /// Training produced non-finite weights; the policy keeps the weights it had.
    #[error("training diverged (non-finite weights after {steps} steps); the previous weights are kept")]
    Diverged { steps: u64 },
    /// candle failed (an internal error: shapes are checked before).
    #[error("candle: {0}")]
    Backend(String),
}

impl NeuralError {
    /// Stable snake_case code for API error bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            NeuralError::InvalidParameter { .. } => "invalid_policy_parameter",
            NeuralError::NoArms => "no_arms",
            NeuralError::InvalidInput { .. } => "invalid_context",
            NeuralError::InvalidWeights { .. } => "invalid_policy_state",
            NeuralError::Diverged { .. } => "training_diverged",
            NeuralError::Backend(_) => "neural_backend_error",
        }
    }

    fn param(field: &str, reason: impl Into<String>) -> Self {
        NeuralError::InvalidParameter { field: field.into(), reason: reason.into() }
    }

    fn input(reason: impl Into<String>) -> Self {
        NeuralError::InvalidInput { reason: reason.into() }
    }
}

impl From<candle_core::Error> for NeuralError {
    fn from(e: candle_core::Error) -> Self {
        NeuralError::Backend(e.to_string())
    }
}

impl From<NeuralError> for PolicyError {
    fn from(e: NeuralError) -> Self {
        match e {
            NeuralError::InvalidParameter { field, reason } => PolicyError::InvalidParameter { field, reason },
            NeuralError::NoArms => PolicyError::NoArms,
            NeuralError::InvalidInput { reason } => PolicyError::InvalidContext { reason },
            NeuralError::InvalidWeights { reason } => PolicyError::InvalidState { reason },
            NeuralError::Diverged { steps } => {
                PolicyError::InvalidState { reason: NeuralError::Diverged { steps }.to_string() }
            }
            NeuralError::Backend(reason) => PolicyError::InvalidState { reason: format!("candle: {reason}") },
        }
    }
}

pub(crate) fn default_hidden() -> usize {
    32
}
pub(crate) fn default_embedding() -> usize {
    16
}
pub(crate) fn default_temperature() -> f64 {
    1.0
}
pub(crate) fn default_clip() -> f64 {
    10.0
}
pub(crate) fn default_learning_rate() -> f64 {
    0.01
}
pub(crate) fn default_epochs() -> u32 {
    20
}
pub(crate) fn default_batch_size() -> usize {
    256
}

/// What [`NeuralPolicy::train`] maximises over the logged rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The clipped self-normalised IPW estimate of the policy's value (Norm-POEM's
    /// estimator): only the logged arm of each row carries a gradient.
    #[default]
    Snipw,
    /// The doubly robust estimate (Dudík, Langford & Li, "Doubly Robust Policy
    /// Evaluation and Learning", ICML 2011): `Σ_a π_θ(a|x) q̂(x, a) + w (r − q̂(x, a_i))`
    /// with clipped `w`, where `q̂` is a ridge regression per arm on the features, fitted on
    /// the same rows before each training run. The reward model is the action-dependent
    /// baseline of the policy gradient: every arm of every row gets a gradient through
    /// the first term, and the importance-weighted residual corrects the model's bias.
    Dr,
}

/// Parameters of `neural_pg` (as a definition would write them; unknown
/// fields are rejected). Only `features` is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeuralParams {
    /// Dimension of the encoded profile feature vector, 1..=[`MAX_FEATURES`].
    pub features: usize,
    /// Width of the user MLP's hidden layer, 1..=[`MAX_WIDTH`].
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Width `h` of the user representation, event encodings and arm embeddings, 1..=[`MAX_WIDTH`].
    #[serde(default = "default_embedding")]
    pub embedding: usize,
    /// Softmax temperature, finite and > 0 (larger explores more).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Importance-weight clip `M`, finite and > 1.
    #[serde(default = "default_clip")]
    pub clip: f64,
    /// AdamW learning rate, finite, in (0, 1].
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Passes over the logged rows per training run, 1..=[`MAX_EPOCHS`].
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    /// Minibatch size, 1..=[`MAX_BATCH`].
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// AdamW decoupled weight decay, finite and >= 0.
    #[serde(default)]
    pub l2: f64,
    /// Seed of the weight initialisation and of the minibatch shuffles.
    #[serde(default)]
    pub seed: u64,
    /// The training objective (default `snipw`).
    #[serde(default)]
    pub objective: Objective,
    /// Optimism `α` of the doubly robust objective's reward model (default 0, finite, at
    /// least 0, only with `objective = "dr"`): the policy is trained against
    /// `q̂(x, a) + α √(xᵀA_a⁻¹x)`, the ridge model's upper confidence bound as in LinUCB
    /// (Li, Chu, Langford & Schapire, WWW 2010), so arms the log says little about in a
    /// context keep probability until their data settle the question.
    #[serde(default)]
    pub optimism: f64,
    /// Entropy bonus `τ` (default 0, finite and >= 0): the objective gains `τ · H(π_θ(·|x))`
    /// averaged over the rows (Williams & Peng, "Function Optimization using Connectionist
    /// Reinforcement Learning Algorithms", 1991). It keeps the softmax from saturating on an
    /// arm early, where the gradient of any other arm's logit vanishes (the plateaus of
    /// softmax policy gradient: Mei, Xiao, Szepesvári & Schuurmans, ICML 2020).
    #[serde(default)]
    pub entropy: f64,
    /// A linear ("wide") path from the profile features to the user representation, added
    /// to the deep one (default false; the wide part of Cheng et al., "Wide & Deep Learning
    /// for Recommender Systems", DLRS 2016): with it, `score_a` can be exactly linear in
    /// the features, which the ReLU tower only approximates. Adds the tensor `user.wide`.
    #[serde(default)]
    pub wide: bool,
}

impl NeuralParams {
    /// Parameters with defaults for a feature dimension.
    pub fn new(features: usize) -> Self {
        NeuralParams {
            features,
            hidden: default_hidden(),
            embedding: default_embedding(),
            temperature: default_temperature(),
            clip: default_clip(),
            learning_rate: default_learning_rate(),
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            l2: 0.0,
            seed: 0,
            objective: Objective::Snipw,
            optimism: 0.0,
            entropy: 0.0,
            wide: false,
        }
    }

    /// Rejects out-of-range parameters, naming the field and the reason.
    pub fn validate(&self) -> Result<(), NeuralError> {
        let range = |field: &str, v: usize, hi: usize| {
            if (1..=hi).contains(&v) {
                Ok(())
            } else {
                Err(NeuralError::param(field, format!("must be between 1 and {hi}, got {v}")))
            }
        };
        range("features", self.features, MAX_FEATURES)?;
        range("hidden", self.hidden, MAX_WIDTH)?;
        range("embedding", self.embedding, MAX_WIDTH)?;
        range("batch_size", self.batch_size, MAX_BATCH)?;
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return Err(NeuralError::param(
                "epochs",
                format!("must be between 1 and {MAX_EPOCHS}, got {}", self.epochs),
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(NeuralError::param(
                "temperature",
                format!("must be a finite number > 0, got {}", self.temperature),
            ));
        }
        if !(self.clip.is_finite() && self.clip > 1.0) {
            return Err(NeuralError::param("clip", format!("must be a finite number > 1, got {}", self.clip)));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return Err(NeuralError::param(
                "learning_rate",
                format!("must be a finite number in (0, 1], got {}", self.learning_rate),
            ));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(NeuralError::param("l2", format!("must be a finite number >= 0, got {}", self.l2)));
        }
        if !(self.optimism.is_finite() && self.optimism >= 0.0) {
            return Err(NeuralError::param("optimism", format!("must be a finite number >= 0, got {}", self.optimism)));
        }
        if !(self.entropy.is_finite() && self.entropy >= 0.0) {
            return Err(NeuralError::param("entropy", format!("must be a finite number >= 0, got {}", self.entropy)));
        }
        if self.optimism > 0.0 && self.objective != Objective::Dr {
            return Err(NeuralError::param("optimism", "needs objective = \"dr\" (only it has a reward model)"));
        }
        Ok(())
    }
}

/// FNV-1a 64-bit: a stable (platform- and release-independent) hash for
/// category buckets. Fowler, Noll & Vo; constants from the reference
/// implementation (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Encodes a unit's behaviour events for the attention layer.
///
/// Reads the last [`MAX_EVENTS`] events of `events` (given oldest first, as in
/// `ProfileState.recent`). Each becomes [`EVENT_DIM`] numbers: kind one-hot
/// (view, click, add_to_cart, purchase), a one-hot of `fnv1a(category) mod
/// CATEGORY_BUCKETS` (all zero without a category), `ln(1 + max(amount, 0))`
/// and `ln(1 + age_days)` with `age_days = max(now − at, 0)` in days. Slots
/// after the last real event are zero padding. Returns the flat
/// `MAX_EVENTS × EVENT_DIM` row-major encoding and the mask (1 for a real
/// event, 0 for padding).
pub fn encode_events(events: &[Event], now: NaiveDateTime) -> (Vec<f32>, Vec<f32>) {
    let mut enc = vec![0f32; MAX_EVENTS * EVENT_DIM];
    let mut mask = vec![0f32; MAX_EVENTS];
    let start = events.len().saturating_sub(MAX_EVENTS);
    for (slot, e) in events[start..].iter().enumerate() {
        let row = &mut enc[slot * EVENT_DIM..(slot + 1) * EVENT_DIM];
        let kind = match e.kind {
            EventKind::View => 0,
            EventKind::Click => 1,
            EventKind::AddToCart => 2,
            EventKind::Purchase => 3,
        };
        row[kind] = 1.0;
        if let Some(c) = &e.category {
            row[4 + (fnv1a(c.as_bytes()) % CATEGORY_BUCKETS as u64) as usize] = 1.0;
        }
        let amount = if e.amount.is_finite() { e.amount.max(0.0) } else { 0.0 };
        row[4 + CATEGORY_BUCKETS] = amount.ln_1p() as f32;
        let age_days = ((now - e.at).num_seconds() as f64 / 86_400.0).max(0.0);
        row[5 + CATEGORY_BUCKETS] = age_days.ln_1p() as f32;
        mask[slot] = 1.0;
    }
    (enc, mask)
}

/// One context to score: the encoded profile features and the encoded events.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuralInput {
    /// The experiment's encoded feature vector (length `features`).
    pub features: Vec<f32>,
    /// [`encode_events`]' encoding (length `MAX_EVENTS × EVENT_DIM`).
    pub events: Vec<f32>,
    /// [`encode_events`]' mask (length `MAX_EVENTS`).
    pub mask: Vec<f32>,
}

impl NeuralInput {
    /// Encodes a feature vector and a unit's recent events at `now`.
    pub fn new(features: &[f64], events: &[Event], now: NaiveDateTime) -> Self {
        let (events, mask) = encode_events(events, now);
        NeuralInput { features: features.iter().map(|v| *v as f32).collect(), events, mask }
    }

    /// A context without behaviour history.
    pub fn without_events(features: &[f64]) -> Self {
        NeuralInput {
            features: features.iter().map(|v| *v as f32).collect(),
            events: vec![0.0; MAX_EVENTS * EVENT_DIM],
            mask: vec![0.0; MAX_EVENTS],
        }
    }
}

/// What the service logs with a `neural_pg` exposure (the exposure's
/// `features` column, as JSON `{"x": [...], "at": "...", "events": [...]}`):
/// the encoded profile features, the decision time and the unit's recent
/// events (oldest first, at most [`MAX_EVENTS`]). [`input`](Self::input)
/// rebuilds exactly the input that was scored, so the learner trains on what
/// the policy saw (event ages are relative to `at`, not to the retrain time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeuralContext {
    pub x: Vec<f64>,
    pub at: NaiveDateTime,
    #[serde(default)]
    pub events: Vec<Event>,
}

impl NeuralContext {
    /// Keeps the last [`MAX_EVENTS`] of `events` (the only ones encoded).
    pub fn new(x: Vec<f64>, events: &[Event], at: NaiveDateTime) -> Self {
        let start = events.len().saturating_sub(MAX_EVENTS);
        NeuralContext { x, at, events: events[start..].to_vec() }
    }

    /// The scored input.
    pub fn input(&self) -> NeuralInput {
        NeuralInput::new(&self.x, &self.events, self.at)
    }
}

/// A batch of inputs as tensors: features `[B, d]`, events `[B, L, EVENT_DIM]`, mask `[B, L]`.
#[derive(Debug, Clone)]
pub struct NeuralBatch {
    pub features: Tensor,
    pub events: Tensor,
    pub mask: Tensor,
}

impl NeuralBatch {
    /// Stacks inputs (checked: dimension `d`, finite numbers, the encodings' lengths).
    pub fn new(inputs: &[&NeuralInput], d: usize, device: &Device) -> Result<Self, NeuralError> {
        if inputs.is_empty() {
            return Err(NeuralError::input("an empty batch"));
        }
        let b = inputs.len();
        let mut features = Vec::with_capacity(b * d);
        let mut events = Vec::with_capacity(b * MAX_EVENTS * EVENT_DIM);
        let mut mask = Vec::with_capacity(b * MAX_EVENTS);
        for (i, x) in inputs.iter().enumerate() {
            if x.features.len() != d {
                return Err(NeuralError::input(format!(
                    "row {i} has {} features; the policy expects {d}",
                    x.features.len()
                )));
            }
            if x.events.len() != MAX_EVENTS * EVENT_DIM || x.mask.len() != MAX_EVENTS {
                return Err(NeuralError::input(format!("row {i}: events are not encoded by encode_events")));
            }
            if let Some(j) = x.features.iter().chain(&x.events).position(|v| !v.is_finite()) {
                return Err(NeuralError::input(format!("row {i}: value {j} is not finite")));
            }
            features.extend_from_slice(&x.features);
            events.extend_from_slice(&x.events);
            mask.extend_from_slice(&x.mask);
        }
        Ok(NeuralBatch {
            features: Tensor::from_vec(features, (b, d), device)?,
            events: Tensor::from_vec(events, (b, MAX_EVENTS, EVENT_DIM), device)?,
            mask: Tensor::from_vec(mask, (b, MAX_EVENTS), device)?,
        })
    }
}

/// The network (see the module docs), built from a `VarBuilder` as in candle.
#[derive(Debug, Clone)]
pub struct NeuralNet {
    user_in: Linear,
    user_out: Linear,
    event_in: Linear,
    attn_q: Linear,
    attn_k: Linear,
    attn_v: Linear,
    fuse: Linear,
    /// `user.wide` when [`NeuralParams::wide`].
    wide: Option<Linear>,
    arms: Tensor,
    /// `1 / √h`.
    scale: f64,
    /// `1 / (√h · temperature)`.
    logit_scale: f64,
}

impl NeuralNet {
    /// Creates (training) or reads (serving) the weights through `vb`.
    pub fn new(vb: VarBuilder, params: &NeuralParams, arms: usize) -> Result<Self, NeuralError> {
        let (d, hid, h) = (params.features, params.hidden, params.embedding);
        let user = vb.pp("user");
        let events = vb.pp("events");
        let scale = 1.0 / (h as f64).sqrt();
        Ok(NeuralNet {
            user_in: linear(d, hid, user.pp("in"))?,
            user_out: linear(hid, h, user.pp("out"))?,
            event_in: linear(EVENT_DIM, h, events.pp("in"))?,
            attn_q: linear_no_bias(h, h, events.pp("q"))?,
            attn_k: linear_no_bias(h, h, events.pp("k"))?,
            attn_v: linear_no_bias(h, h, events.pp("v"))?,
            fuse: linear(2 * h, h, vb.pp("fuse"))?,
            wide: if params.wide { Some(linear_no_bias(d, h, user.pp("wide"))?) } else { None },
            arms: vb.pp("arms").get_with_hints((arms, h), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?,
            scale,
            logit_scale: scale / params.temperature,
        })
    }

    /// Logits `score_a / temperature`, shape `[B, arms]`.
    pub fn forward(&self, batch: &NeuralBatch) -> candle_core::Result<Tensor> {
        let u = self.user_in.forward(&batch.features)?.relu()?;
        let u = self.user_out.forward(&u)?.relu()?; // [B, h]
        let e = self.event_in.forward(&batch.events)?.relu()?; // [B, L, h]
        let q = self.attn_q.forward(&e)?;
        let k = self.attn_k.forward(&e)?;
        let v = self.attn_v.forward(&e)?;
        // Padding keys get -1e9 before the softmax, i.e. weight ~0. A row with
        // no event at all attends uniformly over zeros and is masked out of
        // the pooling below.
        let key_bias = batch.mask.affine(1e9, -1e9)?.unsqueeze(1)?; // [B, 1, L]
        let att = (q.matmul(&k.t()?.contiguous()?)? * self.scale)?.broadcast_add(&key_bias)?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let ctx = (att.matmul(&v)? + &e)?; // residual, [B, L, h]
        let m = batch.mask.unsqueeze(2)?; // [B, L, 1]
        let count = m.sum(1)?.clamp(1f32, f32::MAX)?; // [B, 1]
        let pooled = ctx.broadcast_mul(&m)?.sum(1)?.broadcast_div(&count)?; // [B, h]
        let user = self.fuse.forward(&Tensor::cat(&[&u, &pooled], 1)?)?; // [B, h]
        let user = match &self.wide {
            Some(wide) => (user + wide.forward(&batch.features)?)?,
            None => user,
        };
        user.matmul(&self.arms.t()?)? * self.logit_scale
    }
}

/// One logged decision with its outcome, for training.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRow {
    pub input: NeuralInput,
    /// Index of the logged arm.
    pub arm: usize,
    /// Probability with which the logging policy chose `arm`, in (0, 1].
    pub propensity: f64,
    pub reward: f64,
}

/// The doubly robust objective's reward model: a ridge regression per arm (λ = 1, with an
/// intercept) on the rows' feature vectors, fitted on all `rows`; returns the predictions
/// for every (row, arm), row-major, clamped to the range of the observed rewards, plus
/// `optimism · √(xᵀA_a⁻¹x)` (the upper confidence bound; 0 adds nothing).
fn reward_model(rows: &[LoggedRow], arms: usize, features: usize, optimism: f64) -> Result<Vec<f32>, NeuralError> {
    let mut model = super::linear::LinearState::new(arms, features, true, 1.0)
        .map_err(|e| NeuralError::input(format!("reward model: {e}")))?;
    let (lo, hi) =
        rows.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| (lo.min(r.reward), hi.max(r.reward)));
    let xs: Vec<Vec<f64>> = rows.iter().map(|r| r.input.features.iter().map(|v| f64::from(*v)).collect()).collect();
    for (r, x) in rows.iter().zip(&xs) {
        model.observe(r.arm, x, r.reward).map_err(|e| NeuralError::input(format!("reward model: {e}")))?;
    }
    let mut q = Vec::with_capacity(rows.len() * arms);
    for x in &xs {
        for a in 0..arms {
            let (mean, spread) = model.predict(a, x).map_err(|e| NeuralError::input(format!("reward model: {e}")))?;
            q.push((mean.clamp(lo, hi) + optimism * spread.sqrt()) as f32);
        }
    }
    Ok(q)
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub rows: usize,
    pub steps: u64,
    /// Clipped self-normalised IPW estimate over all rows before and after.
    pub snips_before: f64,
    pub snips_after: f64,
}

/// A serializable policy snapshot: parameters, arm count and the weights as
/// hex-encoded safetensors bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeuralSnapshot {
    pub params: NeuralParams,
    pub arms: usize,
    pub weights: String,
}

/// The policy: parameters, the network and its variables on one device.
pub struct NeuralPolicy {
    params: NeuralParams,
    arms: usize,
    device: Device,
    varmap: VarMap,
    net: NeuralNet,
    parameter_count: usize,
}

impl std::fmt::Debug for NeuralPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeuralPolicy")
            .field("params", &self.params)
            .field("arms", &self.arms)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn lock_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>, NeuralError> {
    let data = varmap.data().lock().map_err(|_| NeuralError::Backend("variable map lock poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

impl NeuralPolicy {
    /// A fresh policy with weights drawn from `params.seed`: Glorot-uniform
    /// weights `U(±√(6/(fan_in + fan_out)))` (Glorot & Bengio, AISTATS 2010,
    /// eq. 16), zero biases, in sorted name order.
    pub fn new(params: NeuralParams, arms: usize, device: &Device) -> Result<Self, NeuralError> {
        params.validate()?;
        if arms == 0 {
            return Err(NeuralError::NoArms);
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let net = NeuralNet::new(vb, &params, arms)?;
        let mut rng = StdRng::seed_from_u64(params.seed);
        let vars = lock_vars(&varmap)?;
        let parameter_count = vars.iter().map(|(_, v)| v.elem_count()).sum();
        for (name, var) in vars {
            let dims = var.dims().to_vec();
            let values: Vec<f32> = match dims.as_slice() {
                [out, inp] => {
                    let bound = (6.0 / (*out + *inp) as f64).sqrt() as f32;
                    (0..out * inp).map(|_| rng.random_range(-bound..bound)).collect()
                }
                _ if name.ends_with("bias") => vec![0.0; var.elem_count()],
                _ => return Err(NeuralError::Backend(format!("unexpected variable {name} of shape {dims:?}"))),
            };
            var.set(&Tensor::from_vec(values, dims, device)?)?;
        }
        Ok(NeuralPolicy { params, arms, device: device.clone(), varmap, net, parameter_count })
    }

    pub fn params(&self) -> &NeuralParams {
        &self.params
    }

    pub fn arms(&self) -> usize {
        self.arms
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of trainable numbers (for the micro-batcher's inline bypass).
    pub fn parameter_count(&self) -> usize {
        self.parameter_count
    }

    /// `π_θ(·|x)` for each input, one forward pass: softmax PMFs over all
    /// arms, before eligibility and the floor.
    pub fn pmfs(&self, inputs: &[NeuralInput]) -> Result<Vec<Vec<f64>>, NeuralError> {
        let refs: Vec<&NeuralInput> = inputs.iter().collect();
        self.pmfs_of(&refs)
    }

    /// [`pmfs`](Self::pmfs) over borrowed inputs.
    pub fn pmfs_of(&self, inputs: &[&NeuralInput]) -> Result<Vec<Vec<f64>>, NeuralError> {
        let batch = NeuralBatch::new(inputs, self.params.features, &self.device)?;
        let probs = candle_nn::ops::softmax_last_dim(&self.net.forward(&batch)?)?;
        let rows: Vec<Vec<f32>> = probs.to_dtype(DType::F32)?.to_vec2()?;
        Ok(rows.into_iter().map(|r| r.into_iter().map(f64::from).collect()).collect())
    }

    /// The PMF to log and draw from: `π_θ(·|x)` restricted to the eligible
    /// arms with the floor mixed in ([`explore::restrict_and_floor`]).
    pub fn decision_pmf(
        &self,
        input: &NeuralInput,
        eligible: &[bool],
        min_propensity: f64,
    ) -> Result<Vec<f64>, PolicyError> {
        let pmf = self.pmfs_of(&[input])?.pop().ok_or(PolicyError::NoEligibleArm)?;
        explore::restrict_and_floor(&pmf, eligible, min_propensity)
    }

    /// Clipped self-normalised IPW value of the current policy on `rows`
    /// (with `b = 0`), computed in f64; `None` when every weight is 0.
    pub fn snips(&self, rows: &[LoggedRow]) -> Result<Option<f64>, NeuralError> {
        let (mut num, mut den) = (0.0, 0.0);
        for chunk in rows.chunks(self.params.batch_size.max(256)) {
            let inputs: Vec<&NeuralInput> = chunk.iter().map(|r| &r.input).collect();
            for (row, pmf) in chunk.iter().zip(self.pmfs_of(&inputs)?) {
                let w = (pmf[row.arm] / row.propensity).min(self.params.clip);
                num += w * row.reward;
                den += w;
            }
        }
        Ok((den > 0.0).then(|| num / den))
    }

    fn check_rows(&self, rows: &[LoggedRow]) -> Result<(), NeuralError> {
        if rows.is_empty() {
            return Err(NeuralError::input("no logged rows to train on"));
        }
        for (i, r) in rows.iter().enumerate() {
            if r.arm >= self.arms {
                return Err(NeuralError::input(format!("row {i}: arm {} but there are {} arms", r.arm, self.arms)));
            }
            if !(r.propensity.is_finite() && r.propensity > 0.0 && r.propensity <= 1.0) {
                return Err(NeuralError::input(format!("row {i}: propensity {} is not in (0, 1]", r.propensity)));
            }
            if !r.reward.is_finite() {
                return Err(NeuralError::input(format!("row {i}: reward {} is not finite", r.reward)));
            }
        }
        Ok(())
    }

    /// Trains on logged rows for `params.epochs` epochs of shuffled
    /// minibatches, maximising the clipped self-normalised IPW estimate (see
    /// the module docs for the objective and its sources) with AdamW.
    /// Continues from the current weights (periodic retraining warm-starts).
    pub fn train(&mut self, rows: &[LoggedRow]) -> Result<TrainReport, NeuralError> {
        self.check_rows(rows)?;
        let snips_before = self.snips(rows)?.unwrap_or(f64::NAN);
        let before = self.snapshot()?;
        let baseline = rows.iter().map(|r| r.reward).sum::<f64>() / rows.len() as f64;
        let vars: Vec<Var> = lock_vars(&self.varmap)?.into_iter().map(|(_, v)| v).collect();
        let adam = candle_nn::ParamsAdamW {
            lr: self.params.learning_rate,
            weight_decay: self.params.l2,
            ..Default::default()
        };
        let mut opt = candle_nn::AdamW::new(vars, adam)?;
        // The shuffle stream is derived from the seed and the data size, so a
        // retrain on more rows does not replay the same permutation prefix.
        let mut rng = StdRng::seed_from_u64(self.params.seed ^ (rows.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let mut steps = 0u64;
        let q = match self.params.objective {
            Objective::Snipw => None,
            Objective::Dr => Some(reward_model(rows, self.arms, self.params.features, self.params.optimism)?),
        };
        for _ in 0..self.params.epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(self.params.batch_size) {
                let loss = match &q {
                    None => self.minibatch_loss(rows, chunk, baseline)?,
                    Some(q) => self.minibatch_loss_dr(rows, chunk, q)?,
                };
                opt.backward_step(&loss)?;
                steps += 1;
            }
        }
        if !self.weights_finite()? {
            *self = NeuralPolicy::from_snapshot(&before, &self.device.clone())?;
            return Err(NeuralError::Diverged { steps });
        }
        let snips_after = self.snips(rows)?.unwrap_or(f64::NAN);
        Ok(TrainReport { rows: rows.len(), steps, snips_before, snips_after })
    }

    /// Whether every weight is finite.
    fn weights_finite(&self) -> Result<bool, NeuralError> {
        for (_, var) in lock_vars(&self.varmap)? {
            let values: Vec<f32> = var.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            if values.iter().any(|v| !v.is_finite()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `−Σ w_i (r_i − b) / Σ w_i` over the minibatch, `w_i = min(π_θ(a_i|x_i)/p_i, clip)`.
    fn minibatch_loss(&self, rows: &[LoggedRow], chunk: &[usize], baseline: f64) -> Result<Tensor, NeuralError> {
        let inputs: Vec<&NeuralInput> = chunk.iter().map(|&i| &rows[i].input).collect();
        let batch = NeuralBatch::new(&inputs, self.params.features, &self.device)?;
        let n = chunk.len();
        // `check_rows` bounded `arm < arms`, and arms fit in u32 (an embedding table of more would not fit memory).
        let arms: Vec<u32> = chunk.iter().map(|&i| rows[i].arm as u32).collect();
        let inv_p: Vec<f32> = chunk.iter().map(|&i| (1.0 / rows[i].propensity) as f32).collect();
        let centred: Vec<f32> = chunk.iter().map(|&i| (rows[i].reward - baseline) as f32).collect();
        let arms = Tensor::from_vec(arms, (n, 1), &self.device)?;
        let inv_p = Tensor::from_vec(inv_p, n, &self.device)?;
        let centred = Tensor::from_vec(centred, n, &self.device)?;
        let log_pi = candle_nn::ops::log_softmax(&self.net.forward(&batch)?, D::Minus1)?;
        let log_pi_a = log_pi.gather(&arms, 1)?.squeeze(1)?;
        let w = (log_pi_a.exp()? * inv_p)?.minimum(self.params.clip as f32)?;
        let num = (&w * centred)?.sum_all()?;
        // When π_θ gives every logged arm of the minibatch a probability that underflows to
        // 0 in f32, Σ w = 0 and the ratio would be 0/0 = NaN, and one NaN step poisons every
        // weight; with the floor the loss is 0 there and carries no gradient.
        let den = w.sum_all()?.maximum(1e-12f32)?;
        let value = (num / den)?;
        Ok(self.with_entropy(value, &log_pi)?.neg()?)
    }

    /// `−(1/n) Σ_i [Σ_a π_θ(a|x_i) q̂_ia + w_i (r_i − q̂_i,a_i)]` over the minibatch, with
    /// `w_i = min(π_θ(a_i|x_i)/p_i, clip)`; `q` holds `q̂` row-major (rows × arms).
    fn minibatch_loss_dr(&self, rows: &[LoggedRow], chunk: &[usize], q: &[f32]) -> Result<Tensor, NeuralError> {
        let inputs: Vec<&NeuralInput> = chunk.iter().map(|&i| &rows[i].input).collect();
        let batch = NeuralBatch::new(&inputs, self.params.features, &self.device)?;
        let (n, k) = (chunk.len(), self.arms);
        let arms: Vec<u32> = chunk.iter().map(|&i| rows[i].arm as u32).collect();
        let inv_p: Vec<f32> = chunk.iter().map(|&i| (1.0 / rows[i].propensity) as f32).collect();
        let residual: Vec<f32> = chunk.iter().map(|&i| rows[i].reward as f32 - q[i * k + rows[i].arm]).collect();
        let q_rows: Vec<f32> = chunk.iter().flat_map(|&i| q[i * k..(i + 1) * k].iter().copied()).collect();
        let arms = Tensor::from_vec(arms, (n, 1), &self.device)?;
        let inv_p = Tensor::from_vec(inv_p, n, &self.device)?;
        let residual = Tensor::from_vec(residual, n, &self.device)?;
        let q_rows = Tensor::from_vec(q_rows, (n, k), &self.device)?;
        let log_pi = candle_nn::ops::log_softmax(&self.net.forward(&batch)?, D::Minus1)?;
        let pi = log_pi.exp()?;
        let direct = (&pi * q_rows)?.sum(1)?;
        let w = (pi.gather(&arms, 1)?.squeeze(1)? * inv_p)?.minimum(self.params.clip as f32)?;
        let value = (direct + (w * residual)?)?.mean_all()?;
        Ok(self.with_entropy(value, &log_pi)?.neg()?)
    }

    /// `value + τ · mean_i H(π_θ(·|x_i))` for the minibatch's `log π` (`[n, arms]`); `value`
    /// itself when `τ = 0`.
    fn with_entropy(&self, value: Tensor, log_pi: &Tensor) -> Result<Tensor, NeuralError> {
        if self.params.entropy == 0.0 {
            return Ok(value);
        }
        let entropy = (log_pi.exp()? * log_pi)?.sum(1)?.neg()?.mean_all()?;
        Ok((value + (entropy * self.params.entropy)?)?)
    }

    /// The weights as safetensors bytes (f32, sorted names), hex-encoded, with the parameters.
    pub fn snapshot(&self) -> Result<NeuralSnapshot, NeuralError> {
        let mut tensors = BTreeMap::new();
        for (name, var) in lock_vars(&self.varmap)? {
            let t = var.as_tensor();
            let values: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            tensors.insert(name, (t.dims().to_vec(), values));
        }
        let bytes = safetensors_bytes(&tensors)?;
        Ok(NeuralSnapshot { params: self.params.clone(), arms: self.arms, weights: hex::encode(bytes) })
    }

    /// Loads a snapshot on `device`: the weights must name exactly the
    /// model's variables with the model's shapes.
    pub fn from_snapshot(snapshot: &NeuralSnapshot, device: &Device) -> Result<Self, NeuralError> {
        let bytes = hex::decode(&snapshot.weights)
            .map_err(|e| NeuralError::InvalidWeights { reason: format!("weights are not hex: {e}") })?;
        let mut loaded: HashMap<String, Tensor> = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| NeuralError::InvalidWeights { reason: format!("weights are not safetensors: {e}") })?;
        let policy = NeuralPolicy::new(snapshot.params.clone(), snapshot.arms, device)?;
        let vars = lock_vars(&policy.varmap)?;
        for (name, var) in &vars {
            let t = loaded
                .remove(name)
                .ok_or_else(|| NeuralError::InvalidWeights { reason: format!("missing tensor `{name}`") })?;
            if t.dims() != var.dims() {
                return Err(NeuralError::InvalidWeights {
                    reason: format!("tensor `{name}` has shape {:?}, the model needs {:?}", t.dims(), var.dims()),
                });
            }
            let t = t.to_dtype(DType::F32)?;
            let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(NeuralError::InvalidWeights { reason: format!("tensor `{name}` has a non-finite value") });
            }
            var.set(&t)?;
        }
        if let Some(extra) = loaded.keys().min() {
            return Err(NeuralError::InvalidWeights { reason: format!("unexpected tensor `{extra}`") });
        }
        Ok(policy)
    }
}

/// Serialises f32 tensors in the safetensors format
/// (<https://github.com/huggingface/safetensors#format>): an 8-byte
/// little-endian header length `N`, `N` bytes of JSON header
/// `{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}}`
/// (padded with spaces to a multiple of 8), then the little-endian data.
/// candle exposes a file writer only, and the policy room does no I/O, so the
/// few lines are written here; [`candle_core::safetensors::load_buffer`]
/// reads them back.
fn safetensors_bytes(tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Result<Vec<u8>, NeuralError> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, (shape, values)) in tensors {
        let end = offset + values.len() * 4;
        header
            .insert(name.clone(), serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| NeuralError::Backend(format!("safetensors header: {e}")))?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, values) in tensors.values() {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// One round of a simulated stream (the format of
/// `../shared/reference/sim_stream_seed777.csv`, see its README).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRound {
    pub context: Vec<f64>,
    /// True click probability of each arm.
    pub probs: Vec<f64>,
    pub best_arm: usize,
    /// Uniform draw that picks the arm: the first arm whose cumulative probability exceeds it.
    pub u_action: f64,
    /// Uniform draw of the reward: 1 if `u_reward < probs[arm]`.
    pub u_reward: f64,
}

/// How [`replay_stream`] retrains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayConfig {
    /// Retrain after the first this many rounds, then each time the log has
    /// grown by `growth` (e.g. 500 and 1.5: at 500, 750, 1125, … rounds).
    pub first_retrain: usize,
    pub growth: f64,
    /// Exploration floor mixed into every PMF.
    pub min_propensity: f64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig { first_retrain: 500, growth: 1.5, min_propensity: 0.01 }
    }
}

/// What a replay measured (the figures `strategist simulate stream` prints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayOutcome {
    pub rounds: usize,
    pub avg_reward: f64,
    pub cumulative_regret: f64,
    pub regret_last_10pct: f64,
    pub retrains: usize,
}

/// Replays a stream with periodic off-policy retraining, as the learner
/// would run `neural_pg`: between retrains the policy is fixed, so each
/// segment of rounds is scored in one batched forward pass; each round's arm
/// is drawn from the floored PMF with `u_action`, the reward and the PMF entry
/// (the exact propensity) are logged, and at each retrain point the policy
/// is trained (warm start, `params.epochs` epochs) on every row logged so
/// far. Contexts carry no behaviour events. Regret at a round is
/// `probs[best_arm] − probs[arm]` (the expected regret, as in the stream's README).
pub fn replay_stream(
    params: NeuralParams,
    rounds: &[StreamRound],
    config: &ReplayConfig,
    device: &Device,
) -> Result<ReplayOutcome, NeuralError> {
    let arms = rounds.first().map_or(0, |r| r.probs.len());
    if !(config.growth.is_finite() && config.growth > 1.0) || config.first_retrain == 0 {
        return Err(NeuralError::param("growth", "retrain schedule needs first_retrain >= 1 and growth > 1"));
    }
    let mut policy = NeuralPolicy::new(params, arms, device)?;
    let eligible = vec![true; arms];
    let mut log: Vec<LoggedRow> = Vec::with_capacity(rounds.len());
    let (mut reward_sum, mut regret, mut regret_tail, mut retrains) = (0.0, 0.0, 0.0, 0);
    let tail_start = rounds.len() - rounds.len() / 10;
    let mut next_retrain = config.first_retrain;
    let mut start = 0;
    while start < rounds.len() {
        let end = next_retrain.min(rounds.len());
        let segment = &rounds[start..end];
        let inputs: Vec<NeuralInput> = segment.iter().map(|r| NeuralInput::without_events(&r.context)).collect();
        let pmfs = policy.pmfs(&inputs)?;
        for (k, ((round, input), pmf)) in segment.iter().zip(inputs).zip(pmfs).enumerate() {
            if round.probs.len() != arms || round.best_arm >= arms {
                return Err(NeuralError::input(format!(
                    "round {}: {} arms, best arm {}",
                    start + k,
                    round.probs.len(),
                    round.best_arm
                )));
            }
            let pmf = explore::restrict_and_floor(&pmf, &eligible, config.min_propensity)
                .map_err(|e| NeuralError::input(e.to_string()))?;
            let arm = explore::draw(&pmf, round.u_action);
            let reward = if round.u_reward < round.probs[arm] { 1.0 } else { 0.0 };
            let r = round.probs[round.best_arm] - round.probs[arm];
            reward_sum += reward;
            regret += r;
            if start + k >= tail_start {
                regret_tail += r;
            }
            log.push(LoggedRow { input, arm, propensity: pmf[arm], reward });
        }
        start = end;
        if start < rounds.len() {
            policy.train(&log)?;
            retrains += 1;
            next_retrain = ((start as f64) * config.growth).ceil() as usize;
        }
    }
    let n = rounds.len().max(1) as f64;
    Ok(ReplayOutcome {
        rounds: rounds.len(),
        avg_reward: reward_sum / n,
        cumulative_regret: regret,
        regret_last_10pct: regret_tail,
        retrains,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate};
    use proptest::prelude::*;
    use rand::Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn now() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 20).and_then(|d| d.and_hms_opt(12, 0, 0)).expect("valid date")
    }

    fn ev(kind: EventKind, days_ago: i64, amount: f64, cat: Option<&str>) -> Event {
        Event { kind, at: now() - Duration::days(days_ago), amount, category: cat.map(str::to_string) }
    }

    fn tiny(features: usize, seed: u64) -> NeuralParams {
        NeuralParams { hidden: 16, embedding: 8, seed, ..NeuralParams::new(features) }
    }

    /// A context-dependent world: `d = 4` features, 3 arms. Arm `a < 3` has
    /// click probability `sigmoid(−1 + 2.5 x_a)`, and a unit whose last event
    /// is a purchase gets +2 on arm 2's logit (only the event path sees it).
    fn world_mu(x: &[f64], events: &[Event]) -> Vec<f64> {
        let bought = events.last().is_some_and(|e| e.kind == EventKind::Purchase);
        (0..3)
            .map(|a| {
                let z = -1.0 + 2.5 * x[a] + if a == 2 && bought { 2.0 } else { 0.0 };
                1.0 / (1.0 + (-z).exp())
            })
            .collect()
    }

    fn world_context(rng: &mut StdRng) -> (Vec<f64>, Vec<Event>) {
        let x: Vec<f64> = (0..4).map(|_| StandardNormal.sample(rng)).collect();
        let n = rng.random_range(0..6);
        let events = (0..n)
            .map(|i| {
                let kind = EventKind::ALL[rng.random_range(0..4)];
                let amount = if kind == EventKind::Purchase { 50.0 } else { 0.0 };
                ev(kind, 10 - i, amount, Some(["shoes", "bags"][rng.random_range(0..2)]))
            })
            .collect();
        (x, events)
    }

    /// Uniformly logged rows from the world, rewards drawn from the click probabilities.
    fn logged(n: usize, seed: u64) -> Vec<LoggedRow> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let (x, events) = world_context(&mut rng);
                let arm = rng.random_range(0..3);
                let reward = if rng.random::<f64>() < world_mu(&x, &events)[arm] { 1.0 } else { 0.0 };
                LoggedRow { input: NeuralInput::new(&x, &events, now()), arm, propensity: 1.0 / 3.0, reward }
            })
            .collect()
    }

    /// True value `E_x Σ_a π(a|x) μ(x, a)` on fresh contexts, and the uniform and optimal values.
    fn true_values(policy: &NeuralPolicy, n: usize) -> (f64, f64, f64) {
        let mut rng = StdRng::seed_from_u64(99);
        let contexts: Vec<(Vec<f64>, Vec<Event>)> = (0..n).map(|_| world_context(&mut rng)).collect();
        let inputs: Vec<NeuralInput> = contexts.iter().map(|(x, e)| NeuralInput::new(x, e, now())).collect();
        let pmfs = policy.pmfs(&inputs).unwrap();
        let (mut v, mut uniform, mut best) = (0.0, 0.0, 0.0);
        for ((x, e), pmf) in contexts.iter().zip(&pmfs) {
            let mu = world_mu(x, e);
            v += pmf.iter().zip(&mu).map(|(p, m)| p * m).sum::<f64>();
            uniform += mu.iter().sum::<f64>() / 3.0;
            best += mu.iter().cloned().fold(0.0, f64::max);
        }
        let n = n as f64;
        (v / n, uniform / n, best / n)
    }

    #[test]
    fn parameters_are_validated_with_field_and_reason() {
        let ok = NeuralParams::new(20);
        ok.validate().unwrap();
        let cases: Vec<(&str, NeuralParams)> = vec![
            ("features", NeuralParams { features: 0, ..ok.clone() }),
            ("hidden", NeuralParams { hidden: 0, ..ok.clone() }),
            ("embedding", NeuralParams { embedding: MAX_WIDTH + 1, ..ok.clone() }),
            ("temperature", NeuralParams { temperature: 0.0, ..ok.clone() }),
            ("temperature", NeuralParams { temperature: f64::NAN, ..ok.clone() }),
            ("clip", NeuralParams { clip: 1.0, ..ok.clone() }),
            ("learning_rate", NeuralParams { learning_rate: -0.1, ..ok.clone() }),
            ("epochs", NeuralParams { epochs: 0, ..ok.clone() }),
            ("batch_size", NeuralParams { batch_size: 0, ..ok.clone() }),
            ("l2", NeuralParams { l2: -1.0, ..ok.clone() }),
            ("optimism", NeuralParams { optimism: -0.1, objective: Objective::Dr, ..ok.clone() }),
            ("optimism", NeuralParams { optimism: f64::INFINITY, objective: Objective::Dr, ..ok.clone() }),
            // Only the doubly robust objective has a reward model to be optimistic about.
            ("optimism", NeuralParams { optimism: 0.1, ..ok.clone() }),
            ("entropy", NeuralParams { entropy: -0.5, ..ok.clone() }),
            ("entropy", NeuralParams { entropy: f64::NAN, ..ok.clone() }),
        ];
        for (field, p) in cases {
            match p.validate().unwrap_err() {
                NeuralError::InvalidParameter { field: f, reason } => {
                    assert_eq!(f, field);
                    assert!(!reason.is_empty());
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        let err = NeuralPolicy::new(ok.clone(), 0, &Device::Cpu).unwrap_err();
        assert_eq!(err, NeuralError::NoArms);
        assert_eq!(PolicyError::from(err).code(), "no_arms");
        // Serde: defaults fill in, unknown fields are rejected.
        let p: NeuralParams = serde_json::from_str(r#"{"features": 20}"#).unwrap();
        assert_eq!(p, ok);
        assert!(serde_json::from_str::<NeuralParams>(r#"{"features": 20, "tempreature": 2}"#).is_err());
    }

    #[test]
    fn events_are_encoded_with_padding_and_mask() {
        let events = [
            ev(EventKind::View, 3, 0.0, None),
            ev(EventKind::Purchase, 1, (std::f64::consts::E - 1.0) * 1.0, Some("shoes")),
        ];
        let (enc, mask) = encode_events(&events, now());
        assert_eq!(enc.len(), MAX_EVENTS * EVENT_DIM);
        assert_eq!(&mask[..3], &[1.0, 1.0, 0.0]);
        assert_eq!(mask.iter().sum::<f32>(), 2.0);
        let first = &enc[..EVENT_DIM];
        assert_eq!(&first[..4], &[1.0, 0.0, 0.0, 0.0]);
        assert!(first[4..4 + CATEGORY_BUCKETS].iter().all(|v| *v == 0.0), "no category, no bucket");
        assert!((first[EVENT_DIM - 1] - 4f32.ln()).abs() < 1e-6, "age 3 days -> ln 4");
        let second = &enc[EVENT_DIM..2 * EVENT_DIM];
        assert_eq!(&second[..4], &[0.0, 0.0, 0.0, 1.0]);
        assert_eq!(second[4..4 + CATEGORY_BUCKETS].iter().sum::<f32>(), 1.0);
        assert!((second[EVENT_DIM - 2] - 1.0).abs() < 1e-6, "log1p(e - 1) = 1");
        assert!(enc[2 * EVENT_DIM..].iter().all(|v| *v == 0.0), "padding is zero");
        // Only the last MAX_EVENTS events are read; the newest is in the last slot.
        let many: Vec<Event> = (0..30).map(|i| ev(EventKind::Click, 40 - i, 0.0, None)).collect();
        let (enc, mask) = encode_events(&many, now());
        assert!(mask.iter().all(|m| *m == 1.0));
        assert!((enc[(MAX_EVENTS - 1) * EVENT_DIM + EVENT_DIM - 1] - 12f32.ln()).abs() < 1e-6, "newest: 11 days old");
        // Same category, same bucket; the hash is stable.
        assert_eq!(fnv1a(b"shoes"), fnv1a(b"shoes"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn a_logged_context_round_trips_through_json_to_the_same_input() {
        let events: Vec<Event> = (0..25)
            .map(|i| ev(EventKind::ALL[i % 4], 30 - i as i64, 12.34 * i as f64, (i % 3 == 0).then_some("shoes")))
            .collect();
        let ctx = NeuralContext::new(vec![0.1, -2.5, 1e-7, 3.0], &events, now());
        assert_eq!(ctx.events.len(), MAX_EVENTS);
        assert_eq!(ctx.events.last(), events.last());
        let json = serde_json::to_string(&ctx).unwrap();
        let back: NeuralContext = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ctx);
        assert_eq!(back.input(), NeuralInput::new(&ctx.x, &events, now()));
        assert!(serde_json::from_str::<Vec<f64>>(&json).is_err(), "not the linear kinds' array");
    }

    #[test]
    fn batched_and_single_pmfs_agree_and_inputs_are_checked() {
        let policy = NeuralPolicy::new(tiny(4, 3), 3, &Device::Cpu).unwrap();
        let rows = logged(64, 5);
        let inputs: Vec<NeuralInput> = rows.iter().map(|r| r.input.clone()).collect();
        let batched = policy.pmfs(&inputs).unwrap();
        for (input, b) in inputs.iter().zip(&batched) {
            let single = policy.pmfs(std::slice::from_ref(input)).unwrap().remove(0);
            for (x, y) in single.iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{single:?} vs {b:?}");
            }
        }
        let bad = NeuralInput::without_events(&[1.0, 2.0]);
        assert_eq!(policy.pmfs(&[bad]).unwrap_err().code(), "invalid_context");
        let nan = NeuralInput::without_events(&[1.0, f64::NAN, 0.0, 0.0]);
        assert_eq!(policy.pmfs(&[nan]).unwrap_err().code(), "invalid_context");
        let mut row = rows[0].clone();
        row.propensity = 0.0;
        let mut p = NeuralPolicy::new(tiny(4, 3), 3, &Device::Cpu).unwrap();
        assert_eq!(p.train(&[row]).unwrap_err().code(), "invalid_context");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn decision_pmfs_sum_to_one_and_respect_the_floor(
            x in proptest::collection::vec(-5.0f64..5.0, 4),
            n_events in 0usize..25,
            eligible in proptest::collection::vec(any::<bool>(), 5),
            frac in 0.0f64..=1.0,
            temperature in 0.05f64..5.0,
            seed in 0u64..4,
        ) {
            prop_assume!(eligible.iter().any(|e| *e));
            let params = NeuralParams { temperature, ..tiny(4, seed) };
            let policy = NeuralPolicy::new(params, 5, &Device::Cpu).unwrap();
            let events: Vec<Event> = (0..n_events)
                .map(|i| ev(EventKind::ALL[i % 4], (30 - i) as i64, i as f64 * 10.0, Some("c")))
                .collect();
            let input = NeuralInput::new(&x, &events, now());
            let raw = policy.pmfs(std::slice::from_ref(&input)).unwrap().remove(0);
            prop_assert!((raw.iter().sum::<f64>() - 1.0).abs() < 1e-5);
            let k = eligible.iter().filter(|e| **e).count();
            let floor = frac / k as f64;
            let pmf = policy.decision_pmf(&input, &eligible, floor).unwrap();
            prop_assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for (p, e) in pmf.iter().zip(&eligible) {
                if *e {
                    prop_assert!(*p >= floor - explore::FLOOR_TOLERANCE && *p > 0.0);
                } else {
                    prop_assert_eq!(*p, 0.0);
                }
            }
        }
    }

    #[test]
    fn snapshot_round_trip_gives_identical_pmfs_and_bad_weights_are_rejected() {
        let mut policy = NeuralPolicy::new(NeuralParams { epochs: 1, ..tiny(4, 11) }, 3, &Device::Cpu).unwrap();
        let rows = logged(128, 1);
        policy.train(&rows).unwrap();
        let snap = policy.snapshot().unwrap();
        let json = serde_json::to_string(&snap).unwrap();
        let back: NeuralSnapshot = serde_json::from_str(&json).unwrap();
        let loaded = NeuralPolicy::from_snapshot(&back, &Device::Cpu).unwrap();
        let inputs: Vec<NeuralInput> = rows.iter().take(32).map(|r| r.input.clone()).collect();
        assert_eq!(policy.pmfs(&inputs).unwrap(), loaded.pmfs(&inputs).unwrap());
        assert_eq!(loaded.snapshot().unwrap(), snap);

        let wrong_shape = NeuralSnapshot { arms: 4, ..snap.clone() };
        assert_eq!(NeuralPolicy::from_snapshot(&wrong_shape, &Device::Cpu).unwrap_err().code(), "invalid_policy_state");
        let not_hex = NeuralSnapshot { weights: "zz".into(), ..snap.clone() };
        assert_eq!(NeuralPolicy::from_snapshot(&not_hex, &Device::Cpu).unwrap_err().code(), "invalid_policy_state");
        let truncated = NeuralSnapshot { weights: snap.weights[..snap.weights.len() - 8].to_string(), ..snap.clone() };
        assert_eq!(NeuralPolicy::from_snapshot(&truncated, &Device::Cpu).unwrap_err().code(), "invalid_policy_state");

        // The wide path is one more tensor, `user.wide` (features × embedding), saved and
        // loaded like the others; a snapshot whose parameters and tensors disagree is refused.
        let wide = NeuralPolicy::new(NeuralParams { wide: true, ..tiny(4, 11) }, 3, &Device::Cpu).unwrap();
        assert_eq!(wide.parameter_count(), policy.parameter_count() + 4 * 8);
        let wide_snap = wide.snapshot().unwrap();
        let loaded = NeuralPolicy::from_snapshot(&wide_snap, &Device::Cpu).unwrap();
        assert_eq!(wide.pmfs(&inputs).unwrap(), loaded.pmfs(&inputs).unwrap());
        assert_ne!(wide.pmfs(&inputs).unwrap(), policy.pmfs(&inputs).unwrap());
        let missing = NeuralSnapshot { params: NeuralParams { wide: true, ..snap.params.clone() }, ..snap.clone() };
        assert_eq!(NeuralPolicy::from_snapshot(&missing, &Device::Cpu).unwrap_err().code(), "invalid_policy_state");
        let extra = NeuralSnapshot { params: NeuralParams { wide: false, ..wide_snap.params.clone() }, ..wide_snap };
        assert_eq!(NeuralPolicy::from_snapshot(&extra, &Device::Cpu).unwrap_err().code(), "invalid_policy_state");
    }

    #[test]
    fn training_on_logged_data_beats_uniform_in_true_value_and_uses_the_events() {
        let params = NeuralParams { epochs: 25, batch_size: 250, learning_rate: 0.03, ..tiny(4, 7) };
        let rows = logged(1_000, 42);
        let mut policy = NeuralPolicy::new(params, 3, &Device::Cpu).unwrap();
        let (v0, uniform, best) = true_values(&policy, 2_000);
        let report = policy.train(&rows).unwrap();
        let (v1, _, _) = true_values(&policy, 2_000);
        // The true value (from the world's click probabilities, not an
        // estimate) must close most of the gap between uniform and the best.
        assert!(
            v1 > uniform + 0.5 * (best - uniform),
            "before {v0:.3}, after {v1:.3}, uniform {uniform:.3}, best {best:.3}, {report:?}"
        );
        assert!(report.snips_after > report.snips_before, "{report:?}");
        assert_eq!(report.steps, 25 * 4);

        // Purchasers get +2 on arm 2's logit, which only the event path sees:
        // for the same features, a last purchase must move mass to arm 2.
        let x = [0.0, 0.0, 0.0, 0.0];
        let bought = NeuralInput::new(
            &x,
            &[ev(EventKind::View, 3, 0.0, None), ev(EventKind::Purchase, 1, 50.0, Some("shoes"))],
            now(),
        );
        let viewed = NeuralInput::new(
            &x,
            &[ev(EventKind::Purchase, 3, 50.0, None), ev(EventKind::View, 1, 0.0, Some("shoes"))],
            now(),
        );
        let p = policy.pmfs(&[bought, viewed]).unwrap();
        assert!(p[0][2] > p[1][2] + 0.1, "{p:?}");
    }

    #[test]
    fn the_doubly_robust_objective_learns_from_few_rows_and_its_reward_model_fits_a_linear_world() {
        // The reward model: ridge per arm on the features (λ = 1 barely matters at n = 400).
        let mut rng = StdRng::seed_from_u64(5);
        let rows: Vec<LoggedRow> = (0..400)
            .map(|i| {
                let x: Vec<f64> = (0..2).map(|_| StandardNormal.sample(&mut rng)).collect();
                let arm = i % 2;
                let reward = if arm == 0 { 2.0 * x[0] } else { 1.0 - x[1] };
                LoggedRow { input: NeuralInput::without_events(&x), arm, propensity: 0.5, reward }
            })
            .collect();
        let q = reward_model(&rows, 2, 2, 0.0).unwrap();
        for (i, r) in rows.iter().enumerate().take(50) {
            let x = &r.input.features;
            let truth = [2.0 * f64::from(x[0]), 1.0 - f64::from(x[1])];
            for a in 0..2 {
                assert!(
                    (f64::from(q[i * 2 + a]) - truth[a]).abs() < 0.05,
                    "row {i} arm {a}: {} vs {}",
                    q[i * 2 + a],
                    truth[a]
                );
            }
        }
        // Optimism adds α√(xᵀA⁻¹x): a little for the two arms the rows inform, and for an
        // arm no row chose, √(1 + |x|²) times α on top of its prior mean of 0.
        let optimistic = reward_model(&rows, 3, 2, 0.5).unwrap();
        let plain = reward_model(&rows, 3, 2, 0.0).unwrap();
        for (i, r) in rows.iter().enumerate().take(50) {
            let x = &r.input.features;
            let bonus = |a: usize| f64::from(optimistic[i * 3 + a] - plain[i * 3 + a]);
            let unseen = 0.5 * (1.0 + x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()).sqrt();
            assert!((bonus(2) - unseen).abs() < 1e-4, "row {i}: {} vs {unseen}", bonus(2));
            // 200 rows per informed arm: about 1/√200 of the unseen arm's bonus.
            for a in 0..2 {
                assert!(bonus(a) > 0.0 && bonus(a) < 0.15 * unseen, "row {i} arm {a}: {} vs {unseen}", bonus(a));
            }
        }

        // On the world above with a quarter of the rows the SNIPW test uses, the doubly
        // robust objective still closes most of the gap between uniform and the best policy
        // in true value: every arm of every row carries a gradient through the model.
        let params =
            NeuralParams { epochs: 25, batch_size: 50, learning_rate: 0.01, objective: Objective::Dr, ..tiny(4, 7) };
        let rows = logged(250, 43);
        let mut policy = NeuralPolicy::new(params, 3, &Device::Cpu).unwrap();
        let (v0, uniform, best) = true_values(&policy, 2_000);
        let report = policy.train(&rows).unwrap();
        let (v1, _, _) = true_values(&policy, 2_000);
        assert!(
            v1 > uniform + 0.5 * (best - uniform),
            "before {v0:.3}, after {v1:.3}, uniform {uniform:.3}, best {best:.3}, {report:?}"
        );
        assert_eq!(report.steps, 25 * 5);
    }

    /// The entropy bonus keeps the trained policy softer on the same rows, for either objective.
    #[test]
    fn the_entropy_bonus_keeps_the_policy_softer() {
        let rows = logged(200, 17);
        let probe: Vec<NeuralInput> = rows.iter().take(100).map(|r| r.input.clone()).collect();
        for objective in [Objective::Snipw, Objective::Dr] {
            let mean_entropy = |entropy: f64| {
                let params = NeuralParams {
                    epochs: 10,
                    batch_size: 50,
                    learning_rate: 0.02,
                    temperature: 0.5,
                    objective,
                    entropy,
                    ..tiny(4, 3)
                };
                let mut policy = NeuralPolicy::new(params, 3, &Device::Cpu).unwrap();
                policy.train(&rows).unwrap();
                let pmfs = policy.pmfs(&probe).unwrap();
                pmfs.iter()
                    .map(|p| -p.iter().map(|q| if *q > 0.0 { q * q.ln() } else { 0.0 }).sum::<f64>())
                    .sum::<f64>()
                    / pmfs.len() as f64
            };
            let (sharp, soft) = (mean_entropy(0.0), mean_entropy(0.5));
            assert!(soft > sharp + 0.05, "{objective:?}: entropy {sharp:.3} without the bonus, {soft:.3} with it");
        }
    }

    /// A sharp policy gives the logged arms of a minibatch probabilities that underflow to 0:
    /// the SNIPW ratio was 0/0 and one NaN step poisoned every weight (seen in the learner:
    /// a snapshot that no process could load). Training now stays finite there.
    #[test]
    fn training_stays_finite_when_every_logged_arm_has_probability_zero() {
        let params = NeuralParams { temperature: 1e-7, epochs: 2, batch_size: 16, ..tiny(4, 11) };
        let mut policy = NeuralPolicy::new(params, 3, &Device::Cpu).unwrap();
        let mut rng = StdRng::seed_from_u64(8);
        let inputs: Vec<NeuralInput> = (0..64)
            .map(|_| {
                NeuralInput::without_events(&(0..4).map(|_| StandardNormal.sample(&mut rng)).collect::<Vec<f64>>())
            })
            .collect();
        let pmfs = policy.pmfs(&inputs).unwrap();
        let rows: Vec<LoggedRow> = inputs
            .into_iter()
            .zip(&pmfs)
            .map(|(input, pmf)| {
                // The arm the sharp policy gives the least probability (0 in f32).
                let arm = (0..3).min_by(|a, b| pmf[*a].total_cmp(&pmf[*b])).unwrap();
                LoggedRow { input, arm, propensity: 1.0 / 3.0, reward: 1.0 }
            })
            .collect();
        assert!(rows.iter().zip(&pmfs).all(|(r, p)| p[r.arm] < 1e-40), "the logged arms underflow in f32");
        policy.train(&rows).unwrap();
        assert!(policy.weights_finite().unwrap());
        NeuralPolicy::from_snapshot(&policy.snapshot().unwrap(), &Device::Cpu).unwrap();
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let params = NeuralParams { epochs: 2, batch_size: 64, ..tiny(4, 9) };
        let rows = logged(256, 3);
        let mut a = NeuralPolicy::new(params.clone(), 3, &Device::Cpu).unwrap();
        let mut b = NeuralPolicy::new(params.clone(), 3, &Device::Cpu).unwrap();
        assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
        a.train(&rows).unwrap();
        b.train(&rows).unwrap();
        assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
        let other = NeuralPolicy::new(NeuralParams { seed: 10, ..params }, 3, &Device::Cpu).unwrap();
        assert_ne!(other.snapshot().unwrap(), a.snapshot().unwrap());
    }

    /// The settings the README reports for `sim_stream_seed777.csv`: the doubly robust
    /// objective against an optimistic reward model, the wide path, small steps, early and
    /// frequent retrains and a floor of 0.002.
    const STREAM_PARAMS: &str = r#"{"features": 20, "objective": "dr", "optimism": 0.1, "wide": true,
        "epochs": 10, "temperature": 0.2, "clip": 1.01, "batch_size": 32, "learning_rate": 0.003}"#;

    /// Issue 5's peer figure: Vowpal Wabbit 9.11 `--cb_explore_adf --squarecb -q sa` on the stream.
    const SQUARECB_REGRET: f64 = 1_299.8;

    /// Replays `../shared/reference/sim_stream_seed777.csv` with periodic retraining (at
    /// 200 rounds, then each time the log grew by 1.3) for seeds 1, 2 and 3 (or
    /// `STREAM_SEEDS`, comma-separated) and checks each cumulative regret against
    /// squarecb's; with `NEURAL_PARAMS` (JSON) it replays those settings and only checks that
    /// they beat uniform. The seeds replay on their own threads: ~100 s each in the test
    /// profile (candle and gemm are optimised there, see Cargo.toml), ~60 s in release.
    #[test]
    fn replay_reference_stream() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/sim_stream_seed777.csv");
        let text = std::fs::read_to_string(path).unwrap();
        let rounds: Vec<StreamRound> = text
            .lines()
            .skip(1)
            .map(|line| {
                let v: Vec<f64> = line.split(',').map(|c| c.parse::<f64>().unwrap()).collect();
                StreamRound {
                    context: v[1..21].to_vec(),
                    probs: v[21..31].to_vec(),
                    best_arm: v[31] as usize,
                    u_action: v[32],
                    u_reward: v[33],
                }
            })
            .collect();
        assert_eq!(rounds.len(), 20_000);
        let uniform_regret: f64 = rounds.iter().map(|r| r.probs[r.best_arm] - r.probs.iter().sum::<f64>() / 10.0).sum();
        let custom = std::env::var("NEURAL_PARAMS").ok();
        let params: NeuralParams = serde_json::from_str(custom.as_deref().unwrap_or(STREAM_PARAMS)).unwrap();
        let seeds: Vec<u64> = std::env::var("STREAM_SEEDS")
            .unwrap_or_else(|_| "1,2,3".into())
            .split(',')
            .map(|s| s.trim().parse().unwrap())
            .collect();
        let config = ReplayConfig { first_retrain: 200, growth: 1.3, min_propensity: 0.002 };
        let outcomes: Vec<(u64, ReplayOutcome, f64)> = std::thread::scope(|scope| {
            let replays: Vec<_> = seeds
                .iter()
                .map(|&seed| {
                    let (params, rounds, config) = (NeuralParams { seed, ..params.clone() }, &rounds, &config);
                    scope.spawn(move || {
                        let started = std::time::Instant::now();
                        let out = replay_stream(params, rounds, config, &Device::Cpu).unwrap();
                        (seed, out, started.elapsed().as_secs_f64())
                    })
                })
                .collect();
            replays.into_iter().map(|replay| replay.join().unwrap()).collect()
        });
        println!("settings (the seed aside): {params:?}\nuniform regret {uniform_regret:.1}");
        for (seed, out, secs) in outcomes {
            println!("seed {seed}: {out:?}, {:.0} s", secs);
            assert!(out.cumulative_regret < uniform_regret, "seed {seed}: {out:?}");
            if custom.is_none() {
                assert!(out.cumulative_regret <= SQUARECB_REGRET, "seed {seed}: {out:?}");
            }
        }
    }
}
