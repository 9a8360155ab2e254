//! `App::build` (database, migrations, hub, broker, bind) -> `port()` ->
//! `run_until_stopped(signal)`. Tests build it on port 0 with a temporary
//! database; `main` builds it from the command line.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::Keys;
use crate::config::Config;
use crate::db::{event_log, idempotency, random_hex, rooms, Backend, Db};
use crate::domain::time::now_ms;
use crate::http::{self, AppState, Shared};
use crate::push::broker::postgres::{self, PostgresBroker};
use crate::push::broker::{Broker, MemoryBroker};
use crate::push::cursor::CursorCodec;
use crate::push::{FeedContext, Hub, Presence, Publisher};

/// How long in-flight requests get to finish after a stop signal.
const DRAIN: Duration = Duration::from_secs(8);

pub struct App {
    listener: TcpListener,
    state: AppState,
    streams: StreamRuntime,
}

/// The runtime that writes lean streams (`http::fast_path`). A broadcast
/// wakes every stream at once; on the REST API's runtime those wake-ups would
/// queue ahead of every request in flight (a burst of 20 broadcasts to
/// 10,000 streams made each publish wait ~60 ms for the previous fan-out).
/// On their own threads the OS shares the cores between the two instead.
struct StreamRuntime(Option<tokio::runtime::Runtime>);

impl StreamRuntime {
    fn new(threads: usize) -> std::io::Result<Self> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("earntrack-streams")
            .enable_all()
            .build()?;
        Ok(StreamRuntime(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("present until dropped")
            .handle()
            .clone()
    }
}

impl Drop for StreamRuntime {
    /// Dropping a runtime blocks, which panics inside another runtime (where
    /// `App` lives): by now its streams have ended, so nothing is waited for.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let db = Db::connect(&config.database_url, config.db_pool).await?;
        let secret = match &config.jwt_secret {
            Some(secret) => secret.expose().to_owned(),
            // Generated once and kept in the database, so tokens outlive a
            // restart and every server of a cluster agrees.
            None => db.meta_once("jwt_secret", &random_hex(32)).await?,
        };
        let cluster = db.backend == Backend::Postgres;
        let hub = Hub::new(
            config.channel_capacity,
            config.max_streams_per_user,
            cluster,
        );
        let presence = Presence::new(hub.clone(), cluster.then(|| db.clone()));
        let mut conn = db.read.acquire().await?;
        for (room, user) in rooms::all_members(&mut conn).await? {
            hub.membership(room, user, Some(0));
        }
        drop(conn);
        // One delivery path either way: publisher -> broker -> hub(s).
        let broker: Arc<dyn Broker> = match db.backend {
            Backend::Sqlite => Arc::new(MemoryBroker::new(hub.clone())),
            Backend::Postgres => Arc::new(PostgresBroker::new(hub.clone(), db.clone())),
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
            rate_limit: crate::ratelimit::RateLimit::per_minute(config_rate),
            // A single server needs no listener; a cluster member is ready
            // only while it hears the others.
            cluster_up: Arc::new(AtomicBool::new(db_backend == Backend::Sqlite)),
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
        let tasks = spawn_background(&state);
        let router = http::router(state.clone());
        let stopping = state.shutdown.clone();
        let hub = state.hub.clone();
        let stop = async move {
            signal.await;
            tracing::info!("shutting down: closing streams and the listener");
            stopping.cancel();
            hub.close_all();
        };
        let listener = crate::net::Listener::new(listener, state.config.write_timeout());
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
        let (tasks, handles) = tasks;
        tasks.cancel();
        for handle in handles {
            let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
        }
        state.db.close().await;
        drop(streams);
        tracing::info!("stopped");
        Ok(())
    }
}

/// The accept loop (what `axum::serve` does, with hyper's HTTP/1 buffers
/// capped, and the lean path for streams). Every connection shares the one
/// router: handing axum the `Router` itself clones every route and layer
/// stack per connection, which a long-lived stream then holds (~36 KiB
/// each). `max_buf_size(8192)`, the least hyper allows, keeps the read
/// buffer from growing past 8 KiB. A plain `GET /events` on a fresh
/// connection skips hyper altogether (see `http::fast_path`).
/// On `stop`: stop accepting, drop the listener (a reconnect is refused),
/// and let every connection finish what it is doing.
async fn serve(
    mut listener: crate::net::Listener,
    runtime: tokio::runtime::Handle,
    state: AppState,
    router: axum::Router,
    stop: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(8192);
    // Shared, not cloned: every connection task holds what it captures for
    // as long as the connection lives.
    let builder = Arc::new(builder);
    let write_timeout = listener.write_timeout();
    let graceful = GracefulShutdown::new();
    let streams = tokio_util::task::TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let (state, router, builder, watcher, tracker, runtime) = (
            state.clone(),
            router.clone(),
            builder.clone(),
            graceful.watcher(),
            streams.clone(),
            runtime.clone(),
        );
        // A future is as big as its biggest state, and a stream's lives for
        // hours: the decision (peeking, the database) and hyper's connection
        // (~3 KiB) are boxed, and a lean stream gets a task of its own.
        streams.spawn(async move {
            let accepted = tokio::select! {
                accepted = Box::pin(http::fast_path::accept(&state, &tcp)) => accepted,
                // A connection that has sent nothing yet must not hold up
                // shutdown.
                _ = state.shutdown.cancelled() => return,
            };
            if let Some(stream) = accepted {
                // A task of its own, holding only the stream (this one's
                // future has room for hyper's connection as well), on the
                // streams' runtime.
                if let Ok(tcp) = tcp.into_std() {
                    tracker.spawn_on(stream.run(tcp, write_timeout), &runtime);
                }
                return;
            }
            let service = router.map_request(|req: axum::http::Request<hyper::body::Incoming>| {
                req.map(axum::body::Body::new)
            });
            let io = TokioIo::new(crate::net::WriteDeadline::new(tcp, write_timeout));
            let connection = builder
                .serve_connection(io, TowerToHyperService::new(service))
                .into_owned();
            if let Err(err) = Box::pin(watcher.watch(connection)).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    streams.close();
    graceful.shutdown().await;
    streams.wait().await;
}

/// A listening socket with a deep accept queue: after a restart every client
/// reconnects at once, and tokio's default backlog (128) would make most of
/// them wait for a SYN retry (about a second).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Presence, the cluster listener, the heartbeat ticker, the SQLite
/// checkpointer and the retention pruner; stopped by the token. The handles
/// are awaited on shutdown so presence is withdrawn before the pool closes.
fn spawn_background(state: &AppState) -> (CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
    let stop = CancellationToken::new();
    let mut handles = vec![tokio::spawn(state.presence.clone().run(stop.clone()))];
    if state.db.backend == Backend::Postgres {
        handles.push(tokio::spawn(postgres::listen(
            state.config.database_url.clone(),
            state.db.clone(),
            state.hub.clone(),
            state.cluster_up.clone(),
            stop.clone(),
        )));
    }
    let (hub, every, token) = (state.hub.clone(), state.config.heartbeat(), stop.clone());
    tokio::spawn(async move {
        // One ticker for the whole server instead of a timer per stream.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => hub.ping_all(),
            }
        }
    });
    if state.db.backend == Backend::Sqlite {
        // Often and small: a checkpoint competes with the writer for the
        // cores, and one second's worth at 1,000 writes/s (~15k pages) held
        // requests up for ~15 ms; a tenth of that is a short pause.
        let (db, token) = (state.db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => if let Err(err) = db.checkpoint().await {
                        tracing::warn!(error = %err, "WAL checkpoint failed");
                    },
                }
            }
        });
    }
    let (app, token) = (state.clone(), stop.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {
                    app.rate_limit.forget_idle();
                    if let Err(err) = prune(&app.db, &app.config).await {
                        tracing::warn!(error = %err, "pruning the event log failed");
                    }
                }
            }
        }
    });
    (stop, handles)
}

/// Streams cut per write transaction: the single writer is held for
/// milliseconds at a time, never for the whole pass.
const PRUNE_BATCH: usize = 200;

async fn prune(db: &Db, config: &Config) -> anyhow::Result<()> {
    let before = now_ms() - (config.retention_secs as i64) * 1000;
    let mut conn = db.read.acquire().await?;
    let targets =
        event_log::prune_targets(&mut conn, before, config.retention_events.max(1)).await?;
    drop(conn);
    let mut pruned = 0;
    for batch in targets.chunks(PRUNE_BATCH) {
        let mut tx = db.begin_write().await?;
        for (stream, upto) in batch {
            pruned += event_log::prune_stream(&mut tx, stream, *upto).await?;
        }
        tx.commit().await?;
    }
    let mut tx = db.begin_write().await?;
    idempotency::prune(&mut tx, now_ms() - 86_400_000).await?;
    tx.commit().await?;
    if pruned > 0 {
        tracing::info!(pruned, streams = targets.len(), "event log pruned");
    }
    Ok(())
}

/// The Prometheus recorder is process-global (the `metrics` facade has one
/// recorder); several apps in one test process share it.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                describe_metrics();
            }
            handle
        })
        .clone()
}

/// Every series exists from the start (at zero), so dashboards and alerts
/// see them before the first event, drop or stream.
fn describe_metrics() {
    use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
    describe_gauge!("earntrack_open_streams", "SSE streams open on this server");
    describe_gauge!(
        "earntrack_hub_channels",
        "users with a live channel on this server"
    );
    describe_counter!(
        "earntrack_events_published_total",
        "events committed and published, by topic"
    );
    describe_counter!(
        "earntrack_events_delivered_total",
        "event frames written to streams, by topic"
    );
    describe_counter!(
        "earntrack_events_replayed_total",
        "events read from the log for resumes and catch-ups"
    );
    describe_counter!(
        "earntrack_slow_subscriber_drops_total",
        "streams closed because they could not keep up"
    );
    describe_counter!(
        "earntrack_http_requests_total",
        "HTTP requests by method, route template and status"
    );
    describe_histogram!(
        "earntrack_http_request_duration_seconds",
        "HTTP request latency by method and route template"
    );
    gauge!("earntrack_open_streams").set(0.0);
    gauge!("earntrack_hub_channels").set(0.0);
    for topic in ["earnings", "notifications", "other"] {
        counter!("earntrack_events_published_total", "topic" => topic).absolute(0);
        counter!("earntrack_events_delivered_total", "topic" => topic).absolute(0);
    }
    counter!("earntrack_events_replayed_total").absolute(0);
    counter!("earntrack_slow_subscriber_drops_total").absolute(0);
}
