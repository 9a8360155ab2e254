//! Configuration: every setting is a flag and an environment variable (clap),
//! and every one has a default, so `earntrack` runs with no configuration.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// A secret string whose `Debug` never shows the value, so a logged config or
/// a panic message cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "earntrack",
    version,
    about = "EarnTrack push: live earnings over Server-Sent Events"
)]
pub struct Config {
    /// Without a command, run the server.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = "EARNTRACK_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// `sqlite://path.db` (created on first run) or `postgres://…` for a cluster.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://earntrack.db")]
    pub database_url: String,

    /// HS256 signing secret. When unset, one is generated once and kept in the
    /// database, so tokens survive a restart.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Comma-separated emails made admins at start-up, if they are already
    /// registered (as `earntrack admin grant` would). Registering a listed
    /// email later gives no admin.
    #[arg(
        long,
        env = "EARNTRACK_ADMIN_EMAILS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub admin_emails: Vec<String>,

    /// Comma-separated keys (at least 32 bytes each) with which other
    /// services publish (`Authorization: Bearer <key>` on
    /// `POST /api/admin/events` and `/api/admin/notifications` only).
    #[arg(
        long,
        env = "EARNTRACK_PUBLISHER_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub publisher_keys: Vec<Secret>,

    /// Requests per second all publisher keys together may make (their own
    /// budget, never a user's); 0 turns the limit off.
    #[arg(long, env = "EARNTRACK_PUBLISHER_RATE_PER_SEC", default_value_t = 5000)]
    pub publisher_rate_per_sec: u32,

    /// Seconds between `: ping` comments on idle streams.
    #[arg(long, env = "EARNTRACK_HEARTBEAT_SECS", default_value_t = 25)]
    pub heartbeat_secs: u64,

    /// Open streams one user may hold (429 `too_many_streams` beyond).
    #[arg(long, env = "EARNTRACK_MAX_STREAMS_PER_USER", default_value_t = 16)]
    pub max_streams_per_user: usize,

    /// Token lifetime in seconds.
    #[arg(long, env = "EARNTRACK_TOKEN_TTL_SECS", default_value_t = 86_400)]
    pub token_ttl_secs: u64,

    /// Events older than this many seconds are pruned from the event log.
    #[arg(long, env = "EARNTRACK_RETENTION_SECS", default_value_t = 7 * 86_400)]
    pub retention_secs: u64,

    /// At most this many events are kept per stream (user, broadcast, room).
    #[arg(long, env = "EARNTRACK_RETENTION_EVENTS", default_value_t = 10_000)]
    pub retention_events: i64,

    /// Comma-separated origins allowed by CORS (and by the CSRF check).
    #[arg(
        long,
        env = "EARNTRACK_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub cors_origins: Vec<String>,

    /// Largest accepted request body in bytes.
    #[arg(long, env = "EARNTRACK_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Reconnect delay announced to EventSource (`retry:`), jittered ±20%.
    #[arg(long, env = "EARNTRACK_RETRY_MS", default_value_t = 3000)]
    pub retry_ms: u64,

    /// Capacity of each user's live channel; a stream further behind catches
    /// up from the event log.
    #[arg(long, env = "EARNTRACK_CHANNEL_CAPACITY", default_value_t = 16)]
    pub channel_capacity: usize,

    /// Most events one resume replays; a cursor further behind gets `sync:reset`.
    #[arg(long, env = "EARNTRACK_REPLAY_MAX", default_value_t = 10_000)]
    pub replay_max: i64,

    /// Replays (resume, catch-up) that read the log at the same time.
    #[arg(long, env = "EARNTRACK_REPLAY_CONCURRENCY", default_value_t = 32)]
    pub replay_concurrency: usize,

    /// REST requests per user per minute (429 `rate_limited` beyond); 0 = off.
    #[arg(long, env = "EARNTRACK_RATE_LIMIT_PER_MIN", default_value_t = 600)]
    pub rate_limit_per_min: u32,

    /// Seconds a connection may go without accepting written bytes before
    /// it is closed (a client that stopped reading); it then resumes.
    #[arg(long, env = "EARNTRACK_WRITE_TIMEOUT_SECS", default_value_t = 30)]
    pub write_timeout_secs: u64,

    /// Worker threads of the runtime that writes the lean streams (0: one
    /// per core). It is apart from the REST API's, so a broadcast that wakes
    /// thousands of streams never queues REST requests behind them.
    #[arg(long, env = "EARNTRACK_STREAM_THREADS", default_value_t = 0)]
    pub stream_threads: usize,

    /// Register and login requests per source address per minute (429
    /// `rate_limited` beyond); 0 turns it off.
    #[arg(long, env = "EARNTRACK_AUTH_PER_ADDR_PER_MIN", default_value_t = 120)]
    pub auth_per_addr_per_min: u32,

    /// Register and login requests per email per minute; 0 turns it off.
    #[arg(long, env = "EARNTRACK_AUTH_PER_EMAIL_PER_MIN", default_value_t = 10)]
    pub auth_per_email_per_min: u32,

    /// Milliseconds a register or login waits for a password-hashing slot
    /// before 503 `unavailable` (with `Retry-After`): the queue is bounded.
    #[arg(long, env = "EARNTRACK_HASH_WAIT_MS", default_value_t = 2000)]
    pub hash_wait_ms: u64,

    /// Long-polls one user may have waiting at once on a server (429
    /// `rate_limited` beyond); 0: no cap.
    #[arg(long, env = "EARNTRACK_MAX_POLLS_PER_USER", default_value_t = 4)]
    pub max_polls_per_user: usize,

    /// Seconds a connection may take to send a complete request head (on
    /// both the lean stream path and hyper's); then it is closed.
    #[arg(long, env = "EARNTRACK_HEAD_TIMEOUT_SECS", default_value_t = 10)]
    pub head_timeout_secs: u64,

    /// Open connections in all; more are closed at once. 0: no cap.
    #[arg(long, env = "EARNTRACK_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Open connections per source address; more are closed at once. 0: no
    /// cap.
    #[arg(long, env = "EARNTRACK_MAX_CONNECTIONS_PER_IP", default_value_t = 4096)]
    pub max_connections_per_ip: usize,

    /// Seconds between two passes of the overdue-invoice sweep (each
    /// overdue invoice's owner is warned once, by one server of a cluster).
    #[arg(long, env = "EARNTRACK_OVERDUE_SWEEP_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub overdue_sweep_secs: u64,

    /// The cluster bus: unset, servers tell each other about events with
    /// PostgreSQL NOTIFY (after commit); `redis://host:6379` uses Redis
    /// pub/sub instead, `nats://host:4222` NATS core pub/sub. PostgreSQL
    /// stays the event log either way. (It may hold a password: kept as a
    /// secret, never logged.)
    #[arg(long, env = "EARNTRACK_BUS_URL")]
    pub bus_url: Option<Secret>,

    /// Test failpoint: commit events but never announce them on the cluster
    /// bus, as a server that dies right after its commits would (the other
    /// servers must find them in the log). Never set it in production.
    #[arg(
        long,
        env = "EARNTRACK_TEST_SILENT_BUS",
        default_value_t = false,
        hide = true
    )]
    pub test_silent_bus: bool,

    /// Connections in the database pool.
    #[arg(long, env = "EARNTRACK_DB_POOL", default_value_t = 8)]
    pub db_pool: u32,

    /// SQLite: the size of the write-ahead log past which the writer
    /// checkpoints it between two batches, so that it starts over (a pause
    /// of some tens of ms for the writes queued meanwhile). Under steady
    /// writes the WAL starts over only then; whenever writes pause it
    /// starts over by itself.
    #[arg(long, env = "EARNTRACK_SQLITE_WAL_MAX_MB", default_value_t = 1024)]
    pub sqlite_wal_max_mb: u64,

    /// SQLite: how often (ms) the checkpointer copies the write-ahead log
    /// back into the database beside the writer. Each run copies the
    /// latest version of every page written since the last, so a longer
    /// interval copies a hot page once for more writes.
    #[arg(long, env = "EARNTRACK_SQLITE_CHECKPOINT_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub sqlite_checkpoint_ms: u64,

    /// Mark the auth cookie `Secure` (serve over HTTPS).
    #[arg(long, env = "EARNTRACK_COOKIE_SECURE", default_value_t = false)]
    pub cookie_secure: bool,

    /// Compress a stream with gzip when its request accepts it (each event
    /// decodable at once; see `http::gzip`). `false`: streams stay plain.
    #[arg(long, env = "EARNTRACK_STREAM_COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub stream_compression: bool,

    /// Log format: `text` or `json`. The level comes from `RUST_LOG`.
    #[arg(long, env = "EARNTRACK_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// `earntrack <command>`.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Manage admins in the database (`DATABASE_URL`); applies to the user's
    /// next request and, within a second, to their open streams on every
    /// server.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum AdminAction {
    /// Make a registered user an admin.
    Grant { email: String },
    /// Make an admin a plain user again.
    Revoke { email: String },
}

impl Config {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }

    /// The auth cookie is not `Secure` while the server listens beyond
    /// loopback: warned about at start-up.
    pub fn insecure_cookie_exposed(&self) -> bool {
        !self.cookie_secure && !self.addr.ip().is_loopback()
    }

    pub fn head_timeout(&self) -> Duration {
        Duration::from_secs(self.head_timeout_secs.max(1))
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs.max(1))
    }

    /// A configuration for tests and embedding: defaults, no environment.
    pub fn for_database(database_url: &str) -> Self {
        let mut config = Config::parse_from(["earntrack"]);
        config.database_url = database_url.to_owned();
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_cookie_is_flagged_only_beyond_loopback() {
        let mut c = Config::for_database("sqlite://x.db");
        c.addr = "127.0.0.1:8080".parse().unwrap();
        assert!(!c.insecure_cookie_exposed());
        c.addr = "[::1]:8080".parse().unwrap();
        assert!(!c.insecure_cookie_exposed());
        c.addr = "0.0.0.0:8080".parse().unwrap();
        assert!(c.insecure_cookie_exposed());
        c.cookie_secure = true;
        assert!(!c.insecure_cookie_exposed());
    }
}
