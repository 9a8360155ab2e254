//! The bus is a hint, the log is the truth: events leave the commit path,
//! and neither a hint that never leaves (its server died right after the
//! commit) nor a bus connection cut mid-burst costs an event, on either
//! bus.

use std::time::{Duration, Instant};

use crate::kit::report;
use crate::server::{bus_kind, redis_url, BusKind, Cluster};
use crate::traffic::{assert_burst, Writer};

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

/// Cuts the bus connections of the cluster: on PostgreSQL, A's notifier;
/// on Redis, every subscriber and publisher connection (`CLIENT KILL`; the
/// Redis server is shared, so other clusters running now lose theirs too and
/// recover the same way).
async fn cut_the_bus(cluster: &Cluster) {
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_connections_cut_mid_burst_lose_and_repeat_nothing() {
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let [a, b] = &cluster.servers[..] else {
        unreachable!()
    };
    let user = a.user().await;
    let platform = a.platform(&user).await;
    let (mut on_b, _) = b.stream(&user).await;
    let mut writer = Writer::spawn(a.api(), user.clone(), platform, BURST);

    writer.reached(BURST / 4).await;
    cut_the_bus(&cluster).await;

    let mut events = Vec::new();
    for _ in 0..BURST * 2 {
        events.push(on_b.event_within(Duration::from_secs(10)).await);
    }
    let earnings = writer.finish().await;
    assert_burst(&events, &earnings);
    let extra = on_b.quiet_for(Duration::from_millis(1500)).await;
    assert!(extra.is_none(), "nothing more: {extra:?}");
}
