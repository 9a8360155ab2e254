//! The result of a run: an ordered list of fields, printed as a table and
//! then as one JSON line (the last line of stdout, appended to `--output`).
//! The field groups every mode shares are here, in the order they appear.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::prepare::Prepared;
use crate::procfs;
use crate::streams::Totals;

/// An ordered list of result fields: printed as a table, then as JSON.
#[derive(Default)]
pub struct Report {
    fields: Map<String, Value>,
}

impl Report {
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.insert(key.to_owned(), value.into());
    }

    fn print(&self, title: &str) {
        println!();
        println!("== {title} ==");
        let width = self.fields.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in &self.fields {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                // One line per element (`per_server`).
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(&format!("\n  {:width$}  ", "")),
                other => other.to_string(),
            };
            println!("  {k:<width$}  {shown}");
        }
        println!("{}", Value::Object(self.fields.clone()));
    }
}

/// Print the report under `title` and append its JSON line to `output`.
pub fn emit(r: &Report, title: &str, output: Option<&PathBuf>) -> anyhow::Result<()> {
    r.print(title);
    if let Some(path) = output {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{}", Value::Object(r.fields.clone()))?;
    }
    Ok(())
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: f64) -> Value {
    json!((us / 10.0).round() / 100.0)
}

pub fn round2(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

/// A count per second, rounded (`seconds` of at least a millisecond).
pub fn per_s(count: f64, seconds: f64) -> Value {
    json!((count / seconds.max(0.001)).round())
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1] as f64)
}

/// The `p`th percentile of sorted microseconds, in ms (`null` when empty).
pub fn percentile_ms(sorted: &[u32], p: f64) -> Value {
    percentile(sorted, p).map_or(Value::Null, ms)
}

/// The largest of sorted microseconds, in ms (`null` when empty).
pub fn max_ms(sorted: &[u32]) -> Value {
    sorted.last().map_or(Value::Null, |&v| ms(v as f64))
}

pub fn latency_fields(report: &mut Report, prefix: &str, sorted: &[u32]) {
    for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
        report.set(&format!("{prefix}{name}_ms"), percentile_ms(sorted, p));
    }
    report.set(&format!("{prefix}max_ms"), max_ms(sorted));
}

/// The fields every report starts with: the mode, the deployment and the
/// accounts set-up.
pub fn base_report(p: &Prepared, mode: &str, variant: &str, threads: usize) -> Report {
    let mut r = Report::default();
    r.set("mode", mode);
    r.set("variant", variant);
    r.set(
        "url",
        p.targets
            .iter()
            .map(|t| t.url.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    if p.targets.len() > 1 || p.publish.url != p.targets[0].url {
        r.set("servers", p.targets.len());
        r.set("publish_url", p.publish.url.clone());
    }
    r.set("streams", p.common.streams);
    r.set("gzip", p.common.gzip);
    r.set("users", p.users.len());
    r.set("source_ips", p.sources.len().max(1));
    r.set("client_threads", threads);
    r.set("setup_s", round2(p.setup_s));
    r.set("accounts_cached", p.setup_stats.cached);
    r.set(
        "accounts_created",
        p.setup_stats.registered + p.setup_stats.logged_in,
    );
    if let Some(label) = &p.common.label {
        r.set("label", label.clone());
    }
    r
}

/// The client's own cost, and how busy the machine was.
pub fn client_fields(r: &mut Report, p: &Prepared, phase_cpu_start: f64) {
    let now = procfs::cpu_s("self").unwrap_or(0.0);
    r.set("client_cpu_s", round2(now - phase_cpu_start));
    r.set("client_cpu_total_s", round2(now - p.client_cpu_start));
    r.set("client_rss_kib", procfs::rss_kib("self").ok());
    r.set("elapsed_s", round2(p.started.elapsed().as_secs_f64()));
    // Other work on the machine skews every number: record how busy it was.
    r.set("loadavg_1m", procfs::loadavg_1m());
    r.set("timestamp", chrono::Utc::now().to_rfc3339());
}

/// Deliveries against what was expected, their rate and latency.
pub fn delivery_fields(
    r: &mut Report,
    t: &Totals,
    expected: u64,
    first_send_us: u64,
    last_delivery_us: u64,
) {
    r.set("expected", expected);
    r.set("deliveries", t.distinct);
    let span_s = last_delivery_us.saturating_sub(first_send_us) as f64 / 1e6;
    r.set(
        "deliveries_per_s",
        if t.distinct > 0 && span_s > 0.0 {
            json!((t.distinct as f64 / span_s).round())
        } else {
            Value::Null
        },
    );
    r.set("delivery_span_s", round2(span_s));
    // What a delivery cost on the wire (framing and any gzip included).
    r.set("wire_bytes", t.wire_bytes);
    r.set(
        "wire_bytes_per_delivery",
        (t.distinct > 0).then(|| (t.wire_bytes as f64 / t.distinct as f64).round()),
    );
    latency_fields(r, "", &t.latencies_us);
    r.set("lost", expected.saturating_sub(t.distinct));
    r.set("unexpected", t.distinct.saturating_sub(expected));
    r.set("duplicates", t.duplicates);
}

/// Cross-server latency and one line per server, for a cluster (or a
/// publish URL that is none of the stream servers).
pub fn cluster_fields(r: &mut Report, p: &Prepared, t: &Totals) {
    if p.targets.len() == 1 && !p.is_remote(0) {
        return;
    }
    let mut cross: Vec<u32> = Vec::new();
    let mut cross_deliveries = 0;
    let mut lines = Vec::new();
    for (i, s) in t.per_server.iter().enumerate() {
        let remote = p.is_remote(i);
        if remote {
            cross.extend_from_slice(&s.latencies_us);
            cross_deliveries += s.distinct;
        }
        lines.push(json!({
            "url": p.targets[i].url,
            "publishing": !remote,
            "connected": s.connected,
            "deliveries": s.distinct,
            "p50_ms": percentile_ms(&s.latencies_us, 50.0),
            "p99_ms": percentile_ms(&s.latencies_us, 99.0),
            "max_ms": max_ms(&s.latencies_us),
        }));
    }
    cross.sort_unstable();
    r.set("cross_server_deliveries", cross_deliveries);
    latency_fields(r, "cross_server_", &cross);
    r.set("per_server", Value::Array(lines));
}

/// How the streams connected and what else they saw.
pub fn stream_fields(r: &mut Report, streams_connect_s: f64, t: &Totals) {
    r.set("connected", t.connected);
    r.set("connect_failed", t.failed);
    r.set("connect_s", round2(streams_connect_s));
    r.set("connect_p99_ms", percentile_ms(&t.connect_us, 99.0));
    r.set("dropped_streams", t.dropped);
    r.set("reconnects", t.reconnects);
    r.set("sync_resets", t.resets);
    r.set("pings", t.pings);
    if !t.errors.is_empty() {
        let errors: Map<String, Value> = t
            .errors
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        r.set("stream_errors", Value::Object(errors));
    }
}

/// The server's memory: before the streams, with them, per stream, and at
/// the end of the run.
pub fn server_fields(
    r: &mut Report,
    before: Option<procfs::Sample>,
    connected_rss: Option<procfs::Sample>,
    after: Option<procfs::Sample>,
    connected: usize,
) {
    r.set("server_rss_before_kib", before.map(|s| s.rss_kib));
    r.set("server_rss_connected_kib", connected_rss.map(|s| s.rss_kib));
    r.set(
        "server_rss_per_stream_kib",
        match (before, connected_rss) {
            (Some(b), Some(a)) if connected > 0 => {
                round2((a.rss_kib as f64 - b.rss_kib as f64) / connected as f64)
            }
            _ => Value::Null,
        },
    );
    r.set("server_rss_end_kib", after.map(|s| s.rss_kib));
}

/// The server's CPU seconds between two samples.
pub fn server_cpu_field(r: &mut Report, from: Option<procfs::Sample>, to: Option<procfs::Sample>) {
    r.set(
        "server_cpu_s",
        match (from, to) {
            (Some(a), Some(b)) => round2(b.cpu_s - a.cpu_s),
            _ => Value::Null,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_in_ms() {
        let sorted: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(500_000.0));
        assert_eq!(percentile(&sorted, 90.0), Some(900_000.0));
        assert_eq!(percentile(&[7], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile_ms(&sorted, 99.0), json!(990.0));
        assert_eq!(max_ms(&[1234]), json!(1.23));
        assert_eq!(max_ms(&[]), Value::Null);
    }
}
