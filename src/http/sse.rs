//! The SSE transport core, shared by both ways `GET /events` is carried
//! (hyper's body in `events`, the bare socket in `fast_path`): the response
//! headers, and the `Session` that turns a `Feed` into bytes —
//! `retry:` and `connected` at once, then one frame per event
//! (`id:` per subscriber + the `event:`/`data:` bytes shared by all),
//! `: ping` heartbeats, `auth:expired` at the token's `exp`, and a clean end
//! on force-disconnect or shutdown — counting what it delivers. No
//! buffering: each chunk is written at once; frames already queued behind
//! the first go out in the same chunk. A client that asks for gzip gets each
//! chunk as gzip blocks it can decode at once (`gzip`).

use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use rand::Rng;
use serde_json::json;
use tokio::time::Sleep;
use uuid::Uuid;

use super::extract::AuthUser;
use super::gzip::Gzip;
use super::AppState;
use crate::domain::event::Topic;
use crate::domain::frame::Frame;
use crate::domain::time::{now_ms, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::push::feed::EndReason;
use crate::push::{Feed, Item, Opening, SubscribeError, SubscriberKind, TopicFilter};

/// The response headers of a stream, the same on both transports.
pub const HEADERS: [(&str, &str); 5] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache, no-transform"),
    ("x-accel-buffering", "no"),
    ("x-content-type-options", "nosniff"),
    // A stream may be compressed or not depending on the request.
    ("vary", "accept-encoding"),
];

/// The header of a compressed stream, after `HEADERS`.
pub const GZIP_HEADER: (&str, &str) = ("content-encoding", "gzip");

pub fn subscribe_error(err: SubscribeError) -> ApiError {
    match err {
        SubscribeError::TooManyStreams => ApiError::TooManyStreams {
            retry_after_secs: 5,
        },
        SubscribeError::TooManyPolls => ApiError::RateLimited {
            retry_after_secs: 1,
        },
        SubscribeError::ShuttingDown => ApiError::Unavailable,
    }
}

/// A control or transport event (not in the log): one frame, no `id:`
/// unless given.
pub fn control_frame(name: &str, data: serde_json::Value, id: Option<&str>) -> Bytes {
    let envelope = Frame::envelope(name, &rfc3339(now_ms()), &data);
    let id = id.map(|c| format!("id: {c}\n")).unwrap_or_default();
    Bytes::from(format!("{id}event: {name}\ndata: {envelope}\n\n"))
}

/// The delivery counters, by `topic_index`. The handles are resolved once: the
/// `counter!` macro looks its key up in the registry on every call, and this
/// runs once per event per stream.
fn delivered() -> &'static [metrics::Counter; Topic::ALL.len()] {
    static COUNTERS: OnceLock<[metrics::Counter; Topic::ALL.len()]> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        Topic::ALL
            .map(|t| metrics::counter!("earntrack_events_delivered_total", "topic" => t.label()))
    })
}

/// Logs the end of a stream with its duration however it ends, including
/// when the client goes away and the body is simply dropped.
struct StreamGuard {
    /// `stream{user_id, connection_id}`: the span of the whole stream, which
    /// outlives the request span (the body is written after the handler
    /// returned).
    span: tracing::Span,
    started: Instant,
    reason: &'static str,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics::gauge!("earntrack_open_streams").decrement(1.0);
        tracing::info!(
            parent: &self.span,
            duration_ms = self.started.elapsed().as_millis() as u64,
            reason = self.reason,
            "stream closed"
        );
    }
}

/// The heartbeat, an SSE comment.
pub const PING: &[u8] = b": ping\n\n";

/// Most bytes gathered into one write when frames are queued.
const BATCH_BYTES: usize = 32 * 1024;

/// One open stream, whatever carries it (hyper's body, or the lean
/// connection in `fast_path`): it turns the feed into SSE bytes. Holding it
/// keeps the subscription; dropping it (the client went away) leaves the hub.
pub struct Session {
    feed: Feed,
    /// `retry:`, `connected` (and `sync:reset`): the first chunk, taken by
    /// the first `next_chunk`.
    opening: Vec<u8>,
    /// `auth:expired` at the token's `exp`. Boxed, so the timer is one
    /// allocation made once rather than part of every future that holds a
    /// session; made on the first wait, by the runtime that runs the stream.
    expiry: Option<Pin<Box<Sleep>>>,
    expires_at: tokio::time::Instant,
    guard: StreamGuard,
    over: bool,
    /// `Some` when the body is gzip (the client asked and it is allowed).
    gzip: Option<Gzip>,
}

impl Session {
    /// Subscribe and open the feed from `resume` (a cursor), and prepare
    /// the first bytes (`retry:`, `connected`, and `sync:reset` for a cursor
    /// we cannot honour). `gzip`: the client accepts it (the setting is
    /// checked here).
    pub async fn open(
        app: &AppState,
        me: &AuthUser,
        filter: TopicFilter,
        resume: Option<String>,
        gzip: bool,
    ) -> ApiResult<Session> {
        // The per-user limit counts this user's streams on every server.
        let elsewhere = app.presence.elsewhere(me.id).await?;
        let sub = app
            .hub
            .subscribe(me.id, SubscriberKind::Stream, elsewhere)
            .map_err(subscribe_error)?;
        let (feed, opening) = Feed::open(&app.feeds, sub, me.id, resume.as_deref(), filter).await?;

        let connection = Uuid::new_v4();
        metrics::gauge!("earntrack_open_streams").increment(1.0);
        let span = tracing::info_span!(parent: None, "stream", user_id = %me.id, connection_id = %connection);
        tracing::info!(parent: &span, resume = ?opening, "stream opened");
        let guard = StreamGuard {
            span,
            started: Instant::now(),
            reason: "client gone",
        };

        // Jittered, so the clients of a stopped server do not all come back
        // in the same millisecond.
        let mut out = Vec::new();
        let retry = (app.config.retry_ms as f64 * rand::thread_rng().gen_range(0.8..1.2)) as u64;
        out.extend_from_slice(format!("retry: {retry}\n\n").as_bytes());
        let hello = json!({ "connectionId": connection, "userId": me.id });
        // A fresh stream's `connected` carries the current position, so a
        // client that drops before any event still resumes without a gap.
        let cursor = feed.cursor();
        let id = (opening == Opening::Fresh).then_some(cursor.as_str());
        out.extend_from_slice(&control_frame("connected", hello, id));
        if opening == Opening::Reset {
            let reset = json!({ "reason": "cursor_unavailable" });
            out.extend_from_slice(&control_frame("sync:reset", reset, Some(&cursor)));
        }
        let expires_in = Duration::from_secs((me.exp - now_ms() / 1000).max(0) as u64);
        let (opening, gzip) = if gzip && app.config.stream_compression {
            let mut wire = Vec::with_capacity(out.len() + 32);
            let mut gz = Gzip::start(&mut wire);
            gz.private(&mut wire, &out);
            (wire, Some(gz))
        } else {
            (out, None)
        };
        Ok(Session {
            feed,
            opening,
            expiry: None,
            expires_at: tokio::time::Instant::now() + expires_in,
            guard,
            over: false,
            gzip,
        })
    }

    /// Whether the body is gzip (`GZIP_HEADER` goes with the response).
    pub fn compressed(&self) -> bool {
        self.gzip.is_some()
    }

    /// The pump both transports write from: the opening bytes first, then
    /// each batch of frames. A batch waits for the next frame, then takes
    /// every frame already queued behind it (up to `BATCH_BYTES`): a burst
    /// costs one write per stream, not one per event. `None` once the stream
    /// is over; its last chunk may be `auth:expired`.
    ///
    /// Shutdown needs no branch of its own: `Hub::close_all` sends `Close`
    /// to every feed. The batch buffer is made after the wait, so an idle
    /// stream's future holds none.
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if !self.opening.is_empty() {
            return Some(std::mem::take(&mut self.opening));
        }
        if self.over {
            return None;
        }
        let expires_at = self.expires_at;
        let expiry = self
            .expiry
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(expires_at)));
        let mut item = tokio::select! {
            biased;
            _ = expiry => {
                self.guard.reason = "token expired";
                self.over = true;
                let expired = json!({ "reason": "token_expired" });
                let expired = control_frame("auth:expired", expired, None);
                return Some(match self.gzip.take() {
                    None => expired.to_vec(),
                    Some(mut gz) => {
                        let mut out = Vec::with_capacity(expired.len() + 32);
                        gz.private(&mut out, &expired);
                        gz.finish(&mut out);
                        out
                    }
                });
            }
            item = self.feed.next() => item,
        };
        let mut out = Vec::new();
        // The `id:` line of a compressed stream, before it goes into `out`.
        let mut id = Vec::new();
        let mut delivered_now = [0u64; Topic::ALL.len()];
        loop {
            match item {
                Item::Event(frame) => {
                    delivered_now[Topic::index(frame.topic)] += 1;
                    match &mut self.gzip {
                        None => {
                            out.extend_from_slice(b"id: ");
                            self.feed.write_cursor(&mut out);
                            out.push(b'\n');
                            out.extend_from_slice(&frame.sse);
                        }
                        Some(gz) => {
                            id.clear();
                            id.extend_from_slice(b"id: ");
                            self.feed.write_cursor(&mut id);
                            id.push(b'\n');
                            gz.private(&mut out, &id);
                            gz.shared(&mut out, &frame);
                        }
                    }
                }
                Item::Ping => match &mut self.gzip {
                    None => out.extend_from_slice(PING),
                    Some(gz) => gz.ping(&mut out),
                },
                Item::End(reason) => {
                    self.guard.reason = match reason {
                        EndReason::Closed => "closed by server",
                        EndReason::TooSlow => "too slow",
                        EndReason::Error => "log read failed",
                        EndReason::AccessChanged => "access changed",
                    };
                    if reason == EndReason::AccessChanged {
                        // The client refreshes its token (which reads the
                        // new role) and resumes.
                        let expired = json!({ "reason": "access_changed" });
                        let expired = control_frame("auth:expired", expired, None);
                        match &mut self.gzip {
                            None => out.extend_from_slice(&expired),
                            Some(gz) => gz.private(&mut out, &expired),
                        }
                    }
                    self.over = true;
                    break;
                }
            }
            if out.len() >= BATCH_BYTES {
                break;
            }
            match self.feed.try_next() {
                Some(next) => item = next,
                None => break,
            }
        }
        if self.over {
            if let Some(gz) = self.gzip.take() {
                gz.finish(&mut out);
            }
        }
        for (topic, n) in delivered_now.into_iter().enumerate() {
            if n > 0 {
                delivered()[topic].increment(n);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The `stream{user_id, connection_id}` span.
    pub fn span(&self) -> &tracing::Span {
        &self.guard.span
    }
}
