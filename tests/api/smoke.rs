use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn an_earning_created_over_rest_reaches_the_owners_stream() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let mut stream = app.stream(&alice.token, "").await;
    assert_eq!(stream.status, 200);
    let (connected, hello) = stream.expect("connected").await;
    assert!(
        !connected.id.is_empty(),
        "a fresh stream's connected event carries the position"
    );
    assert_eq!(hello["userId"], Value::String(alice.id.clone()));

    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 100.0).await;
    stream.expect("platforms:new").await;
    let (_, data) = stream.expect("earnings:new").await;
    assert_eq!(data, earning);
    let (_, note) = stream.expect("notification").await;
    assert_eq!(note["message"], "New earning of $100 added to Upwork");
}

/// The writer never checkpoints inside a commit (`wal_autocheckpoint = 0`);
/// the checkpointer task copies the WAL beside it. Read from the WAL index
/// (`-shm`, see sqlite.org/walformat.html): `mxFrame` at byte 16, frames in
/// the WAL; `nBackfill` at byte 96, frames already copied to the database.
#[tokio::test]
async fn the_sqlite_wal_is_copied_into_the_database_by_the_checkpointer() {
    let app = spawn_app().await;
    if app.state.db.backend != earntrack::db::Backend::Sqlite {
        return;
    }
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    for _ in 0..20 {
        app.earning(&alice, &platform, 10.0).await;
    }
    let shm = app.dir.path().join("test.db-shm");
    let word = |bytes: &[u8], at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let index = std::fs::read(&shm).unwrap();
        let (frames, copied) = (word(&index, 16), word(&index, 96));
        assert!(frames > 0, "the WAL holds the writes");
        if copied == frames {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{copied} of {frames} WAL frames copied after 3 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
