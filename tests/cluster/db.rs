//! The cluster's own look at a test database (`crate::kit::pg::TestDb`):
//! its listeners, as PostgreSQL sees them, and a way to cut one off; rows
//! written behind the servers' backs.

use sqlx::{Connection, PgConnection};

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

    /// Terminate the backends named `application_name` (a listener or a
    /// notifier); how many.
    pub async fn terminate_connection(&self, application_name: &str) -> usize {
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

    /// `n` sent invoices of `user`, overdue since 2024-01-31, written in one
    /// statement (no server publishes anything for them); their ids.
    pub async fn overdue_invoices(&self, user: &str, n: i64) -> Vec<String> {
        let mut conn = PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database");
        let ids: Vec<(String,)> = sqlx::query_as(
            "INSERT INTO invoices (id, user_id, number, client, issue_date, due_date, amount_cents, \
             status, created_at, updated_at) \
             SELECT gen_random_uuid()::text, $1, 'INV-' || i, 'Acme', '2024-01-01', '2024-01-31', 10000, \
             'sent', 0, 0 FROM generate_series(1, $2) AS i RETURNING id",
        )
        .bind(user)
        .bind(n)
        .fetch_all(&mut conn)
        .await
        .expect("insert overdue invoices");
        ids.into_iter().map(|(id,)| id).collect()
    }
}
