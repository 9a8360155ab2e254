//! A PostgreSQL database per test. NOTIFY channels are per database, so a
//! database of its own keeps a test's cluster from hearing any other.

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

/// The server the suite runs on, from `POSTGRES_URL`.
pub fn server_url() -> Option<String> {
    std::env::var("POSTGRES_URL").ok().filter(|u| !u.is_empty())
}

/// `earntrack_cluster_<uuid>`, dropped (forcibly) when this guard goes, also
/// when the test panics.
pub struct TestDb {
    server: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create(server: &str) -> TestDb {
        let name = format!("earntrack_cluster_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(server)
            .await
            .expect("connect to POSTGRES_URL");
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let (base, _) = server
            .rsplit_once('/')
            .expect("POSTGRES_URL names a database");
        TestDb {
            server: server.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// A connection to the server's own database, to look at this one from
    /// outside (`pg_stat_activity`).
    pub async fn observer(&self) -> PgConnection {
        PgConnection::connect(&self.server)
            .await
            .expect("connect to POSTGRES_URL")
    }

    /// The `application_name`s of the cluster listeners connected to this
    /// database, with their backend pids.
    pub async fn listeners(&self) -> Vec<(String, i32)> {
        let mut conn = self.observer().await;
        sqlx::query_as(
            "SELECT application_name, pid FROM pg_stat_activity \
             WHERE datname = $1 AND application_name LIKE 'earntrack-listener-%'",
        )
        .bind(&self.name)
        .fetch_all(&mut conn)
        .await
        .expect("read pg_stat_activity")
    }

    /// Terminate the backends of listener `application_name`; how many.
    pub async fn terminate_listener(&self, application_name: &str) -> usize {
        let mut conn = self.observer().await;
        let killed: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = $2",
        )
        .bind(&self.name)
        .bind(application_name)
        .fetch_all(&mut conn)
        .await
        .expect("pg_terminate_backend");
        killed.iter().filter(|(done,)| *done).count()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime (or while it unwinds), where we
        // cannot block on it: a thread with a runtime of its own does the work.
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let drop = async {
                    let mut conn = PgConnection::connect(&server).await.ok()?;
                    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await
                        .ok()
                };
                if tokio::time::timeout(Duration::from_secs(10), drop)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                {
                    eprintln!("could not drop test database {name}");
                }
            });
        })
        .join();
    }
}
