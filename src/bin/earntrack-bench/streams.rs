//! The SSE streams of a run: opened over the servers and source addresses,
//! waited on until the events sent were delivered, then closed and summed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::prepare::Prepared;
use crate::procfs::Sample;
use crate::sse;

/// The open streams of a run.
pub struct Streams {
    pub shared: Arc<sse::Shared>,
    tasks: Vec<JoinHandle<sse::StreamResult>>,
    pub connect_s: f64,
    /// Server index of each user's streams (see `Prepared::server_of`).
    pub user_server: Vec<usize>,
}

/// The streams of a run once settled, and the server's memory and CPU
/// before they opened and once they settled.
pub struct Opened {
    pub streams: Streams,
    pub before: Option<Sample>,
    pub connected_rss: Option<Sample>,
}

/// Open the streams, carrying events named `measured` of run `run`, and
/// wait `--settle-s` before measuring.
pub async fn open_and_settle(
    p: &Prepared,
    measured: &'static str,
    run: u64,
) -> anyhow::Result<Opened> {
    let before = p.server();
    let streams = open(p, measured, run).await?;
    sleep_bounded(Duration::from_secs(p.common.settle_s), p.deadline).await;
    Ok(Opened {
        streams,
        before,
        connected_rss: p.server(),
    })
}

async fn open(p: &Prepared, measured: &'static str, run: u64) -> anyhow::Result<Streams> {
    let c = &p.common;
    let connect_deadline =
        (Instant::now() + Duration::from_secs(c.connect_timeout_s)).min(p.deadline);
    let shared = Arc::new(shared_state(p, connect_deadline, measured, run));
    eprintln!(
        "opening {} streams ({} users, up to {} each, {} server(s), {} source addresses, {} at a time)",
        c.streams,
        p.users.len(),
        c.streams.div_ceil(p.users.len()),
        p.targets.len(),
        p.sources.len().max(1),
        c.connect_concurrency
    );
    let started = Instant::now();
    let tasks = spawn_streams(p, &shared);
    wait_connected(&shared, c.streams, started, connect_deadline).await;
    let connect_s = started.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    eprintln!(
        "{connected}/{} streams connected in {connect_s:.1}s",
        c.streams
    );
    if connected == 0 {
        return Err(none_connected(&shared, tasks).await);
    }
    let user_server = (0..p.users.len()).map(|u| p.server_of(u, u)).collect();
    Ok(Streams {
        shared,
        tasks,
        connect_s,
        user_server,
    })
}

fn shared_state(
    p: &Prepared,
    connect_deadline: Instant,
    measured: &'static str,
    run: u64,
) -> sse::Shared {
    sse::Shared {
        connect_permits: Semaphore::new(p.common.connect_concurrency.max(1)),
        connect_deadline,
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
        deliveries: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        first_sent_us: AtomicU64::new(u64::MAX),
        user_streams: (0..p.users.len()).map(|_| AtomicU32::new(0)).collect(),
        run,
        measured,
        stop: CancellationToken::new(),
    }
}

/// One task per stream: users round-robin, each user's streams on one
/// server, source addresses round-robin.
fn spawn_streams(p: &Prepared, shared: &Arc<sse::Shared>) -> Vec<JoinHandle<sse::StreamResult>> {
    (0..p.common.streams)
        .map(|i| {
            let user = i % p.users.len();
            let server = p.server_of(i, user);
            let spec = sse::Spec {
                gzip: p.common.gzip,
                target: p.targets[server].clone(),
                server,
                user,
                token: p.users[user].token.clone(),
                source: (!p.sources.is_empty()).then(|| p.sources[i % p.sources.len()]),
            };
            tokio::spawn(sse::run(shared.clone(), spec))
        })
        .collect()
}

/// Wait until every stream connected or gave up, or the connect deadline,
/// with progress every two seconds.
async fn wait_connected(shared: &sse::Shared, streams: usize, started: Instant, deadline: Instant) {
    let mut last_report = Instant::now();
    loop {
        let connected = shared.connected.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if connected + failed >= streams || Instant::now() > deadline {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            eprintln!(
                "  streams: {connected} connected, {failed} failed after {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stop the streams; the error that says why none connected.
async fn none_connected(
    shared: &sse::Shared,
    tasks: Vec<JoinHandle<sse::StreamResult>>,
) -> anyhow::Error {
    shared.stop.cancel();
    let mut first_error: Option<String> = None;
    for t in tasks {
        if let Ok(r) = t.await {
            first_error = first_error.or(r.error);
        }
    }
    anyhow::anyhow!(
        "no stream connected: {}",
        first_error.unwrap_or_else(|| "no error recorded".into())
    )
}

/// Wait until `expected` deliveries arrived or the drain timeout passed.
pub async fn drain(
    shared: &sse::Shared,
    expected: u64,
    timeout: Duration,
    deadline: Instant,
) -> bool {
    let until = (Instant::now() + timeout).min(deadline);
    loop {
        if shared.deliveries.load(Ordering::Relaxed) >= expected {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn sleep_bounded(d: Duration, deadline: Instant) {
    let until = (Instant::now() + d).min(deadline);
    tokio::time::sleep_until(until.into()).await;
}

/// What the streams saw, summed.
#[derive(Default)]
pub struct Totals {
    pub connected: usize,
    pub failed: usize,
    pub dropped: usize,
    pub reconnects: u64,
    pub connect_us: Vec<u32>,
    pub latencies_us: Vec<u32>,
    pub distinct: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub pings: u64,
    pub wire_bytes: u64,
    pub other_events: u64,
    pub resets: u64,
    pub errors: BTreeMap<String, usize>,
    /// Per server (index in `--url`): connected streams, distinct
    /// deliveries, latencies (sorted).
    pub per_server: Vec<ServerTotals>,
}

#[derive(Default)]
pub struct ServerTotals {
    pub connected: usize,
    pub distinct: u64,
    pub latencies_us: Vec<u32>,
}

/// Stop the streams and sum what they saw.
pub async fn close(streams: Streams) -> Totals {
    streams.shared.stop.cancel();
    let mut t = Totals::default();
    for task in streams.tasks {
        match task.await {
            Ok(r) => t.add(r),
            Err(_) => t.failed += 1,
        }
    }
    t.latencies_us.sort_unstable();
    t.connect_us.sort_unstable();
    for s in &mut t.per_server {
        s.latencies_us.sort_unstable();
    }
    t
}

impl Totals {
    fn add(&mut self, r: sse::StreamResult) {
        if self.per_server.len() <= r.server {
            self.per_server
                .resize_with(r.server + 1, ServerTotals::default);
        }
        let server = &mut self.per_server[r.server];
        if r.connected {
            server.connected += 1;
            self.connected += 1;
            self.connect_us
                .push(r.connect_us.min(u32::MAX as u64) as u32);
        } else {
            self.failed += 1;
        }
        self.dropped += r.dropped as usize;
        self.reconnects += r.reconnects as u64;
        self.pings += r.pings as u64;
        self.wire_bytes += r.wire_bytes;
        self.other_events += r.other_events as u64;
        self.resets += r.resets as u64;
        self.reordered += r.seqs.windows(2).filter(|w| w[1] < w[0]).count() as u64;
        let mut seqs = r.seqs;
        let all = seqs.len() as u64;
        seqs.sort_unstable();
        seqs.dedup();
        self.distinct += seqs.len() as u64;
        self.duplicates += all - seqs.len() as u64;
        server.distinct += seqs.len() as u64;
        server.latencies_us.extend_from_slice(&r.latencies_us);
        self.latencies_us.extend(r.latencies_us);
        if let Some(e) = r.error {
            let key: String = e.chars().take(160).collect();
            *self.errors.entry(key).or_default() += 1;
        }
    }
}
