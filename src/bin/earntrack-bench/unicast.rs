//! `unicast`: send events at a fixed rate to random single users (admin
//! events, or real `POST /api/earnings` as the user) and measure
//! write-to-delivery latency and lost events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::accounts::Account;
use crate::cli::{UnicastArgs, Via};
use crate::http::{Request, Rest};
use crate::now_us;
use crate::prepare::{prepare, Prepared};
use crate::procfs;
use crate::publish::{admin_event_body, earning_body, wait_in_flight, Sent};
use crate::report::{
    base_report, client_fields, cluster_fields, delivery_fields, emit, per_s, server_cpu_field,
    server_fields, stream_fields,
};
use crate::sse;
use crate::streams::{self, drain, Opened, Streams};

pub async fn run(a: UnicastArgs, run: u64, threads: usize) -> anyhow::Result<()> {
    let events = events_to_send(&a)?;
    let via_earnings = a.via == Via::Earnings;
    let p = prepare(&a.common, !via_earnings, via_earnings).await?;
    let measured = if via_earnings {
        "earnings:new"
    } else {
        "bench:unicast"
    };
    let Opened {
        streams,
        before,
        connected_rss,
    } = streams::open_and_settle(&p, measured, run).await?;
    let targets = receiving_users(&p, &streams, a.remote_only)?;
    let variant = variant(&a);
    eprintln!(
        "sending {events} events at {}/s via {variant} to {} users",
        a.rate,
        targets.len()
    );
    let client_cpu0 = procfs::cpu_s("self").unwrap_or(0.0);
    let server_cpu0 = p.server();
    let sender = Arc::new(Sender::new(&p, streams.shared.clone(), run));
    let first_send_us = now_us();
    let (issued, send_s, schedule) = send_at_rate(&p, a.rate, &sender, &targets, events).await;
    let expected = sender.expected.load(Ordering::Relaxed);
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
    let mut r = base_report(&p, "unicast", variant, threads);
    r.set("rate", a.rate);
    r.set("events", issued);
    r.set("sent_per_s", per_s(issued as f64, send_s));
    schedule.fields(&mut r, issued);
    client_fields(&mut r, &p, client_cpu0);
    let totals = streams::close(streams).await;
    delivery_fields(&mut r, &totals, expected, first_send_us, last_delivery_us);
    cluster_fields(&mut r, &p, &totals);
    r.set("drained", drained);
    let mut sent = std::mem::take(&mut *sender.sent.lock().unwrap_or_else(|p| p.into_inner()));
    sent.fields(&mut r);
    stream_fields(&mut r, connect_s, &totals);
    server_fields(&mut r, before, connected_rss, after, totals.connected);
    server_cpu_field(&mut r, server_cpu0, after);
    emit(&r, "unicast", p.common.output.as_ref())
}

/// The events to send: `--events`, or rate × duration.
fn events_to_send(a: &UnicastArgs) -> anyhow::Result<u32> {
    if !(a.rate > 0.0 && a.rate <= 100_000.0) {
        bail!("--rate must be above 0 and at most 100000");
    }
    let events = a
        .events
        .unwrap_or((a.rate * a.duration_s as f64).round() as u32);
    if events == 0 || events > 1_000_000 {
        bail!("events (rate × duration or --events) must be 1 to 1000000");
    }
    Ok(events)
}

fn variant(a: &UnicastArgs) -> &'static str {
    match (a.via, a.remote_only) {
        (Via::AdminEvent, false) => "admin-event",
        (Via::AdminEvent, true) => "admin-event, remote users",
        (Via::Earnings, false) => "earnings",
        (Via::Earnings, true) => "earnings, remote users",
    }
}

/// The users events go to: those with a connected stream (with
/// `remote_only`, on a server other than the publishing one).
fn receiving_users(
    p: &Prepared,
    streams: &Streams,
    remote_only: bool,
) -> anyhow::Result<Vec<usize>> {
    if remote_only && p.users.len() < p.targets.len() {
        bail!("--remote-only needs at least as many --users as servers");
    }
    let targets: Vec<usize> = (0..p.users.len())
        .filter(|&u| streams.shared.user_streams[u].load(Ordering::Relaxed) > 0)
        .filter(|&u| !remote_only || p.is_remote(streams.user_server[u]))
        .collect();
    if targets.is_empty() {
        bail!(if remote_only {
            "no user has a connected stream on a server other than --publish-url"
        } else {
            "no user has a connected stream"
        });
    }
    Ok(targets)
}

/// Send `events` events at `rate` per second, each to a random one of
/// `targets`, with at most `--rest-concurrency` in flight (a late answer
/// delays the next sends rather than piling up), until the deadline. The
/// events issued, the seconds sending took, once the requests in flight
/// were answered, and how far the sends fell behind their schedule.
async fn send_at_rate(
    p: &Prepared,
    rate: f64,
    sender: &Arc<Sender>,
    targets: &[usize],
    events: u32,
) -> (u32, f64, Schedule) {
    let concurrency = p.common.rest_concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut issued = 0u32;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut schedule = Schedule::default();
    for seq in 0..events {
        let at = started + Duration::from_secs_f64(seq as f64 / rate);
        if at > p.deadline {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let Ok(Ok(permit)) =
            tokio::time::timeout_at(p.deadline.into(), permits.clone().acquire_owned()).await
        else {
            break;
        };
        schedule.sent(at);
        let user = targets[rng.gen_range(0..targets.len())];
        let sender = sender.clone();
        issued += 1;
        tokio::spawn(async move {
            sender.send(user, seq).await;
            drop(permit);
        });
    }
    let send_s = started.elapsed().as_secs_f64();
    wait_in_flight(
        &permits,
        concurrency,
        p.common.request_timeout_s,
        p.deadline,
    )
    .await;
    (issued, send_s, schedule)
}

/// How late the sends left against their schedule. A server that cannot
/// keep up with `--rate` keeps `--rest-concurrency` requests in flight, so
/// each later send waits for one to end, and latencies measured from the
/// actual send no longer show that wait (coordinated omission). Such a
/// run says so: `rate_kept` false, and a warning.
#[derive(Default)]
struct Schedule {
    /// Sends that left more than `LATE` after their time.
    late: u32,
    max_lag: Duration,
}

/// Past tokio's timer resolution (1 ms) and a busy box's wake-up.
const LATE: Duration = Duration::from_millis(5);

impl Schedule {
    /// A send due at `at` leaves now.
    fn sent(&mut self, at: Instant) {
        let lag = Instant::now().saturating_duration_since(at);
        self.max_lag = self.max_lag.max(lag);
        self.late += u32::from(lag > LATE);
    }

    /// The rate counts as kept when at most 1% of the sends were late.
    fn fields(&self, r: &mut crate::report::Report, issued: u32) {
        let kept = u64::from(self.late) * 100 <= u64::from(issued);
        if !kept {
            eprintln!(
                "warning: the server did not keep up with the rate: {} of {issued} sends left over {} ms late (at most {:.0} ms); latencies are from each actual send",
                self.late,
                LATE.as_millis(),
                self.max_lag.as_secs_f64() * 1e3
            );
        }
        r.set("rate_kept", kept);
        r.set("sends_late", self.late);
        r.set(
            "schedule_lag_max_ms",
            (self.max_lag.as_secs_f64() * 1e5).round() / 100.0,
        );
    }
}

/// What every request task of a run shares.
struct Sender {
    rest: Arc<Rest>,
    shared: Arc<sse::Shared>,
    users: Vec<Account>,
    /// Admin events when set; otherwise earnings, as the user.
    admin_token: Option<Arc<str>>,
    /// The earnings' date: today.
    date: String,
    run: u64,
    /// Deliveries expected: the streams of the user of every accepted event.
    expected: AtomicU64,
    sent: Mutex<Sent>,
}

impl Sender {
    fn new(p: &Prepared, shared: Arc<sse::Shared>, run: u64) -> Sender {
        Sender {
            rest: p.rest.clone(),
            shared,
            users: p.users.clone(),
            admin_token: p.admin.as_ref().map(|a| a.token.clone()),
            date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
            run,
            expected: AtomicU64::new(0),
            sent: Mutex::new(Sent::default()),
        }
    }

    /// Send event `seq` to `user` and count its outcome.
    async fn send(&self, user: usize, seq: u32) {
        let account = &self.users[user];
        let receivers = self.shared.user_streams[user].load(Ordering::Relaxed) as u64;
        let (path, token, ok_status) = match &self.admin_token {
            Some(token) => ("/api/admin/events", token, 202),
            None => ("/api/earnings", &account.token, 201),
        };
        let req = Request {
            method: "POST",
            path,
            token: Some(token),
        };
        let mut sent_us = 0;
        let result = self
            .rest
            .send(req, || {
                sent_us = now_us();
                Some(self.body(account, seq, sent_us))
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
        }
    }

    /// The admin event, or the earning whose notes carry the bench's
    /// timestamp (`sent_us`), sequence number and run id.
    fn body(&self, account: &Account, seq: u32, sent_us: u64) -> Vec<u8> {
        if self.admin_token.is_some() {
            return admin_event_body(
                json!({ "user": account.id }),
                "bench:unicast",
                self.run,
                seq,
            );
        }
        earning_body(account, &self.date, self.run, seq, sent_us)
    }
}
