//! Hand-written SVG charts for the weekly report and the dashboard: line charts (with an
//! optional shaded band per series) and stacked area charts, each with axes, ticks, axis
//! labels carrying units, a title and a legend. No fonts, scripts or external resources:
//! the output is a self-contained `<svg>` element that scales to its container (viewBox)
//! and prints. Every piece of text is escaped (experiment and arm names are user input).
//!
//! Time axes take Unix seconds (UTC); ticks fall on round steps (minutes to days).

use std::fmt::Write as _;

/// Arm colours (the Okabe–Ito palette, safe for colour-blind readers, then four more):
/// an arm's colour is `PALETTE[index of the arm in the experiment definition % len]`, so
/// it is the same in every chart, the report and the dashboard.
pub const PALETTE: &[&str] =
    &["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#7F7F7F", "#8C564B"];

/// The colour of the arm at `index` in its experiment's definition.
pub fn arm_color(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// Escapes text for SVG/HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// How the values of an axis are written at its ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueFormat {
    /// Plain number with as many decimals as the tick step needs.
    Number,
    /// A fraction written as a percentage (0.25 → 25%).
    Percent,
}

/// One line (and optional band) of a line chart.
#[derive(Debug, Clone, Default)]
pub struct LineSeries {
    pub label: String,
    pub color: String,
    /// (x, y), x increasing.
    pub points: Vec<(f64, f64)>,
    /// (x, lower, upper), drawn as a shaded band under the line.
    pub band: Vec<(f64, f64, f64)>,
}

/// A line chart over time.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    /// With the unit, e.g. "relative uplift vs control (%)".
    pub y_label: String,
    pub y_format: ValueFormat,
    /// Draw a dashed line at y = 0 (uplift charts).
    pub zero_line: bool,
    /// Force the y range to include these bounds (e.g. 0 and 1 for probabilities).
    pub y_range: Option<(f64, f64)>,
    /// Time span shown, Unix seconds (so empty charts still have an axis).
    pub x_range: (f64, f64),
    pub series: Vec<LineSeries>,
}

/// One layer of a stacked area chart: its value in each bucket.
#[derive(Debug, Clone)]
pub struct AreaLayer {
    pub label: String,
    pub color: String,
    pub values: Vec<f64>,
}

/// A stacked area chart of shares over time buckets: `starts[i]` is the start of bucket
/// i (Unix seconds), `bucket` its length; layers stack bottom to top in order.
#[derive(Debug, Clone)]
pub struct StackedArea {
    pub title: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub starts: Vec<f64>,
    pub bucket: f64,
    pub layers: Vec<AreaLayer>,
}

const W: f64 = 760.0;
const H: f64 = 330.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 18.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 86.0;
const FONT: &str = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";

/// Linear map from data to pixels.
#[derive(Debug, Clone, Copy)]
struct Scale {
    d0: f64,
    d1: f64,
    p0: f64,
    p1: f64,
}

impl Scale {
    fn at(&self, v: f64) -> f64 {
        if self.d1 == self.d0 {
            return (self.p0 + self.p1) / 2.0;
        }
        self.p0 + (v - self.d0) / (self.d1 - self.d0) * (self.p1 - self.p0)
    }
}

/// A "nice" step (1, 2 or 5 × 10^k) giving about `target` intervals over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Ticks and the widened range they cover.
fn value_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64, f64) {
    let (mut lo, mut hi) = (lo, hi);
    if !(lo.is_finite() && hi.is_finite()) {
        lo = 0.0;
        hi = 1.0;
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 { lo.abs() * 0.1 } else { 1.0 };
        lo -= pad;
        hi += pad;
    }
    let step = nice_step(hi - lo, 5.0);
    let start = (lo / step).floor() * step;
    let end = (hi / step).ceil() * step;
    let n = ((end - start) / step).round() as i64;
    let ticks = (0..=n.clamp(1, 50)).map(|i| start + i as f64 * step).collect();
    (ticks, start, end)
}

fn decimals_for(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    }
}

fn format_tick(v: f64, step: f64, f: ValueFormat) -> String {
    match f {
        ValueFormat::Number => {
            let d = decimals_for(step).min(8);
            let s = format!("{:.*}", d, v);
            if s.starts_with('-') && s.trim_start_matches(['-', '0', '.']).is_empty() {
                s[1..].to_string()
            } else {
                s
            }
        }
        ValueFormat::Percent => {
            let d = decimals_for(step * 100.0).min(6);
            let s = format!("{:.*}", d, v * 100.0);
            let s = if s.starts_with('-') && s.trim_start_matches(['-', '0', '.']).is_empty() {
                s[1..].to_string()
            } else {
                s
            };
            format!("{s}%")
        }
    }
}

/// Round time steps, seconds.
const TIME_STEPS: &[f64] =
    &[60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0];

fn time_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64) {
    let span = (hi - lo).max(1.0);
    let step = TIME_STEPS.iter().copied().find(|s| span / s <= 8.0).unwrap_or(604800.0);
    let first = (lo / step).ceil() * step;
    let mut ticks = Vec::new();
    let mut t = first;
    while t <= hi + 1e-6 && ticks.len() < 20 {
        ticks.push(t);
        t += step;
    }
    (ticks, step)
}

fn format_time(t: f64, step: f64, span: f64) -> String {
    let Some(dt) = chrono::DateTime::from_timestamp(t.floor() as i64, 0) else {
        return String::new();
    };
    if step >= 86400.0 {
        dt.format("%a %d %b").to_string()
    } else if span > 86400.0 {
        dt.format("%d %b %H:%M").to_string()
    } else {
        dt.format("%H:%M").to_string()
    }
}

fn open(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" \
         aria-label=\"{t}\" font-family=\"{FONT}\" font-size=\"12\" class=\"chart\">\
         <title>{t}</title><rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"14\" font-weight=\"600\" fill=\"#222\">{t}</text>",
        t = escape(title)
    );
}

/// The value axis: its ticks, their step, how they are written, and its label.
struct YAxis<'a> {
    ticks: &'a [f64],
    step: f64,
    format: ValueFormat,
    label: &'a str,
}

fn frame_and_axes(out: &mut String, xs: Scale, ys: Scale, y: YAxis<'_>, x_range: (f64, f64)) {
    let YAxis { ticks: y_ticks, step: y_step, format: y_format, label: y_label } = y;
    let (x0, x1) = (LEFT, W - RIGHT);
    let (y0, y1) = (H - BOTTOM, TOP);
    for &t in y_ticks {
        let y = ys.at(t);
        let _ = write!(
            out,
            "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#444\">{}</text>",
            x0 - 6.0,
            y + 4.0,
            escape(&format_tick(t, y_step, y_format))
        );
    }
    let (t_ticks, t_step) = time_ticks(x_range.0, x_range.1);
    for &t in &t_ticks {
        let x = xs.at(t);
        // A label that would run past the right edge is left off (its tick stays).
        let label = if x > x1 - 30.0 { String::new() } else { format_time(t, t_step, x_range.1 - x_range.0) };
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#444\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
            y0 + 5.0,
            y0 + 18.0,
            escape(&label)
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y0:.1}\" stroke=\"#444\"/>\
         <line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x0:.1}\" y2=\"{y1:.1}\" stroke=\"#444\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#222\">time (UTC)</text>\
         <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\" fill=\"#222\">{}</text>",
        (x0 + x1) / 2.0,
        y0 + 36.0,
        (y0 + y1) / 2.0,
        escape(y_label)
    );
}

fn legend(out: &mut String, items: &[(&str, &str, bool)]) {
    // One row (wrapping) under the x-axis label: a swatch per item, a band swatch when the
    // series carries one.
    let mut x = LEFT;
    let mut y = H - BOTTOM + 56.0;
    for (label, color, band) in items {
        let text = escape(label);
        let width = 26.0 + 7.0 * label.chars().count().min(40) as f64 + 18.0;
        if x + width > W - RIGHT && x > LEFT {
            x = LEFT;
            y += 16.0;
        }
        if *band {
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"20\" height=\"10\" fill=\"{c}\" fill-opacity=\"0.18\"/>",
                y - 9.0,
                c = escape(color)
            );
        }
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{c}\" stroke-width=\"3\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" fill=\"#222\">{text}</text>",
            y - 4.0,
            x + 20.0,
            y - 4.0,
            x + 26.0,
            c = escape(color)
        );
        x += width;
    }
}

fn no_data(out: &mut String) {
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#777\" font-size=\"13\">no data in this period</text>",
        (LEFT + W - RIGHT) / 2.0,
        (TOP + H - BOTTOM) / 2.0
    );
}

fn finite(v: f64) -> bool {
    v.is_finite()
}

/// Draws a line chart.
pub fn line_chart(c: &LineChart) -> String {
    let mut out = String::with_capacity(4096);
    open(&mut out, &c.title);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in &c.series {
        for &(_, y) in s.points.iter().filter(|p| finite(p.1)) {
            lo = lo.min(y);
            hi = hi.max(y);
        }
        for &(_, l, u) in s.band.iter().filter(|b| finite(b.1) && finite(b.2)) {
            lo = lo.min(l);
            hi = hi.max(u);
        }
    }
    let empty = !lo.is_finite();
    if let Some((a, b)) = c.y_range {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    if c.zero_line {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let (ticks, t0, t1) = value_ticks(lo, hi);
    let step = if ticks.len() > 1 { ticks[1] - ticks[0] } else { 1.0 };
    let xs = Scale { d0: c.x_range.0, d1: c.x_range.1, p0: LEFT, p1: W - RIGHT };
    let ys = Scale { d0: t0, d1: t1, p0: H - BOTTOM, p1: TOP };
    frame_and_axes(&mut out, xs, ys, YAxis { ticks: &ticks, step, format: c.y_format, label: &c.y_label }, c.x_range);
    if c.zero_line {
        let y = ys.at(0.0);
        let _ = write!(
            out,
            "<line x1=\"{LEFT:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#222\" stroke-dasharray=\"4 3\"/>",
            W - RIGHT
        );
    }
    if empty {
        no_data(&mut out);
    }
    for s in &c.series {
        let color = escape(&s.color);
        let band: Vec<_> = s.band.iter().filter(|b| finite(b.0) && finite(b.1) && finite(b.2)).collect();
        if band.len() >= 2 {
            let mut d = String::new();
            for (i, (x, _, u)) in band.iter().enumerate() {
                let _ = write!(d, "{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, xs.at(*x), ys.at(*u));
            }
            for (x, l, _) in band.iter().rev() {
                let _ = write!(d, "L{:.1},{:.1}", xs.at(*x), ys.at(*l));
            }
            let _ = write!(out, "<path d=\"{d}Z\" fill=\"{color}\" fill-opacity=\"0.18\" stroke=\"none\"/>");
        } else if let Some((x, l, u)) = band.first() {
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-opacity=\"0.4\" stroke-width=\"6\"/>",
                ys.at(*l),
                ys.at(*u),
                x = xs.at(*x)
            );
        }
        let pts: Vec<_> = s.points.iter().filter(|p| finite(p.0) && finite(p.1)).collect();
        if pts.len() >= 2 {
            let mut d = String::new();
            for (i, (x, y)) in pts.iter().enumerate() {
                let _ = write!(d, "{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, xs.at(*x), ys.at(*y));
            }
            let _ = write!(out, "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>");
        }
        if pts.len() <= 40 {
            for (x, y) in &pts {
                let _ =
                    write!(out, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"/>", xs.at(*x), ys.at(*y));
            }
        }
    }
    let items: Vec<(&str, &str, bool)> =
        c.series.iter().map(|s| (s.label.as_str(), s.color.as_str(), !s.band.is_empty())).collect();
    legend(&mut out, &items);
    out.push_str("</svg>");
    out
}

/// Draws a stacked area chart of shares (each bucket's layers are normalised to sum to 1;
/// a bucket with no data is left empty).
pub fn stacked_area(c: &StackedArea) -> String {
    let mut out = String::with_capacity(4096);
    open(&mut out, &c.title);
    let (ticks, t0, t1) = value_ticks(0.0, 1.0);
    let step = if ticks.len() > 1 { ticks[1] - ticks[0] } else { 0.2 };
    let xs = Scale { d0: c.x_range.0, d1: c.x_range.1, p0: LEFT, p1: W - RIGHT };
    let ys = Scale { d0: t0, d1: t1, p0: H - BOTTOM, p1: TOP };
    frame_and_axes(
        &mut out,
        xs,
        ys,
        YAxis { ticks: &ticks, step, format: ValueFormat::Percent, label: &c.y_label },
        c.x_range,
    );
    let totals: Vec<f64> =
        (0..c.starts.len()).map(|i| c.layers.iter().map(|l| l.values.get(i).copied().unwrap_or(0.0)).sum()).collect();
    if totals.iter().all(|t| *t <= 0.0) {
        no_data(&mut out);
    }
    // Each bucket is drawn as a flat step from its start to its end; consecutive buckets
    // with data join into one polygon per layer, gaps (no data) break it.
    let mut base = vec![0.0; c.starts.len()];
    for layer in &c.layers {
        let color = escape(&layer.color);
        let mut runs: Vec<Vec<usize>> = Vec::new();
        for (i, total) in totals.iter().enumerate() {
            if *total > 0.0 {
                match runs.last_mut() {
                    Some(r) if r.last() == Some(&(i.wrapping_sub(1))) => r.push(i),
                    _ => runs.push(vec![i]),
                }
            }
        }
        let top: Vec<f64> =
            (0..c.starts.len())
                .map(|i| {
                    if totals[i] > 0.0 {
                        base[i] + layer.values.get(i).copied().unwrap_or(0.0) / totals[i]
                    } else {
                        0.0
                    }
                })
                .collect();
        for run in &runs {
            let mut d = String::new();
            for (k, &i) in run.iter().enumerate() {
                let (a, b) = (c.starts[i], (c.starts[i] + c.bucket).min(c.x_range.1));
                let _ = write!(
                    d,
                    "{}{:.1},{:.1}L{:.1},{:.1}",
                    if k == 0 { "M" } else { "L" },
                    xs.at(a),
                    ys.at(top[i]),
                    xs.at(b),
                    ys.at(top[i])
                );
            }
            for &i in run.iter().rev() {
                let (a, b) = (c.starts[i], (c.starts[i] + c.bucket).min(c.x_range.1));
                let _ = write!(d, "L{:.1},{:.1}L{:.1},{:.1}", xs.at(b), ys.at(base[i]), xs.at(a), ys.at(base[i]));
            }
            let _ = write!(out, "<path d=\"{d}Z\" fill=\"{color}\" fill-opacity=\"0.85\" stroke=\"none\"/>");
        }
        base = top.iter().zip(&base).map(|(t, b)| if *t > 0.0 { *t } else { *b }).collect();
    }
    let items: Vec<(&str, &str, bool)> = c.layers.iter().map(|l| (l.label.as_str(), l.color.as_str(), false)).collect();
    legend(&mut out, &items);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        let c = LineChart {
            title: "<script>alert('x')</script> & co".into(),
            y_label: "uplift (%)".into(),
            y_format: ValueFormat::Percent,
            zero_line: true,
            y_range: None,
            x_range: (0.0, 3600.0),
            series: vec![LineSeries {
                label: "\"><img src=x onerror=alert(1)>".into(),
                color: "#0072B2".into(),
                points: vec![(0.0, 0.1), (1800.0, 0.2)],
                band: vec![(0.0, 0.0, 0.2), (1800.0, 0.1, 0.3)],
            }],
        };
        let svg = line_chart(&c);
        assert!(!svg.contains("<script>") && !svg.contains("<img"), "{svg}");
        assert!(svg.contains("&lt;script&gt;") && svg.contains("&quot;&gt;&lt;img"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn nice_ticks_cover_the_range_with_round_steps() {
        let (t, lo, hi) = value_ticks(-0.013, 0.047);
        assert!(lo <= -0.013 && hi >= 0.047);
        let step = t[1] - t[0];
        assert!((step - 0.02).abs() < 1e-12, "{t:?}");
        assert_eq!(t.len(), 5, "{t:?}");
        assert_eq!(format_tick(t[3], step, ValueFormat::Percent), "4%");
        assert_eq!(format_tick(t[3], step, ValueFormat::Number), "0.04");
        assert_eq!(format_tick(-0.0, step, ValueFormat::Number), "0.00");
        let (t, _) = time_ticks(0.0, 7.0 * 86400.0);
        assert_eq!(t.len(), 8, "one tick a day over a week");
    }

    #[test]
    fn an_empty_chart_says_so_and_still_has_axes() {
        let svg = stacked_area(&StackedArea {
            title: "Traffic allocation".into(),
            y_label: "share of exposures (%)".into(),
            x_range: (0.0, 86400.0),
            starts: vec![0.0, 3600.0],
            bucket: 3600.0,
            layers: vec![AreaLayer { label: "a".into(), color: arm_color(0).into(), values: vec![0.0, 0.0] }],
        });
        assert!(svg.contains("no data in this period"));
        assert!(svg.contains("time (UTC)") && svg.contains("share of exposures (%)"));
    }

    #[test]
    fn stacked_layers_fill_the_buckets_with_data() {
        let svg = stacked_area(&StackedArea {
            title: "t".into(),
            y_label: "share (%)".into(),
            x_range: (0.0, 7200.0),
            starts: vec![0.0, 3600.0],
            bucket: 3600.0,
            layers: vec![
                AreaLayer { label: "a".into(), color: arm_color(0).into(), values: vec![1.0, 3.0] },
                AreaLayer { label: "b".into(), color: arm_color(1).into(), values: vec![1.0, 1.0] },
            ],
        });
        assert_eq!(svg.matches("fill-opacity=\"0.85\"").count(), 2);
        assert!(!svg.contains("no data"));
    }
}
