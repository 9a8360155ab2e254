//! Bench accounts: `<prefix>-<i>@example.com` users (registered, or logged in
//! when they exist), the admin, a platform per user for `--via earnings`, and
//! the token cache that makes a second run skip the slow password hashing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::Rest;

/// Name of the platform each bench user owns (for `--via earnings`).
pub const PLATFORM_NAME: &str = "Bench";

#[derive(Clone, Debug)]
pub struct Account {
    pub email: String,
    pub id: String,
    pub token: Arc<str>,
    pub role: String,
    /// The user's `Bench` platform, when asked for.
    pub platform: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CachedToken {
    token: String,
    id: String,
    exp: i64,
}

/// `{"version":1,"servers":{url:{email:{token,id,exp}}}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    servers: BTreeMap<String, BTreeMap<String, CachedToken>>,
}

/// Tokens per email and server URL, kept in a file between runs. A cached
/// token is used only while it has well over the run's length to live, and
/// only after the server accepted it again.
pub struct TokenCache {
    path: Option<PathBuf>,
    file: CacheFile,
    url: String,
}

impl TokenCache {
    pub fn load(path: Option<&Path>, url: &str) -> anyhow::Result<TokenCache> {
        let file = match path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_str(&text).unwrap_or_else(|err| {
                    eprintln!(
                        "warning: ignoring unreadable token cache {}: {err}",
                        p.display()
                    );
                    CacheFile::default()
                })
            }
            _ => CacheFile::default(),
        };
        Ok(TokenCache {
            path: path.map(Path::to_path_buf),
            file,
            url: url.to_owned(),
        })
    }

    fn get(&self, email: &str, valid_until: i64) -> Option<CachedToken> {
        self.file
            .servers
            .get(&self.url)?
            .get(email)
            .filter(|t| t.exp > valid_until)
            .cloned()
    }

    fn put(&mut self, email: &str, token: CachedToken) {
        self.file
            .servers
            .entry(self.url.clone())
            .or_default()
            .insert(email.to_owned(), token);
    }

    fn forget(&mut self, email: &str) {
        if let Some(server) = self.file.servers.get_mut(&self.url) {
            server.remove(email);
        }
    }

    /// Write the cache (owner-only permissions; it holds bearer tokens).
    pub fn save(&mut self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        self.file.version = 1;
        let now = chrono::Utc::now().timestamp();
        for server in self.file.servers.values_mut() {
            server.retain(|_, t| t.exp > now);
        }
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(serde_json::to_string(&self.file)?.as_bytes())?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// What every account setup needs.
pub struct Setup<'a> {
    pub rest: &'a Rest,
    pub password: &'a str,
    pub cache: &'a Mutex<TokenCache>,
    /// A cached token must live past this (unix seconds).
    pub valid_until: i64,
    pub want_platform: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SetupStats {
    pub cached: usize,
    pub registered: usize,
    pub logged_in: usize,
}

/// The claims of a JWT, read without checking the signature (the server
/// checks it; the bench only wants `exp` and `role`).
fn claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&base64url_decode(payload)?).ok()
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => continue,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

enum How {
    Cached,
    Registered,
    LoggedIn,
}

impl Setup<'_> {
    /// A working token (and platform when wanted) for `email`.
    async fn account(&self, email: &str) -> anyhow::Result<(Account, How)> {
        let cached = lock(self.cache).get(email, self.valid_until);
        if let Some(c) = cached {
            let resp = self.rest.get("/api/platforms", Some(&c.token)).await?;
            match resp.status {
                200 => {
                    let role = claims(&c.token)
                        .and_then(|v| v.get("role")?.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "user".into());
                    let mut account = Account {
                        email: email.to_owned(),
                        id: c.id.clone(),
                        token: Arc::from(c.token.as_str()),
                        role,
                        platform: find_platform(&resp.json()?),
                    };
                    self.ensure_platform(&mut account).await?;
                    return Ok((account, How::Cached));
                }
                401 => lock(self.cache).forget(email),
                s => bail!("checking a cached token of {email}: status {s}"),
            }
        }
        let (session, how) = self.sign_in(email).await?;
        let token = session["token"]
            .as_str()
            .context("no token in the session answer")?
            .to_owned();
        let id = session["user"]["id"]
            .as_str()
            .context("no user.id in the session answer")?
            .to_owned();
        let role = session["user"]["role"]
            .as_str()
            .unwrap_or("user")
            .to_owned();
        let exp = claims(&token)
            .and_then(|v| v.get("exp")?.as_i64())
            .unwrap_or(0);
        lock(self.cache).put(
            email,
            CachedToken {
                token: token.clone(),
                id: id.clone(),
                exp,
            },
        );
        let mut account = Account {
            email: email.to_owned(),
            id,
            token: Arc::from(token.as_str()),
            role,
            platform: None,
        };
        if self.want_platform {
            let resp = self.rest.get("/api/platforms", Some(&token)).await?;
            if resp.status != 200 {
                bail!("listing platforms of {email}: status {}", resp.status);
            }
            account.platform = find_platform(&resp.json()?);
        }
        self.ensure_platform(&mut account).await?;
        Ok((account, how))
    }

    /// Register, or log in when the email is taken.
    async fn sign_in(&self, email: &str) -> anyhow::Result<(Value, How)> {
        let body = json!({ "email": email, "password": self.password, "name": "bench" });
        let resp = retry(|| self.rest.post("/api/auth/register", None, &body)).await?;
        match resp.status {
            201 => return Ok((resp.json()?, How::Registered)),
            409 => {}
            s => bail!(
                "registering {email}: status {s} {}",
                String::from_utf8_lossy(&resp.body)
            ),
        }
        let body = json!({ "email": email, "password": self.password });
        let resp = retry(|| self.rest.post("/api/auth/login", None, &body)).await?;
        match resp.status {
            200 => Ok((resp.json()?, How::LoggedIn)),
            401 => bail!(
                "{email} exists with another password (use --password or another --user-prefix)"
            ),
            s => bail!(
                "logging in {email}: status {s} {}",
                String::from_utf8_lossy(&resp.body)
            ),
        }
    }

    async fn ensure_platform(&self, account: &mut Account) -> anyhow::Result<()> {
        if !self.want_platform || account.platform.is_some() {
            return Ok(());
        }
        let body = json!({ "name": PLATFORM_NAME, "color": "#1f8b4c" });
        let resp = self
            .rest
            .post("/api/platforms", Some(&account.token), &body)
            .await?;
        account.platform = match resp.status {
            201 => resp.json()?["id"].as_str().map(str::to_owned),
            409 => {
                let list = self
                    .rest
                    .get("/api/platforms", Some(&account.token))
                    .await?;
                find_platform(&list.json()?)
            }
            s => bail!("creating a platform for {}: status {s}", account.email),
        };
        if account.platform.is_none() {
            bail!("no {PLATFORM_NAME} platform for {}", account.email);
        }
        Ok(())
    }
}

fn find_platform(list: &Value) -> Option<String> {
    list["items"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == PLATFORM_NAME)?["id"]
        .as_str()
        .map(str::to_owned)
}

/// Retry a request a few times on transport errors and 503.
async fn retry<F, Fut>(mut f: F) -> anyhow::Result<crate::http::Response>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<crate::http::Response>>,
{
    let mut last = None;
    for attempt in 0..3u64 {
        match f().await {
            Ok(r) if r.status != 503 => return Ok(r),
            Ok(r) => last = Some(anyhow::anyhow!("status {}", r.status)),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("request failed")))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Set up the accounts for `emails`, `concurrency` at a time, with progress
/// on stderr. Fails on the first account that cannot be set up.
pub async fn setup_all(
    setup: &Setup<'_>,
    emails: &[String],
    concurrency: usize,
    deadline: Instant,
) -> anyhow::Result<(Vec<Account>, SetupStats)> {
    let started = Instant::now();
    let mut stats = SetupStats::default();
    let mut out: Vec<Option<Account>> = vec![None; emails.len()];
    let mut done = 0usize;
    let mut last_report = Instant::now();
    let mut tasks = futures_util::stream::iter(emails.iter().enumerate())
        .map(|(i, email)| async move { (i, setup.account(email).await) })
        .buffer_unordered(concurrency.max(1));
    loop {
        let next = tokio::time::timeout_at(deadline.into(), tasks.next())
            .await
            .context("account setup ran past the deadline (--max-runtime-s)")?;
        let Some((i, result)) = next else { break };
        let (account, how) = result?;
        match how {
            How::Cached => stats.cached += 1,
            How::Registered => stats.registered += 1,
            How::LoggedIn => stats.logged_in += 1,
        }
        out[i] = Some(account);
        done += 1;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  accounts: {done}/{} ({} cached, {} registered, {} logged in) after {:.0}s",
                emails.len(),
                stats.cached,
                stats.registered,
                stats.logged_in,
                started.elapsed().as_secs_f64()
            );
            // Keep what was paid for (argon2) even if the run fails later.
            if stats.registered + stats.logged_in > 0 {
                let _ = lock(setup.cache).save();
            }
        }
    }
    let accounts = out.into_iter().flatten().collect::<Vec<_>>();
    Ok((accounts, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jwt_claims() {
        // {"sub":"x","role":"admin","exp":123}
        let payload = "eyJzdWIiOiJ4Iiwicm9sZSI6ImFkbWluIiwiZXhwIjoxMjN9";
        let v = claims(&format!("h.{payload}.s")).unwrap();
        assert_eq!(v["role"], "admin");
        assert_eq!(v["exp"], 123);
    }
}
