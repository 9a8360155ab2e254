//! A PostgreSQL database per test. NOTIFY channels are per database, so a
//! database of its own (not a schema) keeps a test from hearing any other.

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

/// `POSTGRES_URL`, for a test that cannot run without PostgreSQL. When it is
/// unset, the test fails in CI (a skipped test there would pass without
/// testing anything) and elsewhere is skipped, saying so: `None`.
pub fn required_url() -> Option<String> {
    if let Some(url) = std::env::var("POSTGRES_URL").ok().filter(|u| !u.is_empty()) {
        return Some(url);
    }
    let test = super::test_name();
    assert!(
        !super::in_ci(),
        "POSTGRES_URL unset in CI ({test}): this test needs PostgreSQL \
         (e.g. POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test)"
    );
    super::report(&format!("skipped: POSTGRES_URL unset ({test})"));
    None
}

/// `earntrack_test_<uuid>` on the server of `POSTGRES_URL`, dropped
/// (forcibly: the app may still hold connections) when this guard goes, also
/// when the test panics.
pub struct TestDb {
    server: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A new empty database on `server` (a URL whose database we may
    /// connect to and create databases from). An unreachable server fails
    /// the test: whoever set the URL wants these tests to run.
    pub async fn create(server: &str) -> TestDb {
        let name = format!("earntrack_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect(server).await;
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
        connect(&self.server).await
    }
}

async fn connect(server: &str) -> PgConnection {
    PgConnection::connect(server).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL unreachable at POSTGRES_URL ({}): {e}",
            super::test_name()
        )
    })
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
