//! `Frame`: one logged event, encoded once. The SSE bytes (`event:` and
//! `data:` lines) are built when the event is appended and shared, as
//! reference-counted `Bytes`, by every subscriber that delivers it; only the
//! per-subscriber `id:` line is written per stream.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

use crate::domain::event::Topic;

/// A log stream: each has its own gap-free sequence (see `db::event_log`).
/// A user's cursor composes the positions of the streams that user follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKey {
    /// Events for one user.
    User(Uuid),
    /// Events for everyone (broadcast notifications, `{"all":true}` events).
    Broadcast,
    /// Events for the members of a room, by room id.
    Room(i64),
}

impl StreamKey {
    pub fn parse(s: &str) -> Option<StreamKey> {
        if s == "b" {
            return Some(StreamKey::Broadcast);
        }
        if let Some(id) = s.strip_prefix("u:") {
            return Uuid::parse_str(id).ok().map(StreamKey::User);
        }
        s.strip_prefix("r:")?.parse().ok().map(StreamKey::Room)
    }
}

impl fmt::Display for StreamKey {
    /// The form stored in the `stream` column of the log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamKey::User(id) => write!(f, "u:{id}"),
            StreamKey::Broadcast => f.write_str("b"),
            StreamKey::Room(id) => write!(f, "r:{id}"),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    event: &'a str,
    timestamp: &'a str,
    data: &'a serde_json::value::RawValue,
}

pub struct Frame {
    pub key: StreamKey,
    pub seq: i64,
    pub topic: Topic,
    pub name: String,
    /// The envelope `{"event","timestamp","data"}` as one JSON line.
    pub envelope: String,
    /// `event: <name>\ndata: <envelope>\n\n`, shared by all subscribers.
    pub sse: Bytes,
}

impl Frame {
    /// Build the envelope of a new event. `data` is serialized exactly once.
    pub fn envelope(name: &str, timestamp: &str, data: &serde_json::Value) -> String {
        let data = serde_json::value::to_raw_value(data).expect("JSON values always serialize");
        serde_json::to_string(&Envelope {
            event: name,
            timestamp,
            data: &data,
        })
        .expect("JSON values always serialize")
    }

    pub fn new(key: StreamKey, seq: i64, name: String, envelope: String) -> Frame {
        let mut sse = Vec::with_capacity(name.len() + envelope.len() + 16);
        sse.extend_from_slice(b"event: ");
        sse.extend_from_slice(name.as_bytes());
        sse.extend_from_slice(b"\ndata: ");
        sse.extend_from_slice(envelope.as_bytes());
        sse.extend_from_slice(b"\n\n");
        Frame {
            topic: Topic::of(&name),
            key,
            seq,
            name,
            envelope,
            sse: Bytes::from(sse),
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({} #{} {})", self.key, self.seq, self.name)
    }
}
