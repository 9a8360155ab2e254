//! The listening socket. Every connection hyper serves is wrapped in
//! `WriteDeadline`, which fails a write that has made no progress for the
//! configured time. That is how a client that stopped reading (a dead
//! laptop, a stalled proxy) is cut off: its stream is not polled while the
//! socket is full, so nothing inside the stream could notice. hyper then
//! drops the connection, the subscription leaves the hub, and the client
//! resumes with `Last-Event-ID` when it comes back. Other clients never wait
//! for it: each connection has its own socket and task. Streams served by
//! `http::fast_path` write through it too.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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
    pub async fn accept(&mut self) -> TcpStream {
        loop {
            match self.inner.accept().await {
                Ok((tcp, _addr)) => {
                    // Frames are small and latency matters more than
                    // packet count.
                    let _ = tcp.set_nodelay(true);
                    return tcp;
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
