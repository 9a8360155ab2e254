//! `Feed`: what one subscriber (an SSE stream or a long-poll) receives. It
//! joins the log and the live channel into one ordered sequence per log
//! stream with no gap and no duplicate:
//!
//! - It subscribes to the hub *before* reading positions or the log, so an
//!   event committed during the replay is in the channel too; live frames at
//!   or below the position already delivered are dropped as duplicates.
//! - A live frame more than one past the position means an earlier event was
//!   committed but its publish has not reached us yet (two requests finished
//!   at the same moment), or was lost to lag: the feed reads the log, where
//!   every committed event already is (see `db::event_log` for why sequences
//!   are gap-free). Only then does it move on, so n+1 never precedes n.
//! - `Lagged` from the channel is handled the same way: catch up from the log.
//!   A subscriber that keeps lagging while catching up is ended, so it
//!   reconnects with `Last-Event-ID` instead of pinning a replay slot.
//! - Log reads hold a permit of a semaphore shared by all feeds, which bounds
//!   the database work of a reconnect storm.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::cursor::{encode_into, encode_with, CursorCodec};
use super::hub::{Signal, Subscription};
use crate::db::{event_log, rooms, Db};
use crate::domain::event::Topic;
use crate::domain::frame::Frame;
use crate::domain::stream::Position;

/// Shared by all feeds of a server.
#[derive(Clone)]
pub struct FeedContext {
    pub db: Db,
    pub codec: CursorCodec,
    pub replay_permits: Arc<Semaphore>,
    /// Most events a resume may replay; further behind means `sync:reset`.
    pub replay_max: i64,
}

/// Events read from the log per query.
const PAGE: i64 = 500;
/// Lags in a row without reaching live (an event straight from its channel,
/// or the log's head) before a subscriber counts as too slow.
const MAX_LAGS: u32 = 3;

/// The `topics=` filter: a set of topics, one bit each. Topics a client
/// cannot name (`Other`) always pass; `Internal` never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicFilter(u8);

impl TopicFilter {
    pub const ALL: TopicFilter = TopicFilter(!(1 << Topic::Internal as u8));

    /// `earnings,expenses,invoices,notifications` (any order, any subset).
    /// `None` on an unknown topic.
    pub fn parse(s: &str) -> Option<TopicFilter> {
        let mut bits = 1 << Topic::Other as u8;
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            bits |= 1 << Topic::named(t)?.index();
        }
        Some(TopicFilter(bits))
    }

    pub fn passes(&self, topic: Topic) -> bool {
        self.0 & (1 << topic.index()) != 0
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// No cursor: starts at the current position.
    Fresh,
    /// A valid cursor: replays what came after it first.
    Resumed,
    /// A cursor we cannot honour (pruned, never issued, other user or log):
    /// starts at the current position, and the client must reload.
    Reset,
}

#[derive(Debug)]
pub enum Item {
    /// An event; `Feed::cursor` (or `write_cursor`) is now the cursor that
    /// follows it.
    Event(Arc<Frame>),
    /// Time for a heartbeat.
    Ping,
    /// The feed is over.
    End(EndReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Force-disconnect or shutdown.
    Closed,
    /// Could not keep up even from the log.
    TooSlow,
    /// The log could not be read.
    Error,
    /// The user's access changed: `auth:expired`, then the end.
    AccessChanged,
}

pub struct Feed {
    sub: Subscription,
    ctx: Arc<FeedContext>,
    user: Uuid,
    /// `<log>.<user tag>`, computed once: every delivered event needs a cursor.
    prefix: String,
    pos: Position,
    filter: TopicFilter,
    backlog: VecDeque<Arc<Frame>>,
    /// The log must be read before the next live frame is taken.
    catch_up: bool,
    lags: u32,
    replayed: u64,
}

impl Feed {
    /// Open a feed on `sub` (already subscribed), resuming after `resume`.
    pub async fn open(
        ctx: &Arc<FeedContext>,
        sub: Subscription,
        user: Uuid,
        resume: Option<&str>,
        filter: TopicFilter,
    ) -> Result<(Feed, Opening), sqlx::Error> {
        let mut conn = ctx.db.read.acquire().await?;
        let current = event_log::current_position(&mut conn, user).await?;
        let (pos, opening) = match resume.map(|c| ctx.codec.decode(user, c)) {
            None => (current, Opening::Fresh),
            Some(Some(mut wanted))
                if resumable(&mut conn, user, &wanted, ctx.replay_max).await? =>
            {
                // A cursor is text the client sends back: rooms in it that
                // the user never belonged to would each cost a log query for
                // nothing (a crafted cursor may name hundreds). Dropped.
                if !wanted.rooms.is_empty() {
                    let ever = rooms::ever_joined(&mut conn, user).await?;
                    wanted.rooms.retain(|room, _| ever.contains(room));
                }
                // Rooms joined after the cursor was issued (even if left
                // since) are followed from the moment of joining.
                let mut joined = rooms::joined_since(&mut conn, user, wanted.user).await?;
                joined.extend(rooms::memberships(&mut conn, user).await?);
                for (room, at) in joined {
                    wanted.rooms.entry(room).or_insert(at);
                }
                (wanted, Opening::Resumed)
            }
            Some(_) => (current, Opening::Reset),
        };
        drop(conn);
        let feed = Feed {
            sub,
            ctx: ctx.clone(),
            prefix: ctx.codec.prefix(user),
            user,
            pos,
            filter,
            backlog: VecDeque::new(),
            catch_up: opening == Opening::Resumed,
            lags: 0,
            replayed: 0,
        };
        Ok((feed, opening))
    }

    /// The cursor of everything delivered so far.
    pub fn cursor(&self) -> String {
        encode_with(&self.prefix, &self.pos)
    }

    /// `cursor`, appended to `out`.
    pub fn write_cursor(&self, out: &mut Vec<u8>) {
        encode_into(out, &self.prefix, &self.pos);
    }

    /// Events taken from the log rather than the live channel.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// True when a call to `next` would return without waiting for the
    /// channel (used by long-poll to collect what is already there).
    pub fn has_pending(&self) -> bool {
        self.catch_up
            || !self.backlog.is_empty()
            || !self.sub.rx.is_empty()
            || !self.sub.all.is_empty()
    }

    /// Read from the log what this feed is known to be behind on, so that
    /// `try_next` yields it at once: a long-poll with no time to wait must
    /// still answer with the events that exist.
    pub async fn catch_up_now(&mut self) -> Result<(), sqlx::Error> {
        while self.catch_up {
            Box::pin(self.read_log()).await?;
            if !self.backlog.is_empty() {
                break;
            }
        }
        Ok(())
    }

    pub async fn next(&mut self) -> Item {
        loop {
            if let Some(item) = self.take_backlog() {
                return item;
            }
            if self.catch_up {
                // Boxed: the database futures are large, and an idle stream
                // should not carry their space while it waits.
                if let Err(err) = Box::pin(self.read_log()).await {
                    tracing::warn!(error = %err, "reading the event log failed");
                    return Item::End(EndReason::Error);
                }
                continue;
            }
            // Both receives are cancel-safe: whichever loses the race keeps
            // its message for the next turn.
            let received = tokio::select! {
                r = self.sub.rx.recv() => r,
                r = self.sub.all.recv() => r,
            };
            if let Some(item) = self.receive(received) {
                return item;
            }
        }
    }

    /// The next item if it is already here (queued in a channel or in the
    /// backlog); `None` when it would mean waiting or reading the log. A
    /// stream uses it to write everything that is queued with one write.
    pub fn try_next(&mut self) -> Option<Item> {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            if let Some(item) = self.take_backlog() {
                return Some(item);
            }
            if self.catch_up {
                return None;
            }
            let received = match self.sub.rx.try_recv() {
                Err(TryRecvError::Empty) => self.sub.all.try_recv(),
                other => other,
            };
            let received = match received {
                Ok(signal) => Ok(signal),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            if let Some(item) = self.receive(received) {
                return Some(item);
            }
        }
    }

    /// The first backlog frame that is due, skipping those already delivered.
    fn take_backlog(&mut self) -> Option<Item> {
        while let Some(frame) = self.backlog.pop_front() {
            if let Some(item) = self.accept(frame) {
                return Some(item);
            }
        }
        None
    }

    /// Apply one message from a channel; an item when there is one to deliver.
    fn receive(&mut self, received: Result<Signal, RecvError>) -> Option<Item> {
        match received {
            Ok(Signal::Event(frame)) => match self.pos.get(&frame.key) {
                None => None,
                Some(at) if frame.seq <= at => None,
                Some(at) if frame.seq == at + 1 => {
                    self.lags = 0;
                    self.accept(frame)
                }
                // A hole before this frame: its events are in the log.
                Some(_) => {
                    self.catch_up = true;
                    None
                }
            },
            Ok(Signal::Ping) => Some(Item::Ping),
            Ok(Signal::Joined { room, seq }) => {
                self.pos.rooms.entry(room).or_insert(seq);
                self.catch_up = true;
                None
            }
            Ok(Signal::Left { .. }) | Ok(Signal::Resync) => {
                self.catch_up = true;
                None
            }
            Ok(Signal::Close) => Some(Item::End(EndReason::Closed)),
            Ok(Signal::AccessChanged) => Some(Item::End(EndReason::AccessChanged)),
            Err(RecvError::Lagged(_)) => {
                self.lags += 1;
                if self.lags > MAX_LAGS {
                    metrics::counter!("earntrack_slow_subscriber_drops_total").increment(1);
                    return Some(Item::End(EndReason::TooSlow));
                }
                self.catch_up = true;
                None
            }
            Err(RecvError::Closed) => Some(Item::End(EndReason::Closed)),
        }
    }

    /// Advance the position past `frame`; an item when the filter lets it through.
    fn accept(&mut self, frame: Arc<Frame>) -> Option<Item> {
        match self.pos.get(&frame.key) {
            Some(at) if frame.seq > at => self.pos.set(&frame.key, frame.seq),
            _ => return None,
        }
        if self.filter.passes(frame.topic) {
            Some(Item::Event(frame))
        } else {
            None
        }
    }

    /// One page of every followed stream after the current position.
    async fn read_log(&mut self) -> Result<(), sqlx::Error> {
        let _permit = self
            .ctx
            .replay_permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut conn = self.ctx.db.read.acquire().await?;
        let mut more = false;
        // One statement for the user's stream, the broadcasts and every
        // room, under the replay permit.
        let entries = self.pos.entries(self.user);
        for frames in event_log::since_each(&mut conn, &entries, self.user, PAGE).await? {
            more |= frames.len() as i64 == PAGE;
            self.replayed += frames.len() as u64;
            metrics::counter!("earntrack_events_replayed_total").increment(frames.len() as u64);
            self.backlog.extend(frames.into_iter().map(Arc::new));
        }
        self.catch_up = more;
        // At the log's head the subscriber is live again: a burst larger
        // than its channel (hundreds of events in one commit) made it lag,
        // not its connection. Lags count only while it stays behind the
        // log, so a reader that keeps up is never ended as too slow; one
        // that stops reading is ended by the write timeout.
        if !more {
            self.lags = 0;
        }
        Ok(())
    }
}

/// A cursor can be resumed when each of its positions lies within what the
/// log holds (`low..=seq`) and the whole replay stays under `replay_max`.
async fn resumable(
    conn: &mut sqlx::AnyConnection,
    user: Uuid,
    wanted: &Position,
    replay_max: i64,
) -> Result<bool, sqlx::Error> {
    let mut behind = 0;
    for (key, at) in wanted.entries(user) {
        let bounds = event_log::bounds(conn, &key).await?;
        if at > bounds.seq || at < bounds.low {
            return Ok(false);
        }
        behind += bounds.seq - at;
    }
    Ok(behind <= replay_max)
}
