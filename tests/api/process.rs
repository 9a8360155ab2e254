//! The real binary as operators run it: configuration from the environment,
//! SIGTERM, what reaches its logs, and a restart on the same database file.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::Sse;
use crate::kit::http;
use crate::kit::process::Process;

/// `earntrack` running as a child process (`crate::kit::process`), with a
/// client for it.
struct Server {
    process: Process,
    client: reqwest::Client,
}

impl Deref for Server {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl Server {
    /// Start the binary on `db` (SQLite) with `RUST_LOG=info` and wait until
    /// `/readyz` answers 200. `jwt_secret: None` leaves `JWT_SECRET` unset.
    async fn start(db: &Path, jwt_secret: Option<&str>) -> Server {
        Server::start_logging(db, jwt_secret, "info").await
    }

    async fn start_logging(db: &Path, jwt_secret: Option<&str>, rust_log: &str) -> Server {
        let database_url = format!("sqlite://{}", db.display());
        let mut env = vec![
            ("DATABASE_URL", database_url.as_str()),
            ("RUST_LOG", rust_log),
        ];
        if let Some(secret) = jwt_secret {
            env.push(("JWT_SECRET", secret));
        }
        let process = Process::start("earntrack", &env).await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(35))
            .build()
            .unwrap();
        Server { process, client }
    }

    async fn register(&self) -> (String, String) {
        let user = http::user(&self.client, &self.url("")).await;
        (user.id, user.token)
    }

    async fn stream(&self, token: &str) -> Sse {
        let res = self
            .client
            .get(self.url("/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let mut stream = Sse::new(res);
        assert_eq!(stream.status, StatusCode::OK);
        stream.expect("connected").await;
        stream
    }

    fn sigterm(&mut self) {
        self.signal("TERM");
    }
}

#[tokio::test]
async fn sigterm_or_sigint_ends_streams_cleanly_answers_long_polls_and_exits_zero() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(
            &dir.path().join("p.db"),
            Some("process-secret-0123456789abcdefghijkl"),
        )
        .await;
        let (_, token) = server.register().await;
        let mut streams = [server.stream(&token).await, server.stream(&token).await];
        let long_poll = {
            let request = server
                .client
                .get(server.url("/events/poll?timeout=30"))
                .bearer_auth(&token);
            tokio::spawn(async move {
                let res = request.send().await.unwrap();
                (res.status(), Instant::now())
            })
        };
        // Give the long-poll time to be waiting on the server.
        tokio::time::sleep(Duration::from_millis(300)).await;

        server.signal(signal);
        let signalled = Instant::now();

        for stream in &mut streams {
            // `next_or_end` panics on a transport error: the end must be clean.
            assert!(
                stream.next_or_end(Duration::from_secs(2)).await.is_none(),
                "a stream carried on after SIG{signal}"
            );
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "SIG{signal}: streams took {:?}",
            signalled.elapsed()
        );
        let (poll_status, answered) = tokio::time::timeout(Duration::from_secs(2), long_poll)
            .await
            .expect("the pending long-poll is answered at once")
            .unwrap();
        assert_eq!(poll_status, StatusCode::OK);
        assert!(answered.duration_since(signalled) < Duration::from_secs(2));
        let status = server.exits_within(Duration::from_secs(10)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "SIG{signal}: exit status {status}:\n{}",
            server.output()
        );
        let refused = tokio::net::TcpStream::connect(server.addr).await;
        assert!(
            matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "after exit the port answered {refused:?}"
        );
        let ready = server.client.get(server.url("/readyz")).send().await;
        assert!(
            matches!(&ready, Err(e) if e.is_connect()),
            "/readyz after exit: {ready:?}"
        );
    }
}

/// True when `access_token=` is followed by a long token-like value.
fn logs_a_query_token(output: &str) -> bool {
    output.match_indices("access_token=").any(|(at, needle)| {
        let value: String = output[at + needle.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.%".contains(*c))
            .collect();
        value.len() >= 16
    })
}

#[tokio::test]
async fn no_token_value_reaches_the_logs_wherever_the_token_came_from() {
    let dir = tempfile::tempdir().unwrap();
    // The most verbose level: no log line at all may carry the token.
    let mut server = Server::start_logging(
        &dir.path().join("p.db"),
        Some("process-secret-0123456789abcdefghijkl"),
        "trace",
    )
    .await;
    let (_, token) = server.register().await;
    let client = &server.client;

    let by_header = client
        .get(server.url("/api/platforms"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let by_query = client
        .get(server.url(&format!("/api/platforms?access_token={token}")))
        .send()
        .await
        .unwrap();
    let by_cookie = client
        .post(server.url("/api/platforms"))
        .header("Cookie", format!("earntrack_token={token}"))
        .json(&json!({"name": "Upwork", "color": "#14a800"}))
        .send()
        .await
        .unwrap();
    let tampered = client
        .get(server.url(&format!("/api/earnings?access_token={token}x")))
        .send()
        .await
        .unwrap();
    let unrouted = client
        .get(server.url(&format!("/nowhere?access_token={token}")))
        .send()
        .await
        .unwrap();
    let bad_query = client
        .get(server.url(&format!("/events?access_token={token}&topics=bogus")))
        .send()
        .await
        .unwrap();
    let res = client
        .get(server.url(&format!("/events?access_token={token}")))
        .send()
        .await
        .unwrap();
    let mut stream = Sse::new(res);
    stream.expect("connected").await;
    drop(stream);
    server.sigterm();
    let status = server.exits_within(Duration::from_secs(10)).await;

    assert_eq!(by_header.status(), StatusCode::OK);
    assert_eq!(by_query.status(), StatusCode::OK);
    assert_eq!(by_cookie.status(), StatusCode::CREATED);
    assert_eq!(tampered.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unrouted.status(), StatusCode::NOT_FOUND);
    assert_eq!(bad_query.status(), StatusCode::BAD_REQUEST);
    assert_eq!(status.code(), Some(0));
    let output = server.output();
    assert!(
        output.contains("stream opened"),
        "the logs were not captured:\n{output}"
    );
    let mut parts = token.split('.');
    let (_, payload, signature) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
    assert!(
        !output.contains(&token),
        "the token is in the logs:\n{output}"
    );
    assert!(
        !output.contains(payload),
        "the token's payload is in the logs:\n{output}"
    );
    assert!(
        !output.contains(signature),
        "the token's signature is in the logs:\n{output}"
    );
    assert!(
        !logs_a_query_token(&output),
        "an access_token value is in the logs:\n{output}"
    );
}

#[tokio::test]
async fn tokens_survive_a_restart_on_the_same_database_without_jwt_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let mut first = Server::start(&db, None).await;
    let (id, token) = first.register().await;
    first.sigterm();
    let status = first.exits_within(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));

    let second = Server::start(&db, None).await;
    let res = second
        .client
        .get(second.url("/api/platforms"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
    let res = second
        .client
        .get(second.url("/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut stream = Sse::new(res);
    assert_eq!(stream.status, StatusCode::OK);
    let (_, hello) = stream.expect("connected").await;
    assert_eq!(hello["userId"], id.as_str());
}

/// The WAL's current run: the salt of its header and how many frames carry
/// it. A WAL that starts over (only once every frame was copied into the
/// database) gets a new salt.
fn wal_run(db: &Path) -> ([u8; 8], u64) {
    let bytes = std::fs::read(wal_file(db)).unwrap_or_default();
    if bytes.len() < 32 {
        return ([0; 8], 0);
    }
    let page = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let salt: [u8; 8] = bytes[16..24].try_into().unwrap();
    let mut frames = 0;
    let mut at = 32;
    while at + 24 + page <= bytes.len() && bytes[at + 8..at + 16] == salt {
        frames += 1;
        at += 24 + page;
    }
    (salt, frames)
}

fn wal_bytes(db: &Path) -> u64 {
    std::fs::metadata(wal_file(db)).map_or(0, |m| m.len())
}

/// SQLite's WAL beside the database file `db`.
fn wal_file(db: &Path) -> std::path::PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// Earnings in the database file alone, without its WAL: what was copied
/// into it.
fn earnings_in_the_file(db: &Path) -> u64 {
    let copy = db.with_extension("copy.db");
    std::fs::copy(db, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.query_row("SELECT count(*) FROM earnings", [], |r| r.get(0))
        .unwrap()
}

/// A WAL left by a killed process is copied into the database before the
/// next one serves (its first request must not pay for it), nothing in it
/// is lost, and after a clean stop the database file alone holds every
/// write and no WAL is left.
#[tokio::test]
async fn a_wal_left_by_a_killed_server_is_folded_in_at_start_and_a_clean_stop_copies_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let secret = Some("process-secret-0123456789abcdefghijkl");
    let mut first = Server::start(&db, secret).await;
    let (_, token) = first.register().await;
    let post = |path: &str, body: serde_json::Value| {
        first
            .client
            .post(first.url(path))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let platform: serde_json::Value = post(
        "/api/platforms",
        json!({"name": "Upwork", "color": "#14a800"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    const WRITES: usize = 60;
    for i in 0..WRITES {
        let body = json!({"platformId": platform["id"], "date": "2024-01-15", "amount": i + 1});
        let res = post("/api/earnings", body).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    first.kill();
    let (left, frames) = wal_run(&db);
    assert!(frames > 0, "the killed server left a WAL");
    let left_bytes = wal_bytes(&db);
    assert!(
        left_bytes > 256 * 1024,
        "the killed server left a WAL of {left_bytes} bytes"
    );

    let mut second = Server::start(&db, secret).await;
    // Its start wrote in a WAL begun again: every frame left was copied.
    let (started, _) = wal_run(&db);
    assert_ne!(
        started, left,
        "the WAL at start is the one left ({frames} frames)"
    );
    // The WAL header and the start's own small write, nothing of the old.
    let started_bytes = wal_bytes(&db);
    assert!(
        started_bytes < 64 * 1024,
        "the WAL at start is {started_bytes} bytes (left: {left_bytes})"
    );
    let earnings: serde_json::Value = second
        .client
        .get(second.url("/api/earnings?limit=100"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = earnings["items"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, WRITES, "{earnings}");

    second.sigterm();
    let status = second.exits_within(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        earnings_in_the_file(&db),
        WRITES as u64,
        "a clean stop copies the WAL into the database"
    );
    assert_eq!(wal_bytes(&db), 0, "a clean stop leaves no WAL");
}
