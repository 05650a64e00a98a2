//! Rows as diesel reads and writes them. Domain types live in their rooms and convert
//! from these.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::*;

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = experiments)]
pub struct ExperimentRow {
    pub id: i64,
    pub key: String,
    pub name: String,
    pub status: String,
    pub current_version: i32,
    pub salt: String,
    pub promoted_arm: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = experiments)]
pub struct NewExperiment<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub status: &'a str,
    pub current_version: i32,
    pub salt: &'a str,
    pub promoted_arm: Option<&'a str>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = experiment_versions)]
pub struct VersionRow {
    pub experiment_id: i64,
    pub version: i32,
    pub definition: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = arms)]
pub struct ArmRow {
    pub experiment_id: i64,
    pub version: i32,
    pub position: i32,
    pub key: String,
    pub payload: String,
    pub cost: f64,
    pub cost_rate: f64,
    pub is_control: bool,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = policy_snapshots)]
pub struct SnapshotRow {
    pub id: i64,
    pub experiment_id: i64,
    pub version: i32,
    pub policy_version: i64,
    pub state: String,
    pub n_feedback: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = policy_snapshots)]
pub struct NewSnapshot {
    pub experiment_id: i64,
    pub version: i32,
    pub policy_version: i64,
    pub state: String,
    pub n_feedback: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sticky_assignments)]
pub struct StickyRow {
    pub experiment_id: i64,
    pub version: i32,
    pub unit_hash: String,
    pub arm: String,
    pub propensity: f64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = exposures)]
#[diesel(treat_none_as_default_value = false)] // NULL, not DEFAULT, for `None` (SQLite batch inserts)
pub struct ExposureRow {
    pub id: String,
    pub experiment_id: i64,
    pub version: i32,
    pub unit_hash: String,
    pub request_id: String,
    pub arm: String,
    pub propensity: f64,
    pub pmf: String,
    pub context: String,
    pub policy_version: i64,
    pub created_at: NaiveDateTime,
    /// The encoded feature vector a contextual policy scored (JSON array), else None.
    pub features: Option<String>,
    /// Shadow mode: the candidate policy's PMF over the arms for this decision (JSON object
    /// like `pmf`, zero entries left out); None when the experiment has no candidate.
    pub shadow_pmf: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = rewards)]
pub struct RewardRow {
    pub id: String,
    pub exposure_id: String,
    pub experiment_id: i64,
    pub version: i32,
    pub arm: String,
    pub metric: String,
    pub value: f64,
    pub raw_value: f64,
    pub idempotency_key: String,
    pub exposure_created_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = decisions)]
pub struct DecisionRow {
    pub id: i64,
    pub experiment_id: i64,
    pub action: String,
    pub actor: String,
    pub reason: String,
    pub details: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = decisions)]
pub struct NewDecision {
    pub experiment_id: i64,
    pub action: String,
    pub actor: String,
    pub reason: String,
    pub details: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: i64,
    pub key_hash: String,
    pub prefix: String,
    pub scope: String,
    pub name: String,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = api_keys)]
pub struct NewApiKey {
    pub key_hash: String,
    pub prefix: String,
    pub scope: String,
    pub name: String,
    pub created_at: NaiveDateTime,
}
