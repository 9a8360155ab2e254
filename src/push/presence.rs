//! Who is connected, across the cluster. A single server answers from its
//! hub alone. A cluster member also publishes its per-user stream counts to
//! the `presence` table (only the users whose count changed, twice a
//! second) with a heartbeat, and adds the other live servers' rows: admin
//! views and the per-user stream limit then cover every server, and a
//! server that died drops out once its heartbeat is `DEAD_AFTER` old.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::hub::Hub;
use crate::db::exec::Exec;
use crate::db::{presence, Db};
use crate::domain::time::now_ms;

/// A server silent for this long counts as dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(15);
const SYNC_EVERY: Duration = Duration::from_millis(500);
/// Users whose counts one writer unit sets.
const SYNC_CHUNK: usize = 200;

/// A presence write, as a unit of the writer. Presence rows lock no log
/// stream, so any shard does; one task writes them, one unit at a time.
async fn write<F>(db: &Db, unit: F) -> Result<(), sqlx::Error>
where
    F: for<'c> FnOnce(&'c mut dyn Exec) -> BoxFuture<'c, Result<(), sqlx::Error>> + Send + 'static,
{
    db.writes.run(0, unit, |_| {}).await
}

#[derive(Clone)]
pub struct Presence {
    hub: Hub,
    /// `Some` in a cluster.
    db: Option<Db>,
}

impl Presence {
    pub fn new(hub: Hub, cluster: Option<Db>) -> Self {
        Presence { hub, db: cluster }
    }

    fn cutoff() -> i64 {
        now_ms() - DEAD_AFTER.as_millis() as i64
    }

    /// The user's streams on other servers.
    pub async fn elsewhere(&self, user: Uuid) -> Result<usize, sqlx::Error> {
        let Some(db) = &self.db else { return Ok(0) };
        let mut conn = db.read.acquire().await?;
        let n = presence::remote_streams(&mut conn, &db.server_id, user, Self::cutoff()).await?;
        Ok(n.max(0) as usize)
    }

    /// Open streams per user on every server.
    pub async fn connections(&self) -> Result<Vec<(Uuid, usize)>, sqlx::Error> {
        let mut all: BTreeMap<Uuid, usize> = self.hub.connections().into_iter().collect();
        if let Some(db) = &self.db {
            let mut conn = db.read.acquire().await?;
            for (user, n) in presence::remote_all(&mut conn, &db.server_id, Self::cutoff()).await? {
                *all.entry(user).or_default() += n.max(0) as usize;
            }
        }
        Ok(all.into_iter().collect())
    }

    /// Open streams of one user on every server.
    pub async fn user_streams(&self, user: Uuid) -> Result<usize, sqlx::Error> {
        Ok(self.hub.user_streams(user) + self.elsewhere(user).await?)
    }

    /// Publish this server's presence until `stop`, then withdraw it.
    pub async fn run(self, stop: CancellationToken) {
        let Some(db) = self.db.clone() else { return };
        let mut tick = tokio::time::interval(SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(err) = self.sync(&db).await {
                        tracing::warn!(error = %err, "publishing presence failed");
                    }
                }
            }
        }
        let server = db.server_id.to_string();
        let _ = write(&db, move |conn| {
            Box::pin(async move { presence::leave(conn, &server).await })
        })
        .await;
    }

    /// On the writer, in units of at most `SYNC_CHUNK` users: a server
    /// that just took thousands of streams does not hold up the REST writes
    /// queued behind it for its whole list.
    async fn sync(&self, db: &Db) -> Result<(), sqlx::Error> {
        let changed = self.hub.take_changed();
        let server = db.server_id.to_string();
        let cutoff = Self::cutoff() - DEAD_AFTER.as_millis() as i64;
        let beat = server.clone();
        write(db, move |conn| {
            Box::pin(async move {
                presence::heartbeat(conn, &beat, now_ms()).await?;
                presence::forget_dead(conn, cutoff).await
            })
        })
        .await?;
        for (i, chunk) in changed.chunks(SYNC_CHUNK).enumerate() {
            let counts: Vec<(Uuid, i64)> = chunk
                .iter()
                .map(|u| (*u, self.hub.user_streams(*u) as i64))
                .collect();
            let server = server.clone();
            let done = write(db, move |conn| {
                Box::pin(async move {
                    for (user, n) in &counts {
                        presence::set(conn, &server, *user, *n).await?;
                    }
                    Ok(())
                })
            })
            .await;
            if let Err(err) = done {
                // Try again at the next tick rather than lose the changes.
                for user in &changed[i * SYNC_CHUNK..] {
                    self.hub.mark_changed(*user);
                }
                return Err(err);
            }
        }
        Ok(())
    }
}
