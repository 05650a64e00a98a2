//! Experiments: definitions and their validation (`definition`), request context and
//! targeting (`context`), loading definition files (`files`), and the in-memory registry
//! serving processes decide from (`registry`).

pub mod admin;
pub mod context;
pub mod definition;
pub mod files;
pub mod registry;

pub use definition::{Definition, Status};
