//! The re-estimation and promotion loop's pure part: [`engine`] turns the
//! sufficient statistics the store keeps per (arm, metric, period) into
//! estimates, always-valid and fixed-horizon tests, Bayesian summaries, SRM and
//! guardrail checks and one promotion decision; [`simulate`] runs that engine
//! on simulated traffic (A/A, power, adaptive-allocation drift, SRM) to show
//! that its decisions can be trusted. Neither does I/O, reads a clock or uses
//! a global RNG.

pub mod engine;
pub mod job;
pub mod simulate;
