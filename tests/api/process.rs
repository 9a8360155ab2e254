//! The real binary as operators run it: configuration from the environment,
//! SIGTERM, what reaches its logs, and a restart on the same database file.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::helpers::SseClient;

/// `earntrack` running as a child process, its stdout and stderr captured.
struct Server {
    child: Child,
    addr: SocketAddr,
    client: reqwest::Client,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn capture(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    output: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut output = output.lock().unwrap();
            output.push_str(&line);
            output.push('\n');
        }
    })
}

impl Server {
    /// Start the binary on `db` (SQLite) with `RUST_LOG=info` and wait until
    /// `/readyz` answers 200. `jwt_secret: None` leaves `JWT_SECRET` unset.
    async fn start(db: &Path, jwt_secret: Option<&str>) -> Server {
        Server::start_logging(db, jwt_secret, "info").await
    }

    async fn start_logging(db: &Path, jwt_secret: Option<&str>, rust_log: &str) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_earntrack"));
        for (key, _) in std::env::vars() {
            if key.starts_with("EARNTRACK_")
                || ["DATABASE_URL", "JWT_SECRET", "RUST_LOG"].contains(&key.as_str())
            {
                command.env_remove(key);
            }
        }
        command
            .env("EARNTRACK_ADDR", addr.to_string())
            .env("DATABASE_URL", format!("sqlite://{}", db.display()))
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(secret) = jwt_secret {
            command.env("JWT_SECRET", secret);
        }
        let mut child = command.spawn().expect("the earntrack binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            capture(child.stdout.take().unwrap(), output.clone()),
            capture(child.stderr.take().unwrap(), output.clone()),
        ];
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(35))
            .build()
            .unwrap();
        let mut server = Server {
            child,
            addr,
            client,
            output,
            readers,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(res) = self.client.get(self.url("/readyz")).send().await {
                if res.status() == StatusCode::OK {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "earntrack exited with {status} before ready:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not ready within 20 s:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    async fn register(&self) -> (String, String) {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let res = self
            .client
            .post(self.url("/api/auth/register"))
            .json(&json!({"email": email, "password": "correct horse"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        (
            body["user"]["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn stream(&self, token: &str) -> SseClient {
        let res = self
            .client
            .get(self.url("/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let mut stream = SseClient::new(res);
        assert_eq!(stream.status, StatusCode::OK);
        stream.expect("connected").await;
        stream
    }

    fn sigterm(&self) {
        self.signal("TERM");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit, then for the pipes to be drained.
    async fn exits_within(&mut self, within: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("still running after {within:?}:\n{}", self.output()),
        };
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        status
    }
}

#[tokio::test]
async fn sigterm_or_sigint_ends_streams_cleanly_answers_long_polls_and_exits_zero() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(&dir.path().join("p.db"), Some("process-secret")).await;
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
                stream.next_or_end(2).await.is_none(),
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
    let mut server =
        Server::start_logging(&dir.path().join("p.db"), Some("process-secret"), "trace").await;
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
    let mut stream = SseClient::new(res);
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
    let mut stream = SseClient::new(res);
    assert_eq!(stream.status, StatusCode::OK);
    let (_, hello) = stream.expect("connected").await;
    assert_eq!(hello["userId"], id.as_str());
}
