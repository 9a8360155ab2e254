//! The bus is a hint, the log is the truth: events leave the commit path,
//! and neither a hint that never leaves (its server died right after the
//! commit) nor a notifier connection cut mid-burst costs an event.

use std::time::{Duration, Instant};

use crate::kit::report;
use crate::server::Cluster;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_connection_terminated_mid_burst_loses_and_repeats_nothing() {
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
    // The writing server's own connection for NOTIFY, found by its name.
    let notifier = a
        .listener
        .replace("earntrack-listener-", "earntrack-notifier-");
    let terminated = cluster.db.terminate_connection(&notifier).await;
    assert_eq!(terminated, 1, "A's notifier connection was terminated");

    let mut events = Vec::new();
    for _ in 0..BURST * 2 {
        events.push(on_b.event_within(Duration::from_secs(10)).await);
    }
    let earnings = writer.finish().await;
    assert_burst(&events, &earnings);
    let extra = on_b.quiet_for(Duration::from_millis(1500)).await;
    assert!(extra.is_none(), "nothing more: {extra:?}");
}
