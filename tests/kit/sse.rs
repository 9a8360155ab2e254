//! An SSE client over a real socket: reqwest's body through
//! `eventsource-stream`, a real parser (fields, comments, multi-line data,
//! `id:` and `retry:` as the spec has them).

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use serde_json::Value;

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// What a stream gave next.
#[derive(Debug)]
pub enum Next {
    Event(Event),
    /// The server ended the response cleanly.
    Ended,
    /// The connection broke (reset, truncated chunk, bad bytes).
    Failed(String),
}

pub struct Sse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    events: Events,
}

impl Sse {
    pub fn new(res: Response) -> Sse {
        let status = res.status();
        let headers = res.headers().clone();
        let events = res
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed();
        Sse {
            status,
            headers,
            events,
        }
    }

    /// The next thing that happens, however long it takes: wrap it in a
    /// timeout.
    pub async fn next(&mut self) -> Next {
        match self.events.next().await {
            Some(Ok(event)) => Next::Event(event),
            Some(Err(err)) => Next::Failed(err),
            None => Next::Ended,
        }
    }

    /// The next event within `wait`; anything else panics.
    pub async fn event_within(&mut self, wait: Duration) -> Event {
        match tokio::time::timeout(wait, self.next()).await {
            Ok(Next::Event(event)) => event,
            Ok(other) => panic!("expected an event, the stream gave {other:?}"),
            Err(_) => panic!("no event within {wait:?}"),
        }
    }

    /// The next event within 5 s; anything else panics.
    pub async fn event(&mut self) -> Event {
        self.event_within(Duration::from_secs(5)).await
    }

    /// The next event, asserting its name; returns the envelope's `data`.
    pub async fn expect(&mut self, name: &str) -> (Event, Value) {
        let event = self.event().await;
        assert_eq!(event.event, name, "expected {name}, got {event:?}");
        let data = data(&event);
        (event, data)
    }

    /// Whatever came within `wait` (an event, the end, a failure), `None`
    /// when the stream stayed quiet.
    pub async fn quiet_for(&mut self, wait: Duration) -> Option<Next> {
        tokio::time::timeout(wait, self.next()).await.ok()
    }

    /// The next event, or `None` when the server ends the stream cleanly
    /// within `wait`; a transport error or a timeout panics. Tells a clean
    /// end (resume with `Last-Event-ID`) from a broken connection.
    pub async fn next_or_end(&mut self, wait: Duration) -> Option<Event> {
        match tokio::time::timeout(wait, self.next()).await {
            Ok(Next::Event(event)) => Some(event),
            Ok(Next::Ended) => None,
            Ok(Next::Failed(err)) => panic!("stream error: {err}"),
            Err(_) => panic!("neither an event nor the end within {wait:?}"),
        }
    }

    /// True when the stream ends (cleanly or not) within `wait`, whatever
    /// events come before.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Next::Ended | Next::Failed(_)) => return true,
                Ok(Next::Event(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// The `data` of an event's envelope `{"event", "timestamp", "data"}`,
/// asserting the envelope names the event.
pub fn data(event: &Event) -> Value {
    let envelope: Value = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("envelope of {event:?} is not JSON: {e}"));
    assert_eq!(
        envelope["event"],
        event.event.as_str(),
        "envelope names its event"
    );
    envelope["data"].clone()
}
