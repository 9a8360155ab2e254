//! The listening socket. Every connection hyper serves is wrapped in
//! `WriteDeadline`, which fails a write that has made no progress for the
//! configured time. That is how a client that stopped reading (a dead
//! laptop, a stalled proxy) is cut off: its stream is not polled while the
//! socket is full, so nothing inside the stream could notice. hyper then
//! drops the connection, the subscription leaves the hub, and the client
//! resumes with `Last-Event-ID` when it comes back. Other clients never wait
//! for it: each connection has its own socket and task. Streams served by
//! `http::fast_path` write through it too.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

pub struct Listener {
    inner: TcpListener,
    write_timeout: Duration,
}

impl Listener {
    pub fn new(inner: TcpListener, write_timeout: Duration) -> Self {
        Listener {
            inner,
            write_timeout,
        }
    }
}

impl Listener {
    /// The next connection. Errors (out of file descriptors, a connection
    /// reset before accept) are logged and waited out, as axum's own
    /// listener does.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    // Frames are small and latency matters more than
                    // packet count.
                    let _ = tcp.set_nodelay(true);
                    return (tcp, addr);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }
}

/// A TCP stream whose writes fail after `timeout` without progress. The
/// timer exists only while a write is blocked, so an idle stream costs no
/// timer at all.
pub struct WriteDeadline {
    tcp: TcpStream,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    pub fn new(tcp: TcpStream, timeout: Duration) -> Self {
        WriteDeadline {
            tcp,
            timeout,
            deadline: None,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => {
                let timeout = self.timeout;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    metrics::counter!("earntrack_slow_subscriber_drops_total").increment(1);
                    tracing::info!("closing a connection that stopped reading");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.deadline = None;
                ready
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.check(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.check(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.tcp).poll_flush(cx);
        self.check(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Caps on open connections, in all and per source address: a flood of
/// sockets (idle or half-sent heads, which the head timeout also ends)
/// cannot take every file descriptor. A connection over a cap is closed at
/// once, before anything is read.
pub struct ConnectionCaps {
    total: usize,
    per_ip: usize,
    open: Mutex<Open>,
    /// When the last "cap reached" line was logged (ms since `started`).
    last_log_ms: AtomicU64,
    started: Instant,
}

/// Open connections, in all and by source address (entries at 0 removed,
/// so the map is never larger than what is open).
#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Which cap refused a connection (the metric's label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerIp => "per_ip",
        }
    }
}

impl ConnectionCaps {
    /// `0` for either turns that cap off.
    pub fn new(total: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionCaps {
            total: if total == 0 { usize::MAX } else { total },
            per_ip: if per_ip == 0 { usize::MAX } else { per_ip },
            open: Mutex::default(),
            last_log_ms: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Count a new connection from `ip`, or say which cap refuses it. The
    /// permit gives the place back when dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refused> {
        let refused = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let from_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
            if open.total >= self.total {
                Some(Refused::Total)
            } else if from_ip >= self.per_ip {
                Some(Refused::PerIp)
            } else {
                open.total += 1;
                open.by_ip.insert(ip, from_ip + 1);
                None
            }
        };
        match refused {
            None => {
                metrics::gauge!("earntrack_connections_open").increment(1.0);
                Ok(ConnectionPermit {
                    caps: self.clone(),
                    ip,
                })
            }
            Some(cap) => {
                metrics::counter!("earntrack_connections_refused_total", "cap" => cap.label())
                    .increment(1);
                self.log_refusal(cap, ip);
                Err(cap)
            }
        }
    }

    /// At most one line a second: a flood must not flood the log too.
    fn log_refusal(&self, cap: Refused, ip: IpAddr) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_log_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let limit = match cap {
                Refused::Total => self.total,
                Refused::PerIp => self.per_ip,
            };
            tracing::warn!(cap = cap.label(), limit, source = %ip, "connection refused: cap reached");
        }
    }
}

/// One admitted connection; dropping it frees its place.
pub struct ConnectionPermit {
    caps: Arc<ConnectionCaps>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
        drop(open);
        metrics::gauge!("earntrack_connections_open").decrement(1.0);
    }
}
