//! The only way a handler writes and publishes. `Publisher::write` runs the
//! handler's write as one unit on the writer (`db::writer`): the unit writes
//! through its `Tx` and appends its events to the log (`Tx::append`); once
//! committed, what it appended goes to the broker, in commit order. A
//! rolled-back unit publishes nothing, and publishing can neither fail nor
//! block the request.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::broker::{Broker, Control};
use crate::db::exec::{Exec, Statement};
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

impl Publisher {
    pub fn new(db: Db, broker: Arc<dyn Broker>) -> Self {
        Publisher { db, broker }
    }

    /// Publish `events` (a publish route's, where services publish at
    /// rate): a pure append (`Writer::append`), so the publishes of a batch
    /// share one statement.
    pub async fn publish_events(
        &self,
        events: Vec<(StreamKey, DomainEvent)>,
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let broker = self.broker.clone();
        self.db
            .writes
            .append(events, move |frames| {
                let frames: Vec<_> = frames.drain(..).map(Arc::new).collect();
                publish(broker.as_ref(), &frames)
            })
            .await?;
        Ok(())
    }

    /// Store each notification for its owner (`None`: a broadcast, listed
    /// for everyone) and append it to the owner's stream, all in one unit.
    pub async fn publish_notifications(
        &self,
        notifications: Vec<(Option<Uuid>, Notification)>,
    ) -> Result<(), sqlx::Error> {
        let key = |owner: Option<Uuid>| owner.map_or(StreamKey::Broadcast, StreamKey::User);
        let Some((first, _)) = notifications.first() else {
            return Ok(());
        };
        let shard = key(*first);
        let notifications = Arc::new(notifications);
        self.write(&shard, move |tx| {
            let notifications = notifications.clone();
            Box::pin(async move {
                let rows = notifications
                    .iter()
                    .map(|(owner, n)| notifications::insert(*owner, n))
                    .collect();
                let events: Vec<_> = notifications
                    .iter()
                    .map(|(owner, n)| (key(*owner), DomainEvent::notification(n)))
                    .collect();
                let events: Vec<_> = events.iter().map(|(k, e)| (k, e)).collect();
                tx.append_with(rows, &events).await
            })
        })
        .await
    }

    /// Run `unit` as one transaction on the writer: the change, the events
    /// it appends and whatever else it writes commit together or not at
    /// all (a unit that returns `Err` is rolled back). Its events are
    /// published once committed; then its result is returned. `shard` is
    /// the stream it mostly appends to: units of one stream share a writer
    /// (on PostgreSQL, where there are several). The unit may run more
    /// than once (`db::writer`: its batch may start over), so it clones
    /// what it consumes and writes only through its `Tx`.
    pub async fn write<T, E, F>(&self, shard: &StreamKey, unit: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
        F: for<'t, 'c> Fn(&'t mut Tx<'c>) -> BoxFuture<'t, Result<T, E>> + Send + Sync + 'static,
    {
        let broker = self.broker.clone();
        let unit = Arc::new(unit);
        let (out, _) = self
            .db
            .writes
            .run::<_, E, _, _>(
                Some(shard.clone()),
                move |conn| {
                    let unit = unit.clone();
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
        self.append_with(Vec::new(), events).await
    }

    /// Run `changes`, then append `events` as `append_many` does: on
    /// PostgreSQL all in one statement (`event_log::append_many_with`).
    pub async fn append_with(
        &mut self,
        changes: Vec<Statement>,
        events: &[(&StreamKey, &DomainEvent)],
    ) -> Result<(), sqlx::Error> {
        let frames = event_log::append_many_with(&mut *self.conn, changes, events).await?;
        self.frames.extend(frames.into_iter().map(Arc::new));
        Ok(())
    }
}
