//! The only way a handler publishes: commit its `WriteTx`, then hand what it
//! appended to the broker. Publishing after a successful commit can neither
//! fail nor block the request.

use std::sync::Arc;

use super::broker::{Broker, Control};
use crate::db::WriteTx;

#[derive(Clone)]
pub struct Publisher {
    broker: Arc<dyn Broker>,
}

impl Publisher {
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Publisher { broker }
    }

    /// Commit `tx` and publish its events, in the order they were appended.
    pub async fn commit(&self, tx: WriteTx) -> Result<(), sqlx::Error> {
        let frames = tx.commit().await?;
        if !frames.is_empty() {
            for frame in &frames {
                metrics::counter!("earntrack_events_published_total", "topic" => frame.topic.label()).increment(1);
            }
            self.broker.publish(&frames);
        }
        Ok(())
    }

    /// Send a control message to every server (after its change committed).
    pub fn control(&self, message: Control) {
        self.broker.control(message);
    }
}
