//! Brokers carry committed frames to the hubs. On one server the memory
//! broker hands them straight to the local hub; a cluster's broker also
//! tells the other servers, on the bus (`bus`: PostgreSQL NOTIFY by
//! default, or Redis or NATS pub/sub). Either way there is one delivery
//! path: publisher -> broker -> hub(s).

pub mod bus;
pub mod nats;
pub mod postgres;
pub mod redis;

use std::sync::Arc;

use uuid::Uuid;

use super::hub::Hub;
use crate::domain::frame::Frame;

/// Messages about connections rather than events, for every server's hub.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Control {
    /// End all streams of a user (admin force-disconnect).
    Disconnect { user: Uuid },
    /// A committed room membership change; `joined` is the room sequence
    /// joined at, `None` for leaving.
    Membership {
        room: i64,
        user: Uuid,
        joined: Option<i64>,
    },
}

pub trait Broker: Send + Sync + 'static {
    /// Deliver frames of committed events, in the order given. Never blocks.
    fn publish(&self, frames: &[Arc<Frame>]);
    /// Deliver a control message to every server. Never blocks.
    fn control(&self, message: Control);
}

/// Apply a control message to a hub (every broker ends here).
pub fn apply(hub: &Hub, message: &Control) {
    match message {
        Control::Disconnect { user } => {
            hub.close_user(*user);
        }
        Control::Membership { room, user, joined } => hub.membership(*room, *user, *joined),
    }
}

pub struct MemoryBroker {
    hub: Hub,
}

impl MemoryBroker {
    pub fn new(hub: Hub) -> Self {
        MemoryBroker { hub }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, frames: &[Arc<Frame>]) {
        for frame in frames {
            self.hub.dispatch(frame.clone());
        }
    }

    fn control(&self, message: Control) {
        apply(&self.hub, &message);
    }
}
