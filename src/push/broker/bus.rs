//! The cluster bus: how servers sharing one database tell each other about
//! committed events. The event log is the truth; a bus message is a hint.
//! The same rules hold on every transport (`Transport`): PostgreSQL
//! LISTEN/NOTIFY (the default, no other moving part), Redis pub/sub
//! (`EARNTRACK_BUS_URL=redis://…`, the original design's "Redis adapter")
//! or NATS core pub/sub (`EARNTRACK_BUS_URL=nats://…`).
//!
//! - A write transaction only appends to the log. After it commits, the
//!   publishing server delivers its events locally at once and queues them
//!   for the notifier, which publishes them on a connection of its own, many
//!   to a message (whatever queued while the previous message was on its
//!   way): no writer ever holds PostgreSQL's instance-wide NOTIFY lock, so
//!   writers on every server commit side by side.
//! - A hint that is lost, late, repeated or out of order costs latency, never
//!   an event: a feed that sees a hole in a stream's sequence reads the log
//!   (`Feed`), and one that sees a sequence again skips it.
//! - A server that dies between a commit and its message: every server reads
//!   the log's high-water marks of the last moments every `CHECK_EVERY`
//!   and sends the feeds of any stream it has not heard up to date to the
//!   log. The bound is `GRACE + CHECK_EVERY` (under a second).
//! - A payload stays under NOTIFY's 8000-byte limit (on every transport); an
//!   event too large for it travels as its (stream, seq) only, and the
//!   listener reads the rest from the log.
//! - The listener reconnects with backoff when its connection drops. While
//!   it is down `/readyz` says 503; once it is back every local feed re-reads
//!   the log after its own position (`Hub::resync_all`), so nothing committed
//!   meanwhile is lost. A transport must let a drop be seen: NATS's client,
//!   which would reconnect quietly, ends at its first one instead (`nats`).
//! - Control messages (force-disconnect, room membership) travel on a second
//!   channel, sent after their change commits.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{apply, Broker, Control};
use crate::db::notify::MAX_PAYLOAD;
use crate::db::{event_log, Db};
use crate::domain::frame::Frame;
use crate::domain::stream::StreamKey;
use crate::domain::time::now_ms;
use crate::push::hub::Hub;

#[derive(Serialize, Deserialize)]
struct EventNote<'a> {
    /// Log stream and sequence.
    k: String,
    s: i64,
    /// Name and envelope, absent when too large for one message.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    n: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    e: Option<Cow<'a, str>>,
}

/// One message: the events a server committed since its previous one.
#[derive(Serialize, Deserialize)]
struct Batch<'a> {
    /// Origin server.
    o: &'a str,
    #[serde(borrow)]
    f: Vec<EventNote<'a>>,
}

/// A control message and the server that sent it (to skip its own).
#[derive(Serialize, Deserialize)]
struct ControlNote {
    o: String,
    m: Control,
}

/// The two channels, on every transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Events,
    Control,
}

/// What carries the hints: PostgreSQL's LISTEN/NOTIFY, Redis pub/sub or
/// NATS core pub/sub.
#[derive(Clone, Debug)]
pub enum Transport {
    Postgres { url: String },
    Redis { url: String },
    Nats { url: String },
}

impl Transport {
    /// PostgreSQL unless `bus_url` names a Redis or a NATS server.
    pub fn from_config(database_url: &str, bus_url: Option<&str>) -> anyhow::Result<Transport> {
        match bus_url.filter(|u| !u.is_empty()) {
            None => Ok(Transport::Postgres {
                url: database_url.to_owned(),
            }),
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Ok(Transport::Redis {
                    url: url.to_owned(),
                })
            }
            Some(url) if url.starts_with("nats://") || url.starts_with("tls://") => {
                Ok(Transport::Nats {
                    url: url.to_owned(),
                })
            }
            Some(_) => anyhow::bail!(
                "EARNTRACK_BUS_URL must start with redis://, rediss://, nats:// or tls://"
            ),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Transport::Postgres { .. } => "postgres",
            Transport::Redis { .. } => "redis",
            Transport::Nats { .. } => "nats",
        }
    }

    async fn publisher(&self, bus: &Bus) -> anyhow::Result<Publisher> {
        Ok(match self {
            Transport::Postgres { url } => Publisher::Postgres(
                super::postgres::Notifier::connect(url, &bus.db.server_id).await?,
            ),
            Transport::Redis { url } => {
                Publisher::Redis(super::redis::Publisher::connect(url, &bus.db.log_id).await?)
            }
            Transport::Nats { url } => Publisher::Nats(
                super::nats::Publisher::connect(url, &bus.db.log_id, &bus.db.server_id).await?,
            ),
        })
    }

    async fn subscriber(&self, bus: &Bus) -> anyhow::Result<Subscriber> {
        Ok(match self {
            Transport::Postgres { url } => Subscriber::Postgres(
                super::postgres::Listener::connect(url, &bus.db.server_id).await?,
            ),
            Transport::Redis { url } => {
                Subscriber::Redis(super::redis::Subscriber::connect(url, &bus.db.log_id).await?)
            }
            Transport::Nats { url } => Subscriber::Nats(
                super::nats::Subscriber::connect(url, &bus.db.log_id, &bus.db.server_id).await?,
            ),
        })
    }
}

enum Publisher {
    Postgres(super::postgres::Notifier),
    Redis(super::redis::Publisher),
    Nats(super::nats::Publisher),
}

impl Publisher {
    async fn send(&mut self, channel: Channel, payload: &str) -> anyhow::Result<()> {
        match self {
            Publisher::Postgres(p) => p.send(channel, payload).await,
            Publisher::Redis(p) => p.send(channel, payload).await,
            Publisher::Nats(p) => p.send(channel, payload).await,
        }
    }
}

enum Subscriber {
    Postgres(super::postgres::Listener),
    Redis(super::redis::Subscriber),
    Nats(super::nats::Subscriber),
}

impl Subscriber {
    /// The next message; `None` when the connection ended.
    async fn recv(&mut self) -> anyhow::Result<Option<(Channel, String)>> {
        match self {
            Subscriber::Postgres(s) => s.recv().await,
            Subscriber::Redis(s) => s.recv().await,
            Subscriber::Nats(s) => s.recv().await,
        }
    }
}

/// How often every server compares the log's high-water marks with what
/// it heard, and how old an event must be before its hint counts as lost
/// (a message takes about a millisecond; a commit may land a little after
/// its events were stamped).
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
const GRACE_MS: i64 = 300;
/// How far back each check looks (a check may run late on a busy box).
const LOOK_BACK_MS: i64 = 5_000;
/// Messages waiting for the notifier; past this a hint is dropped
/// (counted), and the high-water check finds its event instead.
const OUTBOX: usize = 65_536;

enum Outgoing {
    Event(Arc<Frame>),
    Control(String),
}

/// This server's side of the bus: what waits to be published, and the last
/// sequence heard of each recently active stream.
pub struct Bus {
    db: Db,
    hub: Hub,
    pub transport: Transport,
    outbox: mpsc::Sender<Outgoing>,
    outbox_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// stream -> (last sequence heard, when, ms)
    heard: Mutex<HashMap<StreamKey, (i64, i64)>>,
    /// Test failpoint: commit without ever publishing a hint, as a server
    /// that dies right after its commits would.
    silent: bool,
}

impl Bus {
    pub fn new(db: Db, hub: Hub, transport: Transport, silent: bool) -> Arc<Bus> {
        let (outbox, rx) = mpsc::channel(OUTBOX);
        Arc::new(Bus {
            db,
            hub,
            transport,
            outbox,
            outbox_rx: Mutex::new(Some(rx)),
            heard: Mutex::new(HashMap::new()),
            silent,
        })
    }

    fn heard(&self, frame: &Frame) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let entry = heard.entry(frame.key.clone()).or_insert((0, 0));
        if frame.seq > entry.0 {
            *entry = (frame.seq, now_ms());
        }
    }

    /// Deliver `frame` to this server's feeds, and remember it was heard.
    fn dispatch(&self, frame: Arc<Frame>) {
        self.heard(&frame);
        self.hub.dispatch(frame);
    }

    fn queue(&self, message: Outgoing) {
        if self.outbox.try_send(message).is_err() {
            metrics::counter!("earntrack_bus_hints_dropped_total").increment(1);
        }
    }
}

/// The broker of a cluster member: local delivery at once, the bus after.
pub struct BusBroker {
    bus: Arc<Bus>,
}

impl BusBroker {
    pub fn new(bus: Arc<Bus>) -> Self {
        BusBroker { bus }
    }
}

impl Broker for BusBroker {
    fn publish(&self, frames: &[Arc<Frame>]) {
        for frame in frames {
            self.bus.dispatch(frame.clone());
            if !self.bus.silent {
                self.bus.queue(Outgoing::Event(frame.clone()));
            }
        }
    }

    fn control(&self, message: Control) {
        apply(&self.bus.hub, &message);
        let note = ControlNote {
            o: self.bus.db.server_id.to_string(),
            m: message,
        };
        // A lost one is logged by the notifier; membership is in the
        // database and reaches streams on resume.
        self.bus.queue(Outgoing::Control(
            serde_json::to_string(&note).expect("serializable"),
        ));
    }
}

/// `frame` as a note: the whole event, or, when that alone would pass the
/// size limit, only where to read it in the log.
fn note(frame: &Frame, room: usize) -> String {
    let full = EventNote {
        k: frame.key.to_string(),
        s: frame.seq,
        n: Some(frame.name.as_str().into()),
        e: Some(frame.envelope.as_str().into()),
    };
    let text = serde_json::to_string(&full).expect("serializable");
    if text.len() <= room {
        return text;
    }
    let short = EventNote {
        n: None,
        e: None,
        ..full
    };
    serde_json::to_string(&short).expect("serializable")
}

/// The payloads (`Batch`es) that carry `frames`, in order, each under the
/// size limit.
fn payloads(origin: &str, frames: &[Arc<Frame>]) -> Vec<String> {
    let head = format!(
        "{{\"o\":{},\"f\":[",
        serde_json::to_string(origin).expect("serializable")
    );
    let room = MAX_PAYLOAD - head.len() - 2;
    let mut out = Vec::new();
    let mut payload = head.clone();
    for frame in frames {
        let n = note(frame, room);
        if payload.len() > head.len() && payload.len() + 1 + n.len() + 2 > MAX_PAYLOAD {
            payload.push_str("]}");
            out.push(std::mem::replace(&mut payload, head.clone()));
        }
        if payload.len() > head.len() {
            payload.push(',');
        }
        payload.push_str(&n);
    }
    if payload.len() > head.len() {
        payload.push_str("]}");
        out.push(payload);
    }
    out
}

/// Messages taken from the outbox per round (each round is one or a few
/// messages on the wire).
const ROUND: usize = 512;

/// Publish what is queued until `stop`, on a connection of its own,
/// reconnecting with backoff. Whatever queued while the previous message was
/// on its way goes in the next: no waiting to fill a batch, so a quiet
/// server's event leaves at once and a busy one's share a message.
pub async fn notifier(bus: Arc<Bus>, stop: CancellationToken) {
    let Some(mut rx) = bus
        .outbox_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    let origin = bus.db.server_id.to_string();
    let mut publisher: Option<Publisher> = None;
    let mut backoff = Duration::from_millis(100);
    let mut round = Vec::with_capacity(ROUND);
    loop {
        round.clear();
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut round, ROUND) => n,
        };
        if received == 0 {
            return;
        }
        if publisher.is_none() {
            match bus.transport.publisher(&bus).await {
                Ok(p) => {
                    publisher = Some(p);
                    backoff = Duration::from_millis(100);
                }
                Err(err) => {
                    // These hints are lost; the high-water check finds
                    // their events on the other servers.
                    tracing::warn!(error = %err, dropped = round.len(), "the bus notifier cannot connect");
                    metrics::counter!("earntrack_bus_hints_dropped_total")
                        .increment(round.len() as u64);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let Some(p) = publisher.as_mut() else {
            continue;
        };
        let mut frames = Vec::with_capacity(round.len());
        let mut messages = Vec::new();
        for outgoing in round.drain(..) {
            match outgoing {
                Outgoing::Event(frame) => frames.push(frame),
                Outgoing::Control(payload) => messages.push((Channel::Control, payload)),
            }
        }
        messages.extend(
            payloads(&origin, &frames)
                .into_iter()
                .map(|p| (Channel::Events, p)),
        );
        for (channel, payload) in &messages {
            if let Err(err) = p.send(*channel, payload).await {
                tracing::warn!(error = %err, "the bus notifier lost its connection");
                metrics::counter!("earntrack_bus_hints_dropped_total").increment(1);
                publisher = None;
                break;
            }
        }
        metrics::counter!("earntrack_bus_hints_sent_total").increment(frames.len() as u64);
    }
}

/// Every `CHECK_EVERY`: streams whose log went further than this server
/// heard (a hint lost with its server, or dropped) get their feeds sent to
/// the log. Entries older than the look-back are forgotten, so the map
/// holds only recently active streams.
pub async fn high_water(bus: Arc<Bus>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let marks = async {
            let mut conn = bus.db.read.acquire().await?;
            event_log::high_water(&mut conn, now - LOOK_BACK_MS, now - GRACE_MS).await
        };
        let marks = match marks.await {
            Ok(marks) => marks,
            Err(err) => {
                tracing::warn!(error = %err, "reading the log's high-water marks failed");
                continue;
            }
        };
        let mut behind = Vec::new();
        {
            let mut heard = bus.heard.lock().unwrap_or_else(|p| p.into_inner());
            for (stream, seq) in marks {
                let Some(key) = StreamKey::parse(&stream) else {
                    continue;
                };
                let entry = heard.entry(key.clone()).or_insert((0, now));
                if seq > entry.0 {
                    *entry = (seq, now);
                    behind.push(key);
                }
            }
            heard.retain(|_, (_, at)| *at >= now - 2 * LOOK_BACK_MS);
        }
        for key in &behind {
            bus.hub.resync_stream(key);
        }
        if !behind.is_empty() {
            metrics::counter!("earntrack_bus_high_water_resyncs_total")
                .increment(behind.len() as u64);
            tracing::debug!(
                streams = behind.len(),
                "streams caught up from the log's high-water marks"
            );
        }
    }
}

/// Run the listener until `stop`. `up` tells readiness whether it listens.
pub async fn listen(bus: Arc<Bus>, up: Arc<AtomicBool>, stop: CancellationToken) {
    let transport = bus.transport.name();
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = bus.transport.subscriber(&bus) => c,
        };
        match connected {
            Ok(mut subscriber) => {
                up.store(true, Ordering::Release);
                backoff = Duration::from_millis(100);
                tracing::info!(transport, "cluster listener connected");
                // Anything published while we were not listening is in the
                // log: every feed reads it from there.
                bus.hub.resync_all();
                loop {
                    let received = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = subscriber.recv() => r,
                    };
                    match received {
                        Ok(Some((channel, payload))) => handle(&bus, channel, &payload).await,
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(transport, error = %err, "cluster listener failed");
                            break;
                        }
                    }
                }
                up.store(false, Ordering::Release);
                tracing::warn!(
                    transport,
                    "cluster listener lost its connection; reconnecting"
                );
            }
            Err(err) => {
                tracing::warn!(transport, error = %err, retry_ms = backoff.as_millis() as u64, "cluster listener cannot connect")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn handle(bus: &Bus, channel: Channel, payload: &str) {
    let (db, hub) = (&bus.db, &bus.hub);
    if channel == Channel::Control {
        match serde_json::from_str::<ControlNote>(payload) {
            Ok(note) if note.o != *db.server_id => apply(hub, &note.m),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "bad control message"),
        }
        return;
    }
    let batch: Batch = match serde_json::from_str(payload) {
        Ok(batch) => batch,
        Err(err) => return tracing::warn!(error = %err, "bad event message"),
    };
    if batch.o == &*db.server_id {
        return;
    }
    for note in batch.f {
        let Some(key) = StreamKey::parse(&note.k) else {
            continue;
        };
        let frame = match (note.n, note.e) {
            (Some(name), Some(envelope)) => {
                Frame::new(key, note.s, name.into_owned(), envelope.into_owned())
            }
            // Too large for one message: read it from the log.
            _ => match fetch(db, &note.k, note.s).await {
                Ok(Some((name, envelope))) => Frame::new(key, note.s, name, envelope),
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "reading a large event failed; feeds will resync");
                    hub.resync_all();
                    continue;
                }
            },
        };
        bus.dispatch(Arc::new(frame));
    }
}

async fn fetch(db: &Db, stream: &str, seq: i64) -> Result<Option<(String, String)>, sqlx::Error> {
    let mut conn = db.read.acquire().await?;
    event_log::event(&mut conn, stream, seq).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn frame(seq: i64, size: usize) -> Arc<Frame> {
        let envelope = format!(
            "{{\"event\":\"x\",\"data\":\"{}\"}}",
            "\\\"".repeat(size / 2)
        );
        Arc::new(Frame::new(
            StreamKey::User(Uuid::nil()),
            seq,
            "x".into(),
            envelope,
        ))
    }

    #[test]
    fn batches_stay_under_the_notify_limit_and_keep_every_event_in_order() {
        // Quotes double when escaped: sizes are measured, not guessed.
        let frames: Vec<_> = (1..=60)
            .map(|i| frame(i, (i as usize * 97) % 3000))
            .chain([frame(61, 20_000)])
            .collect();
        let payloads = payloads("server-a", &frames);
        assert!(payloads.len() > 1);
        let mut seqs = vec![];
        for p in &payloads {
            assert!(p.len() <= MAX_PAYLOAD, "{} bytes", p.len());
            let batch: Batch = serde_json::from_str(p).unwrap();
            assert_eq!(batch.o, "server-a");
            for n in batch.f {
                seqs.push(n.s);
                if n.s == 61 {
                    assert!(n.e.is_none(), "too large: only where to read it");
                } else {
                    assert!(n.e.is_some());
                }
            }
        }
        assert_eq!(seqs, (1..=61).collect::<Vec<_>>());
    }

    #[test]
    fn the_bus_url_picks_the_transport_by_its_scheme() {
        let pick = |bus| Transport::from_config("postgres://db", bus).map(|t| t.name());
        assert_eq!(pick(None).unwrap(), "postgres");
        assert_eq!(pick(Some("")).unwrap(), "postgres");
        assert_eq!(pick(Some("redis://r:6379/")).unwrap(), "redis");
        assert_eq!(pick(Some("rediss://r:6380/")).unwrap(), "redis");
        assert_eq!(pick(Some("nats://n:4222")).unwrap(), "nats");
        assert_eq!(pick(Some("tls://n:4222")).unwrap(), "nats");
        let refused = pick(Some("amqp://q")).unwrap_err().to_string();
        assert!(refused.contains("nats://"), "{refused}");
    }

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
