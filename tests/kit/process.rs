//! The `earntrack` binary as operators run it, as a child process.
//!
//! - Its environment is only what the test gives (plus `EARNTRACK_ADDR`):
//!   nothing from the developer's `EARNTRACK_*`, `DATABASE_URL`,
//!   `JWT_SECRET` or `RUST_LOG`.
//! - It listens on a port that was free a moment ago (the test must know
//!   the address before the server logs it).
//! - Its stdout and stderr go to one file in a temporary folder of its own:
//!   the child writes there directly, so everything it wrote is in
//!   `output()` once it has exited, with no reader tasks to drain.
//! - It is killed (SIGKILL) and reaped when the `Process` goes.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tempfile::TempDir;

/// How long a server may take to answer `/readyz` 200 (a cluster server
/// also connects its listener first).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Variables of the developer's environment the server would read.
fn inherited_config(key: &str) -> bool {
    key.starts_with("EARNTRACK_") || ["DATABASE_URL", "JWT_SECRET", "RUST_LOG"].contains(&key)
}

pub struct Process {
    /// For messages: which server this is.
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

/// Run the binary as a command (`earntrack admin grant <email>`, say) on
/// `database_url`, to its end; its output.
pub async fn command(database_url: &str, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_earntrack"));
    for (key, _) in std::env::vars() {
        if inherited_config(&key) {
            command.env_remove(key);
        }
    }
    let run = command
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the command ends within 30 s")
        .expect("the earntrack binary runs")
}

/// `earntrack admin grant <email>`, asserting it succeeded.
pub async fn grant_admin(database_url: &str, email: &str) {
    let out = command(database_url, &["admin", "grant", email]).await;
    assert!(
        out.status.success(),
        "earntrack admin grant {email}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Process {
    /// Start the binary with `env` and wait until it is ready.
    pub async fn start(name: &str, env: &[(&str, &str)]) -> Process {
        let mut process = Process::spawn(name, env);
        process.wait_ready().await;
        process
    }

    /// Start the binary with `env` (later pairs win), without waiting.
    pub fn spawn(name: &str, env: &[(&str, &str)]) -> Process {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let dir = tempfile::tempdir().expect("a temporary folder");
        let log = dir.path().join(format!("server-{name}.log"));
        let out = File::create(&log).expect("create the log file");
        let err = out.try_clone().expect("clone the log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_earntrack"));
        for (key, _) in std::env::vars() {
            if inherited_config(&key) {
                command.env_remove(key);
            }
        }
        command
            .env("EARNTRACK_ADDR", addr.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command.spawn().expect("the earntrack binary starts");
        Process {
            name: name.to_owned(),
            addr,
            child,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for `/readyz` 200; a panic (with its output) when it exits first
    /// or takes longer than `READY_WITHIN`.
    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a client");
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(res) = client.get(self.url("/readyz")).send().await {
                if res.status() == StatusCode::OK {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "server {} exited with {status} before ready:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server {} not ready within {READY_WITHIN:?}:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Send SIG`name` (`"TERM"`, `"INT"`…); it must still be running.
    pub fn signal(&mut self, name: &str) {
        // Reaped already, its pid may be someone else's.
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "SIG{name} to server {}: it exited already ({status})",
                self.name
            );
        }
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// SIGKILL and reap: gone at once, no goodbye to its clients. Nothing
    /// when it has exited already.
    pub fn kill(&mut self) {
        if self.child.try_wait().expect("try_wait").is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// The exit status, or a panic (with its output) when it still runs
    /// after `within`.
    pub async fn exits_within(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server {} still runs after {within:?}:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("an address").port()
}
