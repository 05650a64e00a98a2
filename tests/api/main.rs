//! API tests: a real server over real HTTP on a fresh Postgres database or SQLite file per test.

mod helpers;

mod analysis;
mod auth;
mod browser;
mod contextual;
mod crash;
mod dashboards;
mod decisions;
mod durability;
mod errors;
mod experiments;
mod hostile;
mod learning;
mod neural;
mod ope_log;
mod ops;
mod outage;
mod profiles;
mod reports;
mod rewards;
mod shadow;
