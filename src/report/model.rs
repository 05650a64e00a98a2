//! The weekly report as data: [`WeeklyReport`] (what the JSON format is, and what HTML,
//! Markdown and CSV are rendered from) and the builders that fill it from the store.
//!
//! Two kinds of numbers sit side by side, and are labelled so:
//! - **the week**: exposures created in the week, their conversions and money (revenue,
//!   cost, profit of the rewards attributed to them, as recorded when the report is
//!   made), and the incremental profit against control;
//! - **cumulative**: the statistics of the analysis in force at the end of the week (the
//!   newest made at or before it), which cover the experiment version since it started —
//!   uplift with its always-valid and fixed-horizon intervals, p-values, P(best).
//!
//! Incremental profit of a treatment arm t over the week, against control c:
//! `n_t × (profit_t / n_t − profit_c / n_c)` = the profit t made minus what control would
//! have made on the same exposures at control's profit per exposure; the experiment's
//! figure is the sum over treatment arms. It is a plain difference of the week's means
//! (not an adaptive-allocation-corrected estimate: the cumulative uplift is that).

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::data::{self, BucketCount, RewardTotals};
use super::{svg, ReportError, Week};
use crate::analysis::engine::{ArmMetricResult, Bounds, DecisionState, MetricResult, MetricRole};
use crate::analysis::job::StoredResult;
use crate::experiment::definition::{Direction, MetricKind};
use crate::store::queries::{self, StoredExperiment};
use crate::store::{Db, StoreError};

/// At most this many analyses are drawn per chart (evenly spaced over the range).
pub const MAX_SERIES_POINTS: usize = 400;

/// The whole report of one week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeeklyReport {
    /// ISO week, e.g. `2026-W48`.
    pub week: String,
    /// Monday 00:00 UTC.
    pub from: NaiveDateTime,
    /// The next Monday 00:00 UTC (exclusive).
    pub to: NaiveDateTime,
    pub generated_at: NaiveDateTime,
    /// Every experiment with exposures, analyses or audit-log entries in the week.
    pub experiments: Vec<ExperimentReport>,
}

/// An uplift: point estimate and both intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    pub point: Option<f64>,
    /// Confidence sequence at level alpha: valid at every look; the basis of decisions.
    pub always_valid: Option<Bounds>,
    /// Classical interval, valid only for one planned look; shown for reference.
    pub fixed_horizon: Option<Bounds>,
}

/// One arm of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    pub arm: String,
    pub control: bool,
    /// Its colour in every chart.
    pub color: String,
    /// The week: exposures created in it.
    pub exposures: u64,
    /// The week: exposures with a positive reward on the experiment's first conversion
    /// metric (null without a conversion metric).
    pub conversions: Option<u64>,
    /// The week: Σ revenue of the money metric's rewards (null without a revenue or
    /// profit metric).
    pub revenue: Option<f64>,
    /// The week: the arm's cost on those rewards (`cost` per reward + `cost_rate` × revenue).
    pub cost: Option<f64>,
    /// The week: revenue − cost.
    pub profit: Option<f64>,
    pub profit_per_exposure: Option<f64>,
    /// The week: profit against control at control's profit per exposure (null for
    /// control).
    pub incremental_profit: Option<f64>,
    /// Cumulative (analysis in force at the week's end), primary metric: mature exposures.
    pub mature_exposures: Option<u64>,
    /// Cumulative: the arm's mean of the primary metric by the analysis's estimator.
    pub mean: Option<f64>,
    /// Cumulative: treatment − control (null for control).
    pub uplift_absolute: Option<Effect>,
    /// Cumulative: (treatment − control) / |control|, a fraction (null for control).
    pub uplift_relative: Option<Effect>,
    /// Always-valid p-value (running minimum over looks).
    pub p_always_valid: Option<f64>,
    /// Classical p-value of the last look (shown for reference).
    pub p_fixed_horizon: Option<f64>,
    /// Holm-adjusted always-valid p-value across treatment arms.
    pub p_holm_adjusted: Option<f64>,
    /// Posterior probability of being the best arm.
    pub prob_best: Option<f64>,
    /// Why analysis fields are null, when they are.
    pub note: Option<String>,
}

/// One audit-log entry of the week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionEntry {
    pub at: NaiveDateTime,
    pub action: String,
    pub actor: String,
    pub reason: String,
}

/// Exposures per time bucket and arm (arms in [`ExperimentReport::arms`] order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub bucket_seconds: i64,
    /// Buckets with at least one exposure, oldest first.
    pub buckets: Vec<AllocationBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationBucket {
    pub start: NaiveDateTime,
    pub exposures: Vec<u64>,
}

/// One arm at one analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmPoint {
    pub arm: String,
    pub mature_exposures: u64,
    pub mean: Option<f64>,
    /// Relative uplift and its always-valid interval (fractions).
    pub uplift_relative: Option<f64>,
    pub uplift_relative_always_valid: Option<Bounds>,
    pub prob_best: Option<f64>,
}

/// One analysis of the range, primary metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub at: NaiveDateTime,
    pub arms: Vec<ArmPoint>,
}

/// One experiment over a time range (a week in the report; any range for the charts API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentReport {
    pub key: String,
    pub name: String,
    pub description: String,
    /// Status at the end of the range (from the audit log; the current one otherwise).
    pub status: String,
    pub version: i32,
    pub primary_metric: String,
    /// conversion, revenue, profit or custom.
    pub primary_kind: String,
    /// The metric the money columns come from (the first profit metric, else the first
    /// revenue metric), or null.
    pub money_metric: Option<String>,
    /// When the analysis the cumulative numbers come from was made (null: none yet).
    pub analyzed_at: Option<NaiveDateTime>,
    pub estimator: Option<String>,
    pub alpha: Option<f64>,
    /// The analysis's decision state (`collecting`, `ready_to_promote`, …).
    pub decision_state: Option<String>,
    pub decision_reasons: Vec<String>,
    /// What is still missing for a decision.
    pub missing: Vec<String>,
    pub srm_flagged: Option<bool>,
    pub promoted_arm: Option<String>,
    /// The winner so far: the promoted arm, else the arm ready to promote, else the arm
    /// with the highest posterior expected value.
    pub leader: Option<String>,
    /// The leader cleared the always-valid test (or was promoted).
    pub leader_cleared: bool,
    /// The leader's relative uplift on the primary metric against control (null when
    /// control leads).
    pub leader_uplift: Option<Effect>,
    /// The week: Σ over treatment arms of their incremental profit against control.
    pub incremental_profit: Option<f64>,
    /// Why `incremental_profit` is null, when it is.
    pub incremental_profit_note: Option<String>,
    pub arms: Vec<ArmReport>,
    pub decisions: Vec<DecisionEntry>,
    pub allocation: Allocation,
    pub series: Vec<SeriesPoint>,
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
}

/// Builds the report of `week` as of `now`: every experiment that ran in it, or only
/// `experiment`.
pub fn build_weekly(
    db: &Db,
    week: Week,
    experiment: Option<&str>,
    now: NaiveDateTime,
    mut on_experiment: impl FnMut(&str),
) -> Result<WeeklyReport, ReportError> {
    let (from, to) = (week.start(), week.end());
    let all = match experiment {
        Some(key) => match queries::get_experiment(db, key) {
            Ok(e) => vec![e],
            Err(StoreError::NotFound) => return Err(ReportError::UnknownExperiment(key.to_string())),
            Err(e) => return Err(e.into()),
        },
        None => queries::list_experiments(db)?,
    };
    let mut experiments = Vec::new();
    for stored in &all {
        on_experiment(&stored.row.key);
        if stored.row.created_at >= to {
            continue;
        }
        let e = build_experiment(db, stored, from, to)?;
        // Ran: had traffic or analyses, was live at the week's end, or changed state in it
        // (a draft that was only created or edited did not run).
        let ran = !e.allocation.buckets.is_empty()
            || !e.series.is_empty()
            || matches!(e.status.as_str(), "running" | "paused")
            || e.decisions.iter().any(|d| !matches!(d.action.as_str(), "create" | "update"));
        if ran || experiment.is_some() {
            experiments.push(e);
        }
    }
    Ok(WeeklyReport { week: week.to_string(), from, to, generated_at: now, experiments })
}

/// A bucket length that gives at most ~200 buckets over `span` (round lengths).
pub fn bucket_seconds(span: Duration) -> i64 {
    const STEPS: [i64; 10] = [60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400, 604800];
    let span = span.num_seconds().max(1);
    STEPS.iter().copied().find(|s| span / s <= 200).unwrap_or(604800)
}

/// Builds one experiment's report over `[from, to)`.
pub fn build_experiment(
    db: &Db,
    stored: &StoredExperiment,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<ExperimentReport, StoreError> {
    let def = &stored.definition;
    let id = stored.row.id;
    let bucket = bucket_seconds(to - from);
    let counts = data::allocation(db, id, from, to, bucket)?;
    let totals = data::reward_totals(db, id, from, to)?;
    let in_force = crate::store::analysis::latest_analysis(db, id, None, Some(to - Duration::microseconds(1)))?;
    let latest: Option<StoredResult> = match &in_force {
        Some(row) => Some(parse_result(&row.result)?),
        None => None,
    };
    let mut series_rows = Vec::new();
    for (at, json) in data::analyses_between(db, id, from, to - Duration::microseconds(1), MAX_SERIES_POINTS)? {
        series_rows.push((at, parse_result(&json)?));
    }
    let decisions_all = queries::list_decisions(db, id)?;

    // Arms: the definition's order (their colours), then any other arm seen in the data.
    let mut arms: Vec<String> = def.arm_keys();
    let mut seen = |k: &str| {
        if !arms.iter().any(|a| a == k) {
            arms.push(k.to_string());
        }
    };
    counts.iter().for_each(|c| seen(&c.arm));
    totals.iter().for_each(|t| seen(&t.arm));
    for (_, r) in &series_rows {
        if let Some(m) = primary(r) {
            m.arms.iter().for_each(|a| seen(&a.arm));
        }
    }
    let control = def.arms.get(def.control_index()).map(|a| a.key.clone()).unwrap_or_default();

    let allocation = allocation_of(&counts, &arms, bucket);
    let week_exposures: Vec<u64> =
        arms.iter().map(|a| counts.iter().filter(|c| &c.arm == a).map(|c| c.n.max(0) as u64).sum()).collect();

    // Money and conversions of the week.
    let money_metric = def
        .metrics()
        .find(|m| m.kind == MetricKind::Profit)
        .or_else(|| def.metrics().find(|m| m.kind == MetricKind::Revenue));
    let conversion_metric = def.metrics().find(|m| m.kind == MetricKind::Conversion);
    let money: Vec<Option<(f64, f64, f64)>> = arms
        .iter()
        .map(|arm| {
            let m = money_metric?;
            let t = totals.iter().find(|t| &t.arm == arm && t.metric == m.name);
            Some(money_of(def, arm, m.kind, m.direction, t))
        })
        .collect();
    let ci = arms.iter().position(|a| *a == control);
    let control_ppe = ci.and_then(|i| {
        let n = week_exposures[i];
        money[i].map(|(_, _, p)| p).filter(|_| n > 0).map(|p| p / n as f64)
    });

    let primary_now = latest.as_ref().and_then(primary);
    let mut arm_reports = Vec::with_capacity(arms.len());
    for (i, arm) in arms.iter().enumerate() {
        let n = week_exposures[i];
        let (revenue, cost, profit) = match money[i] {
            Some((r, c, p)) => (Some(r), Some(c), Some(p)),
            None => (None, None, None),
        };
        let is_control = *arm == control;
        let incremental = match (profit, control_ppe) {
            (Some(p), Some(cp)) if !is_control => Some(p - n as f64 * cp),
            _ => None,
        };
        let result = primary_now.and_then(|m| m.arms.iter().find(|a| &a.arm == arm));
        arm_reports.push(arm_report(ArmInputs {
            arm,
            index: i,
            control: is_control,
            exposures: n,
            conversions: conversion_metric.map(|m| {
                totals
                    .iter()
                    .find(|t| &t.arm == arm && t.metric == m.name)
                    .map(|t| t.positive_exposures.max(0) as u64)
                    .unwrap_or(0)
            }),
            revenue,
            cost,
            profit,
            incremental,
            result,
            analysed: latest.is_some(),
        }));
    }
    let (incremental_profit, incremental_profit_note) = if money_metric.is_none() {
        (None, Some("the experiment has no revenue or profit metric".to_string()))
    } else if control_ppe.is_none() {
        (None, Some("control has no exposures in this period".to_string()))
    } else {
        (Some(arm_reports.iter().filter_map(|a| a.incremental_profit).sum()), None)
    };

    let decisions: Vec<DecisionEntry> = decisions_all
        .iter()
        .filter(|d| d.created_at >= from && d.created_at < to)
        .map(|d| DecisionEntry {
            at: d.created_at,
            action: d.action.clone(),
            actor: d.actor.clone(),
            reason: d.reason.clone(),
        })
        .collect();
    let status = status_at(&decisions_all, to).unwrap_or_else(|| stored.row.status.clone());

    let (leader, leader_cleared) = leader_of(latest.as_ref(), &status, &decisions_all, to);
    let leader_uplift = leader
        .as_ref()
        .filter(|l| **l != control)
        .and_then(|l| arm_reports.iter().find(|a| &a.arm == l))
        .and_then(|a| a.uplift_relative.clone());

    let series = series_rows
        .iter()
        .filter_map(|(at, r)| {
            let m = primary(r)?;
            Some(SeriesPoint {
                at: *at,
                arms: m
                    .arms
                    .iter()
                    .map(|a| ArmPoint {
                        arm: a.arm.clone(),
                        mature_exposures: a.exposures_mature,
                        mean: a.mean,
                        uplift_relative: a.uplift_relative.as_ref().and_then(|u| u.point),
                        uplift_relative_always_valid: a.uplift_relative.as_ref().and_then(|u| u.always_valid_interval),
                        prob_best: a.prob_best,
                    })
                    .collect(),
            })
        })
        .collect();

    let analysis = latest.as_ref().map(|r| &r.analysis);
    Ok(ExperimentReport {
        key: stored.row.key.clone(),
        name: stored.row.name.clone(),
        description: def.description.clone(),
        status,
        version: stored.row.current_version,
        primary_metric: def.primary_metric.name.clone(),
        primary_kind: kind_name(def.primary_metric.kind).to_string(),
        money_metric: money_metric.map(|m| m.name.clone()),
        analyzed_at: latest.as_ref().map(|r| r.analyzed_at),
        estimator: primary_now
            .and_then(|m| serde_json::to_value(m.estimator).ok())
            .and_then(|v| v.as_str().map(String::from)),
        alpha: analysis.map(|a| a.alpha),
        decision_state: analysis.map(|a| state_name(&a.decision.state)),
        decision_reasons: analysis.map(|a| a.decision.reasons.clone()).unwrap_or_default(),
        missing: analysis.map(|a| a.decision.missing.clone()).unwrap_or_default(),
        srm_flagged: analysis.map(|a| a.srm.flagged),
        promoted_arm: latest.as_ref().and_then(|r| r.promoted_arm.clone()).or_else(|| stored.row.promoted_arm.clone()),
        leader,
        leader_cleared,
        leader_uplift,
        incremental_profit,
        incremental_profit_note,
        arms: arm_reports,
        decisions,
        allocation,
        series,
        from,
        to,
    })
}

fn parse_result(json: &str) -> Result<StoredResult, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("a stored analysis does not parse: {e}")))
}

fn primary(r: &StoredResult) -> Option<&MetricResult> {
    r.analysis.metrics.iter().find(|m| m.role == MetricRole::Primary)
}

fn kind_name(k: MetricKind) -> &'static str {
    match k {
        MetricKind::Conversion => "conversion",
        MetricKind::Revenue => "revenue",
        MetricKind::Profit => "profit",
        MetricKind::Custom => "custom",
    }
}

fn state_name(s: &DecisionState) -> String {
    match s {
        DecisionState::Collecting => "collecting",
        DecisionState::ReadyToPromote { .. } => "ready_to_promote",
        DecisionState::ControlBest => "control_best",
        DecisionState::Futile => "futile",
        DecisionState::BlockedSrm => "blocked_srm",
        DecisionState::GuardrailBreached { .. } => "guardrail_breached",
        DecisionState::NotComputable => "not_computable",
    }
    .to_string()
}

/// (revenue, cost, profit) of one arm's rewards on the money metric.
fn money_of(
    def: &crate::experiment::definition::Definition,
    arm: &str,
    kind: MetricKind,
    direction: Direction,
    t: Option<&RewardTotals>,
) -> (f64, f64, f64) {
    let Some(t) = t else { return (0.0, 0.0, 0.0) };
    let revenue = t.sum_raw;
    if kind == MetricKind::Profit {
        // Stored profit = revenue × (1 − cost_rate) − cost per reward, negated once for a
        // lower-is-better metric (see api::rewards::stored_value).
        let profit = if direction == Direction::Lower { -t.sum_value } else { t.sum_value };
        (revenue, revenue - profit, profit)
    } else {
        let (cost, rate) = def.arms.iter().find(|a| a.key == arm).map(|a| (a.cost, a.cost_rate)).unwrap_or((0.0, 0.0));
        let c = t.rewards.max(0) as f64 * cost + rate * revenue;
        (revenue, c, revenue - c)
    }
}

fn allocation_of(counts: &[BucketCount], arms: &[String], bucket: i64) -> Allocation {
    let mut by_bucket: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for c in counts {
        if let Some(i) = arms.iter().position(|a| *a == c.arm) {
            by_bucket.entry(c.bucket).or_insert_with(|| vec![0; arms.len()])[i] += c.n.max(0) as u64;
        }
    }
    Allocation {
        bucket_seconds: bucket,
        buckets: by_bucket
            .into_iter()
            .filter_map(|(b, exposures)| {
                let start = chrono::DateTime::from_timestamp(b.checked_mul(bucket)?, 0)?.naive_utc();
                Some(AllocationBucket { start, exposures })
            })
            .collect(),
    }
}

/// The status after the last lifecycle entry of the audit log before `to`.
fn status_at(decisions: &[crate::store::models::DecisionRow], to: NaiveDateTime) -> Option<String> {
    decisions.iter().filter(|d| d.created_at < to).rev().find_map(|d| {
        let details: serde_json::Value = serde_json::from_str(&d.details).ok()?;
        if let Some(s) = details.get("to").and_then(|v| v.as_str()) {
            return Some(s.to_string());
        }
        match d.action.as_str() {
            // A promotion without holdout concludes; with one the experiment keeps running.
            "promote" => Some(if details.get("holdout").and_then(|h| h.as_f64()).unwrap_or(0.0) > 0.0 {
                "running".to_string()
            } else {
                "concluded".to_string()
            }),
            "create" => details.get("status").and_then(|v| v.as_str()).map(String::from),
            _ => None,
        }
    })
}

fn leader_of(
    latest: Option<&StoredResult>,
    status: &str,
    decisions: &[crate::store::models::DecisionRow],
    to: NaiveDateTime,
) -> (Option<String>, bool) {
    // A promotion recorded before the end of the range wins.
    let promoted = decisions.iter().rfind(|d| d.created_at < to && d.action == "promote").and_then(|d| {
        let details: serde_json::Value = serde_json::from_str(&d.details).ok()?;
        details.get("arm").and_then(|a| a.as_str()).map(String::from)
    });
    if let Some(arm) = promoted.filter(|_| status != "draft") {
        return (Some(arm), true);
    }
    let Some(r) = latest else { return (None, false) };
    let checks = &r.analysis.decision.checks;
    if let DecisionState::ReadyToPromote { arm } = &r.analysis.decision.state {
        return (Some(arm.clone()), true);
    }
    match &checks.best_arm {
        Some(best) => (Some(best.clone()), checks.cleared_arms.contains(best)),
        None => (None, false),
    }
}

struct ArmInputs<'a> {
    arm: &'a str,
    index: usize,
    control: bool,
    exposures: u64,
    conversions: Option<u64>,
    revenue: Option<f64>,
    cost: Option<f64>,
    profit: Option<f64>,
    incremental: Option<f64>,
    result: Option<&'a ArmMetricResult>,
    analysed: bool,
}

fn effect(u: &crate::analysis::engine::Uplift) -> Effect {
    Effect { point: u.point, always_valid: u.always_valid_interval, fixed_horizon: u.fixed_horizon_interval }
}

fn arm_report(i: ArmInputs<'_>) -> ArmReport {
    let r = i.result;
    let note = match r {
        None if !i.analysed => Some("no analysis yet".to_string()),
        None => Some("not in the latest analysis (arm of another version)".to_string()),
        Some(r) => {
            let reasons: Vec<&str> = [&r.mean_reason, &r.p_reason, &r.bayes_reason]
                .into_iter()
                .filter_map(|x| x.as_deref())
                .chain(r.uplift_relative.as_ref().and_then(|u| u.reason.as_deref()))
                // Control has no uplift or test against itself: nothing to explain.
                .filter(|r| *r != "not_applicable")
                .collect();
            let mut reasons = reasons;
            reasons.dedup();
            (!reasons.is_empty()).then(|| reasons.join(", "))
        }
    };
    ArmReport {
        arm: i.arm.to_string(),
        control: i.control,
        color: svg::arm_color(i.index).to_string(),
        exposures: i.exposures,
        conversions: i.conversions,
        revenue: i.revenue,
        cost: i.cost,
        profit: i.profit,
        profit_per_exposure: i.profit.filter(|_| i.exposures > 0).map(|p| p / i.exposures as f64),
        incremental_profit: i.incremental,
        mature_exposures: r.map(|r| r.exposures_mature),
        mean: r.and_then(|r| r.mean),
        uplift_absolute: r.and_then(|r| r.uplift_absolute.as_ref()).map(effect),
        uplift_relative: r.and_then(|r| r.uplift_relative.as_ref()).map(effect),
        p_always_valid: r.and_then(|r| r.p_always_valid).map(|p| p.p),
        p_fixed_horizon: r.and_then(|r| r.p_fixed_horizon).map(|p| p.p),
        p_holm_adjusted: r.and_then(|r| r.p_holm_adjusted),
        prob_best: r.and_then(|r| r.prob_best),
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_stay_under_two_hundred_and_round() {
        assert_eq!(bucket_seconds(Duration::days(7)), 3600);
        assert_eq!(bucket_seconds(Duration::hours(1)), 60);
        assert_eq!(bucket_seconds(Duration::days(1)), 900);
        assert_eq!(bucket_seconds(Duration::days(90)), 43200);
        assert_eq!(bucket_seconds(Duration::days(400)), 604800);
    }

    #[test]
    fn allocation_groups_counts_by_bucket_in_arm_order() {
        let arms = vec!["a".to_string(), "b".to_string()];
        let counts = vec![
            BucketCount { bucket: 10, arm: "b".into(), n: 3 },
            BucketCount { bucket: 10, arm: "a".into(), n: 1 },
            BucketCount { bucket: 12, arm: "a".into(), n: 2 },
            BucketCount { bucket: 12, arm: "zz".into(), n: 9 },
        ];
        let a = allocation_of(&counts, &arms, 3600);
        assert_eq!(a.buckets.len(), 2);
        assert_eq!(a.buckets[0].exposures, vec![1, 3]);
        assert_eq!(a.buckets[1].exposures, vec![2, 0]);
        assert_eq!(a.buckets[0].start.and_utc().timestamp(), 36000);
    }
}
