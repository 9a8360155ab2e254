//! Where a write transaction runs: handed over once, as a whole.
//!
//! A write is a unit: a closure that gets a connection (`&mut dyn Exec`)
//! and runs every statement of its transaction (the change, the log
//! appends, the notification row, the idempotency row). `Writer::run`
//! hands the unit over and waits for one answer, given after its data is
//! committed.
//!
//! On SQLite the units run on a thread of its own that owns the only write
//! connection (rusqlite, not sqlx: sqlx runs each SQLite statement on a
//! worker thread and back, about ten hand-offs per REST write, which cost
//! more than the SQL). Units that arrive while a commit is being made share
//! the next transaction (group commit), each inside a savepoint, so a unit
//! that fails is rolled back alone and the others commit. After the commit,
//! each unit's `after` runs on the writer thread in commit order (the
//! publisher hands its frames to the broker there, so events of one stream
//! reach the hub in sequence order), then its caller is answered.
//!
//! On PostgreSQL a unit runs on the caller's task in a transaction of its
//! own from the pool: many writers commit in parallel there.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use anyhow::Context;
use futures_util::future::BoxFuture;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::exec::{sqlite_error, Exec};

/// Units one SQLite transaction carries at most.
const MAX_BATCH: usize = 64;
/// Units waiting for the SQLite writer; past this, callers wait.
const QUEUE: usize = 4096;

#[derive(Clone)]
pub struct Writer {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Sqlite(mpsc::Sender<Box<dyn Job>>),
    Postgres(AnyPool),
}

impl Writer {
    /// The SQLite writer thread, on its own connection to `path`.
    pub fn sqlite(path: PathBuf) -> anyhow::Result<Writer> {
        let conn = open(&path)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || work(conn, rx))
            .context("starting the SQLite writer thread")?;
        Ok(Writer {
            inner: Inner::Sqlite(queue),
        })
    }

    pub fn postgres(pool: AnyPool) -> Writer {
        Writer {
            inner: Inner::Postgres(pool),
        }
    }

    /// Run `unit` as one transaction and answer with what it returned once
    /// that is committed; `after` runs first, once committed (and not at
    /// all when the unit fails or the commit does). A unit that returns
    /// `Err` is rolled back, and only it.
    pub async fn run<T, E, F, A>(&self, unit: F, after: A) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Exec) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
        A: FnOnce(&mut T) + Send + 'static,
    {
        match &self.inner {
            Inner::Sqlite(queue) => {
                let (reply, answer) = oneshot::channel();
                let job = Box::new(Unit {
                    unit: Some(unit),
                    after: Some(after),
                    out: None,
                    reply,
                });
                queue
                    .send(job)
                    .await
                    .map_err(|_| E::from(sqlx::Error::PoolClosed))?;
                answer
                    .await
                    .map_err(|_| E::from(sqlx::Error::WorkerCrashed))?
            }
            Inner::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let mut out = unit(&mut *tx).await?;
                tx.commit().await?;
                after(&mut out);
                Ok(out)
            }
        }
    }
}

/// A unit with its answer, type-erased for the writer thread.
trait Job: Send {
    /// Run the unit; whether it succeeded (its result is kept for `finish`).
    fn run<'c>(&'c mut self, conn: &'c mut dyn Exec) -> BoxFuture<'c, bool>;
    /// Answer the caller: with the unit's result if `committed`, else with
    /// the commit's error (or the unit's own).
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

struct Unit<F, A, T, E> {
    unit: Option<F>,
    after: Option<A>,
    out: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F, A> Job for Unit<F, A, T, E>
where
    T: Send + 'static,
    E: From<sqlx::Error> + Send + 'static,
    F: for<'c> FnOnce(&'c mut dyn Exec) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
    A: FnOnce(&mut T) + Send + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut dyn Exec) -> BoxFuture<'c, bool> {
        let unit = self.unit.take().expect("a unit runs once");
        Box::pin(async move {
            let out = unit(conn).await;
            let ok = out.is_ok();
            self.out = Some(out);
            ok
        })
    }

    fn finish(mut self: Box<Self>, committed: Result<(), String>) {
        let out = match (committed, self.out.take()) {
            (Ok(()), Some(Ok(mut out))) => {
                if let Some(after) = self.after.take() {
                    after(&mut out);
                }
                Ok(out)
            }
            (_, Some(Err(err))) => Err(err),
            (Err(err), _) => Err(E::from(sqlx::Error::Protocol(err))),
            (Ok(()), None) => Err(E::from(sqlx::Error::WorkerCrashed)),
        };
        let _ = self.reply.send(out);
    }
}

fn open(path: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)
        .with_context(|| format!("opening {} for writing", path.display()))?;
    // As the sqlx connections (db::sqlite_pool): WAL, NORMAL, no
    // checkpoint inside a commit (the checkpointer task does it).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
         PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;",
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

fn work(mut conn: rusqlite::Connection, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    // Units are async so that PostgreSQL runs the same code; here every
    // statement completes at once, and this runtime only polls them.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("earntrack_group_commit_requests").record(batch.len() as f64);
        let committed = commit(&runtime, &mut conn, &mut batch);
        if let Err(err) = &committed {
            tracing::error!(error = %err, units = batch.len(), "the SQLite writer's commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

/// One transaction with every unit of `batch`, each in a savepoint of its
/// own when there are several.
fn commit(
    runtime: &tokio::runtime::Runtime,
    conn: &mut rusqlite::Connection,
    batch: &mut [Box<dyn Job>],
) -> Result<(), String> {
    let sql = |conn: &rusqlite::Connection, sql: &str| {
        conn.execute_batch(sql)
            .map_err(|e| sqlite_error(e).to_string())
    };
    sql(conn, "BEGIN IMMEDIATE")?;
    let alone = batch.len() == 1;
    for job in batch.iter_mut() {
        if !alone {
            sql(conn, "SAVEPOINT unit")?;
        }
        // A panicking unit fails alone, like one that returns an error.
        let ok = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(job.run(&mut *conn as &mut dyn Exec))
        }))
        .unwrap_or(false);
        match (ok, alone) {
            (true, false) => sql(conn, "RELEASE unit")?,
            (false, false) => sql(conn, "ROLLBACK TO unit; RELEASE unit")?,
            (false, true) => return sql(conn, "ROLLBACK"),
            (true, true) => {}
        }
    }
    sql(conn, "COMMIT")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{event_log, notifications, Db};
    use crate::domain::event::DomainEvent;
    use crate::domain::notification::{Notification, NotificationType};
    use crate::domain::stream::StreamKey;
    use uuid::Uuid;

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

    /// An event and a notification, the unit of this test.
    async fn unit(conn: &mut dyn Exec, i: i64, id: Uuid) -> Result<i64, sqlx::Error> {
        let event = DomainEvent::new("x", serde_json::json!(i));
        let seq = event_log::append(conn, StreamKey::Broadcast, &event)
            .await?
            .seq;
        notifications::insert(conn, None, &notification(id)).await?;
        Ok(seq)
    }

    /// Units queued together share a commit; one that fails after writing
    /// (a notification id already stored) and one that panics are rolled
    /// back alone, and the others commit, with gap-free sequences, and
    /// their `after` runs in commit order.
    #[tokio::test]
    async fn a_failing_unit_is_rolled_back_alone_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        let taken = Uuid::new_v4();
        db.writes
            .run(move |c| Box::pin(unit(c, -1, taken)), |_| {})
            .await
            .unwrap();

        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let results = futures_util::future::join_all((0..30).map(|i| {
            let order = order.clone();
            db.writes.run(
                move |c| {
                    Box::pin(async move {
                        let id = if i == 7 { taken } else { Uuid::new_v4() };
                        let seq = unit(c, i, id).await?;
                        assert!(i != 9, "unit 9 panics after writing");
                        Ok::<_, sqlx::Error>(seq)
                    })
                },
                move |seq| order.lock().unwrap().push(*seq),
            )
        }))
        .await;
        let mut seqs = Vec::new();
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 7 && i != 9, "unit {i}: {r:?}");
            if let Ok(seq) = r {
                seqs.push(*seq);
            }
        }
        // 1 + 28 events: sequences 2..=29, none lost to the rolled-back
        // units, none twice, published in commit order.
        assert_eq!(seqs, (2..=29).collect::<Vec<_>>());
        assert_eq!(*order.lock().unwrap(), seqs);
        let mut conn = db.read.acquire().await.unwrap();
        let position = event_log::current_position(&mut conn, Uuid::nil())
            .await
            .unwrap();
        assert_eq!(position.get(&StreamKey::Broadcast), Some(29));
        let listed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(listed, 29);
    }
}
