//! Brokers carry committed frames to the hubs. On one server the memory
//! broker hands them straight to the local hub; a cluster adds a broker that
//! also reaches the other servers. Either way there is one delivery path:
//! publisher -> broker -> hub(s).

use std::sync::Arc;

use super::frame::Frame;
use super::hub::Hub;

pub trait Broker: Send + Sync + 'static {
    /// Deliver frames of committed events, in the order given. Never blocks.
    fn publish(&self, frames: &[Arc<Frame>]);
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
}
