//! `GET /events`: the SSE transport. It turns a `Feed` into bytes:
//! `retry:` and `connected` at once, then one frame per event
//! (`id:` per subscriber + the `event:`/`data:` bytes shared by all),
//! `: ping` heartbeats, `auth:expired` at the token's `exp`, and a clean end on
//! force-disconnect or shutdown. No compression and no buffering: each
//! write is flushed at once; frames already queued behind the first go out
//! in the same write. Most streams never reach this handler: `fast_path`
//! serves a plain `GET /events` on a fresh connection with the same `Session`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Sleep;
use uuid::Uuid;

use super::extract::ApiQuery;
use super::extract::AuthUser;
use super::AppState;
use crate::domain::event::Topic;
use crate::domain::frame::Frame;
use crate::domain::time::{now_ms, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::push::feed::EndReason;
use crate::push::{Feed, Item, Opening, SubscribeError, SubscriberKind, TopicFilter};

pub fn router() -> Router<AppState> {
    Router::new().route("/events", get(stream))
}

#[derive(Deserialize)]
pub struct StreamParams {
    topics: Option<String>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
    #[serde(rename = "last_event_id")]
    last_event_id_snake: Option<String>,
}

impl StreamParams {
    /// The `Last-Event-ID` header wins over the query (EventSource keeps its
    /// original URL when it reconnects, so the header is the newer cursor).
    pub fn resume(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.last_event_id.clone())
            .or_else(|| self.last_event_id_snake.clone())
            .filter(|c| !c.trim().is_empty())
    }

    pub fn filter(&self) -> ApiResult<TopicFilter> {
        match &self.topics {
            None => Ok(TopicFilter::ALL),
            Some(t) => TopicFilter::parse(t).ok_or_else(|| {
                ApiError::BadRequest(
                    "bad query: topics must be earnings and/or notifications".into(),
                )
            }),
        }
    }
}

pub fn subscribe_error(err: SubscribeError) -> ApiError {
    match err {
        SubscribeError::TooManyStreams => ApiError::TooManyStreams {
            retry_after_secs: 5,
        },
        SubscribeError::ShuttingDown => ApiError::Unavailable,
    }
}

async fn stream(
    State(app): State<AppState>,
    me: AuthUser,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<StreamParams>,
) -> ApiResult<Response> {
    let mut first = Vec::new();
    let session = Session::open(&app, &me, &headers, &params, &mut first).await?;
    let body = Body::from_stream(async_stream::stream! {
        yield Ok::<_, Infallible>(Bytes::from(first));
        let mut session = session;
        loop {
            let mut batch = Vec::new();
            let open = session.next_batch(&mut batch).await;
            if !batch.is_empty() {
                yield Ok(Bytes::from(batch));
            }
            if !open {
                break;
            }
        }
    });
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
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
fn delivered() -> &'static [metrics::Counter; 4] {
    static COUNTERS: OnceLock<[metrics::Counter; 4]> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        [
            Topic::Earnings,
            Topic::Notifications,
            Topic::Other,
            Topic::Internal,
        ]
        .map(|t| metrics::counter!("earntrack_events_delivered_total", "topic" => t.label()))
    })
}

fn topic_index(topic: Topic) -> usize {
    match topic {
        Topic::Earnings => 0,
        Topic::Notifications => 1,
        Topic::Other => 2,
        Topic::Internal => 3,
    }
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

/// Most bytes gathered into one write when frames are queued.
const BATCH_BYTES: usize = 32 * 1024;

/// One open stream, whatever carries it (hyper's body, or the lean
/// connection in `fast_path`): it turns the feed into SSE bytes. Holding it
/// keeps the subscription; dropping it (the client went away) leaves the hub.
pub struct Session {
    feed: Feed,
    /// `auth:expired` at the token's `exp`. Boxed, so the timer is one
    /// allocation made once rather than part of every future that holds a
    /// session; made on the first wait, by the runtime that runs the stream.
    expiry: Option<Pin<Box<Sleep>>>,
    expires_at: tokio::time::Instant,
    guard: StreamGuard,
    over: bool,
}

impl Session {
    /// Subscribe, open the feed, and append the first bytes (`retry:`,
    /// `connected`, and `sync:reset` for a cursor we cannot honour) to `out`.
    pub async fn open(
        app: &AppState,
        me: &AuthUser,
        headers: &HeaderMap,
        params: &StreamParams,
        out: &mut Vec<u8>,
    ) -> ApiResult<Session> {
        let filter = params.filter()?;
        let resume = params.resume(headers);
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
        Ok(Session {
            feed,
            expiry: None,
            expires_at: tokio::time::Instant::now() + expires_in,
            guard,
            over: false,
        })
    }

    /// Wait for the next frame, then take every frame already queued behind
    /// it (up to `BATCH_BYTES`), appending them all to `out`: a burst costs
    /// one write per stream, not one per event. False once the stream is
    /// over; `out` may still hold its last frame (`auth:expired`).
    ///
    /// Shutdown needs no branch of its own: `Hub::close_all` sends `Close`
    /// to every feed.
    pub async fn next_batch(&mut self, out: &mut Vec<u8>) -> bool {
        if self.over {
            return false;
        }
        let expires_at = self.expires_at;
        let expiry = self
            .expiry
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(expires_at)));
        let mut item = tokio::select! {
            biased;
            _ = expiry => {
                self.guard.reason = "token expired";
                let expired = json!({ "reason": "token_expired" });
                out.extend_from_slice(&control_frame("auth:expired", expired, None));
                self.over = true;
                return false;
            }
            item = self.feed.next() => item,
        };
        let mut delivered_now = [0u64; 4];
        loop {
            match item {
                Item::Event(frame) => {
                    delivered_now[topic_index(frame.topic)] += 1;
                    out.extend_from_slice(b"id: ");
                    self.feed.write_cursor(out);
                    out.push(b'\n');
                    out.extend_from_slice(&frame.sse);
                }
                Item::Ping => out.extend_from_slice(b": ping\n\n"),
                Item::End(reason) => {
                    self.guard.reason = match reason {
                        EndReason::Closed => "closed by server",
                        EndReason::TooSlow => "too slow",
                        EndReason::Error => "log read failed",
                    };
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
        for (topic, n) in delivered_now.into_iter().enumerate() {
            if n > 0 {
                delivered()[topic].increment(n);
            }
        }
        !self.over
    }

    /// The `stream{user_id, connection_id}` span.
    pub fn span(&self) -> &tracing::Span {
        &self.guard.span
    }
}
