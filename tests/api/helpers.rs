//! The API suite's harness: `spawn_app` builds the real application in this
//! process, on a temporary SQLite file (or a fresh PostgreSQL database, see
//! `postgres_server`) and port 0, serves it on a real socket, and hands back
//! an HTTP client and the kit's SSE client (`crate::kit::sse`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use earntrack::domain::role::Role;
use earntrack::http::AppState;
use earntrack::{App, Config};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::kit::http;
pub use crate::kit::http::User;
use crate::kit::pg::TestDb;
pub use crate::kit::sse::Sse;

/// The PostgreSQL server when the suite runs on it
/// (`EARNTRACK_TEST_BACKEND=postgres`): `POSTGRES_URL`, or the local test
/// server. An unreachable one fails every test (`TestDb::create`).
pub fn postgres_server() -> Option<String> {
    if std::env::var("EARNTRACK_TEST_BACKEND").ok().as_deref() != Some("postgres") {
        return None;
    }
    Some(
        std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    )
}

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
    /// The PostgreSQL database of `spawn_app`, dropped with the app.
    db: Option<TestDb>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The configuration tests start from: a temporary SQLite file, port 0, a
/// fixed secret, and no environment.
pub fn test_config(dir: &TempDir) -> Config {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let mut config = Config::for_database(&url);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.jwt_secret = Some("api-test-secret-0123456789abcdefghij".parse().unwrap());
    config.rate_limit_per_min = 0;
    // Tests register many users from one address; the throttle's own tests
    // turn it on.
    config.auth_per_addr_per_min = 0;
    config.auth_per_email_per_min = 0;
    // Debug-built argon2 on a box running tests in parallel is slow: a
    // registration may queue for its hashing slot longer than a release
    // server's would.
    config.hash_wait_ms = 60_000;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    let db = match postgres_server() {
        Some(server) => Some(TestDb::create(&server).await),
        None => None,
    };
    if let Some(db) = &db {
        config.database_url = db.url.clone();
        config.db_pool = 3;
    }
    configure(&mut config);
    let mut app = start(config, dir).await;
    app.db = db;
    app
}

/// Start an app on `config` (its `dir` is kept alive with it).
pub async fn start(config: Config, dir: TempDir) -> TestApp {
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
        // Plain bodies, as most of the contract's tests read them
        // (tests/api/compression.rs asks for gzip itself).
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_gzip()
            .build()
            .unwrap(),
        streams: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .no_gzip()
            .build()
            .unwrap(),
        state,
        dir,
        db: None,
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

    pub async fn register(&self, email: &str) -> User {
        http::register(&self.client, &self.base, email).await
    }

    /// `POST /api/auth/login`, whatever it answers.
    pub async fn login(&self, email: &str, password: &str) -> Response {
        let body = json!({"email": email, "password": password});
        self.request(Method::POST, "/api/auth/login", None, Some(body))
            .await
    }

    /// A new user with a random email.
    pub async fn user(&self) -> User {
        http::user(&self.client, &self.base).await
    }

    /// `ADMIN_EMAIL`, registered, then made admin as `earntrack admin
    /// grant` does (the same function, on this server's database).
    pub async fn admin(&self) -> User {
        let user = http::register(&self.client, &self.base, http::ADMIN_EMAIL).await;
        earntrack::roles::set_role(&self.state.db, http::ADMIN_EMAIL, Role::Admin)
            .await
            .expect("granting admin");
        user
    }

    pub async fn platform(&self, user: &User, name: &str) -> Value {
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

    pub async fn earning(&self, user: &User, platform: &Value, amount: f64) -> Value {
        let body = json!({"platformId": platform["id"], "date": "2024-01-15", "hours": 2, "amount": amount});
        let res = self.post("/api/earnings", &user.token, body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    /// Open `/events` with a bearer token and extra query (`""` for none).
    pub async fn stream(&self, token: &str, query: &str) -> Sse {
        let res = self
            .streams
            .get(self.url(&format!("/events{query}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        Sse::new(res)
    }

    /// Open `/events` resuming with a `Last-Event-ID` header.
    pub async fn resume(&self, token: &str, last_event_id: &str) -> Sse {
        let res = self
            .streams
            .get(self.url("/events"))
            .bearer_auth(token)
            .header("Last-Event-ID", last_event_id)
            .send()
            .await
            .unwrap();
        Sse::new(res)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Then `db` drops, and with it the database.
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
    pub async fn stream_connected(&self, user: &User) -> (Sse, String) {
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
        // The new app takes the database over: it outlives the old one.
        let db = self.db.take();
        self.stop().await;
        drop(self);
        let mut config = test_config(&dir);
        if let Some(db) = &db {
            config.database_url = db.url.clone();
            config.db_pool = 3;
        }
        configure(&mut config);
        let mut app = start(config, dir).await;
        app.db = db;
        app
    }
}

impl TestApp {
    /// The whole `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let res = self.client.get(self.url("/metrics")).send().await.unwrap();
        res.text().await.unwrap()
    }

    /// The value of an unlabelled series in `/metrics` (0 when absent).
    /// The recorder is process-wide: compare before and after, never exact.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }
}
