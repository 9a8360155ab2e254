//! The NATS transport of the cluster bus (`EARNTRACK_BUS_URL=nats://…`):
//! core pub/sub (no JetStream), a client of the notifier's own to publish,
//! one of the listener's to subscribe. PostgreSQL stays the log. Subjects
//! are named after the database's log id (`earntrack.<log_id>.events`,
//! `.control`), so clusters sharing one NATS never hear each other.
//!
//! A lost connection must end the client, not heal quietly. async-nats
//! reconnects by itself and resubscribes, but core NATS keeps nothing for
//! a client that is away: whatever was published meanwhile is gone, and
//! bus.rs, never told, would neither say 503 on `/readyz` nor send its
//! feeds to the log. So, as on the other transports, a drop is the end of
//! this client, and bus.rs's own reconnect and resync take over:
//! - `Event::Disconnected` (from the client's event callback) marks the
//!   client lost at once: `Subscriber::recv` returns `None` and
//!   `Publisher::send` fails. So does `Event::SlowConsumer`, which tells
//!   that the client dropped messages of ours.
//! - A client that reconnected anyway counts a second connect in its
//!   statistics: checked on every message too, in case the event was late.
//! - `max_reconnects(1)` (0 would mean forever) lets a dropped client try
//!   once and then end its task, so no client retries in the background
//!   behind bus.rs; one that did get back ends when its handles go.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::{Client, ConnectOptions, Event, RequestErrorKind, Statistics};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::bus::Channel;

fn subject(log_id: &str, channel: Channel) -> String {
    match channel {
        Channel::Events => format!("earntrack.{log_id}.events"),
        Channel::Control => format!("earntrack.{log_id}.control"),
    }
}

/// A client that ends at its first lost connection (see the module doc).
struct Connection {
    client: Client,
    lost: CancellationToken,
    stats: Arc<Statistics>,
}

impl Connection {
    /// `name` shows in the server's connection list (`/connz`).
    async fn open(url: &str, name: String) -> anyhow::Result<Connection> {
        let lost = CancellationToken::new();
        let on_event = lost.clone();
        let client = ConnectOptions::new()
            .name(name)
            .max_reconnects(1)
            .ignore_discovered_servers()
            .event_callback(move |event| {
                if matches!(event, Event::Disconnected | Event::SlowConsumer(_)) {
                    on_event.cancel();
                }
                std::future::ready(())
            })
            .connect(url)
            .await?;
        let stats = client.statistics();
        Ok(Connection {
            client,
            lost,
            stats,
        })
    }

    fn is_lost(&self) -> bool {
        self.lost.is_cancelled() || self.stats.connects.load(Ordering::Relaxed) > 1
    }
}

pub struct Publisher {
    conn: Connection,
    events: String,
    control: String,
}

impl Publisher {
    pub async fn connect(url: &str, log_id: &str, server_id: &str) -> anyhow::Result<Publisher> {
        Ok(Publisher {
            conn: Connection::open(url, format!("earntrack-notifier-{server_id}")).await?,
            events: subject(log_id, Channel::Events),
            control: subject(log_id, Channel::Control),
        })
    }

    /// Publish, then wait until the message has left the client's buffer
    /// for the socket (async-nats writes as soon as its task runs; the
    /// flush only lets `send` report the connection that could not take
    /// it).
    pub async fn send(&mut self, channel: Channel, payload: &str) -> anyhow::Result<()> {
        if self.conn.is_lost() {
            anyhow::bail!("the NATS connection was lost");
        }
        let subject = match channel {
            Channel::Events => &self.events,
            Channel::Control => &self.control,
        };
        let client = &self.conn.client;
        let sent = async {
            client
                .publish(subject.clone(), Bytes::copy_from_slice(payload.as_bytes()))
                .await?;
            client.flush().await?;
            anyhow::Ok(())
        };
        tokio::select! {
            sent = sent => sent,
            _ = self.conn.lost.cancelled() => anyhow::bail!("the NATS connection was lost"),
        }
    }
}

pub struct Subscriber {
    conn: Connection,
    messages: async_nats::Subscriber,
    events: String,
    control: String,
}

impl Subscriber {
    pub async fn connect(url: &str, log_id: &str, server_id: &str) -> anyhow::Result<Subscriber> {
        let conn = Connection::open(url, format!("earntrack-listener-{server_id}")).await?;
        // One subscription for both subjects: messages keep the order they
        // were published in, as on one LISTEN or SUBSCRIBE connection.
        let messages = conn
            .client
            .subscribe(format!("earntrack.{log_id}.*"))
            .await?;
        // NATS does not confirm a SUB. A request nobody answers comes back
        // ("no responders") only once the server has read what came before
        // it, the SUB included: after it, every later hint reaches us, so
        // bus.rs's resync from the log leaves no gap.
        let probe = format!("earntrack.{log_id}.probe.{server_id}");
        match conn.client.request(probe, Bytes::new()).await {
            Ok(_) => {}
            Err(err) if err.kind() == RequestErrorKind::NoResponders => {}
            Err(err) => return Err(err.into()),
        }
        Ok(Subscriber {
            conn,
            messages,
            events: subject(log_id, Channel::Events),
            control: subject(log_id, Channel::Control),
        })
    }

    /// The next message; `None` when the connection is gone.
    pub async fn recv(&mut self) -> anyhow::Result<Option<(Channel, String)>> {
        loop {
            if self.conn.is_lost() {
                return Ok(None);
            }
            let msg = tokio::select! {
                msg = self.messages.next() => msg,
                _ = self.conn.lost.cancelled() => return Ok(None),
            };
            let Some(msg) = msg else {
                return Ok(None);
            };
            let channel = match msg.subject.as_str() {
                s if s == self.events => Channel::Events,
                s if s == self.control => Channel::Control,
                // Some other subject of this log id: not a channel.
                _ => continue,
            };
            return Ok(Some((channel, String::from_utf8(msg.payload.into())?)));
        }
    }
}
