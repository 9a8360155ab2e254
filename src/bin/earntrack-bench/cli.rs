//! The command line: one subcommand per mode, the flags every mode that
//! opens streams shares (`Common`), and each mode's own.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "earntrack-bench",
    version,
    about = "Load tool for EarnTrack push: idle streams, broadcast fan-out, unicast latency, plots"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Hold N streams; report the server's RSS per stream and idle CPU.
    Idle(IdleArgs),
    /// Publish broadcasts to N streams; report deliveries/s and latency.
    Fanout(FanoutArgs),
    /// Send events at a fixed rate to random single users; report latency and losses.
    Unicast(UnicastArgs),
    /// Publish to single users as fast as N publishers can; report committed events/s.
    Notify(NotifyArgs),
    /// Draw an SVG of latency and RSS per stream against N from JSON lines.
    Plot(PlotArgs),
    /// Measure how late this machine wakes a sleeping thread (no server).
    Wakeup(WakeupArgs),
}

#[derive(Args, Clone, Debug)]
pub struct Common {
    /// The deployment (plain HTTP): one server, or the servers of a cluster
    /// as a comma-separated list (users are spread over them round-robin,
    /// all streams of one user on one server). The bench connects to
    /// nothing else than these and --publish-url.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    pub url: Vec<String>,
    /// Where accounts are set up and events are published (default: the
    /// first --url). Deliveries on the other servers are cross-server.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// SSE streams to open.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Distinct users (default: one per stream). Streams are spread evenly;
    /// keep streams/users within the server's EARNTRACK_MAX_STREAMS_PER_USER.
    #[arg(long)]
    pub users: Option<usize>,
    /// The server's pid, for its RSS and CPU (same machine only); several
    /// comma-separated pids are summed (a cluster).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Source addresses the streams are spread over (default for a 127.x
    /// target: 127.0.0.1..127.0.0.8; otherwise the kernel's choice).
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Ask for gzip streams (`Accept-Encoding: gzip`) and decode them.
    #[arg(long)]
    pub gzip: bool,
    /// Streams being connected at the same time.
    #[arg(long, default_value_t = 500)]
    pub connect_concurrency: usize,
    /// Give up on streams not connected after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub connect_timeout_s: u64,
    /// Worker threads of the client (default: the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Users are `<prefix>-<i>@example.com`.
    #[arg(long, default_value = "bench-user")]
    pub user_prefix: String,
    /// Password of the bench users and of the admin.
    #[arg(long, default_value = "bench-password-1")]
    pub password: String,
    /// The admin that publishes, when no --publisher-key is given (register
    /// it, then `earntrack admin grant <email>` on the server's database).
    #[arg(long, default_value = "bench-admin@example.com")]
    pub admin_email: String,
    /// Publish with this key of the server's EARNTRACK_PUBLISHER_KEYS (its
    /// own rate limit, no admin account needed).
    #[arg(long, env = "EARNTRACK_BENCH_PUBLISHER_KEY", hide_env_values = true)]
    pub publisher_key: Option<String>,
    /// JSON file of tokens per email, reused while valid (it holds bearer
    /// tokens: keep it private).
    #[arg(long)]
    pub token_cache: Option<PathBuf>,
    /// Registrations/logins at the same time (the server hashes 4 at a time).
    #[arg(long, default_value_t = 16)]
    pub setup_concurrency: usize,
    /// REST requests in flight at the same time (publishing, unicast).
    #[arg(long, default_value_t = 64)]
    pub rest_concurrency: usize,
    /// Timeout of one REST request, seconds.
    #[arg(long, default_value_t = 30)]
    pub request_timeout_s: u64,
    /// Seconds to wait after all streams connected before measuring.
    #[arg(long, default_value_t = 2)]
    pub settle_s: u64,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_s: u64,
    /// Hard limit of the whole run, seconds (setup included).
    #[arg(long, default_value_t = 900)]
    pub max_runtime_s: u64,
    /// Also append the JSON line to this file (for `plot`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Free text stored in the JSON line.
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds to hold the streams while measuring idle CPU.
    #[arg(long, default_value_t = 30)]
    pub hold_s: u64,
}

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Broadcasts to publish.
    #[arg(long, default_value_t = 20)]
    pub events: u32,
    /// One broadcast every this many ms; 0 = a burst, back to back.
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Publish nothing: wait for --events broadcasts of --run-id published
    /// by another bench process (several processes, one cluster).
    #[arg(long, requires = "run_id")]
    pub listen_only: bool,
    /// Measure the events of this run id (default: a random one), so that
    /// several bench processes measure the same broadcasts.
    #[arg(long)]
    pub run_id: Option<u64>,
    /// Create this file once the streams are connected (so a script can
    /// start the publishing process when every listener is ready).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// `POST /api/admin/events` with `{"user": id}`.
    AdminEvent,
    /// `POST /api/earnings` as the user (measures the `earnings:new` frame).
    Earnings,
}

#[derive(Args, Debug)]
pub struct UnicastArgs {
    #[command(flatten)]
    pub common: Common,
    /// Events per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending (events = rate × duration unless --events).
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Events to send (overrides rate × duration).
    #[arg(long)]
    pub events: Option<u32>,
    #[arg(long, value_enum, default_value_t = Via::AdminEvent)]
    pub via: Via,
    /// Send only to users whose streams are on a server other than
    /// --publish-url (a cluster: cross-server latency only).
    #[arg(long)]
    pub remote_only: bool,
}

#[derive(Args, Debug)]
pub struct NotifyArgs {
    #[command(flatten)]
    pub common: Common,
    /// Publishers, each sending its next event as soon as the previous one
    /// was answered; spread round-robin over the --url servers.
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// What each publisher sends: admin events (one event each), or REST
    /// earnings as their users (two events each: `earnings:new` and its
    /// `notification`; `committed` counts requests).
    #[arg(long, value_enum, default_value_t = Via::AdminEvent)]
    pub via: Via,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// JSON lines written by runs (`--output`), one run per line; other
    /// lines are skipped.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// The SVG to write.
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value = "EarnTrack push under load")]
    pub title: String,
}

#[derive(Args, Clone, Debug)]
pub struct WakeupArgs {
    /// Sleeps of `--sleep-us` each, timed one by one.
    #[arg(long, default_value_t = 6000,
          value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    pub samples: u32,
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub sleep_us: u64,
    /// A label for the JSON line.
    #[arg(long)]
    pub label: Option<String>,
    /// Append the JSON line to this file too.
    #[arg(long)]
    pub output: Option<PathBuf>,
}
