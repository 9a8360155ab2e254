//! Cursors: the `id:` of every frame. A cursor composes the user's position in
//! each log stream they follow (their own, the broadcast stream, each room),
//! and is bound to the log that issued it (a random id kept in the database)
//! and to its user, so a cursor from another database or another user is
//! recognised and answered with `sync:reset` instead of a wrong replay.
//!
//! Text form: `<log>.<user tag>.<user seq>.<broadcast seq>[.<room>:<seq>]*`,
//! opaque to clients, safe in an SSE `id:` line and in a URL.

use std::collections::BTreeMap;
use std::fmt::Write;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::stream::Position;

/// Encodes and checks cursors for one log.
#[derive(Clone, Debug)]
pub struct CursorCodec {
    log_id: String,
}

impl CursorCodec {
    pub fn new(log_id: impl Into<String>) -> Self {
        CursorCodec {
            log_id: log_id.into(),
        }
    }

    fn user_tag(&self, user: Uuid) -> String {
        let digest = Sha256::new()
            .chain_update(self.log_id.as_bytes())
            .chain_update(user.as_bytes())
            .finalize();
        digest[..4].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// `<log>.<user tag>`: the part of every cursor of `user` that never
    /// changes. A feed computes it once, not once per event (it hashes).
    pub fn prefix(&self, user: Uuid) -> String {
        format!("{}.{}", self.log_id, self.user_tag(user))
    }

    pub fn encode(&self, user: Uuid, pos: &Position) -> String {
        encode_with(&self.prefix(user), pos)
    }

    /// The position a cursor names, or `None` when it is malformed, from
    /// another log or for another user.
    pub fn decode(&self, user: Uuid, cursor: &str) -> Option<Position> {
        if cursor.len() > 4096 {
            return None;
        }
        let mut parts = cursor.split('.');
        if parts.next()? != self.log_id || parts.next()? != self.user_tag(user) {
            return None;
        }
        let seq = |s: &str| s.parse::<i64>().ok().filter(|n| *n >= 0);
        let mut pos = Position {
            user: seq(parts.next()?)?,
            broadcast: seq(parts.next()?)?,
            rooms: BTreeMap::new(),
        };
        for room in parts {
            let (id, n) = room.split_once(':')?;
            pos.rooms.insert(id.parse().ok()?, seq(n)?);
        }
        Some(pos)
    }
}

/// The cursor of `pos` after a `prefix` from `CursorCodec::prefix`.
pub fn encode_with(prefix: &str, pos: &Position) -> String {
    let mut bytes = Vec::with_capacity(prefix.len() + 24);
    encode_into(&mut bytes, prefix, pos);
    String::from_utf8(bytes).expect("a cursor is ASCII")
}

/// `encode_with`, appended to `out`: a stream writes each event's cursor
/// straight into its write buffer (no `String` per delivery).
pub fn encode_into(out: &mut Vec<u8>, prefix: &str, pos: &Position) {
    use std::io::Write as _;
    out.extend_from_slice(prefix.as_bytes());
    let _ = write!(out, ".{}.{}", pos.user, pos.broadcast);
    for (room, seq) in &pos.rooms {
        let _ = write!(out, ".{room}:{seq}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_is_bound_to_log_and_user() {
        let codec = CursorCodec::new("a1b2c3d4e5f6");
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let pos = Position {
            user: 12,
            broadcast: 3,
            rooms: [(7, 2)].into(),
        };
        let cursor = codec.encode(alice, &pos);
        assert_eq!(codec.decode(alice, &cursor), Some(pos));
        assert_eq!(codec.decode(bob, &cursor), None);
        assert_eq!(
            CursorCodec::new("ffffffffffff").decode(alice, &cursor),
            None
        );
        assert_eq!(codec.decode(alice, "garbage"), None);
        assert_eq!(codec.decode(alice, &cursor.replace(".12.", ".-1.")), None);
    }
}
