//! The writer's page cache (`db::page_cache`) on a real SQLite database: a
//! process of its own, so the wrapper is in place before SQLite starts.
//! Commits after page splits skip the truncate walk; a rolled-back
//! transaction that grew the file still has its pages dropped; the
//! database stays intact through both.

use std::sync::atomic::Ordering;

use earntrack::db::page_cache::{self, TRUNCATES_PASSED, TRUNCATES_SKIPPED};
use rusqlite::Connection;

#[test]
fn commits_skip_the_walk_and_rollbacks_still_truncate() {
    assert!(page_cache::install(), "installed before SQLite started");
    let dir = std::env::temp_dir().join(format!("earntrack-pcache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         CREATE TABLE t (id TEXT PRIMARY KEY, user TEXT NOT NULL, body TEXT NOT NULL); \
         CREATE INDEX t_by_user ON t (user, id);",
    )
    .unwrap();
    let mut kept = 0u64;
    let mut seed = 7u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    for round in 0..300 {
        let rolled_back = round % 5 == 4;
        conn.execute_batch("BEGIN").unwrap();
        // Random keys split leaves all over both b-trees (balance_nonroot
        // renumbers through the temporary key); a rolled-back round adds
        // enough to grow the file.
        let rows = if rolled_back { 400 } else { 20 };
        for _ in 0..rows {
            let body = "x".repeat(100 + (next() % 300) as usize);
            conn.execute(
                "INSERT INTO t (id, user, body) VALUES (?1, ?2, ?3)",
                (
                    format!("{:016x}", next()),
                    format!("u{}", next() % 500),
                    body,
                ),
            )
            .unwrap();
        }
        if rolled_back {
            conn.execute_batch("ROLLBACK").unwrap();
        } else {
            conn.execute_batch("COMMIT").unwrap();
            kept += rows;
        }
    }
    let count: u64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, kept);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // A second connection reads what the first wrote.
    let other = Connection::open(&path).unwrap();
    let seen: u64 = other
        .query_row(
            "SELECT count(*) FROM t INDEXED BY t_by_user WHERE user >= ''",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(seen, kept);
    let skipped = TRUNCATES_SKIPPED.load(Ordering::Relaxed);
    let passed = TRUNCATES_PASSED.load(Ordering::Relaxed);
    assert!(skipped >= 200, "commits skipped the walk: {skipped}");
    assert!(passed >= 60, "each rollback (60) truncated: {passed}");
    drop((conn, other));
    let _ = std::fs::remove_dir_all(&dir);
}
