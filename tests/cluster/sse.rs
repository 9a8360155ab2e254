//! An SSE client over a real socket: reqwest's body through
//! `eventsource-stream`, a real parser.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::Response;
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
    events: Events,
}

impl Sse {
    pub fn new(res: Response) -> Sse {
        let events = res
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed();
        Sse { events }
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

    /// `Some(event)` when one comes within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> Option<Next> {
        tokio::time::timeout(wait, self.next()).await.ok()
    }
}

/// The `data` of an event's envelope `{"event", "timestamp", "data"}`.
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

/// What identifies an event whatever server or connection delivered it, to
/// count deliveries: the earning (and its version), or the notification.
pub fn identity(event: &Event) -> String {
    let data = data(event);
    match event.event.as_str() {
        "earnings:new" | "earnings:deleted" => format!("{} {}", event.event, data["id"]),
        "earnings:updated" => format!("{} {} {}", event.event, data["id"], data["updatedAt"]),
        "notification" => format!("notification {}", data["id"]),
        _ => format!("{} {}", event.event, event.data),
    }
}
