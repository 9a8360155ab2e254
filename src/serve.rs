//! The accept loop: each connection goes to the lean stream path
//! (`http::fast_path`) or to hyper and the router, and lean streams run on a
//! runtime of their own (`StreamRuntime`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::http::{self, AppState};
use crate::net::{ConnectionCaps, Listener, WriteDeadline};

/// The runtime that writes lean streams (`http::fast_path`). A broadcast
/// wakes every stream at once; on the REST API's runtime those wake-ups would
/// queue ahead of every request in flight (a burst of 20 broadcasts to
/// 10,000 streams made each publish wait ~60 ms for the previous fan-out).
/// On their own threads the OS shares the cores between the two instead.
pub struct StreamRuntime(Option<tokio::runtime::Runtime>);

impl StreamRuntime {
    pub fn new(threads: usize) -> std::io::Result<Self> {
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

    pub fn handle(&self) -> tokio::runtime::Handle {
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

/// The accept loop (what `axum::serve` does, with hyper's HTTP/1 buffers
/// capped, a head timeout on both paths, caps on open connections in all
/// and per source address, and the lean path for streams). Every connection shares the one
/// router: handing axum the `Router` itself clones every route and layer
/// stack per connection, which a long-lived stream then holds (~36 KiB
/// each). `max_buf_size(8192)`, the least hyper allows, keeps the read
/// buffer from growing past 8 KiB. A plain `GET /events` on a fresh
/// connection skips hyper altogether (see `http::fast_path`).
/// On `stop`: stop accepting, drop the listener (a reconnect is refused),
/// and let every connection finish what it is doing.
pub async fn serve(
    mut listener: Listener,
    runtime: tokio::runtime::Handle,
    state: AppState,
    router: axum::Router,
    stop: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    // HTTP/1 only: streams are HTTP/1.1 (or 1.0) everywhere this server is
    // meant to run, and an HTTP/2 client that withholds WINDOW_UPDATE would
    // stall a stream where the write deadline never sees it.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(8192)
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.head_timeout());
    // Shared, not cloned: every connection task holds what it captures for
    // as long as the connection lives.
    let builder = Arc::new(builder);
    let caps = ConnectionCaps::new(
        state.config.max_connections,
        state.config.max_connections_per_ip,
    );
    let head_timeout = state.config.head_timeout();
    let write_timeout = listener.write_timeout();
    let graceful = GracefulShutdown::new();
    let streams = tokio_util::task::TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        // Over a cap: closed at once, nothing read.
        let Ok(permit) = caps.admit(peer.ip()) else {
            continue;
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
                // A socket that sends no complete head in time is closed.
                accepted = tokio::time::timeout(head_timeout, Box::pin(http::fast_path::accept(&state, &tcp))) => {
                    match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => return,
                    }
                }
                // A connection that has sent nothing yet must not hold up
                // shutdown.
                _ = state.shutdown.cancelled() => return,
            };
            if let Some(stream) = accepted {
                // A task of its own, holding only the stream and its place
                // under the caps (this one's future has room for hyper's
                // connection as well), on the streams' runtime.
                if let Ok(tcp) = tcp.into_std() {
                    tracker.spawn_on(stream.run(tcp, write_timeout, permit), &runtime);
                }
                return;
            }
            let service = router.map_request(move |req: axum::http::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                // The source address, for the per-address auth throttle.
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                req
            });
            let io = TokioIo::new(WriteDeadline::new(tcp, write_timeout));
            let connection = builder.serve_connection(io, TowerToHyperService::new(service));
            if let Err(err) = Box::pin(watcher.watch(connection)).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
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
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
