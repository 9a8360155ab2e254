//! The Redis transport of the cluster bus (`EARNTRACK_BUS_URL=redis://…`):
//! PUBLISH on a connection of the notifier's own, SUBSCRIBE on the
//! listener's. PostgreSQL stays the log. Channels are named after the
//! database's log id, so clusters sharing one Redis never hear each other.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::bus::Channel;

fn channel_name(log_id: &str, channel: Channel) -> String {
    match channel {
        Channel::Events => format!("earntrack:{log_id}:events"),
        Channel::Control => format!("earntrack:{log_id}:control"),
    }
}

pub struct Publisher {
    conn: redis::aio::MultiplexedConnection,
    events: String,
    control: String,
}

impl Publisher {
    pub async fn connect(url: &str, log_id: &str) -> anyhow::Result<Publisher> {
        let client = redis::Client::open(url)?;
        Ok(Publisher {
            conn: client.get_multiplexed_async_connection().await?,
            events: channel_name(log_id, Channel::Events),
            control: channel_name(log_id, Channel::Control),
        })
    }

    pub async fn send(&mut self, channel: Channel, payload: &str) -> anyhow::Result<()> {
        let name = match channel {
            Channel::Events => &self.events,
            Channel::Control => &self.control,
        };
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(name)
            .arg(payload)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }
}

pub struct Subscriber {
    messages: BoxStream<'static, redis::Msg>,
    control: String,
}

impl Subscriber {
    pub async fn connect(url: &str, log_id: &str) -> anyhow::Result<Subscriber> {
        let client = redis::Client::open(url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        let events = channel_name(log_id, Channel::Events);
        let control = channel_name(log_id, Channel::Control);
        pubsub.subscribe(&events).await?;
        pubsub.subscribe(&control).await?;
        Ok(Subscriber {
            messages: pubsub.into_on_message().boxed(),
            control,
        })
    }

    /// The next message; `None` when the connection is gone.
    pub async fn recv(&mut self) -> anyhow::Result<Option<(Channel, String)>> {
        let Some(msg) = self.messages.next().await else {
            return Ok(None);
        };
        let channel = if msg.get_channel_name() == self.control {
            Channel::Control
        } else {
            Channel::Events
        };
        Ok(Some((channel, msg.get_payload::<String>()?)))
    }
}
