//! The only way a handler writes and publishes. `Publisher::write` runs the
//! handler's write as one unit on the writer (`db::writer`): the unit writes
//! through its `Tx` and appends its events to the log (`Tx::append`); once
//! committed, what it appended goes to the broker, in commit order. A
//! rolled-back unit publishes nothing, and publishing can neither fail nor
//! block the request.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::broker::{Broker, Control};
use crate::db::exec::Exec;
use crate::db::{event_log, notifications, Db};
use crate::domain::event::DomainEvent;
use crate::domain::frame::Frame;
use crate::domain::notification::Notification;
use crate::domain::stream::StreamKey;

#[derive(Clone)]
pub struct Publisher {
    db: Db,
    broker: Arc<dyn Broker>,
}

/// One write of a publish request (`Publisher::commit_writes`).
pub enum Write {
    /// Append `event` to stream `key`.
    Append(StreamKey, DomainEvent),
    /// Store `notification` for its owner (`None`: a broadcast, listed for
    /// everyone) and append it to the owner's stream.
    Notification(Option<Uuid>, Notification),
}

impl Write {
    fn key(&self) -> StreamKey {
        match self {
            Write::Append(key, _) => key.clone(),
            Write::Notification(owner, _) => owner.map_or(StreamKey::Broadcast, StreamKey::User),
        }
    }
}

impl Publisher {
    pub fn new(db: Db, broker: Arc<dyn Broker>) -> Self {
        Publisher { db, broker }
    }

    /// Commit writes that need nothing from their transaction but its
    /// success (the publish routes, where services publish at rate).
    pub async fn commit_writes(&self, writes: Vec<Write>) -> Result<(), sqlx::Error> {
        let Some(first) = writes.first() else {
            return Ok(());
        };
        let shard = first.key();
        if writes.iter().all(|w| matches!(w, Write::Append(..))) {
            return self.append(&shard, writes).await;
        }
        self.write(&shard, move |tx| {
            Box::pin(async move {
                // The rows first, then every event in one go, in order.
                let mut notices = Vec::new();
                for write in &writes {
                    if let Write::Notification(owner, n) = write {
                        notifications::insert(tx.conn(), *owner, n).await?;
                        notices.push((write.key(), DomainEvent::notification(n)));
                    }
                }
                let mut notices = notices.iter();
                let events: Vec<_> = writes
                    .iter()
                    .filter_map(|write| match write {
                        Write::Append(key, event) => Some((key, event)),
                        Write::Notification(..) => notices.next().map(|(key, event)| (key, event)),
                    })
                    .collect();
                tx.append_many(&events).await
            })
        })
        .await
    }

    /// Events alone, as a pure append (`Writer::append`): the publishes of
    /// a batch share one statement.
    async fn append(&self, shard: &StreamKey, writes: Vec<Write>) -> Result<(), sqlx::Error> {
        let events = writes
            .into_iter()
            .filter_map(|write| match write {
                Write::Append(key, event) => Some((key, event)),
                Write::Notification(..) => None,
            })
            .collect();
        let broker = self.broker.clone();
        self.db
            .writes
            .append(shard_of(shard), events, move |frames| {
                let frames: Vec<_> = frames.drain(..).map(Arc::new).collect();
                publish(broker.as_ref(), &frames)
            })
            .await?;
        Ok(())
    }

    /// Run `unit` as one transaction on the writer: the change, the events
    /// it appends and whatever else it writes commit together or not at
    /// all (a unit that returns `Err` is rolled back). Its events are
    /// published once committed; then its result is returned. `shard` is
    /// the stream it mostly appends to: units of one stream share a writer
    /// (on PostgreSQL, where there are several).
    pub async fn write<T, E, F>(&self, shard: &StreamKey, unit: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
        F: for<'t, 'c> FnOnce(&'t mut Tx<'c>) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
    {
        let broker = self.broker.clone();
        let shard = shard_of(shard);
        let (out, _) = self
            .db
            .writes
            .run::<_, E, _, _>(
                shard,
                move |conn| {
                    Box::pin(async move {
                        let mut tx = Tx {
                            conn,
                            frames: Vec::new(),
                        };
                        let out = unit(&mut tx).await?;
                        Ok((out, tx.frames))
                    })
                },
                move |(_, frames): &mut (T, Vec<Arc<Frame>>)| {
                    publish(broker.as_ref(), &std::mem::take(frames))
                },
            )
            .await?;
        Ok(out)
    }

    /// Send a control message to every server (after its change committed).
    pub fn control(&self, message: Control) {
        self.broker.control(message);
    }
}

/// The writer of a stream's units (on PostgreSQL, where there are several).
fn shard_of(key: &StreamKey) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

/// Hand committed `frames` to the broker, counted by topic.
pub(super) fn publish(broker: &dyn Broker, frames: &[Arc<Frame>]) {
    if frames.is_empty() {
        return;
    }
    for frame in frames {
        metrics::counter!("earntrack_events_published_total", "topic" => frame.topic.label())
            .increment(1);
    }
    broker.publish(frames);
}

/// A unit's transaction (`Publisher::write`): its connection, and the
/// events it appended to the log, published after the commit.
pub struct Tx<'c> {
    conn: &'c mut dyn Exec,
    frames: Vec<Arc<Frame>>,
}

impl Tx<'_> {
    pub fn conn(&mut self) -> &mut dyn Exec {
        &mut *self.conn
    }

    /// Append `event` to stream `key` inside this transaction; its sequence.
    /// Other servers hear of the event from the broker after the commit (a
    /// rolled-back event is never announced), and find it in the log if
    /// that hint is lost.
    pub async fn append(
        &mut self,
        key: StreamKey,
        event: &DomainEvent,
    ) -> Result<i64, sqlx::Error> {
        let frame = event_log::append(&mut *self.conn, key, event).await?;
        let seq = frame.seq;
        self.frames.push(Arc::new(frame));
        Ok(seq)
    }

    /// Append several events, in order, as `append` each would (one
    /// statement on PostgreSQL: one round trip instead of one per event).
    pub async fn append_many(
        &mut self,
        events: &[(&StreamKey, &DomainEvent)],
    ) -> Result<(), sqlx::Error> {
        let frames = event_log::append_many(&mut *self.conn, events).await?;
        self.frames.extend(frames.into_iter().map(Arc::new));
        Ok(())
    }
}
