//! The cluster's own look at a test database (`crate::kit::pg::TestDb`):
//! its listeners, as PostgreSQL sees them, and a way to cut one off.

use crate::kit::pg::TestDb;

impl TestDb {
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
