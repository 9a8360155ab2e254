//! Log streams and positions in them. Each stream (a user, the broadcast
//! stream, a room) has its own gap-free sequence (see `db::event_log`); a
//! user's position composes the positions of the streams they follow, and
//! a cursor (`push::cursor`) is its text form.

use std::collections::BTreeMap;
use std::fmt;

use uuid::Uuid;

/// A log stream: each has its own gap-free sequence (see `db::event_log`).
/// A user's cursor composes the positions of the streams that user follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKey {
    /// Events for one user.
    User(Uuid),
    /// Events for everyone (broadcast notifications, `{"all":true}` events).
    Broadcast,
    /// Events for the members of a room, by room id.
    Room(i64),
}

impl StreamKey {
    pub fn parse(s: &str) -> Option<StreamKey> {
        if s == "b" {
            return Some(StreamKey::Broadcast);
        }
        if let Some(id) = s.strip_prefix("u:") {
            return Uuid::parse_str(id).ok().map(StreamKey::User);
        }
        s.strip_prefix("r:")?.parse().ok().map(StreamKey::Room)
    }
}

impl fmt::Display for StreamKey {
    /// The form stored in the `stream` column of the log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamKey::User(id) => write!(f, "u:{id}"),
            StreamKey::Broadcast => f.write_str("b"),
            StreamKey::Room(id) => write!(f, "r:{id}"),
        }
    }
}

/// How far a stream has got in each log stream it follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub user: i64,
    pub broadcast: i64,
    /// room id -> seq, for the rooms the user follows.
    pub rooms: BTreeMap<i64, i64>,
}

impl Position {
    /// The position in `key`, or `None` when this stream does not follow it.
    pub fn get(&self, key: &StreamKey) -> Option<i64> {
        match key {
            StreamKey::User(_) => Some(self.user),
            StreamKey::Broadcast => Some(self.broadcast),
            StreamKey::Room(id) => self.rooms.get(id).copied(),
        }
    }

    pub fn set(&mut self, key: &StreamKey, seq: i64) {
        match key {
            StreamKey::User(_) => self.user = seq,
            StreamKey::Broadcast => self.broadcast = seq,
            StreamKey::Room(id) => {
                self.rooms.insert(*id, seq);
            }
        }
    }

    /// Every (stream, position) this position follows, for user `user`.
    pub fn entries(&self, user: Uuid) -> Vec<(StreamKey, i64)> {
        let mut out = vec![
            (StreamKey::User(user), self.user),
            (StreamKey::Broadcast, self.broadcast),
        ];
        out.extend(
            self.rooms
                .iter()
                .map(|(id, seq)| (StreamKey::Room(*id), *seq)),
        );
        out
    }
}
