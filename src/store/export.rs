//! Reads an experiment version's exposure log for offline analysis (off-policy evaluation):
//! every mature exposure with its arm, logged propensity, context (and the encoded context a
//! contextual policy read) and the reward of one metric inside its attribution window,
//! streamed page by page so a large experiment is never held twice in memory; the count of
//! exposures left out as immature; and a policy snapshot by its policy version.
//!
//! Portable SQL with `?` placeholders (numbered for Postgres by
//! [`pg_placeholders`](super::queries::pg_placeholders)), as in `queries::arm_feedback`; only
//! the attribution-window test differs by backend (interval arithmetic).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text, Timestamp};

use super::models::SnapshotRow;
use super::queries::pg_placeholders;
use super::schema::{exposures, policy_snapshots};
use super::{Db, StoreError};

/// Exposures read per round trip.
pub const EXPORT_PAGE_SIZE: i64 = 5_000;

/// How an exposure's reward is read from its rewards on one metric.
#[derive(Debug, Clone, Copy)]
pub struct RewardRule<'a> {
    pub metric: &'a str,
    /// Conversion: 1 when any reward of the exposure is positive, else 0. Otherwise the sum of
    /// the exposure's rewards (0 without any).
    pub binary: bool,
    /// Attribution window: only rewards created at most this long after the exposure count.
    pub window: chrono::Duration,
}

/// One exposure of the log with its reward under a [`RewardRule`].
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct LoggedExposure {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Timestamp)]
    pub created_at: NaiveDateTime,
    #[diesel(sql_type = Text)]
    pub arm: String,
    #[diesel(sql_type = Double)]
    pub propensity: f64,
    /// The request context as stored: a JSON object of numbers, strings and booleans.
    #[diesel(sql_type = Text)]
    pub context: String,
    /// The context a contextual policy read, as logged (`exposures.features`: the encoded
    /// vector, or `neural_pg`'s `{x, at, events}`); `None` for context-free kinds.
    #[diesel(sql_type = Nullable<Text>)]
    pub features: Option<String>,
    #[diesel(sql_type = Double)]
    pub reward: f64,
}

/// One page of exposures of `(experiment, version)` created at or before the cutoff, after the
/// keyset `(created_at, id)` when `after` is set, in `(created_at, id)` order.
fn page_sql(pg: bool, binary: bool, after: bool) -> String {
    let value = if binary { "CASE WHEN MAX(r.value) > 0 THEN 1.0 ELSE 0.0 END" } else { "COALESCE(SUM(r.value), 0.0)" };
    // A reward belongs to the window when it was created at most `window` seconds after its
    // exposure. SQLite compares Julian days (its date functions keep milliseconds, hence the
    // 1 ms slack); ingestion already refuses late rewards, this keeps a shortened window honest.
    let within = if pg {
        "r.created_at <= r.exposure_created_at + CAST(? AS DOUBLE PRECISION) * INTERVAL '1 second'"
    } else {
        "(julianday(r.created_at) - julianday(r.exposure_created_at)) * 86400.0 <= ? + 0.001"
    };
    let keyset = if after { " AND (e.created_at > ? OR (e.created_at = ? AND e.id > ?))" } else { "" };
    let sql = format!(
        "SELECT e.id AS id, e.created_at AS created_at, e.arm AS arm, e.propensity AS propensity, \
         e.context AS context, e.features AS features, CAST(COALESCE((SELECT {value} FROM rewards r \
           WHERE r.experiment_id = ? AND r.version = ? AND r.metric = ? AND r.exposure_id = e.id \
           AND {within}), 0.0) AS DOUBLE PRECISION) AS reward \
         FROM exposures e WHERE e.experiment_id = ? AND e.version = ? AND e.created_at <= ?{keyset} \
         ORDER BY e.created_at, e.id LIMIT ?"
    );
    if pg {
        pg_placeholders(&sql)
    } else {
        sql
    }
}

/// The query of one page, bound (one body for both backends' query builders).
macro_rules! page_query {
    ($pg:expr, $experiment_id:expr, $version:expr, $rule:expr, $cutoff:expr, $after:expr, $limit:expr) => {{
        let window_secs = $rule.window.num_microseconds().map_or(f64::MAX, |us| us as f64 / 1e6);
        let mut q = diesel::sql_query(page_sql($pg, $rule.binary, $after.is_some()))
            .into_boxed()
            .bind::<BigInt, _>($experiment_id)
            .bind::<Integer, _>($version)
            .bind::<Text, _>($rule.metric.to_string())
            .bind::<Double, _>(window_secs)
            .bind::<BigInt, _>($experiment_id)
            .bind::<Integer, _>($version)
            .bind::<Timestamp, _>($cutoff);
        if let Some((ts, id)) = $after {
            q = q.bind::<Timestamp, _>(ts).bind::<Timestamp, _>(ts).bind::<Text, _>(id);
        }
        q.bind::<BigInt, _>($limit)
    }};
}

/// Calls `f` on every exposure of `(experiment_id, version)` created at or before `cutoff`, in
/// `(created_at, id)` order, with its reward under `rule`; reads [`EXPORT_PAGE_SIZE`] rows per
/// round trip (keyset paging, so every page is an index range). Stops at the first error of
/// `f` or of the store. Returns the number of exposures read.
pub fn for_each_exposure<E: From<StoreError>>(
    db: &Db,
    experiment_id: i64,
    version: i32,
    rule: &RewardRule<'_>,
    cutoff: NaiveDateTime,
    f: impl FnMut(LoggedExposure) -> Result<(), E>,
) -> Result<usize, E> {
    for_each_exposure_paged(db, experiment_id, version, rule, cutoff, EXPORT_PAGE_SIZE, f)
}

/// [`for_each_exposure`] with `page_size` rows per round trip.
pub fn for_each_exposure_paged<E: From<StoreError>>(
    db: &Db,
    experiment_id: i64,
    version: i32,
    rule: &RewardRule<'_>,
    cutoff: NaiveDateTime,
    page_size: i64,
    mut f: impl FnMut(LoggedExposure) -> Result<(), E>,
) -> Result<usize, E> {
    let page_size = page_size.max(1);
    let mut read = 0;
    let mut after: Option<(NaiveDateTime, String)> = None;
    loop {
        let page: Vec<LoggedExposure> = match db {
            Db::Pg(pool) => {
                let mut c = pool.get().map_err(StoreError::from)?;
                page_query!(true, experiment_id, version, rule, cutoff, after.clone(), page_size)
                    .load(&mut c)
                    .map_err(StoreError::from)?
            }
            Db::Sqlite(pool) => {
                let mut c = pool.get().map_err(StoreError::from)?;
                page_query!(false, experiment_id, version, rule, cutoff, after.clone(), page_size)
                    .load(&mut c)
                    .map_err(StoreError::from)?
            }
        };
        let full = page.len() as i64 == page_size;
        after = page.last().map(|e| (e.created_at, e.id.clone()));
        for exposure in page {
            read += 1;
            f(exposure)?;
        }
        if !full {
            return Ok(read);
        }
    }
}

/// Exposures of `(experiment_id, version)` created after `cutoff` (still inside their
/// attribution window).
pub fn count_exposures_after(
    db: &Db,
    experiment_id: i64,
    version: i32,
    cutoff: NaiveDateTime,
) -> Result<i64, StoreError> {
    crate::db_run!(db, |conn| {
        Ok(exposures::table
            .filter(exposures::experiment_id.eq(experiment_id))
            .filter(exposures::version.eq(version))
            .filter(exposures::created_at.gt(cutoff))
            .count()
            .get_result(conn)?)
    })
}

/// The snapshot of an experiment with this policy version ([`StoreError::NotFound`] if none).
pub fn snapshot_by_policy_version(db: &Db, experiment_id: i64, policy_version: i64) -> Result<SnapshotRow, StoreError> {
    crate::db_run!(db, |conn| {
        Ok(policy_snapshots::table
            .filter(policy_snapshots::experiment_id.eq(experiment_id))
            .filter(policy_snapshots::policy_version.eq(policy_version))
            .select(SnapshotRow::as_select())
            .first(conn)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::models::{ExposureRow, RewardRow};
    use crate::store::schema::rewards;
    use crate::store::DbUrl;

    fn at(seconds: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + seconds, 250_000_000).map(|t| t.naive_utc()).unwrap()
    }

    fn exposure(id: &str, version: i32, created_at: NaiveDateTime) -> ExposureRow {
        ExposureRow {
            id: id.into(),
            experiment_id: 7,
            version,
            unit_hash: format!("unit-{id}"),
            request_id: id.into(),
            arm: "a".into(),
            propensity: 0.5,
            pmf: "{}".into(),
            context: r#"{"segment":"new"}"#.into(),
            policy_version: 1,
            created_at,
            features: None,
            shadow_pmf: None,
        }
    }

    fn reward(e: &ExposureRow, metric: &str, value: f64, after_seconds: i64) -> RewardRow {
        RewardRow {
            id: format!("{}-{metric}-{value}-{after_seconds}", e.id),
            exposure_id: e.id.clone(),
            experiment_id: e.experiment_id,
            version: e.version,
            arm: e.arm.clone(),
            metric: metric.into(),
            value,
            raw_value: value,
            idempotency_key: format!("{}-{metric}-{value}-{after_seconds}", e.id),
            exposure_created_at: e.created_at,
            created_at: e.created_at + chrono::Duration::seconds(after_seconds),
        }
    }

    fn insert(db: &Db, rows: &[ExposureRow], rewards: &[RewardRow]) -> Result<(), StoreError> {
        crate::db_run!(db, |conn| {
            diesel::insert_into(exposures::table).values(rows).execute(conn)?;
            diesel::insert_into(rewards::table).values(rewards).execute(conn)?;
            Ok(())
        })
    }

    /// Pages of 2 over 5 exposures, three of them at the same instant: every exposure once, in
    /// order, with its reward summed (or converted) inside the window only.
    #[test]
    fn pages_cover_every_exposure_once_with_its_windowed_reward() {
        let dir = std::env::temp_dir().join(format!("strategist-export-{}", uuid::Uuid::new_v4().simple()));
        let db = Db::connect(&DbUrl::Sqlite(dir.join("x.db")), 2).unwrap();
        db.migrate().unwrap();
        let rows = vec![
            exposure("e1", 1, at(0)),
            exposure("e3", 1, at(5)),
            exposure("e2", 1, at(5)),
            exposure("e4", 1, at(5)),
            exposure("e5", 1, at(9)),
            exposure("late", 1, at(100)),
            exposure("other-version", 2, at(1)),
        ];
        let rewards = vec![
            reward(&rows[0], "revenue", 3.0, 1),
            reward(&rows[0], "revenue", 4.0, 2),
            reward(&rows[0], "revenue", 50.0, 120), // after the 60 s window
            reward(&rows[2], "revenue", 0.0, 1),
            reward(&rows[3], "revenue", 2.5, 59),
            reward(&rows[3], "purchase", 1.0, 3),
        ];
        insert(&db, &rows, &rewards).unwrap();
        let window = chrono::Duration::seconds(60);
        for (binary, metric, want) in [
            (false, "revenue", [7.0, 0.0, 0.0, 2.5, 0.0]),
            (true, "revenue", [1.0, 0.0, 0.0, 1.0, 0.0]),
            (true, "purchase", [0.0, 0.0, 0.0, 1.0, 0.0]),
        ] {
            let rule = RewardRule { metric, binary, window };
            let mut seen = Vec::new();
            let n = for_each_exposure_paged(&db, 7, 1, &rule, at(50), 2, |e| {
                seen.push((e.id, e.reward));
                Ok::<(), StoreError>(())
            })
            .unwrap();
            assert_eq!(n, 5);
            let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(ids, ["e1", "e2", "e3", "e4", "e5"], "{metric}");
            let got: Vec<f64> = seen.iter().map(|(_, r)| *r).collect();
            assert_eq!(got, want, "{metric} binary={binary}");
        }
        assert_eq!(count_exposures_after(&db, 7, 1, at(50)).unwrap(), 1);
        drop(db);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn page_sql_numbers_placeholders_for_postgres_only() {
        let pg = page_sql(true, true, true);
        assert!(pg.contains("$11") && !pg.contains("$12") && !pg.contains('?'), "{pg}");
        let lite = page_sql(false, false, false);
        assert_eq!(lite.matches('?').count(), 8, "{lite}");
        assert!(lite.contains("julianday") && lite.contains("SUM(r.value)"));
    }
}
