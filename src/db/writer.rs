//! Where a write transaction runs: handed over once, as a whole.
//!
//! A write is a unit: a closure that gets a connection (`&mut dyn Exec`)
//! and runs every statement of its transaction (the change, the log
//! appends, the notification row, the idempotency row). `Writer::run`
//! hands the unit to a writer and waits for one answer, given after its
//! data is committed. Units that arrive while a writer is committing share
//! its next transaction (group commit). A batch first runs without a
//! savepoint per unit (one round trip less per unit on PostgreSQL); should
//! a unit fail (or panic), the batch is rolled back and runs again with
//! each unit in a savepoint of its own, so the failing one is rolled back
//! alone and the others commit. Units are therefore `Fn`: a unit may run
//! more than once, and only its last run counts. A batch that meets a
//! deadlock (PostgreSQL, two servers' transactions) starts over. After
//! the commit each unit's `after` runs on the writer, in commit order (the
//! publisher hands its frames to the broker there, so events of one stream
//! reach the hub in sequence order); then its caller is answered.
//!
//! SQLite: one write connection (rusqlite, not sqlx: sqlx runs each SQLite
//! statement on a worker thread and back, about ten hand-offs per REST
//! write, which cost more than the SQL). Every statement of a unit
//! completes at once on it. A caller that finds it idle and nothing queued
//! runs its unit there and then, on its own thread (`Shared::inline`): no
//! hand-off at all. Otherwise the unit goes to the writer thread, which
//! takes the connection for each batch of what queued meanwhile.
//!
//! PostgreSQL: `PG_WORKERS` writer tasks, each with at most one transaction
//! open. A commit waits for a WAL flush, which a batch shares. A unit goes
//! to the writer of its shard (the stream it appends to), so two writers
//! never wait for each other's locks on one stream's counter row.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use anyhow::Context;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};
use tokio::sync::{mpsc, oneshot};

use super::event_log;
use super::exec::{Cell, Exec, Row};
use crate::domain::event::DomainEvent;
use crate::domain::frame::Frame;
use crate::domain::stream::StreamKey;

/// Units one transaction carries at most.
const MAX_BATCH: usize = 64;
/// Units waiting for the writers; past this, callers wait.
const QUEUE: usize = 4096;
/// PostgreSQL writer tasks (each holds a pool connection while it commits).
/// One: fewer writers carry bigger batches, and since a batch's pure
/// appends are one statement, a bigger batch costs hardly more than a small
/// one. Alternating runs of `bench/cluster.sh c` (2026-12-06, two each):
/// admin events 5.3-5.5k/s with one writer against 4.6-4.9k with two on one
/// server, 3.4-3.6k against 3.0k on three; REST writes the same. Before the
/// pure appends (one statement per event), two had been best: 16 and 32
/// publishers (`bench/cluster.sh e`, two runs each): 1 writer 3.5k and
/// 4.1-4.3k events/s, 2 writers 3.9-4.0k and 4.6-5.0k, 4 writers 3.3-3.6k
/// and 4.2-4.5k, 8 writers 2.9-3.0k and 3.3-3.5k.
const PG_WORKERS: usize = 1;
/// The SQLite WAL past which the writer checkpoints, until configured
/// (`EARNTRACK_SQLITE_WAL_MAX_MB`).
const WAL_MAX: u64 = 1 << 30;

#[derive(Clone)]
pub struct Writer {
    /// One queue per writer.
    queues: Arc<[mpsc::Sender<Box<dyn Job>>]>,
    /// SQLite: the WAL size (bytes) past which the writer checkpoints.
    wal_max: Arc<AtomicU64>,
    /// SQLite: the connection, shared with the writer thread.
    sqlite: Option<Arc<Shared>>,
}

impl Writer {
    /// The SQLite writer thread, on its own connection to `path`.
    pub fn sqlite(path: PathBuf) -> anyhow::Result<Writer> {
        let conn = open(&path)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let wal_max = Arc::new(AtomicU64::new(WAL_MAX));
        let wal = Wal {
            path: wal_path(&path),
            max: wal_max.clone(),
            checkpointed_at: 0,
        };
        let shared = Arc::new(Shared {
            sqlite: Mutex::new(Sqlite {
                conn,
                careful: Careful::default(),
                wal,
            }),
            inline: AtomicBool::new(true),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || sqlite_writer(&thread, rx))
            .context("starting the SQLite writer thread")?;
        Ok(Writer {
            queues: Arc::from([queue]),
            wal_max,
            sqlite: Some(shared),
        })
    }

    /// The PostgreSQL writer tasks, on connections of `pool`.
    pub fn postgres(pool: AnyPool) -> Writer {
        let queues: Vec<_> = (0..PG_WORKERS)
            .map(|_| {
                let (queue, rx) = mpsc::channel(QUEUE / PG_WORKERS);
                tokio::spawn(postgres_writer(pool.clone(), rx));
                queue
            })
            .collect();
        Writer {
            queues: Arc::from(queues),
            wal_max: Arc::default(),
            sqlite: None,
        }
    }

    /// SQLite: every unit goes to the writer thread, none runs on its
    /// caller's (tests of what a batch of several does).
    #[cfg(test)]
    fn never_inline(&self) {
        if let Some(shared) = &self.sqlite {
            shared.inline.store(false, Ordering::Relaxed);
        }
    }

    /// SQLite: checkpoint between batches once the WAL passes `bytes`.
    pub fn set_wal_max(&self, bytes: u64) {
        self.wal_max.store(bytes.max(1 << 20), Ordering::Relaxed);
    }

    /// Run `unit` as one transaction on the writer of `stream` (the log
    /// stream it appends to, if any) and answer with what it returned once
    /// that is committed; `after` runs first, once committed (and not at
    /// all when the unit fails or the commit does). A unit that returns
    /// `Err` is rolled back, and only it. The unit may run more than once
    /// (its batch starts over after another unit's failure or a deadlock),
    /// so it writes nothing but through `conn`; only its last run counts.
    pub async fn run<T, E, F, A>(
        &self,
        stream: Option<StreamKey>,
        unit: F,
        after: A,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
        F: for<'c> Fn(&'c mut dyn Exec) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
        A: FnOnce(&mut T) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let shard = stream.as_ref().map_or(0, shard_of);
        let job = Box::new(Unit {
            shard,
            unit,
            after: Some(after),
            out: None,
            reply,
        });
        self.send(shard, job).await?;
        answer
            .await
            .map_err(|_| E::from(sqlx::Error::WorkerCrashed))?
    }

    /// Append `events` to the log as one unit (a pure publish: nothing to
    /// write but the events) and answer with their frames once committed;
    /// `after` runs first, as `run`'s does. The pure appends of a batch go
    /// to the log together (`event_log::append_many`: one statement on
    /// PostgreSQL), before its other units and without savepoints: an
    /// append fails only when its statement or the whole transaction does.
    pub async fn append<A>(
        &self,
        events: Vec<(StreamKey, DomainEvent)>,
        after: A,
    ) -> Result<Vec<Frame>, sqlx::Error>
    where
        A: FnOnce(&mut Vec<Frame>) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let shard = events.first().map_or(0, |(key, _)| shard_of(key));
        let job = Box::new(Append {
            shard,
            events,
            after: Some(after),
            out: None,
            reply,
        });
        self.send(shard, job).await?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    /// Run `job` here if the SQLite writer is idle, else put it in its
    /// shard's queue (`shard_of` the job's first stream).
    async fn send(&self, shard: u64, job: Box<dyn Job>) -> Result<(), sqlx::Error> {
        let queue = &self.queues[(shard % self.queues.len() as u64) as usize];
        let job = match &self.sqlite {
            // Every slot of the queue free: the writer thread has taken
            // all that was sent. A batch it took but has not locked yet may
            // be overtaken; concurrent requests are promised no order, and
            // a stream's sequence numbers and its hand-off to the hub are
            // both given under the connection's lock, so each stream stays
            // in order.
            Some(shared) if queue.capacity() == queue.max_capacity() => match shared.inline(job) {
                Some(job) => job,
                None => return Ok(()),
            },
            _ => job,
        };
        queue.send(job).await.map_err(|_| sqlx::Error::PoolClosed)
    }
}

/// The shard of a stream's units: where there are several writers
/// (PostgreSQL), units of one stream share one; in a batch, units go in the
/// order of their shards (`units`).
fn shard_of(key: &StreamKey) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

/// A unit with its answer, type-erased for the writers.
trait Job: Send {
    /// The shard it was sent to (`shard_of` its first stream).
    fn shard(&self) -> u64;
    /// Run the unit; whether it succeeded (its result is kept for `finish`,
    /// the last run's when a batch runs again). A pure append is never run
    /// alone (`units` appends all of a batch's pure appends in one go and
    /// hands each its frames: `appended`).
    fn run<'c>(&'c mut self, _conn: &'c mut dyn Exec) -> BoxFuture<'c, bool> {
        Box::pin(async { false })
    }
    /// Answer the caller: with the unit's result if `committed`, else with
    /// the commit's error (or the unit's own).
    fn finish(self: Box<Self>, committed: Result<(), String>);
    /// The events of a pure append (`Writer::append`); `None` for a unit.
    fn events(&self) -> Option<&[(StreamKey, DomainEvent)]> {
        None
    }
    /// A pure append's frames, from its batch's `append_many`.
    fn appended(&mut self, _frames: Vec<Frame>) {}
}

/// A pure append with its answer.
struct Append<A> {
    shard: u64,
    events: Vec<(StreamKey, DomainEvent)>,
    after: Option<A>,
    out: Option<Vec<Frame>>,
    reply: oneshot::Sender<Result<Vec<Frame>, sqlx::Error>>,
}

impl<A: FnOnce(&mut Vec<Frame>) + Send + 'static> Job for Append<A> {
    fn shard(&self) -> u64 {
        self.shard
    }

    fn finish(mut self: Box<Self>, committed: Result<(), String>) {
        let out = match (committed, self.out.take()) {
            (Ok(()), Some(mut frames)) => {
                if let Some(after) = self.after.take() {
                    after(&mut frames);
                }
                Ok(frames)
            }
            (Err(err), _) => Err(sqlx::Error::Protocol(err)),
            (Ok(()), None) => Err(sqlx::Error::WorkerCrashed),
        };
        let _ = self.reply.send(out);
    }

    fn events(&self) -> Option<&[(StreamKey, DomainEvent)]> {
        Some(&self.events)
    }

    fn appended(&mut self, frames: Vec<Frame>) {
        self.out = Some(frames);
    }
}

struct Unit<F, A, T, E> {
    shard: u64,
    unit: F,
    after: Option<A>,
    out: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F, A> Job for Unit<F, A, T, E>
where
    T: Send + 'static,
    E: From<sqlx::Error> + Send + 'static,
    F: for<'c> Fn(&'c mut dyn Exec) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
    A: FnOnce(&mut T) + Send + 'static,
{
    fn shard(&self) -> u64 {
        self.shard
    }

    fn run<'c>(&'c mut self, conn: &'c mut dyn Exec) -> BoxFuture<'c, bool> {
        let run = (self.unit)(conn);
        Box::pin(async move {
            let out = run.await;
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
         PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; \
         PRAGMA journal_size_limit = 67108864;",
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// The first job and whatever else is already queued, up to `MAX_BATCH`.
fn gather(first: Box<dyn Job>, rx: &mut mpsc::Receiver<Box<dyn Job>>) -> Vec<Box<dyn Job>> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    metrics::histogram!("earntrack_group_commit_requests").record(batch.len() as f64);
    batch
}

/// A batch that holds the writer this long is logged: every unit queued
/// behind it waited as long.
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(50);

fn answer(
    batch: Vec<Box<dyn Job>>,
    committed: Result<(), sqlx::Error>,
    started: std::time::Instant,
) {
    let took = started.elapsed();
    metrics::histogram!("earntrack_write_batch_seconds").record(took.as_secs_f64());
    if took >= SLOW_BATCH {
        tracing::warn!(
            units = batch.len(),
            took_ms = took.as_millis() as u64,
            "slow write batch"
        );
    }
    let committed = committed.map_err(|err| {
        tracing::error!(error = %err, units = batch.len(), "a writer's commit failed");
        err.to_string()
    });
    for job in batch {
        job.finish(committed.clone());
    }
}

/// The WAL file of the database and the size it may reach.
struct Wal {
    path: PathBuf,
    max: Arc<AtomicU64>,
    /// The file's size at the last checkpoint here: a WAL that started over
    /// reuses the file from its start, and the file only grows again once
    /// the WAL outgrows it.
    checkpointed_at: u64,
}

fn wal_path(db: &std::path::Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

impl Wal {
    /// The WAL's size, if it is past its bound.
    fn due(&self) -> Option<u64> {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        (size > self.max.load(Ordering::Relaxed).max(self.checkpointed_at)).then_some(size)
    }

    /// Under steady writes the WAL would grow for as long as they go on:
    /// it starts over only when a write begins with every frame copied back
    /// into the database, and the checkpointer task (`jobs::checkpointer`,
    /// on a reader, beside the writer) never catches up with the last
    /// commit while commits keep coming. Past `max`, the writer copies the
    /// rest itself between two batches; its next transaction starts the
    /// WAL over (and cuts the file to `journal_size_limit`). The copy waits
    /// for the disk (~40 ms measured here), so it is kept rare.
    fn bound(&mut self, conn: &rusqlite::Connection) {
        let Some(size) = self.due() else {
            return;
        };
        self.checkpointed_at = size;
        let started = std::time::Instant::now();
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => {
                let took = started.elapsed();
                metrics::histogram!("earntrack_wal_restart_checkpoint_seconds")
                    .record(took.as_secs_f64());
                tracing::info!(
                    wal_bytes = size,
                    took_ms = took.as_millis() as u64,
                    "WAL checkpointed to start over"
                );
            }
            Err(err) => tracing::warn!(error = %err, "the writer's WAL checkpoint failed"),
        }
    }
}

/// SQLite: the write connection and what its batches need, taken by the
/// writer thread for each batch or by a caller that runs its unit there
/// and then.
struct Shared {
    sqlite: Mutex<Sqlite>,
    /// Whether a caller may run its unit itself (tests turn it off).
    inline: AtomicBool,
}

struct Sqlite {
    conn: rusqlite::Connection,
    careful: Careful,
    wal: Wal,
}

impl Shared {
    /// Run `job` on the caller's thread, as a batch of one, if the
    /// connection is free (the caller found nothing queued for the writer
    /// thread); else give it back. This saves the hand-off to the writer
    /// thread and back (two thread wake-ups, each a wait for a core on a
    /// busy box) whenever writes do not overlap, which at 1,000 writes/s is
    /// most of them. The caller's thread is a runtime worker, held for one
    /// commit (no fsync: WAL with synchronous = NORMAL). Units that queue
    /// while it commits go to the writer thread and share its next commit,
    /// as before.
    fn inline(&self, job: Box<dyn Job>) -> Option<Box<dyn Job>> {
        if !self.inline.load(Ordering::Relaxed) {
            return Some(job);
        }
        let mut sqlite = match self.sqlite.try_lock() {
            Ok(sqlite) => sqlite,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Some(job),
        };
        // The checkpoint that bounds the WAL waits for the disk (tens of
        // ms): the writer thread makes it, not a runtime worker.
        if sqlite.wal.due().is_some() {
            return Some(job);
        }
        metrics::histogram!("earntrack_group_commit_requests").record(1.0);
        // Not the runtime's own `block_on`, which refuses to run on one of
        // its workers; nothing here waits for the runtime.
        sqlite.commit(vec![job], std::time::Instant::now(), |transaction| {
            futures_executor::block_on(transaction)
        });
        None
    }

    fn lock(&self) -> MutexGuard<'_, Sqlite> {
        self.sqlite.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sqlite {
    /// One batch's transaction and its answers (and their `after`s, in
    /// commit order, while the connection is still held). `block_on`
    /// polls the transaction: every statement completes at once (`Exec for
    /// rusqlite::Connection`), so it only drives the units' futures.
    fn commit(
        &mut self,
        mut batch: Vec<Box<dyn Job>>,
        started: std::time::Instant,
        block_on: impl FnOnce(BoxFuture<'_, Result<(), sqlx::Error>>) -> Result<(), sqlx::Error>,
    ) {
        order(&mut batch);
        let mut tries = self.careful.tries();
        let committed = block_on(Box::pin(transact(
            &mut self.conn,
            "BEGIN IMMEDIATE",
            false,
            &mut batch,
            &mut tries,
        )));
        self.careful.after(&tries);
        answer(batch, committed, started);
    }
}

fn sqlite_writer(shared: &Shared, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    // Units are async so that PostgreSQL runs the same code; here this
    // runtime only polls them.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    while let Some(first) = rx.blocking_recv() {
        let started = std::time::Instant::now();
        let batch = gather(first, &mut rx);
        let mut sqlite = shared.lock();
        sqlite.commit(batch, started, |transaction| runtime.block_on(transaction));
        let Sqlite { conn, wal, .. } = &mut *sqlite;
        wal.bound(conn);
    }
}

async fn postgres_writer(pool: AnyPool, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    let mut careful = Careful::default();
    // The writer's own connection, kept from one batch to the next: the
    // pool pings a connection each time it hands one out, a round trip
    // per batch. One that fails is closed, and the next batch takes a new
    // one from the pool. It goes back when the pool closes (at shutdown),
    // which waits for every connection handed out. It is kept with the
    // moment it last answered: one that did so within `FRESH` is taken
    // to be alive (see `appends_alone`).
    let mut held: Option<(PoolConnection<Any>, std::time::Instant)> = None;
    loop {
        let first = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
            () = pool.close_event(), if held.is_some() => {
                held = None;
                continue;
            }
        };
        let started = std::time::Instant::now();
        let mut batch = gather(first, &mut rx);
        order(&mut batch);
        let mut tries = careful.tries();
        let fresh = |(_, at): &mut (_, std::time::Instant)| at.elapsed() < FRESH;
        if batch.iter().all(|job| job.events().is_some()) {
            if let Some((mut conn, _)) = held.take_if(fresh) {
                let committed = appends_alone(&mut *conn, &mut batch, &mut tries).await;
                match &committed {
                    Ok(()) => held = Some((conn, std::time::Instant::now())),
                    Err(_) => conn.close_on_drop(),
                }
                // A backend terminated while it waited (a restart, an
                // operator) committed nothing of the batch: a fresh
                // connection takes it, as after a failed `BEGIN`.
                if !committed.as_ref().is_err_and(is_terminated) {
                    careful.after(&tries);
                    answer(batch, committed, started);
                    continue;
                }
            }
        }
        let committed = loop {
            let (mut conn, kept) = match held.take() {
                Some((conn, _)) => (conn, true),
                None => match pool.acquire().await {
                    Ok(conn) => (conn, false),
                    Err(err) => break Err(err),
                },
            };
            // A kept connection may have been lost while it waited (its
            // server restarted, the connection killed): then nothing of
            // the batch has run yet, and it goes to a fresh one.
            if let Err(err) = conn.execute("BEGIN", vec![]).await {
                conn.close_on_drop();
                match kept {
                    true => continue,
                    false => break Err(err),
                }
            }
            let result = transact(&mut *conn, "BEGIN", true, &mut batch, &mut tries).await;
            match result {
                Ok(()) => held = Some((conn, std::time::Instant::now())),
                Err(_) => conn.close_on_drop(),
            }
            break result;
        };
        careful.after(&tries);
        answer(batch, committed, started);
    }
}

/// How recently the kept connection must have answered for a batch of
/// pure appends to skip the `BEGIN` that would find it lost.
const FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// A batch of pure appends only, on PostgreSQL: their one statement
/// (`event_log::append_many`) commits on its own, so the batch costs one
/// round trip instead of three (`BEGIN`, the statement, `COMMIT`), and
/// the writer, which waits for each, is free sooner (measured in README:
/// `bench/cluster.sh c`'s ceiling and `b`'s latency). A statement
/// that fails was rolled back whole, so a deadlock's victim runs again
/// as in a transaction. Taken only on a connection that answered within
/// `FRESH`. A backend terminated meanwhile answers `57P01`, and a
/// statement that meets it did not commit, so the batch goes to a fresh
/// connection; a connection lost any other way fails the batch with an
/// error for its callers, as one lost during a `COMMIT` does.
async fn appends_alone(
    conn: &mut dyn Exec,
    batch: &mut [Box<dyn Job>],
    tries: &mut Tries,
) -> Result<(), sqlx::Error> {
    loop {
        match pure_appends(conn, batch).await {
            Err(err) if is_deadlock(&err) && tries.may_retry_deadlock() => {
                tries.again(Why::Deadlock, batch.len());
            }
            result => return result.map(drop),
        }
    }
}

/// A batch's transaction on `conn`, from `begin` (already sent when
/// `begun`) to its COMMIT (or ROLLBACK), run again as often as `attempt`
/// asks for.
async fn transact(
    conn: &mut dyn Exec,
    begin: &str,
    mut begun: bool,
    batch: &mut [Box<dyn Job>],
    tries: &mut Tries,
) -> Result<(), sqlx::Error> {
    loop {
        if !begun {
            conn.execute(begin, vec![]).await?;
        }
        begun = false;
        let end = match attempt(conn, batch, tries).await {
            Ok(Ran::Commit) => conn.execute("COMMIT", vec![]).await,
            Ok(Ran::Nothing) => conn.execute("ROLLBACK", vec![]).await,
            Ok(Ran::Again(why)) => {
                conn.execute("ROLLBACK", vec![]).await?;
                tries.again(why, batch.len());
                continue;
            }
            Err(err) => Err(err),
        };
        if end.is_err() {
            let _ = conn.execute("ROLLBACK", vec![]).await;
        }
        return end.map(drop);
    }
}

/// Put the pure appends of `batch` first (they go to the log first, all
/// in one `append_many`, and are answered, and published, first, in the
/// order of the sequences they got), then the units in the order of their
/// shards (stable: a stream's units keep the order they came in).
///
/// Why the shards' order: the transactions of two servers must not take
/// their streams' counter rows in opposite orders. In arrival order one
/// server's batch could lock A then B while another's locks B then A, a
/// deadlock PostgreSQL breaks after a second (`deadlock_timeout`) by
/// failing one of them. In shard order, units of one stream each take
/// their rows in one order on every server. Not covered by the order: a
/// unit that appends to streams besides its shard's, and a batch's pure
/// appends (which go first) meeting another batch's units on the same
/// streams. The victim of such a deadlock starts its batch over (`Tries`),
/// which costs it the second PostgreSQL waited, not an answer. Locking a
/// batch's streams in key order first would avoid those too, but on
/// PostgreSQL a row locked by the transaction and then updated in a unit's
/// savepoint costs a MultiXact per row (tried: one REST run of
/// `bench/cluster.sh c` fell to 369 requests/s, against 690-1,300 for the
/// builds around it).
fn order(batch: &mut [Box<dyn Job>]) {
    batch.sort_by_key(|job| (job.events().is_none(), job.shard()));
}

/// Deadlocks a batch may meet before its unit fails (or, for its pure
/// appends, the batch).
const MAX_DEADLOCK_RETRIES: u32 = 3;

/// The backend was terminated (`admin_shutdown`, `crash_shutdown`): the
/// statement that met it did not commit.
fn is_terminated(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "57P01" || code == "57P02")
}

fn is_deadlock(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01")
}

/// How one run of a batch's transaction ended.
enum Ran {
    Commit,
    /// Nothing to commit: a unit alone that failed.
    Nothing,
    /// Roll back and run the batch again.
    Again(Why),
}

#[derive(Clone, Copy)]
enum Why {
    /// A unit failed in a batch without savepoints.
    UnitFailed,
    /// A statement of the batch was a deadlock's victim.
    Deadlock,
}

/// Where a batch stands in its runs: the first without savepoints, then
/// (after a unit failed) with one per unit; deadlocks met so far.
struct Tries {
    savepoints: bool,
    /// It ran again because a unit failed without a savepoint.
    reran_for_unit: bool,
    deadlocks: u32,
}

/// After a batch that ran again for a failing unit, the next few batches
/// start with savepoints: where units keep failing (a client sending
/// conflicts on purpose, say), no batch runs twice for them.
#[derive(Default)]
struct Careful {
    batches_left: u32,
}

/// Batches that start with savepoints after one that needed them.
const CAREFUL_BATCHES: u32 = 16;

impl Careful {
    fn tries(&self) -> Tries {
        Tries {
            savepoints: self.batches_left > 0,
            reran_for_unit: false,
            deadlocks: 0,
        }
    }

    fn after(&mut self, tries: &Tries) {
        self.batches_left = match tries.reran_for_unit {
            true => CAREFUL_BATCHES,
            false => self.batches_left.saturating_sub(1),
        };
    }
}

impl Tries {
    fn again(&mut self, why: Why, units: usize) {
        let reason = match why {
            Why::UnitFailed => {
                self.savepoints = true;
                self.reran_for_unit = true;
                "unit_failed"
            }
            Why::Deadlock => {
                self.deadlocks += 1;
                tracing::warn!(units, "a write batch deadlocked; running it again");
                "deadlock"
            }
        };
        metrics::counter!("earntrack_write_batch_reruns_total", "reason" => reason).increment(1);
    }

    fn may_retry_deadlock(&self) -> bool {
        self.deadlocks < MAX_DEADLOCK_RETRIES
    }
}

/// One run of an `order`ed batch inside its open transaction: its pure
/// appends, then its units.
async fn attempt(
    conn: &mut dyn Exec,
    batch: &mut [Box<dyn Job>],
    tries: &Tries,
) -> Result<Ran, sqlx::Error> {
    match pure_appends(conn, batch).await {
        Ok(appends) => units(conn, batch, appends, tries).await,
        Err(err) if is_deadlock(&err) && tries.may_retry_deadlock() => {
            Ok(Ran::Again(Why::Deadlock))
        }
        Err(err) => Err(err),
    }
}

/// The pure appends at the head of an `order`ed batch, all in one
/// `append_many`, without savepoints: an append fails only when its
/// statement or the whole transaction does. Each gets its frames; how
/// many there were.
async fn pure_appends(
    conn: &mut dyn Exec,
    batch: &mut [Box<dyn Job>],
) -> Result<usize, sqlx::Error> {
    let appends = batch
        .iter()
        .take_while(|job| job.events().is_some())
        .count();
    if appends == 0 {
        return Ok(0);
    }
    let events: Vec<_> = batch[..appends]
        .iter()
        .flat_map(|job| job.events().unwrap_or_default())
        .map(|(key, event)| (key, event))
        .collect();
    let mut frames = event_log::append_many(conn, &events).await?.into_iter();
    for job in &mut batch[..appends] {
        let n = job.events().map_or(0, <[_]>::len);
        job.appended(frames.by_ref().take(n).collect());
    }
    Ok(appends)
}

/// The units of an `order`ed batch after its `appends` pure appends (done).
///
/// First run: no savepoints. Units rarely fail (a conflict, a row gone),
/// and on PostgreSQL a savepoint is a round trip per unit inside the
/// writer's open transaction, a third of a REST create's. A unit that
/// fails among others sends the batch round again (`Why::UnitFailed`),
/// each unit then in a savepoint of its own, so that one is rolled back
/// alone. A unit alone in its batch needs no savepoint either way.
async fn units(
    conn: &mut dyn Exec,
    batch: &mut [Box<dyn Job>],
    appends: usize,
    tries: &Tries,
) -> Result<Ran, sqlx::Error> {
    let batch = &mut batch[appends..];
    let alone = appends == 0 && batch.len() == 1;
    let savepoints = tries.savepoints && !alone;
    for job in batch.iter_mut() {
        if savepoints {
            conn.execute("SAVEPOINT unit", vec![]).await?;
        }
        let mut watched = Watched {
            conn: &mut *conn,
            deadlock: false,
        };
        // A panicking unit fails, like one that returns an error.
        let ok = AssertUnwindSafe(job.run(&mut watched))
            .catch_unwind()
            .await
            .unwrap_or(false);
        if ok {
            // Savepoints are not released: the next unit's `SAVEPOINT
            // unit` shadows this one (`ROLLBACK TO` finds the newest), and
            // the commit ends them all.
            continue;
        }
        if watched.deadlock && tries.may_retry_deadlock() {
            return Ok(Ran::Again(Why::Deadlock));
        }
        if alone {
            return Ok(Ran::Nothing);
        }
        if !savepoints {
            return Ok(Ran::Again(Why::UnitFailed));
        }
        conn.execute("ROLLBACK TO unit", vec![]).await?;
    }
    Ok(Ran::Commit)
}

/// A unit's connection, which notes whether one of its statements was a
/// deadlock's victim: the unit's error (its own type) does not say.
struct Watched<'a> {
    conn: &'a mut dyn Exec,
    deadlock: bool,
}

impl Watched<'_> {
    fn note<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if let Err(err) = &result {
            self.deadlock |= is_deadlock(err);
        }
        result
    }
}

impl Exec for Watched<'_> {
    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Cell>,
    ) -> BoxFuture<'a, Result<Vec<Row>, sqlx::Error>> {
        Box::pin(async move {
            let result = self.conn.fetch_all(sql, args).await;
            self.note(result)
        })
    }

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Cell>,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(async move {
            let result = self.conn.execute(sql, args).await;
            self.note(result)
        })
    }

    fn postgres(&self) -> bool {
        self.conn.postgres()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{event_log, notifications, Db};
    use crate::domain::event::DomainEvent;
    use crate::domain::notification::{Notification, NotificationType};
    use crate::domain::stream::StreamKey;
    use serde_json::Value;
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
        notifications::insert(None, &notification(id))
            .run(conn)
            .await?;
        Ok(seq)
    }

    /// A SQLite write that finds the writer idle runs on its caller's
    /// thread, with no hand-off; with inline runs turned off it goes to the
    /// writer thread.
    #[tokio::test]
    async fn an_idle_sqlite_writer_runs_the_unit_on_its_callers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        let thread_of_unit = || {
            db.writes.run(
                None,
                |_| {
                    let name = std::thread::current().name().map(str::to_owned);
                    Box::pin(async move { Ok::<_, sqlx::Error>(name) })
                },
                |_| {},
            )
        };
        let caller = std::thread::current().name().map(str::to_owned);
        assert_eq!(thread_of_unit().await.unwrap(), caller);
        db.writes.never_inline();
        assert_eq!(
            thread_of_unit().await.unwrap().as_deref(),
            Some("sqlite-writer")
        );
    }

    /// Units queued together share a commit; one that fails after writing
    /// (a notification id already stored) and one that panics are rolled
    /// back alone, and the others commit, with gap-free sequences, and
    /// their `after` runs in commit order. On SQLite twice: units that
    /// share the writer thread's batches, and units run by their callers
    /// (each alone).
    #[tokio::test]
    async fn a_failing_unit_is_rolled_back_alone_and_the_others_commit() {
        for inline in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("t.db").display());
            let db = Db::connect(&url, 2).await.unwrap();
            if !inline {
                db.writes.never_inline();
            }
            one_failing_unit_among_thirty(db).await;
        }
    }

    /// The same on PostgreSQL (`POSTGRES_URL`), in a database of its own:
    /// savepoints there are server-side subtransactions, and an error
    /// aborts the whole transaction unless rolled back to one.
    #[tokio::test]
    async fn on_postgres_a_failing_unit_is_rolled_back_alone_and_the_others_commit() {
        let Some(admin) = std::env::var("POSTGRES_URL").ok().filter(|u| !u.is_empty()) else {
            eprintln!("skipped: POSTGRES_URL unset");
            return;
        };
        sqlx::any::install_default_drivers();
        let name = format!("earntrack_writer_{}", Uuid::new_v4().simple());
        let mut server = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut server)
            .await
            .unwrap();
        let (base, _) = admin.rsplit_once('/').expect("a database in POSTGRES_URL");
        let db = Db::connect(&format!("{base}/{name}"), 4).await.unwrap();
        one_failing_unit_among_thirty(db.clone()).await;
        pure_appends_among_units(db.clone()).await;
        two_servers_lock_streams_in_one_order(&db).await;

        // The writer keeps its connection between batches: killed while
        // it waits, the next batch runs on a fresh one, and nothing fails.
        let write = || {
            db.writes
                .run(None, |c| Box::pin(unit(c, 0, Uuid::new_v4())), |_| {})
        };
        write().await.unwrap();
        assert!(terminate_backends(&mut server, &name).await > 0);
        write().await.unwrap();
        // The same for a batch of pure appends, which skips `BEGIN` on a
        // connection that answered within `FRESH`: killed right after an
        // append, the next one still commits, once.
        let key = StreamKey::Room(7007);
        let publish = |n: i64| {
            let events = vec![(
                key.clone(),
                DomainEvent::new("bench", serde_json::json!({ "n": n })),
            )];
            db.writes.append(events, |_| {})
        };
        publish(1).await.unwrap();
        assert!(terminate_backends(&mut server, &name).await > 0);
        publish(2).await.unwrap();
        let seqs: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM event_log WHERE stream = 'r:7007' ORDER BY seq")
                .fetch_all(&db.read)
                .await
                .unwrap();
        assert_eq!(seqs, vec![1, 2]);
        db.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut server)
            .await
            .unwrap();
    }

    /// Terminate every backend of database `name` but `server`'s own; how many.
    async fn terminate_backends(server: &mut sqlx::AnyConnection, name: &str) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()) AS t"
        ))
        .fetch_one(server)
        .await
        .unwrap()
    }

    /// Two servers' writers (two `Writer`s on one database) given the same
    /// streams A and B in opposite orders, where each unit holds its
    /// stream's counter row for a while. First two units each: in arrival
    /// order the two transactions deadlock (a unit failed by PostgreSQL
    /// after `deadlock_timeout`); in shard order both batches commit. Then
    /// pure appends that deadlock with the other's unit: the victim batch
    /// (its appends go first, before any unit ran) starts over, and every
    /// job commits. Then units that cross: the victim starts over too.
    async fn two_servers_lock_streams_in_one_order(db: &Db) {
        let other = Writer::postgres(db.read.clone());
        let (a, b) = (StreamKey::Room(101), StreamKey::Room(102));
        let started = std::time::Instant::now();
        // Queued in one poll: each writer takes its two units as one batch.
        let results = futures_util::future::join_all([
            holding_unit(&db.writes, a.clone(), 0.0),
            holding_unit(&db.writes, b.clone(), 0.0),
            holding_unit(&other, b.clone(), 0.0),
            holding_unit(&other, a.clone(), 0.0),
        ])
        .await;
        for (i, r) in results.iter().enumerate() {
            assert!(r.is_ok(), "unit {i}: {r:?}");
        }
        // Two batches of 0.6 s one after the other, and no deadlock wait.
        assert!(started.elapsed() < std::time::Duration::from_millis(2400));

        // One server: a pure append on B, then a unit that appends to A a
        // little later. The other: one pure append on A and B, which locks A
        // and waits for B; the first's unit then waits for A. The pure
        // append waited first, so it is the victim.
        let on = |keys: &[&StreamKey]| {
            keys.iter()
                .map(|key| ((*key).clone(), DomainEvent::new("p", Value::Null)))
                .collect::<Vec<_>>()
        };
        let (one, two, three) = tokio::join!(
            db.writes.append(on(&[&b]), |_| {}),
            holding_unit(&db.writes, a.clone(), 0.2),
            other.append(on(&[&a, &b]), |_| {}),
        );
        one.unwrap();
        two.unwrap();
        three.unwrap();

        // Units that append to each other's streams, which no order
        // prevents: each holds its own stream's row and waits for the
        // other's. The victim's batch starts over, and both commit.
        let (one, two) = tokio::join!(
            crossing_unit(&db.writes, a.clone(), b.clone()),
            crossing_unit(&other, b.clone(), a.clone()),
        );
        one.unwrap();
        two.unwrap();
    }

    /// A unit that appends to `mine`, holds its counter row 0.3 s, then
    /// appends to `theirs`.
    async fn crossing_unit(
        writer: &Writer,
        mine: StreamKey,
        theirs: StreamKey,
    ) -> Result<(), sqlx::Error> {
        writer
            .run(
                Some(mine.clone()),
                move |c| {
                    let (mine, theirs) = (mine.clone(), theirs.clone());
                    Box::pin(async move {
                        let event = DomainEvent::new("x", Value::Null);
                        event_log::append(&mut *c, mine, &event).await?;
                        c.execute("SELECT pg_sleep(0.3)", vec![]).await?;
                        event_log::append(&mut *c, theirs, &event).await?;
                        Ok::<_, sqlx::Error>(())
                    })
                },
                |_| {},
            )
            .await
    }

    /// A unit that waits `delay` seconds, then appends to `key` and holds
    /// its counter row 0.3 s.
    async fn holding_unit(writer: &Writer, key: StreamKey, delay: f64) -> Result<(), sqlx::Error> {
        writer
            .run(
                Some(key.clone()),
                move |c| {
                    let key = key.clone();
                    Box::pin(async move {
                        c.execute(&format!("SELECT pg_sleep({delay})"), vec![])
                            .await?;
                        let event = DomainEvent::new("x", Value::Null);
                        event_log::append(&mut *c, key, &event).await?;
                        c.execute("SELECT pg_sleep(0.3)", vec![]).await?;
                        Ok::<_, sqlx::Error>(())
                    })
                },
                |_| {},
            )
            .await
    }

    /// Pure appends (`Writer::append`) queued with units, on two streams,
    /// some of two events: every event gets the sequence one append each
    /// would have given it (gap-free, no number twice, across the appends
    /// and the units, the failing unit's rolled back), each stream's frames
    /// are published in sequence order, and the log holds every event
    /// under its number.
    #[tokio::test]
    async fn pure_appends_are_numbered_as_single_appends() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        // Batches of several: what is checked here is how one is ordered.
        db.writes.never_inline();
        pure_appends_among_units(db).await;
    }

    type Published = std::sync::Arc<std::sync::Mutex<Vec<(StreamKey, i64, String, String)>>>;

    fn seen(published: &Published, frames: &[Frame]) {
        let mut published = published.lock().unwrap();
        for f in frames {
            published.push((f.key.clone(), f.seq, f.name.clone(), f.envelope.clone()));
        }
    }

    async fn pure_appends_among_units(db: Db) {
        let streams = [StreamKey::User(Uuid::nil()), StreamKey::Room(7)];
        let published = Published::default();
        let mut jobs = Vec::new();
        for i in 0..40_i64 {
            let published = published.clone();
            let key = streams[(i % 2) as usize].clone();
            let db = db.clone();
            jobs.push(Box::pin(async move {
                if i % 5 == 0 {
                    // A unit, and every tenth of them fails after writing.
                    db.writes
                        .run(
                            Some(key.clone()),
                            move |c| {
                                let key = key.clone();
                                Box::pin(async move {
                                    let event = DomainEvent::new("unit", serde_json::json!(i));
                                    let frame = event_log::append(c, key, &event).await?;
                                    if i % 10 == 0 {
                                        return Err(sqlx::Error::RowNotFound);
                                    }
                                    Ok(vec![frame])
                                })
                            },
                            move |frames: &mut Vec<Frame>| seen(&published, frames),
                        )
                        .await
                        .map(|f| f.len())
                        .unwrap_or(0)
                } else {
                    let events: Vec<_> = (0..1 + i % 3)
                        .map(|j| {
                            (
                                key.clone(),
                                DomainEvent::new("pure", serde_json::json!([i, j])),
                            )
                        })
                        .collect();
                    db.writes
                        .append(events, move |frames| seen(&published, frames))
                        .await
                        .unwrap()
                        .len()
                }
            }));
        }
        let logged: usize = futures_util::future::join_all(jobs).await.into_iter().sum();
        let published = published.lock().unwrap().clone();
        assert_eq!(published.len(), logged);
        let mut conn = db.read.acquire().await.unwrap();
        for key in &streams {
            let mine: Vec<_> = published.iter().filter(|f| f.0 == *key).collect();
            let seqs: Vec<i64> = mine.iter().map(|f| f.1).collect();
            assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{key}");
            for (_, seq, name, envelope) in mine {
                let logged = event_log::event(&mut conn, &key.to_string(), *seq)
                    .await
                    .unwrap()
                    .expect("every published event is logged");
                assert_eq!(&logged, &(name.clone(), envelope.clone()));
            }
        }
    }

    async fn one_failing_unit_among_thirty(db: Db) {
        let taken = Uuid::new_v4();
        db.writes
            .run(None, move |c| Box::pin(unit(c, -1, taken)), |_| {})
            .await
            .unwrap();

        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let results = futures_util::future::join_all((0..30).map(|i| {
            let order = order.clone();
            // Sharded as the publisher does, by stream: one for all.
            db.writes.run(
                None,
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

    /// Under steady writes the WAL starts over instead of growing for as
    /// long as they go on: with a bound of 4 MiB, 3,000 commits of ~4 KiB
    /// events leave a WAL of about that (without the writer's checkpoint
    /// it reaches 78 MiB here).
    #[tokio::test]
    async fn the_wal_stays_bounded_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let db = Db::connect(&format!("sqlite://{}", file.display()), 2)
            .await
            .unwrap();
        db.writes.set_wal_max(4 << 20);
        let payload = "x".repeat(4096);
        for i in 0..3_000 {
            let event = DomainEvent::new("x", serde_json::json!({ "i": i, "p": payload }));
            db.writes
                .run(
                    None,
                    move |c| {
                        let event = event.clone();
                        Box::pin(async move {
                            event_log::append(c, StreamKey::User(Uuid::nil()), &event).await
                        })
                    },
                    |_| {},
                )
                .await
                .unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len();
        assert!(wal < 12 << 20, "WAL of {} MiB", wal >> 20);
    }
}
