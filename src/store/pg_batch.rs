//! Batch writes for the Postgres log writer as one prepared statement each, whatever the
//! batch size: the rows travel as one array per column and `unnest` turns them back into
//! rows. Diesel prepares a multi-row `VALUES` insert afresh for each distinct row count
//! (and never caches it), and a `COPY` sets up its buffers and partition routing per
//! statement; for the writer's typical batches (tens of rows) both cost more in Postgres
//! than the rows themselves (measured in docs/performance.md). These statements have a
//! static query id, so diesel prepares each once per connection and reuses it.

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text, Timestamp};
use diesel::{QueryResult, RunQueryDsl};

use super::models::{ExposureRow, StickyRow};

/// `INSERT INTO exposures … SELECT * FROM unnest(…)`: every row of the batch, one array
/// per column (diesel binds by reference, so the columns live in the statement).
pub struct InsertExposures<'a> {
    id: Vec<&'a str>,
    experiment_id: Vec<i64>,
    version: Vec<i32>,
    unit_hash: Vec<&'a str>,
    request_id: Vec<&'a str>,
    arm: Vec<&'a str>,
    propensity: Vec<f64>,
    pmf: Vec<&'a str>,
    context: Vec<&'a str>,
    policy_version: Vec<i64>,
    created_at: Vec<NaiveDateTime>,
    features: Vec<Option<&'a str>>,
    shadow_pmf: Vec<Option<&'a str>>,
}

impl<'a> InsertExposures<'a> {
    pub fn new(rows: &[&'a ExposureRow]) -> Self {
        let col = |f: fn(&'a ExposureRow) -> &'a str| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
        InsertExposures {
            id: col(|r| &r.id),
            experiment_id: rows.iter().map(|r| r.experiment_id).collect(),
            version: rows.iter().map(|r| r.version).collect(),
            unit_hash: col(|r| &r.unit_hash),
            request_id: col(|r| &r.request_id),
            arm: col(|r| &r.arm),
            propensity: rows.iter().map(|r| r.propensity).collect(),
            pmf: col(|r| &r.pmf),
            context: col(|r| &r.context),
            policy_version: rows.iter().map(|r| r.policy_version).collect(),
            created_at: rows.iter().map(|r| r.created_at).collect(),
            features: rows.iter().map(|r| r.features.as_deref()).collect(),
            shadow_pmf: rows.iter().map(|r| r.shadow_pmf.as_deref()).collect(),
        }
    }
}

impl QueryId for InsertExposures<'_> {
    type QueryId = InsertExposures<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for InsertExposures<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO exposures (id, experiment_id, version, unit_hash, request_id, arm, propensity, pmf, \
             context, policy_version, created_at, features, shadow_pmf) SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.experiment_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.version)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.unit_hash)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.request_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.arm)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Double>, _>(&self.propensity)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.pmf)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.context)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.policy_version)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamp>, _>(&self.created_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.features)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.shadow_pmf)?;
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<diesel::PgConnection> for InsertExposures<'_> {}

/// `INSERT INTO sticky_assignments … SELECT * FROM unnest(…) ON CONFLICT DO NOTHING
/// RETURNING experiment_id, version, unit_hash`: the claims that won.
pub struct ClaimSticky<'a> {
    experiment_id: Vec<i64>,
    version: Vec<i32>,
    unit_hash: Vec<&'a str>,
    arm: Vec<&'a str>,
    propensity: Vec<f64>,
    created_at: Vec<NaiveDateTime>,
}

impl<'a> ClaimSticky<'a> {
    pub fn new(rows: &[&'a StickyRow]) -> Self {
        ClaimSticky {
            experiment_id: rows.iter().map(|r| r.experiment_id).collect(),
            version: rows.iter().map(|r| r.version).collect(),
            unit_hash: rows.iter().map(|r| r.unit_hash.as_str()).collect(),
            arm: rows.iter().map(|r| r.arm.as_str()).collect(),
            propensity: rows.iter().map(|r| r.propensity).collect(),
            created_at: rows.iter().map(|r| r.created_at).collect(),
        }
    }
}

impl QueryId for ClaimSticky<'_> {
    type QueryId = ClaimSticky<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for ClaimSticky<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO sticky_assignments (experiment_id, version, unit_hash, arm, propensity, created_at) \
             SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<BigInt>, _>(&self.experiment_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.version)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.unit_hash)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.arm)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Double>, _>(&self.propensity)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamp>, _>(&self.created_at)?;
        out.push_sql(") ON CONFLICT DO NOTHING RETURNING experiment_id, version, unit_hash");
        Ok(())
    }
}

impl diesel::query_builder::Query for ClaimSticky<'_> {
    type SqlType = (BigInt, Integer, Text);
}

impl RunQueryDsl<diesel::PgConnection> for ClaimSticky<'_> {}
