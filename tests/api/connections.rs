//! No connection or request runs unbounded (issue #13): a socket that sends
//! nothing, or half a head, is closed after the head timeout on both paths;
//! open connections are capped per source address and in all, without
//! keeping a normal client out; HTTP/2 is not spoken; the web client's
//! browser headers; long-polls and stream opens spend a budget; register
//! and login are throttled and the hashing queue is bounded.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, TestApp};

/// Whether the server closed `tcp` within `within` (EOF or reset).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn silent_sockets(app: &TestApp, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        // Half of them send half a head (hyper's path), half nothing (the
        // lean path's peek).
        if i % 2 == 1 {
            tcp.write_all(b"GET /api/earnings HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        sockets.push(tcp);
    }
    sockets
}

#[tokio::test]
async fn two_hundred_silent_sockets_neither_stay_nor_keep_a_normal_client_out() {
    let app = spawn_app_with(|c| c.head_timeout_secs = 2).await;
    let user = app.user().await;
    let started = Instant::now();
    let mut sockets = silent_sockets(&app, 200).await;

    // While they hang on, a normal client is served: REST and a stream.
    let res = app.get("/api/platforms", &user.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (mut stream, _) = app.stream_connected(&user).await;
    app.platform(&user, "Upwork").await;
    assert_eq!(
        stream.event_within(Duration::from_secs(2)).await.event,
        "platforms:new"
    );

    // Then each is closed after the head timeout (2 s here, 10 by default).
    for (i, tcp) in sockets.iter_mut().enumerate() {
        let left = Duration::from_secs(6).saturating_sub(started.elapsed());
        assert!(
            closed_within(tcp, left).await,
            "socket {i} still open after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed before the timeout"
    );
    // The stream itself is not cut by the head timeout.
    assert!(stream.quiet_for(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_at_once_and_counted() {
    let app = spawn_app_with(|c| c.max_connections_per_ip = 20).await;
    let user = app.user().await;
    const REFUSED: &str = "earntrack_connections_refused_total{cap=\"per_ip\"}";
    let refused_before = app.metric(REFUSED).await;
    let mut held = silent_sockets(&app, 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The 21st from the same address is closed before anything is read.
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    drop(held.drain(..10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // With places free again, a normal client is served.
    let res = app.get("/api/platforms", &user.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(app.metric(REFUSED).await >= refused_before + 1.0);
    let after = app.metrics_text().await;
    assert!(after.contains("earntrack_connections_open"), "{after}");
}

#[tokio::test]
async fn a_lean_stream_holds_its_place_under_the_cap_while_it_lives_and_gives_it_back() {
    // Three places from this address: the client's pooled connection (kept
    // alive after registering) and two streams.
    let app = spawn_app_with(|c| c.max_connections_per_ip = 3).await;
    let user = app.user().await;
    for round in 0..3 {
        let mut a = app.stream(&user.token, "").await;
        let mut b = app.stream(&user.token, "").await;
        assert_eq!(
            (a.status, b.status),
            (StatusCode::OK, StatusCode::OK),
            "round {round}"
        );
        a.expect("connected").await;
        b.expect("connected").await;
        // Full: a fourth connection is closed before anything is read.
        let mut extra = TcpStream::connect(app.addr).await.unwrap();
        assert!(
            closed_within(&mut extra, Duration::from_secs(2)).await,
            "round {round}"
        );
        // Both streams end; their places must come back for the next round.
        drop((a, b));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn connections_over_the_total_cap_are_closed_at_once() {
    let app = spawn_app_with(|c| c.max_connections = 5).await;
    let _held = silent_sockets(&app, 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_not_spoken() {
    let app = spawn_app_with(|_| {}).await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    // The HTTP/2 connection preface, then an empty SETTINGS frame.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut answer)).await;
    // An HTTP/2 server would answer with a SETTINGS frame (type 4 at byte 3).
    let is_h2_settings = answer.len() >= 9 && answer[3] == 0x04;
    assert!(!is_h2_settings, "answered as HTTP/2: {answer:?}");
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn the_web_client_is_served_with_a_strict_content_security_policy() {
    let app = spawn_app_with(|_| {}).await;
    for path in ["/", "/app.js"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    // And every API answer, streams included, is never sniffed.
    let user = app.user().await;
    let res = app.get("/api/platforms", &user.token).await;
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let stream = app.stream(&user.token, "").await;
    assert_eq!(stream.headers["x-content-type-options"], "nosniff");
}

// ---- long-poll budgets ----

async fn poll_status(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/events/poll{query}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn polls_and_stream_opens_spend_the_users_request_budget() {
    let app = spawn_app_with(|c| c.rate_limit_per_min = 3).await;
    let user = app.user().await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(poll_status(&app, &user.token, "?timeout=0").await.status());
    }
    assert_eq!(statuses, [StatusCode::OK; 3]);
    let res = poll_status(&app, &user.token, "?timeout=0").await;
    crate::helpers::assert_api_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let stream = app.stream(&user.token, "").await;
    assert_eq!(stream.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_user_may_have_only_so_many_long_polls_waiting() {
    let app = spawn_app_with(|c| c.max_polls_per_user = 2).await;
    let user = app.user().await;
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, token) = (
                app.client.clone(),
                app.url("/events/poll?timeout=3"),
                user.token.clone(),
            );
            tokio::spawn(async move {
                client
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = poll_status(&app, &user.token, "?timeout=3").await;
    assert!(res.headers().contains_key("retry-after"));
    crate::helpers::assert_api_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another user is not affected.
    let other = app.user().await;
    assert_eq!(
        poll_status(&app, &other.token, "?timeout=0").await.status(),
        StatusCode::OK
    );
    for w in waiting {
        assert_eq!(w.await.unwrap(), StatusCode::OK);
    }
    // Once they answered, there is room again.
    assert_eq!(
        poll_status(&app, &user.token, "?timeout=0").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn cursor_rooms_the_user_never_joined_are_dropped() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.user().await;
    let res = poll_status(&app, &user.token, "?timeout=0").await;
    let body: serde_json::Value = res.json().await.unwrap();
    let cursor = body["cursor"].as_str().unwrap().to_owned();
    // A crafted cursor naming rooms this user never belonged to.
    let crafted: String = (1..=300).fold(cursor, |c, room| format!("{c}.{room}:0"));
    let res = poll_status(&app, &user.token, &format!("?timeout=0&after={crafted}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    let answered = body["cursor"].as_str().unwrap();
    assert!(!answered.contains(':'), "foreign rooms kept: {answered}");
}

// ---- register and login ----

#[tokio::test]
async fn logins_are_throttled_per_email_and_per_address() {
    let app = spawn_app_with(|c| {
        c.auth_per_email_per_min = 3;
        c.auth_per_addr_per_min = 8;
    })
    .await;
    // Registering counts for the email too (1 of 3).
    app.register("target@example.com").await;
    // Guessing its password: the budget's rest goes, then refusals come
    // before any hash is computed.
    for _ in 0..2 {
        let res = app.login("target@example.com", "wrong-password").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app.login("target@example.com", "wrong-password").await;
    assert!(res.headers().contains_key("retry-after"));
    crate::helpers::assert_api_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Spread over many emails, the address's budget runs out too.
    let mut limited = false;
    for i in 0..10 {
        let res = app
            .login(&format!("other-{i}@example.com"), "wrong-password")
            .await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(limited, "the per-address throttle never bit");
}

#[tokio::test]
async fn login_input_is_validated_like_register() {
    let app = spawn_app_with(|_| {}).await;
    for email in ["nul\u{0}@example.com", "not-an-email", ""] {
        let res = app.login(email, "correct horse").await;
        let body = crate::helpers::assert_api_error(
            res,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert!(body["error"]["fields"]["email"].is_string(), "{body}");
    }
    let res = app.login("someone@example.com", &"x".repeat(1025)).await;
    let body = crate::helpers::assert_api_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body["error"]["fields"]["password"].is_string(), "{body}");
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after_instead_of_waiting() {
    // No wait at all for a hashing slot: with four slots busy, the rest are
    // refused at once.
    let app = spawn_app_with(|c| c.hash_wait_ms = 0).await;
    let attempts: Vec<_> = (0..24)
        .map(|i| {
            let (client, url) = (app.client.clone(), app.url("/api/auth/login"));
            tokio::spawn(async move {
                let body = serde_json::json!({"email": format!("x{i}@example.com"), "password": "wrong-password"});
                client.post(url).json(&body).send().await.unwrap()
            })
        })
        .collect();
    let mut unavailable = 0;
    for a in attempts {
        let res = a.await.unwrap();
        match res.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(res.headers().contains_key("retry-after"));
                crate::helpers::assert_api_error(
                    res,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                )
                .await;
                unavailable += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(unavailable > 0, "the queue was never full");
}
