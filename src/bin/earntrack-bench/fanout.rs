//! `fanout`: publish broadcasts to every stream through the admin API (a
//! burst, or one every `--interval-ms`) and measure deliveries/s and
//! publish-to-delivery latency. With `--listen-only`, another bench process
//! publishes and this one only counts (several processes, one cluster).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::FanoutArgs;
use crate::http::Request;
use crate::now_us;
use crate::prepare::{prepare, Prepared};
use crate::procfs;
use crate::publish::{admin_event_body, Sent};
use crate::report::{
    base_report, client_fields, cluster_fields, delivery_fields, emit, round2, server_cpu_field,
    server_fields, stream_fields,
};
use crate::sse;
use crate::streams::{self, drain, Opened};

pub async fn run(a: FanoutArgs, run: u64, threads: usize) -> anyhow::Result<()> {
    if a.events == 0 || a.events > 100_000 {
        bail!("--events must be 1 to 100000");
    }
    let run = a.run_id.unwrap_or(run);
    let p = prepare(&a.common, !a.listen_only, false).await?;
    let Opened {
        streams,
        before,
        connected_rss,
    } = streams::open_and_settle(&p, "bench:fanout", run).await?;
    let receivers = streams.shared.connected.load(Ordering::Relaxed) as u64;
    if let Some(path) = &a.ready_file {
        std::fs::write(path, format!("{receivers}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let client_cpu0 = procfs::cpu_s("self").unwrap_or(0.0);
    let variant = variant(&a);
    announce(&a, run, receivers, &variant);
    let mut o = publish_and_drain(&p, &a, run, &streams.shared, receivers).await?;
    let connect_s = streams.connect_s;
    let mut r = base_report(&p, "fanout", &variant, threads);
    r.set("run_id", run);
    r.set("events", a.events);
    r.set("interval_ms", a.interval_ms);
    r.set("receivers", receivers);
    r.set("publish_s", o.publish_s);
    client_fields(&mut r, &p, client_cpu0);
    let totals = streams::close(streams).await;
    delivery_fields(
        &mut r,
        &totals,
        o.expected,
        o.first_send_us,
        o.last_delivery_us,
    );
    cluster_fields(&mut r, &p, &totals);
    r.set("reordered", totals.reordered);
    r.set("drained", o.drained);
    o.sent.fields(&mut r);
    stream_fields(&mut r, connect_s, &totals);
    server_fields(&mut r, before, connected_rss, o.after, totals.connected);
    server_cpu_field(&mut r, connected_rss, o.after);
    emit(&r, "fanout", p.common.output.as_ref())
}

fn announce(a: &FanoutArgs, run: u64, receivers: u64, variant: &str) {
    if a.listen_only {
        eprintln!(
            "waiting for {} broadcasts of run {run} on {receivers} streams",
            a.events
        );
    } else {
        eprintln!(
            "publishing {} broadcasts ({variant}) to {receivers} streams",
            a.events
        );
    }
}

/// What publishing measured, up to the end of the drain.
struct Outcome {
    sent: Sent,
    /// Seconds of publishing (`null` when another process published).
    publish_s: Value,
    expected: u64,
    drained: bool,
    first_send_us: u64,
    last_delivery_us: u64,
    /// The server, once drained.
    after: Option<procfs::Sample>,
}

/// Publish the broadcasts (unless another process does), then wait for
/// every stream to get every one.
async fn publish_and_drain(
    p: &Prepared,
    a: &FanoutArgs,
    run: u64,
    shared: &sse::Shared,
    receivers: u64,
) -> anyhow::Result<Outcome> {
    let mut sent = Sent::default();
    let first_send_us = now_us();
    let started = Instant::now();
    if !a.listen_only {
        broadcast(p, a, run, started, &mut sent).await?;
    }
    let publish_s = started.elapsed().as_secs_f64();
    // Another process publishes: every stream should get every event.
    let published = if a.listen_only {
        a.events as u64
    } else {
        sent.ok
    };
    let expected = published * receivers;
    let drained = drain(
        shared,
        expected,
        Duration::from_secs(p.common.drain_timeout_s),
        p.deadline,
    )
    .await;
    let after = p.server();
    let last_delivery_us = shared.last_delivery_us.load(Ordering::Relaxed);
    Ok(Outcome {
        sent,
        publish_s: if a.listen_only {
            Value::Null
        } else {
            round2(publish_s)
        },
        expected,
        drained,
        // The other process's first event, as its `sentAt` says.
        first_send_us: if a.listen_only {
            shared.first_sent_us.load(Ordering::Relaxed)
        } else {
            first_send_us
        },
        last_delivery_us,
        after,
    })
}

/// How the broadcasts are paced, and whether this process only listens.
fn variant(a: &FanoutArgs) -> String {
    let mut variant = if a.interval_ms == 0 {
        "burst".to_owned()
    } else {
        format!("every {} ms", a.interval_ms)
    };
    if a.listen_only {
        variant.push_str(", listen only");
    }
    variant
}

/// Publish `--events` broadcasts one after the other (each waits for the
/// previous answer), on schedule when `--interval-ms` is set, until the
/// run's deadline.
async fn broadcast(
    p: &Prepared,
    a: &FanoutArgs,
    run: u64,
    started: Instant,
    sent: &mut Sent,
) -> anyhow::Result<()> {
    let admin = p.admin.as_ref().context("admin account")?;
    for seq in 0..a.events {
        if a.interval_ms > 0 {
            let at = started + Duration::from_millis(a.interval_ms * seq as u64);
            if at > p.deadline {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
        } else if Instant::now() > p.deadline {
            break;
        }
        let req = Request {
            method: "POST",
            path: "/api/admin/events",
            token: Some(&admin.token),
        };
        let mut sent_us = 0;
        let result = p
            .rest
            .send(req, || {
                sent_us = now_us();
                Some(admin_event_body(
                    json!({ "all": true }),
                    "bench:fanout",
                    run,
                    seq,
                ))
            })
            .await;
        sent.record(result, now_us().saturating_sub(sent_us), 202);
    }
    Ok(())
}
