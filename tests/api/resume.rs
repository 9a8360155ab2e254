//! Resume: `Last-Event-ID` / `lastEventId` replay with no gap and no
//! duplicate, `sync:reset` for cursors the server cannot honour, the
//! `EarnTrack-Event-Cursor` header, restarts, slow subscribers, the long-poll
//! fallback, and a reconnect storm under concurrent writers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eventsource_stream::Event;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use earntrack::Config;

use crate::helpers::{spawn_app, spawn_app_with, Sse, TestApp, User};

fn data(event: &Event) -> Value {
    let envelope: Value =
        serde_json::from_str(&event.data).expect("the data line is one JSON envelope");
    envelope["data"].clone()
}

/// A fresh stream and the id of its `connected` event (the current position).
async fn fresh_stream(app: &TestApp, user: &User) -> (Sse, String) {
    let mut stream = app.stream(&user.token, "").await;
    assert_eq!(stream.status, StatusCode::OK);
    let (connected, _) = stream.expect("connected").await;
    assert!(!connected.id.is_empty());
    (stream, connected.id)
}

/// Asserts the stream opened as a resume: `connected` without an `id:`.
async fn expect_resumed(stream: &mut Sse) {
    assert_eq!(stream.status, StatusCode::OK);
    let (connected, _) = stream.expect("connected").await;
    assert!(
        connected.id.is_empty(),
        "a resumed stream's connected carries id {:?}",
        connected.id
    );
}

/// Publishes a marker (a new platform) and asserts it is the very next event:
/// nothing was left over (no duplicate, nothing unexpected) before it.
async fn expect_nothing_before_a_marker(app: &TestApp, user: &User, stream: &mut Sse) {
    let marker = app
        .platform(user, &format!("marker-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let (_, data) = stream.expect("platforms:new").await;
    assert_eq!(
        data, marker,
        "something came between the expected events and the marker"
    );
}

/// The earnings:new + notification pair of `earning`, in this order.
async fn expect_created(stream: &mut Sse, earning: &Value) -> String {
    let (_, data) = stream.expect("earnings:new").await;
    assert_eq!(data["id"], earning["id"]);
    let (frame, note) = stream.expect("notification").await;
    assert_eq!(note["data"]["earningId"], earning["id"]);
    frame.id
}

/// The `EarnTrack-Event-Cursor` of the user's earnings list.
async fn list_cursor(app: &TestApp, user: &User) -> String {
    let res = app.get("/api/earnings", &user.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cursor = res
        .headers()
        .get("earntrack-event-cursor")
        .expect("EarnTrack-Event-Cursor header");
    cursor.to_str().unwrap().to_owned()
}

async fn poll(app: &TestApp, user: &User, query: &str) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let res = app.get(&format!("/events/poll{query}"), &user.token).await;
    let status = res.status();
    let body = res.json().await.expect("a JSON body");
    (status, body, started.elapsed())
}

fn encode(cursor: &str) -> String {
    form_urlencoded::byte_serialize(cursor.as_bytes()).collect()
}

/// Stop `app` and start a new server on the same database file.
async fn restart(app: TestApp) -> TestApp {
    restart_with(app, |_| {}).await
}

async fn restart_with(app: TestApp, configure: impl FnOnce(&mut Config)) -> TestApp {
    app.restart_with(configure).await
}

#[tokio::test]
async fn stream_resumes_after_last_event_id_without_gap_or_duplicate() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let (mut stream, _) = fresh_stream(&app, &alice).await;
    let first = app.earning(&alice, &platform, 1.0).await;
    let last_id = expect_created(&mut stream, &first).await;
    drop(stream);
    let missed = [
        app.earning(&alice, &platform, 2.0).await,
        app.earning(&alice, &platform, 3.0).await,
    ];

    let mut stream = app.resume(&alice.token, &last_id).await;

    expect_resumed(&mut stream).await;
    for earning in &missed {
        expect_created(&mut stream, earning).await;
    }
    let live = app.earning(&alice, &platform, 4.0).await;
    expect_created(&mut stream, &live).await;
    expect_nothing_before_a_marker(&app, &alice, &mut stream).await;
}

#[tokio::test]
async fn stream_resumes_from_the_last_event_id_query_parameter_in_both_spellings() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    for name in ["lastEventId", "last_event_id"] {
        let cursor = list_cursor(&app, &alice).await;
        let missed = app.earning(&alice, &platform, 5.0).await;

        let mut stream = app
            .stream(&alice.token, &format!("?{name}={}", encode(&cursor)))
            .await;

        expect_resumed(&mut stream).await;
        expect_created(&mut stream, &missed).await;
        expect_nothing_before_a_marker(&app, &alice, &mut stream).await;
    }
}

#[tokio::test]
async fn last_event_id_header_wins_over_the_query_parameter() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let older = list_cursor(&app, &alice).await;
    app.earning(&alice, &platform, 1.0).await;
    let newer = list_cursor(&app, &alice).await;
    let missed = app.earning(&alice, &platform, 2.0).await;

    let res = app
        .client
        .get(app.url(&format!("/events?lastEventId={}", encode(&older))))
        .bearer_auth(&alice.token)
        .header("Last-Event-ID", &newer)
        .send()
        .await
        .unwrap();
    let mut stream = Sse::new(res);

    expect_resumed(&mut stream).await;
    expect_created(&mut stream, &missed).await;
    expect_nothing_before_a_marker(&app, &alice, &mut stream).await;
}

#[tokio::test]
async fn resuming_from_a_fresh_connected_id_replays_exactly_what_came_after_it() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let (stream, connected_id) = fresh_stream(&app, &alice).await;
    drop(stream);
    let missed = [
        app.earning(&alice, &platform, 1.0).await,
        app.earning(&alice, &platform, 2.0).await,
    ];

    let mut stream = app.resume(&alice.token, &connected_id).await;

    expect_resumed(&mut stream).await;
    for earning in &missed {
        expect_created(&mut stream, earning).await;
    }
    expect_nothing_before_a_marker(&app, &alice, &mut stream).await;
}

#[tokio::test]
async fn an_unusable_cursor_gets_sync_reset_with_the_current_position_then_live_events() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let platform = app.platform(&alice, "Upwork").await;
    app.earning(&alice, &platform, 1.0).await;
    let (_, bobs_cursor) = fresh_stream(&app, &bob).await;
    let other_db = spawn_app().await;
    let stranger = other_db.user().await;
    let (_, other_db_cursor) = fresh_stream(&other_db, &stranger).await;

    let cases = [
        ("garbage", "garbage".to_owned()),
        ("another user's", bobs_cursor),
        ("another database's", other_db_cursor),
    ];
    for (what, cursor) in cases {
        let mut stream = app.resume(&alice.token, &cursor).await;

        assert_eq!(stream.status, StatusCode::OK, "{what} cursor");
        stream.expect("connected").await;
        let (reset, _) = stream.expect("sync:reset").await;
        assert!(
            !reset.id.is_empty(),
            "sync:reset after {what} cursor carries no id"
        );
        let live = app.earning(&alice, &platform, 2.0).await;
        expect_created(&mut stream, &live).await;
        drop(stream);
        // The reset id is the position at that moment: resuming from it
        // replays only what came after, not the older history.
        let mut stream = app.resume(&alice.token, &reset.id).await;
        expect_resumed(&mut stream).await;
        expect_created(&mut stream, &live).await;
        expect_nothing_before_a_marker(&app, &alice, &mut stream).await;
    }
}

#[tokio::test]
async fn a_cursor_pruned_by_retention_gets_sync_reset() {
    // Keep only the newest event per stream.
    pruned_cursor_gets_sync_reset(|c| c.retention_events = 1).await;
}

#[tokio::test]
async fn a_cursor_pruned_by_age_gets_sync_reset() {
    // Keep nothing older than now.
    pruned_cursor_gets_sync_reset(|c| c.retention_secs = 0).await;
}

async fn pruned_cursor_gets_sync_reset(retention: impl FnOnce(&mut Config)) {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let (stream, old_cursor) = fresh_stream(&app, &alice).await;
    drop(stream);
    app.earning(&alice, &platform, 1.0).await;
    app.earning(&alice, &platform, 2.0).await;

    // The pruner runs as the server starts.
    let app = restart_with(app, retention).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let query = format!("?after={}&timeout=0", encode(&old_cursor));
        let (status, body, _) = poll(&app, &alice, &query).await;
        assert_eq!(status, StatusCode::OK);
        if body["events"][0]["event"] == "sync:reset" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pruned cursor still replays: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = app.resume(&alice.token, &old_cursor).await;

    stream.expect("connected").await;
    let (reset, _) = stream.expect("sync:reset").await;
    assert!(!reset.id.is_empty());
    let live = app.earning(&alice, &platform, 3.0).await;
    expect_created(&mut stream, &live).await;
}

#[tokio::test]
async fn the_earnings_list_cursor_header_resumes_with_nothing_missed_and_nothing_twice() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    app.earning(&alice, &platform, 1.0).await;
    app.earning(&alice, &platform, 2.0).await;
    let res = app.get("/api/earnings", &alice.token).await;
    let cursor = res.headers()["earntrack-event-cursor"]
        .to_str()
        .unwrap()
        .to_owned();
    let listed: Value = res.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let third = app.earning(&alice, &platform, 3.0).await;

    let mut stream = app
        .stream(&alice.token, &format!("?lastEventId={}", encode(&cursor)))
        .await;

    expect_resumed(&mut stream).await;
    expect_created(&mut stream, &third).await;
    expect_nothing_before_a_marker(&app, &alice, &mut stream).await;
}

#[tokio::test]
async fn a_cursor_survives_a_server_restart_on_the_same_database() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let (mut stream, _) = fresh_stream(&app, &alice).await;
    let before = app.earning(&alice, &platform, 1.0).await;
    let last_id = expect_created(&mut stream, &before).await;
    drop(stream);

    let app = restart(app).await;
    let after = [
        app.earning(&alice, &platform, 2.0).await,
        app.earning(&alice, &platform, 3.0).await,
    ];
    let mut stream = app.resume(&alice.token, &last_id).await;

    expect_resumed(&mut stream).await;
    for earning in &after {
        expect_created(&mut stream, earning).await;
    }
    expect_nothing_before_a_marker(&app, &alice, &mut stream).await;
}

#[tokio::test]
async fn long_poll_returns_at_once_when_events_after_the_cursor_exist() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let after = list_cursor(&app, &alice).await;
    let earning = app.earning(&alice, &platform, 100.0).await;

    let (status, body, took) = poll(
        &app,
        &alice,
        &format!("?after={}&timeout=5", encode(&after)),
    )
    .await;

    assert_eq!(status, StatusCode::OK);
    assert!(
        took < Duration::from_secs(2),
        "with timeout=5 it took {took:?}"
    );
    let events = body["events"].as_array().unwrap();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["earnings:new", "notification"]);
    for event in events {
        let mut keys: Vec<&String> = event.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["data", "event", "id", "timestamp"]);
        assert!(!event["id"].as_str().unwrap().is_empty());
    }
    assert_eq!(events[0]["data"], earning);
    assert_ne!(events[0]["id"], events[1]["id"]);
    assert_eq!(body["cursor"], events[1]["id"]);
    // The returned cursor continues the same sequence: nothing is repeated.
    let (_, next, _) = poll(
        &app,
        &alice,
        &format!(
            "?after={}&timeout=0",
            encode(body["cursor"].as_str().unwrap())
        ),
    )
    .await;
    assert_eq!(next["events"], json!([]));
}

#[tokio::test]
async fn long_poll_wakes_as_soon_as_an_event_is_published() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let after = list_cursor(&app, &alice).await;

    let query = format!("?after={}&timeout=5", encode(&after));

    let (polled, earning) = tokio::join!(poll(&app, &alice, &query), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.earning(&alice, &platform, 100.0).await
    });

    let (status, body, took) = polled;
    assert_eq!(status, StatusCode::OK);
    assert!(
        took < Duration::from_secs(2),
        "the poll waited {took:?} after a publish at 300 ms"
    );
    assert_eq!(body["events"][0]["event"], "earnings:new");
    assert_eq!(body["events"][0]["data"], earning);
}

#[tokio::test]
async fn long_poll_without_after_waits_for_events_after_the_current_position() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    app.earning(&alice, &platform, 1.0).await;

    let (polled, earning) = tokio::join!(poll(&app, &alice, "?timeout=5"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.earning(&alice, &platform, 2.0).await
    });

    let (status, body, _) = polled;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"][0]["event"], "earnings:new");
    assert_eq!(body["events"][0]["data"], earning);
}

#[tokio::test]
async fn long_poll_with_nothing_new_answers_after_the_timeout_with_the_cursor_unchanged() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let after = list_cursor(&app, &alice).await;
    let bobs_platform = app.platform(&bob, "Upwork").await;
    app.earning(&bob, &bobs_platform, 1.0).await;

    let (status, body, took) = poll(
        &app,
        &alice,
        &format!("?after={}&timeout=1", encode(&after)),
    )
    .await;

    assert_eq!(status, StatusCode::OK);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(body, json!({"events": [], "cursor": after}));
}

#[tokio::test]
async fn long_poll_timeout_over_30_seconds_or_not_a_number_is_400_bad_request() {
    let app = spawn_app().await;
    let alice = app.user().await;

    for timeout in ["31", "-1", "soon"] {
        let (status, body, _) = poll(&app, &alice, &format!("?timeout={timeout}")).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "timeout={timeout}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
}

#[tokio::test]
async fn long_poll_with_an_unusable_cursor_answers_sync_reset() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    let (status, body, took) = poll(&app, &alice, "?after=garbage&timeout=5").await;

    assert_eq!(status, StatusCode::OK);
    assert!(
        took < Duration::from_secs(2),
        "with timeout=5 it took {took:?}"
    );
    let reset = &body["events"][0];
    assert_eq!(reset["event"], "sync:reset");
    let position = reset["id"].as_str().expect("sync:reset carries an id");
    assert!(!position.is_empty());
    assert_eq!(body["cursor"], position);
    let earning = app.earning(&alice, &platform, 1.0).await;
    let (_, next, _) = poll(
        &app,
        &alice,
        &format!("?after={}&timeout=5", encode(position)),
    )
    .await;
    assert_eq!(next["events"][0]["data"], earning);
}

#[tokio::test]
async fn long_polls_are_not_counted_as_streams() {
    let app = spawn_app_with(|c| c.max_streams_per_user = 1).await;
    let alice = app.user().await;
    let after = list_cursor(&app, &alice).await;
    let query = format!("?after={}&timeout=2", encode(&after));

    let (polls, opened) = tokio::join!(
        futures_util::future::join_all((0..3).map(|_| poll(&app, &alice, &query))),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Three long-polls are pending: a stream still fits under a limit of 1.
            let mut stream = app.stream(&alice.token, "").await;
            stream.expect("connected").await;
            // And with the one stream open, a further long-poll is answered.
            let late = poll(&app, &alice, "?timeout=0").await;
            (stream, late)
        }
    );

    for (status, body, _) in polls {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_stream, (late_status, late_body, _)) = opened;
    assert_eq!(late_status, StatusCode::OK, "{late_body}");
}

#[tokio::test]
async fn a_lagging_subscriber_catches_up_without_losing_or_repeating_events() {
    let app = spawn_app_with(|c| c.channel_capacity = 2).await;
    let (alice, admin) = (app.user().await, app.admin().await);
    let mut stream = stalled_stream(&app, &alice).await;
    let replayed_before = replayed_total(&app).await;

    // Published while the client reads nothing: enough padded events (at
    // least 50) to fill the socket buffers, after which the server cannot
    // drain the 2-slot channel into the socket either, so it lags.
    let total = (socket_buffers_bytes() / PAD + 10).max(50) as u64;
    let pad = "x".repeat(PAD);
    for n in 0..total {
        let body =
            json!({"target": {"user": alice.id}, "event": "test:n", "data": {"n": n, "pad": pad}});
        let res = app.post("/api/admin/events", &admin.token, body).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }

    let mut seen = Vec::new();
    let mut last_id = String::new();
    while (seen.len() as u64) < total {
        match stream.next_or_end(Duration::from_secs(10)).await {
            Some(event) if event.event == "test:n" => {
                seen.push(data(&event)["n"].as_u64().unwrap());
                last_id = event.id;
            }
            Some(event) if event.event == "connected" => {}
            Some(event) => panic!("unexpected {event:?}"),
            // Closed as too slow: allowed, as long as it resumes where it left.
            None => {
                stream = app.resume(&alice.token, &last_id).await;
                expect_resumed(&mut stream).await;
            }
        }
    }
    assert_eq!(seen, (0..total).collect::<Vec<_>>());
    expect_nothing_before_a_marker(&app, &alice, &mut stream).await;
    // The subscriber did fall behind the channel and was served from the log
    // (the counter is process-wide, so this only shows the path was taken).
    assert!(
        replayed_total(&app).await > replayed_before,
        "the subscriber never lagged"
    );
}

/// Padding per test event (the data limit is 64 KiB).
pub(crate) const PAD: usize = 60_000;

/// Bytes a stalled connection can absorb: the server's largest send buffer,
/// the client's receive buffer, and a margin for hyper's own buffers.
pub(crate) fn socket_buffers_bytes() -> usize {
    let third = |path: &str, default: usize| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
            .unwrap_or(default)
    };
    let second = |path: &str, default: usize| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .unwrap_or(default)
    };
    third("/proc/sys/net/ipv4/tcp_wmem", 4 << 20)
        + second("/proc/sys/net/ipv4/tcp_rmem", 128 << 10)
        + (1 << 20)
}

/// An `/events` stream over a raw socket that reads nothing until the test
/// polls it (HTTP/1.0, so the body is plain SSE and no client buffers it).
async fn stalled_stream(app: &TestApp, user: &User) -> Sse {
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET /events HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        app.addr, user.token
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            tcp.read(&mut byte).await.unwrap(),
            1,
            "the connection closed in the header"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.contains(" 200 "), "{head}");
    let body = futures_util::stream::unfold(tcp, |mut tcp| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match tcp.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), tcp))
            }
            Err(err) => Some((Err(err), tcp)),
        }
    });
    let response = axum::http::Response::builder()
        .status(200)
        .body(reqwest::Body::wrap_stream(body))
        .unwrap();
    Sse::new(reqwest::Response::from(response))
}

async fn replayed_total(app: &TestApp) -> f64 {
    app.metric("earntrack_events_replayed_total").await
}

/// What the reader of the stress test saw: (event, earning id, title).
type Seen = (String, String, String);

fn seen_key(event: &Event) -> Seen {
    let data = data(event);
    match event.event.as_str() {
        "notification" => (
            event.event.clone(),
            data["data"]["earningId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            data["title"].as_str().unwrap_or_default().to_owned(),
        ),
        _ => (
            event.event.clone(),
            data["id"].as_str().unwrap_or_default().to_owned(),
            String::new(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_keeps_reconnecting_sees_every_event_of_concurrent_writers_exactly_once() {
    const WRITERS: usize = 4;
    const ITERATIONS: usize = 50;
    const EXPECTED: usize = WRITERS * ITERATIONS * 4;
    let app = std::sync::Arc::new(spawn_app().await);
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let (mut stream, mut last_id) = fresh_stream(&app, &alice).await;
    let seed: u64 = rand::thread_rng().gen();
    eprintln!("stress seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (app, alice, platform) = (app.clone(), alice.clone(), platform.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..ITERATIONS {
                    let earning = app.earning(&alice, &platform, (w * 100 + i) as f64).await;
                    let id = earning["id"].as_str().unwrap().to_owned();
                    let res = app
                        .patch(
                            &format!("/api/earnings/{id}"),
                            &alice.token,
                            json!({"notes": format!("w{w} i{i}")}),
                        )
                        .await;
                    assert_eq!(res.status(), StatusCode::OK);
                    ids.push(id);
                }
                ids
            })
        })
        .collect();

    let reader = {
        let (app, alice) = (app.clone(), alice.clone());
        async move {
            let mut seen: Vec<Seen> = Vec::new();
            let mut reconnects = 0;
            let mut until_reconnect = rng.gen_range(5..35);
            while seen.len() < EXPECTED {
                if until_reconnect == 0 {
                    // Gone for a moment while the writers go on.
                    drop(stream);
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
                    stream = app.resume(&alice.token, &last_id).await;
                    expect_resumed(&mut stream).await;
                    reconnects += 1;
                    until_reconnect = rng.gen_range(5..35);
                }
                match stream.next_or_end(Duration::from_secs(5)).await {
                    Some(event) => {
                        assert!(!event.id.is_empty(), "{event:?}");
                        last_id = event.id.clone();
                        seen.push(seen_key(&event));
                        until_reconnect -= 1;
                    }
                    None => until_reconnect = 0,
                }
            }
            (seen, reconnects, stream)
        }
    };
    let (seen, reconnects, mut stream) = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the reader saw everything within 20 s");
    let mut per_writer = Vec::new();
    for writer in writers {
        per_writer.push(writer.await.unwrap());
    }

    assert!(reconnects >= 20, "only {reconnects} reconnects");
    let mut counts: HashMap<&Seen, usize> = HashMap::new();
    for key in &seen {
        *counts.entry(key).or_default() += 1;
    }
    for id in per_writer.iter().flatten() {
        for (name, title) in [
            ("earnings:new", ""),
            ("earnings:updated", ""),
            ("notification", "Earning Created"),
            ("notification", "Earning Updated"),
        ] {
            let key = (name.to_owned(), id.clone(), title.to_owned());
            assert_eq!(
                counts.get(&key),
                Some(&1),
                "{key:?} seen {:?} times",
                counts.get(&key)
            );
        }
    }
    assert_eq!(seen.len(), EXPECTED);
    for ids in &per_writer {
        let order: Vec<(&str, &str)> = seen
            .iter()
            .filter(|(name, id, _)| name.starts_with("earnings:") && ids.contains(id))
            .map(|(name, id, _)| (name.as_str(), id.as_str()))
            .collect();
        let expected: Vec<(&str, &str)> = ids
            .iter()
            .flat_map(|id| {
                [
                    ("earnings:new", id.as_str()),
                    ("earnings:updated", id.as_str()),
                ]
            })
            .collect();
        assert_eq!(order, expected);
    }
    expect_nothing_before_a_marker(&app, &alice, &mut stream).await;
}

#[tokio::test]
async fn long_poll_with_timeout_0_returns_the_events_that_exist_even_under_load() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let after = list_cursor(&app, &alice).await;
    // Writes keep landing while the polls run.
    let writer = {
        let (base, token, pid) = (
            app.base.clone(),
            alice.token.clone(),
            platform["id"].clone(),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..40 {
                let body =
                    serde_json::json!({"platformId": pid, "date": "2024-01-15", "amount": 10 + i});
                let res = client
                    .post(format!("{base}/api/earnings"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::CREATED);
            }
        })
    };
    app.earning(&alice, &platform, 1.0).await;
    // Every timeout=0 poll from the cursor before that first earning gets at
    // least it (and its notification), at once.
    for _ in 0..30 {
        let (status, body, took) = poll(
            &app,
            &alice,
            &format!("?after={}&timeout=0", encode(&after)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(took < Duration::from_secs(2), "timeout=0 took {took:?}");
        let events = body["events"].as_array().unwrap();
        assert!(events.len() >= 2, "timeout=0 answered {body}");
        assert_eq!(events[0]["event"], "earnings:new");
    }
    writer.await.unwrap();
}
