//! The lean stream path (`http::fast_path`): which requests it takes (and
//! which it leaves, unread, to the router), its chunked framing on the wire,
//! its end on force-disconnect, and a client that goes away.

use std::time::Duration;

use earntrack::http::fast_path;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{assert_api_error, spawn_app, TestApp};

/// A connected pair: a client socket that has sent `head`, and the
/// server's side of it.
async fn connection(head: &str) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    client.write_all(head.as_bytes()).await.unwrap();
    (client, server)
}

/// Whether the lean path takes a request; when it declines, the bytes must
/// still be unread on the server's socket, for hyper.
async fn decides(app: &TestApp, head: &str) -> bool {
    let (_client, server) = connection(head).await;
    let taken = fast_path::accept(&app.state, &server).await.is_some();
    if !taken {
        assert_unread(&server).await;
    }
    taken
}

async fn assert_unread(server: &TcpStream) {
    let mut peeked = vec![0u8; 64];
    let n = server.peek(&mut peeked).await.unwrap();
    assert!(n > 0, "a declined request must be left for hyper to read");
}

#[tokio::test]
async fn the_lean_path_takes_only_plain_stream_requests_and_leaves_the_rest_unread() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let t = &alice.token;
    let plain = format!("GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\r\n");
    let query = format!("GET /events?access_token={t}&topics=earnings HTTP/1.1\r\nHost: x\r\n\r\n");
    let cookie = format!("GET /events HTTP/1.0\r\nCookie: earntrack_token={t}\r\n\r\n");
    assert!(decides(&app, &plain).await);
    assert!(decides(&app, &query).await);
    assert!(decides(&app, &cookie).await);

    let declined = [
        // Anything the router must answer: errors, other routes, CORS.
        "GET /events HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        "GET /events HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n".to_string(),
        format!("GET /events?topics=bogus HTTP/1.1\r\nAuthorization: Bearer {t}\r\n\r\n"),
        format!("GET /events/poll HTTP/1.1\r\nAuthorization: Bearer {t}\r\n\r\n"),
        format!("POST /events HTTP/1.1\r\nAuthorization: Bearer {t}\r\n\r\n"),
        format!("GET /events HTTP/1.1\r\nOrigin: http://x\r\nAuthorization: Bearer {t}\r\n\r\n"),
        format!(
            "GET /events HTTP/1.1\r\nContent-Length: 2\r\nAuthorization: Bearer {t}\r\n\r\n{{}}"
        ),
        "not http at all\r\n\r\n".to_string(),
    ];
    for request in &declined {
        assert!(!decides(&app, request).await, "taken: {request:?}");
    }
    // A head that arrives in two packets is left to hyper too.
    let (first, second) = plain.split_at(20);
    let (mut client, server) = connection(first).await;
    let (accepted, ()) = tokio::join!(fast_path::accept(&app.state, &server), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(second.as_bytes()).await.unwrap();
    });
    assert!(accepted.is_none());
    assert_unread(&server).await;
}

#[tokio::test]
async fn requests_the_lean_path_declines_get_the_routers_answers() {
    let app = spawn_app().await;
    let alice = app.user().await;
    // No token: the router's 401 JSON, on a fresh connection.
    let res = app.streams.get(app.url("/events")).send().await.unwrap();
    assert_api_error(res, StatusCode::UNAUTHORIZED, "missing_token").await;
    // Over the per-user limit: the router's 429.
    let mut open = Vec::new();
    for _ in 0..app.state.config.max_streams_per_user {
        let stream = app.stream(&alice.token, "").await;
        assert_eq!(stream.status, StatusCode::OK);
        open.push(stream);
    }
    let res = app
        .streams
        .get(app.url("/events"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_api_error(res, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;
    // A cross-origin stream: served by the router, with its CORS headers.
    let app =
        crate::helpers::spawn_app_with(|c| c.cors_origins = vec!["http://app.test".into()]).await;
    let alice2 = app.user().await;
    let res = app
        .streams
        .get(app.url("/events"))
        .header("Origin", "http://app.test")
        .bearer_auth(&alice2.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    let mut stream = crate::helpers::Sse::new(res);
    stream.expect("connected").await;
}

/// Decode a chunked body: the chunks, and whether the last-chunk was seen.
fn dechunk(mut body: &[u8]) -> (Vec<String>, bool) {
    let mut chunks = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return (chunks, false);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size in {:?}", String::from_utf8_lossy(body)));
        if size == 0 {
            return (chunks, &body[eol..] == b"\r\n\r\n");
        }
        let data = &body[eol + 2..eol + 2 + size];
        assert_eq!(&body[eol + 2 + size..eol + 4 + size], b"\r\n");
        chunks.push(String::from_utf8(data.to_vec()).unwrap());
        body = &body[eol + 4 + size..];
    }
}

#[tokio::test]
async fn a_lean_stream_is_well_formed_chunked_http_and_ends_with_the_last_chunk() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        alice.token
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("event: connected") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0);
        raw.extend_from_slice(&buf[..n]);
    }
    app.earning(&alice, &platform, 100.0).await;
    let res = app
        .delete(
            &format!("/api/admin/users/{}/connections", alice.id),
            &admin.token,
        )
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    // Force-disconnect ends the body and closes the connection.
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut raw))
        .await
        .expect("the server closes the stream")
        .unwrap();

    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "x-accel-buffering: no",
        "transfer-encoding: chunked",
    ] {
        assert!(head.contains(line), "no {line:?} in {head}");
    }
    assert!(!head.contains("content-length"), "{head}");
    let body_at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let (chunks, ended) = dechunk(&raw[body_at..]);
    assert!(ended, "no last-chunk: {chunks:?}");
    let sse = chunks.concat();
    assert!(sse.starts_with("retry: "), "{sse}");
    let names: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names, ["connected", "earnings:new", "notification"]);
}

#[tokio::test]
async fn a_lean_stream_whose_client_goes_away_leaves_the_hub_at_once() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let user: uuid::Uuid = alice.id.parse().unwrap();
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET /events?access_token={} HTTP/1.1\r\nHost: x\r\n\r\n",
        alice.token
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let _ = socket.read(&mut buf).await.unwrap();
    assert_eq!(app.state.hub.user_streams(user), 1);

    drop(socket);

    // No event and no heartbeat is due: only reading the socket can tell.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while app.state.hub.user_streams(user) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream is still counted 2 s after its client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
