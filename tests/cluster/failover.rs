//! A server that goes away, killed or stopped, costs its clients nothing:
//! they resume on another server with their last ids, with no gap and no
//! duplicate, while writes go on elsewhere.

use std::time::{Duration, Instant};

use crate::server::{Cluster, Server};
use crate::traffic::{assert_burst, follow, Followed, Writer};

const CLIENTS: usize = 3;
const BURST: usize = 40;

struct Failover {
    clients: Vec<Followed>,
    earnings: Vec<String>,
    /// When A got its signal.
    signalled: Instant,
}

/// `CLIENTS` streams on A; a burst of earnings through B; `stop` A a
/// quarter into it; each client resumes on server `resume_on`.
async fn lose_a_mid_burst(
    cluster: &mut Cluster,
    stop: fn(&mut Server),
    resume_on: usize,
) -> Failover {
    let (a, b) = (&cluster.servers[0], &cluster.servers[1]);
    let user = b.user().await;
    let platform = b.platform(&user).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (sse, last_id) = a.stream(&user).await;
        let fallback = cluster.servers[resume_on].api();
        clients.push(tokio::spawn(follow(
            user.clone(),
            sse,
            last_id,
            fallback,
            BURST * 2,
        )));
    }
    let mut writer = Writer::spawn(b.api(), user.clone(), platform, BURST);

    writer.reached(BURST / 4).await;
    stop(&mut cluster.servers[0]);
    let signalled = Instant::now();

    let earnings = writer.finish().await;
    let mut followed = Vec::new();
    for client in clients {
        followed.push(client.await.expect("a client does not panic"));
    }
    Failover {
        clients: followed,
        earnings,
        signalled,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_server_killed_mid_burst_resume_on_another_with_nothing_lost_or_duplicated() {
    let Some(mut cluster) = Cluster::start(3, &[]).await else {
        return;
    };

    let run = lose_a_mid_burst(&mut cluster, Server::kill, 1).await;

    for (i, client) in run.clients.iter().enumerate() {
        assert_eq!(
            client.ends.len(),
            1,
            "client {i} lost A once: {:?}",
            client.ends
        );
        assert_burst(&client.events, &run.earnings);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_a_server_ends_its_streams_cleanly_exits_zero_and_its_clients_resume_elsewhere_without_gap(
) {
    let Some(mut cluster) = Cluster::start(3, &[]).await else {
        return;
    };

    let run = lose_a_mid_burst(&mut cluster, Server::terminate, 2).await;
    let status = cluster.servers[0]
        .exits_within(Duration::from_secs(10).saturating_sub(run.signalled.elapsed()))
        .await;

    assert_eq!(status.code(), Some(0), "A's exit status");
    for (i, client) in run.clients.iter().enumerate() {
        let [end] = &client.ends[..] else {
            panic!("client {i} lost A once: {:?}", client.ends)
        };
        assert!(
            end.clean,
            "client {i}'s stream ended cleanly, not: {}",
            end.why
        );
        let after = end.at.duration_since(run.signalled);
        assert!(
            after < Duration::from_secs(2),
            "client {i}'s stream ended {after:?} after SIGTERM"
        );
        assert_burst(&client.events, &run.earnings);
    }
}
