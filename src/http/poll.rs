//! `GET /events/poll`: the long-poll fallback for proxies that buffer
//! streamed responses. Same auth, cursors, isolation and `sync:reset` rules
//! as `/events`, built on the same `Feed`.

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::dto::PollBody;
use super::extract::ApiQuery;
use super::extract::AuthUser;
use super::sse::subscribe_error;
use super::AppState;
use crate::domain::time::{now_ms, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::error::{AuthErrors, ErrorBody};
use crate::push::{Feed, Item, Opening, SubscriberKind, TopicFilter};

/// Most events one answer carries; the client polls again for the rest.
const MAX_EVENTS: usize = 500;

pub fn router() -> Router<AppState> {
    Router::new().route("/events/poll", get(poll))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PollParams {
    after: Option<String>,
    timeout: Option<String>,
    topics: Option<String>,
}

#[utoipa::path(
    get,
    path = "/events/poll",
    tag = "stream",
    params(
        ("after" = Option<String>, Query, nullable = false, description = "cursor; default: the current position"),
        (
            "timeout" = Option<i64>,
            Query,
            nullable = false,
            minimum = 0,
            maximum = 30,
            description = "seconds to wait; default 25",
        ),
        (
            "topics" = Option<String>,
            Query,
            nullable = false,
            description = "comma-separated: earnings, notifications; default both",
        ),
    ),
    responses(
        AuthErrors,
        (status = 200, description = "events after the cursor (or none after the timeout)", body = PollBody),
        (status = 400, description = "bad query", body = ErrorBody),
    ),
)]
pub async fn poll(
    State(app): State<AppState>,
    me: AuthUser,
    ApiQuery(p): ApiQuery<PollParams>,
) -> ApiResult<Json<Value>> {
    let timeout = match p.timeout.as_deref().filter(|t| !t.is_empty()) {
        None => 25,
        Some(t) => t.parse::<u64>().ok().filter(|t| *t <= 30).ok_or_else(|| {
            ApiError::BadRequest("bad query: timeout must be 0 to 30 seconds".into())
        })?,
    };
    let filter = match p.topics.as_deref() {
        None => TopicFilter::ALL,
        Some(t) => TopicFilter::parse(t)
            .ok_or_else(|| ApiError::BadRequest("bad query: unknown topic".into()))?,
    };
    let after = p.after.filter(|a| !a.trim().is_empty());
    let elsewhere = 0; // long-polls are not counted as streams
    let sub = app
        .hub
        .subscribe(me.id, SubscriberKind::Poll, elsewhere)
        .map_err(subscribe_error)?;
    let (mut feed, opening) = Feed::open(&app.feeds, sub, me.id, after.as_deref(), filter).await?;
    if opening == Opening::Reset {
        let cursor = feed.cursor();
        let reset = json!({
            "id": cursor,
            "event": "sync:reset",
            "timestamp": rfc3339(now_ms()),
            "data": { "reason": "cursor_unavailable" },
        });
        return Ok(Json(json!({ "events": [reset], "cursor": cursor })));
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut answer = Answer {
        events: Vec::new(),
        // The feed's own text of where it starts: a cursor given in `after`
        // comes back without what was dropped from it (foreign rooms).
        cursor: feed.cursor(),
        over: false,
    };
    // What exists already is read first, whatever the timeout (even 0): the
    // timer must not win the race against the log.
    feed.catch_up_now().await?;
    loop {
        while answer.events.len() < MAX_EVENTS && !answer.over {
            let Some(item) = feed.try_next() else { break };
            answer.take(item, &feed);
        }
        // Once something came, answer with it rather than waiting out the
        // timeout.
        if !answer.events.is_empty() || answer.over {
            break;
        }
        tokio::select! {
            biased;
            _ = app.shutdown.cancelled() => break,
            // Before the timer: what is ready now goes in the answer.
            item = feed.next() => answer.take(item, &feed),
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let Answer { events, cursor, .. } = answer;
    Ok(Json(json!({ "events": events, "cursor": cursor })))
}

/// A long-poll's answer as it fills.
struct Answer {
    events: Vec<Value>,
    cursor: String,
    /// The feed ended (force-disconnect, shutdown, a change of access).
    over: bool,
}

impl Answer {
    fn take(&mut self, item: Item, feed: &Feed) {
        match item {
            Item::Event(frame) => {
                let next = feed.cursor();
                let envelope: Value = serde_json::from_str(&frame.envelope).unwrap_or(Value::Null);
                self.events.push(json!({
                    "id": next,
                    "event": frame.name,
                    "timestamp": envelope["timestamp"],
                    "data": envelope["data"],
                }));
                self.cursor = next;
            }
            Item::Ping => {}
            Item::End(_) => self.over = true,
        }
    }
}
