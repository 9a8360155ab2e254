//! `App::build` (database, migrations, hub, broker, bind) -> `port()` ->
//! `run_until_stopped(signal)`. Tests build it on port 0 with a temporary
//! database; `main` builds it from the command line.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::{Keys, PublisherKeys};
use crate::config::Config;
use crate::db::{random_hex, rooms, Backend, Db};
use crate::http::{self, AppState, Shared};
use crate::jobs::Jobs;
use crate::net::Listener;
use crate::push::broker::bus::{Bus, BusBroker, Transport};
use crate::push::broker::{Broker, MemoryBroker};
use crate::push::cursor::CursorCodec;
use crate::push::{FeedContext, Hub, Presence, Publisher};
use crate::ratelimit::{AuthThrottle, PublisherRate, RateLimit};
use crate::roles;
use crate::serve::{bind, serve, StreamRuntime};
use crate::telemetry::prometheus::prometheus;

/// How long in-flight requests get to finish after a stop signal.
const DRAIN: Duration = Duration::from_secs(8);

pub struct App {
    listener: TcpListener,
    state: AppState,
    streams: StreamRuntime,
}

/// Password hashes computed at the same time (see `Shared::hash_slots`).
const HASH_SLOTS: usize = 4;

/// Shortest `JWT_SECRET` accepted (HS256 keys should be as long as the hash).
pub const MIN_SECRET_BYTES: usize = 32;

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let db = Db::connect(&config.database_url, config.db_pool).await?;
        db.start_wal().await?;
        db.writes.set_wal_max(config.sqlite_wal_max_mb << 20);
        let secret = match &config.jwt_secret {
            // A short secret can be guessed, and whoever guesses it mints
            // tokens for any user: refuse to start rather than run weakly.
            Some(secret) if secret.expose().len() < MIN_SECRET_BYTES => anyhow::bail!(
                "JWT_SECRET is {} bytes; it must be at least {MIN_SECRET_BYTES} (or leave it unset to have one \
                 generated and kept in the database)",
                secret.expose().len()
            ),
            Some(secret) => secret.expose().to_owned(),
            // Generated once and kept in the database, so tokens outlive a
            // restart and every server of a cluster agrees.
            None => db.meta_once("jwt_secret", &random_hex(32)).await?,
        };
        if let Some(short) = config
            .publisher_keys
            .iter()
            .find(|k| !k.expose().is_empty() && k.expose().len() < MIN_SECRET_BYTES)
        {
            anyhow::bail!(
                "an EARNTRACK_PUBLISHER_KEYS key is {} bytes; each must be at least {MIN_SECRET_BYTES}",
                short.expose().len()
            );
        }
        roles::grant_listed(&db, &config.admin_emails).await?;
        let cluster = db.backend == Backend::Postgres;
        let hub = Hub::new(
            config.channel_capacity,
            config.max_streams_per_user,
            cluster,
        );
        hub.set_max_polls_per_user(config.max_polls_per_user);
        let presence = Presence::new(hub.clone(), cluster.then(|| db.clone()));
        let mut conn = db.read.acquire().await?;
        for (room, user) in rooms::all_members(&mut conn).await? {
            hub.membership(room, user, Some(0));
        }
        drop(conn);
        // One delivery path either way: publisher -> broker -> hub(s).
        let bus = match db.backend {
            Backend::Postgres => {
                let transport = Transport::from_config(
                    &config.database_url,
                    config.bus_url.as_ref().map(|u| u.expose()),
                )?;
                Some(Bus::new(
                    db.clone(),
                    hub.clone(),
                    transport,
                    config.test_silent_bus,
                ))
            }
            Backend::Sqlite if config.bus_url.is_some() => anyhow::bail!(
                "EARNTRACK_BUS_URL needs a cluster: servers sharing a postgres:// DATABASE_URL"
            ),
            Backend::Sqlite => None,
        };
        let broker: Arc<dyn Broker> = match &bus {
            None => Arc::new(MemoryBroker::new(hub.clone())),
            Some(bus) => Arc::new(BusBroker::new(bus.clone())),
        };
        let publisher = Publisher::new(db.clone(), broker);
        let feeds = Arc::new(FeedContext {
            db: db.clone(),
            codec: CursorCodec::new(db.log_id.to_string()),
            replay_permits: Arc::new(Semaphore::new(config.replay_concurrency.max(1))),
            replay_max: config.replay_max,
        });
        let listener = bind(config.addr).with_context(|| format!("binding {}", config.addr))?;
        let config_rate = config.rate_limit_per_min;
        let config_keys = config.publisher_keys.clone();
        let config_publisher_rate = config.publisher_rate_per_sec;
        let config_auth = (config.auth_per_addr_per_min, config.auth_per_email_per_min);
        let db_backend = db.backend;
        let streams =
            StreamRuntime::new(config.stream_threads).context("starting the streams' runtime")?;
        let state = AppState(Arc::new(Shared {
            keys: Keys::new(secret.as_bytes(), config.token_ttl_secs),
            config,
            db,
            hub,
            presence,
            publisher,
            feeds,
            shutdown: CancellationToken::new(),
            metrics: prometheus(),
            rate_limit: RateLimit::per_minute(config_rate),
            publisher_keys: PublisherKeys::new(config_keys.iter().map(|k| k.expose())),
            publisher_rate: PublisherRate::per_second(config_publisher_rate),
            auth_throttle: AuthThrottle::per_minute(config_auth.0, config_auth.1),
            hash_slots: Semaphore::new(HASH_SLOTS),
            // A single server needs no listener; a cluster member is ready
            // only while it hears the others.
            cluster_up: Arc::new(AtomicBool::new(db_backend == Backend::Sqlite)),
            bus,
        }));
        Ok(App {
            listener,
            state,
            streams,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serve until `signal` resolves, then drain: readiness turns 503, every
    /// stream and long-poll ends at once, the listener closes (a reconnect
    /// is refused, not answered with an error EventSource would not retry),
    /// in-flight requests finish, and background tasks stop.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            state,
            streams,
        } = self;
        let jobs = Jobs::spawn(&state);
        let router = http::router(state.clone());
        let stopping = state.shutdown.clone();
        let hub = state.hub.clone();
        let stop = async move {
            signal.await;
            tracing::info!("shutting down: closing streams and the listener");
            stopping.cancel();
            hub.close_all();
        };
        let listener = Listener::new(listener, state.config.write_timeout());
        let server = serve(listener, streams.handle(), state.clone(), router, stop);
        let cancelled = state.shutdown.clone();
        let server = tokio::spawn(server);
        // Bound the drain: a request stuck past it must not keep the
        // process alive.
        let mut server = server;
        tokio::select! {
            result = &mut server => result.context("server task")?,
            _ = async { cancelled.cancelled().await; tokio::time::sleep(DRAIN).await } => {
                tracing::warn!("drain timed out; exiting with requests still open");
                server.abort();
            }
        }
        jobs.stop().await;
        state.db.close().await;
        drop(streams);
        tracing::info!("stopped");
        Ok(())
    }
}
