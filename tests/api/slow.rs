//! Slow subscribers: a client that stops reading is cut off (and counted)
//! without slowing anyone else down.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::helpers::{spawn_app_with, TestApp, User};
use crate::resume::{socket_buffers_bytes, PAD};

async fn streams_of(app: &TestApp, admin: &User, user: &User) -> u64 {
    let res = app
        .get(
            &format!("/api/admin/users/{}/connections", user.id),
            &admin.token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["connections"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_closed_without_slowing_a_fast_one() {
    // Arrange: one tab reads, another (same user, same channel) never does.
    let app = spawn_app_with(|c| c.write_timeout_secs = 1).await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut fast, _) = app.stream_connected(&alice).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(app.addr).await.unwrap();
    let request = format!(
        "GET /events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        app.addr, alice.token
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while streams_of(&app, &admin, &alice).await < 2 {
        assert!(Instant::now() < deadline, "the stalled stream never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drops_before = app.metric("earntrack_slow_subscriber_drops_total").await;

    // Act: more than every socket buffer on the way can hold.
    let events = socket_buffers_bytes() / PAD + 20;
    let mut slowest = Duration::ZERO;
    for n in 0..events {
        let body = json!({"target": {"user": alice.id}, "event": "test:pad", "data": {"n": n, "pad": "x".repeat(PAD)}});
        let sent = Instant::now();
        let res = app.post("/api/admin/events", &admin.token, body).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let (_, data) = fast.expect("test:pad").await;
        assert_eq!(data["n"], n);
        slowest = slowest.max(sent.elapsed());
    }

    // Assert: the reader kept up the whole time, the stalled one was cut off.
    assert!(
        slowest < Duration::from_secs(2),
        "the reading tab waited {slowest:?} for an event"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while streams_of(&app, &admin, &alice).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the stalled stream was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.metric("earntrack_slow_subscriber_drops_total").await > drops_before);
    let res = app
        .post(
            "/api/admin/events",
            &admin.token,
            json!({"target": {"user": alice.id}, "event": "test:after", "data": {}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    fast.expect("test:after").await;
    drop(stalled);
}
