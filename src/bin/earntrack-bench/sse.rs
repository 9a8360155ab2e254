//! One task per SSE stream: connect from a chosen source address, send
//! `GET /events?access_token=…`, read the chunked body, split it into SSE
//! frames, and time every bench event against the publisher's `sentAt`.
//! A stream that the server ends while the run is live resumes with
//! `Last-Event-ID`, as an EventSource would, and counts the reconnect.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::http::{connect, parse_head, read_more, Chunked, Target};
use crate::now_us;

/// Most reconnects one stream makes during a run.
const MAX_RECONNECTS: u32 = 3;
/// Time to get the response head and the `connected` event once connected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What all stream tasks of a run share.
pub struct Shared {
    pub connect_permits: Semaphore,
    pub connect_deadline: Instant,
    /// Streams that received `connected`.
    pub connected: AtomicUsize,
    /// Streams that gave up before `connected`.
    pub failed: AtomicUsize,
    /// Streams that were ended by the server or the network after connecting.
    pub dropped: AtomicUsize,
    /// Bench events received (all streams).
    pub deliveries: AtomicU64,
    pub last_delivery_us: AtomicU64,
    /// The earliest `sentAt` of a delivered bench event (`u64::MAX` before
    /// the first): the start of a run published by another process.
    pub first_sent_us: AtomicU64,
    /// Connected streams per user index.
    pub user_streams: Vec<AtomicU32>,
    /// Only events of this run are counted.
    pub run: u64,
    /// The event name that carries the bench's timestamps.
    pub measured: &'static str,
    pub stop: CancellationToken,
}

pub struct Spec {
    /// Ask for a gzip body (and decode it).
    pub gzip: bool,
    /// The server, and its index in `--url`.
    pub target: Arc<Target>,
    pub server: usize,
    pub user: usize,
    pub token: Arc<str>,
    pub source: Option<IpAddr>,
}

#[derive(Debug, Default)]
pub struct StreamResult {
    /// Index of the stream's server in `--url`.
    pub server: usize,
    pub connected: bool,
    pub connect_us: u64,
    pub error: Option<String>,
    pub dropped: bool,
    pub reconnects: u32,
    /// Publish-to-delivery latency of each bench event, in microseconds.
    pub latencies_us: Vec<u32>,
    /// The `seq` of each bench event, in arrival order.
    pub seqs: Vec<u32>,
    pub pings: u32,
    pub other_events: u32,
    pub resets: u32,
    /// Body bytes read from the socket after `connected` (chunk framing
    /// and compression included): the cost on the wire of what followed.
    pub wire_bytes: u64,
}

/// One SSE frame.
#[derive(Debug, Default)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// Splits an SSE text stream into frames, keeping the last `id:`.
#[derive(Debug, Default)]
pub struct Parser {
    name: String,
    data: String,
    has_data: bool,
    pub last_id: Option<String>,
    pub comments: u32,
}

impl Parser {
    /// Parse the complete lines of `text` (consumed) into `out`.
    pub fn parse(&mut self, text: &mut Vec<u8>, out: &mut Vec<Event>) {
        let mut start = 0;
        while let Some(nl) = text[start..].iter().position(|&b| b == b'\n') {
            let mut line = &text[start..start + nl];
            start += nl + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if self.has_data {
                    let name = if self.name.is_empty() {
                        "message".to_owned()
                    } else {
                        std::mem::take(&mut self.name)
                    };
                    out.push(Event {
                        name,
                        data: std::mem::take(&mut self.data),
                    });
                }
                self.name.clear();
                self.data.clear();
                self.has_data = false;
                continue;
            }
            if line[0] == b':' {
                self.comments += 1;
                continue;
            }
            let line = String::from_utf8_lossy(line);
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.name = value.to_owned(),
                "data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                }
                "id" => self.last_id = Some(value.to_owned()),
                _ => {}
            }
        }
        text.drain(..start);
    }
}

#[derive(Deserialize)]
struct Envelope {
    data: Payload,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "sentAt")]
    sent_at: Option<u64>,
    seq: Option<u32>,
    run: Option<u64>,
    notes: Option<String>,
}

/// `(run, seq, sentAt)` of a bench event: from `data` of admin events, or
/// from `notes` (`bench run=… seq=… sentAt=…`) of an earning.
pub fn bench_fields(envelope: &str) -> Option<(u64, u32, u64)> {
    let env: Envelope = serde_json::from_str(envelope).ok()?;
    let p = env.data;
    if let (Some(run), Some(seq), Some(sent)) = (p.run, p.seq, p.sent_at) {
        return Some((run, seq, sent));
    }
    let notes = p.notes?;
    let mut it = notes.strip_prefix("bench ")?.split(' ');
    let mut field = |name: &str| -> Option<u64> { it.next()?.strip_prefix(name)?.parse().ok() };
    let run = field("run=")?;
    let seq = field("seq=")? as u32;
    let sent = field("sentAt=")?;
    Some((run, seq, sent))
}

/// The notes an earning carries for the bench.
pub fn bench_notes(run: u64, seq: u32, sent_us: u64) -> String {
    format!("bench run={run} seq={seq} sentAt={sent_us}")
}

/// An open stream: its socket and the decoding state of its body.
struct Body {
    tcp: TcpStream,
    raw: Vec<u8>,
    chunked: Option<Chunked>,
    /// A gzip body's decoder; what it decodes goes to `text`.
    gzip: Option<flate2::write::GzDecoder<Vec<u8>>>,
    text: Vec<u8>,
    /// Bytes read since the stream connected.
    wire: u64,
}

impl Body {
    /// Read once and parse what came; `Ok(false)` at the end of the body.
    async fn read(&mut self, parser: &mut Parser, out: &mut Vec<Event>) -> anyhow::Result<bool> {
        let n = read_more(&mut self.tcp, &mut self.raw).await?;
        if n == 0 {
            return Ok(false);
        }
        self.wire += n as u64;
        let more = self.decode()?;
        parser.parse(&mut self.text, out);
        Ok(more)
    }

    /// Move what `raw` holds into `text`; `false` once the body is over.
    fn decode(&mut self) -> anyhow::Result<bool> {
        let Some(gzip) = &mut self.gzip else {
            return self.unchunk_into_text();
        };
        // Unchunk into `text`, then move it through the decoder and back.
        let start = self.text.len();
        let more = match &mut self.chunked {
            Some(dec) => {
                let used = dec.decode(&self.raw, &mut self.text)?;
                self.raw.drain(..used);
                !dec.done
            }
            None => {
                self.text.append(&mut self.raw);
                true
            }
        };
        gzip.write_all(&self.text[start..]).context("gzip body")?;
        gzip.flush().context("gzip body")?;
        self.text.truncate(start);
        self.text.append(gzip.get_mut());
        Ok(more)
    }

    fn unchunk_into_text(&mut self) -> anyhow::Result<bool> {
        match &mut self.chunked {
            Some(dec) => {
                let used = dec.decode(&self.raw, &mut self.text)?;
                self.raw.drain(..used);
                Ok(!dec.done)
            }
            None => {
                self.text.append(&mut self.raw);
                Ok(true)
            }
        }
    }
}

enum OpenError {
    /// Worth another try after the pause.
    Retry(anyhow::Error, Duration),
    Fatal(anyhow::Error),
}

async fn open(spec: &Spec, resume: Option<&str>) -> Result<Body, OpenError> {
    let tcp = connect(&spec.target, spec.source).await;
    let mut tcp = tcp.map_err(|e| {
        OpenError::Retry(
            anyhow::Error::from(e).context("connecting"),
            Duration::from_millis(500),
        )
    })?;
    let mut req = format!(
        "GET {}?access_token={} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\nUser-Agent: earntrack-bench\r\n",
        spec.target.path("/events"),
        spec.token,
        spec.target.host_header
    );
    if let Some(id) = resume {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    if spec.gzip {
        req.push_str("Accept-Encoding: gzip\r\n");
    }
    req.push_str("\r\n");
    let retry = |e: anyhow::Error| OpenError::Retry(e, Duration::from_millis(500));
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|e| retry(e.into()))?;
    let mut raw = Vec::with_capacity(4096);
    let head = loop {
        match parse_head(&raw) {
            Ok(Some((head, used))) => {
                raw.drain(..used);
                break head;
            }
            Ok(None) => {}
            Err(e) => return Err(OpenError::Fatal(e)),
        }
        let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_more(&mut tcp, &mut raw))
            .await
            .map_err(|_| retry(anyhow::anyhow!("no response head in time")))?
            .map_err(|e| retry(e.into()))?;
        if n == 0 {
            return Err(retry(anyhow::anyhow!("closed before a response")));
        }
    };
    match head.status {
        200 => {}
        429 if error_code(&raw) == "too_many_streams" => {
            // Waiting does not free a slot during a run.
            return Err(OpenError::Fatal(anyhow::anyhow!(
                "status 429 too_many_streams (more streams per user than the server's \
                 EARNTRACK_MAX_STREAMS_PER_USER: raise it or --users)"
            )));
        }
        429 | 503 => {
            let wait = head
                .header("retry-after")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 5);
            return Err(OpenError::Retry(
                anyhow::anyhow!("status {} {}", head.status, error_code(&raw)),
                Duration::from_secs(wait),
            ));
        }
        s => {
            return Err(OpenError::Fatal(anyhow::anyhow!(
                "status {s} {}",
                error_code(&raw)
            )))
        }
    }
    let chunked = head.chunked().then(Chunked::default);
    let gzip = head
        .header("content-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        .then(|| flate2::write::GzDecoder::new(Vec::new()));
    Ok(Body {
        tcp,
        raw,
        chunked,
        gzip,
        text: Vec::with_capacity(1024),
        wire: 0,
    })
}

fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.find("\"code\":\"") {
        Some(i) => text[i + 8..].split('"').next().unwrap_or("").to_owned(),
        None => String::new(),
    }
}

/// Open a stream (with a few retries), until its `connected` event.
async fn establish(
    shared: &Shared,
    spec: &Spec,
    parser: &mut Parser,
    resume: Option<&str>,
) -> anyhow::Result<(Body, Vec<Event>)> {
    let mut last = None;
    for _ in 0..5 {
        if Instant::now() > shared.connect_deadline && resume.is_none() {
            break;
        }
        match open(spec, resume).await {
            Ok(mut body) => {
                let mut events = Vec::new();
                let started = Instant::now();
                // The bytes after the head may already hold the first frames.
                body.decode()?;
                parser.parse(&mut body.text, &mut events);
                loop {
                    if let Some(i) = events.iter().position(|e| e.name == "connected") {
                        // What came after `connected` (a replay) is live data.
                        let rest = events.split_off(i + 1);
                        body.wire = 0;
                        return Ok((body, rest));
                    }
                    let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
                    let more = tokio::time::timeout(left, body.read(parser, &mut events))
                        .await
                        .context("no `connected` event in time")??;
                    if !more {
                        bail!("stream ended before `connected`");
                    }
                }
            }
            Err(OpenError::Retry(e, pause)) => {
                last = Some(e);
                tokio::time::sleep(pause).await;
            }
            Err(OpenError::Fatal(e)) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("connect deadline passed")))
}

/// The whole life of one stream; returns what it saw.
pub async fn run(shared: Arc<Shared>, spec: Spec) -> StreamResult {
    let mut result = StreamResult {
        server: spec.server,
        ..StreamResult::default()
    };
    let mut parser = Parser::default();
    let Some((mut body, mut events)) = start(&shared, &spec, &mut parser, &mut result).await else {
        return result;
    };
    let comments_at_connect = parser.comments;
    let mut recv_us = now_us();
    loop {
        record(&shared, &mut result, &mut events, recv_us);
        let read = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            r = body.read(&mut parser, &mut events) => r,
        };
        recv_us = now_us();
        if let Ok(true) = read {
            continue;
        }
        record(&shared, &mut result, &mut events, recv_us);
        if !result.dropped {
            result.dropped = true;
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = read {
            result.error = Some(format!("{e:#}"));
        }
        result.wire_bytes += std::mem::take(&mut body.wire);
        match resume(&shared, &spec, &mut parser, &mut result).await {
            Some((b, rest)) => {
                body = b;
                events = rest;
                recv_us = now_us();
            }
            None => break,
        }
    }
    result.pings = parser.comments - comments_at_connect;
    result.wire_bytes += body.wire;
    result
}

/// Open the stream, `--connect-concurrency` at a time, and count it as
/// connected; `None` (counted as failed, the error in `result`) when it did
/// not connect.
async fn start(
    shared: &Shared,
    spec: &Spec,
    parser: &mut Parser,
    result: &mut StreamResult,
) -> Option<(Body, Vec<Event>)> {
    let permit = tokio::select! {
        p = shared.connect_permits.acquire() => p.ok(),
        _ = tokio::time::sleep_until(shared.connect_deadline.into()) => None,
        _ = shared.stop.cancelled() => None,
    };
    let Some(permit) = permit else {
        result.error = Some("connect deadline passed".into());
        shared.failed.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let started = Instant::now();
    let opened = match establish(shared, spec, parser, None).await {
        Ok(opened) => opened,
        Err(e) => {
            result.error = Some(format!("{e:#}"));
            shared.failed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    drop(permit);
    result.connected = true;
    result.connect_us = started.elapsed().as_micros() as u64;
    shared.user_streams[spec.user].fetch_add(1, Ordering::Relaxed);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    Some(opened)
}

/// Resume where the stream ended, as an EventSource would: up to
/// `MAX_RECONNECTS` tries in all, each after a pause; `None` once stopped
/// or out of tries.
async fn resume(
    shared: &Shared,
    spec: &Spec,
    parser: &mut Parser,
    result: &mut StreamResult,
) -> Option<(Body, Vec<Event>)> {
    loop {
        if shared.stop.is_cancelled() || result.reconnects >= MAX_RECONNECTS {
            return None;
        }
        result.reconnects += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resume = parser.last_id.clone();
        *parser = Parser {
            last_id: resume.clone(),
            comments: parser.comments,
            ..Parser::default()
        };
        match establish(shared, spec, parser, resume.as_deref()).await {
            Ok(opened) => return Some(opened),
            Err(e) => result.error = Some(format!("{e:#}")),
        }
    }
}

/// Account for the frames in `events` (drained), received at `recv_us`.
fn record(shared: &Shared, result: &mut StreamResult, events: &mut Vec<Event>, recv_us: u64) {
    for ev in events.drain(..) {
        if ev.name == shared.measured {
            let Some((run, seq, sent)) = bench_fields(&ev.data) else {
                result.other_events += 1;
                continue;
            };
            if run != shared.run {
                continue;
            }
            let lat = recv_us.saturating_sub(sent).min(u32::MAX as u64) as u32;
            result.latencies_us.push(lat);
            result.seqs.push(seq);
            shared.deliveries.fetch_add(1, Ordering::Relaxed);
            shared
                .last_delivery_us
                .fetch_max(recv_us, Ordering::Relaxed);
            shared.first_sent_us.fetch_min(sent, Ordering::Relaxed);
        } else if ev.name == "sync:reset" {
            result.resets += 1;
        } else {
            result.other_events += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_split_anywhere() {
        let input = b"retry: 3000\n\nid: a.1\nevent: connected\ndata: {\"x\":1}\n\n: ping\n\nid: a.2\nevent: bench:fanout\ndata: {\"data\":{\"sentAt\":5,\"seq\":7,\"run\":9}}\n\n";
        let mut parser = Parser::default();
        let mut text = Vec::new();
        let mut out = Vec::new();
        for &b in input.iter() {
            text.push(b);
            parser.parse(&mut text, &mut out);
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name, "connected");
        assert_eq!(out[1].name, "bench:fanout");
        assert_eq!(parser.comments, 1);
        assert_eq!(parser.last_id.as_deref(), Some("a.2"));
        assert_eq!(bench_fields(&out[1].data), Some((9, 7, 5)));
    }

    #[test]
    fn reads_earning_notes() {
        let env = format!(
            "{{\"event\":\"earnings:new\",\"data\":{{\"id\":\"x\",\"notes\":\"{}\"}}}}",
            bench_notes(3, 4, 5)
        );
        assert_eq!(bench_fields(&env), Some((3, 4, 5)));
    }
}
