//! The bus is a hint, the log is the truth: events leave the commit path,
//! and neither a hint that never leaves (its server died right after the
//! commit) nor a bus connection cut mid-burst costs an event, on any bus.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::kit::process::free_port;
use crate::kit::report;
use crate::server::{bus_kind, redis_url, BusKind, Cluster};
use crate::traffic::{assert_burst, eventually, Writer};

const BURST: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_whose_hints_never_leave_reach_the_other_servers_within_a_second() {
    // No server announces anything: each learns of the other's commits only
    // from the log's high-water marks, as it would of a server that died
    // between its commit and its NOTIFY.
    let Some(cluster) = Cluster::start(2, &[("EARNTRACK_TEST_SILENT_BUS", "true")]).await else {
        return;
    };
    let [a, b] = &cluster.servers[..] else {
        unreachable!()
    };
    let user = a.user().await;
    let platform = a.platform(&user).await;
    let (mut on_b, _) = b.stream(&user).await;
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let id = a.earning(&user, &platform, &format!("silent {i}")).await;
        let committed = Instant::now();
        let (_, data) = on_b.expect("earnings:new").await;
        let took = committed.elapsed();
        assert_eq!(data["id"], id.as_str());
        assert!(
            took < Duration::from_millis(1500),
            "event {i} took {took:?}"
        );
        worst = worst.max(took);
        on_b.expect("notification").await;
    }
    report(&format!(
        "an unannounced event reached the other server within {worst:?} (bound: 800 ms + one tick)"
    ));
}

/// A `nats-server` of the test's own (`-a 127.0.0.1 -p <port>`), which it
/// can kill and start again on the same port: the shared NATS of the suite
/// has no system account to kick a client out with, and killing it would
/// cut every other test's cluster. SIGKILLed when it goes.
struct NatsServer {
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    fn start() -> NatsServer {
        let mut server = NatsServer {
            port: free_port(),
            child: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start it (again) on its port and wait until it takes connections.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server runs already");
        let port = self.port.to_string();
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (the NATS bus suite needs the binary on PATH)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("nats-server on port {port} exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server takes no connections on port {port} after 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// SIGKILL and reap: every connection of it ends at once.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Cuts the bus connections of the cluster: on PostgreSQL, A's notifier;
/// on Redis, every subscriber and publisher connection (`CLIENT KILL`; the
/// Redis server is shared, so other clusters running now lose theirs too and
/// recover the same way); on NATS, every connection, by killing the test's
/// own `nats-server` and starting it again once both servers say they lost
/// it (`/readyz` 503: NATS's client would reconnect unseen).
async fn cut_the_bus(cluster: &Cluster, nats: Option<&mut NatsServer>) {
    match bus_kind() {
        BusKind::Postgres => {
            let a = &cluster.servers[0];
            let notifier = a
                .listener
                .replace("earntrack-listener-", "earntrack-notifier-");
            let terminated = cluster.db.terminate_connection(&notifier).await;
            assert_eq!(terminated, 1, "A's notifier connection was terminated");
        }
        BusKind::Redis => {
            let client = redis::Client::open(redis_url()).expect("a Redis URL");
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("Redis is up");
            for kind in ["pubsub", "normal"] {
                let killed: i64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg(kind)
                    .arg("SKIPME")
                    .arg("yes")
                    .query_async(&mut conn)
                    .await
                    .expect("CLIENT KILL");
                assert!(killed >= 1, "Redis {kind} connections were killed");
            }
        }
        BusKind::Nats => {
            let nats = nats.expect("the test's own nats-server");
            nats.kill();
            let cut = Instant::now();
            for server in &cluster.servers {
                eventually(
                    Duration::from_secs(5),
                    &format!("server {} sees its NATS gone (/readyz 503)", server.name),
                    || async {
                        (server.readyz().await == Some(StatusCode::SERVICE_UNAVAILABLE))
                            .then_some(())
                    },
                )
                .await;
            }
            nats.restart();
            report(&format!(
                "nats-server killed; both servers unready; started again after {:?}",
                cut.elapsed()
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_connections_cut_mid_burst_lose_and_repeat_nothing() {
    // On NATS the cluster runs on a server of this test's own, to kill.
    // (Declared first, it goes after the cluster.)
    let mut nats = (bus_kind() == BusKind::Nats).then(NatsServer::start);
    let url = nats.as_ref().map(NatsServer::url);
    let env: Vec<(&str, &str)> = url
        .iter()
        .map(|u| ("EARNTRACK_BUS_URL", u.as_str()))
        .collect();
    let Some(cluster) = Cluster::start(2, &env).await else {
        return;
    };
    let [a, b] = &cluster.servers[..] else {
        unreachable!()
    };
    let user = a.user().await;
    let platform = a.platform(&user).await;
    let (mut on_b, mut last_id) = b.stream(&user).await;
    let mut writer = Writer::spawn(a.api(), user.clone(), platform, BURST);

    writer.reached(BURST / 4).await;
    cut_the_bus(&cluster, nats.as_mut()).await;

    // A stream the server ends cleanly (a loaded debug build may end one
    // as too slow while its feeds catch up from the log) is resumed with
    // `Last-Event-ID`, as EventSource does: across it, too, nothing may be
    // lost or repeated.
    let mut events = Vec::new();
    let mut resumed = 0;
    while events.len() < BURST * 2 {
        match on_b.next_or_end(Duration::from_secs(10)).await {
            Some(event) => {
                last_id = event.id.clone();
                events.push(event);
            }
            None => {
                resumed += 1;
                assert!(resumed <= 3, "the stream on B ended {resumed} times");
                on_b = b.resume(&user, &last_id).await;
            }
        }
    }
    if resumed > 0 {
        report(&format!(
            "the stream on B ended and was resumed {resumed} time(s)"
        ));
    }
    let earnings = writer.finish().await;
    assert_burst(&events, &earnings);
    let extra = on_b.quiet_for(Duration::from_millis(1500)).await;
    assert!(extra.is_none(), "nothing more: {extra:?}");
}
