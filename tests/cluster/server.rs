//! Real `earntrack` processes forming a cluster on one test database.
//!
//! - `Cluster::start` runs the servers one after the other, each on a port
//!   that was free a moment ago, and waits for `/readyz` 200 (which, in a
//!   cluster, means its listener is connected). Starting them in turn also
//!   tells us which `earntrack-listener-*` connection belongs to which one.
//! - Each is a `crate::kit::process::Process`: its output is captured and
//!   printed when a test fails. Servers are killed (SIGKILL) when the
//!   cluster goes; before the database, so they are not left retrying it.
//! - The bus is PostgreSQL's unless `EARNTRACK_TEST_BUS=redis`, which runs
//!   the same tests on Redis pub/sub (`REDIS_URL`, default
//!   redis://127.0.0.1:6379/), or `EARNTRACK_TEST_BUS=nats`, on NATS core
//!   pub/sub (`NATS_URL`, default nats://127.0.0.1:4222); `.ci/run` runs
//!   the suite all three ways.
//! - At most `PARALLEL` clusters run at once: every server holds a few
//!   connections of a PostgreSQL with 100 in all, and tests that measure
//!   latency should not fight over two CPUs with ten others.

use std::net::SocketAddr;
use std::ops::Deref;
use std::process::ExitStatus;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::kit::http;
pub use crate::kit::http::User;
use crate::kit::pg::{self, TestDb};
use crate::kit::process::{self, Process};
use crate::kit::sse::Sse;

const PARALLEL: usize = 2;
static SLOTS: Semaphore = Semaphore::const_new(PARALLEL);

/// How a REST call may take at most (streams have no overall timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP face of one server; cheap to clone into tasks.
#[derive(Clone)]
pub struct Api {
    pub name: &'static str,
    pub addr: SocketAddr,
    client: reqwest::Client,
    database_url: std::sync::Arc<str>,
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .timeout(REQUEST_TIMEOUT)
    }

    async fn send(&self, request: RequestBuilder) -> Response {
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to server {}: {e}", self.name))
    }

    /// `path` with `body`, asserting `status`; the response body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        status: StatusCode,
    ) -> Value {
        let mut request = self.request(method.clone(), path, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let res = self.send(request).await;
        let got = res.status();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(got, status, "{method} {path} on {}: {text}", self.name);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn get(&self, path: &str, token: &str) -> Value {
        self.call(Method::GET, path, token, None, StatusCode::OK)
            .await
    }

    /// A new user with a random email.
    pub async fn user(&self) -> User {
        http::user(&self.client, &self.url("")).await
    }

    /// `ADMIN_EMAIL`, registered here, then made admin with the binary's
    /// `earntrack admin grant` on the cluster's database.
    pub async fn admin(&self) -> User {
        let user = http::register(&self.client, &self.url(""), http::ADMIN_EMAIL).await;
        process::grant_admin(&self.database_url, http::ADMIN_EMAIL).await;
        user
    }

    /// A platform of `user`'s, its id. (It publishes `platforms:new`: make
    /// it before opening the streams a test counts.)
    pub async fn platform(&self, user: &User) -> String {
        let body = json!({"name": "Upwork", "color": "#14a800"});
        let platform = self
            .call(
                Method::POST,
                "/api/platforms",
                &user.token,
                Some(body),
                StatusCode::CREATED,
            )
            .await;
        platform["id"].as_str().expect("platform.id").to_owned()
    }

    /// A new earning of `user`'s with these `notes`; its id.
    pub async fn earning(&self, user: &User, platform: &str, notes: &str) -> String {
        let body = json!({"platformId": platform, "date": "2024-01-15", "hours": 2, "amount": 100.5, "notes": notes});
        let earning = self
            .call(
                Method::POST,
                "/api/earnings",
                &user.token,
                Some(body),
                StatusCode::CREATED,
            )
            .await;
        earning["id"].as_str().expect("earning.id").to_owned()
    }

    /// Change an earning's notes and amount.
    pub async fn update(&self, user: &User, earning: &str, notes: &str, amount: f64) {
        let body = json!({"notes": notes, "amount": amount});
        self.call(
            Method::PATCH,
            &format!("/api/earnings/{earning}"),
            &user.token,
            Some(body),
            StatusCode::OK,
        )
        .await;
    }

    /// `GET /events` as is: the caller checks the status.
    pub async fn open(&self, token: &str, last_event_id: Option<&str>) -> Response {
        let mut request = self.client.get(self.url("/events")).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        self.send(request).await
    }

    /// A fresh stream, past its `connected`, and that event's `id:` (the
    /// user's position when it opened).
    pub async fn stream(&self, user: &User) -> (Sse, String) {
        let res = self.open(&user.token, None).await;
        assert_eq!(res.status(), StatusCode::OK, "stream on {}", self.name);
        let mut sse = Sse::new(res);
        let (connected, _) = sse.expect("connected").await;
        assert!(
            !connected.id.is_empty(),
            "a fresh stream's connected has an id"
        );
        (sse, connected.id)
    }

    /// A stream resumed after `last_event_id` with the header, past its
    /// `connected`.
    pub async fn resume(&self, user: &User, last_event_id: &str) -> Sse {
        let res = self.open(&user.token, Some(last_event_id)).await;
        assert_eq!(res.status(), StatusCode::OK, "resume on {}", self.name);
        let mut sse = Sse::new(res);
        sse.expect("connected").await;
        sse
    }

    /// `/readyz`'s status, `None` when nothing answers.
    pub async fn readyz(&self) -> Option<StatusCode> {
        let request = self
            .client
            .get(self.url("/readyz"))
            .timeout(REQUEST_TIMEOUT);
        request.send().await.ok().map(|r| r.status())
    }

    /// `{userId: connections}` and `total` of `GET /api/admin/connections`.
    pub async fn connections(&self, admin: &User) -> (u64, Vec<(String, u64)>) {
        let body = self.get("/api/admin/connections", &admin.token).await;
        let users = body["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| {
                let id = u["userId"].as_str().expect("userId").to_owned();
                (id, u["connections"].as_u64().expect("connections"))
            })
            .collect();
        (body["total"].as_u64().expect("total"), users)
    }
}

/// One `earntrack` process of the cluster.
pub struct Server {
    api: Api,
    process: Process,
    /// The `application_name` of its cluster listener connection.
    pub listener: String,
}

impl Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// SIGKILL: gone at once, no goodbye to its clients or to the cluster.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM: the clean stop.
    pub fn terminate(&mut self) {
        self.process.signal("TERM");
    }

    /// The exit status, or a panic when it still runs after `within`.
    pub async fn exits_within(&mut self, within: Duration) -> ExitStatus {
        self.process.exits_within(within).await
    }

    pub fn output(&self) -> String {
        self.process.output()
    }
}

/// Servers A, B, C… on one fresh database.
pub struct Cluster {
    // Fields drop in this order: servers first, then the database.
    pub servers: Vec<Server>,
    pub db: TestDb,
    _slot: SemaphorePermit<'static>,
}

impl Cluster {
    /// `n` servers with the suite's environment plus `env`; `None` (after
    /// saying so) when `POSTGRES_URL` is unset outside CI
    /// (`crate::kit::pg::required_url`).
    pub async fn start(n: usize, env: &[(&str, &str)]) -> Option<Cluster> {
        let postgres = pg::required_url()?;
        let slot = SLOTS.acquire().await.expect("the semaphore stays open");
        let db = TestDb::create(&postgres).await;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a client");
        let mut cluster = Cluster {
            servers: Vec::new(),
            db,
            _slot: slot,
        };
        for name in ["A", "B", "C", "D"].into_iter().take(n) {
            let env = server_env(&cluster.db.url, env);
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let process = Process::start(name, &env).await;
            cluster.servers.push(Server {
                api: Api {
                    name,
                    addr: process.addr,
                    client: client.clone(),
                    database_url: cluster.db.url.as_str().into(),
                },
                process,
                listener: String::new(),
            });
            if bus_kind() != BusKind::Postgres {
                continue;
            }
            // Ready means its listener is connected: the one we do not know
            // yet is its own.
            let known: Vec<String> = cluster.servers.iter().map(|s| s.listener.clone()).collect();
            let mut fresh: Vec<String> = (cluster.db.listeners().await)
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| !known.contains(name))
                .collect();
            assert_eq!(fresh.len(), 1, "server {name} has one listener: {fresh:?}");
            cluster.servers.last_mut().expect("just pushed").listener = fresh.remove(0);
        }
        Some(cluster)
    }

    pub fn apis(&self) -> Vec<Api> {
        self.servers.iter().map(Server::api).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
        if std::thread::panicking() {
            for server in &self.servers {
                eprintln!(
                    "----- server {} ({}) -----\n{}",
                    server.name,
                    server.addr,
                    server.output()
                );
            }
        }
    }
}

/// The bus the cluster tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    Postgres,
    Redis,
    Nats,
}

pub fn bus_kind() -> BusKind {
    match std::env::var("EARNTRACK_TEST_BUS").as_deref() {
        Ok("redis") => BusKind::Redis,
        Ok("nats") => BusKind::Nats,
        _ => BusKind::Postgres,
    }
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("NATS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned())
}

/// True (after saying so) when this test is about the PostgreSQL bus's own
/// connections and the suite runs on another bus.
pub fn skip_unless_postgres_bus() -> bool {
    if bus_kind() == BusKind::Postgres {
        return false;
    }
    crate::kit::report(&format!(
        "skipped on the {:?} bus: this test cuts a PostgreSQL bus connection ({})",
        bus_kind(),
        crate::kit::test_name()
    ));
    true
}

/// What every server of a cluster runs with, then the test's `env`.
fn server_env<'a>(database_url: &'a str, env: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = vec![
        ("DATABASE_URL", database_url),
        ("JWT_SECRET", "cluster-secret-0123456789abcdefghijkl"),
        ("EARNTRACK_DB_POOL", "3"),
        ("EARNTRACK_RATE_LIMIT_PER_MIN", "0"),
        ("EARNTRACK_AUTH_PER_ADDR_PER_MIN", "0"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    match bus_kind() {
        BusKind::Postgres => {}
        BusKind::Redis => all.push(("EARNTRACK_BUS_URL".into(), redis_url())),
        BusKind::Nats => all.push(("EARNTRACK_BUS_URL".into(), nats_url())),
    }
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all
}
