//! Resume works on any server: a cursor issued by one is honoured by every
//! other, with no gap and no duplicate, also while others are publishing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Event;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::Value;

use crate::kit::sse::{data, Next, Sse};
use crate::server::{Api, Cluster, User};
use crate::traffic::assert_burst;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_issued_by_one_server_resumes_on_another_with_exactly_the_missed_events_then_live()
{
    let Some(cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let [a, b, c] = &cluster.servers[..] else {
        unreachable!()
    };
    let user = a.user().await;
    let platform = a.platform(&user).await;
    let (mut on_a, _) = a.stream(&user).await;
    a.earning(&user, &platform, "seen on A").await;
    on_a.expect("earnings:new").await;
    let (last, _) = on_a.expect("notification").await;
    drop(on_a);

    let mut missed = Vec::new();
    for (i, server) in [a, c, a, c].into_iter().enumerate() {
        missed.push(
            server
                .earning(&user, &platform, &format!("missed {i}"))
                .await,
        );
    }
    let mut on_b = b.resume(&user, &last.id).await;
    let mut events = Vec::new();
    for _ in 0..missed.len() * 2 {
        events.push(on_b.event().await);
    }
    let live = c.earning(&user, &platform, "live").await;
    for _ in 0..2 {
        events.push(on_b.event().await);
    }

    missed.push(live);
    assert_burst(&events, &missed);
    let extra = on_b.quiet_for(Duration::from_millis(300)).await;
    assert!(extra.is_none(), "nothing more: {extra:?}");
}

const WRITERS: usize = 4;
const ITERATIONS: usize = 25;
const RECONNECTS: usize = 20;

/// Each iteration creates an earning and then updates it, each request
/// through a random server, with a little jitter so writers interleave.
async fn write(servers: Vec<Api>, user: User, platform: String, writer: usize) {
    for i in 0..ITERATIONS {
        let api = servers.choose(&mut rand::thread_rng()).expect("servers");
        let id = api
            .earning(&user, &platform, &format!("w{writer} {i}"))
            .await;
        pause(0..60).await;
        let api = servers.choose(&mut rand::thread_rng()).expect("servers");
        let amount = 200.0 + i as f64;
        api.update(&user, &id, &format!("w{writer} {i} updated"), amount)
            .await;
        pause(0..60).await;
    }
}

async fn pause(millis: std::ops::Range<u64>) {
    let millis = rand::thread_rng().gen_range(millis);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// What the hopping reader saw.
struct Hops {
    /// Each event with the number of the connection that delivered it.
    events: Vec<(usize, Event)>,
    /// The servers it read from, in turn.
    visited: Vec<&'static str>,
    /// Reconnects made while writers were still writing.
    during_writes: usize,
    /// The position before anything was written.
    first_id: String,
}

/// Reads `first` (opened at `first_id`, on server `first_name`) and its
/// successors until it has `total` events and has dropped its stream
/// `RECONNECTS` times, each at a random moment, resuming on a random server
/// with its last id; gives up after 40 s. `writing` tells it whether writers
/// still write.
async fn hop(
    servers: Vec<Api>,
    user: User,
    (first, first_name, first_id): (Sse, &'static str, String),
    total: usize,
    writing: Arc<AtomicBool>,
) -> Hops {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let (mut sse, mut last_id) = (first, first_id.clone());
    let mut hops = Hops {
        events: Vec::new(),
        visited: vec![first_name],
        during_writes: 0,
        first_id,
    };
    let reconnects = |hops: &Hops| hops.visited.len() - 1;
    let hop_moment = |hops: &Hops| {
        if reconnects(hops) < RECONNECTS {
            let millis = rand::thread_rng().gen_range(20..200);
            (tokio::time::Instant::now() + Duration::from_millis(millis)).min(deadline)
        } else {
            deadline
        }
    };
    let mut hop_at = hop_moment(&hops);
    while hops.events.len() < total || reconnects(&hops) < RECONNECTS {
        match tokio::time::timeout_at(hop_at, sse.next()).await {
            Ok(Next::Event(event)) => {
                last_id = event.id.clone();
                hops.events.push((reconnects(&hops), event));
            }
            Ok(other) => panic!(
                "the stream on {} stopped: {other:?}",
                hops.visited.last().unwrap()
            ),
            Err(_) if tokio::time::Instant::now() >= deadline => return hops,
            Err(_) => {
                let next = servers
                    .choose(&mut rand::thread_rng())
                    .expect("servers")
                    .clone();
                sse = next.resume(&user, &last_id).await;
                hops.visited.push(next.name);
                hops.during_writes += usize::from(writing.load(Ordering::Relaxed));
                hop_at = hop_moment(&hops);
            }
        }
    }
    // Anything more would be a duplicate.
    if let Some(extra) = sse.quiet_for(Duration::from_millis(500)).await {
        panic!("an event beyond the {total} written: {extra:?}");
    }
    hops
}

/// Every event after `from`, replayed from the log by one resume: the
/// order the cluster committed them in.
async fn replay(api: &Api, user: &User, from: &str, total: usize) -> Vec<Event> {
    let mut sse = api.resume(user, from).await;
    let mut events = Vec::with_capacity(total);
    for _ in 0..total {
        events.push(sse.event().await);
    }
    events
}

/// Where `reference` events are missing from or out of place in `got`.
fn differences(reference: &[Event], got: &[(usize, Event)]) -> String {
    let mut out = String::new();
    for (i, want) in reference.iter().enumerate() {
        match got.iter().position(|(_, e)| e == want) {
            Some(at) if at == i => {}
            Some(at) => out += &format!("\n  #{i} {} came at #{at}", identity(want)),
            None => {
                let around: Vec<usize> = got[i.saturating_sub(2)..(i + 2).min(got.len())]
                    .iter()
                    .map(|(conn, _)| *conn)
                    .collect();
                out += &format!(
                    "\n  #{i} {} never came (connections around it: {around:?})",
                    identity(want)
                );
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_hopping_between_servers_sees_every_event_of_concurrent_writers_once_in_order() {
    let Some(cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let servers = cluster.apis();
    let user = servers[0].user().await;
    let platform = servers[0].platform(&user).await;
    // Per iteration: earnings:new, notification, earnings:updated, notification.
    let total = WRITERS * ITERATIONS * 4;

    // Opened before anything is written: its position is before it all.
    let first = servers.choose(&mut rand::thread_rng()).expect("servers");
    let (sse, first_id) = first.stream(&user).await;
    let opened = (sse, first.name, first_id);
    let writing = Arc::new(AtomicBool::new(true));
    let reader = tokio::spawn(hop(
        servers.clone(),
        user.clone(),
        opened,
        total,
        writing.clone(),
    ));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write(servers.clone(), user.clone(), platform.clone(), w)))
        .collect();
    for writer in writers {
        writer.await.expect("a writer does not panic");
    }
    writing.store(false, Ordering::Relaxed);
    let hops = tokio::time::timeout(Duration::from_secs(45), reader)
        .await
        .expect("the reader finishes")
        .expect("the reader does not panic");

    crate::kit::report(&format!(
        "the reader read {} events from {} ({} reconnects, {} while writers wrote)",
        hops.events.len(),
        hops.visited.concat(),
        hops.visited.len() - 1,
        hops.during_writes,
    ));
    let reference = replay(&servers[0], &user, &hops.first_id, total).await;
    let events: Vec<Event> = hops.events.iter().map(|(_, e)| e.clone()).collect();
    assert!(
        events == reference,
        "the reader saw {} events, not the {total} written in commit order:{}",
        events.len(),
        differences(&reference, &hops.events)
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for event in &events {
        *seen.entry(identity(event)).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let count = |name: &str| events.iter().filter(|e| e.event == name).count();
    assert_eq!(count("earnings:new"), WRITERS * ITERATIONS);
    assert_eq!(count("earnings:updated"), WRITERS * ITERATIONS);
    assert_eq!(count("notification"), WRITERS * ITERATIONS * 2);
    for writer in 0..WRITERS {
        let prefix = format!("w{writer} ");
        let got: Vec<String> = events
            .iter()
            .filter_map(|e| notes(&e.event, &data(e)))
            .filter(|notes| notes.starts_with(&prefix))
            .collect();
        let expected: Vec<String> = (0..ITERATIONS)
            .flat_map(|i| [format!("w{writer} {i}"), format!("w{writer} {i} updated")])
            .collect();
        assert_eq!(got, expected, "writer {writer}'s changes in its order");
    }
}

/// The notes an earnings event carries (the new value on an update).
fn notes(event: &str, data: &Value) -> Option<String> {
    let notes = match event {
        "earnings:new" => &data["notes"],
        "earnings:updated" => &data["changes"]["notes"],
        _ => return None,
    };
    Some(notes.as_str().expect("notes").to_owned())
}

/// What identifies an event whatever server or connection delivered it, to
/// count deliveries: the earning (and its version), or the notification.
pub fn identity(event: &Event) -> String {
    let data = data(event);
    match event.event.as_str() {
        "earnings:new" | "earnings:deleted" => format!("{} {}", event.event, data["id"]),
        "earnings:updated" => format!("{} {} {}", event.event, data["id"], data["updatedAt"]),
        "notification" => format!("notification {}", data["id"]),
        _ => format!("{} {}", event.event, event.data),
    }
}
