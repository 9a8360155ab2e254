//! Fan-out core; knows nothing about HTTP.
//!
//! publish: a handler's unit (`Publisher::write`) appends events to the log
//! inside its transaction on the writer (`db::writer`) -> once committed,
//! the writer hands the encoded frames to the `Broker` -> every server's `Hub` -> each subscriber's `Feed`, which
//! orders, de-duplicates and fills gaps from the log before a transport (SSE,
//! long-poll) writes anything.

pub mod broker;
pub mod cursor;
pub mod feed;
pub mod hub;
pub mod presence;
pub mod publisher;

pub use feed::{Feed, FeedContext, Item, Opening, TopicFilter};
pub use hub::{Hub, SubscribeError, SubscriberKind};
pub use presence::Presence;
pub use publisher::{Publisher, Tx};
