//! Monthly range partitions for the Postgres log tables, created ahead by the service
//! (at start and on every learner tick) so writes land in a month's own partition.
//! A DEFAULT partition (made by the migration) catches anything else. SQLite has no
//! partitioning; there this is a no-op.

use chrono::{Datelike, NaiveDate};
use diesel::prelude::*;

use super::{Db, StoreError};

pub const LOG_TABLES: [&str; 2] = ["exposures", "rewards"];

/// First day of the month `offset` months after the month of `day`.
fn month_start(day: NaiveDate, offset: i32) -> Option<NaiveDate> {
    let total = day.year() * 12 + day.month0() as i32 + offset;
    NaiveDate::from_ymd_opt(total.div_euclid(12), total.rem_euclid(12) as u32 + 1, 1)
}

/// Statements creating the partitions of the current month and the `ahead` months after it.
pub fn partition_statements(today: NaiveDate, ahead: i32) -> Vec<String> {
    let mut out = Vec::new();
    for offset in 0..=ahead {
        let (Some(from), Some(to)) = (month_start(today, offset), month_start(today, offset + 1)) else {
            continue;
        };
        for table in LOG_TABLES {
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {table}_p{:04}_{:02} PARTITION OF {table} FOR VALUES FROM ('{from}') TO ('{to}')",
                from.year(),
                from.month()
            ));
        }
    }
    out
}

/// Creates missing partitions; returns how many statements ran. A month whose rows already
/// sit in the DEFAULT partition cannot get its own partition: that is logged and skipped.
pub fn ensure_partitions(db: &Db, today: NaiveDate, ahead: i32) -> Result<usize, StoreError> {
    let Db::Pg(pool) = db else { return Ok(0) };
    let mut conn = pool.get()?;
    let mut n = 0;
    for stmt in partition_statements(today, ahead) {
        match diesel::sql_query(&stmt).execute(&mut conn) {
            Ok(_) => n += 1,
            Err(e) => {
                let e = StoreError::from(e);
                if e.is_unavailable() {
                    return Err(e);
                }
                tracing::warn!(error = %e, statement = %stmt, "partition not created");
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_consecutive_months_across_a_year_end() {
        let s = partition_statements(NaiveDate::from_ymd_opt(2026, 11, 28).unwrap(), 2);
        assert_eq!(s.len(), 6);
        assert!(s[0].contains("exposures_p2026_11") && s[0].contains("FROM ('2026-11-01') TO ('2026-12-01')"));
        assert!(s[4].contains("exposures_p2027_01") && s[4].contains("FROM ('2027-01-01') TO ('2027-02-01')"));
    }
}
