//! What the report reads from the store, on either backend: exposures per time bucket and
//! arm (one GROUP BY per experiment), the money and conversions of a time range's
//! exposures per arm and metric (one GROUP BY), the analyses made in a time range (a
//! bounded, evenly spaced sample), and the stored reports (`reports` table). Report
//! queries are not on the hot path; each is still one statement bounded by the
//! experiment and a time range.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text, Timestamp};

use crate::store::queries::pg_placeholders;
use crate::store::schema::{analyses, reports};
use crate::store::{Db, StoreError};

/// Exposures of one arm in one time bucket: bucket `b` covers `[b × size, (b + 1) × size)`
/// seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct BucketCount {
    #[diesel(sql_type = BigInt)]
    pub bucket: i64,
    #[diesel(sql_type = Text)]
    pub arm: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// The exposures of an experiment created in `[from, to)`, counted per `bucket_secs`-long
/// bucket and arm.
pub fn allocation(
    db: &Db,
    experiment_id: i64,
    from: NaiveDateTime,
    to: NaiveDateTime,
    bucket_secs: i64,
) -> Result<Vec<BucketCount>, StoreError> {
    // Epoch seconds of a timestamp: Postgres's EXTRACT (a timestamp without zone counts
    // as UTC), SQLite's strftime('%s') on diesel's text timestamps.
    let group = "FROM exposures WHERE experiment_id = ? AND created_at >= ? AND created_at < ? \
                 GROUP BY 1, arm ORDER BY 1, arm";
    let bucket_secs = bucket_secs.max(1);
    crate::db_run!(db, |conn| {
        let sql = match db {
            Db::Pg(_) => pg_placeholders(&format!(
                "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM created_at) / {bucket_secs}) AS BIGINT) AS bucket, arm, \
                 COUNT(*) AS n {group}"
            )),
            Db::Sqlite(_) => format!(
                "SELECT CAST(strftime('%s', created_at) AS INTEGER) / {bucket_secs} AS bucket, arm, \
                 COUNT(*) AS n {group}"
            ),
        };
        Ok(diesel::sql_query(sql)
            .bind::<BigInt, _>(experiment_id)
            .bind::<Timestamp, _>(from)
            .bind::<Timestamp, _>(to)
            .load(conn)?)
    })
}

/// The rewards of one arm and metric for the exposures created in a time range.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct RewardTotals {
    #[diesel(sql_type = Text)]
    pub arm: String,
    #[diesel(sql_type = Text)]
    pub metric: String,
    /// Reward rows (for revenue and profit metrics: orders).
    #[diesel(sql_type = BigInt)]
    pub rewards: i64,
    /// Distinct exposures with a positive stored value (for a conversion metric: converted
    /// exposures).
    #[diesel(sql_type = BigInt)]
    pub positive_exposures: i64,
    /// Σ stored value (profit after the arm's cost for a profit metric; negated for
    /// lower-is-better metrics).
    #[diesel(sql_type = Double)]
    pub sum_value: f64,
    /// Σ value as reported (revenue for revenue and profit metrics).
    #[diesel(sql_type = Double)]
    pub sum_raw: f64,
}

/// Rewards of the exposures of an experiment created in `[from, to)`, per arm and metric
/// (cohort view: a reward counts for the week its exposure happened in).
pub fn reward_totals(
    db: &Db,
    experiment_id: i64,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<RewardTotals>, StoreError> {
    let sql = "SELECT arm, metric, COUNT(*) AS rewards, \
               COUNT(DISTINCT CASE WHEN value > 0 THEN exposure_id END) AS positive_exposures, \
               CAST(COALESCE(SUM(value), 0.0) AS DOUBLE PRECISION) AS sum_value, \
               CAST(COALESCE(SUM(raw_value), 0.0) AS DOUBLE PRECISION) AS sum_raw \
               FROM rewards WHERE experiment_id = ? AND exposure_created_at >= ? AND exposure_created_at < ? \
               GROUP BY arm, metric ORDER BY arm, metric";
    crate::db_run!(db, |conn| {
        let sql = if matches!(db, Db::Pg(_)) { pg_placeholders(sql) } else { sql.to_string() };
        Ok(diesel::sql_query(sql)
            .bind::<BigInt, _>(experiment_id)
            .bind::<Timestamp, _>(from)
            .bind::<Timestamp, _>(to)
            .load(conn)?)
    })
}

/// The analyses of an experiment made in `[from, to]`, oldest first: all of them when
/// there are at most `max`, else `max` evenly spaced ones (always the first and the last).
/// Returns (made at, result JSON).
pub fn analyses_between(
    db: &Db,
    experiment_id: i64,
    from: NaiveDateTime,
    to: NaiveDateTime,
    max: usize,
) -> Result<Vec<(NaiveDateTime, String)>, StoreError> {
    crate::db_run!(db, |conn| {
        let index: Vec<(i64, NaiveDateTime)> = analyses::table
            .filter(analyses::experiment_id.eq(experiment_id))
            .filter(analyses::created_at.ge(from))
            .filter(analyses::created_at.le(to))
            .order((analyses::created_at.asc(), analyses::id.asc()))
            .select((analyses::id, analyses::created_at))
            .load(conn)?;
        let ids: Vec<i64> = sample_evenly(&index, max.max(2)).into_iter().map(|(id, _)| id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let rows: Vec<(NaiveDateTime, String)> = analyses::table
                .filter(analyses::id.eq_any(chunk))
                .order((analyses::created_at.asc(), analyses::id.asc()))
                .select((analyses::created_at, analyses::result))
                .load(conn)?;
            out.extend(rows);
        }
        Ok(out)
    })
}

/// At most `max` items, evenly spaced, keeping the first and the last.
fn sample_evenly<T: Clone>(items: &[T], max: usize) -> Vec<T> {
    if items.len() <= max {
        return items.to_vec();
    }
    let last = items.len() - 1;
    let mut picked: Vec<usize> = (0..max).map(|k| k * last / (max - 1)).collect();
    picked.dedup();
    picked.into_iter().map(|i| items[i].clone()).collect()
}

/// A stored report, without its content.
#[derive(Debug, Clone, PartialEq, Queryable, serde::Serialize, utoipa::ToSchema)]
pub struct StoredReportInfo {
    pub week: String,
    pub format: String,
    pub bytes: i64,
    pub created_at: NaiveDateTime,
}

/// Stores one week's report in every format given, replacing what was stored for that
/// week, in one transaction.
pub fn store_reports(db: &Db, week: &str, contents: &[(&str, String)], at: NaiveDateTime) -> Result<(), StoreError> {
    crate::db_run!(db, |conn| {
        conn.transaction::<_, StoreError, _>(|conn| {
            for (format, content) in contents {
                diesel::insert_into(reports::table)
                    .values((
                        reports::week.eq(week),
                        reports::format.eq(*format),
                        reports::content.eq(content),
                        reports::bytes.eq(content.len() as i64),
                        reports::created_at.eq(at),
                    ))
                    .on_conflict((reports::week, reports::format))
                    .do_update()
                    .set((
                        reports::content.eq(content),
                        reports::bytes.eq(content.len() as i64),
                        reports::created_at.eq(at),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
    })
}

/// Every stored report (newest week first), without content.
pub fn list_reports(db: &Db) -> Result<Vec<StoredReportInfo>, StoreError> {
    crate::db_run!(db, |conn| {
        Ok(reports::table
            .order((reports::week.desc(), reports::format.asc()))
            .select((reports::week, reports::format, reports::bytes, reports::created_at))
            .load(conn)?)
    })
}

/// The stored content of one week's report in one format.
pub fn get_report(db: &Db, week: &str, format: &str) -> Result<Option<String>, StoreError> {
    crate::db_run!(db, |conn| {
        Ok(reports::table
            .filter(reports::week.eq(week))
            .filter(reports::format.eq(format))
            .select(reports::content)
            .first(conn)
            .optional()?)
    })
}

/// Whether any format of a week's report is stored.
pub fn has_report(db: &Db, week: &str) -> Result<bool, StoreError> {
    crate::db_run!(db, |conn| {
        let n: i64 = reports::table.filter(reports::week.eq(week)).count().get_result(conn)?;
        Ok(n > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_samples_keep_both_ends() {
        let v: Vec<i32> = (0..1000).collect();
        let s = sample_evenly(&v, 10);
        assert_eq!(s.len(), 10);
        assert_eq!((s[0], s[9]), (0, 999));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_evenly(&v[..5], 10), vec![0, 1, 2, 3, 4]);
    }
}
