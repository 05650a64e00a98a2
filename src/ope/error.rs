//! Errors of the off-policy evaluation room, each with a stable snake_case code that callers
//! (CLI, API) can branch on.

use std::path::PathBuf;

/// Everything that can go wrong while loading logged data, building a target policy or
/// estimating. A result that cannot be computed is an error with a reason, never a silent zero.
#[derive(Debug, thiserror::Error)]
pub enum OpeError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A CSV file is malformed or lacks a required column.
    #[error("{}:{line}: {message}", path.display())]
    Csv { path: PathBuf, line: usize, message: String },
    /// A logged row is invalid (propensity outside (0, 1], unknown action, non-finite reward…).
    #[error("invalid logged row {row}: {message}")]
    InvalidRow { row: usize, message: String },
    /// The logged data has no rows (or too few for the requested computation).
    #[error("not enough logged rows: {message}")]
    NotEnoughData { message: String },
    /// A target policy specification or distribution is invalid.
    #[error("invalid target policy: {message}")]
    InvalidPolicy { message: String },
    /// An estimation setting is invalid (zero folds, bad threshold…).
    #[error("invalid OPE configuration: {message}")]
    InvalidConfig { message: String },
    /// An estimate is undefined on these data (for example SNIPW when every weight is zero).
    #[error("cannot compute {what}: {reason}")]
    CannotCompute { what: &'static str, reason: String },
    /// The reward model could not be fitted.
    #[error("reward model fit failed: {message}")]
    ModelFit { message: String },
    /// `--logged experiment:KEY` names no experiment in the store.
    #[error("no experiment `{key}` in the store")]
    UnknownExperiment { key: String },
    /// `--logged experiment:KEY@VERSION` names a version the experiment does not have.
    #[error("experiment `{key}` has no version {version} (its current version is {current})")]
    UnknownVersion { key: String, version: i32, current: i32 },
    /// A `snapshot:N` target names no policy snapshot of the experiment.
    #[error("experiment `{key}` has no policy snapshot {policy_version}")]
    UnknownSnapshot { key: String, policy_version: String },
    /// Every exposure of the experiment version is still inside its attribution window (or
    /// there is none).
    #[error(
        "experiment `{key}` version {version} has no mature exposure ({immature} still inside the `{window}` \
         attribution window of `{metric}`)"
    )]
    NoMatureExposures { key: String, version: i32, immature: i64, metric: String, window: String },
    /// The target policy cannot be evaluated on this kind of logged data.
    #[error("--target {target} does not apply to {source_kind}: {reason}")]
    TargetNotApplicable { target: String, source_kind: &'static str, reason: String },
    /// The store could not be opened or read, or holds data this room cannot use.
    #[error("store: {message}")]
    Store { message: String },
}

impl OpeError {
    /// Stable machine-readable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            OpeError::Io { .. } => "ope_io",
            OpeError::Csv { .. } => "ope_csv",
            OpeError::InvalidRow { .. } => "ope_invalid_row",
            OpeError::NotEnoughData { .. } => "ope_not_enough_data",
            OpeError::InvalidPolicy { .. } => "ope_invalid_policy",
            OpeError::InvalidConfig { .. } => "ope_invalid_config",
            OpeError::CannotCompute { .. } => "ope_cannot_compute",
            OpeError::ModelFit { .. } => "ope_model_fit",
            OpeError::UnknownExperiment { .. } => "ope_unknown_experiment",
            OpeError::UnknownVersion { .. } => "ope_unknown_version",
            OpeError::UnknownSnapshot { .. } => "ope_unknown_snapshot",
            OpeError::NoMatureExposures { .. } => "ope_no_mature_exposures",
            OpeError::TargetNotApplicable { .. } => "ope_target_not_applicable",
            OpeError::Store { .. } => "ope_store",
        }
    }
}

impl From<crate::store::StoreError> for OpeError {
    fn from(e: crate::store::StoreError) -> Self {
        OpeError::Store { message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_messages_name_the_cause() {
        let e = OpeError::UnknownExperiment { key: "checkout".into() };
        assert_eq!(e.code(), "ope_unknown_experiment");
        assert!(e.to_string().contains("no experiment `checkout`"));
        let e = OpeError::CannotCompute { what: "snipw", reason: "every importance weight is zero".into() };
        assert_eq!(e.code(), "ope_cannot_compute");
        assert!(e.to_string().starts_with("cannot compute snipw"));
    }
}
