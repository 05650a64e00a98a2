//! Writes a [`WeeklyReport`] as HTML (one self-contained page: inline CSS and SVG, no
//! scripts, fonts or links to anything outside it; print styles), Markdown, CSV (one row
//! per experiment and arm) and JSON (the report itself, full precision). HTML, Markdown
//! and CSV write every number through the same formatting functions, so a number reads the
//! same in each; JSON carries the unrounded values.

use std::fmt::Write as _;

use super::charts;
use super::model::{ArmReport, Effect, ExperimentReport, WeeklyReport};
use super::svg::escape;
use super::Format;
use crate::analysis::engine::Bounds;

/// Renders the report in `format`.
pub fn render(report: &WeeklyReport, format: Format) -> Result<String, serde_json::Error> {
    Ok(match format {
        Format::Html => html(report),
        Format::Md => markdown(report),
        Format::Csv => csv(report),
        Format::Json => serde_json::to_string_pretty(report)?,
    })
}

// ------------------------------------------------------------------ numbers

/// `v` with `d` decimals, never "-0.00".
fn fixed(v: f64, d: usize) -> String {
    let s = format!("{v:.d$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// Money: 2 decimals.
pub fn money(v: f64) -> String {
    fixed(v, 2)
}

/// Means, absolute uplifts, profit per exposure: 4 decimals.
pub fn value(v: f64) -> String {
    fixed(v, 4)
}

/// A fraction as a percentage with 2 decimals (no sign): 0.1234 → "12.34".
pub fn percent(v: f64) -> String {
    fixed(v * 100.0, 2)
}

/// A p-value: 4 decimals, or scientific below 0.0001.
pub fn p_value(p: f64) -> String {
    if p >= 1e-4 || p == 0.0 {
        fixed(p, 4)
    } else {
        format!("{p:.1e}")
    }
}

/// A probability as a percentage with 1 decimal.
pub fn probability(p: f64) -> String {
    fixed(p * 100.0, 1)
}

/// Every number of one arm's row as written in all formats: (CSV column, text; empty
/// when null). The HTML and Markdown tables show these same texts.
pub fn arm_cells(a: &ArmReport) -> Vec<(&'static str, String)> {
    let o = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_default();
    let b = |e: &Option<Effect>, av: bool, lower: bool, f: fn(f64) -> String| {
        e.as_ref()
            .and_then(|e| if av { e.always_valid } else { e.fixed_horizon })
            .map(|b: Bounds| f(if lower { b.lower } else { b.upper }))
            .unwrap_or_default()
    };
    let abs = &a.uplift_absolute;
    let rel = &a.uplift_relative;
    vec![
        ("exposures", a.exposures.to_string()),
        ("conversions", a.conversions.map(|c| c.to_string()).unwrap_or_default()),
        ("revenue", o(a.revenue, money)),
        ("cost", o(a.cost, money)),
        ("profit", o(a.profit, money)),
        ("profit_per_exposure", o(a.profit_per_exposure, value)),
        ("incremental_profit", o(a.incremental_profit, money)),
        ("mature_exposures", a.mature_exposures.map(|c| c.to_string()).unwrap_or_default()),
        ("mean", o(a.mean, value)),
        ("uplift_abs", o(abs.as_ref().and_then(|e| e.point), value)),
        ("uplift_abs_av_lower", b(abs, true, true, value)),
        ("uplift_abs_av_upper", b(abs, true, false, value)),
        ("uplift_abs_fh_lower", b(abs, false, true, value)),
        ("uplift_abs_fh_upper", b(abs, false, false, value)),
        ("uplift_rel_pct", o(rel.as_ref().and_then(|e| e.point), percent)),
        ("uplift_rel_av_lower_pct", b(rel, true, true, percent)),
        ("uplift_rel_av_upper_pct", b(rel, true, false, percent)),
        ("uplift_rel_fh_lower_pct", b(rel, false, true, percent)),
        ("uplift_rel_fh_upper_pct", b(rel, false, false, percent)),
        ("p_always_valid", o(a.p_always_valid, p_value)),
        ("p_fixed_horizon", o(a.p_fixed_horizon, p_value)),
        ("p_holm_adjusted", o(a.p_holm_adjusted, p_value)),
        ("prob_best_pct", o(a.prob_best, probability)),
    ]
}

const DASH: &str = "–";

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        DASH
    } else {
        s
    }
}

fn time(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn week_span(r: &WeeklyReport) -> String {
    let last = r.to - chrono::Duration::days(1);
    format!("{} – {} (UTC)", r.from.format("%a %d %b"), last.format("%a %d %b %Y"))
}

/// The summary's uplift text: "12.34% [1.00%, 20.00%]".
fn uplift_summary(e: &ExperimentReport) -> String {
    let Some(u) = &e.leader_uplift else {
        return match &e.leader {
            Some(_) => "control leads".into(),
            None => DASH.into(),
        };
    };
    let point = u.point.map(|p| format!("{}%", percent(p))).unwrap_or_else(|| DASH.into());
    match u.always_valid {
        Some(b) => format!("{point} [{}%, {}%]", percent(b.lower), percent(b.upper)),
        None => point,
    }
}

fn leader_text(e: &ExperimentReport) -> String {
    match (&e.leader, e.leader_cleared) {
        (Some(l), true) => format!("{l} (cleared)"),
        (Some(l), false) => format!("{l} (leading, not significant)"),
        (None, _) => DASH.into(),
    }
}

fn incremental_text(e: &ExperimentReport) -> String {
    match e.incremental_profit {
        Some(v) => money(v),
        None => DASH.into(),
    }
}

// ------------------------------------------------------------------ HTML

const CSS: &str = "
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; color: #1d1d1f;
  margin: 24px auto; max-width: 1440px; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 4px; border-top: 2px solid #ddd; padding-top: 16px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: #555; font-size: 13px; margin: 2px 0 10px; }
table { border-collapse: collapse; width: 100%; font-size: 12px; margin: 6px 0 12px; }
th, td { border: 1px solid #d5d5d5; padding: 4px 6px; vertical-align: top; }
th { background: #f3f3f3; text-align: left; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.wide { overflow-x: auto; }
td .iv { display: block; color: #555; font-size: 11px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
.status { display: inline-block; padding: 1px 6px; border-radius: 8px; background: #eef; font-size: 12px; }
.warn { color: #a40000; font-weight: 600; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.charts figure { margin: 0; border: 1px solid #e3e3e3; }
.charts svg { display: block; width: 100%; height: auto; }
ul.plain { margin: 4px 0 10px; padding-left: 20px; font-size: 13px; }
.notes { font-size: 12px; color: #444; border-top: 1px solid #ddd; margin-top: 32px; padding-top: 8px; }
@media (max-width: 900px) { .charts { grid-template-columns: 1fr; } }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; max-width: none; padding: 0; }
  section.experiment { break-before: page; }
  h2 { border-top: none; padding-top: 0; margin-top: 0; }
  table, figure, tr { break-inside: avoid; }
  table.arms { font-size: 8.5px; } table.arms td .iv { font-size: 8px; } .wide { overflow: visible; }
  .charts { grid-template-columns: 1fr 1fr; }
}
";

/// The HTML page.
pub fn html(r: &WeeklyReport) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let title = format!("Weekly uplift report {}", r.week);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{CSS}</style></head><body>\
         <header><h1>{t}</h1><p class=\"meta\">{span} · generated {gen} · {n} experiment(s)</p></header>",
        t = escape(&title),
        span = escape(&week_span(r)),
        gen = escape(&time(r.generated_at)),
        n = r.experiments.len()
    );
    o.push_str("<section class=\"summary\"><h2>Summary</h2>");
    if r.experiments.is_empty() {
        o.push_str("<p>No experiment ran this week.</p>");
    } else {
        o.push_str(
            "<table><thead><tr><th>Experiment</th><th>Status</th><th>Decision state</th><th>Winner so far</th>\
             <th>Uplift of the primary metric (relative, always-valid interval)</th>\
             <th>Incremental profit vs control (week)</th></tr></thead><tbody>",
        );
        for e in &r.experiments {
            let _ = write!(
                o,
                "<tr data-experiment=\"{k}\"><td><a href=\"#exp-{k}\">{name}</a><br><small>{k}</small></td>\
                 <td>{status}</td><td>{state}</td><td>{leader}</td><td>{uplift}<br><small>{metric}</small></td>\
                 <td class=\"num\">{inc}</td></tr>",
                k = escape(&e.key),
                name = escape(&e.name),
                status = escape(&e.status),
                state = escape(e.decision_state.as_deref().unwrap_or(DASH)),
                leader = escape(&leader_text(e)),
                uplift = escape(&uplift_summary(e)),
                metric = escape(&e.primary_metric),
                inc = escape(&incremental_text(e)),
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");
    for e in &r.experiments {
        experiment_html(&mut o, e);
    }
    let _ = writeln!(
        o,
        "<section class=\"notes\"><h3>How to read this report</h3><ul class=\"plain\">\
         <li><b>Week</b> columns (exposures, conversions, revenue, cost, profit, incremental profit) count the exposures \
         created in the week and the outcomes recorded for them by the time the report was generated. Incremental profit \
         of an arm = its profit − its exposures × control's profit per exposure; the experiment's figure sums the \
         treatment arms. Money comes from the experiment's profit metric (revenue after the arm's cost), else its \
         revenue metric and the arms' costs.</li>\
         <li><b>Cumulative</b> columns come from the analysis in force at the end of the week and cover the experiment \
         version since it started, on mature exposures (attribution window closed).</li>\
         <li>The <b>always-valid</b> interval and p-value (a confidence sequence) stay valid however often results are \
         looked at, and under adaptive allocation: decisions use them. The <b>fixed-horizon</b> interval and p-value are \
         shown for reference only. Holm adjusts the always-valid p-values across treatment arms. P(best) is the \
         posterior probability that the arm is the best.</li>\
         <li>Relative uplift = (treatment − control) / |control|, in percent.</li></ul>\
         <p>Strategist · report {w}</p></section></body></html>",
        w = escape(&r.week)
    );
    o
}

fn interval_html(b: Option<Bounds>, label: &str, f: fn(f64) -> String, unit: &str) -> String {
    match b {
        Some(b) => format!("<span class=\"iv\">{label} [{}{unit}, {}{unit}]</span>", f(b.lower), f(b.upper)),
        None => String::new(),
    }
}

fn experiment_html(o: &mut String, e: &ExperimentReport) {
    let k = escape(&e.key);
    let _ = write!(
        o,
        "<section class=\"experiment\" id=\"exp-{k}\"><h2>{name} <small>({k})</small></h2>\
         <p class=\"meta\"><span class=\"status\">{status}</span> · version {v} · primary metric <b>{pm}</b> ({pk}) · \
         {analysed}{est}{alpha}</p>",
        name = escape(&e.name),
        status = escape(&e.status),
        v = e.version,
        pm = escape(&e.primary_metric),
        pk = escape(&e.primary_kind),
        analysed = match e.analyzed_at {
            Some(t) => format!("analysis of {}", escape(&time(t))),
            None => "no analysis yet".into(),
        },
        est = e.estimator.as_deref().map(|s| format!(" · estimator {}", escape(s))).unwrap_or_default(),
        alpha = e.alpha.map(|a| format!(" · alpha {a}")).unwrap_or_default(),
    );
    if !e.description.is_empty() {
        let _ = write!(o, "<p>{}</p>", escape(&e.description));
    }
    let _ = write!(
        o,
        "<p>Winner so far: <b>{}</b> · decision state: <b>{}</b> · incremental profit vs control this week: <b>{}</b>{}</p>",
        escape(&leader_text(e)),
        escape(e.decision_state.as_deref().unwrap_or(DASH)),
        escape(&incremental_text(e)),
        e.incremental_profit_note.as_deref().map(|n| format!(" ({})", escape(n))).unwrap_or_default()
    );
    if e.srm_flagged == Some(true) {
        o.push_str(
            "<p class=\"warn\">Sample ratio mismatch: the logged allocation does not match the logged propensities; \
             do not trust these numbers until the logging is fixed.</p>",
        );
    }
    if !e.decision_reasons.is_empty() || !e.missing.is_empty() {
        o.push_str("<ul class=\"plain\">");
        for r in &e.decision_reasons {
            let _ = write!(o, "<li>{}</li>", escape(r));
        }
        for m in &e.missing {
            let _ = write!(o, "<li>Missing for a decision: {}</li>", escape(m));
        }
        o.push_str("</ul>");
    }
    let money = e.money_metric.as_deref().map(|m| format!(" (money from `{m}`)")).unwrap_or_default();
    let _ = write!(
        o,
        "<h3>Arms</h3><div class=\"wide\"><table class=\"arms\"><thead><tr><th rowspan=\"2\">Arm</th>\
         <th colspan=\"7\">This week{money}</th><th colspan=\"8\">Cumulative, {pm} (analysis in force at week end)</th></tr><tr>\
         <th>Exposures</th><th>Conversions</th><th>Revenue</th><th>Cost</th><th>Profit</th><th>Profit / exposure</th>\
         <th>Incremental profit</th><th>Mature exposures</th><th>Mean</th><th>Uplift (absolute)</th>\
         <th>Uplift (relative, %)</th><th>p always-valid</th><th>p fixed-horizon</th><th>p Holm</th><th>P(best) %</th>\
         </tr></thead><tbody>",
        money = escape(&money),
        pm = escape(&e.primary_metric)
    );
    for a in &e.arms {
        let cells = arm_cells(a);
        let c = |name: &str| cells.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap_or("");
        let num = |name: &str| format!("<td class=\"num\">{}</td>", escape(or_dash(c(name))));
        let abs = a.uplift_absolute.as_ref();
        let rel = a.uplift_relative.as_ref();
        let _ = write!(
            o,
            "<tr data-arm=\"{arm}\"><td><span class=\"swatch\" style=\"background:{color}\"></span>{arm}{ctl}{note}</td>\
             {exp}{conv}{rev}{cost}{profit}{ppe}{inc}{mature}{mean}\
             <td class=\"num\">{abs_p}{abs_av}{abs_fh}</td><td class=\"num\">{rel_p}{rel_av}{rel_fh}</td>\
             {pav}{pfh}{pholm}{pbest}</tr>",
            arm = escape(&a.arm),
            color = escape(&a.color),
            ctl = if a.control { " <small>(control)</small>" } else { "" },
            note = a.note.as_deref().map(|n| format!("<span class=\"iv\">{}</span>", escape(n))).unwrap_or_default(),
            exp = num("exposures"),
            conv = num("conversions"),
            rev = num("revenue"),
            cost = num("cost"),
            profit = num("profit"),
            ppe = num("profit_per_exposure"),
            inc = num("incremental_profit"),
            mature = num("mature_exposures"),
            mean = num("mean"),
            abs_p = escape(or_dash(c("uplift_abs"))),
            abs_av = interval_html(abs.and_then(|u| u.always_valid), "AV", value, ""),
            abs_fh = interval_html(abs.and_then(|u| u.fixed_horizon), "FH", value, ""),
            rel_p = escape(or_dash(c("uplift_rel_pct"))),
            rel_av = interval_html(rel.and_then(|u| u.always_valid), "AV", percent, "%"),
            rel_fh = interval_html(rel.and_then(|u| u.fixed_horizon), "FH", percent, "%"),
            pav = num("p_always_valid"),
            pfh = num("p_fixed_horizon"),
            pholm = num("p_holm_adjusted"),
            pbest = num("prob_best_pct"),
        );
    }
    o.push_str(
        "</tbody></table></div><p class=\"meta\">AV: always-valid interval (decisions use it); FH: fixed-horizon interval \
         (reference only).</p><h3>Charts</h3><div class=\"charts\">",
    );
    for chart in charts::charts(e) {
        let _ = write!(o, "<figure data-chart=\"{}\">{}</figure>", escape(&chart.name), chart.svg);
    }
    o.push_str("</div><h3>Decisions this week</h3>");
    if e.decisions.is_empty() {
        o.push_str("<p class=\"meta\">No change or decision was recorded this week.</p>");
    } else {
        o.push_str("<table class=\"decisions\"><thead><tr><th>Time</th><th>Action</th><th>By</th><th>Reason</th></tr></thead><tbody>");
        for d in &e.decisions {
            let _ = write!(
                o,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&time(d.at)),
                escape(&d.action),
                escape(&d.actor),
                escape(&d.reason)
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");
}

// ------------------------------------------------------------------ Markdown

/// Text safe inside a Markdown table cell: no pipes, no line breaks, no raw HTML.
fn md(s: &str) -> String {
    escape(s).replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The Markdown report (tables only; the charts are in the HTML).
pub fn markdown(r: &WeeklyReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Weekly uplift report {}\n", md(&r.week));
    let _ = writeln!(o, "{} · generated {}\n", md(&week_span(r)), md(&time(r.generated_at)));
    o.push_str("## Summary\n\n");
    if r.experiments.is_empty() {
        o.push_str("No experiment ran this week.\n");
    } else {
        o.push_str("| Experiment | Status | Decision state | Winner so far | Uplift of the primary metric (relative, always-valid) | Incremental profit vs control (week) |\n");
        o.push_str("|---|---|---|---|---|---:|\n");
        for e in &r.experiments {
            let _ = writeln!(
                o,
                "| {} (`{}`) | {} | {} | {} | {} ({}) | {} |",
                md(&e.name),
                md(&e.key),
                md(&e.status),
                md(e.decision_state.as_deref().unwrap_or(DASH)),
                md(&leader_text(e)),
                md(&uplift_summary(e)),
                md(&e.primary_metric),
                md(&incremental_text(e))
            );
        }
    }
    for e in &r.experiments {
        let _ = writeln!(o, "\n## {} (`{}`)\n", md(&e.name), md(&e.key));
        let _ = writeln!(
            o,
            "Status {} · version {} · primary metric `{}` ({}) · {} · winner so far: {} · incremental profit this week: {}\n",
            md(&e.status),
            e.version,
            md(&e.primary_metric),
            md(&e.primary_kind),
            e.analyzed_at.map(|t| format!("analysis of {}", time(t))).unwrap_or_else(|| "no analysis yet".into()),
            md(&leader_text(e)),
            md(&incremental_text(e))
        );
        for m in &e.missing {
            let _ = writeln!(o, "- Missing for a decision: {}", md(m));
        }
        if !e.missing.is_empty() {
            o.push('\n');
        }
        o.push_str("| Arm | Exposures | Conversions | Revenue | Cost | Profit | Profit / exposure | Incremental profit | Mature exposures | Mean | Uplift (abs) | AV interval | FH interval | Uplift (rel, %) | AV interval (%) | FH interval (%) | p always-valid | p fixed-horizon | p Holm | P(best) % |\n");
        o.push_str(
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for a in &e.arms {
            let cells = arm_cells(a);
            let c = |name: &str| {
                or_dash(cells.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap_or("")).to_string()
            };
            let iv = |lo: &str, hi: &str| {
                let (l, h) = (c(lo), c(hi));
                if l == DASH {
                    DASH.to_string()
                } else {
                    format!("[{l}, {h}]")
                }
            };
            let _ = writeln!(
                o,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                md(&a.arm),
                if a.control { " (control)" } else { "" },
                c("exposures"),
                c("conversions"),
                c("revenue"),
                c("cost"),
                c("profit"),
                c("profit_per_exposure"),
                c("incremental_profit"),
                c("mature_exposures"),
                c("mean"),
                c("uplift_abs"),
                iv("uplift_abs_av_lower", "uplift_abs_av_upper"),
                iv("uplift_abs_fh_lower", "uplift_abs_fh_upper"),
                c("uplift_rel_pct"),
                iv("uplift_rel_av_lower_pct", "uplift_rel_av_upper_pct"),
                iv("uplift_rel_fh_lower_pct", "uplift_rel_fh_upper_pct"),
                c("p_always_valid"),
                c("p_fixed_horizon"),
                c("p_holm_adjusted"),
                c("prob_best_pct"),
            );
        }
        if !e.decisions.is_empty() {
            o.push_str("\n**Decisions this week**\n\n| Time | Action | By | Reason |\n|---|---|---|---|\n");
            for d in &e.decisions {
                let _ =
                    writeln!(o, "| {} | {} | {} | {} |", md(&time(d.at)), md(&d.action), md(&d.actor), md(&d.reason));
            }
        }
    }
    o
}

// ------------------------------------------------------------------ CSV

/// The CSV header: report and experiment columns, then [`arm_cells`]'s columns.
pub const CSV_LEAD: [&str; 9] =
    ["week", "experiment", "experiment_name", "status", "decision_state", "leader", "arm", "control", "color"];

/// One CSV field (RFC 4180 quoting). Text a spreadsheet would run as a formula (leading
/// `=`, `+`, `-`, `@`) is prefixed with `'`.
fn csv_field(s: &str, text: bool) -> String {
    let s = if text && s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// One row per experiment and arm.
pub fn csv(r: &WeeklyReport) -> String {
    let mut o = String::new();
    let arm_columns: Vec<&str> = match r.experiments.iter().flat_map(|e| e.arms.first()).next() {
        Some(a) => arm_cells(a).into_iter().map(|(n, _)| n).collect(),
        None => arm_cells(&empty_arm()).into_iter().map(|(n, _)| n).collect(),
    };
    let header: Vec<&str> = CSV_LEAD.iter().copied().chain(arm_columns).collect();
    o.push_str(&header.join(","));
    o.push_str("\r\n");
    for e in &r.experiments {
        for a in &e.arms {
            let lead = [
                r.week.as_str(),
                &e.key,
                &e.name,
                &e.status,
                e.decision_state.as_deref().unwrap_or(""),
                e.leader.as_deref().unwrap_or(""),
                &a.arm,
                if a.control { "true" } else { "false" },
                &a.color,
            ];
            let fields: Vec<String> = lead
                .iter()
                .map(|s| csv_field(s, true))
                .chain(arm_cells(a).into_iter().map(|(_, v)| csv_field(&v, false)))
                .collect();
            o.push_str(&fields.join(","));
            o.push_str("\r\n");
        }
    }
    o
}

fn empty_arm() -> ArmReport {
    ArmReport {
        arm: String::new(),
        control: false,
        color: String::new(),
        exposures: 0,
        conversions: None,
        revenue: None,
        cost: None,
        profit: None,
        profit_per_exposure: None,
        incremental_profit: None,
        mature_exposures: None,
        mean: None,
        uplift_absolute: None,
        uplift_relative: None,
        p_always_valid: None,
        p_fixed_horizon: None,
        p_holm_adjusted: None,
        prob_best: None,
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_one_way() {
        assert_eq!(money(-0.001), "0.00");
        assert_eq!(money(1234.567), "1234.57");
        assert_eq!(percent(0.12345), "12.35");
        assert_eq!(p_value(0.04321), "0.0432");
        assert_eq!(p_value(0.0000123), "1.2e-5");
        assert_eq!(probability(0.9876), "98.8");
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("a,b", true), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")", true), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1.5", false), "-1.5");
    }

    #[test]
    fn an_empty_week_renders_in_every_format() {
        let now = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap().and_hms_opt(1, 0, 0).unwrap();
        let r = WeeklyReport {
            week: "2026-W48".into(),
            from: now - chrono::Duration::days(7),
            to: now,
            generated_at: now,
            experiments: vec![],
        };
        for f in Format::ALL {
            let out = render(&r, f).unwrap();
            assert!(!out.is_empty());
        }
        assert!(html(&r).contains("No experiment ran this week."));
        assert_eq!(csv(&r).lines().count(), 1, "a header only");
    }
}
