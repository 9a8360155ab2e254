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
