//! The only way a handler writes and publishes: `Publisher::begin` opens the
//! write transaction, the handler writes through it and appends its events
//! to the log (`WriteTx::append`), and `Publisher::commit` commits, then
//! hands what was appended to the broker. Publishing after a successful
//! commit can neither fail nor block the request.
//!
//! The publisher owns the transaction from begin to commit, so one writer
//! task can later run it as a unit; the SQL itself is in `db::event_log`.

use std::sync::Arc;

use sqlx::{AnyConnection, Transaction};

use super::broker::{Broker, Control};
use super::committer::{Committer, Write};
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
    /// success: group-committed with other requests' on PostgreSQL
    /// (`committer`), in a transaction of their own on SQLite.
    pub async fn commit_writes(&self, writes: Vec<Write>) -> Result<(), sqlx::Error> {
        match &self.committer {
            Some(committer) => committer.commit(writes).await,
            None => {
                let frames = super::committer::run(&self.db, std::iter::once(&writes)).await?;
                publish(self.broker.as_ref(), &frames);
                Ok(())
            }
        }
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
        let frame = event_log::append(&mut self.tx, key, event).await?;
        let seq = frame.seq;
        self.frames.push(Arc::new(frame));
        Ok(seq)
    }
}
