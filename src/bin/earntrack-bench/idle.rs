//! `idle`: hold N streams and measure what they cost the server at rest:
//! RSS per stream and CPU while nothing is published.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::IdleArgs;
use crate::prepare::prepare;
use crate::procfs;
use crate::report::{
    base_report, client_fields, emit, round2, server_fields, stream_fields, Report,
};
use crate::streams::{self, sleep_bounded, Opened};

pub async fn run(a: IdleArgs, run: u64, threads: usize) -> anyhow::Result<()> {
    let p = prepare(&a.common, false, false).await?;
    let Opened {
        streams,
        before,
        connected_rss,
    } = streams::open_and_settle(&p, "bench:none", run).await?;
    let client_cpu0 = procfs::cpu_s("self").unwrap_or(0.0);
    let hold = Duration::from_secs(a.hold_s);
    eprintln!("holding for {}s", a.hold_s);
    let held = Instant::now();
    sleep_bounded(hold, p.deadline).await;
    let held_s = held.elapsed().as_secs_f64();
    let after = p.server();
    let dropped_during_hold = streams.shared.dropped.load(Ordering::Relaxed);
    let connect_s = streams.connect_s;
    let mut r = base_report(&p, "idle", "hold", threads);
    client_fields(&mut r, &p, client_cpu0);
    let totals = streams::close(streams).await;
    stream_fields(&mut r, connect_s, &totals);
    r.set("dropped_during_hold", dropped_during_hold);
    r.set("hold_s", round2(held_s));
    server_fields(&mut r, before, connected_rss, after, totals.connected);
    idle_cpu_fields(&mut r, connected_rss, after, held_s);
    emit(&r, "idle", p.common.output.as_ref())
}

/// The server's CPU while holding the streams for `held_s`.
fn idle_cpu_fields(
    r: &mut Report,
    connected: Option<procfs::Sample>,
    end: Option<procfs::Sample>,
    held_s: f64,
) {
    match (connected, end) {
        (Some(c), Some(e)) => {
            let cpu = e.cpu_s - c.cpu_s;
            r.set("server_idle_cpu_s", round2(cpu));
            r.set(
                "server_idle_cpu_pct",
                round2(100.0 * cpu / held_s.max(0.001)),
            );
        }
        _ => {
            r.set("server_idle_cpu_s", Value::Null);
            r.set("server_idle_cpu_pct", Value::Null);
        }
    }
}
