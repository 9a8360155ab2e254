//! Background jobs: presence, the cluster listener, notifier and high-water
//! check, the heartbeat ticker,
//! the SQLite checkpointer, the retention pruner, the access watch and the
//! overdue-invoice sweep. One token stops them
//! all, and every handle is awaited on shutdown, so presence is withdrawn
//! and no job is still writing when the pool closes.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::{event_log, idempotency, invoices, notifications, records, users, Backend, Db};
use crate::domain::event::DomainEvent;
use crate::domain::invoice::Invoice;
use crate::domain::record;
use crate::domain::stream::StreamKey;
use crate::domain::time::now_ms;
use crate::http::AppState;
use crate::push::broker::bus;
use crate::push::Hub;

pub struct Jobs {
    stop: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

impl Jobs {
    pub fn spawn(state: &AppState) -> Jobs {
        let stop = CancellationToken::new();
        let mut handles = vec![tokio::spawn(state.presence.clone().run(stop.clone()))];
        if let Some(bus) = &state.bus {
            handles.push(tokio::spawn(bus::listen(
                bus.clone(),
                state.cluster_up.clone(),
                stop.clone(),
            )));
            handles.push(tokio::spawn(bus::notifier(bus.clone(), stop.clone())));
            handles.push(tokio::spawn(bus::high_water(bus.clone(), stop.clone())));
        }
        let every = state.config.heartbeat();
        handles.push(tokio::spawn(heartbeat(
            state.hub.clone(),
            every,
            stop.clone(),
        )));
        if state.db.backend == Backend::Sqlite {
            let every = Duration::from_millis(state.config.sqlite_checkpoint_ms);
            handles.push(tokio::spawn(checkpointer(
                state.db.clone(),
                every,
                stop.clone(),
            )));
        }
        handles.push(tokio::spawn(retention(state.clone(), stop.clone())));
        handles.push(tokio::spawn(access_watch(state.clone(), stop.clone())));
        handles.push(tokio::spawn(overdue_sweep(state.clone(), stop.clone())));
        Jobs { stop, handles }
    }

    /// Stop every job and wait for each (a stuck one for at most 2 s).
    pub async fn stop(self) {
        self.stop.cancel();
        for handle in self.handles {
            let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
        }
    }
}

/// One ticker for the whole server instead of a timer per stream.
async fn heartbeat(hub: Hub, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => hub.ping_all(),
        }
    }
}

/// Often and small: a checkpoint competes with the writer for the cores,
/// and one second's worth at 1,000 writes/s (~15k pages) held requests up
/// for ~15 ms; a tenth of that is a short pause.
async fn checkpointer(db: Db, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => if let Err(err) = db.checkpoint().await {
                tracing::warn!(error = %err, "WAL checkpoint failed");
            },
        }
    }
}

/// How often every server looks for changes of access (roles), made by
/// `earntrack admin grant|revoke` or any server: the bound on how long an
/// open stream keeps the old role.
pub const ACCESS_POLL: Duration = Duration::from_millis(250);

/// Each look reads the changes of this last stretch of time, so a change is
/// seen although another process's clock is a little off or its commit
/// landed late; a change seen again is simply not a change any more.
const ACCESS_WINDOW_MS: i64 = 5_000;

/// Four times a second, one indexed query: users whose access changed get
/// it updated in the cache (the next request sees it), and their streams on
/// this server end with `auth:expired`.
async fn access_watch(app: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ACCESS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let changed = async {
            let mut conn = app.db.read.acquire().await?;
            users::changed_since(&mut conn, now_ms() - ACCESS_WINDOW_MS).await
        };
        let changed = match changed.await {
            Ok(changed) => changed,
            Err(err) => {
                tracing::warn!(error = %err, "reading access changes failed");
                continue;
            }
        };
        for (user, access) in changed {
            if app.db.known_users.update(user, access) {
                let streams = app.hub.expire_user(user);
                tracing::info!(user_id = %user, role = %access.role, streams, "access changed");
            }
        }
    }
}

/// Once a minute: forget idle rate-limit buckets, prune the event log and
/// old idempotency keys.
async fn retention(app: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                app.rate_limit.forget_idle();
                app.auth_throttle.forget_idle();
                if let Err(err) = prune(&app.db, &app.config).await {
                    tracing::warn!(error = %err, "pruning the event log failed");
                }
            }
        }
    }
}

/// Streams cut per write transaction: the single writer is held for
/// milliseconds at a time, never for the whole pass.
const PRUNE_BATCH: usize = 200;

async fn prune(db: &Db, config: &Config) -> anyhow::Result<()> {
    let before = now_ms() - (config.retention_secs as i64) * 1000;
    let mut conn = db.read.acquire().await?;
    let targets =
        event_log::prune_targets(&mut conn, before, config.retention_events.max(1)).await?;
    drop(conn);
    let mut pruned = 0;
    // On the writer, a batch of streams per unit: REST writes queued
    // meanwhile wait for one batch, not for the whole pass.
    for batch in targets.chunks(PRUNE_BATCH) {
        let batch = std::sync::Arc::new(batch.to_vec());
        pruned += db
            .writes
            .run(
                None,
                move |conn| {
                    let batch = batch.clone();
                    Box::pin(async move {
                        let mut pruned = 0;
                        for (stream, upto) in batch.iter() {
                            pruned += event_log::prune_stream(conn, stream, *upto).await?;
                        }
                        Ok::<_, sqlx::Error>(pruned)
                    })
                },
                |_| {},
            )
            .await?;
    }
    let before = now_ms() - 86_400_000;
    db.writes
        .run(
            None,
            move |conn| Box::pin(idempotency::prune(conn, before)),
            |_| {},
        )
        .await?;
    if pruned > 0 {
        tracing::info!(pruned, streams = targets.len(), "event log pruned");
    }
    Ok(())
}

/// Invoices warned about per pass; the rest wait for the next pass.
const SWEEP_BATCH: i64 = 500;

/// Every `EARNTRACK_OVERDUE_SWEEP_SECS`: each invoice past its due date
/// (UTC) that is neither paid nor void gets its owner one `warning`
/// notification. Every server sweeps; the claim (`claim_overdue_warning`)
/// commits with the notification, so in a cluster exactly one of them
/// sends it, and a server dying mid-pass leaves the rest to the next pass.
async fn overdue_sweep(app: AppState, stop: CancellationToken) {
    let every = Duration::from_secs(app.config.overdue_sweep_secs);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match sweep_overdue(&app).await {
            Ok(0) => {}
            Ok(warned) => tracing::info!(warned, "overdue invoices warned"),
            Err(err) => tracing::warn!(error = %err, "overdue sweep failed"),
        }
    }
}

async fn sweep_overdue(app: &AppState) -> Result<usize, sqlx::Error> {
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let due = {
        let mut conn = app.db.read.acquire().await?;
        invoices::unwarned_overdue(&mut conn, &today, SWEEP_BATCH).await?
    };
    let mut warned = 0;
    for (user, id) in due {
        let today = today.clone();
        let sent = app
            .publisher
            .write(&StreamKey::User(user), move |tx| {
                let today = today.clone();
                Box::pin(async move {
                    let now = now_ms();
                    if !invoices::claim_overdue_warning(tx.conn(), id, &today, now).await? {
                        return Ok(false); // another server (or a change) got there first
                    }
                    let Some(invoice) = records::get::<Invoice>(tx.conn(), user, id).await? else {
                        return Ok(false);
                    };
                    let warning = record::notify(&invoice, invoice.overdue_notice(), None, now);
                    let stored = notifications::insert(Some(user), &warning);
                    let event = DomainEvent::notification(&warning);
                    tx.append_with(vec![stored], &[(&StreamKey::User(user), &event)])
                        .await?;
                    Ok::<_, sqlx::Error>(true)
                })
            })
            .await?;
        warned += usize::from(sent);
    }
    Ok(warned)
}
