//! `earntrack-bench`: a load tool for an EarnTrack push deployment.
//!
//! It opens N authenticated SSE streams (users registered through the API,
//! tokens in `?access_token=`), spread over several 127.0.0.x source
//! addresses and the threads of a multi-thread runtime, then:
//!
//! - `idle`: holds them and reports the server's RSS per stream and idle CPU;
//! - `fanout`: publishes broadcasts through the admin API (a burst, or one
//!   every `--interval-ms`) and reports deliveries/s and publish-to-delivery
//!   latency;
//! - `unicast`: sends events at a fixed rate to random single users (admin
//!   events or real `POST /api/earnings`) and reports write-to-delivery
//!   latency and lost events;
//! - `notify`: N publishers send admin events to single users back to back
//!   for D seconds, through every server, and report committed events/s
//!   (the write ceiling) and their delivery latency;
//! - `plot`: draws latency and RSS per stream against N from the JSON lines
//!   of several runs, as an SVG.
//!
//! A cluster: `--url` takes a comma-separated list of servers. Users are
//! spread over them round-robin (all streams of a user on one server);
//! accounts are set up and events published through `--publish-url`
//! (default: the first `--url`). Deliveries on streams of a server other
//! than the publishing one are reported as cross-server, and each server
//! gets its own line (`per_server`).
//!
//! Every run prints a table and, as the last line of stdout, one JSON object.
//! Every loop is bounded by a count and a deadline (`--max-runtime-s`), and
//! the tool connects only to `--url` and `--publish-url`.

#[path = "earntrack-bench/accounts.rs"]
mod accounts;
#[path = "earntrack-bench/http.rs"]
mod http;
#[path = "earntrack-bench/plot.rs"]
mod plot;
#[path = "earntrack-bench/procfs.rs"]
mod procfs;
#[path = "earntrack-bench/sse.rs"]
mod sse;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::accounts::{Account, Setup, TokenCache};
use crate::http::{Request, Rest, Target};

#[derive(Parser)]
#[command(
    name = "earntrack-bench",
    version,
    about = "Load tool for EarnTrack push: idle streams, broadcast fan-out, unicast latency, plots"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hold N streams; report the server's RSS per stream and idle CPU.
    Idle(IdleArgs),
    /// Publish broadcasts to N streams; report deliveries/s and latency.
    Fanout(FanoutArgs),
    /// Send events at a fixed rate to random single users; report latency and losses.
    Unicast(UnicastArgs),
    /// Publish to single users as fast as N publishers can; report committed events/s.
    Notify(NotifyArgs),
    /// Draw an SVG of latency and RSS per stream against N from JSON lines.
    Plot(plot::PlotArgs),
}

#[derive(Args, Clone, Debug)]
struct Common {
    /// The deployment (plain HTTP): one server, or the servers of a cluster
    /// as a comma-separated list (users are spread over them round-robin,
    /// all streams of one user on one server). The bench connects to
    /// nothing else than these and --publish-url.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    url: Vec<String>,
    /// Where accounts are set up and events are published (default: the
    /// first --url). Deliveries on the other servers are cross-server.
    #[arg(long)]
    publish_url: Option<String>,
    /// SSE streams to open.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Distinct users (default: one per stream). Streams are spread evenly;
    /// keep streams/users within the server's EARNTRACK_MAX_STREAMS_PER_USER.
    #[arg(long)]
    users: Option<usize>,
    /// The server's pid, for its RSS and CPU (same machine only); several
    /// comma-separated pids are summed (a cluster).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Source addresses the streams are spread over (default for a 127.x
    /// target: 127.0.0.1..127.0.0.8; otherwise the kernel's choice).
    #[arg(long, value_delimiter = ',')]
    source_ips: Vec<IpAddr>,
    /// Streams being connected at the same time.
    #[arg(long, default_value_t = 500)]
    connect_concurrency: usize,
    /// Give up on streams not connected after this many seconds.
    #[arg(long, default_value_t = 120)]
    connect_timeout_s: u64,
    /// Worker threads of the client (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Users are `<prefix>-<i>@example.com`.
    #[arg(long, default_value = "bench-user")]
    user_prefix: String,
    /// Password of the bench users and of the admin.
    #[arg(long, default_value = "bench-password-1")]
    password: String,
    /// The admin (must be in the server's EARNTRACK_ADMIN_EMAILS).
    #[arg(long, default_value = "bench-admin@example.com")]
    admin_email: String,
    /// JSON file of tokens per email, reused while valid (it holds bearer
    /// tokens: keep it private).
    #[arg(long)]
    token_cache: Option<PathBuf>,
    /// Registrations/logins at the same time (the server hashes 4 at a time).
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
    /// REST requests in flight at the same time (publishing, unicast).
    #[arg(long, default_value_t = 64)]
    rest_concurrency: usize,
    /// Timeout of one REST request, seconds.
    #[arg(long, default_value_t = 30)]
    request_timeout_s: u64,
    /// Seconds to wait after all streams connected before measuring.
    #[arg(long, default_value_t = 2)]
    settle_s: u64,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 30)]
    drain_timeout_s: u64,
    /// Hard limit of the whole run, seconds (setup included).
    #[arg(long, default_value_t = 900)]
    max_runtime_s: u64,
    /// Also append the JSON line to this file (for `plot`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Free text stored in the JSON line.
    #[arg(long)]
    label: Option<String>,
}

#[derive(Args, Debug)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds to hold the streams while measuring idle CPU.
    #[arg(long, default_value_t = 30)]
    hold_s: u64,
}

#[derive(Args, Debug)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Broadcasts to publish.
    #[arg(long, default_value_t = 20)]
    events: u32,
    /// One broadcast every this many ms; 0 = a burst, back to back.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Publish nothing: wait for --events broadcasts of --run-id published
    /// by another bench process (several processes, one cluster).
    #[arg(long, requires = "run_id")]
    listen_only: bool,
    /// Measure the events of this run id (default: a random one), so that
    /// several bench processes measure the same broadcasts.
    #[arg(long)]
    run_id: Option<u64>,
    /// Create this file once the streams are connected (so a script can
    /// start the publishing process when every listener is ready).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Via {
    /// `POST /api/admin/events` with `{"user": id}`.
    AdminEvent,
    /// `POST /api/earnings` as the user (measures the `earnings:new` frame).
    Earnings,
}

#[derive(Args, Debug)]
struct UnicastArgs {
    #[command(flatten)]
    common: Common,
    /// Events per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of sending (events = rate × duration unless --events).
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Events to send (overrides rate × duration).
    #[arg(long)]
    events: Option<u32>,
    #[arg(long, value_enum, default_value_t = Via::AdminEvent)]
    via: Via,
    /// Send only to users whose streams are on a server other than
    /// --publish-url (a cluster: cross-server latency only).
    #[arg(long)]
    remote_only: bool,
}

#[derive(Args, Debug)]
struct NotifyArgs {
    #[command(flatten)]
    common: Common,
    /// Publishers, each sending its next event as soon as the previous one
    /// was answered; spread round-robin over the --url servers.
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.cmd {
        Cmd::Plot(args) => {
            return match plot::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Idle(a) => &a.common,
        Cmd::Fanout(a) => &a.common,
        Cmd::Unicast(a) => &a.common,
        Cmd::Notify(a) => &a.common,
    };
    let threads = common.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    // The last line of defence of "it stops by itself".
    let hard_stop = Duration::from_secs(common.max_runtime_s + 30);
    std::thread::spawn(move || {
        std::thread::sleep(hard_stop);
        eprintln!("error: --max-runtime-s exceeded; exiting");
        std::process::exit(3);
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(cli.cmd, threads)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Microseconds since the Unix epoch (the clock both ends of a measured
/// event read, on the same machine).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// An ordered list of result fields: printed as a table, then as JSON.
#[derive(Default)]
struct Report {
    fields: Map<String, Value>,
}

impl Report {
    fn set(&mut self, key: &str, value: impl Into<Value>) {
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

fn ms(us: f64) -> Value {
    json!((us / 10.0).round() / 100.0)
}

fn round2(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1] as f64)
}

fn latency_fields(report: &mut Report, prefix: &str, sorted: &[u32]) {
    for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
        report.set(
            &format!("{prefix}{name}_ms"),
            percentile(sorted, p).map_or(Value::Null, ms),
        );
    }
    report.set(
        &format!("{prefix}max_ms"),
        sorted.last().map_or(Value::Null, |&v| ms(v as f64)),
    );
}

/// Everything the modes share once the accounts exist.
struct Prepared {
    common: Common,
    /// The servers streams are opened on (one, or a cluster).
    targets: Vec<Arc<Target>>,
    /// Where accounts are set up and events published (`rest`).
    publish: Arc<Target>,
    rest: Arc<Rest>,
    sources: Vec<IpAddr>,
    users: Vec<Account>,
    admin: Option<Account>,
    deadline: Instant,
    started: Instant,
    server_pids: Vec<String>,
    client_cpu_start: f64,
    setup_s: f64,
    setup_stats: accounts::SetupStats,
}

async fn prepare(
    common: &Common,
    want_admin: bool,
    want_platform: bool,
) -> anyhow::Result<Prepared> {
    let started = Instant::now();
    let client_cpu_start = procfs::cpu_s("self").unwrap_or(0.0);
    let deadline = started + Duration::from_secs(common.max_runtime_s);
    if common.streams == 0 || common.streams > 500_000 {
        bail!("--streams must be 1 to 500000");
    }
    let users = common.users.unwrap_or(common.streams);
    if users == 0 || users > common.streams {
        bail!("--users must be 1 to --streams");
    }
    if let Some(limit) = procfs::open_files_limit() {
        let need = (common.streams + common.rest_concurrency + 64) as u64;
        if need > limit {
            bail!("{} streams need about {need} open files but this process may open {limit}: raise `ulimit -n` or lower --streams", common.streams);
        }
    }
    if common.url.is_empty() || common.url.len() > 64 {
        bail!("--url must name 1 to 64 servers");
    }
    let mut targets = Vec::with_capacity(common.url.len());
    for url in &common.url {
        targets.push(Arc::new(Target::resolve(url.trim()).await?));
    }
    let publish = match &common.publish_url {
        Some(url) => {
            let t = Target::resolve(url.trim()).await?;
            // The same server as one of --url: share its Target.
            match targets.iter().find(|x| x.url == t.url) {
                Some(x) => x.clone(),
                None => Arc::new(t),
            }
        }
        None => targets[0].clone(),
    };
    let families_differ = |ip: &IpAddr| {
        targets
            .iter()
            .chain([&publish])
            .any(|t| ip.is_ipv4() != t.addr.is_ipv4())
    };
    let sources = if !common.source_ips.is_empty() {
        if common.source_ips.iter().any(families_differ) {
            bail!("--source-ips must be of the same family as the target addresses");
        }
        common.source_ips.clone()
    } else if targets
        .iter()
        .chain([&publish])
        .all(|t| matches!(t.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()))
    {
        (1..=8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect()
    } else {
        Vec::new()
    };
    let timeout = Duration::from_secs(common.request_timeout_s.max(1));
    let rest = Arc::new(Rest::new(publish.clone(), sources.clone(), timeout));
    for target in targets.iter().chain([&publish]) {
        let health = Rest::new(target.clone(), sources.clone(), timeout)
            .get("/healthz", None)
            .await
            .with_context(|| format!("is the server running at {}?", target.url))?;
        if health.status != 200 {
            bail!("{}/healthz answered {}", target.url, health.status);
        }
    }
    for pid in &common.server_pid {
        procfs::sample(&pid.to_string())
            .with_context(|| format!("--server-pid {pid} (it must run on this machine)"))?;
    }

    // Tokens are valid on every server of a cluster: keyed by the server
    // that issued them.
    let cache = Mutex::new(TokenCache::load(
        common.token_cache.as_deref(),
        &publish.url,
    )?);
    // A cached token must outlive the run by a margin.
    let valid_until = chrono::Utc::now().timestamp() + common.max_runtime_s as i64 + 600;
    let setup = Setup {
        rest: &rest,
        password: &common.password,
        cache: &cache,
        valid_until,
        want_platform,
    };
    let emails: Vec<String> = (0..users)
        .map(|i| format!("{}-{i}@example.com", common.user_prefix))
        .collect();
    eprintln!(
        "setting up {users} users (cache: {})",
        common
            .token_cache
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string())
    );
    let setup_started = Instant::now();
    let result = accounts::setup_all(&setup, &emails, common.setup_concurrency, deadline).await;
    let admin = if want_admin && result.is_ok() {
        let no_platform = Setup {
            want_platform: false,
            ..setup
        };
        let admin = accounts::setup_all(
            &no_platform,
            std::slice::from_ref(&common.admin_email),
            1,
            deadline,
        )
        .await
        .map(|(mut a, _)| a.pop());
        Some(admin)
    } else {
        None
    };
    // Save what was paid for even when something failed.
    cache.lock().unwrap_or_else(|p| p.into_inner()).save()?;
    let (accounts, setup_stats) = result?;
    let admin = match admin {
        Some(a) => {
            let a = a?.context("admin account missing")?;
            if a.role != "admin" {
                bail!(
                    "{} is not an admin: start the server with EARNTRACK_ADMIN_EMAILS={} (and remove its stale token from the cache)",
                    a.email,
                    a.email
                );
            }
            Some(a)
        }
        None => None,
    };
    let setup_s = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "accounts ready in {setup_s:.1}s ({} cached, {} registered, {} logged in)",
        setup_stats.cached, setup_stats.registered, setup_stats.logged_in
    );
    Ok(Prepared {
        common: common.clone(),
        targets,
        publish,
        rest,
        sources,
        users: accounts,
        admin,
        deadline,
        started,
        server_pids: common.server_pid.iter().map(u32::to_string).collect(),
        client_cpu_start,
        setup_s,
        setup_stats,
    })
}

impl Prepared {
    /// The servers' RSS and CPU, summed over --server-pid (`None` when no
    /// pid was given or one of them is gone).
    fn server(&self) -> Option<procfs::Sample> {
        if self.server_pids.is_empty() {
            return None;
        }
        let mut sum = procfs::Sample::default();
        for pid in &self.server_pids {
            let s = procfs::sample(pid).ok()?;
            sum.rss_kib += s.rss_kib;
            sum.cpu_s += s.cpu_s;
        }
        Some(sum)
    }

    /// The index of the server that holds the streams of `user`. Users go
    /// round-robin over the servers, so that all streams of one user are on
    /// one server; with fewer users than servers, streams go round-robin.
    fn server_of(&self, stream: usize, user: usize) -> usize {
        let n = self.targets.len();
        if self.users.len() >= n {
            user % n
        } else {
            stream % n
        }
    }

    /// Whether a stream on server `server` is on another server than the
    /// one events are published through.
    fn is_remote(&self, server: usize) -> bool {
        self.targets[server].url != self.publish.url
    }

    fn base_report(&self, mode: &str, variant: &str, threads: usize) -> Report {
        let mut r = Report::default();
        r.set("mode", mode);
        r.set("variant", variant);
        r.set(
            "url",
            self.targets
                .iter()
                .map(|t| t.url.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        if self.targets.len() > 1 || self.publish.url != self.targets[0].url {
            r.set("servers", self.targets.len());
            r.set("publish_url", self.publish.url.clone());
        }
        r.set("streams", self.common.streams);
        r.set("users", self.users.len());
        r.set("source_ips", self.sources.len().max(1));
        r.set("client_threads", threads);
        r.set("setup_s", round2(self.setup_s));
        r.set("accounts_cached", self.setup_stats.cached);
        r.set(
            "accounts_created",
            self.setup_stats.registered + self.setup_stats.logged_in,
        );
        if let Some(label) = &self.common.label {
            r.set("label", label.clone());
        }
        r
    }
}

/// The open streams of a run.
struct Streams {
    shared: Arc<sse::Shared>,
    tasks: Vec<JoinHandle<sse::StreamResult>>,
    connect_s: f64,
    /// Server index of each user's streams (see `Prepared::server_of`).
    user_server: Vec<usize>,
}

async fn open_streams(p: &Prepared, measured: &'static str, run: u64) -> anyhow::Result<Streams> {
    let c = &p.common;
    let per_user = c.streams.div_ceil(p.users.len());
    let connect_deadline =
        (Instant::now() + Duration::from_secs(c.connect_timeout_s)).min(p.deadline);
    let shared = Arc::new(sse::Shared {
        connect_permits: Semaphore::new(c.connect_concurrency.max(1)),
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
    });
    eprintln!(
        "opening {} streams ({} users, up to {per_user} each, {} server(s), {} source addresses, {} at a time)",
        c.streams,
        p.users.len(),
        p.targets.len(),
        p.sources.len().max(1),
        c.connect_concurrency
    );
    let started = Instant::now();
    let tasks: Vec<JoinHandle<sse::StreamResult>> = (0..c.streams)
        .map(|i| {
            let user = i % p.users.len();
            let server = p.server_of(i, user);
            let spec = sse::Spec {
                target: p.targets[server].clone(),
                server,
                user,
                token: p.users[user].token.clone(),
                source: (!p.sources.is_empty()).then(|| p.sources[i % p.sources.len()]),
            };
            tokio::spawn(sse::run(shared.clone(), spec))
        })
        .collect();
    let mut last_report = Instant::now();
    loop {
        let connected = shared.connected.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if connected + failed >= c.streams || Instant::now() > connect_deadline {
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
    let connect_s = started.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    eprintln!(
        "{connected}/{} streams connected in {connect_s:.1}s",
        c.streams
    );
    if connected == 0 {
        shared.stop.cancel();
        let mut first_error: Option<String> = None;
        for t in tasks {
            if let Ok(r) = t.await {
                first_error = first_error.or(r.error);
            }
        }
        bail!(
            "no stream connected: {}",
            first_error.unwrap_or_else(|| "no error recorded".into())
        );
    }
    let user_server = (0..p.users.len()).map(|u| p.server_of(u, u)).collect();
    Ok(Streams {
        shared,
        tasks,
        connect_s,
        user_server,
    })
}

/// What the streams saw, summed.
struct Totals {
    connected: usize,
    failed: usize,
    dropped: usize,
    reconnects: u64,
    connect_us: Vec<u32>,
    latencies_us: Vec<u32>,
    distinct: u64,
    duplicates: u64,
    reordered: u64,
    pings: u64,
    other_events: u64,
    resets: u64,
    errors: BTreeMap<String, usize>,
    /// Per server (index in `--url`): connected streams, distinct
    /// deliveries, latencies (sorted).
    per_server: Vec<ServerTotals>,
}

#[derive(Default)]
struct ServerTotals {
    connected: usize,
    distinct: u64,
    latencies_us: Vec<u32>,
}

async fn close_streams(streams: Streams) -> Totals {
    streams.shared.stop.cancel();
    let mut t = Totals {
        connected: 0,
        failed: 0,
        dropped: 0,
        reconnects: 0,
        connect_us: Vec::new(),
        latencies_us: Vec::new(),
        distinct: 0,
        duplicates: 0,
        reordered: 0,
        pings: 0,
        other_events: 0,
        resets: 0,
        errors: BTreeMap::new(),
        per_server: Vec::new(),
    };
    for task in streams.tasks {
        let Ok(r) = task.await else {
            t.failed += 1;
            continue;
        };
        if t.per_server.len() <= r.server {
            t.per_server
                .resize_with(r.server + 1, ServerTotals::default);
        }
        let server = &mut t.per_server[r.server];
        if r.connected {
            server.connected += 1;
            t.connected += 1;
            t.connect_us.push(r.connect_us.min(u32::MAX as u64) as u32);
        } else {
            t.failed += 1;
        }
        t.dropped += r.dropped as usize;
        t.reconnects += r.reconnects as u64;
        t.pings += r.pings as u64;
        t.other_events += r.other_events as u64;
        t.resets += r.resets as u64;
        t.reordered += r.seqs.windows(2).filter(|w| w[1] < w[0]).count() as u64;
        let mut seqs = r.seqs;
        let all = seqs.len() as u64;
        seqs.sort_unstable();
        seqs.dedup();
        t.distinct += seqs.len() as u64;
        t.duplicates += all - seqs.len() as u64;
        server.distinct += seqs.len() as u64;
        server.latencies_us.extend_from_slice(&r.latencies_us);
        t.latencies_us.extend(r.latencies_us);
        if let Some(e) = r.error {
            let key: String = e.chars().take(160).collect();
            *t.errors.entry(key).or_default() += 1;
        }
    }
    t.latencies_us.sort_unstable();
    t.connect_us.sort_unstable();
    for s in &mut t.per_server {
        s.latencies_us.sort_unstable();
    }
    t
}

/// Cross-server latency and one line per server, for a cluster (or a
/// publish URL that is none of the stream servers).
fn cluster_fields(r: &mut Report, p: &Prepared, t: &Totals) {
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
            "p50_ms": percentile(&s.latencies_us, 50.0).map_or(Value::Null, ms),
            "p99_ms": percentile(&s.latencies_us, 99.0).map_or(Value::Null, ms),
            "max_ms": s.latencies_us.last().map_or(Value::Null, |&v| ms(v as f64)),
        }));
    }
    cross.sort_unstable();
    r.set("cross_server_deliveries", cross_deliveries);
    latency_fields(r, "cross_server_", &cross);
    r.set("per_server", Value::Array(lines));
}

fn stream_fields(r: &mut Report, streams_connect_s: f64, t: &Totals) {
    r.set("connected", t.connected);
    r.set("connect_failed", t.failed);
    r.set("connect_s", round2(streams_connect_s));
    r.set(
        "connect_p99_ms",
        percentile(&t.connect_us, 99.0).map_or(Value::Null, ms),
    );
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
fn server_fields(
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
fn server_cpu_field(r: &mut Report, from: Option<procfs::Sample>, to: Option<procfs::Sample>) {
    r.set(
        "server_cpu_s",
        match (from, to) {
            (Some(a), Some(b)) => round2(b.cpu_s - a.cpu_s),
            _ => Value::Null,
        },
    );
}

fn client_fields(r: &mut Report, p: &Prepared, phase_cpu_start: f64) {
    let now = procfs::cpu_s("self").unwrap_or(0.0);
    r.set("client_cpu_s", round2(now - phase_cpu_start));
    r.set("client_cpu_total_s", round2(now - p.client_cpu_start));
    r.set("client_rss_kib", procfs::rss_kib("self").ok());
    r.set("elapsed_s", round2(p.started.elapsed().as_secs_f64()));
    // Other work on the machine skews every number: record how busy it was.
    r.set("loadavg_1m", procfs::loadavg_1m());
    r.set("timestamp", chrono::Utc::now().to_rfc3339());
}

fn emit(r: &Report, title: &str, output: Option<&PathBuf>) -> anyhow::Result<()> {
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

async fn sleep_bounded(d: Duration, deadline: Instant) {
    let until = (Instant::now() + d).min(deadline);
    tokio::time::sleep_until(until.into()).await;
}

async fn bench(cmd: Cmd, threads: usize) -> anyhow::Result<()> {
    let run: u64 = rand::thread_rng().gen_range(1..1u64 << 52);
    match cmd {
        Cmd::Idle(a) => idle(a, run, threads).await,
        Cmd::Fanout(a) => fanout(a, run, threads).await,
        Cmd::Unicast(a) => unicast(a, run, threads).await,
        Cmd::Notify(a) => notify(a, run, threads).await,
        Cmd::Plot(_) => unreachable!("handled in main"),
    }
}

async fn idle(a: IdleArgs, run: u64, threads: usize) -> anyhow::Result<()> {
    let p = prepare(&a.common, false, false).await?;
    let before = p.server();
    let streams = open_streams(&p, "bench:none", run).await?;
    sleep_bounded(Duration::from_secs(p.common.settle_s), p.deadline).await;
    let connected_rss = p.server();
    let client_cpu0 = procfs::cpu_s("self").unwrap_or(0.0);
    let hold = Duration::from_secs(a.hold_s);
    eprintln!("holding for {}s", a.hold_s);
    let held = Instant::now();
    sleep_bounded(hold, p.deadline).await;
    let held_s = held.elapsed().as_secs_f64();
    let after = p.server();
    let dropped_during_hold = streams.shared.dropped.load(Ordering::Relaxed);
    let connect_s = streams.connect_s;
    let mut r = p.base_report("idle", "hold", threads);
    client_fields(&mut r, &p, client_cpu0);
    let totals = close_streams(streams).await;
    stream_fields(&mut r, connect_s, &totals);
    r.set("dropped_during_hold", dropped_during_hold);
    r.set("hold_s", round2(held_s));
    server_fields(&mut r, before, connected_rss, after, totals.connected);
    match (connected_rss, after) {
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
    emit(&r, "idle", p.common.output.as_ref())
}

/// Outcome of the REST calls of a run.
#[derive(Default)]
struct Sent {
    ok: u64,
    errors: BTreeMap<String, u64>,
    rest_us: Vec<u32>,
}

impl Sent {
    fn record(
        &mut self,
        result: anyhow::Result<http::Response>,
        took_us: u64,
        ok_status: u16,
    ) -> bool {
        match result {
            Ok(resp) if resp.status == ok_status => {
                self.ok += 1;
                self.rest_us.push(took_us.min(u32::MAX as u64) as u32);
                true
            }
            Ok(resp) => {
                let key = format!(
                    "status {} {}",
                    resp.status,
                    resp.error_code().unwrap_or_default()
                );
                *self.errors.entry(key).or_default() += 1;
                false
            }
            Err(e) => {
                let key: String = format!("{e:#}").chars().take(120).collect();
                *self.errors.entry(key).or_default() += 1;
                false
            }
        }
    }

    fn fields(&mut self, r: &mut Report) {
        self.rest_us.sort_unstable();
        let failed: u64 = self.errors.values().sum();
        r.set("rest_errors", failed);
        r.set(
            "rest_p50_ms",
            percentile(&self.rest_us, 50.0).map_or(Value::Null, ms),
        );
        r.set(
            "rest_p99_ms",
            percentile(&self.rest_us, 99.0).map_or(Value::Null, ms),
        );
        if !self.errors.is_empty() {
            let errors: Map<String, Value> = self
                .errors
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            r.set("rest_error_kinds", Value::Object(errors));
        }
    }
}

/// Wait until `expected` deliveries arrived or the drain timeout passed.
async fn drain(shared: &sse::Shared, expected: u64, timeout: Duration, deadline: Instant) -> bool {
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

fn delivery_fields(
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
    latency_fields(r, "", &t.latencies_us);
    r.set("lost", expected.saturating_sub(t.distinct));
    r.set("unexpected", t.distinct.saturating_sub(expected));
    r.set("duplicates", t.duplicates);
}

fn admin_event_body(target: Value, event: &str, run: u64, seq: u32) -> Vec<u8> {
    json!({
        "target": target,
        "event": event,
        "data": { "sentAt": now_us(), "seq": seq, "run": run },
    })
    .to_string()
    .into_bytes()
}

async fn fanout(a: FanoutArgs, run: u64, threads: usize) -> anyhow::Result<()> {
    if a.events == 0 || a.events > 100_000 {
        bail!("--events must be 1 to 100000");
    }
    let run = a.run_id.unwrap_or(run);
    let p = prepare(&a.common, !a.listen_only, false).await?;
    let admin = p.admin.clone();
    let before = p.server();
    let streams = open_streams(&p, "bench:fanout", run).await?;
    sleep_bounded(Duration::from_secs(p.common.settle_s), p.deadline).await;
    let connected_rss = p.server();
    let receivers = streams.shared.connected.load(Ordering::Relaxed) as u64;
    if let Some(path) = &a.ready_file {
        std::fs::write(path, format!("{receivers}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let client_cpu0 = procfs::cpu_s("self").unwrap_or(0.0);
    let mut variant = if a.interval_ms == 0 {
        "burst".to_owned()
    } else {
        format!("every {} ms", a.interval_ms)
    };
    if a.listen_only {
        variant.push_str(", listen only");
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
    let mut sent = Sent::default();
    let first_send_us = now_us();
    let started = Instant::now();
    let to_publish = if a.listen_only { 0 } else { a.events };
    for seq in 0..to_publish {
        let admin = admin.as_ref().context("admin account")?;
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
    let publish_s = started.elapsed().as_secs_f64();
    // Another process publishes: every stream should get every event.
    let published = if a.listen_only {
        a.events as u64
    } else {
        sent.ok
    };
    let expected = published * receivers;
    let complete = drain(
        &streams.shared,
        expected,
        Duration::from_secs(p.common.drain_timeout_s),
        p.deadline,
    )
    .await;
    let after = p.server();
    let last_delivery_us = streams.shared.last_delivery_us.load(Ordering::Relaxed);
    let first_send_us = if a.listen_only {
        streams.shared.first_sent_us.load(Ordering::Relaxed)
    } else {
        first_send_us
    };
    let connect_s = streams.connect_s;
    let mut r = p.base_report("fanout", &variant, threads);
    r.set("run_id", run);
    r.set("events", a.events);
    r.set("interval_ms", a.interval_ms);
    r.set("receivers", receivers);
    r.set(
        "publish_s",
        if a.listen_only {
            Value::Null
        } else {
            round2(publish_s)
        },
    );
    client_fields(&mut r, &p, client_cpu0);
    let totals = close_streams(streams).await;
    delivery_fields(&mut r, &totals, expected, first_send_us, last_delivery_us);
    cluster_fields(&mut r, &p, &totals);
    r.set("reordered", totals.reordered);
    r.set("drained", complete);
    sent.fields(&mut r);
    stream_fields(&mut r, connect_s, &totals);
    server_fields(&mut r, before, connected_rss, after, totals.connected);
    server_cpu_field(&mut r, connected_rss, after);
    emit(&r, "fanout", p.common.output.as_ref())
}

async fn unicast(a: UnicastArgs, run: u64, threads: usize) -> anyhow::Result<()> {
    if !(a.rate > 0.0 && a.rate <= 100_000.0) {
        bail!("--rate must be above 0 and at most 100000");
    }
    let events = a
        .events
        .unwrap_or((a.rate * a.duration_s as f64).round() as u32);
    if events == 0 || events > 1_000_000 {
        bail!("events (rate × duration or --events) must be 1 to 1000000");
    }
    let via_earnings = a.via == Via::Earnings;
    let p = prepare(&a.common, !via_earnings, via_earnings).await?;
    let measured = if via_earnings {
        "earnings:new"
    } else {
        "bench:unicast"
    };
    let before = p.server();
    let streams = open_streams(&p, measured, run).await?;
    sleep_bounded(Duration::from_secs(p.common.settle_s), p.deadline).await;
    let connected_rss = p.server();
    let shared = streams.shared.clone();
    if a.remote_only && p.users.len() < p.targets.len() {
        bail!("--remote-only needs at least as many --users as servers");
    }
    let targets: Vec<usize> = (0..p.users.len())
        .filter(|&u| shared.user_streams[u].load(Ordering::Relaxed) > 0)
        .filter(|&u| !a.remote_only || p.is_remote(streams.user_server[u]))
        .collect();
    if targets.is_empty() {
        bail!(if a.remote_only {
            "no user has a connected stream on a server other than --publish-url"
        } else {
            "no user has a connected stream"
        });
    }
    let variant = match (a.via, a.remote_only) {
        (Via::AdminEvent, false) => "admin-event",
        (Via::AdminEvent, true) => "admin-event, remote users",
        (Via::Earnings, false) => "earnings",
        (Via::Earnings, true) => "earnings, remote users",
    };
    eprintln!(
        "sending {events} events at {}/s via {variant} to {} users",
        a.rate,
        targets.len()
    );
    let client_cpu0 = procfs::cpu_s("self").unwrap_or(0.0);
    let server_cpu0 = p.server();
    let concurrency = p.common.rest_concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let expected = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let users = Arc::new(p.users.clone());
    let admin_token = p.admin.as_ref().map(|a| a.token.clone());
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let first_send_us = now_us();
    let started = Instant::now();
    let mut issued = 0u32;
    let mut rng = rand::rngs::StdRng::from_entropy();
    for seq in 0..events {
        let at = started + Duration::from_secs_f64(seq as f64 / a.rate);
        if at > p.deadline {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let Ok(Ok(permit)) =
            tokio::time::timeout_at(p.deadline.into(), permits.clone().acquire_owned()).await
        else {
            break;
        };
        let user = targets[rng.gen_range(0..targets.len())];
        let (rest, shared, expected, sent, users) = (
            p.rest.clone(),
            shared.clone(),
            expected.clone(),
            sent.clone(),
            users.clone(),
        );
        let (admin_token, date) = (admin_token.clone(), date.clone());
        issued += 1;
        tokio::spawn(async move {
            let account = &users[user];
            let receivers = shared.user_streams[user].load(Ordering::Relaxed) as u64;
            let mut sent_us = 0;
            let (req, ok_status) = match &admin_token {
                Some(token) => (
                    Request {
                        method: "POST",
                        path: "/api/admin/events",
                        token: Some(token),
                    },
                    202,
                ),
                None => (
                    Request {
                        method: "POST",
                        path: "/api/earnings",
                        token: Some(&account.token),
                    },
                    201,
                ),
            };
            let admin = admin_token.is_some();
            let result = rest
                .send(req, || {
                    sent_us = now_us();
                    Some(if admin {
                        admin_event_body(json!({ "user": account.id }), "bench:unicast", run, seq)
                    } else {
                        json!({
                            "platformId": account.platform,
                            "date": date,
                            "hours": 1,
                            "amount": 12.5,
                            "notes": sse::bench_notes(run, seq, sent_us),
                        })
                        .to_string()
                        .into_bytes()
                    })
                })
                .await;
            let took = now_us().saturating_sub(sent_us);
            let ok = sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(result, took, ok_status);
            if ok {
                expected.fetch_add(receivers, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let send_s = started.elapsed().as_secs_f64();
    // Wait for the requests in flight.
    let all = tokio::time::timeout_at(
        (Instant::now() + Duration::from_secs(p.common.request_timeout_s + 5))
            .min(p.deadline)
            .into(),
        permits.acquire_many(concurrency as u32),
    )
    .await;
    if all.is_err() {
        eprintln!("warning: requests still in flight at the deadline");
    }
    let expected = expected.load(Ordering::Relaxed);
    let complete = drain(
        &shared,
        expected,
        Duration::from_secs(p.common.drain_timeout_s),
        p.deadline,
    )
    .await;
    let after = p.server();
    let last_delivery_us = shared.last_delivery_us.load(Ordering::Relaxed);
    let connect_s = streams.connect_s;
    let mut r = p.base_report("unicast", variant, threads);
    r.set("rate", a.rate);
    r.set("events", issued);
    r.set(
        "sent_per_s",
        json!((issued as f64 / send_s.max(0.001)).round()),
    );
    client_fields(&mut r, &p, client_cpu0);
    let totals = close_streams(streams).await;
    delivery_fields(&mut r, &totals, expected, first_send_us, last_delivery_us);
    cluster_fields(&mut r, &p, &totals);
    r.set("drained", complete);
    let mut sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    sent.fields(&mut r);
    stream_fields(&mut r, connect_s, &totals);
    server_fields(&mut r, before, connected_rss, after, totals.connected);
    server_cpu_field(&mut r, server_cpu0, after);
    emit(&r, "unicast", p.common.output.as_ref())
}

async fn notify(a: NotifyArgs, run: u64, threads: usize) -> anyhow::Result<()> {
    if a.publishers == 0 || a.publishers > 1024 {
        bail!("--publishers must be 1 to 1024");
    }
    if a.duration_s == 0 || a.duration_s > 600 {
        bail!("--duration-s must be 1 to 600");
    }
    let p = prepare(&a.common, true, false).await?;
    let admin = p.admin.clone().context("admin account")?;
    let before = p.server();
    let streams = open_streams(&p, "bench:notify", run).await?;
    sleep_bounded(Duration::from_secs(p.common.settle_s), p.deadline).await;
    let connected_rss = p.server();
    let shared = streams.shared.clone();
    let servers = p.targets.len();
    // The users each server publishes to: in a cluster, those whose
    // streams are on other servers (every delivery crosses servers).
    let spread = servers > 1 && p.users.len() >= servers;
    let mut candidates: Vec<Vec<usize>> = vec![Vec::new(); servers];
    for u in 0..p.users.len() {
        if shared.user_streams[u].load(Ordering::Relaxed) == 0 {
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
    let timeout = Duration::from_secs(p.common.request_timeout_s.max(1));
    let rests: Vec<Arc<Rest>> = p
        .targets
        .iter()
        .map(|t| Arc::new(Rest::new(t.clone(), p.sources.clone(), timeout)))
        .collect();
    let variant = format!("{} publishers, {servers} server(s)", a.publishers);
    eprintln!(
        "{} publishers sending admin events to single users for {}s through {servers} server(s)",
        a.publishers, a.duration_s
    );
    let client_cpu0 = procfs::cpu_s("self").unwrap_or(0.0);
    let server_cpu0 = p.server();
    let users = Arc::new(p.users.clone());
    let candidates = Arc::new(candidates);
    let next_seq = Arc::new(AtomicU32::new(0));
    let expected = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let published: Arc<Vec<AtomicU64>> =
        Arc::new((0..servers).map(|_| AtomicU64::new(0)).collect());
    // Committed events per second of the run (by the time of the answer).
    let seconds: Arc<Vec<AtomicU64>> =
        Arc::new((0..=a.duration_s).map(|_| AtomicU64::new(0)).collect());
    let first_send_us = now_us();
    let started = Instant::now();
    let end = (started + Duration::from_secs(a.duration_s)).min(p.deadline);
    let tasks: Vec<JoinHandle<()>> = (0..a.publishers)
        .map(|j| {
            let server = j % servers;
            let rest = rests[server].clone();
            let (users, candidates, shared) = (users.clone(), candidates.clone(), shared.clone());
            let (next_seq, expected, sent) = (next_seq.clone(), expected.clone(), sent.clone());
            let (published, seconds) = (published.clone(), seconds.clone());
            let token = admin.token.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::from_entropy();
                let targets = &candidates[server];
                while Instant::now() < end {
                    let user = targets[rng.gen_range(0..targets.len())];
                    let receivers = shared.user_streams[user].load(Ordering::Relaxed) as u64;
                    let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                    let req = Request {
                        method: "POST",
                        path: "/api/admin/events",
                        token: Some(&token),
                    };
                    let mut sent_us = 0;
                    let result = rest
                        .send(req, || {
                            sent_us = now_us();
                            Some(admin_event_body(
                                json!({ "user": users[user].id }),
                                "bench:notify",
                                run,
                                seq,
                            ))
                        })
                        .await;
                    let took = now_us().saturating_sub(sent_us);
                    let ok = sent
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(result, took, 202);
                    if ok {
                        expected.fetch_add(receivers, Ordering::Relaxed);
                        published[server].fetch_add(1, Ordering::Relaxed);
                        let second = (started.elapsed().as_secs() as usize).min(seconds.len() - 1);
                        seconds[second].fetch_add(1, Ordering::Relaxed);
                    } else {
                        // Never spin on errors.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    let wait_until = (end + timeout + Duration::from_secs(5)).min(p.deadline);
    for task in tasks {
        if tokio::time::timeout_at(wait_until.into(), task)
            .await
            .is_err()
        {
            eprintln!("warning: a publisher was still busy at the deadline");
        }
    }
    let publish_s = started.elapsed().as_secs_f64();
    let expected = expected.load(Ordering::Relaxed);
    let complete = drain(
        &shared,
        expected,
        Duration::from_secs(p.common.drain_timeout_s),
        p.deadline,
    )
    .await;
    let after = p.server();
    let last_delivery_us = shared.last_delivery_us.load(Ordering::Relaxed);
    let connect_s = streams.connect_s;
    let mut sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    let mut r = p.base_report("notify", &variant, threads);
    r.set("publishers", a.publishers);
    r.set("duration_s", a.duration_s);
    r.set("publish_s", round2(publish_s));
    r.set("events", next_seq.load(Ordering::Relaxed));
    r.set("committed", sent.ok);
    r.set(
        "committed_per_s",
        json!((sent.ok as f64 / publish_s.max(0.001)).round()),
    );
    // Whole seconds of the run only (the last one is partial).
    let full: Vec<u64> = seconds[..a.duration_s as usize]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    r.set("committed_per_s_min", full.iter().min().copied());
    r.set("committed_per_s_max", full.iter().max().copied());
    r.set("cross_server", spread);
    client_fields(&mut r, &p, client_cpu0);
    let totals = close_streams(streams).await;
    delivery_fields(&mut r, &totals, expected, first_send_us, last_delivery_us);
    r.set("drained", complete);
    sent.fields(&mut r);
    stream_fields(&mut r, connect_s, &totals);
    server_fields(&mut r, before, connected_rss, after, totals.connected);
    server_cpu_field(&mut r, server_cpu0, after);
    if servers > 1 {
        let lines = (0..servers)
            .map(|i| {
                let s = totals.per_server.get(i);
                let lat = s.map_or(&[][..], |s| &s.latencies_us[..]);
                json!({
                    "url": p.targets[i].url,
                    "published": published[i].load(Ordering::Relaxed),
                    "connected": s.map_or(0, |s| s.connected),
                    "deliveries": s.map_or(0, |s| s.distinct),
                    "p50_ms": percentile(lat, 50.0).map_or(Value::Null, ms),
                    "p99_ms": percentile(lat, 99.0).map_or(Value::Null, ms),
                })
            })
            .collect();
        r.set("per_server", Value::Array(lines));
    }
    emit(&r, "notify", p.common.output.as_ref())
}
