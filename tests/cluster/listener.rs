//! A server whose listener connection is cut (`pg_terminate_backend`)
//! reconnects it, reads from the log what it missed meanwhile, and turns
//! ready again: its streams lose nothing.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::server::{skip_unless_postgres_bus, Cluster};
use crate::traffic::{assert_burst, eventually, Writer};

const BURST: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_listener_is_terminated_mid_burst_still_delivers_every_event_once_in_order()
{
    if skip_unless_postgres_bus() {
        return;
    }
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let [a, b] = &cluster.servers[..] else {
        unreachable!()
    };
    let user = a.user().await;
    let platform = a.platform(&user).await;
    let (mut on_b, _) = b.stream(&user).await;
    let old_pid = cluster
        .db
        .listeners()
        .await
        .into_iter()
        .find(|(name, _)| *name == b.listener);
    let mut writer = Writer::spawn(a.api(), user.clone(), platform, BURST);

    writer.reached(BURST / 4).await;
    let terminated = cluster.db.terminate_connection(&b.listener).await;
    let cut = Instant::now();

    assert_eq!(terminated, 1, "B's listener connection was terminated");
    let mut events = Vec::new();
    for _ in 0..BURST * 2 {
        events.push(on_b.event_within(Duration::from_secs(10)).await);
    }
    let earnings = writer.finish().await;
    assert_burst(&events, &earnings);
    let extra = on_b.quiet_for(Duration::from_millis(300)).await;
    assert!(extra.is_none(), "nothing more: {extra:?}");
    eventually(
        Duration::from_secs(10),
        "B's /readyz is 200 again",
        || async { (b.readyz().await == Some(StatusCode::OK)).then_some(()) },
    )
    .await;
    let new_pid = eventually(
        Duration::from_secs(10),
        "B's listener reconnects",
        || async {
            let listeners = cluster.db.listeners().await;
            listeners
                .into_iter()
                .find(|l| l.0 == b.listener && Some(l) != old_pid.as_ref())
        },
    )
    .await;
    crate::kit::report(&format!(
        "B's listener: pid {:?} terminated, pid {} connected; all delivered {:?} after the cut",
        old_pid.map(|l| l.1),
        new_pid.1,
        cut.elapsed()
    ));
}
