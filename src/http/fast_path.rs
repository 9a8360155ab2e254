//! The lean path for `GET /events`. A stream lives for hours and, once its
//! response head is out, only ever writes; hyper would still keep its
//! per-connection read and write buffers (8 KiB each at least), its
//! connection state machine and the boxed body for all that time. Measured
//! with 10,000 idle streams that was most of the 17.7 KiB each cost, so a
//! plain stream request on a fresh connection is served here instead, on the
//! bare socket: the request head is parsed from a temporary buffer that is
//! freed before the first event, and what stays per stream is the `Session`
//! (feed, subscription, expiry timer) and the socket.
//!
//! The rule is "serve here only what is certain to succeed exactly as the
//! router would answer it": the head is only peeked at (not read) while we
//! decide, and anything unusual — a head split over several packets, another
//! method or path, an `Origin` (CORS headers), a request body, a bad token, a
//! limit reached — leaves the connection untouched for hyper and the router,
//! which give the normal answer, error JSON included.

use std::future::Future;
use std::io;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::{request, HeaderName, HeaderValue, Method, Request, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::events::StreamParams;
use super::extract::{ApiQuery, AuthUser};
use super::sse::{Session, GZIP_HEADER, HEADERS};
use super::AppState;
use crate::net::WriteDeadline;

/// The largest request head served here; bigger ones go to hyper.
const MAX_HEAD: usize = 8 * 1024;
const FIRST_PEEK: usize = 2 * 1024;
const MAX_HEADERS: usize = 48;

/// A stream accepted by the lean path, not yet answered.
pub struct Accepted {
    session: Session,
    /// Bytes of the request head, to consume from the socket.
    head_len: usize,
    /// HTTP/1.0: no chunked encoding, the body ends when the socket closes.
    http10: bool,
    started: Instant,
}

/// Decide whether `tcp`'s first request is a stream this path serves, and if
/// so open its session. `None`: hand the connection, unread, to hyper.
pub async fn accept(app: &AppState, tcp: &TcpStream) -> Option<Accepted> {
    let started = Instant::now();
    let head = peek_head(tcp).await?;
    let (mut parts, head_len) = parse_head(&head)?;
    drop(head);
    if !serves(&parts) {
        return None;
    }
    let me = AuthUser::from_request_parts(&mut parts, app).await.ok()?;
    let ApiQuery(params) = ApiQuery::<StreamParams>::from_request_parts(&mut parts, app)
        .await
        .ok()?;
    let filter = params.filter().ok()?;
    let resume = params.resume(&parts.headers);
    let gzip = super::gzip::accepted(&parts.headers);
    let session = Session::open(app, &me, filter, resume, gzip).await.ok()?;
    Some(Accepted {
        session,
        head_len,
        http10: parts.version == Version::HTTP_10,
        started,
    })
}

/// The first packet(s) of the connection, without consuming them. `None`
/// when the client closed, or sent no complete head in what arrived first.
/// Most heads fit the first, small buffer; the large one is only for heads
/// with big cookies (thousands of connects at once each hold one).
async fn peek_head(tcp: &TcpStream) -> Option<Vec<u8>> {
    for size in [FIRST_PEEK, MAX_HEAD] {
        let mut buf = vec![0u8; size];
        let n = tcp.peek(&mut buf).await.ok()?;
        if n < size {
            buf.truncate(n);
            return (n > 0).then_some(buf);
        }
    }
    None
}

fn parse_head(head: &[u8]) -> Option<(request::Parts, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(head).ok()? else {
        return None;
    };
    let version = match req.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut builder = Request::builder()
        .method(Method::from_bytes(req.method?.as_bytes()).ok()?)
        .uri(req.path?)
        .version(version);
    for h in req.headers.iter() {
        builder = builder.header(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    let (parts, ()) = builder.body(()).ok()?.into_parts();
    Some((parts, len))
}

/// A plain stream request: `GET /events[?…]`, no body, no CORS, no upgrade.
fn serves(parts: &request::Parts) -> bool {
    let h = &parts.headers;
    parts.method == Method::GET
        && parts.uri.path() == "/events"
        && !h.contains_key("origin")
        && !h.contains_key("content-length")
        && !h.contains_key("transfer-encoding")
        && !h.contains_key("upgrade")
        && !h.contains_key("expect")
}

impl Accepted {
    /// Answer the request and write the stream until it ends, the client
    /// goes away, or a write makes no progress for `write_timeout` (a client
    /// that stopped reading; it resumes with `Last-Event-ID` later).
    ///
    /// Not an `async fn` around an `async` block: each would store its own
    /// copy of the session, and this future lives as long as the stream.
    /// The socket comes as a std one, so that it registers with the
    /// runtime that runs the stream (see `serve::serve`). `held` (the
    /// connection's place under the caps) is dropped when the stream ends:
    /// passed in rather than held by a wrapping future, which would store
    /// this one twice (measured: +1.1 KiB per idle stream).
    pub fn run(
        self,
        tcp: std::net::TcpStream,
        write_timeout: Duration,
        held: impl Send + 'static,
    ) -> impl Future<Output = ()> {
        let span = self.session.span().clone();
        self.serve(tcp, write_timeout, held).instrument(span)
    }

    async fn serve(mut self, tcp: std::net::TcpStream, write_timeout: Duration, _held: impl Send) {
        let Ok(tcp) = TcpStream::from_std(tcp) else {
            return;
        };
        // The same write deadline as on connections hyper serves.
        let mut tcp = WriteDeadline::new(tcp, write_timeout);
        if tcp.read_exact(&mut vec![0u8; self.head_len]).await.is_err() {
            return;
        }
        // What the router's metrics layer records for the streams it serves.
        super::record_request("GET", "/events", 200, self.started.elapsed());
        // The head goes out with the first chunk (the opening bytes, ready
        // at once).
        let mut wire = response_head(self.http10, self.session.compressed());
        if let Some(opening) = self.session.next_chunk().await {
            frame_into(&mut wire, &opening, self.http10);
        }
        if tcp.write_all(&wire).await.is_err() {
            return;
        }
        drop(wire);
        loop {
            let chunk = tokio::select! {
                biased;
                () = client_gone(tcp.tcp()) => return,
                chunk = self.session.next_chunk() => chunk,
            };
            let Some(chunk) = chunk else { break };
            let mut wire = Vec::with_capacity(chunk.len() + 16);
            frame_into(&mut wire, &chunk, self.http10);
            drop(chunk);
            if tcp.write_all(&wire).await.is_err() {
                return;
            }
        }
        // The end of the body, then close: the client reconnects.
        if !self.http10 {
            let _ = tcp.write_all(b"0\r\n\r\n").await;
        }
        let _ = tcp.shutdown().await;
    }
}

/// The response head, as the router's handler answers (see `events::stream`).
fn response_head(http10: bool, gzip: bool) -> Vec<u8> {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in HEADERS.into_iter().chain(gzip.then_some(GZIP_HEADER)) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // The lean path closes the socket when the stream ends, so it says so:
    // a pooling proxy must not hand this connection to another request.
    head.push_str("connection: close\r\n");
    if !http10 {
        head.push_str("transfer-encoding: chunked\r\n");
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    head.push_str(&format!("date: {date}\r\n\r\n"));
    head.into_bytes()
}

/// `data` as one chunk of a chunked body (as is on HTTP/1.0).
fn frame_into(out: &mut Vec<u8>, data: &[u8], http10: bool) {
    if http10 {
        out.extend_from_slice(data);
    } else {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// Resolves when the client has closed its side (or the socket failed).
/// Anything it sends after its request is read and dropped: a stream takes
/// no second request. Polls readiness directly rather than through
/// `readable()`, whose future (a waiter node, ~170 bytes) would be part of
/// every stream's task.
async fn client_gone(tcp: &TcpStream) {
    std::future::poll_fn(|cx| loop {
        if ready!(tcp.poll_read_ready(cx)).is_err() {
            return Poll::Ready(());
        }
        let mut sink = [0u8; 256];
        match tcp.try_read(&mut sink) {
            Ok(0) => return Poll::Ready(()),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Poll::Ready(()),
        }
    })
    .await
}
