//! Traffic shared by the tests: a writer creating earnings, a client that
//! follows its stream across servers, waiting without fixed sleeps, and the
//! check that a burst arrived whole, in order, once.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use eventsource_stream::Event;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::kit::sse::{data, Next, Sse};
use crate::server::{Api, User};

/// Poll `check` every 25 ms until it gives `Some`; panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A task creating `n` earnings of `user` through `api`, one after the
/// other; it yields their ids in order, and `progress` counts them.
pub struct Writer {
    pub task: JoinHandle<Vec<String>>,
    pub progress: watch::Receiver<usize>,
}

impl Writer {
    pub fn spawn(api: Api, user: User, platform: String, n: usize) -> Writer {
        let (tx, progress) = watch::channel(0);
        let task = tokio::spawn(async move {
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                ids.push(api.earning(&user, &platform, &format!("burst {i}")).await);
                let _ = tx.send(ids.len());
            }
            ids
        });
        Writer { task, progress }
    }

    /// Wait until `count` earnings are committed.
    pub async fn reached(&mut self, count: usize) {
        let reached = self.progress.wait_for(|done| *done >= count);
        tokio::time::timeout(Duration::from_secs(20), reached)
            .await
            .expect("the writer makes progress")
            .expect("the writer is alive");
    }

    pub async fn finish(self) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the writer finishes within 30 s")
            .expect("the writer does not panic")
    }
}

/// How a followed stream ended before the client resumed.
#[derive(Debug)]
pub struct End {
    pub clean: bool,
    pub at: Instant,
    pub why: String,
}

/// What a client following its stream received.
#[derive(Debug, Default)]
pub struct Followed {
    pub events: Vec<Event>,
    pub ends: Vec<End>,
}

/// Read `sse` (of `user`, positioned at `last_id`) until `total` events came,
/// resuming on `fallback` with `Last-Event-ID` whenever the stream ends or
/// breaks, as EventSource does. Panics after 30 s.
pub async fn follow(
    user: User,
    mut sse: Sse,
    mut last_id: String,
    fallback: Api,
    total: usize,
) -> Followed {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut followed = Followed::default();
    while followed.events.len() < total {
        let next = match tokio::time::timeout_at(deadline, sse.next()).await {
            Ok(next) => next,
            Err(_) => panic!(
                "{} of {total} events within 30 s: {}",
                followed.events.len(),
                summary(&followed.events)
            ),
        };
        let (clean, why) = match next {
            Next::Event(event) => {
                if !event.id.is_empty() {
                    last_id = event.id.clone();
                }
                followed.events.push(event);
                continue;
            }
            Next::Ended => (true, "ended".to_owned()),
            Next::Failed(err) => (false, err),
        };
        followed.ends.push(End {
            clean,
            at: Instant::now(),
            why,
        });
        assert!(
            followed.ends.len() < 5,
            "the stream keeps ending: {:?}",
            followed.ends
        );
        sse = fallback.resume(&user, &last_id).await;
    }
    followed
}

/// One line per event, for failure messages.
pub fn summary(events: &[Event]) -> String {
    let lines: Vec<String> = events
        .iter()
        .map(|e| format!("\n  {} {}", e.event, data(e)["id"]))
        .collect();
    lines.concat()
}

/// `events` are exactly those of `earnings`, created one after the other:
/// `earnings:new` then its `notification`, each once, in creation order.
pub fn assert_burst(events: &[Event], earnings: &[String]) {
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let expected: Vec<&str> = earnings
        .iter()
        .flat_map(|_| ["earnings:new", "notification"])
        .collect();
    assert_eq!(names, expected, "events: {}", summary(events));
    let created: Vec<String> = events
        .iter()
        .filter(|e| e.event == "earnings:new")
        .map(|e| data(e)["id"].as_str().expect("earning id").to_owned())
        .collect();
    assert_eq!(created, earnings, "earnings in creation order, each once");
    let notifications: HashSet<String> = events
        .iter()
        .filter(|e| e.event == "notification")
        .map(|e| data(e)["id"].to_string())
        .collect();
    assert_eq!(
        notifications.len(),
        earnings.len(),
        "each notification once"
    );
    let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
}
