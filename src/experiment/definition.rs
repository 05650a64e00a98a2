//! Experiment definitions as the growth team writes them (`experiments/*.toml` or JSON on
//! `/v1/experiments`), and their validation. A definition that passes `validate` can be
//! served: every error names the field and the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analysis::engine::AnalysisConfig;
use crate::policy::PolicySpec;

pub const MAX_ARMS: usize = 100;
pub const MAX_KEY_LEN: usize = 64;
/// Longest attribution `window` of a metric: a year. Longer windows mean nothing for a
/// marketing outcome and, unbounded, `now − window` leaves the range of a timestamp.
pub const MAX_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest `reward_wait`: 90 days (the learner would otherwise never see feedback).
pub const MAX_REWARD_WAIT: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest experiment `name`, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest `description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    #[default]
    User,
    Session,
}

/// Named apart in the OpenAPI document: the analysis engine has its own `MetricKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = DefinitionMetricKind)]
pub enum MetricKind {
    /// 0/1 per reward; an exposure converts when any reward of it is 1.
    Conversion,
    Revenue,
    /// Revenue minus the arm's cost (`cost` per reward plus `cost_rate` × revenue).
    Profit,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Higher,
    /// Lower is better: the value is negated once, at ingestion.
    Lower,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub name: String,
    pub kind: MetricKind,
    /// Attribution window after the exposure, e.g. "24h", "7d": longer than zero, at most
    /// 365 days.
    #[serde(default = "default_window")]
    pub window: String,
    #[serde(default)]
    pub direction: Direction,
}

fn default_window() -> String {
    "24h".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmDef {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub key: String,
    /// What the storefront renders; returned verbatim by `/v1/assign`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Cost per rewarded outcome (e.g. free shipping ≈ 4.90 per order).
    #[serde(default)]
    #[schema(minimum = 0.0)]
    pub cost: f64,
    /// Cost as a share of revenue (e.g. a 10% coupon = 0.10).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub cost_rate: f64,
    #[serde(default)]
    pub control: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleOp {
    Eq,
    Ne,
    In,
    NotIn,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// One targeting condition on a request attribute; all rules must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub attribute: String,
    pub op: RuleOp,
    /// A string, number or boolean (`eq`, `ne`), a number (`lt` … `gte`), or a non-empty list
    /// of strings and numbers (`in`, `not_in`).
    #[schema(value_type = Value)]
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Running,
    Paused,
    Concluded,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Concluded => "concluded",
            Status::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "draft" => Status::Draft,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "concluded" => Status::Concluded,
            "stopped" => Status::Stopped,
            _ => return None,
        })
    }
}

/// An experiment as defined by the growth team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub key: String,
    /// Display name: 1–200 characters, not only spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// Free text, at most 16,384 characters; no control characters but tab and line breaks.
    #[serde(default)]
    #[schema(max_length = 16384, pattern = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$")]
    pub description: String,
    #[serde(default)]
    pub unit: Unit,
    /// 2–100 arms with distinct keys, exactly one of them `control`.
    #[schema(min_items = 2, max_items = 100)]
    pub arms: Vec<ArmDef>,
    #[schema(value_type = Object)]
    pub policy: PolicySpec,
    pub primary_metric: MetricDef,
    #[serde(default)]
    pub guardrails: Vec<MetricDef>,
    #[serde(default)]
    pub targeting: Vec<Rule>,
    /// Share of units (by a deterministic hash) that enter the experiment, in (0, 1].
    #[serde(default = "one")]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub traffic: f64,
    /// A unit keeps its first arm for the experiment's version.
    #[serde(default)]
    pub sticky: bool,
    /// Exploration floor: every eligible arm is drawn with at least this probability.
    #[serde(default = "default_floor")]
    #[schema(minimum = 0.0, maximum = 0.5)]
    pub min_propensity: f64,
    /// How long the learner waits after an exposure before using it (rewards that could
    /// not have arrived yet are not counted as failures), e.g. "10m"; at most 90 days.
    #[serde(default = "default_reward_wait")]
    pub reward_wait: String,
    /// How the analyzer judges the experiment: alpha, minimum sample, guardrail tolerance,
    /// futility MDE, holdout after promotion, automatic promotion, CUPED covariate.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub analysis: AnalysisConfig,
    /// What a contextual policy (`lin_ts`, `lin_ucb`, `neural_pg`) reads: profile features and request
    /// attributes, and how they are encoded (see `profile::schema`). Required by, and only
    /// allowed with, a contextual policy; its encoded length must equal the policy's
    /// `features`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub features: Option<crate::profile::schema::FeatureSchema>,
    /// Shadow mode: a candidate policy scored on every logged decision (its PMF is logged in
    /// `exposures.shadow_pmf`) but never served, evaluated off-policy on what the live policy
    /// logged, and promoted when its lower confidence bound beats the live value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowDef>,
    /// Desired status when the file is first applied (`draft` if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

fn one() -> f64 {
    1.0
}

/// The `[shadow]` table: a candidate policy and when it may replace the live one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowDef {
    /// The candidate, written like `[policy]` (any kind). A contextual candidate (`lin_ts`,
    /// `lin_ucb`, `neural_pg`) reads the experiment's `[features]`; a `neural_pg` candidate
    /// also reads the unit's recent events, and is retrained by the learner on its own
    /// `retrain_every` / `min_new_rows` schedule from the same log.
    #[schema(value_type = Object)]
    pub policy: PolicySpec,
    /// Matured exposures carrying the candidate's PMF needed before any decision.
    #[serde(default = "default_min_exposures")]
    #[schema(minimum = 2)]
    pub min_exposures: u64,
    /// Two-sided confidence level of the intervals; the lower bound of the candidate's
    /// interval must beat the live policy's value for a promotion.
    #[serde(default = "default_confidence")]
    #[schema(minimum = 0.5, maximum = 0.999)]
    pub confidence: f64,
    /// Promote automatically (the learner's pass) when the rule holds; otherwise only an
    /// admin promotes (`POST /v1/experiments/{key}/shadow/promote`).
    #[serde(default = "yes")]
    pub auto_promote: bool,
}

/// Largest `shadow.min_exposures`.
pub const MAX_SHADOW_MIN_EXPOSURES: u64 = 1_000_000_000;

fn default_min_exposures() -> u64 {
    500
}
fn default_confidence() -> f64 {
    0.95
}
fn yes() -> bool {
    true
}

/// The context length a contextual policy expects (`None`: the policy reads no context).
fn context_dimension(policy: &PolicySpec) -> Option<usize> {
    policy.context_dimension()
}
fn default_floor() -> f64 {
    0.01
}
fn default_reward_wait() -> String {
    "10m".to_string()
}

/// One problem with a definition: which field, and why.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Parses a duration such as "90s", "10m", "24h", "7d".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like \"30m\", \"24h\" or \"7d\" ({e})"))
}

/// `t − d`, or the Unix epoch when that is earlier (nothing in the store is older, and every
/// backend can hold it: `NaiveDateTime::MIN` is out of Postgres's range). A duration stored
/// before `validate` bounded it must not panic a handler or a background job.
pub fn time_before(t: chrono::NaiveDateTime, d: Duration) -> chrono::NaiveDateTime {
    let epoch = chrono::DateTime::UNIX_EPOCH.naive_utc();
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_sub_signed(d)).map_or(epoch, |t| t.max(epoch))
}

/// A std duration as chrono's, saturating at chrono's maximum instead of failing.
pub fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Why free text cannot be stored, if it cannot: NUL (which a Postgres TEXT column cannot
/// hold) and other control characters (C0, DEL, C1). `multiline` text may hold tabs and
/// line breaks.
pub fn text_problem(s: &str, multiline: bool) -> Option<&'static str> {
    if s.contains('\0') {
        return Some("must not contain NUL characters");
    }
    let allowed = |c: char| multiline && matches!(c, '\t' | '\n' | '\r');
    if s.chars().any(|c| c.is_control() && !allowed(c)) {
        return Some(if multiline {
            "must not contain control characters other than tab and line breaks"
        } else {
            "must not contain control characters"
        });
    }
    None
}

pub fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_KEY_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Definition {
    pub fn arm_keys(&self) -> Vec<String> {
        self.arms.iter().map(|a| a.key.clone()).collect()
    }

    pub fn arm_index(&self, key: &str) -> Option<usize> {
        self.arms.iter().position(|a| a.key == key)
    }

    pub fn control_index(&self) -> usize {
        self.arms.iter().position(|a| a.control).unwrap_or(0)
    }

    pub fn metrics(&self) -> impl Iterator<Item = &MetricDef> {
        std::iter::once(&self.primary_metric).chain(self.guardrails.iter())
    }

    pub fn metric(&self, name: &str) -> Option<&MetricDef> {
        self.metrics().find(|m| m.name == name)
    }

    /// The longest attribution window of any metric.
    pub fn max_window(&self) -> Duration {
        self.metrics().filter_map(|m| parse_duration(&m.window).ok()).max().unwrap_or(Duration::from_secs(0))
    }

    pub fn reward_wait_duration(&self) -> Duration {
        parse_duration(&self.reward_wait).unwrap_or(Duration::from_secs(600))
    }

    /// Whether exposures log a [`crate::policy::neural::NeuralContext`] (features, decision
    /// time and recent events) rather than the plain encoded vector: when the live policy or
    /// the shadow candidate is `neural_pg` (the linear kinds read its `x`).
    pub fn logs_neural_context(&self) -> bool {
        self.policy.is_neural() || self.shadow.as_ref().is_some_and(|s| s.policy.is_neural())
    }

    /// Whether a change from `self` to `next` needs a new version: arms, policy, shadow
    /// candidate, or the feature schema (a model learned on one encoding reads another
    /// schema's vectors as nonsense, and a version's logged contexts must share one schema).
    pub fn needs_new_version(&self, next: &Definition) -> bool {
        self.arms != next.arms
            || self.policy != next.policy
            || self.shadow != next.shadow
            || self.features != next.features
    }

    /// Every problem at once, each naming its field.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut err = |field: String, reason: String| errs.push(FieldError { field, reason });
        if !valid_key(&self.key) {
            err("key".into(), format!("must be 1–{MAX_KEY_LEN} characters of letters, digits, '-', '_' or '.'"));
        }
        if self.name.trim().is_empty() {
            err("name".into(), "must not be empty".into());
        }
        if self.name.chars().count() > MAX_NAME_CHARS {
            err("name".into(), format!("at most {MAX_NAME_CHARS} characters"));
        }
        if let Some(why) = text_problem(&self.name, false) {
            err("name".into(), why.into());
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            err("description".into(), format!("at most {MAX_DESCRIPTION_CHARS} characters"));
        }
        if let Some(why) = text_problem(&self.description, true) {
            err("description".into(), why.into());
        }
        if self.arms.len() < 2 {
            err("arms".into(), "an experiment needs at least two arms".into());
        }
        if self.arms.len() > MAX_ARMS {
            err("arms".into(), format!("at most {MAX_ARMS} arms"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, arm) in self.arms.iter().enumerate() {
            if !valid_key(&arm.key) {
                err(
                    format!("arms[{i}].key"),
                    format!("must be 1–{MAX_KEY_LEN} characters of letters, digits, '-', '_' or '.'"),
                );
            }
            if !seen.insert(arm.key.as_str()) {
                err(format!("arms[{i}].key"), format!("duplicate arm key `{}`", arm.key));
            }
            if !arm.cost.is_finite() || arm.cost < 0.0 {
                err(format!("arms[{i}].cost"), "must be a finite number ≥ 0".into());
            }
            if !arm.cost_rate.is_finite() || !(0.0..=1.0).contains(&arm.cost_rate) {
                err(format!("arms[{i}].cost_rate"), "must be in [0, 1]".into());
            }
            if serde_json::to_vec(&arm.payload).map(|v| v.len()).unwrap_or(usize::MAX) > 16 * 1024 {
                err(format!("arms[{i}].payload"), "must serialize to at most 16 KiB".into());
            }
        }
        let controls = self.arms.iter().filter(|a| a.control).count();
        if controls != 1 {
            err("arms".into(), format!("exactly one arm must have `control = true` (found {controls})"));
        }
        if !self.traffic.is_finite() || self.traffic <= 0.0 || self.traffic > 1.0 {
            err("traffic".into(), "must be in (0, 1]".into());
        }
        let k = self.arms.len().max(1) as f64;
        if !self.min_propensity.is_finite() || self.min_propensity < 0.0 || self.min_propensity * k > 1.0 {
            err("min_propensity".into(), format!("must be ≥ 0 and at most 1 / number of arms ({:.4})", 1.0 / k));
        }
        match parse_duration(&self.reward_wait) {
            Ok(d) if d > MAX_REWARD_WAIT => err("reward_wait".into(), "must be at most 90 days".into()),
            Ok(_) => {}
            Err(e) => err("reward_wait".into(), e),
        }
        let mut metric_names = std::collections::HashSet::new();
        for (field, m) in std::iter::once(("primary_metric".to_string(), &self.primary_metric))
            .chain(self.guardrails.iter().enumerate().map(|(i, m)| (format!("guardrails[{i}]"), m)))
        {
            if !valid_key(&m.name) {
                err(format!("{field}.name"), "must be 1–64 characters of letters, digits, '-', '_' or '.'".into());
            }
            if !metric_names.insert(m.name.as_str()) {
                err(format!("{field}.name"), format!("duplicate metric `{}`", m.name));
            }
            match parse_duration(&m.window) {
                Ok(d) if d.is_zero() => err(format!("{field}.window"), "must be longer than zero".into()),
                Ok(d) if d > MAX_WINDOW => err(format!("{field}.window"), "must be at most 365 days".into()),
                Ok(_) => {}
                Err(e) => err(format!("{field}.window"), e),
            }
        }
        for (i, r) in self.targeting.iter().enumerate() {
            let field = format!("targeting[{i}]");
            if r.attribute.is_empty() || r.attribute.len() > MAX_KEY_LEN {
                err(format!("{field}.attribute"), "must be 1–64 characters".into());
            }
            if let Some(why) = text_problem(&r.attribute, false) {
                err(format!("{field}.attribute"), why.into());
            }
            match r.op {
                RuleOp::In | RuleOp::NotIn => {
                    let ok = r
                        .value
                        .as_array()
                        .map(|a| !a.is_empty() && a.iter().all(|v| v.is_string() || v.is_number()))
                        .unwrap_or(false);
                    if !ok {
                        err(
                            format!("{field}.value"),
                            "`in`/`not_in` need a non-empty list of strings or numbers".into(),
                        );
                    }
                }
                RuleOp::Lt | RuleOp::Lte | RuleOp::Gt | RuleOp::Gte => {
                    if !r.value.as_f64().is_some_and(f64::is_finite) {
                        err(format!("{field}.value"), "a numeric comparison needs a number".into());
                    }
                }
                RuleOp::Eq | RuleOp::Ne => {
                    if !(r.value.is_string() || r.value.is_number() || r.value.is_boolean()) {
                        err(format!("{field}.value"), "`eq`/`ne` need a string, number or boolean".into());
                    }
                }
            }
        }
        if let Err(e) = self.policy.validate(&self.arm_keys()) {
            err("policy".into(), e.to_string());
        }
        if let Some(shadow) = &self.shadow {
            if let Err(e) = shadow.policy.validate(&self.arm_keys()) {
                err("shadow.policy".into(), e.to_string());
            }
            if shadow.min_exposures < 2 || shadow.min_exposures > MAX_SHADOW_MIN_EXPOSURES {
                err("shadow.min_exposures".into(), format!("must be in [2, {MAX_SHADOW_MIN_EXPOSURES}]"));
            }
            if !shadow.confidence.is_finite() || !(0.5..=0.999).contains(&shadow.confidence) {
                err("shadow.confidence".into(), "must be in [0.5, 0.999]".into());
            }
        }
        let shadow_dim = self.shadow.as_ref().and_then(|s| context_dimension(&s.policy));
        match (&self.features, context_dimension(&self.policy)) {
            (Some(f), live_dim) if live_dim.is_some() || shadow_dim.is_some() => match f.validate() {
                Err(e) => err(format!("features.{}", e.field), e.reason),
                Ok(()) => {
                    if live_dim.is_some_and(|d| d != f.dimension()) {
                        err(
                            "policy.features".into(),
                            format!("must equal the encoded length of `[features]`, which is {}", f.dimension()),
                        );
                    }
                    if shadow_dim.is_some_and(|d| d != f.dimension()) {
                        err(
                            "shadow.policy.features".into(),
                            format!("must equal the encoded length of `[features]`, which is {}", f.dimension()),
                        );
                    }
                }
            },
            (None, Some(_)) => err(
                "features".into(),
                format!("policy `{}` is contextual: declare the features it reads in `[features]`", self.policy.kind()),
            ),
            (Some(_), _) => err(
                "features".into(),
                format!(
                    "policy `{}` reads no context: remove `[features]` or use lin_ts / lin_ucb / neural_pg",
                    self.policy.kind()
                ),
            ),
            (None, None) => {
                if let (Some(shadow), Some(_)) = (&self.shadow, shadow_dim) {
                    err(
                        "features".into(),
                        format!(
                            "shadow candidate `{}` is contextual: declare the features it reads in `[features]`",
                            shadow.policy.kind()
                        ),
                    );
                }
            }
        }
        for (field, reason) in self.analysis.validate() {
            err(format!("analysis.{field}"), reason);
        }
        if let Some(c) = &self.analysis.covariate {
            if !valid_key(c) {
                err("analysis.covariate".into(), "must name a metric: 1–64 letters, digits, '-', '_' or '.'".into());
            }
        }
        if let Some(Status::Paused | Status::Concluded | Status::Stopped) = self.status {
            err("status".into(), "a definition may only ask to start as `draft` or `running`".into());
        }
        errs
    }
}

/// Parses a TOML definition; syntax and type errors carry TOML's own position and text.
pub fn from_toml(text: &str) -> Result<Definition, String> {
    toml::from_str::<Definition>(text).map_err(|e| e.to_string())
}

/// Metric names with their parsed windows, for attribution.
pub fn windows(def: &Definition) -> BTreeMap<String, Duration> {
    def.metrics().filter_map(|m| parse_duration(&m.window).ok().map(|d| (m.name.clone(), d))).collect()
}

#[cfg(test)]
mod duration_and_text_tests {
    use super::*;

    #[test]
    fn time_before_subtracts_and_saturates_at_the_unix_epoch() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap().naive_utc();
        assert_eq!(time_before(now, Duration::from_secs(60)), now - chrono::Duration::seconds(60));
        let epoch = chrono::DateTime::UNIX_EPOCH.naive_utc();
        for huge in [MAX_WINDOW * 100, Duration::from_secs(200_000_000 * 365 * 86_400), Duration::MAX] {
            assert_eq!(time_before(now, huge), epoch);
        }
        assert_eq!(to_chrono(Duration::MAX), chrono::Duration::MAX);
    }

    #[test]
    fn text_problem_refuses_nul_and_control_characters_but_keeps_line_breaks_in_multiline_text() {
        for ok in ["plain", "👩\u{200d}💻 \u{202e}rtl", "'; DROP TABLE x; --"] {
            assert_eq!((text_problem(ok, false), text_problem(ok, true)), (None, None), "{ok:?}");
        }
        for line in ["a\nb", "a\tb", "a\r\nb"] {
            assert!(text_problem(line, false).is_some() && text_problem(line, true).is_none(), "{line:?}");
        }
        for bad in ["a\u{0}b", "a\u{7f}b", "a\u{85}b", "a\u{1b}[31m"] {
            assert!(text_problem(bad, false).is_some() && text_problem(bad, true).is_some(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod neural_definition_tests {
    use super::*;

    /// Two numeric profile features and a two-value categorical one: 2 + (2 + 1) = 5 entries.
    fn def(policy: &str, with_features: bool) -> Definition {
        let features = if with_features {
            "[features]\nnumeric = [{ name = \"monetary_90d\" }, { name = \"is_returning\" }]\n\
             categorical = [{ name = \"device\", values = [\"mobile\", \"desktop\"] }]\n"
        } else {
            ""
        };
        from_toml(&format!(
            "key = \"n\"\nname = \"Neural\"\n\
             [[arms]]\nkey = \"a\"\ncontrol = true\n[[arms]]\nkey = \"b\"\n\
             [policy]\n{policy}\n\
             [primary_metric]\nname = \"purchase\"\nkind = \"conversion\"\n{features}"
        ))
        .unwrap()
    }

    fn fields(d: &Definition) -> Vec<String> {
        d.validate().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_feature_schema_change_makes_a_new_version_and_a_renaming_does_not() {
        let d = def("kind = \"lin_ucb\"\nfeatures = 5", true);
        let renamed = Definition { name: "Neural, renamed".into(), ..d.clone() };
        assert!(!d.needs_new_version(&renamed));
        // Same encoded length, other meaning: the model's coefficients would read the wrong entries.
        let mut swapped = d.clone();
        let schema = swapped.features.as_mut().unwrap();
        schema.numeric.reverse();
        assert_eq!(fields(&swapped), Vec::<String>::new());
        assert!(d.needs_new_version(&swapped));
    }

    #[test]
    fn a_neural_pg_definition_with_matching_features_is_valid() {
        let d = def("kind = \"neural_pg\"\nfeatures = 5\nhidden = 8\nepochs = 2\nretrain_every = \"5m\"", true);
        assert!(d.validate().is_empty(), "{:?}", d.validate());
        assert!(d.policy.is_contextual());
        assert_eq!(d.features.as_ref().map(|f| f.dimension()), Some(5));
    }

    #[test]
    fn a_neural_pg_definition_needs_features_of_its_dimension_and_valid_parameters() {
        assert_eq!(fields(&def("kind = \"neural_pg\"\nfeatures = 5", false)), ["features"]);
        assert_eq!(fields(&def("kind = \"neural_pg\"\nfeatures = 4", true)), ["policy.features"]);
        let bad = def("kind = \"neural_pg\"\nfeatures = 5\ntemperature = -1.0", true);
        let errs = bad.validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "policy");
        assert!(errs[0].reason.contains("`temperature`"), "{}", errs[0].reason);
        let bad = def("kind = \"neural_pg\"\nfeatures = 5\nmin_new_rows = 0", true);
        assert!(bad.validate()[0].reason.contains("`min_new_rows`"), "{:?}", bad.validate());
        let err = from_toml(
            "key = \"n\"\nname = \"N\"\n[[arms]]\nkey = \"a\"\ncontrol = true\n[[arms]]\nkey = \"b\"\n\
             [policy]\nkind = \"neural_pg\"\nfeatures = 5\nhiden = 3\n\
             [primary_metric]\nname = \"p\"\nkind = \"conversion\"\n",
        )
        .unwrap_err();
        assert!(err.contains("unknown field `hiden`"), "{err}");
    }

    /// `def` with a `[shadow]` table holding `candidate` (an inline TOML table).
    fn with_shadow(policy: &str, with_features: bool, candidate: &str) -> Definition {
        let mut d = def(policy, with_features);
        d.shadow = Some(
            toml::from_str::<ShadowDef>(&format!("policy = {candidate}\nmin_exposures = 100")).expect("a shadow table"),
        );
        d
    }

    const NEURAL: &str = "{ kind = \"neural_pg\", features = 5, hidden = 8, retrain_every = \"5m\" }";

    #[test]
    fn a_neural_pg_candidate_runs_beside_a_context_free_linear_or_neural_live_policy() {
        for live in ["kind = \"fixed\"", "kind = \"lin_ucb\"\nfeatures = 5", "kind = \"neural_pg\"\nfeatures = 5"] {
            let d = with_shadow(live, true, NEURAL);
            assert!(d.validate().is_empty(), "{live}: {:?}", d.validate());
            assert!(d.logs_neural_context(), "{live}");
        }
        // A linear candidate beside a neural live policy reads the `x` of its logged context.
        let d = with_shadow("kind = \"neural_pg\"\nfeatures = 5", true, "{ kind = \"lin_ts\", features = 5 }");
        assert!(d.validate().is_empty(), "{:?}", d.validate());
        // Without a neural policy on either side, the plain vector is logged.
        let d = with_shadow("kind = \"lin_ucb\"\nfeatures = 5", true, "{ kind = \"lin_ts\", features = 5 }");
        assert!(!d.logs_neural_context());
        assert!(!def("kind = \"fixed\"", false).logs_neural_context());
    }

    #[test]
    fn a_neural_pg_candidate_needs_features_of_its_dimension_and_valid_parameters() {
        assert_eq!(fields(&with_shadow("kind = \"fixed\"", false, NEURAL)), ["features"]);
        let wrong = "{ kind = \"neural_pg\", features = 4 }";
        assert_eq!(fields(&with_shadow("kind = \"fixed\"", true, wrong)), ["shadow.policy.features"]);
        let bad = "{ kind = \"neural_pg\", features = 5, temperature = 0.0 }";
        let errs = with_shadow("kind = \"fixed\"", true, bad).validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "shadow.policy");
        assert!(errs[0].reason.contains("`temperature`"), "{}", errs[0].reason);
    }
}
