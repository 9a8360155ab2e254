//! `notify`: N publishers send admin events to single users back to back
//! for D seconds, through every server, and measure committed events/s (the
//! write ceiling) and their delivery latency.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::accounts::Account;
use crate::cli::{NotifyArgs, Via};
use crate::http::{Request, Rest};
use crate::now_us;
use crate::prepare::{prepare, Prepared};
use crate::procfs;
use crate::publish::{admin_event_body, earning_body, Sent};
use crate::report::{
    base_report, client_fields, delivery_fields, emit, per_s, percentile_ms, round2,
    server_cpu_field, server_fields, stream_fields, Report,
};
use crate::sse;
use crate::streams::{self, drain, Opened, Streams, Totals};

pub async fn run(a: NotifyArgs, run: u64, threads: usize) -> anyhow::Result<()> {
    check_args(&a)?;
    let via_earnings = a.via == Via::Earnings;
    let p = prepare(&a.common, !via_earnings, via_earnings).await?;
    let admin = match a.via {
        Via::AdminEvent => Some(p.admin.clone().context("admin account")?.token),
        Via::Earnings => None,
    };
    let measured = if via_earnings {
        "earnings:new"
    } else {
        "bench:notify"
    };
    let Opened {
        streams,
        before,
        connected_rss,
    } = streams::open_and_settle(&p, measured, run).await?;
    let servers = p.targets.len();
    // The users each server publishes to: in a cluster, those whose
    // streams are on other servers (every delivery crosses servers).
    let spread = servers > 1 && p.users.len() >= servers;
    let candidates = candidates(&p, &streams, spread)?;
    let timeout = Duration::from_secs(p.common.request_timeout_s.max(1));
    let what = if via_earnings {
        "REST earnings"
    } else {
        "admin events"
    };
    let variant = format!("{} publishers, {servers} server(s), {what}", a.publishers);
    eprintln!(
        "{} publishers sending {what} to single users for {}s through {servers} server(s)",
        a.publishers, a.duration_s
    );
    let client_cpu0 = procfs::cpu_s("self").unwrap_or(0.0);
    let server_cpu0 = p.server();
    let first_send_us = now_us();
    let publishing = Arc::new(Publishing::new(
        &p,
        &streams,
        candidates,
        admin,
        run,
        a.duration_s,
    ));
    publish_all(&p, &publishing, a.publishers, timeout).await;
    let publish_s = publishing.started.elapsed().as_secs_f64();
    let expected = publishing.expected.load(Ordering::Relaxed);
    let drained = drain(
        &streams.shared,
        expected,
        Duration::from_secs(p.common.drain_timeout_s),
        p.deadline,
    )
    .await;
    let after = p.server();
    let last_delivery_us = streams.shared.last_delivery_us.load(Ordering::Relaxed);
    let connect_s = streams.connect_s;
    let mut sent = std::mem::take(&mut *publishing.sent.lock().unwrap_or_else(|p| p.into_inner()));
    let mut r = base_report(&p, "notify", &variant, threads);
    r.set("publishers", a.publishers);
    r.set("duration_s", a.duration_s);
    r.set("via", what);
    committed_fields(&mut r, &publishing, sent.ok, a.duration_s, publish_s);
    r.set("cross_server", spread);
    client_fields(&mut r, &p, client_cpu0);
    let totals = streams::close(streams).await;
    delivery_fields(&mut r, &totals, expected, first_send_us, last_delivery_us);
    r.set("drained", drained);
    sent.fields(&mut r);
    stream_fields(&mut r, connect_s, &totals);
    server_fields(&mut r, before, connected_rss, after, totals.connected);
    server_cpu_field(&mut r, server_cpu0, after);
    if servers > 1 {
        r.set("per_server", per_server(&p, &publishing, &totals));
    }
    emit(&r, "notify", p.common.output.as_ref())
}

fn check_args(a: &NotifyArgs) -> anyhow::Result<()> {
    if a.publishers == 0 || a.publishers > 1024 {
        bail!("--publishers must be 1 to 1024");
    }
    if a.duration_s == 0 || a.duration_s > 600 {
        bail!("--duration-s must be 1 to 600");
    }
    Ok(())
}

/// Per server, the users with a connected stream that its publishers send
/// to: with `spread`, only those whose streams are on another server.
fn candidates(p: &Prepared, streams: &Streams, spread: bool) -> anyhow::Result<Vec<Vec<usize>>> {
    let mut candidates: Vec<Vec<usize>> = vec![Vec::new(); p.targets.len()];
    for u in 0..p.users.len() {
        if streams.shared.user_streams[u].load(Ordering::Relaxed) == 0 {
            continue;
        }
        for (s, c) in candidates.iter_mut().enumerate() {
            if !spread || streams.user_server[u] != s {
                c.push(u);
            }
        }
    }
    if candidates.iter().any(Vec::is_empty) {
        bail!("a server has no user with a connected stream on another server to publish to");
    }
    Ok(candidates)
}

/// What the publishers of a run share.
struct Publishing {
    users: Vec<Account>,
    shared: Arc<sse::Shared>,
    /// Per server: the users its publishers send to.
    candidates: Vec<Vec<usize>>,
    /// The admin's (admin events), or none (each user writes as themselves).
    admin: Option<Arc<str>>,
    /// Today, for the earnings' date.
    date: String,
    run: u64,
    started: Instant,
    /// No event is sent after this.
    end: Instant,
    next_seq: AtomicU32,
    /// Deliveries expected: the streams of the user of every committed event.
    expected: AtomicU64,
    sent: Mutex<Sent>,
    /// Committed events per server.
    published: Vec<AtomicU64>,
    /// Committed events per second of the run (by the time of the answer).
    seconds: Vec<AtomicU64>,
}

/// Run `publishers` publishers, spread round-robin over the servers, until
/// the end of publishing; wait for them at most one request timeout (and a
/// margin) longer.
async fn publish_all(
    p: &Prepared,
    publishing: &Arc<Publishing>,
    publishers: usize,
    timeout: Duration,
) {
    let rests: Vec<Arc<Rest>> = p
        .targets
        .iter()
        .map(|t| Arc::new(Rest::new(t.clone(), p.sources.clone(), timeout)))
        .collect();
    let tasks: Vec<JoinHandle<()>> = (0..publishers)
        .map(|j| {
            let server = j % rests.len();
            let (publishing, rest) = (publishing.clone(), rests[server].clone());
            tokio::spawn(async move { publishing.publish(server, &rest).await })
        })
        .collect();
    let wait_until = (publishing.end + timeout + Duration::from_secs(5)).min(p.deadline);
    for task in tasks {
        if tokio::time::timeout_at(wait_until.into(), task)
            .await
            .is_err()
        {
            eprintln!("warning: a publisher was still busy at the deadline");
        }
    }
}

impl Publishing {
    /// Publishing from now for `duration_s` (at most until the deadline).
    fn new(
        p: &Prepared,
        streams: &Streams,
        candidates: Vec<Vec<usize>>,
        admin: Option<Arc<str>>,
        run: u64,
        duration_s: u64,
    ) -> Publishing {
        let started = Instant::now();
        Publishing {
            users: p.users.clone(),
            shared: streams.shared.clone(),
            candidates,
            admin,
            date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
            run,
            started,
            end: (started + Duration::from_secs(duration_s)).min(p.deadline),
            next_seq: AtomicU32::new(0),
            expected: AtomicU64::new(0),
            sent: Mutex::new(Sent::default()),
            published: (0..p.targets.len()).map(|_| AtomicU64::new(0)).collect(),
            seconds: (0..=duration_s).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// One publisher: through `server`, each event as soon as the previous
    /// one was answered, to a random one of the server's candidates.
    async fn publish(&self, server: usize, rest: &Rest) {
        let mut rng = rand::rngs::StdRng::from_entropy();
        let targets = &self.candidates[server];
        while Instant::now() < self.end {
            let user = targets[rng.gen_range(0..targets.len())];
            if !self.publish_one(server, rest, user).await {
                // Never spin on errors.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Send the next event to `user` and count it; whether it was committed.
    async fn publish_one(&self, server: usize, rest: &Rest, user: usize) -> bool {
        let receivers = self.shared.user_streams[user].load(Ordering::Relaxed) as u64;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let account = &self.users[user];
        let (path, token, ok_status) = match &self.admin {
            Some(admin) => ("/api/admin/events", admin, 202),
            None => ("/api/earnings", &account.token, 201),
        };
        let req = Request {
            method: "POST",
            path,
            token: Some(token),
        };
        let mut sent_us = 0;
        let result = rest
            .send(req, || {
                sent_us = now_us();
                Some(match self.admin {
                    Some(_) => admin_event_body(
                        json!({ "user": account.id }),
                        "bench:notify",
                        self.run,
                        seq,
                    ),
                    None => earning_body(account, &self.date, self.run, seq, sent_us),
                })
            })
            .await;
        let took = now_us().saturating_sub(sent_us);
        let ok = self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(result, took, ok_status);
        if ok {
            self.expected.fetch_add(receivers, Ordering::Relaxed);
            self.published[server].fetch_add(1, Ordering::Relaxed);
            let second = (self.started.elapsed().as_secs() as usize).min(self.seconds.len() - 1);
            self.seconds[second].fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// Events sent and committed, and committed events per second: over the
/// run, and its slowest and fastest whole second.
fn committed_fields(
    r: &mut Report,
    publishing: &Publishing,
    committed: u64,
    duration_s: u64,
    publish_s: f64,
) {
    r.set("publish_s", round2(publish_s));
    r.set("events", publishing.next_seq.load(Ordering::Relaxed));
    r.set("committed", committed);
    r.set("committed_per_s", per_s(committed as f64, publish_s));
    // Whole seconds of the run only (the last one is partial).
    let full: Vec<u64> = publishing.seconds[..duration_s as usize]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    r.set("committed_per_s_min", full.iter().min().copied());
    r.set("committed_per_s_max", full.iter().max().copied());
}

/// One line per server: events committed through it, its streams, their
/// deliveries and latency.
fn per_server(p: &Prepared, publishing: &Publishing, totals: &Totals) -> Value {
    let lines = (0..p.targets.len())
        .map(|i| {
            let s = totals.per_server.get(i);
            let lat = s.map_or(&[][..], |s| &s.latencies_us[..]);
            json!({
                "url": p.targets[i].url,
                "published": publishing.published[i].load(Ordering::Relaxed),
                "connected": s.map_or(0, |s| s.connected),
                "deliveries": s.map_or(0, |s| s.distinct),
                "p50_ms": percentile_ms(lat, 50.0),
                "p99_ms": percentile_ms(lat, 99.0),
            })
        })
        .collect();
    Value::Array(lines)
}
