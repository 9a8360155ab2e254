//! The PostgreSQL transport of the cluster bus: NOTIFY on a connection of
//! the notifier's own, LISTEN on the listener's. The statements are in
//! `db::notify`.

use sqlx::postgres::{PgConnection, PgListener};

use super::bus::Channel;
use crate::db::notify;

fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Events => notify::EVENTS,
        Channel::Control => notify::CONTROL,
    }
}

pub struct Notifier(PgConnection);

impl Notifier {
    pub async fn connect(url: &str, server_id: &str) -> anyhow::Result<Notifier> {
        Ok(Notifier(notify::notifier(url, server_id).await?))
    }

    /// One NOTIFY, in a transaction of its own (never a writer's).
    pub async fn send(&mut self, channel: Channel, payload: &str) -> anyhow::Result<()> {
        Ok(notify::notify_on(&mut self.0, channel_name(channel), payload).await?)
    }
}

pub struct Listener(PgListener);

impl Listener {
    pub async fn connect(url: &str, server_id: &str) -> anyhow::Result<Listener> {
        Ok(Listener(notify::listen(url, server_id).await?))
    }

    pub async fn recv(&mut self) -> anyhow::Result<Option<(Channel, String)>> {
        Ok(self.0.try_recv().await?.map(|note| {
            let channel = if note.channel() == notify::CONTROL {
                Channel::Control
            } else {
                Channel::Events
            };
            (channel, note.payload().to_owned())
        }))
    }
}
