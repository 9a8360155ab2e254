//! Who is connected, across the cluster. A single server answers from its
//! hub alone. A cluster member also publishes its per-user stream counts to
//! the `presence` table (only the users whose count changed, twice a
//! second) with a heartbeat, and adds the other live servers' rows: admin
//! views and the per-user stream limit then cover every server, and a
//! server that died drops out once its heartbeat is `DEAD_AFTER` old.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::hub::Hub;
use crate::db::{presence, Db};
use crate::domain::time::now_ms;

/// A server silent for this long counts as dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(15);
const SYNC_EVERY: Duration = Duration::from_millis(500);

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
        if let Ok(mut conn) = db.writer().acquire().await {
            let _ = presence::leave(&mut conn, &db.server_id).await;
        }
    }

    async fn sync(&self, db: &Db) -> Result<(), sqlx::Error> {
        let changed = self.hub.take_changed();
        let mut conn = db.writer().acquire().await?;
        presence::heartbeat(&mut conn, &db.server_id, now_ms()).await?;
        for user in &changed {
            let n = self.hub.user_streams(*user) as i64;
            if let Err(err) = presence::set(&mut conn, &db.server_id, *user, n).await {
                // Try again at the next tick rather than lose the change.
                for user in &changed {
                    self.hub.mark_changed(*user);
                }
                return Err(err);
            }
        }
        presence::forget_dead(&mut conn, Self::cutoff() - DEAD_AFTER.as_millis() as i64).await
    }
}
