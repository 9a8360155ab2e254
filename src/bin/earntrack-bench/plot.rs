//! `earntrack-bench plot`: two charts in one hand-written SVG from the JSON
//! lines of several runs — publish-to-delivery latency (p50 dashed, p99
//! solid) per mode against N streams, and the server's RSS per stream
//! against N. From `notify` runs only: committed events/s and delivery p99
//! against the number of publishers, one line per run label (less its
//! `-p<N>` suffix: the bus, or NOTIFY inside the commit).

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cli::PlotArgs;

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A line of a chart.
struct Series {
    name: String,
    dashed: bool,
    color: usize,
    /// N -> value (the latest run wins for one N).
    points: BTreeMap<u64, f64>,
}

struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
}

pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for path in &args.input {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        runs.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
                .filter(|v| v.get("mode").is_some()),
        );
    }
    if runs.is_empty() {
        bail!("no run found in the input (JSON lines with a \"mode\")");
    }
    let svg = render(&args.title, &runs);
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.output, svg)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!("wrote {} ({} runs)", args.output.display(), runs.len());
    Ok(())
}

fn streams_of(run: &Value) -> Option<u64> {
    run.get("connected")
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
        .or_else(|| run.get("streams").and_then(Value::as_u64))
}

fn series_name(run: &Value) -> String {
    let mode = run["mode"].as_str().unwrap_or("?");
    match run.get("variant").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => format!("{mode} {v}"),
        _ => mode.to_owned(),
    }
}

fn render(title: &str, runs: &[Value]) -> String {
    let charts = charts(runs);
    let rows = charts
        .iter()
        .map(|c| c.series.len().div_ceil(2))
        .max()
        .unwrap_or(0) as f64;
    let (w, h) = (1100.0, 470.0 + rows * 16.0 + 24.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" "##
    );
    let _ = write!(
        svg,
        r##"font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>
"##,
        w / 2.0,
        escape(title)
    );
    for (i, chart) in charts.iter().enumerate() {
        draw_chart(
            &mut svg,
            chart,
            i as f64 * w / 2.0,
            40.0,
            w / 2.0,
            h - 64.0,
            rows,
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
        w / 2.0,
        h - 10.0,
        escape(&note(runs))
    );
    svg.push_str("</svg>\n");
    svg
}

/// The write ceiling against publishers (`notify` runs, e.g. from
/// `bench/cluster.sh e`): committed events/s (a REST write commits two) and
/// delivery p99, one line per label.
fn ceiling_charts(runs: &[Value]) -> [Chart; 2] {
    let mut events: Vec<Series> = Vec::new();
    let mut latency: Vec<Series> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for run in runs {
        let Some(publishers) = run.get("publishers").and_then(Value::as_u64) else {
            continue;
        };
        let label = run.get("label").and_then(Value::as_str).unwrap_or("?");
        let name = match label.rsplit_once("-p") {
            Some((base, n)) if n.parse::<u64>().is_ok() => base.to_owned(),
            _ => label.to_owned(),
        };
        let color = match names.iter().position(|n| *n == name) {
            Some(i) => i,
            None => {
                names.push(name.clone());
                names.len() - 1
            }
        };
        let per_request = if run.get("via").and_then(Value::as_str) == Some("REST earnings") {
            2.0
        } else {
            1.0
        };
        if let Some(committed) = run.get("committed_per_s").and_then(Value::as_f64) {
            let y = committed * per_request;
            add(&mut events, name.clone(), false, color, publishers, y);
        }
        if let Some(p99) = run.get("p99_ms").and_then(Value::as_f64) {
            add(&mut latency, name, false, color, publishers, p99);
        }
    }
    [
        Chart {
            title: "Committed events per second".into(),
            x_label: "publishers sending back to back".into(),
            y_label: "events/s".into(),
            series: events,
        },
        Chart {
            title: "Publish-to-delivery p99".into(),
            x_label: "publishers sending back to back".into(),
            y_label: "ms".into(),
            series: latency,
        },
    ]
}

/// Latency (p99 solid, p50 dashed, one color per mode and variant) and RSS
/// per stream (one color per mode) against N.
fn charts(runs: &[Value]) -> [Chart; 2] {
    if runs.iter().all(|r| r["mode"] == "notify") {
        return ceiling_charts(runs);
    }
    let mut latency: Vec<Series> = Vec::new();
    let mut rss: Vec<Series> = Vec::new();
    let mut colors: Vec<String> = Vec::new();
    let mut color_of = |name: &str| match colors.iter().position(|c| c == name) {
        Some(i) => i,
        None => {
            colors.push(name.to_owned());
            colors.len() - 1
        }
    };
    for run in runs {
        let Some(n) = streams_of(run) else { continue };
        let name = series_name(run);
        let color = color_of(&name);
        if let Some(p99) = run.get("p99_ms").and_then(Value::as_f64) {
            add(&mut latency, format!("{name} p99"), false, color, n, p99);
        }
        if let Some(p50) = run.get("p50_ms").and_then(Value::as_f64) {
            add(&mut latency, format!("{name} p50"), true, color, n, p50);
        }
        if let Some(kib) = run.get("server_rss_per_stream_kib").and_then(Value::as_f64) {
            let mode = run["mode"].as_str().unwrap_or("?").to_owned();
            let c = color_of(&mode);
            add(&mut rss, mode, false, c, n, kib);
        }
    }
    [
        Chart {
            title: "Publish-to-delivery latency".into(),
            x_label: "streams (N)".into(),
            y_label: "ms".into(),
            series: latency,
        },
        Chart {
            title: "Server RSS per stream".into(),
            x_label: "streams (N)".into(),
            y_label: "KiB".into(),
            series: rss,
        },
    ]
}

/// Add the point (`n`, `y`) to the series `name`, new or not.
fn add(list: &mut Vec<Series>, name: String, dashed: bool, color: usize, n: u64, y: f64) {
    match list.iter_mut().find(|s| s.name == name) {
        Some(s) => {
            s.points.insert(n, y);
        }
        None => list.push(Series {
            name,
            dashed,
            color,
            points: BTreeMap::from([(n, y)]),
        }),
    }
}

/// The line under the charts: how many runs, and how busy the machine was.
fn note(runs: &[Value]) -> String {
    let loads: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.get("loadavg_1m").and_then(Value::as_f64))
        .collect();
    let mut note = format!(
        "{} runs; each point is the latest run for its N",
        runs.len()
    );
    if let (Some(lo), Some(hi)) = (
        loads.iter().copied().reduce(f64::min),
        loads.iter().copied().reduce(f64::max),
    ) {
        let _ = write!(
            note,
            "; 1-minute load average during the runs {lo:.1} to {hi:.1}"
        );
    }
    note
}

/// 1, 2 or 5 times a power of ten, at least `x`.
fn nice_step(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= x)
        .unwrap_or(10.0 * p)
}

fn label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{}", v.round() as i64)
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

/// Where a chart's plot area is, and its scales.
struct Frame {
    /// The plot area: left, top, width, height.
    px: f64,
    py: f64,
    pw: f64,
    ph: f64,
    x_step: f64,
    y_step: f64,
    /// The axes' ends: whole steps above the largest N and value.
    x_top: f64,
    y_top: f64,
}

impl Frame {
    fn sx(&self, n: f64) -> f64 {
        self.px + n / self.x_top * self.pw
    }

    fn sy(&self, v: f64) -> f64 {
        self.py + self.ph - v / self.y_top * self.ph
    }
}

fn draw_chart(svg: &mut String, chart: &Chart, x0: f64, y0: f64, w: f64, h: f64, legend_rows: f64) {
    // The legend goes under the plot, two entries a row, so it never hides
    // a point; both charts leave room for the longer legend.
    let (left, right, top, bottom) = (70.0, 20.0, 30.0, 56.0 + legend_rows * 16.0);
    let (px, py) = (x0 + left, y0 + top);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"##,
        px + pw / 2.0,
        y0 + 16.0,
        escape(&chart.title)
    );
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    for (&n, &y) in points {
        x_max = x_max.max(n as f64);
        y_max = y_max.max(y);
    }
    if chart.series.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#888">no data</text>"##,
            px + pw / 2.0,
            py + ph / 2.0
        );
        return;
    }
    let x_step = nice_step(x_max / 5.0);
    let y_step = nice_step(y_max / 5.0);
    let frame = Frame {
        px,
        py,
        pw,
        ph,
        x_step,
        y_step,
        x_top: (x_max / x_step).ceil().max(1.0) * x_step,
        y_top: (y_max / y_step).ceil().max(1.0) * y_step,
    };
    draw_grid(svg, &frame);
    draw_axes(svg, &frame, x0, &chart.x_label, &chart.y_label);
    draw_series(svg, chart, &frame);
    draw_legend(svg, chart, &frame);
}

/// Grid lines and tick labels.
fn draw_grid(svg: &mut String, f: &Frame) {
    let (px, py, pw, ph) = (f.px, f.py, f.pw, f.ph);
    let mut v = 0.0;
    while v <= f.y_top + f.y_step / 2.0 {
        let y = f.sy(v);
        let _ = write!(
            svg,
            r##"<line x1="{px}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e5e5e5"/>"##,
            px + pw
        );
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            px - 6.0,
            y + 4.0,
            label(v, f.y_step)
        );
        v += f.y_step;
    }
    let mut n = 0.0;
    while n <= f.x_top + f.x_step / 2.0 {
        let x = f.sx(n);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{py}" x2="{x:.1}" y2="{}" stroke="#f0f0f0"/>"##,
            py + ph
        );
        let _ = writeln!(
            svg,
            r##"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            py + ph + 16.0,
            label(n, f.x_step)
        );
        n += f.x_step;
    }
}

/// The plot's border and the axes' labels.
fn draw_axes(svg: &mut String, f: &Frame, x0: f64, x_label: &str, y_label: &str) {
    let (px, py, pw, ph) = (f.px, f.py, f.pw, f.ph);
    let _ = writeln!(
        svg,
        r##"<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"##,
        px + pw / 2.0,
        py + ph + 36.0,
        escape(x_label),
        x0 + 18.0,
        py + ph / 2.0,
        x0 + 18.0,
        py + ph / 2.0,
        escape(y_label)
    );
}

fn dash(s: &Series) -> &'static str {
    if s.dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    }
}

/// Lines and points.
fn draw_series(svg: &mut String, chart: &Chart, f: &Frame) {
    for s in &chart.series {
        let color = PALETTE[s.color % PALETTE.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(&n, &y)| format!("{:.1},{:.1}", f.sx(n as f64), f.sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{}/>"##,
            path.join(" "),
            dash(s)
        );
        for (&n, &y) in &s.points {
            let _ = writeln!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{}: N={n}, {y} {}</title></circle>"##,
                f.sx(n as f64),
                f.sy(y),
                escape(&s.name),
                escape(&chart.y_label)
            );
        }
    }
}

/// Legend, under the axis label.
fn draw_legend(svg: &mut String, chart: &Chart, f: &Frame) {
    for (i, s) in chart.series.iter().enumerate() {
        let color = PALETTE[s.color % PALETTE.len()];
        let x = f.px + (i % 2) as f64 * f.pw / 2.0;
        let y = f.py + f.ph + 58.0 + (i / 2) as f64 * 16.0;
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"{}/>"##,
            y - 4.0,
            x + 20.0,
            y - 4.0,
            dash(s)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{y:.1}">{}</text>"##,
            x + 26.0,
            escape(&s.name)
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(1800.0), 2000.0);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(7.0), 10.0);
    }

    #[test]
    fn renders_series_from_runs() {
        let runs: Vec<Value> = [
            r#"{"mode":"idle","variant":"hold","connected":1000,"server_rss_per_stream_kib":12.5}"#,
            r#"{"mode":"fanout","variant":"burst","connected":10000,"p50_ms":40.0,"p99_ms":90.0,"server_rss_per_stream_kib":11}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let svg = render("t <&>", &runs);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("fanout burst p99"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
