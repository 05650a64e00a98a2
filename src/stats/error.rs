//! Errors of the statistics engine: a quantity that cannot be computed is an
//! error value carrying a stable snake_case [`Reason`] code, never a NaN and
//! never a silent zero.

use serde::Serialize;
use std::fmt;

/// Why a quantity cannot be computed. The serialized (snake_case) names are a
/// stable contract: clients branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No observations at all (n = 0).
    EmptySample,
    /// Too few observations for the quantity (e.g. n < 2 for a sample
    /// variance or a Welch degree of freedom).
    InsufficientSample,
    /// The standard error is zero, so a test statistic or interval would be a
    /// division by zero (e.g. zero conversions in both arms).
    ZeroVariance,
    /// A relative difference or lift with a control mean of zero.
    ZeroControlMean,
    /// A ratio metric whose denominator sums to zero.
    ZeroDenominator,
    /// An SRM arm with an expected count of zero.
    ZeroExpectedCount,
    /// A period (stratum) with no units of the arm.
    EmptyStratum,
    /// The method does not apply to these inputs (e.g. the closed form of
    /// P(B > A) needs an integer alpha, IPW estimates have no t degrees of
    /// freedom).
    NotApplicable,
    /// The value exists but overflows a double (compare its logarithm).
    Overflow,
    /// An iterative method did not converge.
    NoConvergence,
    /// An input is out of its domain (NaN, negative count, alpha outside
    /// (0, 1), mismatched lengths, ...).
    InvalidInput,
    /// The evaluation file names a test kind this engine does not know.
    UnsupportedTest,
}

impl Reason {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::EmptySample => "empty_sample",
            Reason::InsufficientSample => "insufficient_sample",
            Reason::ZeroVariance => "zero_variance",
            Reason::ZeroControlMean => "zero_control_mean",
            Reason::ZeroDenominator => "zero_denominator",
            Reason::ZeroExpectedCount => "zero_expected_count",
            Reason::EmptyStratum => "empty_stratum",
            Reason::NotApplicable => "not_applicable",
            Reason::Overflow => "overflow",
            Reason::NoConvergence => "no_convergence",
            Reason::InvalidInput => "invalid_input",
            Reason::UnsupportedTest => "unsupported_test",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of every fallible statistics function.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatsError {
    /// The data do not determine the quantity (zero variance, n = 1, ...).
    #[error("cannot compute: {reason}")]
    CannotCompute { reason: Reason },
    /// The caller passed something outside the domain of the function.
    #[error("invalid input `{field}`: {message}")]
    InvalidInput { field: String, message: String },
}

impl StatsError {
    /// Shorthand for [`StatsError::CannotCompute`].
    pub fn cannot(reason: Reason) -> Self {
        StatsError::CannotCompute { reason }
    }

    /// Shorthand for [`StatsError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        StatsError::InvalidInput { field: field.into(), message: message.into() }
    }

    /// The reason code (`invalid_input` for [`StatsError::InvalidInput`]).
    pub fn reason(&self) -> Reason {
        match self {
            StatsError::CannotCompute { reason } => *reason,
            StatsError::InvalidInput { .. } => Reason::InvalidInput,
        }
    }
}

/// Result alias used throughout `stats`.
pub type StatsResult<T> = Result<T, StatsError>;

/// Checks that `x` is finite.
#[inline]
pub(crate) fn finite(field: &str, x: f64) -> StatsResult<f64> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(not_finite(field, x))
    }
}

#[cold]
#[inline(never)]
fn not_finite(field: &str, x: f64) -> StatsError {
    StatsError::invalid(field, format!("must be finite, got {x}"))
}

/// Checks that `alpha` lies strictly inside (0, 1).
pub(crate) fn check_alpha(alpha: f64) -> StatsResult<f64> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(alpha)
    } else {
        Err(StatsError::invalid("alpha", format!("must lie in (0, 1), got {alpha}")))
    }
}
