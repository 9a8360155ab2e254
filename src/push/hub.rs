//! The hub: the live side of fan-out on this server. One
//! `tokio::sync::broadcast` channel per connected user, created when their
//! first stream (or long-poll) subscribes and removed when the last one goes,
//! so nothing is kept for users who once connected.
//!
//! Delivery policy, written next to the code:
//! - `dispatch` never waits: `broadcast::Sender::send` is synchronous and
//!   overwrites the oldest slot when a receiver is behind, so a slow client
//!   can never stall a publisher or another client.
//! - A receiver that fell behind gets `RecvError::Lagged` and catches up from
//!   the event log (see `feed`); nothing is lost, only re-read.
//! - A frame is an `Arc<Frame>`: the channel moves a pointer, never bytes.
//! - Broadcast frames and hub-wide signals (ping, shutdown, resync) go
//!   through one channel shared by every subscriber: one send wakes them
//!   all, whatever their number. Room frames go into each member's own
//!   channel. So a stream holds two receivers however many rooms it follows.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::domain::frame::Frame;
use crate::domain::stream::StreamKey;

/// What travels through a user's channel.
#[derive(Clone, Debug)]
pub enum Signal {
    Event(Arc<Frame>),
    /// Time for a heartbeat comment (one hub-wide ticker instead of a timer
    /// per stream).
    Ping,
    /// End the user's streams and answer their long-polls now
    /// (force-disconnect, shutdown).
    Close,
    /// The user's access changed (their role): end their streams with
    /// `auth:expired`, so clients refresh their token and resume.
    AccessChanged,
    /// The user joined a room at this room sequence: follow it from there.
    Joined {
        room: i64,
        seq: i64,
    },
    /// The user left a room: read what is left of their interval from the log.
    Left {
        room: i64,
    },
    /// Events may have been missed (the cluster listener reconnected): read
    /// the log after the current position before going on.
    Resync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriberKind {
    /// An `/events` stream: counted against the per-user limit.
    Stream,
    /// A long-poll: wakes on events, not counted as a stream.
    Poll,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeError {
    TooManyStreams,
    /// More long-polls of one user waiting at once than allowed.
    TooManyPolls,
    ShuttingDown,
}

struct Entry {
    tx: broadcast::Sender<Signal>,
    streams: usize,
    polls: usize,
}

/// Slots of the shared channel. It is one ring for the whole server, so it
/// can be large: a burst of broadcasts never makes streams fall back to the log.
const SHARED_CAPACITY: usize = 1024;

/// 64 shards: publishers for different users rarely share a lock, and a
/// broadcast walks the shards one at a time.
const SHARDS: usize = 64;

struct Inner {
    /// `std::sync::Mutex`, not tokio's: it is held only for map updates and
    /// non-blocking `send`s, never across an `.await`.
    shards: Box<[Mutex<HashMap<Uuid, Entry>>]>,
    /// Room id -> members on any server; maintained by the room admin API.
    rooms: RwLock<HashMap<i64, HashSet<Uuid>>>,
    capacity: usize,
    max_streams_per_user: usize,
    /// Long-polls one user may have waiting on this server at once.
    max_polls_per_user: std::sync::atomic::AtomicUsize,
    closing: AtomicBool,
    /// Broadcast frames and hub-wide signals, shared by every subscriber.
    all: broadcast::Sender<Signal>,
    /// Users whose stream count changed, when cluster presence is on.
    changed: Option<Mutex<HashSet<Uuid>>>,
}

/// A cheap handle (`Arc`) to this server's hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// `capacity`: slots per user channel. Small, because each slot is
    /// allocated up front for every connected user; a stream that falls
    /// further behind reads the log instead.
    /// `track_changes`: record which users' stream counts change, for a
    /// cluster member to publish as presence.
    pub fn new(capacity: usize, max_streams_per_user: usize, track_changes: bool) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Hub {
            inner: Arc::new(Inner {
                shards,
                rooms: RwLock::new(HashMap::new()),
                capacity: capacity.max(2),
                max_streams_per_user,
                max_polls_per_user: std::sync::atomic::AtomicUsize::new(usize::MAX),
                closing: AtomicBool::new(false),
                all: broadcast::channel(SHARED_CAPACITY).0,
                changed: track_changes.then(|| Mutex::new(HashSet::new())),
            }),
        }
    }

    /// Cap the long-polls one user may have waiting at once (0: no cap).
    pub fn set_max_polls_per_user(&self, max: usize) {
        let max = if max == 0 { usize::MAX } else { max };
        self.inner.max_polls_per_user.store(max, Ordering::Relaxed);
    }

    fn shard(&self, user: Uuid) -> &Mutex<HashMap<Uuid, Entry>> {
        &self.inner.shards[(user.as_u128() % SHARDS as u128) as usize]
    }

    /// Subscribe before reading the log: whatever is published from now on
    /// is in the channel, so replay and live cannot leave a hole between them.
    /// `elsewhere`: the user's streams on other servers of a cluster, which
    /// count against the same per-user limit.
    pub fn subscribe(
        &self,
        user: Uuid,
        kind: SubscriberKind,
        elsewhere: usize,
    ) -> Result<Subscription, SubscribeError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(SubscribeError::ShuttingDown);
        }
        let mut shard = lock(self.shard(user));
        let entry = shard.entry(user).or_insert_with(|| Entry {
            tx: broadcast::channel(self.inner.capacity).0,
            streams: 0,
            polls: 0,
        });
        match kind {
            SubscriberKind::Stream
                if entry.streams + elsewhere >= self.inner.max_streams_per_user =>
            {
                if entry.streams + entry.polls == 0 {
                    shard.remove(&user);
                }
                return Err(SubscribeError::TooManyStreams);
            }
            SubscriberKind::Poll
                if entry.polls >= self.inner.max_polls_per_user.load(Ordering::Relaxed) =>
            {
                return Err(SubscribeError::TooManyPolls);
            }
            SubscriberKind::Stream => entry.streams += 1,
            SubscriberKind::Poll => entry.polls += 1,
        }
        let rx = entry.tx.subscribe();
        drop(shard);
        if kind == SubscriberKind::Stream {
            self.mark_changed(user);
        }
        Ok(Subscription {
            rx,
            all: self.inner.all.subscribe(),
            user,
            kind,
            hub: self.clone(),
        })
    }

    fn unsubscribe(&self, user: Uuid, kind: SubscriberKind) {
        let mut shard = lock(self.shard(user));
        if let Some(entry) = shard.get_mut(&user) {
            match kind {
                SubscriberKind::Stream => entry.streams -= 1,
                SubscriberKind::Poll => entry.polls -= 1,
            }
            if entry.streams + entry.polls == 0 {
                shard.remove(&user);
            }
        }
        drop(shard);
        if kind == SubscriberKind::Stream {
            self.mark_changed(user);
        }
    }

    /// Remember that `user`'s stream count changed, for cluster presence.
    pub fn mark_changed(&self, user: Uuid) {
        if let Some(changed) = &self.inner.changed {
            lock(changed).insert(user);
        }
    }

    /// Users whose stream count changed since the last call (cluster only).
    pub fn take_changed(&self) -> Vec<Uuid> {
        match &self.inner.changed {
            Some(changed) => lock(changed).drain().collect(),
            None => Vec::new(),
        }
    }

    /// Hand a committed event to the local subscribers it concerns.
    pub fn dispatch(&self, frame: Arc<Frame>) {
        match &frame.key {
            StreamKey::User(user) => self.send_to(*user, Signal::Event(frame.clone())),
            StreamKey::Broadcast => self.send_all(Signal::Event(frame)),
            StreamKey::Room(room) => {
                let members: Vec<Uuid> = match self.inner.rooms.read() {
                    Ok(rooms) => rooms
                        .get(room)
                        .map(|m| m.iter().copied().collect())
                        .unwrap_or_default(),
                    Err(poisoned) => poisoned
                        .into_inner()
                        .get(room)
                        .map(|m| m.iter().copied().collect())
                        .unwrap_or_default(),
                };
                for user in members {
                    self.send_to(user, Signal::Event(frame.clone()));
                }
            }
        }
    }

    fn send_to(&self, user: Uuid, signal: Signal) {
        if let Some(entry) = lock(self.shard(user)).get(&user) {
            // An error only means no receiver is left; nothing to do.
            let _ = entry.tx.send(signal);
        }
    }

    /// One send into the shared channel reaches every subscriber: a
    /// broadcast costs the same for ten users or ten thousand.
    fn send_all(&self, signal: Signal) {
        let _ = self.inner.all.send(signal);
    }

    /// The feeds that follow `key` catch up from the log: an event of it was
    /// committed that no bus message announced (its server died first).
    pub fn resync_stream(&self, key: &StreamKey) {
        match key {
            StreamKey::User(user) => self.send_to(*user, Signal::Resync),
            StreamKey::Broadcast => self.send_all(Signal::Resync),
            StreamKey::Room(room) => {
                let members: Vec<Uuid> = match self.inner.rooms.read() {
                    Ok(rooms) => rooms.get(room).map(|m| m.iter().copied().collect()),
                    Err(poisoned) => poisoned
                        .into_inner()
                        .get(room)
                        .map(|m| m.iter().copied().collect()),
                }
                .unwrap_or_default();
                for user in members {
                    self.send_to(user, Signal::Resync);
                }
            }
        }
    }

    /// Every feed catches up from the log (after a gap in cluster delivery).
    pub fn resync_all(&self) {
        self.send_all(Signal::Resync);
    }

    /// Every stream writes a heartbeat comment.
    pub fn ping_all(&self) {
        self.send_all(Signal::Ping);
    }

    /// End all streams of `user` on this server; returns how many.
    pub fn close_user(&self, user: Uuid) -> usize {
        match lock(self.shard(user)).get(&user) {
            Some(entry) => {
                let _ = entry.tx.send(Signal::Close);
                entry.streams
            }
            None => 0,
        }
    }

    /// End all streams of `user` on this server with `auth:expired`;
    /// returns how many.
    pub fn expire_user(&self, user: Uuid) -> usize {
        match lock(self.shard(user)).get(&user) {
            Some(entry) => {
                let _ = entry.tx.send(Signal::AccessChanged);
                entry.streams
            }
            None => 0,
        }
    }

    /// Shutdown: refuse new subscribers and end every stream and long-poll.
    pub fn close_all(&self) {
        self.inner.closing.store(true, Ordering::Release);
        self.send_all(Signal::Close);
    }

    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
    }

    /// Open streams on this server per user (users with only long-polls are
    /// left out).
    pub fn connections(&self) -> Vec<(Uuid, usize)> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            out.extend(
                lock(shard)
                    .iter()
                    .filter(|(_, e)| e.streams > 0)
                    .map(|(u, e)| (*u, e.streams)),
            );
        }
        out
    }

    pub fn user_streams(&self, user: Uuid) -> usize {
        lock(self.shard(user)).get(&user).map_or(0, |e| e.streams)
    }

    /// Users with a channel on this server (for tests and metrics).
    pub fn channel_count(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Record a membership change and tell the user's feeds on this server.
    /// The routing table is updated first: any room event dispatched after
    /// the signal reaches the user, and any before it is in the log, which
    /// the feed reads when the signal arrives.
    pub fn membership(&self, room: i64, user: Uuid, joined: Option<i64>) {
        {
            let mut rooms = self.inner.rooms.write().unwrap_or_else(|p| p.into_inner());
            let members = rooms.entry(room).or_default();
            if joined.is_some() {
                members.insert(user);
            } else {
                members.remove(&user);
                if members.is_empty() {
                    rooms.remove(&room);
                }
            }
        }
        let signal = match joined {
            Some(seq) => Signal::Joined { room, seq },
            None => Signal::Left { room },
        };
        self.send_to(user, signal);
    }
}

/// A poisoned shard only means a panic elsewhere while holding it; the map
/// itself is still consistent (every update is a single insert or remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One subscriber's receiver; leaving the hub happens on drop, so a stream
/// that ends in any way (client gone, shutdown, panic) is always counted out.
pub struct Subscription {
    /// The user's own channel (their events, room events, force-disconnect).
    pub rx: broadcast::Receiver<Signal>,
    /// The channel shared by everyone (broadcasts, pings, shutdown).
    pub all: broadcast::Receiver<Signal>,
    user: Uuid,
    kind: SubscriberKind,
    hub: Hub,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.user, self.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    fn frame(user: Uuid, seq: i64) -> Arc<Frame> {
        Arc::new(Frame::new(
            StreamKey::User(user),
            seq,
            "earnings:new".into(),
            "{}".into(),
        ))
    }

    #[test]
    fn channel_is_dropped_when_last_stream_closes() {
        let hub = Hub::new(8, 4, false);
        let user = Uuid::new_v4();
        let a = hub.subscribe(user, SubscriberKind::Stream, 0).unwrap();
        let b = hub.subscribe(user, SubscriberKind::Poll, 0).unwrap();
        assert_eq!(hub.channel_count(), 1);
        assert_eq!(hub.user_streams(user), 1);
        drop(a);
        assert_eq!(hub.channel_count(), 1);
        drop(b);
        assert_eq!(hub.channel_count(), 0);
    }

    #[test]
    fn stream_limit_is_per_user_and_polls_do_not_count() {
        let hub = Hub::new(8, 2, false);
        let user = Uuid::new_v4();
        let _s1 = hub.subscribe(user, SubscriberKind::Stream, 0).unwrap();
        let _s2 = hub.subscribe(user, SubscriberKind::Stream, 0).unwrap();
        assert_eq!(
            hub.subscribe(user, SubscriberKind::Stream, 0).err(),
            Some(SubscribeError::TooManyStreams)
        );
        assert!(hub.subscribe(user, SubscriberKind::Poll, 0).is_ok());
        assert!(hub
            .subscribe(Uuid::new_v4(), SubscriberKind::Stream, 0)
            .is_ok());
    }

    #[test]
    fn stalled_subscriber_does_not_delay_another() {
        let hub = Hub::new(4, 4, false);
        let user = Uuid::new_v4();
        let mut stalled = hub.subscribe(user, SubscriberKind::Stream, 0).unwrap();
        let mut fast = hub.subscribe(user, SubscriberKind::Stream, 0).unwrap();
        for seq in 1..=100 {
            hub.dispatch(frame(user, seq));
            // The fast one reads each frame as it comes; dispatch never waits
            // for the stalled one.
            match fast.rx.try_recv() {
                Ok(Signal::Event(f)) => assert_eq!(f.seq, seq),
                other => panic!("fast subscriber got {other:?}"),
            }
        }
        // The stalled one learns it lagged (and will catch up from the log).
        assert!(matches!(
            stalled.rx.try_recv(),
            Err(TryRecvError::Lagged(96))
        ));
    }

    #[test]
    fn broadcast_reaches_every_user_once_and_close_ends_only_that_user() {
        let hub = Hub::new(8, 4, false);
        let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
        let mut s1 = hub.subscribe(u1, SubscriberKind::Stream, 0).unwrap();
        let mut s2 = hub.subscribe(u2, SubscriberKind::Stream, 0).unwrap();
        hub.dispatch(Arc::new(Frame::new(
            StreamKey::Broadcast,
            1,
            "notification".into(),
            "{}".into(),
        )));
        assert!(matches!(s1.all.try_recv(), Ok(Signal::Event(_))));
        assert!(matches!(s2.all.try_recv(), Ok(Signal::Event(_))));
        assert!(matches!(s1.all.try_recv(), Err(TryRecvError::Empty)));
        assert!(matches!(s1.rx.try_recv(), Err(TryRecvError::Empty)));
        assert_eq!(hub.close_user(u1), 1);
        assert!(matches!(s1.rx.try_recv(), Ok(Signal::Close)));
        assert!(matches!(s2.rx.try_recv(), Err(TryRecvError::Empty)));
    }
}
