//! Hardening (issue #13): a weak signing secret is refused, metric labels
//! stay bounded whatever method a client sends, and the lean stream path
//! says that it closes the connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use reqwest::StatusCode;

use crate::helpers::{assert_api_error, spawn_app};
use crate::kit::process::Process;

#[tokio::test]
async fn a_jwt_secret_under_32_bytes_is_refused_at_start_up_with_a_clear_message() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("s.db").display());
    for secret in ["", "weak-jwt-secret", "0123456789abcdef0123456789abcde"] {
        // Act
        let mut server = Process::spawn(
            "weak-secret",
            &[("DATABASE_URL", &database), ("JWT_SECRET", secret)],
        );
        let status = server.exits_within(Duration::from_secs(20)).await;

        // Assert
        assert!(
            !status.success(),
            "started with a {}-byte secret",
            secret.len()
        );
        let said = server.output();
        assert!(
            said.contains("JWT_SECRET") && said.contains("at least 32"),
            "no clear message: {said}"
        );
        assert!(
            secret.is_empty() || !said.contains(secret),
            "the secret was echoed"
        );
    }
}

#[tokio::test]
async fn unknown_request_methods_share_one_metric_label() {
    // Arrange
    let app = spawn_app().await;
    let long_method = "X".repeat(4000);

    // Act: 50 requests, each with a method of its own.
    for i in 0..50 {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "{long_method}{i} /api/platforms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    }
    let text = app.metrics_text().await;

    // Assert (the recorder is process-wide: other tests' series are there too)
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("earntrack_http_requests_total{"))
        .collect();
    assert!(
        series.iter().all(|l| !l.contains("XXXX")),
        "a client-chosen method became a label"
    );
    assert!(
        series.iter().any(|l| l.contains("method=\"other\"")),
        "odd methods are counted as other:\n{}",
        series.join("\n")
    );
}

#[tokio::test]
async fn a_lean_http_1_1_stream_says_connection_close() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.user().await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();

    // Act
    let head = format!(
        "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        alice.token
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the head arrives")
            .unwrap();
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
    }

    // Assert
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let head = text.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
}

#[tokio::test]
async fn an_admin_event_may_not_use_the_servers_own_event_names() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;

    // Act and Assert: each reserved name is a validation error naming the field.
    for name in [
        "connected",
        "sync:reset",
        "auth:expired",
        "earnings:new",
        "expenses:new",
        "invoices:updated",
        "platforms:new",
        "notification",
        "notification:read",
    ] {
        let body = serde_json::json!({"target": {"user": alice.id}, "event": name, "data": {}});
        let res = app.post("/api/admin/events", &admin.token, body).await;
        let error =
            assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            error["error"]["fields"]["event"].is_string(),
            "{name}: {error}"
        );
    }
    // A name of the admin's own still goes through, and nothing forged came before it.
    let body =
        serde_json::json!({"target": {"user": alice.id}, "event": "deploy:done", "data": {}});
    let res = app.post("/api/admin/events", &admin.token, body).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let (event, _) = stream.expect("deploy:done").await;
    assert_eq!(event.event, "deploy:done");
}
