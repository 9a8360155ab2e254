//! Pure types, no IO: money and hours as exact two-decimal numbers, the
//! earning and notification shapes of the contract, and the events a change
//! publishes, the log streams they go to and the encoded `Frame` every
//! subscriber shares. Input is parsed into these types at the HTTP boundary.

pub mod earning;
pub mod event;
pub mod expense;
pub mod fixed;
pub mod frame;
pub mod input;
pub mod invoice;
pub mod notification;
pub mod record;
pub mod role;
pub mod stream;
pub mod time;

pub use fixed::Fixed2;

/// A new row's id: a UUIDv7, whose leading bits are the creation time.
/// Rows keyed by random UUIDs (v4) land on a random leaf of every index on
/// `id`, so each write dirtied a page of its own there; ordered keys append
/// to the index's last page, which the writes of one commit share.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
