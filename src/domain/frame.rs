//! `Frame`: one logged event, encoded once. The SSE bytes (`event:` and
//! `data:` lines) are built when the event is appended and shared, as
//! reference-counted `Bytes`, by every subscriber that delivers it; only the
//! per-subscriber `id:` line is written per stream.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Serialize;

use super::event::Topic;
use super::stream::StreamKey;

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
    /// `sse` as self-contained DEFLATE blocks, made by the first compressed
    /// stream that delivers the frame and shared by the others.
    pub deflated: OnceLock<Bytes>,
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
            deflated: OnceLock::new(),
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({} #{} {})", self.key, self.seq, self.name)
    }
}
