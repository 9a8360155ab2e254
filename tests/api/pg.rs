//! Per-test PostgreSQL databases. NOTIFY channels are per database, so a
//! database per test (not a schema) keeps tests from hearing each other.

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

/// The server URL when the suite runs on PostgreSQL.
pub fn server_url() -> Option<String> {
    if std::env::var("EARNTRACK_TEST_BACKEND").ok().as_deref() != Some("postgres") {
        return None;
    }
    Some(
        std::env::var("POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    )
}

/// `postgres://…/<name>` for the same server as `url`.
fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("POSTGRES_URL has a database part");
    format!("{base}/{name}")
}

/// A new empty database, or `None` on the SQLite backend.
pub async fn fresh_database() -> Option<String> {
    let server = server_url()?;
    let name = format!("earntrack_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&server)
        .await
        .expect("connect to POSTGRES_URL");
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    Some(with_database(&server, &name))
}

/// Drop a test database (in the background; forcibly, since the app's pool
/// may still be closing).
pub fn drop_database(url: &str) {
    let Some(server) = server_url() else { return };
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    if !name.starts_with("earntrack_test_") {
        return;
    }
    let name = name.to_owned();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(mut conn) = PgConnection::connect(&server).await {
                let _ = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        });
    })
    .join();
}
