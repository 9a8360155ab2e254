//! All SQL lives here. One `Db` handle serves both backends through sqlx's
//! `Any` driver: the statements are written once, in the SQL both SQLite and
//! PostgreSQL accept (`$n` placeholders, `ON CONFLICT … RETURNING`), and only
//! the migrations differ per backend (`migrations/sqlite`, `migrations/postgres`).
//!
//! Types on the wire to the driver are kept to what `Any` carries: TEXT for
//! ids and dates, BIGINT for money (hundredths), flags and millisecond
//! timestamps.

pub mod earnings;
pub mod event_log;
pub mod exec;
pub mod expenses;
pub mod idempotency;
pub mod invoices;
pub mod notifications;
pub mod notify;
pub mod page_cache;
pub mod platforms;
pub mod presence;
pub mod records;
pub mod rooms;
pub mod users;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor, Transaction};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    /// Readers. On SQLite (WAL) they run beside the writer.
    pub read: AnyPool,
    /// Statements outside the writer's units: migrations, the meta row,
    /// presence heartbeats and the admin CLI, each a statement of its own
    /// (on SQLite they wait for the writer thread's lock, `busy_timeout`).
    /// On SQLite a pool of one connection; on PostgreSQL the same pool as
    /// `read`.
    write: AnyPool,
    pub backend: Backend,
    /// Random id of this database's event log, minted once: cursors carry it.
    pub log_id: Arc<str>,
    /// This server's id: NOTIFY payloads carry it so a server can skip its
    /// own events (it delivered them locally already).
    pub server_id: Arc<str>,
    pub known_users: Arc<users::KnownUsers>,
    /// Where every write transaction runs, as a unit (`writer.rs`).
    pub writes: writer::Writer,
}

impl Db {
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite: or postgres:");
        };
        let (read, write, writes) = match backend {
            Backend::Sqlite => {
                // Before the first connection: SQLite takes its page cache
                // once, when it starts.
                if !page_cache::install() {
                    tracing::debug!("SQLite was started before its page cache could be wrapped");
                }
                let url = sqlite_url(url);
                let options: AnyConnectOptions = url.parse().context("parsing DATABASE_URL")?;
                let write = sqlite_pool(1)
                    .connect_with(options.clone())
                    .await
                    .context("opening the SQLite database")?;
                let read = sqlite_pool(pool_size.max(1))
                    .connect_with(options)
                    .await
                    .context("opening the SQLite database")?;
                let writes = writer::Writer::sqlite(sqlite_path(&url)?)?;
                (read, write, writes)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(pool_size.max(2))
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await
                    .context("connecting to PostgreSQL")?;
                let writes = writer::Writer::postgres(pool.clone());
                (pool.clone(), pool, writes)
            }
        };
        let mut db = Db {
            read,
            write,
            writes,
            backend,
            log_id: Arc::from(""),
            server_id: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
            known_users: Arc::default(),
        };
        db.migrate().await?;
        db.log_id = Arc::from(db.meta_once("log_id", &random_hex(6)).await?);
        Ok(db)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator
            .run(&self.write)
            .await
            .context("running database migrations")
    }

    /// A value of the `meta` table, set to `candidate` the first time it is
    /// asked for and the same forever after (also across racing servers).
    pub async fn meta_once(&self, key: &str, candidate: &str) -> anyhow::Result<String> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(candidate)
            .execute(&self.write)
            .await
            .context("writing meta")?;
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.write)
            .await
            .context("reading meta")
    }

    /// SQLite, before the server serves (not for the admin CLI, which may
    /// run beside a live server): copy whatever an earlier process left in the
    /// WAL into the database and empty the file, then write once. A WAL
    /// that starts over costs its first commit an fsync of the new WAL
    /// header (WAL mode with synchronous = NORMAL syncs only there and at
    /// checkpoints), 20-40 ms on this disk; paid here it is not paid by the
    /// first request, and a 100 MB file left behind is not copied back by
    /// the checkpointer while the first streams connect.
    pub async fn start_wal(&self) -> anyhow::Result<()> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        self.truncate_wal().await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('opened_at', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(crate::domain::time::now_ms().to_string())
        .execute(&self.write)
        .await
        .context("writing meta")?;
        Ok(())
    }

    /// SQLite: every frame of the WAL into the database and the file cut to
    /// nothing. Only when no one else writes: at start and at shutdown.
    async fn truncate_wal(&self) -> anyhow::Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.write)
            .await
            .context("checkpointing the WAL")?;
        Ok(())
    }

    /// Copy the WAL into the database file without holding up the writer
    /// (`PASSIVE` takes no write lock), on a reader connection. SQLite only;
    /// run every 100 ms by the checkpointer task. Frames some reader still
    /// needs are left for a later run.
    pub async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.read.acquire().await?;
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await?;
        Ok(())
    }

    /// The write pool (for statements outside a transaction).
    pub fn writer(&self) -> &AnyPool {
        &self.write
    }

    /// A read transaction that sees one snapshot across its statements, so
    /// data and the stream position read with it agree.
    pub async fn begin_snapshot(&self) -> Result<Transaction<'static, sqlx::Any>, sqlx::Error> {
        let mut tx = self.read.begin().await?;
        if self.backend == Backend::Postgres {
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
        }
        Ok(tx)
    }

    pub async fn ping(&self) -> bool {
        match tokio::time::timeout(Duration::from_secs(2), self.read.acquire()).await {
            Ok(Ok(mut conn)) => conn.ping().await.is_ok(),
            _ => false,
        }
    }

    pub async fn close(&self) {
        // The next start then finds an empty WAL (`start_wal`).
        if self.backend == Backend::Sqlite {
            if let Err(err) = self.truncate_wal().await {
                tracing::warn!(error = %err, "emptying the WAL at shutdown failed");
            }
        }
        self.write.close().await;
        self.read.close().await;
    }
}

fn sqlite_pool(size: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _| {
            Box::pin(async move {
                // WAL: readers never block the writer. NORMAL: durable across a
                // process crash, fsync only at checkpoints (the usual WAL
                // trade-off). busy_timeout: wait, don't fail, on a locked file.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                // No checkpoint inside a commit: the connection that crosses
                // 1,000 WAL pages would copy them and fsync before its commit
                // returns, so every request queued behind the single writer
                // waited too (REST p99 of 11 ms at 1,000 writes/s). The
                // checkpointer task does it beside the writer (`checkpoint`).
                conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                Ok(())
            })
        })
}

/// The file of a `sqlite:` URL, for the writer's own connection.
fn sqlite_path(url: &str) -> anyhow::Result<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") || url.contains("mode=memory") {
        anyhow::bail!("DATABASE_URL: an in-memory SQLite database cannot be shared by the writer and the readers; name a file");
    }
    Ok(path.into())
}

/// `sqlite://file.db` creates the file on first run (`mode=rwc`).
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// True when `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}
