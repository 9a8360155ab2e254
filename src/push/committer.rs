//! Group commit for the writes that need nothing back from their
//! transaction but its success: events appended to the log and the
//! notifications they carry (the admin and publisher-key publish routes,
//! where services publish at rate). Requests that arrive together share one
//! transaction and one commit; each is answered only after that commit, and
//! a batch that fails is retried one request at a time, so one bad request
//! never fails the others. A commit costs a WAL flush whether it carries one
//! event or sixty, so events per second grow with the batch.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use super::broker::Broker;
use super::publisher::Tx;
use crate::db::exec::Exec;
use crate::db::{event_log, notifications, Db};
use crate::domain::event::DomainEvent;
use crate::domain::frame::Frame;
use crate::domain::notification::Notification;
use crate::domain::stream::StreamKey;

/// One write of a request.
pub enum Write {
    /// Append `event` to stream `key`.
    Append(StreamKey, DomainEvent),
    /// Store `notification` for its owner (`None`: a broadcast, listed for
    /// everyone) and append it to the owner's stream.
    Notification(Option<Uuid>, Notification),
}

struct Job {
    writes: Vec<Write>,
    reply: oneshot::Sender<Result<(), sqlx::Error>>,
}

/// Requests one transaction carries at most.
const MAX_JOBS: usize = 64;
/// Requests waiting for a committer; past this, senders wait (backpressure).
const QUEUE: usize = 4096;

#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Job>,
}

impl Committer {
    /// `workers` committers, each with at most one transaction open: one on
    /// SQLite (one writer anyway), a few on PostgreSQL.
    pub fn start(db: Db, broker: Arc<dyn Broker>, workers: usize) -> Committer {
        let (queue, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers.max(1) {
            tokio::spawn(work(db.clone(), broker.clone(), rx.clone()));
        }
        Committer { queue }
    }

    /// Commit `writes` (in a transaction shared with whatever requests
    /// arrive at the same moment), then publish their events.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { writes, reply })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn work(db: Db, broker: Arc<dyn Broker>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            // One committer gathers a batch at a time; the others commit
            // theirs meanwhile.
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < MAX_JOBS {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        metrics::histogram!("earntrack_group_commit_requests").record(jobs.len() as f64);
        match run(&db, jobs.iter().map(|j| &j.writes)).await {
            Ok(frames) => {
                super::publisher::publish(broker.as_ref(), &frames);
                for job in jobs {
                    let _ = job.reply.send(Ok(()));
                }
            }
            Err(err) if jobs.len() == 1 => {
                let _ = jobs.pop().map(|job| job.reply.send(Err(err)));
            }
            // Which request failed is not known: each again, on its own.
            Err(_) => {
                for job in jobs {
                    let result = run(&db, std::iter::once(&job.writes)).await;
                    let result =
                        result.map(|frames| super::publisher::publish(broker.as_ref(), &frames));
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// One transaction with every write of `batch`, committed; its frames in
/// append order.
pub(super) async fn run<'a>(
    db: &Db,
    batch: impl Iterator<Item = &'a Vec<Write>>,
) -> Result<Vec<Arc<Frame>>, sqlx::Error> {
    let mut tx = db.begin_write().await?;
    let mut frames = Vec::new();
    for writes in batch {
        for write in writes {
            frames.push(Arc::new(append(&mut *tx, write).await?));
        }
    }
    tx.commit().await?;
    Ok(frames)
}

/// `writes` in a unit of the writer (SQLite).
pub(super) async fn apply(tx: &mut Tx<'_>, writes: Vec<Write>) -> Result<(), sqlx::Error> {
    for write in &writes {
        let frame = append(tx.conn(), write).await?;
        tx.appended(frame);
    }
    Ok(())
}

/// One write: its rows, and the frame of the event it appended.
async fn append(conn: &mut dyn Exec, write: &Write) -> Result<Frame, sqlx::Error> {
    match write {
        Write::Append(key, event) => event_log::append(conn, key.clone(), event).await,
        Write::Notification(owner, n) => {
            notifications::insert(conn, *owner, n).await?;
            let key = owner.map_or(StreamKey::Broadcast, StreamKey::User);
            event_log::append(conn, key, &DomainEvent::notification(n)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notification::NotificationType;
    use crate::push::broker::MemoryBroker;
    use crate::push::Hub;

    fn notification(id: Uuid) -> Notification {
        Notification {
            id,
            kind: NotificationType::Info,
            title: "t".into(),
            message: "m".into(),
            timestamp: 0,
            dismissible: true,
            duration: None,
            data: serde_json::Value::Null,
        }
    }

    /// Requests queued together share a commit, and one that fails inside
    /// the shared transaction (a notification id already stored) fails
    /// alone: the others commit and are published.
    #[tokio::test]
    async fn a_failing_request_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        let hub = Hub::new(16, 16, false);
        let committer = Committer::start(db.clone(), Arc::new(MemoryBroker::new(hub)), 1);
        let taken = Uuid::new_v4();
        committer
            .commit(vec![Write::Notification(None, notification(taken))])
            .await
            .unwrap();

        let results = futures_util::future::join_all((0..20).map(|i| {
            let id = if i == 7 { taken } else { Uuid::new_v4() };
            committer.commit(vec![
                Write::Append(
                    StreamKey::Broadcast,
                    DomainEvent::new("x", serde_json::json!(i)),
                ),
                Write::Notification(None, notification(id)),
            ])
        }))
        .await;
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 7, "request {i}: {r:?}");
        }
        let mut conn = db.read.acquire().await.unwrap();
        let position = event_log::current_position(&mut conn, Uuid::nil())
            .await
            .unwrap();
        // 1 + 19 notifications and 19 events on the broadcast stream.
        assert_eq!(position.get(&StreamKey::Broadcast), Some(39));
    }
}
