//! Compressed streams: `GET /events` answers gzip when asked (and allowed),
//! each event decodable the moment it arrives, on both transports; a clean
//! end carries a valid trailer; `curl --compressed -N` follows a stream; the
//! long-poll answer is compressed by the usual layer.

use std::process::Stdio;
use std::time::Duration;

use reqwest::{header, Client, Response, StatusCode};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{spawn_app, spawn_app_with, Sse, TestApp, User};
use crate::kit::sse::Next;

const WAIT: Duration = Duration::from_secs(2);

/// A client that asks for gzip and decodes it (as browsers do).
fn gzip_client() -> Client {
    Client::builder()
        .gzip(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A client that decodes nothing, to see the bytes on the wire.
fn raw_client() -> Client {
    Client::builder()
        .no_gzip()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `/events` of `user`; through hyper's path when `origin` (a request with
/// an `Origin` is not one the lean path takes), else the lean path.
async fn open(
    app: &TestApp,
    client: &Client,
    user: &User,
    accept: Option<&str>,
    origin: bool,
) -> Response {
    let mut req = client.get(app.url("/events")).bearer_auth(&user.token);
    if let Some(accept) = accept {
        req = req.header(header::ACCEPT_ENCODING, accept);
    }
    if origin {
        req = req.header(header::ORIGIN, &app.base);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn gzip_streams_deliver_each_event_at_once_on_both_paths() {
    let app = spawn_app().await;
    let user = app.user().await;
    for origin in [false, true] {
        let mut raw = open(
            &app,
            &raw_client(),
            &user,
            Some("gzip, deflate, br"),
            origin,
        )
        .await;
        assert_eq!(raw.status(), StatusCode::OK);
        assert_eq!(
            raw.headers()[header::CONTENT_ENCODING],
            "gzip",
            "origin: {origin}"
        );
        assert_eq!(raw.headers()[header::VARY], "accept-encoding");
        assert_eq!(raw.headers()[header::CONTENT_TYPE], "text/event-stream");
        let first = tokio::time::timeout(WAIT, raw.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&first[..2], &[0x1f, 0x8b], "a gzip header first");

        // The decoding client sees `connected`, then each event as soon as
        // its write commits: the compressor is flushed after every event.
        let mut stream = Sse::new(open(&app, &gzip_client(), &user, None, origin).await);
        stream.expect("connected").await;
        for n in 0..3 {
            app.platform(&user, &format!("P{origin}{n}")).await;
            let event = stream.event_within(WAIT).await;
            assert_eq!(event.event, "platforms:new");
            assert!(!event.id.is_empty(), "each event keeps its id");
        }
    }
}

#[tokio::test]
async fn streams_stay_plain_unless_asked_and_allowed() {
    let app = spawn_app().await;
    let user = app.user().await;
    let plain = open(&app, &raw_client(), &user, None, false).await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    let refused = open(
        &app,
        &raw_client(),
        &user,
        Some("gzip;q=0, identity"),
        false,
    )
    .await;
    assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());

    let off = spawn_app_with(|c| c.stream_compression = false).await;
    let user = off.user().await;
    for origin in [false, true] {
        let res = open(&off, &raw_client(), &user, Some("gzip"), origin).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers().get(header::CONTENT_ENCODING).is_none(),
            "setting off"
        );
        let mut stream = Sse::new(res);
        stream.expect("connected").await;
    }
}

#[tokio::test]
async fn a_compressed_stream_ends_with_a_valid_trailer() {
    let mut app = spawn_app().await;
    let user = app.user().await;
    let mut stream = Sse::new(open(&app, &gzip_client(), &user, None, false).await);
    stream.expect("connected").await;
    app.platform(&user, "Upwork").await;
    assert_eq!(stream.event_within(WAIT).await.event, "platforms:new");
    // Shutdown ends every stream cleanly: the decoder checks the CRC and
    // length of everything it decoded.
    app.stop().await;
    match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        Next::Ended => {}
        other => panic!("a clean end with a valid trailer, got {other:?}"),
    }
}

#[tokio::test]
async fn curl_compressed_follows_a_stream() {
    let app = spawn_app().await;
    let user = app.user().await;
    let mut curl = tokio::process::Command::new("curl")
        .args(["--compressed", "-sN"])
        .arg(app.url(&format!("/events?access_token={}", user.token)))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl is installed (the README's debugging tool)");
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    let mut until = async |wanted: &str| {
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line == wanted {
                    return;
                }
            }
            panic!("curl's output ended before {wanted:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("{wanted:?} within {WAIT:?}"))
    };
    until("event: connected").await;
    app.platform(&user, "Upwork").await;
    until("event: platforms:new").await;
}

#[tokio::test]
async fn long_polls_are_compressed_by_the_usual_layer() {
    let app = spawn_app().await;
    let user = app.user().await;
    let res = raw_client()
        .get(app.url("/events/poll?timeout=0"))
        .bearer_auth(&user.token)
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
    let res = gzip_client()
        .get(app.url("/events/poll?timeout=0"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body.is_object(), "decodes to the usual answer: {body}");
}
