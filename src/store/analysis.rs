//! The analyzer's store: sufficient statistics folded in from watermarks, and the analyses
//! it writes. Every fold is one transaction that adds the statistics of the exposures in
//! `(watermark, until]` and moves the watermark to `until`, so a crash or a second replica
//! can never count an exposure twice, and no run rescans what earlier runs folded.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Text, Timestamp};
use diesel::upsert::excluded;

use super::queries::pg_placeholders;
use super::schema::{allocation_stats, analyses, analysis_watermarks, arm_covariate_stats, arm_stats};
use super::{Db, StoreError, WriteTransaction};

/// The stream name of a metric's mature statistics in `analysis_watermarks`.
pub fn metric_stream(metric: &str) -> String {
    format!("metric:{metric}")
}

pub const ALLOCATION_STREAM: &str = "allocation";

/// One metric as the fold reads it from the log.
#[derive(Debug, Clone)]
pub struct MetricSource<'a> {
    pub name: &'a str,
    /// Conversion: y = 1 when any reward of the exposure is positive, else 0. Otherwise y is
    /// the sum of the exposure's rewards (0 without any).
    pub binary: bool,
    /// CUPED covariate: x = the unit's total `raw_value` of rewards on this metric (in any
    /// experiment) in the 30 days before the exposure.
    pub covariate: Option<&'a str>,
    /// Sticky experiments are analysed per unit: `Some(window in seconds)` counts only each
    /// unit's first exposure of the version (the one its stored assignment came from), with
    /// y from the rewards of all the unit's exposures of the version that arrived within the
    /// window after that first exposure. `None`: every exposure is an observation.
    pub per_unit_window: Option<f64>,
}

/// Joins each exposure to its unit's stored assignment when it is the exposure that made
/// it (same time): the unit's first exposure of the version.
const FIRST_EXPOSURE_JOIN: &str = "JOIN sticky_assignments s ON s.experiment_id = e.experiment_id \
    AND s.version = e.version AND s.unit_hash = e.unit_hash AND s.created_at = e.created_at";

/// Statistics of one (version, period, arm) group, as stored in `arm_stats`.
#[derive(Debug, Clone, Default, PartialEq, QueryableByName)]
pub struct CellRow {
    #[diesel(sql_type = Integer)]
    pub version: i32,
    #[diesel(sql_type = BigInt)]
    pub period: i64,
    #[diesel(sql_type = Text)]
    pub arm: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    #[diesel(sql_type = Double)]
    pub sum: f64,
    #[diesel(sql_type = Double)]
    pub sum_sq: f64,
    #[diesel(sql_type = Double)]
    pub sum_w: f64,
    #[diesel(sql_type = Double)]
    pub sum_wy: f64,
    #[diesel(sql_type = Double)]
    pub sum_wy2: f64,
    #[diesel(sql_type = Double)]
    pub sum_w2: f64,
    #[diesel(sql_type = Double)]
    pub sum_w2y: f64,
    #[diesel(sql_type = Double)]
    pub sum_w2y2: f64,
    #[diesel(sql_type = Double)]
    pub sum_x: f64,
    #[diesel(sql_type = Double)]
    pub sum_x_sq: f64,
    #[diesel(sql_type = Double)]
    pub sum_xy: f64,
}

#[derive(Debug, Clone, QueryableByName)]
struct AllocationGroup {
    #[diesel(sql_type = Integer)]
    version: i32,
    #[diesel(sql_type = BigInt)]
    period: i64,
    #[diesel(sql_type = Text)]
    arm: String,
    #[diesel(sql_type = Text)]
    pmf: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Observed and expected exposures of one (version, period, arm).
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct AllocationRow {
    pub version: i32,
    pub period: i64,
    pub arm: String,
    pub n: i64,
    pub expected: f64,
}

/// A value bound to a placeholder of the analyzer's SQL.
#[derive(Debug, Clone)]
enum Bind {
    Int(i32),
    Big(i64),
    Real(f64),
    Str(String),
    Time(NaiveDateTime),
}

/// The aggregate over the exposures of one experiment version created in `(lo, hi]`,
/// grouped by (version, period = policy version, arm), with its bound values in order.
///
/// Set-based on purpose: each exposure's outcome y and covariate x come from derived
/// tables joined by exposure id, each bounded by constant time ranges, so the cost is
/// linear in the exposures and rewards of the range whatever plan the database picks
/// (correlated subqueries were quadratic when the planner's statistics were stale).
fn cells_sql(
    pg: bool,
    experiment_id: i64,
    version: i32,
    metric: &MetricSource,
    lo: NaiveDateTime,
    hi: NaiveDateTime,
) -> (String, Vec<Bind>) {
    let mut binds = Vec::new();
    let (first_join, ysub) = match metric.per_unit_window {
        None => {
            binds.extend([
                Bind::Big(experiment_id),
                Bind::Str(metric.name.to_string()),
                Bind::Time(lo),
                Bind::Time(hi),
            ]);
            (
                "",
                "SELECT exposure_id AS id, SUM(value) AS total, MAX(value) AS top FROM rewards \
                 WHERE experiment_id = ? AND metric = ? AND exposure_created_at > ? AND exposure_created_at <= ? \
                 GROUP BY exposure_id"
                    .to_string(),
            )
        }
        Some(window) => {
            // A sticky unit's first exposure f, the unit's exposures u in [f, f + window] and
            // their rewards up to f + window.
            // Saturating: a window stored before validation bounded it must not panic.
            let until = chrono::Duration::try_milliseconds((window * 1000.0).ceil() as i64)
                .and_then(|w| hi.checked_add_signed(w))
                .unwrap_or(NaiveDateTime::MAX);
            let (u_upper, r_upper) = if pg {
                (
                    "u.created_at <= f.created_at + make_interval(secs => ?)",
                    "r.created_at <= f.created_at + make_interval(secs => ?)",
                )
            } else {
                (
                    "julianday(u.created_at) <= julianday(f.created_at) + ? / 86400.0",
                    "julianday(r.created_at) <= julianday(f.created_at) + ? / 86400.0",
                )
            };
            binds.extend([
                Bind::Real(window),
                Bind::Real(window),
                Bind::Big(experiment_id),
                Bind::Int(version),
                Bind::Time(lo),
                Bind::Time(hi),
                Bind::Big(experiment_id),
                Bind::Int(version),
                Bind::Time(lo),
                Bind::Time(until),
                Bind::Big(experiment_id),
                Bind::Str(metric.name.to_string()),
                Bind::Time(lo),
                Bind::Time(until),
            ]);
            (
                FIRST_EXPOSURE_JOIN,
                format!(
                    "SELECT f.id AS id, SUM(r.value) AS total, MAX(r.value) AS top FROM exposures f \
                     JOIN sticky_assignments s2 ON s2.experiment_id = f.experiment_id AND s2.version = f.version \
                       AND s2.unit_hash = f.unit_hash AND s2.created_at = f.created_at \
                     JOIN exposures u ON u.unit_hash = f.unit_hash AND u.created_at >= f.created_at AND {u_upper} \
                     JOIN rewards r ON r.exposure_id = u.id AND r.exposure_created_at = u.created_at AND {r_upper} \
                     WHERE f.experiment_id = ? AND f.version = ? AND f.created_at > ? AND f.created_at <= ? \
                       AND u.experiment_id = ? AND u.version = ? AND u.created_at > ? AND u.created_at <= ? \
                       AND r.experiment_id = ? AND r.metric = ? AND r.exposure_created_at > ? \
                       AND r.exposure_created_at <= ? \
                     GROUP BY f.id"
                ),
            )
        }
    };
    let xsub = metric.covariate.map(|covariate| {
        // The unit's rewards on the covariate metric (any experiment) in the 30 days before
        // each exposure c.
        let since = if pg {
            "r2.created_at >= c.created_at - INTERVAL '30 days'"
        } else {
            "julianday(r2.created_at) >= julianday(c.created_at) - 30.0"
        };
        binds.extend([
            Bind::Str(covariate.to_string()),
            Bind::Time(lo - chrono::Duration::days(30)),
            Bind::Time(hi),
            Bind::Big(experiment_id),
            Bind::Int(version),
            Bind::Time(lo),
            Bind::Time(hi),
        ]);
        format!(
            "LEFT JOIN (SELECT c.id AS id, SUM(r2.raw_value) AS x FROM rewards r2 \
               JOIN exposures e2 ON e2.id = r2.exposure_id AND e2.created_at = r2.exposure_created_at \
               JOIN exposures c ON c.unit_hash = e2.unit_hash AND e2.created_at < c.created_at \
                 AND r2.created_at < c.created_at AND {since} \
             WHERE r2.metric = ? AND r2.created_at >= ? AND r2.created_at < ? \
               AND c.experiment_id = ? AND c.version = ? AND c.created_at > ? AND c.created_at <= ? \
             GROUP BY c.id) rx ON rx.id = e.id"
        )
    });
    binds.extend([Bind::Big(experiment_id), Bind::Int(version), Bind::Time(lo), Bind::Time(hi)]);
    let y = if metric.binary { "(CASE WHEN ry.top > 0 THEN 1.0 ELSE 0.0 END)" } else { "COALESCE(ry.total, 0.0)" };
    let x = if xsub.is_some() { "COALESCE(rx.x, 0.0)" } else { "0.0" };
    let d = "AS DOUBLE PRECISION)";
    let sql = format!(
        "SELECT t.version AS version, t.period AS period, t.arm AS arm, COUNT(*) AS n, \
         CAST(COALESCE(SUM(t.y), 0.0) {d} AS sum, CAST(COALESCE(SUM(t.y * t.y), 0.0) {d} AS sum_sq, \
         CAST(COALESCE(SUM(1.0 / t.p), 0.0) {d} AS sum_w, CAST(COALESCE(SUM(t.y / t.p), 0.0) {d} AS sum_wy, \
         CAST(COALESCE(SUM(t.y * t.y / t.p), 0.0) {d} AS sum_wy2, \
         CAST(COALESCE(SUM(1.0 / (t.p * t.p)), 0.0) {d} AS sum_w2, \
         CAST(COALESCE(SUM(t.y / (t.p * t.p)), 0.0) {d} AS sum_w2y, \
         CAST(COALESCE(SUM(t.y * t.y / (t.p * t.p)), 0.0) {d} AS sum_w2y2, \
         CAST(COALESCE(SUM(t.x), 0.0) {d} AS sum_x, CAST(COALESCE(SUM(t.x * t.x), 0.0) {d} AS sum_x_sq, \
         CAST(COALESCE(SUM(t.x * t.y), 0.0) {d} AS sum_xy \
         FROM (SELECT e.version AS version, e.policy_version AS period, e.arm AS arm, e.propensity AS p, \
               CAST({y} {d} AS y, CAST({x} {d} AS x \
               FROM exposures e {first_join} \
               LEFT JOIN ({ysub}) ry ON ry.id = e.id {} \
               WHERE e.experiment_id = ? AND e.version = ? AND e.created_at > ? AND e.created_at <= ?) t \
         GROUP BY t.version, t.period, t.arm",
        xsub.unwrap_or_default()
    );
    (sql, binds)
}

macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q.into_boxed();
        for b in $binds {
            q = match b {
                Bind::Int(v) => q.bind::<Integer, _>(v),
                Bind::Big(v) => q.bind::<BigInt, _>(v),
                Bind::Real(v) => q.bind::<Double, _>(v),
                Bind::Str(v) => q.bind::<Text, _>(v),
                Bind::Time(v) => q.bind::<Timestamp, _>(v),
            };
        }
        q
    }};
}

/// What the fold does on a connection of either backend (one body, two backends).
trait AnalysisConnection {
    fn cells(
        &mut self,
        experiment_id: i64,
        metric: &MetricSource,
        lo: NaiveDateTime,
        hi: NaiveDateTime,
        version: i32,
    ) -> Result<Vec<CellRow>, StoreError>;
    fn allocation_groups(
        &mut self,
        experiment_id: i64,
        version: i32,
        lo: NaiveDateTime,
        hi: NaiveDateTime,
        first_only: bool,
    ) -> Result<Vec<AllocationGroup>, StoreError>;
    fn watermark(&mut self, experiment_id: i64, stream: &str) -> Result<NaiveDateTime, StoreError>;
    fn set_watermark(&mut self, experiment_id: i64, stream: &str, until: NaiveDateTime) -> Result<(), StoreError>;
}

fn allocation_sql(first_only: bool) -> String {
    format!(
        "SELECT e.version AS version, e.policy_version AS period, e.arm AS arm, e.pmf AS pmf, COUNT(*) AS n \
         FROM exposures e {} WHERE e.experiment_id = ? AND e.version = ? AND e.created_at > ? AND e.created_at <= ? \
         GROUP BY e.version, e.policy_version, e.arm, e.pmf",
        if first_only { FIRST_EXPOSURE_JOIN } else { "" }
    )
}

macro_rules! analysis_connection {
    ($conn:ty, $pg:expr) => {
        impl AnalysisConnection for $conn {
            fn cells(
                &mut self,
                experiment_id: i64,
                metric: &MetricSource,
                lo: NaiveDateTime,
                hi: NaiveDateTime,
                version: i32,
            ) -> Result<Vec<CellRow>, StoreError> {
                if $pg {
                    // Hash joins, whatever the planner's statistics say: with a stale row
                    // estimate of 1 it picks nested loops, which are quadratic here. Called
                    // inside a transaction, so this lasts for it only.
                    diesel::sql_query("SET LOCAL enable_nestloop = off").execute(self)?;
                }
                let (sql, binds) = cells_sql($pg, experiment_id, version, metric, lo, hi);
                let sql = if $pg { pg_placeholders(&sql) } else { sql };
                Ok(bind_all!(diesel::sql_query(sql), binds).load(self)?)
            }

            fn allocation_groups(
                &mut self,
                experiment_id: i64,
                version: i32,
                lo: NaiveDateTime,
                hi: NaiveDateTime,
                first_only: bool,
            ) -> Result<Vec<AllocationGroup>, StoreError> {
                let sql = allocation_sql(first_only);
                let sql = if $pg { pg_placeholders(&sql) } else { sql };
                Ok(diesel::sql_query(sql)
                    .bind::<BigInt, _>(experiment_id)
                    .bind::<Integer, _>(version)
                    .bind::<Timestamp, _>(lo)
                    .bind::<Timestamp, _>(hi)
                    .load(self)?)
            }

            fn watermark(&mut self, experiment_id: i64, stream: &str) -> Result<NaiveDateTime, StoreError> {
                let found: Option<NaiveDateTime> = analysis_watermarks::table
                    .filter(analysis_watermarks::experiment_id.eq(experiment_id))
                    .filter(analysis_watermarks::stream.eq(stream))
                    .select(analysis_watermarks::until_at)
                    .first(self)
                    .optional()?;
                Ok(found.unwrap_or_else(origin))
            }

            fn set_watermark(
                &mut self,
                experiment_id: i64,
                stream: &str,
                until: NaiveDateTime,
            ) -> Result<(), StoreError> {
                diesel::insert_into(analysis_watermarks::table)
                    .values((
                        analysis_watermarks::experiment_id.eq(experiment_id),
                        analysis_watermarks::stream.eq(stream),
                        analysis_watermarks::until_at.eq(until),
                    ))
                    .on_conflict((analysis_watermarks::experiment_id, analysis_watermarks::stream))
                    .do_update()
                    .set(analysis_watermarks::until_at.eq(until))
                    .execute(self)?;
                Ok(())
            }
        }
    };
}
analysis_connection!(PgConnection, true);
analysis_connection!(SqliteConnection, false);

/// The statistics of the exposures created in `(lo, hi]` (optionally of one version),
/// computed from the log and not stored: the immature part shown beside the mature one.
pub fn aggregate_cells(
    db: &Db,
    experiment_id: i64,
    metric: &MetricSource,
    lo: NaiveDateTime,
    hi: NaiveDateTime,
    version: i32,
) -> Result<Vec<CellRow>, StoreError> {
    crate::db_run!(db, |conn| {
        conn.transaction::<_, StoreError, _>(|conn| conn.cells(experiment_id, metric, lo, hi, version))
    })
}

/// The watermarks of an experiment's streams.
pub fn watermarks(db: &Db, experiment_id: i64) -> Result<HashMap<String, NaiveDateTime>, StoreError> {
    crate::db_run!(db, |conn| {
        let rows: Vec<(String, NaiveDateTime)> = analysis_watermarks::table
            .filter(analysis_watermarks::experiment_id.eq(experiment_id))
            .select((analysis_watermarks::stream, analysis_watermarks::until_at))
            .load(conn)?;
        Ok(rows.into_iter().collect())
    })
}

/// The start of time for a stream without a watermark.
pub fn origin() -> NaiveDateTime {
    chrono::DateTime::from_timestamp(0, 0).map(|t| t.naive_utc()).unwrap_or_default()
}

/// Folds a metric's exposures created in `(watermark, until]` into `arm_stats` and moves the
/// watermark, in one transaction. Returns the number of exposures folded (0 when the
/// watermark is already at or past `until`).
pub fn fold_metric(
    db: &Db,
    experiment_id: i64,
    versions: i32,
    metric: &MetricSource,
    until: NaiveDateTime,
) -> Result<i64, StoreError> {
    let stream = metric_stream(metric.name);
    crate::db_run!(db, |conn| {
        conn.write_transaction::<_, StoreError, _>(|conn| {
            let lo = conn.watermark(experiment_id, &stream)?;
            if lo >= until {
                return Ok(0);
            }
            // Version by version, so each scan is a range of the (experiment, version, time) index.
            let mut cells = Vec::new();
            for version in 1..=versions {
                cells.extend(conn.cells(experiment_id, metric, lo, until, version)?);
            }
            let mut folded = 0;
            for c in &cells {
                folded += c.n;
                diesel::insert_into(arm_stats::table)
                    .values((
                        arm_stats::experiment_id.eq(experiment_id),
                        arm_stats::version.eq(c.version),
                        arm_stats::arm.eq(&c.arm),
                        arm_stats::metric.eq(metric.name),
                        arm_stats::period.eq(c.period),
                        arm_stats::n.eq(c.n),
                        arm_stats::sum.eq(c.sum),
                        arm_stats::sum_sq.eq(c.sum_sq),
                        arm_stats::sum_w.eq(c.sum_w),
                        arm_stats::sum_wy.eq(c.sum_wy),
                        arm_stats::sum_wy2.eq(c.sum_wy2),
                        arm_stats::sum_w2.eq(c.sum_w2),
                        arm_stats::sum_w2y.eq(c.sum_w2y),
                        arm_stats::sum_w2y2.eq(c.sum_w2y2),
                    ))
                    .on_conflict((
                        arm_stats::experiment_id,
                        arm_stats::version,
                        arm_stats::arm,
                        arm_stats::metric,
                        arm_stats::period,
                    ))
                    .do_update()
                    .set((
                        arm_stats::n.eq(arm_stats::n + excluded(arm_stats::n)),
                        arm_stats::sum.eq(arm_stats::sum + excluded(arm_stats::sum)),
                        arm_stats::sum_sq.eq(arm_stats::sum_sq + excluded(arm_stats::sum_sq)),
                        arm_stats::sum_w.eq(arm_stats::sum_w + excluded(arm_stats::sum_w)),
                        arm_stats::sum_wy.eq(arm_stats::sum_wy + excluded(arm_stats::sum_wy)),
                        arm_stats::sum_wy2.eq(arm_stats::sum_wy2 + excluded(arm_stats::sum_wy2)),
                        arm_stats::sum_w2.eq(arm_stats::sum_w2 + excluded(arm_stats::sum_w2)),
                        arm_stats::sum_w2y.eq(arm_stats::sum_w2y + excluded(arm_stats::sum_w2y)),
                        arm_stats::sum_w2y2.eq(arm_stats::sum_w2y2 + excluded(arm_stats::sum_w2y2)),
                    ))
                    .execute(conn)?;
                if metric.covariate.is_some() {
                    diesel::insert_into(arm_covariate_stats::table)
                        .values((
                            arm_covariate_stats::experiment_id.eq(experiment_id),
                            arm_covariate_stats::version.eq(c.version),
                            arm_covariate_stats::arm.eq(&c.arm),
                            arm_covariate_stats::metric.eq(metric.name),
                            arm_covariate_stats::period.eq(c.period),
                            arm_covariate_stats::sum_x.eq(c.sum_x),
                            arm_covariate_stats::sum_x_sq.eq(c.sum_x_sq),
                            arm_covariate_stats::sum_xy.eq(c.sum_xy),
                        ))
                        .on_conflict((
                            arm_covariate_stats::experiment_id,
                            arm_covariate_stats::version,
                            arm_covariate_stats::arm,
                            arm_covariate_stats::metric,
                            arm_covariate_stats::period,
                        ))
                        .do_update()
                        .set((
                            arm_covariate_stats::sum_x
                                .eq(arm_covariate_stats::sum_x + excluded(arm_covariate_stats::sum_x)),
                            arm_covariate_stats::sum_x_sq
                                .eq(arm_covariate_stats::sum_x_sq + excluded(arm_covariate_stats::sum_x_sq)),
                            arm_covariate_stats::sum_xy
                                .eq(arm_covariate_stats::sum_xy + excluded(arm_covariate_stats::sum_xy)),
                        ))
                        .execute(conn)?;
                }
            }
            conn.set_watermark(experiment_id, &stream, until)?;
            Ok(folded)
        })
    })
}

/// Folds the allocation of exposures created in `(watermark, until]`: observed exposures per
/// arm, and expected = the sum of each arm's logged PMF entry. `first_only` (sticky
/// experiments): only each unit's first exposure of the version, the draw that assigned it.
pub fn fold_allocation(
    db: &Db,
    experiment_id: i64,
    versions: i32,
    until: NaiveDateTime,
    first_only: bool,
) -> Result<i64, StoreError> {
    crate::db_run!(db, |conn| {
        conn.write_transaction::<_, StoreError, _>(|conn| {
            let lo = conn.watermark(experiment_id, ALLOCATION_STREAM)?;
            if lo >= until {
                return Ok(0);
            }
            let mut groups = Vec::new();
            for version in 1..=versions {
                groups.extend(conn.allocation_groups(experiment_id, version, lo, until, first_only)?);
            }
            let mut sums: HashMap<(i32, i64, String), (i64, f64)> = HashMap::new();
            let mut folded = 0;
            for g in &groups {
                folded += g.n;
                sums.entry((g.version, g.period, g.arm.clone())).or_default().0 += g.n;
                let pmf: HashMap<String, f64> = serde_json::from_str(&g.pmf)
                    .map_err(|e| StoreError::Corrupt(format!("an exposure's pmf is not a JSON object: {e}")))?;
                for (arm, p) in pmf {
                    sums.entry((g.version, g.period, arm)).or_default().1 += g.n as f64 * p;
                }
            }
            for ((version, period, arm), (n, expected)) in sums {
                diesel::insert_into(allocation_stats::table)
                    .values((
                        allocation_stats::experiment_id.eq(experiment_id),
                        allocation_stats::version.eq(version),
                        allocation_stats::period.eq(period),
                        allocation_stats::arm.eq(&arm),
                        allocation_stats::n.eq(n),
                        allocation_stats::expected.eq(expected),
                    ))
                    .on_conflict((
                        allocation_stats::experiment_id,
                        allocation_stats::version,
                        allocation_stats::period,
                        allocation_stats::arm,
                    ))
                    .do_update()
                    .set((
                        allocation_stats::n.eq(allocation_stats::n + excluded(allocation_stats::n)),
                        allocation_stats::expected
                            .eq(allocation_stats::expected + excluded(allocation_stats::expected)),
                    ))
                    .execute(conn)?;
            }
            conn.set_watermark(experiment_id, ALLOCATION_STREAM, until)?;
            Ok(folded)
        })
    })
}

/// The mature statistics of one version of an experiment, per metric (covariate moments
/// filled in where the metric has them).
pub fn load_cells(db: &Db, experiment_id: i64, version: i32) -> Result<Vec<(String, CellRow)>, StoreError> {
    type Plain = (String, i32, i64, String, i64, f64, f64, f64, f64, f64, f64, f64, f64);
    type Cov = (String, i64, String, f64, f64, f64);
    crate::db_run!(db, |conn| {
        let plain: Vec<Plain> = arm_stats::table
            .filter(arm_stats::experiment_id.eq(experiment_id))
            .filter(arm_stats::version.eq(version))
            .select((
                arm_stats::metric,
                arm_stats::version,
                arm_stats::period,
                arm_stats::arm,
                arm_stats::n,
                arm_stats::sum,
                arm_stats::sum_sq,
                arm_stats::sum_w,
                arm_stats::sum_wy,
                arm_stats::sum_wy2,
                arm_stats::sum_w2,
                arm_stats::sum_w2y,
                arm_stats::sum_w2y2,
            ))
            .load(conn)?;
        let cov: Vec<Cov> = arm_covariate_stats::table
            .filter(arm_covariate_stats::experiment_id.eq(experiment_id))
            .filter(arm_covariate_stats::version.eq(version))
            .select((
                arm_covariate_stats::metric,
                arm_covariate_stats::period,
                arm_covariate_stats::arm,
                arm_covariate_stats::sum_x,
                arm_covariate_stats::sum_x_sq,
                arm_covariate_stats::sum_xy,
            ))
            .load(conn)?;
        let cov: HashMap<(String, i64, String), (f64, f64, f64)> =
            cov.into_iter().map(|(m, p, a, x, xx, xy)| ((m, p, a), (x, xx, xy))).collect();
        Ok(plain
            .into_iter()
            .map(|(metric, version, period, arm, n, sum, sum_sq, sum_w, sum_wy, sum_wy2, sum_w2, sum_w2y, sum_w2y2)| {
                let (sum_x, sum_x_sq, sum_xy) =
                    cov.get(&(metric.clone(), period, arm.clone())).copied().unwrap_or_default();
                let row = CellRow {
                    version,
                    period,
                    arm,
                    n,
                    sum,
                    sum_sq,
                    sum_w,
                    sum_wy,
                    sum_wy2,
                    sum_w2,
                    sum_w2y,
                    sum_w2y2,
                    sum_x,
                    sum_x_sq,
                    sum_xy,
                };
                (metric, row)
            })
            .collect())
    })
}

/// The allocation of one version of an experiment.
pub fn load_allocation(db: &Db, experiment_id: i64, version: i32) -> Result<Vec<AllocationRow>, StoreError> {
    crate::db_run!(db, |conn| {
        Ok(allocation_stats::table
            .filter(allocation_stats::experiment_id.eq(experiment_id))
            .filter(allocation_stats::version.eq(version))
            .select((
                allocation_stats::version,
                allocation_stats::period,
                allocation_stats::arm,
                allocation_stats::n,
                allocation_stats::expected,
            ))
            .load(conn)?)
    })
}

/// A stored analysis.
#[derive(Debug, Clone, Queryable)]
pub struct AnalysisRow {
    pub id: i64,
    pub experiment_id: i64,
    pub version: i32,
    pub state: String,
    pub result: String,
    pub created_at: NaiveDateTime,
}

pub fn insert_analysis(
    db: &Db,
    experiment_id: i64,
    version: i32,
    state: &str,
    result: &str,
    at: NaiveDateTime,
) -> Result<(), StoreError> {
    crate::db_run!(db, |conn| {
        diesel::insert_into(analyses::table)
            .values((
                analyses::experiment_id.eq(experiment_id),
                analyses::version.eq(version),
                analyses::state.eq(state),
                analyses::result.eq(result),
                analyses::created_at.eq(at),
            ))
            .execute(conn)?;
        Ok(())
    })
}

/// The newest analysis of an experiment made at or before `at` (the newest of all without),
/// optionally of one version.
pub fn latest_analysis(
    db: &Db,
    experiment_id: i64,
    version: Option<i32>,
    at: Option<NaiveDateTime>,
) -> Result<Option<AnalysisRow>, StoreError> {
    crate::db_run!(db, |conn| {
        let mut q = analyses::table.filter(analyses::experiment_id.eq(experiment_id)).into_boxed();
        if let Some(v) = version {
            q = q.filter(analyses::version.eq(v));
        }
        if let Some(t) = at {
            q = q.filter(analyses::created_at.le(t));
        }
        Ok(q.order((analyses::created_at.desc(), analyses::id.desc()))
            .select((
                analyses::id,
                analyses::experiment_id,
                analyses::version,
                analyses::state,
                analyses::result,
                analyses::created_at,
            ))
            .first(conn)
            .optional()?)
    })
}
