//! The statistics engine: pure functions over sufficient statistics, no
//! I/O (except [`eval_file`], which reads a reference file for the CLI), no
//! clock, no global RNG (randomized methods take and report a seed).
//!
//! Per (experiment, arm, metric, period) the store keeps mergeable
//! sufficient statistics ([`suff`]); from them this module computes
//! fixed-horizon tests and intervals ([`frequentist`]), always-valid
//! sequential tests and confidence sequences ([`sequential`]), Bayesian
//! chance to be best and expected loss ([`bayes`]), CUPED ([`cuped`]),
//! estimates that stay unbiased under adaptive allocation (period
//! stratification, IPW / SNIPW: [`adaptive`]), SRM ([`srm`]) and
//! multiple-comparison corrections ([`multiple`]). A quantity that cannot be
//! computed is a [`StatsError`] with a stable snake_case [`Reason`], never a
//! NaN or a silent zero; p-values that underflow a double are carried as
//! logarithms ([`PValue::ln_p`]).

pub mod adaptive;
pub mod bayes;
pub mod cuped;
pub mod error;
pub mod eval;
pub mod frequentist;
pub mod multiple;
pub mod sequential;
pub mod special;
pub mod srm;
pub mod suff;

pub use adaptive::{
    ipw_difference, ipw_mean, snipw_difference, snipw_mean, stratified_difference, stratified_mean,
    stratified_relative_difference,
};
pub use bayes::{
    best_arm, best_arm_monte_carlo, compare_beta, compare_gaussian, prob_b_beats_a, prob_b_beats_a_closed_form,
    prob_b_beats_a_quadrature, BestArm, BetaPosterior, GaussianPosterior, Method, NormalPrior, Posterior,
    TwoArmComparison,
};
pub use cuped::{cuped_adjustment, cuped_difference, CupedAdjustment};
pub use error::{Reason, StatsError, StatsResult};
pub use eval::{eval_cases, eval_file};
pub use frequentist::{
    absolute_difference, relative_difference, two_proportion_ztest, welch_t_test, DiffEstimate, Interval, MeanEstimate,
    PValue, TwoProportionZTest, WelchTest,
};
pub use multiple::{benjamini_hochberg, holm, rejected};
pub use sequential::{
    confidence_sequence, msprt, msprt_ci, msprt_for, msprt_sequence, ConfidenceSequence, MsprtLook, RunningMinimum,
    SequentialLook,
};
pub use special::{normal_quantile, student_t_quantile};
pub use srm::{srm_test, SrmTest};
pub use suff::{CupedStats, Moments, ProportionStats, RatioStats, SampleStats, Summary, WeightedStats};
