//! Off-policy evaluation (OPE): estimate what a target policy would have earned from logged
//! bandit feedback that carries the logging policy's propensities, without running it.
//!
//! The pieces, in the order [`evaluate()`] uses them:
//!
//! - [`LoggedData`] holds the logged rows (context features, action, slate position, reward,
//!   propensity). [`load_obd`] fills it from an Open Bandit Dataset CSV;
//!   [`platform::load_experiment_log`] from the platform's own exposure log in the store, both
//!   through [`LoggedDataBuilder`].
//! - [`TargetPolicy`] gives the target policy's action distribution for every logged row and
//!   position: [`UniformPolicy`], [`PositionTablePolicy`] (fixed weights, one arm, an action
//!   distribution CSV, Bernoulli Thompson sampling fitted by [`fit_bernoulli_ts`], or a
//!   context-free policy snapshot of the platform read by [`platform::snapshot_policy`]) and
//!   [`RowTablePolicy`] (one distribution per row: a contextual snapshot — `lin_ts`, `lin_ucb`,
//!   `neural_pg` — scored on each exposure's logged context, or a policy learned by [`learn`]).
//! - [`reward_model`] fits a cross-fitted, L2-regularised logistic (or linear) regression of the
//!   reward on context, action and position, for the direct method and doubly robust.
//! - [`estimators`] holds the pure estimator formulas (DM, IPW, SNIPW, DR with a fitted
//!   control-variate coefficient, classic DR, Switch-DR), their normal-approximation intervals,
//!   the effective sample size and the Switch-DR threshold choice; [`bootstrap`] the seeded
//!   percentile bootstrap.
//! - [`learn`] trains the platform's contextual policies (`lin_ts`, `lin_ucb`, `neural_pg`) on
//!   the Open Bandit Dataset's uniform-random logs of the earlier days and evaluates them on the
//!   held-out later days, beside the production Thompson sampling policy's on-policy value.
//! - [`cli`] is the `strategist ope` subcommand (and `strategist ope learn`).
//!
//! Pure computation: no clock, no global RNG (every random step takes a seed), no I/O except
//! the CSV loaders in [`obd`], [`target`] and [`learn`] (`load_obd_timestamps`, `learn_obd`),
//! the store reads in [`platform`] (which take the time as an argument) and the printing in
//! [`cli`].

pub mod bootstrap;
pub mod cli;
mod csv;
pub mod data;
mod error;
pub mod estimators;
pub mod evaluate;
pub mod learn;
pub mod obd;
pub mod platform;
pub mod reward_model;
mod seed;
pub mod target;

pub use data::{CategoricalFeature, LoggedData, LoggedDataBuilder, LoggedRecord};
pub use error::OpeError;
pub use estimators::{Estimator, EstimatorInputs, SwitchTau};
pub use evaluate::{evaluate, evaluate_with_progress, EstimateSummary, Estimates, OpeConfig, OpeReport};
pub use obd::{load_obd, ObdOptions};
pub use reward_model::{RewardModel, RewardModelConfig, RewardModelFitting, RewardModelKind, RewardPredictions};
pub use target::{
    fit_bernoulli_ts, BernoulliTsConfig, PositionTablePolicy, RowTablePolicy, TargetPolicy, TargetSpec, UniformPolicy,
};
