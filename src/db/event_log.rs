//! The event log: every published event is a row, appended in the same
//! transaction as the change it describes.
//!
//! Why cursors are gap-free: each log stream (a user, the broadcast stream,
//! a room) has its own counter row in `streams`. `append` bumps it with
//! `INSERT … ON CONFLICT DO UPDATE … RETURNING`, which takes that row's write
//! lock until the transaction ends (SQLite: the database write lock;
//! PostgreSQL: the row lock). A second writer to the same stream waits there
//! until the first commits or rolls back, so within a stream sequence n+1 is
//! handed out only after n is committed (or n is handed out again, after a
//! rollback). A reader that sees n+1 can therefore always find n — unlike a
//! global autoincrement id, assigned at insert but visible at commit, where
//! 11 can be seen before 10.

use sqlx::AnyConnection;
use uuid::Uuid;

use super::exec::{Exec, Statement};
use crate::args;

use crate::domain::event::DomainEvent;
use crate::domain::frame::Frame;
use crate::domain::stream::Position;
use crate::domain::stream::StreamKey;
use crate::domain::time::{now_ms, rfc3339};

/// The stream's next sequence number (`$1`: the stream), counted in its
/// row; a statement of its own on SQLite, the first step of one on
/// PostgreSQL.
macro_rules! bump_seq {
    () => {
        "INSERT INTO streams (key, seq, low) VALUES ($1, 1, 0) \
         ON CONFLICT (key) DO UPDATE SET seq = streams.seq + 1 RETURNING seq"
    };
}

pub async fn append(
    conn: &mut dyn Exec,
    key: StreamKey,
    event: &DomainEvent,
) -> Result<Frame, sqlx::Error> {
    let stream = key.to_string();
    let now = now_ms();
    let envelope = Frame::envelope(&event.name, &rfc3339(now), &event.data);
    let seq: i64 = if conn.postgres() {
        // One round trip instead of two: every one is time that the
        // transaction (and the writer holding it) waits for the network.
        conn.fetch_one(
            concat!(
                "WITH bumped AS (",
                bump_seq!(),
                ") INSERT INTO event_log (stream, seq, event, envelope, created_at) \
                 SELECT $1, seq, $2, $3, $4 FROM bumped RETURNING seq"
            ),
            args![&stream, event.name.as_str(), &envelope, now],
        )
        .await?
        .try_get(0)?
    } else {
        let seq = conn
            .fetch_one(bump_seq!(), args![&stream])
            .await?
            .try_get(0)?;
        conn.execute(
            "INSERT INTO event_log (stream, seq, event, envelope, created_at) VALUES ($1, $2, $3, $4, $5)",
            args![&stream, seq, event.name.as_str(), &envelope, now],
        )
        .await?;
        seq
    };
    Ok(Frame::new(key, seq, event.name.clone(), envelope))
}

/// Several events appended in one go, in order, with the sequences that
/// one `append` each would have given them. On PostgreSQL one statement:
/// each stream's counter row is bumped once by its count of events, and
/// the rows are numbered from there (every append is a round trip the
/// writer's open transaction waits for, and a cluster's pure publishes
/// come in batches of them). On SQLite, where a statement is a function
/// call, one `append` each.
pub async fn append_many(
    conn: &mut dyn Exec,
    events: &[(&StreamKey, &DomainEvent)],
) -> Result<Vec<Frame>, sqlx::Error> {
    append_many_with(conn, Vec::new(), events).await
}

/// `changes` (a record's insert, its notification row, …), then `events`
/// appended as `append_many` does, all in one transaction. On PostgreSQL
/// one statement: each change is a data-changing step of the append's
/// `WITH`, so a REST write's change, notification and events cost one
/// round trip instead of one each. The steps touch other tables than the
/// log's, so running them side by side (as PostgreSQL does with the steps
/// of one statement) is the same as running them in order.
pub async fn append_many_with(
    conn: &mut dyn Exec,
    changes: Vec<Statement>,
    events: &[(&StreamKey, &DomainEvent)],
) -> Result<Vec<Frame>, sqlx::Error> {
    if !conn.postgres() || (changes.is_empty() && events.len() == 1) {
        for change in changes {
            change.run(conn).await?;
        }
        let mut frames = Vec::with_capacity(events.len());
        for (key, event) in events {
            frames.push(append(conn, (*key).clone(), event).await?);
        }
        return Ok(frames);
    }
    #[derive(serde::Serialize)]
    struct Input<'a> {
        n: usize,
        s: String,
        e: &'a str,
        v: &'a str,
    }
    let now = now_ms();
    let timestamp = rfc3339(now);
    let envelopes: Vec<String> = events
        .iter()
        .map(|(_, event)| Frame::envelope(&event.name, &timestamp, &event.data))
        .collect();
    let input: Vec<Input> = events
        .iter()
        .zip(&envelopes)
        .enumerate()
        .map(|(n, ((key, event), envelope))| Input {
            n,
            s: key.to_string(),
            e: &event.name,
            v: envelope,
        })
        .collect();
    let input = serde_json::to_string(&input).map_err(|err| sqlx::Error::Encode(err.into()))?;
    // The changes' arguments come first, then the append's two.
    let mut steps = String::new();
    let mut args = Vec::new();
    for (i, change) in changes.into_iter().enumerate() {
        steps.push_str(&format!("c{i} AS ({}), ", change.sql_after(args.len())));
        args.extend(change.args);
    }
    let (input_at, now_at) = (args.len() + 1, args.len() + 2);
    args.extend(args![input, now]);
    // Counter rows are locked in key order, so two batches that share
    // streams cannot deadlock on them.
    let sql = format!(
        "WITH {steps}input AS (\
             SELECT n, s, e, v FROM json_to_recordset(${input_at}::json) AS r(n bigint, s text, e text, v text)\
         ), counts AS (\
             SELECT s, count(*) AS c FROM input GROUP BY s\
         ), bumped AS (\
             INSERT INTO streams (key, seq, low) SELECT s, c, 0 FROM counts ORDER BY s \
             ON CONFLICT (key) DO UPDATE SET seq = streams.seq + EXCLUDED.seq RETURNING key, seq\
         ), numbered AS (\
             SELECT i.n, i.s, i.e, i.v, \
                    b.seq - c.c + row_number() OVER (PARTITION BY i.s ORDER BY i.n) AS seq \
             FROM input i JOIN counts c ON c.s = i.s JOIN bumped b ON b.key = i.s\
         ), logged AS (\
             INSERT INTO event_log (stream, seq, event, envelope, created_at) \
             SELECT s, seq, e, v, ${now_at} FROM numbered\
         ) SELECT n, seq FROM numbered ORDER BY n"
    );
    let rows = conn.fetch_all(&sql, args).await?;
    if rows.len() != events.len() {
        return Err(sqlx::Error::Protocol(format!(
            "{} events appended, {} numbered",
            events.len(),
            rows.len()
        )));
    }
    events
        .iter()
        .zip(envelopes)
        .zip(rows)
        .map(|(((key, event), envelope), row)| {
            Ok(Frame::new(
                (*key).clone(),
                row.try_get(1)?,
                event.name.clone(),
                envelope,
            ))
        })
        .collect()
}

/// The last sequence of every stream that logged an event stamped in
/// `from..to` (ms): what the cluster's high-water check compares with what
/// the bus announced.
pub async fn high_water(
    conn: &mut AnyConnection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT stream, MAX(seq) FROM event_log WHERE created_at >= $1 AND created_at < $2 GROUP BY stream",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(conn)
    .await
}

/// The name and envelope of event `seq` of `stream`, if it is still logged.
pub async fn event(
    conn: &mut AnyConnection,
    stream: &str,
    seq: i64,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT event, envelope FROM event_log WHERE stream = $1 AND seq = $2")
        .bind(stream)
        .bind(seq)
        .fetch_optional(conn)
        .await
}

/// The last sequence handed out and the last one pruned, of one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    pub seq: i64,
    pub low: i64,
}

pub async fn bounds(conn: &mut AnyConnection, key: &StreamKey) -> Result<Bounds, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as("SELECT seq, low FROM streams WHERE key = $1")
        .bind(key.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row
        .map(|(seq, low)| Bounds { seq, low })
        .unwrap_or_default())
}

/// The current position of a user: the newest sequence of each stream they
/// follow (their own, the broadcast stream, the rooms they are in).
pub async fn current_position(
    conn: &mut AnyConnection,
    user: Uuid,
) -> Result<Position, sqlx::Error> {
    let mut pos = Position {
        user: bounds(conn, &StreamKey::User(user)).await?.seq,
        broadcast: bounds(conn, &StreamKey::Broadcast).await?.seq,
        rooms: Default::default(),
    };
    for (room, _) in super::rooms::memberships(conn, user).await? {
        pos.rooms
            .insert(room, bounds(conn, &StreamKey::Room(room)).await?.seq);
    }
    Ok(pos)
}

/// Up to `limit` events of each `(stream, after)` of a position that `user`
/// may see (room events only within their membership intervals), per entry
/// in the order given, oldest first: one statement, one round trip however
/// many rooms the user follows.
pub async fn since_each(
    conn: &mut AnyConnection,
    entries: &[(StreamKey, i64)],
    user: Uuid,
    limit: i64,
) -> Result<Vec<Vec<Frame>>, sqlx::Error> {
    let mut sql = String::new();
    let mut n = 0;
    let mut param = || {
        n += 1;
        format!("${n}")
    };
    for (i, (key, _)) in entries.iter().enumerate() {
        if i > 0 {
            sql.push_str(" UNION ALL ");
        }
        let (stream, after) = (param(), param());
        let room = match key {
            StreamKey::Room(_) => format!(
                " AND EXISTS (SELECT 1 FROM room_members m WHERE m.room_id = {} AND m.user_id = {} \
                 AND e.seq > m.joined_seq AND (m.left_seq IS NULL OR e.seq <= m.left_seq))",
                param(),
                param()
            ),
            _ => String::new(),
        };
        let limit = param();
        sql.push_str(&format!(
            "SELECT * FROM (SELECT CAST({i} AS BIGINT) AS k, e.seq, e.event, e.envelope FROM event_log e \
             WHERE e.stream = {stream} AND e.seq > {after}{room} ORDER BY e.seq LIMIT {limit}) AS t{i}"
        ));
    }
    let mut query = sqlx::query_as::<_, (i64, i64, String, String)>(&sql);
    for (key, after) in entries {
        query = query.bind(key.to_string()).bind(*after);
        if let StreamKey::Room(room) = key {
            query = query.bind(*room).bind(user.to_string());
        }
        query = query.bind(limit);
    }
    let mut out: Vec<Vec<Frame>> = entries.iter().map(|_| Vec::new()).collect();
    for (k, seq, event, envelope) in query.fetch_all(conn).await? {
        if let Some((key, _)) = entries.get(k as usize) {
            out[k as usize].push(Frame::new(key.clone(), seq, event, envelope));
        }
    }
    for frames in &mut out {
        frames.sort_by_key(|f| f.seq);
    }
    Ok(out)
}

/// Streams with events older than `$1`, and the last such sequence of each.
/// The subquery's ORDER BY makes SQLite read only the old rows, through the
/// time index: written as one flat GROUP BY, its planner chose to scan the
/// whole log through the stream index (grouping without a sort), 0.3–2 s
/// of a core at every pass on a benchmark's database that had nothing to
/// prune.
const AGED: &str = "SELECT stream, MAX(seq) FROM \
     (SELECT stream, seq FROM event_log WHERE created_at < $1 ORDER BY created_at) AS aged \
     GROUP BY stream";

/// Retention, step 1: which streams to cut, and up to which sequence.
/// Events older than `before_ms` are found through the time index (`AGED`),
/// so the cost follows what is pruned, not the size of the log; streams
/// holding more than `keep` events are found in the small `streams` table.
pub async fn prune_targets(
    conn: &mut AnyConnection,
    before_ms: i64,
    keep: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let aged: Vec<(String, i64)> = sqlx::query_as(AGED)
        .bind(before_ms)
        .fetch_all(&mut *conn)
        .await?;
    let crowded: Vec<(String, i64)> =
        sqlx::query_as("SELECT key, seq - $1 FROM streams WHERE seq - low > $1")
            .bind(keep)
            .fetch_all(&mut *conn)
            .await?;
    let mut cut = std::collections::BTreeMap::new();
    for (stream, upto) in aged.into_iter().chain(crowded) {
        let at = cut.entry(stream).or_insert(upto);
        *at = (*at).max(upto);
    }
    Ok(cut.into_iter().collect())
}

/// Retention, step 2: drop `stream`'s events up to `upto` and remember it as
/// the stream's low-water mark, so a cursor pointing into the pruned part
/// gets `sync:reset`. Both statements use the primary key.
pub async fn prune_stream(
    conn: &mut dyn Exec,
    stream: &str,
    upto: i64,
) -> Result<u64, sqlx::Error> {
    conn.execute(
        "UPDATE streams SET low = $2 WHERE key = $1 AND low < $2",
        args![stream, upto],
    )
    .await?;
    conn.execute(
        "DELETE FROM event_log WHERE stream = $1 AND seq <= $2",
        args![stream, upto],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    /// Retention's look for old events reads the time index, never the
    /// whole log (on SQLite, whose planner would otherwise scan it).
    #[tokio::test]
    async fn old_events_are_found_through_the_time_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {AGED}"))
            .bind(0i64)
            .fetch_all(&db.read)
            .await
            .unwrap()
            .iter()
            .map(|row| sqlx::Row::get::<String, _>(row, 3))
            .collect();
        assert!(
            plan.iter().any(|step| step.contains("event_log_by_time")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN event_log")),
            "{plan:?}"
        );
    }

    /// A SQLite database from before `0008_event_log_appends` (events keyed
    /// by stream and sequence) keeps its log through the upgrade: a replay
    /// reads the old events in order, and the next event of the stream
    /// follows them.
    #[tokio::test]
    async fn events_logged_before_the_appended_layout_are_replayed_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let before = dir.path().join("migrations");
        std::fs::create_dir(&before).unwrap();
        let all = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        for entry in std::fs::read_dir(all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_owned();
            if name.to_string_lossy().as_ref() < "0008" {
                std::fs::copy(&path, before.join(name)).unwrap();
            }
        }
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let user = Uuid::now_v7();
        let key = StreamKey::User(user);
        sqlx::any::install_default_drivers();
        let old = sqlx::AnyPool::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(before.as_path())
            .await
            .unwrap()
            .run(&old)
            .await
            .unwrap();
        for seq in 1..=2_i64 {
            let envelope = Frame::envelope("old", &rfc3339(now_ms()), &serde_json::json!(seq));
            sqlx::query(
                "INSERT INTO event_log (stream, seq, event, envelope, created_at) VALUES ($1, $2, 'old', $3, $4)",
            )
            .bind(key.to_string())
            .bind(seq)
            .bind(envelope)
            .bind(now_ms())
            .execute(&old)
            .await
            .unwrap();
        }
        sqlx::query("INSERT INTO streams (key, seq, low) VALUES ($1, 2, 0)")
            .bind(key.to_string())
            .execute(&old)
            .await
            .unwrap();
        old.close().await;

        let db = Db::connect(&url, 2).await.unwrap();
        let event = DomainEvent::new("new", serde_json::json!(3));
        let appended = key.clone();
        let frame = db
            .writes
            .run(
                Some(key.clone()),
                move |c| {
                    let (key, event) = (appended.clone(), event.clone());
                    Box::pin(async move { append(c, key, &event).await })
                },
                |_| {},
            )
            .await
            .unwrap();
        assert_eq!(frame.seq, 3);
        let mut conn = db.read.acquire().await.unwrap();
        let replayed = since_each(&mut conn, &[(key, 0)], user, 10).await.unwrap();
        let seen: Vec<_> = replayed[0]
            .iter()
            .map(|f| (f.seq, f.name.as_str()))
            .collect();
        assert_eq!(seen, [(1, "old"), (2, "old"), (3, "new")]);
    }
}
