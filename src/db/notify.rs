//! PostgreSQL NOTIFY / LISTEN, what the cluster broker travels on. Only the
//! statements and the listening connection live here; what a payload says is
//! the broker's business (`push::broker::postgres`).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use sqlx::ConnectOptions;

/// Committed events, many to a notification, sent after they commit.
pub const EVENTS: &str = "earntrack_events";
/// Control messages (force-disconnect, room membership).
pub const CONTROL: &str = "earntrack_control";
/// NOTIFY payloads must stay under 8000 bytes.
pub const MAX_PAYLOAD: usize = 7900;

/// The connection a server NOTIFYs committed events on, after their
/// commit and outside any writer's transaction (its own, named, so operators
/// and tests can find it).
pub async fn notifier(url: &str, server_id: &str) -> Result<PgConnection, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.application_name(&format!("earntrack-notifier-{server_id}"));
    options.connect().await
}

/// One `NOTIFY` on `channel`, in a transaction of its own.
pub async fn notify_on(
    conn: &mut PgConnection,
    channel: &str,
    payload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// A connection of its own that LISTENs on both channels.
pub async fn listen(url: &str, server_id: &str) -> Result<PgListener, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    // Named, so operators (and tests) can find a server's listener.
    let options = options.application_name(&format!("earntrack-listener-{server_id}"));
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // Do not reconnect behind our back: a reconnect must trigger a resync.
    listener.eager_reconnect(false);
    listener.listen_all([EVENTS, CONTROL]).await?;
    Ok(listener)
}
