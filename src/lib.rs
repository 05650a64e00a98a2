//! Strategist: a contextual-bandit experimentation platform for e-commerce marketing.
//! A storefront asks which strategy to show a shopper; Strategist answers from a learning
//! policy, logs the decision with its exact probability, joins the outcomes, and learns.
//!
//! Rooms: `api` (HTTP), `experiment` (definitions, registry), `policy` (PMFs and learning,
//! pure), `store` (diesel, log writer), `learner` (background updates), `cli`.

pub mod analysis;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod experiment;
pub mod keys;
pub mod learner;
pub mod ope;
pub mod policy;
pub mod profile;
pub mod report;
pub mod scoring;
pub mod startup;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod web;
