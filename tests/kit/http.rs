//! Accounts over HTTP: every test starts by registering someone.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// The email the tests register and then make an admin (`earntrack admin
/// grant`, or the same function in-process): registering never does.
pub const ADMIN_EMAIL: &str = "admin@example.com";

/// A registered user and their token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// `POST /api/auth/register` on the server at `base` (`http://host:port`),
/// asserting 201.
pub async fn register(client: &Client, base: &str, email: &str) -> User {
    let res = client
        .post(format!("{base}/api/auth/register"))
        // Bounded even on a client without an overall timeout (streams).
        .timeout(Duration::from_secs(30))
        .json(&json!({"email": email, "password": "correct horse"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("register {email} on {base}: {e}"));
    assert_eq!(res.status(), StatusCode::CREATED, "register {email}");
    let body: Value = res.json().await.expect("a JSON body");
    User {
        id: body["user"]["id"].as_str().expect("user.id").to_owned(),
        email: email.to_owned(),
        token: body["token"].as_str().expect("token").to_owned(),
    }
}

/// A new user with a random email.
pub async fn user(client: &Client, base: &str) -> User {
    let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
    register(client, base, &email).await
}
