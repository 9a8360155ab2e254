//! The cluster broker: PostgreSQL LISTEN/NOTIFY, no other moving part.
//!
//! - Each event is NOTIFYed inside the transaction that appends it to the log
//!   (`Broker::notification`, sent by the `Publisher`), so other servers hear of it at commit and never of a
//!   rolled-back change. The publishing server delivers it locally at once
//!   and skips its own notifications.
//! - A payload that would pass NOTIFY's 8000-byte limit carries only the
//!   (stream, seq) of the event; the listener reads the rest from the log.
//! - The listener reconnects with backoff when its connection drops. While
//!   it is down `/readyz` says 503; once it is back every local feed re-reads
//!   the log after its own position (`Hub::resync_all`), so nothing committed
//!   meanwhile is lost.
//! - Control messages (force-disconnect, room membership) travel on a second
//!   channel, sent after their change commits.
//!
//! The statements and the listening connection are in `db::notify`; this
//! module says what the payloads mean.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{apply, Broker, Control};
use crate::db::notify::{self, CONTROL, MAX_PAYLOAD};
use crate::db::{event_log, Db};
use crate::domain::frame::Frame;
use crate::domain::stream::StreamKey;
use crate::push::hub::Hub;

#[derive(Serialize, Deserialize)]
struct EventNote<'a> {
    /// Origin server.
    o: &'a str,
    /// Log stream and sequence.
    k: String,
    s: i64,
    /// Name and envelope, absent when too large for NOTIFY.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    n: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    e: Option<Cow<'a, str>>,
}

/// A control message and the server that sent it (to skip its own).
#[derive(Serialize, Deserialize)]
struct ControlNote {
    o: String,
    m: Control,
}

pub struct PostgresBroker {
    hub: Hub,
    db: Db,
}

impl PostgresBroker {
    pub fn new(hub: Hub, db: Db) -> Self {
        PostgresBroker { hub, db }
    }
}

impl Broker for PostgresBroker {
    fn publish(&self, frames: &[Arc<Frame>]) {
        // Other servers were notified by the transaction itself.
        for frame in frames {
            self.hub.dispatch(frame.clone());
        }
    }

    fn control(&self, message: Control) {
        apply(&self.hub, &message);
        let note = ControlNote {
            o: self.db.server_id.to_string(),
            m: message,
        };
        let payload = serde_json::to_string(&note).expect("serializable");
        let pool = self.db.writer().clone();
        // Never block the request on the notification; a failure is logged
        // (membership is in the database and reaches streams on resume).
        tokio::spawn(async move {
            if let Err(err) = notify::notify(&pool, CONTROL, &payload).await {
                tracing::warn!(error = %err, "sending a control notification failed");
            }
        });
    }

    /// The whole event for other servers, or, when that would pass
    /// NOTIFY's size limit, only where to read it in the log.
    fn notification(&self, frame: &Frame) -> Option<String> {
        let origin = &*self.db.server_id;
        let full = EventNote {
            o: origin,
            k: frame.key.to_string(),
            s: frame.seq,
            n: Some(frame.name.as_str().into()),
            e: Some(frame.envelope.as_str().into()),
        };
        let payload = serde_json::to_string(&full).expect("serializable");
        if payload.len() <= MAX_PAYLOAD {
            return Some(payload);
        }
        let short = EventNote {
            o: origin,
            k: frame.key.to_string(),
            s: frame.seq,
            n: None,
            e: None,
        };
        Some(serde_json::to_string(&short).expect("serializable"))
    }
}

/// Run the listener until `stop`. `up` tells readiness whether it listens.
pub async fn listen(url: String, db: Db, hub: Hub, up: Arc<AtomicBool>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = notify::listen(&url, &db.server_id) => c,
        };
        match connected {
            Ok(mut listener) => {
                up.store(true, Ordering::Release);
                backoff = Duration::from_millis(100);
                tracing::info!("cluster listener connected");
                // Anything published while we were not listening is in the
                // log: every feed reads it from there.
                hub.resync_all();
                loop {
                    let received = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = listener.try_recv() => r,
                    };
                    match received {
                        Ok(Some(note)) => handle(&db, &hub, note.channel(), note.payload()).await,
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(error = %err, "cluster listener failed");
                            break;
                        }
                    }
                }
                up.store(false, Ordering::Release);
                tracing::warn!("cluster listener lost its connection; reconnecting");
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_ms = backoff.as_millis() as u64, "cluster listener cannot connect")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn handle(db: &Db, hub: &Hub, channel: &str, payload: &str) {
    if channel == CONTROL {
        match serde_json::from_str::<ControlNote>(payload) {
            Ok(note) if note.o != *db.server_id => apply(hub, &note.m),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "bad control notification"),
        }
        return;
    }
    let note: EventNote = match serde_json::from_str(payload) {
        Ok(note) => note,
        Err(err) => return tracing::warn!(error = %err, "bad event notification"),
    };
    if note.o == &*db.server_id {
        return;
    }
    let Some(key) = StreamKey::parse(&note.k) else {
        return;
    };
    let frame = match (note.n, note.e) {
        (Some(name), Some(envelope)) => {
            Frame::new(key, note.s, name.into_owned(), envelope.into_owned())
        }
        // Too large for NOTIFY: read it from the log.
        _ => match fetch(db, &note.k, note.s).await {
            Ok(Some((name, envelope))) => Frame::new(key, note.s, name, envelope),
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "reading a large event failed; feeds will resync");
                hub.resync_all();
                return;
            }
        },
    };
    hub.dispatch(Arc::new(frame));
}

async fn fetch(db: &Db, stream: &str, seq: i64) -> Result<Option<(String, String)>, sqlx::Error> {
    let mut conn = db.read.acquire().await?;
    event_log::event(&mut conn, stream, seq).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn control_notes_round_trip_with_numbers() {
        let m = Control::Membership {
            room: 7,
            user: Uuid::new_v4(),
            joined: Some(42),
        };
        let text = serde_json::to_string(&ControlNote {
            o: "a".into(),
            m: m.clone(),
        })
        .unwrap();
        let back: ControlNote = serde_json::from_str(&text).unwrap();
        assert_eq!(back.m, m);
    }
}
