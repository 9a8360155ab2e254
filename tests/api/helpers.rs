//! Test harness: `spawn_app` builds the real application on a temporary
#![allow(dead_code)]
//! SQLite file and port 0, serves it on a real socket, and hands back an
//! HTTP client and an SSE client (`eventsource-stream`, a real SSE parser).

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use earntrack::http::AppState;
use earntrack::{App, Config};
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    /// For streams: a fresh connection each (no idle pool), as an
    /// EventSource usually gets, so streams take the server's lean path
    /// (`http::fast_path`). `client` reuses connections, so its streams
    /// often go through the router.
    pub streams: reqwest::Client,
    pub state: AppState,
    pub dir: TempDir,
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// The configuration tests start from: a temporary SQLite file, port 0, a
/// fixed secret, and no environment.
pub fn test_config(dir: &TempDir) -> Config {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let mut config = Config::for_database(&url);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.jwt_secret = Some("test-secret".parse().unwrap());
    config.admin_emails = vec!["admin@example.com".into()];
    config.rate_limit_per_min = 0;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    if let Some(url) = crate::pg::fresh_database().await {
        config.database_url = url;
        config.db_pool = 3;
    }
    configure(&mut config);
    start(config, dir).await
}

/// Start an app on `config` (its `dir` is kept alive with it).
pub async fn start(config: Config, dir: TempDir) -> TestApp {
    let database_url = config.database_url.clone();
    let app = App::build(config).await.expect("app builds");
    let addr = app.local_addr();
    let state = app.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        streams: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        state,
        dir,
        database_url,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stop the server (as on SIGTERM) and wait until it has drained.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("server drains within 10 s")
                .expect("server task")
                .expect("server exits cleanly");
        }
    }

    /// A request with an optional bearer token and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    pub async fn register(&self, email: &str) -> TestUser {
        let res = self
            .request(
                Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "correct horse"})),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "register {email}");
        let body: Value = res.json().await.unwrap();
        TestUser {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            email: email.to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// A new user with a random email.
    pub async fn user(&self) -> TestUser {
        self.register(&format!(
            "user-{}@example.com",
            uuid::Uuid::new_v4().simple()
        ))
        .await
    }

    pub async fn admin(&self) -> TestUser {
        self.register("admin@example.com").await
    }

    pub async fn platform(&self, user: &TestUser, name: &str) -> Value {
        let res = self
            .post(
                "/api/platforms",
                &user.token,
                json!({"name": name, "color": "#14a800"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    pub async fn earning(&self, user: &TestUser, platform: &Value, amount: f64) -> Value {
        let body = json!({"platformId": platform["id"], "date": "2024-01-15", "hours": 2, "amount": amount});
        let res = self.post("/api/earnings", &user.token, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    /// Open `/events` with a bearer token and extra query (`""` for none).
    pub async fn stream(&self, token: &str, query: &str) -> SseClient {
        let res = self
            .streams
            .get(self.url(&format!("/events{query}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        SseClient::new(res)
    }

    /// Open `/events` resuming with a `Last-Event-ID` header.
    pub async fn resume(&self, token: &str, last_event_id: &str) -> SseClient {
        let res = self
            .streams
            .get(self.url("/events"))
            .bearer_auth(token)
            .header("Last-Event-ID", last_event_id)
            .send()
            .await
            .unwrap();
        SseClient::new(res)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        crate::pg::drop_database(&self.database_url);
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// An SSE client over a real response body.
pub struct SseClient {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    events: EventStream,
}

impl SseClient {
    pub fn new(res: Response) -> Self {
        let status = res.status();
        let headers = res.headers().clone();
        let events = res
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed();
        SseClient {
            status,
            headers,
            events,
        }
    }

    /// The next event, or a panic after `secs` seconds.
    pub async fn next_within(&mut self, secs: u64) -> Event {
        match tokio::time::timeout(Duration::from_secs(secs), self.events.next()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(err))) => panic!("stream error: {err}"),
            Ok(None) => panic!("stream ended"),
            Err(_) => panic!("no event within {secs} s"),
        }
    }

    pub async fn next(&mut self) -> Event {
        self.next_within(5).await
    }

    /// The next event, asserting its name; returns the envelope's `data`.
    pub async fn expect(&mut self, name: &str) -> (Event, Value) {
        let event = self.next().await;
        assert_eq!(event.event, name, "expected {name}, got {event:?}");
        let envelope: Value = serde_json::from_str(&event.data).expect("data is JSON");
        assert_eq!(envelope["event"], name);
        let data = envelope["data"].clone();
        (event, data)
    }

    /// `None` when no event comes within `millis`; the event otherwise.
    pub async fn quiet_for(&mut self, millis: u64) -> Option<Event> {
        match tokio::time::timeout(Duration::from_millis(millis), self.events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            Ok(Some(Err(_))) | Ok(None) | Err(_) => None,
        }
    }

    /// True when the server ends the stream within `secs`.
    pub async fn ends_within(&mut self, secs: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }
}

impl SseClient {
    /// The next event, or `None` when the server ends the stream cleanly
    /// within `secs`; a transport error or a timeout panics. Lets a test tell
    /// a clean end (resume with `Last-Event-ID`) from a broken connection.
    pub async fn next_or_end(&mut self, secs: u64) -> Option<Event> {
        match tokio::time::timeout(Duration::from_secs(secs), self.events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            Ok(Some(Err(err))) => panic!("stream error: {err}"),
            Ok(None) => None,
            Err(_) => panic!("neither an event nor the end within {secs} s"),
        }
    }
}

/// Assert the contract's error shape `{"error":{"code","message"}}` with this
/// status and code; returns the body (for `fields`).
pub async fn assert_api_error(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "status of {}", res.url());
    let body: Value = res.json().await.expect("an error body is JSON");
    assert_eq!(body["error"]["code"], code, "error body: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error has a human message: {body}");
    body
}

impl TestApp {
    /// A fresh `/events` stream of `user`, past its `connected` event, with
    /// that event's `id:` (the user's position when the stream opened).
    pub async fn stream_connected(&self, user: &TestUser) -> (SseClient, String) {
        let mut stream = self.stream(&user.token, "").await;
        assert_eq!(stream.status, StatusCode::OK, "stream of {}", user.email);
        let (connected, _) = stream.expect("connected").await;
        assert!(
            !connected.id.is_empty(),
            "a fresh stream's connected carries an id"
        );
        (stream, connected.id)
    }
}

impl TestApp {
    /// Stop this server (as on SIGTERM) and start a new one on the same
    /// database and folder, on either backend.
    pub async fn restart_with(mut self, configure: impl FnOnce(&mut Config)) -> TestApp {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        // Taking the URL also keeps `Drop` from dropping a PostgreSQL database.
        let database_url = std::mem::take(&mut self.database_url);
        self.stop().await;
        drop(self);
        let mut config = test_config(&dir);
        if crate::pg::server_url().is_some() {
            config.database_url = database_url;
            config.db_pool = 3;
        }
        configure(&mut config);
        start(config, dir).await
    }
}

impl TestApp {
    /// The value of an unlabelled series in `/metrics` (0 when absent).
    /// The recorder is process-wide: compare before and after, never exact.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }
}
