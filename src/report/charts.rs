//! The four charts of an experiment over a time range, drawn from an
//! [`ExperimentReport`]: traffic allocation (stacked shares per time bucket), the
//! cumulative mean of the primary metric per arm, the relative uplift of each treatment
//! arm with its always-valid band, and the probability of being best. The weekly report
//! and `GET /v1/experiments/{key}/charts` (the dashboard) use the same functions.

use serde::Serialize;

use super::model::{ArmPoint, ExperimentReport};
use super::svg::{self, AreaLayer, LineChart, LineSeries, StackedArea, ValueFormat};

/// One drawn chart.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Chart {
    /// `allocation`, `cumulative`, `uplift` or `p_best`.
    pub name: String,
    pub title: String,
    /// A self-contained `<svg>` element.
    pub svg: String,
}

fn secs(t: chrono::NaiveDateTime) -> f64 {
    t.and_utc().timestamp() as f64 + f64::from(t.and_utc().timestamp_subsec_micros()) / 1e6
}

/// All four charts, in the order above.
pub fn charts(e: &ExperimentReport) -> Vec<Chart> {
    vec![allocation(e), cumulative(e), uplift(e), p_best(e)]
}

fn x_range(e: &ExperimentReport) -> (f64, f64) {
    (secs(e.from), secs(e.to))
}

pub fn allocation(e: &ExperimentReport) -> Chart {
    let a = &e.allocation;
    let (from, to) = x_range(e);
    // Every bucket of the range, empty ones included, so gaps in traffic show as gaps.
    let size = a.bucket_seconds.max(1) as f64;
    let first = (from / size).floor() * size;
    let n = (((to - first) / size).ceil() as usize).min(5000);
    let starts: Vec<f64> = (0..n).map(|k| first + k as f64 * size).collect();
    let index = |t: f64| ((t - first) / size).round() as usize;
    let layers = e
        .arms
        .iter()
        .enumerate()
        .map(|(i, arm)| {
            let mut values = vec![0.0; n];
            for b in &a.buckets {
                let k = index(secs(b.start));
                if k < n {
                    values[k] += b.exposures.get(i).copied().unwrap_or(0) as f64;
                }
            }
            AreaLayer { label: arm.arm.clone(), color: arm.color.clone(), values }
        })
        .collect();
    let title = format!("Traffic allocation ({} buckets)", human_bucket(a.bucket_seconds));
    let svg = svg::stacked_area(&StackedArea {
        title: title.clone(),
        y_label: "share of exposures (%)".into(),
        x_range: (from, to),
        starts,
        bucket: size,
        layers,
    });
    Chart { name: "allocation".into(), title, svg }
}

fn human_bucket(s: i64) -> String {
    match s {
        s if s % 86400 == 0 => format!("{}-day", s / 86400),
        s if s % 3600 == 0 => format!("{}-hour", s / 3600),
        s => format!("{}-minute", (s / 60).max(1)),
    }
}

/// The unit of the primary metric's mean, for axis labels.
fn mean_axis(e: &ExperimentReport) -> (String, ValueFormat) {
    match e.primary_kind.as_str() {
        "conversion" => (format!("{} rate (%)", e.primary_metric), ValueFormat::Percent),
        "revenue" | "profit" => (format!("{} per exposure (currency units)", e.primary_metric), ValueFormat::Number),
        _ => (format!("{} per exposure (metric units)", e.primary_metric), ValueFormat::Number),
    }
}

/// One line per arm (in definition order and colour) of `value` at each analysis.
fn per_arm_series(e: &ExperimentReport, value: impl Fn(&ArmPoint) -> Option<f64>) -> Vec<LineSeries> {
    e.arms
        .iter()
        .map(|arm| LineSeries {
            label: arm.arm.clone(),
            color: arm.color.clone(),
            points: e
                .series
                .iter()
                .filter_map(|p| {
                    let a = p.arms.iter().find(|a| a.arm == arm.arm)?;
                    Some((secs(p.at), value(a)?))
                })
                .collect(),
            band: Vec::new(),
        })
        .collect()
}

pub fn cumulative(e: &ExperimentReport) -> Chart {
    let (y_label, y_format) = mean_axis(e);
    let series = per_arm_series(e, |a| a.mean);
    let title = format!("Cumulative {} per arm (mature exposures)", e.primary_metric);
    let svg = svg::line_chart(&LineChart {
        title: title.clone(),
        y_label,
        y_format,
        zero_line: false,
        y_range: None,
        x_range: x_range(e),
        series,
    });
    Chart { name: "cumulative".into(), title, svg }
}

pub fn uplift(e: &ExperimentReport) -> Chart {
    let series = e
        .arms
        .iter()
        .filter(|a| !a.control)
        .map(|arm| {
            let mut points = Vec::new();
            let mut band = Vec::new();
            for p in &e.series {
                let Some(a) = p.arms.iter().find(|a| a.arm == arm.arm) else { continue };
                let x = secs(p.at);
                if let Some(u) = a.uplift_relative {
                    points.push((x, u));
                }
                if let Some(b) = a.uplift_relative_always_valid {
                    band.push((x, b.lower, b.upper));
                }
            }
            LineSeries { label: format!("{} vs control", arm.arm), color: arm.color.clone(), points, band }
        })
        .collect();
    let level = e.alpha.map(|a| format!("{:.0}%", (1.0 - a) * 100.0)).unwrap_or_else(|| "1 − α".into());
    let title = format!("Uplift of {} vs control, with its {level} always-valid band", e.primary_metric);
    let svg = svg::line_chart(&LineChart {
        title: title.clone(),
        y_label: "relative uplift vs control (%)".into(),
        y_format: ValueFormat::Percent,
        zero_line: true,
        y_range: None,
        x_range: x_range(e),
        series,
    });
    Chart { name: "uplift".into(), title, svg }
}

pub fn p_best(e: &ExperimentReport) -> Chart {
    let series = per_arm_series(e, |a| a.prob_best);
    let title = "Probability of being best".to_string();
    let svg = svg::line_chart(&LineChart {
        title: title.clone(),
        y_label: "P(best) (%)".into(),
        y_format: ValueFormat::Percent,
        zero_line: false,
        y_range: Some((0.0, 1.0)),
        x_range: x_range(e),
        series,
    });
    Chart { name: "p_best".into(), title, svg }
}
