//! The only way a handler writes and publishes. `Publisher::write` runs the
//! handler's write as one unit on the writer (`db::writer`): the unit writes
//! through its `Tx` and appends its events to the log (`Tx::append`); once
//! committed, what it appended goes to the broker, in commit order. A
//! rolled-back unit publishes nothing, and publishing can neither fail nor
//! block the request.
//!
//! `Publisher::begin`/`commit` (an open sqlx transaction, `WriteTx`) remain
//! for the less frequent writes (accounts, platforms, rooms, notification
//! read state) whose statements are not yet written for `db::exec`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, Transaction};

use super::broker::{Broker, Control};
use super::committer::{Committer, Write};
use crate::db::exec::Exec;
use crate::db::{event_log, Backend, Db};
use crate::domain::event::DomainEvent;
use crate::domain::frame::Frame;
use crate::domain::stream::StreamKey;

#[derive(Clone)]
pub struct Publisher {
    db: Db,
    broker: Arc<dyn Broker>,
    /// PostgreSQL only: there a commit waits for a WAL flush, which a batch
    /// shares. SQLite's commits (WAL, synchronous=NORMAL) flush nothing, so
    /// a hand-off to a committer task would only add its hop (publish p99
    /// 0.9 -> 1.4 ms measured): writes go straight to the single writer.
    committer: Option<Committer>,
}

impl Publisher {
    /// Starts four group committers (`committer`) on PostgreSQL.
    pub fn new(db: Db, broker: Arc<dyn Broker>) -> Self {
        let committer = (db.backend == Backend::Postgres)
            .then(|| Committer::start(db.clone(), broker.clone(), 4));
        Publisher {
            db,
            broker,
            committer,
        }
    }

    /// Commit writes that need nothing from their transaction but its
    /// success: group-committed with other requests' (by `committer` on
    /// PostgreSQL, by the writer thread on SQLite).
    pub async fn commit_writes(&self, writes: Vec<Write>) -> Result<(), sqlx::Error> {
        match &self.committer {
            Some(committer) => committer.commit(writes).await,
            None => {
                self.write(move |tx| Box::pin(super::committer::apply(tx, writes)))
                    .await
            }
        }
    }

    /// Run `unit` as one transaction on the writer: the change, the events
    /// it appends and whatever else it writes commit together or not at
    /// all (a unit that returns `Err` is rolled back). Its events are
    /// published once committed; then its result is returned.
    pub async fn write<T, E, F>(&self, unit: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
        F: for<'t, 'c> FnOnce(&'t mut Tx<'c>) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
    {
        let broker = self.broker.clone();
        let (out, _) = self
            .db
            .writes
            .run::<_, E, _, _>(
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

    /// Open a write transaction (on SQLite, wait for the single writer).
    pub async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        Ok(WriteTx {
            tx: self.db.begin_write().await?,
            frames: Vec::new(),
        })
    }

    /// Commit `tx` and publish its events, in the order they were appended.
    pub async fn commit(&self, tx: WriteTx) -> Result<(), sqlx::Error> {
        let WriteTx { tx, frames, .. } = tx;
        tx.commit().await?;
        publish(self.broker.as_ref(), &frames);
        Ok(())
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
        self.appended(frame);
        Ok(seq)
    }

    /// Publish `frame`, appended to the log in this transaction, after the
    /// commit.
    pub(super) fn appended(&mut self, frame: Frame) {
        self.frames.push(Arc::new(frame));
    }
}

/// A write transaction that collects the events it appends to the log; they
/// are handed to the broker only after `Publisher::commit` succeeds, so a
/// rolled-back change never publishes anything.
pub struct WriteTx {
    tx: Transaction<'static, sqlx::Any>,
    frames: Vec<Arc<Frame>>,
}

impl WriteTx {
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Append `event` to stream `key` inside this transaction; its sequence.
    /// Nothing else happens in the transaction: other servers hear of the
    /// event from the broker after the commit (a rolled-back event is never
    /// announced), and find it in the log if that hint is lost.
    pub async fn append(
        &mut self,
        key: StreamKey,
        event: &DomainEvent,
    ) -> Result<i64, sqlx::Error> {
        let frame = event_log::append(&mut *self.tx, key, event).await?;
        let seq = frame.seq;
        self.frames.push(Arc::new(frame));
        Ok(seq)
    }
}
