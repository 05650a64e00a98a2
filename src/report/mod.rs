//! The weekly uplift report and the charts behind it and the dashboard. For one ISO week
//! (Monday 00:00 to the next Monday 00:00, UTC) it gathers, per experiment that ran that
//! week, the analysis in force at the week's end (per arm: uplift with both intervals,
//! p-values, P(best)), the week's exposures and money (revenue, cost, profit, incremental
//! profit against control), the week's analyses as time series, and the audit log, and
//! renders it as one self-contained HTML page with inline SVG charts, Markdown, CSV and
//! JSON — all four from the same [`model::WeeklyReport`], so they carry the same numbers.
//!
//! `data` reads the store, `model` builds the report, `charts` and `svg` draw, `render`
//! writes the formats, `job` stores each week's report when the week closes.

pub mod charts;
pub mod data;
pub mod job;
pub mod model;
pub mod render;
pub mod svg;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Weekday};

use crate::store::StoreError;

/// An ISO 8601 week, e.g. `2026-W48`: Monday 00:00 UTC to the next Monday 00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Week {
    year: i32,
    week: u32,
}

impl Week {
    /// Parses `YYYY-Www` (`2026-W48`; `2026-w48` is accepted too).
    pub fn parse(s: &str) -> Result<Week, ReportError> {
        let bad = || ReportError::InvalidWeek(format!("`{}` is not an ISO week such as 2026-W48", truncate(s, 40)));
        let (y, w) = s.trim().split_once(['-']).ok_or_else(bad)?;
        let w = w.strip_prefix(['W', 'w']).ok_or_else(bad)?;
        if y.len() != 4 || w.is_empty() || w.len() > 2 || !y.chars().chain(w.chars()).all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let week: u32 = w.parse().map_err(|_| bad())?;
        if NaiveDate::from_isoywd_opt(year, week, Weekday::Mon).is_none() {
            return Err(ReportError::InvalidWeek(format!("{year} has no ISO week {week}")));
        }
        Ok(Week { year, week })
    }

    /// The week that contains `t`.
    pub fn containing(t: NaiveDateTime) -> Week {
        let iso = t.date().iso_week();
        Week { year: iso.year(), week: iso.week() }
    }

    /// The last week that has closed by `now` (the one before the week containing `now`).
    pub fn last_closed(now: NaiveDateTime) -> Week {
        Week::containing(now - Duration::days(7))
    }

    /// Monday 00:00 UTC.
    pub fn start(&self) -> NaiveDateTime {
        // Valid by construction: `parse` and `containing` only make existing weeks.
        NaiveDate::from_isoywd_opt(self.year, self.week, Weekday::Mon).unwrap_or_default().and_time(Default::default())
    }

    /// The next Monday 00:00 UTC (exclusive end).
    pub fn end(&self) -> NaiveDateTime {
        self.start() + Duration::days(7)
    }

    pub fn previous(&self) -> Week {
        Week::containing(self.start() - Duration::days(1))
    }
}

impl std::fmt::Display for Week {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

/// The formats a report is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Html,
    Md,
    Csv,
    Json,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Html, Format::Md, Format::Csv, Format::Json];

    pub fn parse(s: &str) -> Result<Format, ReportError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "html" => Format::Html,
            "md" | "markdown" => Format::Md,
            "csv" => Format::Csv,
            "json" => Format::Json,
            _ => {
                return Err(ReportError::InvalidFormat(format!(
                    "`{}` is not a report format; use html, md, csv or json",
                    truncate(s, 20)
                )))
            }
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Md => "md",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Md => "text/markdown; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    InvalidWeek(String),
    #[error("{0}")]
    InvalidFormat(String),
    #[error("no experiment `{0}`")]
    UnknownExperiment(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot serialize the report: {0}")]
    Json(#[from] serde_json::Error),
}

fn truncate(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    if t.len() < s.len() {
        format!("{t}…")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn iso_weeks_parse_and_span_monday_to_monday() {
        let w = Week::parse("2026-W48").unwrap();
        assert_eq!(w.start(), at("2026-11-23 00:00:00"));
        assert_eq!(w.end(), at("2026-11-30 00:00:00"));
        assert_eq!(w.to_string(), "2026-W48");
        assert_eq!(Week::parse("2026-w48").unwrap(), w);
        assert_eq!(Week::containing(at("2026-11-29 23:59:59")), w);
        assert_eq!(Week::containing(at("2026-11-30 00:00:00")).to_string(), "2026-W49");
        // ISO years differ from calendar years at the edges.
        assert_eq!(Week::containing(at("2027-01-01 12:00:00")).to_string(), "2026-W53");
        assert_eq!(Week::parse("2026-W01").unwrap().previous().to_string(), "2025-W52");
    }

    #[test]
    fn the_last_closed_week_is_the_one_before_now() {
        assert_eq!(Week::last_closed(at("2026-11-29 10:00:00")).to_string(), "2026-W47");
        assert_eq!(Week::last_closed(at("2026-11-30 00:00:01")).to_string(), "2026-W48");
    }

    #[test]
    fn bad_weeks_are_refused_with_a_reason() {
        for bad in ["", "2026", "2026-48", "2026-W", "2026-W480", "26-W48", "2026-W4x", "2026-W0", "2025-W53", "x"] {
            assert!(matches!(Week::parse(bad), Err(ReportError::InvalidWeek(_))), "{bad}");
        }
        assert!(Week::parse("2026-W53").is_ok(), "2026 has 53 ISO weeks");
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(Format::parse("HTML").unwrap(), Format::Html);
        assert_eq!(Format::parse("markdown").unwrap(), Format::Md);
        assert!(matches!(Format::parse("pdf"), Err(ReportError::InvalidFormat(_))));
    }
}
