//! The scheduled report job: when a week closes (at the configured weekday and time of the
//! following week, UTC), writes that week's report in every format to the `reports` table,
//! once, so any replica lists and serves it. On Postgres one replica at a time runs it
//! (advisory lock); a week already stored is not rewritten. A failure is logged and
//! retried at the next check.
//!
//! The schedule is `report_schedule` in the config: `"WEEKDAY HH:MM"` (UTC), e.g.
//! `"mon 06:00"`; empty disables the job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, NaiveTime, Weekday};

use super::{data, model, render, Format, ReportError, Week};
use crate::store::Db;

/// Advisory-lock key of the report job ("STRATREP").
const REPORT_LOCK: i64 = 0x5354_5241_5452_4550;

/// How often the job checks whether a report is due.
pub const CHECK_EVERY: Duration = Duration::from_secs(300);

/// When, after a week closes, its report is written: the first `weekday` at `time` (UTC)
/// at or after the Monday 00:00 that ends the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub weekday: Weekday,
    pub time: NaiveTime,
}

impl Schedule {
    /// `"mon 06:00"` → a schedule; `""` → none (disabled).
    pub fn parse(s: &str) -> Result<Option<Schedule>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let (day, at) = s
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("`{s}` is not a schedule such as \"mon 06:00\" (weekday and UTC time)"))?;
        let weekday: Weekday =
            day.trim().parse().map_err(|_| format!("`{day}` is not a weekday (mon, tue, wed, thu, fri, sat, sun)"))?;
        let time = NaiveTime::parse_from_str(at.trim(), "%H:%M")
            .map_err(|_| format!("`{}` is not a time of day such as 06:00 (UTC)", at.trim()))?;
        Ok(Some(Schedule { weekday, time }))
    }

    /// Time from the end of a week (Monday 00:00) to when its report is due.
    fn offset(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.weekday.num_days_from_monday())) + (self.time - NaiveTime::MIN)
    }

    /// The newest week whose report is due by `now`.
    pub fn due_week(&self, now: NaiveDateTime) -> Week {
        // Week W is due at W.end + offset; the newest W with W.end ≤ now − offset is the
        // week before the one containing now − offset.
        Week::containing(now - self.offset()).previous()
    }
}

/// Builds `week`'s report and stores it in every format (replacing what was stored).
/// Returns the sizes written, per format.
pub fn write_week(db: &Db, week: Week, now: NaiveDateTime) -> Result<Vec<(Format, usize)>, ReportError> {
    let report = model::build_weekly(db, week, None, now, |_| {})?;
    let mut contents = Vec::with_capacity(Format::ALL.len());
    for f in Format::ALL {
        contents.push((f.as_str(), render::render(&report, f)?));
    }
    data::store_reports(db, &week.to_string(), &contents, now)?;
    Ok(Format::ALL.iter().copied().zip(contents.iter().map(|(_, c)| c.len())).collect())
}

/// One check as of `now`: writes the due week's report unless it is stored already.
/// Returns the week written, if any.
pub fn run_once(db: &Db, schedule: Schedule, now: NaiveDateTime) -> Result<Option<Week>, ReportError> {
    let Some(_lock) = crate::learner::take_lock(db, REPORT_LOCK)? else {
        return Ok(None);
    };
    let week = schedule.due_week(now);
    if data::has_report(db, &week.to_string())? {
        return Ok(None);
    }
    write_week(db, week, now)?;
    Ok(Some(week))
}

/// Checks every [`CHECK_EVERY`] (the first check after one interval) until `stop` is set;
/// errors are logged and the loop goes on.
pub fn spawn(db: Db, schedule: Schedule, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("report-job".into())
        .spawn(move || {
            // The first check waits one interval: nothing is due in a process's first
            // minutes that cannot wait 5 more, and startup is busy enough (on SQLite a
            // write here would compete with the first requests' writes).
            loop {
                crate::app::sleep_unless_stopped(CHECK_EVERY, &stop);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match run_once(&db, schedule, crate::store::now()) {
                    Ok(Some(week)) => tracing::info!(%week, "weekly report written"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "weekly report failed; retrying at the next check"),
                }
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the report thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn schedules_parse_or_say_why_not() {
        assert_eq!(Schedule::parse("").unwrap(), None);
        assert_eq!(
            Schedule::parse("mon 06:00").unwrap(),
            Some(Schedule { weekday: Weekday::Mon, time: NaiveTime::from_hms_opt(6, 0, 0).unwrap() })
        );
        assert!(Schedule::parse("Tuesday 23:30").unwrap().is_some());
        for bad in ["mon", "noday 06:00", "mon 6am", "mon 25:00"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_week_is_due_at_the_scheduled_time_after_it_closes() {
        let s = Schedule::parse("mon 06:00").unwrap().unwrap();
        // W48 ends Monday 2026-11-30 00:00; due at 06:00 that day.
        assert_eq!(s.due_week(at("2026-11-30 05:59")).to_string(), "2026-W47");
        assert_eq!(s.due_week(at("2026-11-30 06:00")).to_string(), "2026-W48");
        assert_eq!(s.due_week(at("2026-12-06 23:00")).to_string(), "2026-W48");
        let late = Schedule::parse("wed 00:00").unwrap().unwrap();
        assert_eq!(late.due_week(at("2026-12-01 12:00")).to_string(), "2026-W47");
        assert_eq!(late.due_week(at("2026-12-02 00:00")).to_string(), "2026-W48");
    }
}
