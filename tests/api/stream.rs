//! The stream: `GET /events` — headers and first bytes, one frame per event
//! with the contract's payloads, isolation, topics, limits, heartbeat,
//! HTTP/1.0 clients, token expiry and force-disconnect.

use std::collections::HashSet;
use std::time::Duration;

use eventsource_stream::Event;
use futures_util::StreamExt;
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, spawn_app_with, Sse, TestApp, User};

/// The envelope `{event, timestamp, data}` of a frame.
fn envelope(event: &Event) -> Value {
    serde_json::from_str(&event.data).expect("the data line is one JSON envelope")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_utc_millis(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Reads raw body bytes of `res` until `needle` shows up; the text so far.
async fn read_until(res: reqwest::Response, needle: &str, within: Duration) -> String {
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + within;
    while !text.contains(needle) {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Some(Err(err))) => panic!("body error: {err}; so far {text:?}"),
            Ok(None) => panic!("body ended before {needle:?}; got {text:?}"),
            Err(_) => panic!("no {needle:?} within {within:?}; got {text:?}"),
        }
    }
    text
}

/// Reads `socket` into `raw` until `needle` shows up.
async fn read_socket_until(socket: &mut TcpStream, raw: &mut Vec<u8>, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(raw).contains(needle) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, socket.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(raw)))
            .unwrap();
        assert!(
            n > 0,
            "connection closed before {needle:?}: {:?}",
            String::from_utf8_lossy(raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

/// An open stream with its `connected` event read.
async fn connected_stream(app: &TestApp, user: &User, query: &str) -> Sse {
    let mut stream = app.stream(&user.token, query).await;
    assert_eq!(stream.status, StatusCode::OK);
    stream.expect("connected").await;
    stream
}

async fn error_code(res: reqwest::Response) -> String {
    let body: Value = res.json().await.expect("an error body is JSON");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned()
}

#[tokio::test]
async fn stream_answers_200_as_an_unbuffered_event_stream_without_content_length() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let res = app
        .client
        .get(app.url("/events"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    let stream = Sse::new(res);

    assert_eq!(stream.status, StatusCode::OK);
    let content_type = stream.headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let cache = stream.headers[header::CACHE_CONTROL].to_str().unwrap();
    assert!(cache.split(',').any(|d| d.trim() == "no-cache"), "{cache}");
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    assert!(stream.headers.get(header::CONTENT_LENGTH).is_none());
    // Plain unless asked for (tests/api/compression.rs).
    assert!(stream.headers.get(header::CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn stream_first_event_is_connected_with_connection_and_user_in_the_envelope() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let mut stream = app.stream(&alice.token, "").await;
    let first = stream.event().await;

    assert_eq!(first.event, "connected");
    assert!(
        !first.id.is_empty(),
        "a fresh stream's connected carries the current position"
    );
    let envelope = envelope(&first);
    assert_eq!(keys(&envelope), ["data", "event", "timestamp"]);
    assert_eq!(envelope["event"], "connected");
    assert!(
        is_utc_millis(envelope["timestamp"].as_str().unwrap()),
        "{envelope}"
    );
    assert_eq!(envelope["data"]["userId"], alice.id.as_str());
    let connection = envelope["data"]["connectionId"]
        .as_str()
        .expect("connectionId");
    assert!(uuid::Uuid::parse_str(connection).is_ok(), "{connection}");
}

#[tokio::test]
async fn stream_first_bytes_are_a_retry_line_jittered_around_three_seconds() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let mut retries = HashSet::new();
    for _ in 0..8 {
        let res = app
            .client
            .get(app.url("/events"))
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap();
        let text = read_until(res, "event: connected", Duration::from_secs(5)).await;

        assert!(text.starts_with("retry: "), "first bytes: {text:?}");
        let value = text["retry: ".len()..].lines().next().unwrap();
        let retry: u64 = value.trim().parse().expect("retry is a number of ms");
        assert!(
            (2400..=3600).contains(&retry),
            "retry {retry} is not around 3 s"
        );
        retries.insert(retry);
    }
    assert!(
        retries.len() > 1,
        "retry is not jittered: always {retries:?}"
    );
}

#[tokio::test]
async fn creating_an_earning_publishes_earnings_new_with_the_rest_body_then_a_success_notification()
{
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let mut stream = connected_stream(&app, &alice, "").await;

    let earning = app.earning(&alice, &platform, 100.5).await;

    let (frame, data) = stream.expect("earnings:new").await;
    assert_eq!(data, earning);
    assert!(is_utc_millis(
        envelope(&frame)["timestamp"].as_str().unwrap()
    ));
    let (_, note) = stream.expect("notification").await;
    assert_eq!(
        keys(&note),
        [
            "data",
            "dismissible",
            "duration",
            "id",
            "message",
            "timestamp",
            "title",
            "type"
        ]
    );
    assert_eq!(note["type"], "success");
    assert_eq!(note["title"], "Earning Created");
    assert_eq!(note["message"], "New earning of $100.50 added to Upwork");
}

#[tokio::test]
async fn updating_an_earning_publishes_only_the_changed_fields_then_a_notification() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 100.0).await;
    let mut stream = connected_stream(&app, &alice, "").await;

    let res = app
        .patch(
            &format!("/api/earnings/{}", earning["id"].as_str().unwrap()),
            &alice.token,
            json!({"amount": 150}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();

    let (_, data) = stream.expect("earnings:updated").await;
    assert_eq!(keys(&data), ["changes", "id", "updatedAt", "userId"]);
    assert_eq!(data["id"], earning["id"]);
    assert_eq!(data["userId"], alice.id.as_str());
    assert_eq!(data["updatedAt"], updated["updatedAt"]);
    // hours is 2: the derived hourly rate changes with the amount.
    assert_eq!(keys(&data["changes"]), ["amount", "hourly_rate"]);
    assert_eq!(data["changes"]["amount"].as_f64(), Some(150.0));
    assert_eq!(data["changes"]["hourly_rate"].as_f64(), Some(75.0));
    let (_, note) = stream.expect("notification").await;
    assert_eq!(note["type"], "success");
    assert_eq!(note["title"], "Earning Updated");
}

#[tokio::test]
async fn a_patch_that_changes_nothing_publishes_nothing() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 100.0).await;
    let path = format!("/api/earnings/{}", earning["id"].as_str().unwrap());
    let mut stream = connected_stream(&app, &alice, "").await;

    let res = app
        .patch(&path, &alice.token, json!({"amount": 100, "hours": 2}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    assert!(
        stream.quiet_for(Duration::from_millis(500)).await.is_none(),
        "a no-op PATCH published something"
    );
    // The stream is alive: the next real change is the next event.
    app.patch(&path, &alice.token, json!({"notes": "late invoice"}))
        .await;
    let (_, data) = stream.expect("earnings:updated").await;
    assert_eq!(data["changes"], json!({"notes": "late invoice"}));
}

#[tokio::test]
async fn deleting_an_earning_publishes_earnings_deleted_with_its_id_then_a_notification() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 100.0).await;
    let mut stream = connected_stream(&app, &alice, "").await;

    let res = app
        .delete(
            &format!("/api/earnings/{}", earning["id"].as_str().unwrap()),
            &alice.token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let (_, data) = stream.expect("earnings:deleted").await;
    assert_eq!(data, json!({"id": earning["id"]}));
    let (_, note) = stream.expect("notification").await;
    assert_eq!(note["type"], "success");
    assert_eq!(note["title"], "Earning Deleted");
}

#[tokio::test]
async fn creating_a_platform_publishes_platforms_new_with_the_platform() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let mut stream = connected_stream(&app, &alice, "").await;

    let platform = app.platform(&alice, "Fiverr").await;

    let (_, data) = stream.expect("platforms:new").await;
    assert_eq!(data, platform);
}

#[tokio::test]
async fn every_frame_carries_a_distinct_non_empty_id() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let mut stream = app.stream(&alice.token, "").await;
    let (connected, _) = stream.expect("connected").await;

    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 10.0).await;
    app.delete(
        &format!("/api/earnings/{}", earning["id"].as_str().unwrap()),
        &alice.token,
    )
    .await;

    let mut ids = vec![connected.id];
    for name in [
        "platforms:new",
        "earnings:new",
        "notification",
        "earnings:deleted",
        "notification",
    ] {
        let (frame, _) = stream.expect(name).await;
        ids.push(frame.id);
    }
    assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "ids repeat: {ids:?}"
    );
}

#[tokio::test]
async fn a_users_stream_never_sees_another_users_events() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let mut bobs = connected_stream(&app, &bob, "").await;
    let mut alices = connected_stream(&app, &alice, "").await;

    let platform = app.platform(&alice, "Upwork").await;
    app.earning(&alice, &platform, 100.0).await;
    alices.expect("platforms:new").await;
    alices.expect("earnings:new").await;
    alices.expect("notification").await;
    // Alice's events are all out; Bob's own change is the next thing he sees.
    let bobs_platform = app.platform(&bob, "Fiverr").await;

    let (_, data) = bobs.expect("platforms:new").await;
    assert_eq!(data, bobs_platform);
    assert!(bobs.quiet_for(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn two_streams_of_one_user_both_receive_every_event_in_the_same_order() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let mut tab1 = connected_stream(&app, &alice, "").await;
    let mut tab2 = connected_stream(&app, &alice, "").await;

    let platform = app.platform(&alice, "Upwork").await;
    for amount in [1.0, 2.0, 3.0] {
        app.earning(&alice, &platform, amount).await;
    }

    let mut seen = [Vec::new(), Vec::new()];
    for (tab, seen) in [&mut tab1, &mut tab2].into_iter().zip(seen.iter_mut()) {
        for _ in 0..7 {
            let event = tab.event().await;
            seen.push((event.event.clone(), envelope(&event)["data"].clone()));
        }
    }
    assert_eq!(seen[0], seen[1]);
    let names: Vec<&str> = seen[0].iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "platforms:new",
            "earnings:new",
            "notification",
            "earnings:new",
            "notification",
            "earnings:new",
            "notification"
        ]
    );
    let amounts: Vec<f64> = seen[0]
        .iter()
        .filter(|(n, _)| n == "earnings:new")
        .map(|(_, d)| d["amount"].as_f64().unwrap())
        .collect();
    assert_eq!(amounts, [1.0, 2.0, 3.0]);
}

#[tokio::test]
async fn topics_earnings_receives_earnings_and_platforms_but_no_notifications() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let admin = app.admin().await;
    let mut stream = connected_stream(&app, &alice, "?topics=earnings").await;

    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 100.0).await;
    app.delete(
        &format!("/api/earnings/{}", earning["id"].as_str().unwrap()),
        &alice.token,
    )
    .await;
    let res = app
        .post(
            "/api/admin/events",
            &admin.token,
            json!({"target": {"user": alice.id}, "event": "deploy:done", "data": {"v": 1}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    stream.expect("platforms:new").await;
    stream.expect("earnings:new").await;
    stream.expect("earnings:deleted").await;
    let (_, data) = stream.expect("deploy:done").await;
    assert_eq!(data, json!({"v": 1}));
}

#[tokio::test]
async fn topics_notifications_receives_notifications_but_no_earnings_events() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let admin = app.admin().await;
    let mut stream = connected_stream(&app, &alice, "?topics=notifications").await;

    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 100.0).await;
    app.delete(
        &format!("/api/earnings/{}", earning["id"].as_str().unwrap()),
        &alice.token,
    )
    .await;
    let res = app
        .post(
            "/api/admin/events",
            &admin.token,
            json!({"target": {"user": alice.id}, "event": "deploy:done", "data": {"v": 1}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    let (_, created) = stream.expect("notification").await;
    assert_eq!(created["title"], "Earning Created");
    let (_, deleted) = stream.expect("notification").await;
    assert_eq!(deleted["title"], "Earning Deleted");
    stream.expect("deploy:done").await;
}

#[tokio::test]
async fn an_unknown_topic_is_400_bad_request() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let res = app.get("/events?topics=bogus", &alice.token).await;

    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(res).await, "bad_request");
}

#[tokio::test]
async fn a_stream_beyond_the_per_user_limit_is_429_too_many_streams_with_retry_after() {
    let app = spawn_app_with(|c| c.max_streams_per_user = 2).await;
    let (alice, bob) = (app.user().await, app.user().await);
    let _first = connected_stream(&app, &alice, "").await;
    let second = connected_stream(&app, &alice, "").await;

    let res = app.get("/events", &alice.token).await;

    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = res
        .headers()
        .get(header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap();
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After: {retry_after}"
    );
    assert_eq!(error_code(res).await, "too_many_streams");
    // The limit is per user.
    connected_stream(&app, &bob, "").await;
    // Closing a stream frees its slot.
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let mut stream = app.stream(&alice.token, "").await;
        if stream.status == StatusCode::OK {
            stream.expect("connected").await;
            break;
        }
        assert_eq!(stream.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream still holds its slot after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_stream_gets_a_ping_comment_every_heartbeat() {
    let app = spawn_app_with(|c| c.heartbeat_secs = 1).await;
    let alice = app.user().await;
    let res = app
        .client
        .get(app.url("/events"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();

    let text = read_until(res, "\n: ping\n", Duration::from_millis(2500)).await;

    assert!(text.contains("event: connected"), "{text:?}");
}

#[tokio::test]
async fn an_http_1_0_client_gets_the_stream_unchunked() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET /events?access_token={} HTTP/1.0\r\nHost: {}\r\n\r\n",
        alice.token, app.addr
    );
    socket.write_all(request.as_bytes()).await.unwrap();

    let mut raw = Vec::new();
    read_socket_until(&mut socket, &mut raw, "event: connected").await;
    let earning = app.earning(&alice, &platform, 100.0).await;
    read_socket_until(&mut socket, &mut raw, "event: notification").await;

    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        body.starts_with("retry: "),
        "body is not plain SSE: {body:?}"
    );
    let frame = body
        .split("\n\n")
        .find(|f| f.contains("event: earnings:new"))
        .expect("an earnings:new frame");
    let lines: Vec<&str> = frame.lines().collect();
    assert_eq!(lines.len(), 3, "{frame:?}");
    assert!(
        lines[0].starts_with("id: ") && lines[0].len() > 4,
        "{frame:?}"
    );
    assert_eq!(lines[1], "event: earnings:new");
    let envelope: Value = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(envelope["data"], earning);
}

#[tokio::test]
async fn a_stream_whose_token_expires_gets_auth_expired_and_ends() {
    let app = spawn_app_with(|c| c.token_ttl_secs = 2).await;
    let issued = std::time::Instant::now();
    let alice = app.user().await;
    let mut stream = connected_stream(&app, &alice, "").await;

    let expired = stream.event_within(Duration::from_secs(4)).await;

    assert_eq!(expired.event, "auth:expired");
    // `exp` is whole seconds, 2 s after an `iat` rounded down: never before 1 s.
    assert!(
        issued.elapsed() >= Duration::from_secs(1),
        "ended {:?} after issue",
        issued.elapsed()
    );
    assert_eq!(envelope(&expired)["event"], "auth:expired");
    assert!(
        stream.next_or_end(Duration::from_secs(1)).await.is_none(),
        "the stream goes on after auth:expired"
    );
}

#[tokio::test]
async fn events_takes_the_token_from_the_access_token_query_parameter() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let res = app
        .client
        .get(app.url(&format!("/events?access_token={}", alice.token)))
        .send()
        .await
        .unwrap();
    let mut stream = Sse::new(res);

    assert_eq!(stream.status, StatusCode::OK);
    let (_, hello) = stream.expect("connected").await;
    assert_eq!(hello["userId"], alice.id.as_str());
}

#[tokio::test]
async fn events_takes_the_token_from_the_cookie() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let res = app
        .client
        .get(app.url("/events"))
        .header(header::COOKIE, format!("earntrack_token={}", alice.token))
        .send()
        .await
        .unwrap();
    let mut stream = Sse::new(res);

    assert_eq!(stream.status, StatusCode::OK);
    let (_, hello) = stream.expect("connected").await;
    assert_eq!(hello["userId"], alice.id.as_str());
}

#[tokio::test]
async fn events_without_a_token_is_401_missing_token() {
    let app = spawn_app().await;

    let res = app.client.get(app.url("/events")).send().await.unwrap();

    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(error_code(res).await, "missing_token");
}

#[tokio::test]
async fn events_with_a_bad_token_is_401_invalid_token() {
    let app = spawn_app().await;
    let alice = app.user().await;

    for token in [format!("{}x", alice.token), "not-a-jwt".to_owned()] {
        let res = app.get("/events", &token).await;

        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(res).await, "invalid_token");
    }
}
