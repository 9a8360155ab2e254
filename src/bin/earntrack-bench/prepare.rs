//! What every mode that opens streams does first: check the flags, reach
//! every server, and set up the accounts (through the token cache).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::accounts::{self, Account, Setup, SetupStats, TokenCache};
use crate::cli::Common;
use crate::http::{Rest, Target};
use crate::procfs;

/// Everything the modes share once the accounts exist.
pub struct Prepared {
    pub common: Common,
    /// The servers streams are opened on (one, or a cluster).
    pub targets: Vec<Arc<Target>>,
    /// Where accounts are set up and events published (`rest`).
    pub publish: Arc<Target>,
    pub rest: Arc<Rest>,
    pub sources: Vec<IpAddr>,
    pub users: Vec<Account>,
    pub admin: Option<Account>,
    pub deadline: Instant,
    pub started: Instant,
    server_pids: Vec<String>,
    pub client_cpu_start: f64,
    pub setup_s: f64,
    pub setup_stats: SetupStats,
}

/// Check the flags, reach every server, and set up the users (with a
/// `Bench` platform each when `want_platform`) and, when `want_admin`, the
/// admin.
pub async fn prepare(
    common: &Common,
    want_admin: bool,
    want_platform: bool,
) -> anyhow::Result<Prepared> {
    let started = Instant::now();
    let client_cpu_start = procfs::cpu_s("self").unwrap_or(0.0);
    let deadline = started + Duration::from_secs(common.max_runtime_s);
    let users = check_counts(common)?;
    let (targets, publish) = resolve_targets(common).await?;
    let sources = source_addresses(common, &targets, &publish)?;
    let timeout = Duration::from_secs(common.request_timeout_s.max(1));
    let rest = Arc::new(Rest::new(publish.clone(), sources.clone(), timeout));
    check_servers(common, &targets, &publish, &sources, timeout).await?;
    let set_up = SetUp {
        common,
        rest: &rest,
        publish_url: &publish.url,
        want_admin,
        want_platform,
        deadline,
    };
    let accounts = set_up.accounts(users).await?;
    Ok(Prepared {
        common: common.clone(),
        targets,
        publish,
        rest,
        sources,
        users: accounts.users,
        admin: accounts.admin,
        deadline,
        started,
        server_pids: common.server_pid.iter().map(u32::to_string).collect(),
        client_cpu_start,
        setup_s: accounts.setup_s,
        setup_stats: accounts.stats,
    })
}

/// The number of users, once streams, users, open files and servers are
/// within bounds.
fn check_counts(common: &Common) -> anyhow::Result<usize> {
    if common.streams == 0 || common.streams > 500_000 {
        bail!("--streams must be 1 to 500000");
    }
    let users = common.users.unwrap_or(common.streams);
    if users == 0 || users > common.streams {
        bail!("--users must be 1 to --streams");
    }
    if let Some(limit) = procfs::open_files_limit() {
        let need = (common.streams + common.rest_concurrency + 64) as u64;
        if need > limit {
            bail!(
                "{} streams need about {need} open files but this process may open {limit}: \
                 raise `ulimit -n` or lower --streams",
                common.streams
            );
        }
    }
    if common.url.is_empty() || common.url.len() > 64 {
        bail!("--url must name 1 to 64 servers");
    }
    Ok(users)
}

/// The stream servers (`--url`) and the publishing one (`--publish-url`).
async fn resolve_targets(common: &Common) -> anyhow::Result<(Vec<Arc<Target>>, Arc<Target>)> {
    let mut targets = Vec::with_capacity(common.url.len());
    for url in &common.url {
        targets.push(Arc::new(Target::resolve(url.trim()).await?));
    }
    let publish = match &common.publish_url {
        Some(url) => {
            let t = Target::resolve(url.trim()).await?;
            // The same server as one of --url: share its Target.
            match targets.iter().find(|x| x.url == t.url) {
                Some(x) => x.clone(),
                None => Arc::new(t),
            }
        }
        None => targets[0].clone(),
    };
    Ok((targets, publish))
}

/// The source addresses to spread connections over: `--source-ips`, or
/// 127.0.0.1..127.0.0.8 when every server is on IPv4 loopback, or none
/// (the kernel's choice).
fn source_addresses(
    common: &Common,
    targets: &[Arc<Target>],
    publish: &Arc<Target>,
) -> anyhow::Result<Vec<IpAddr>> {
    let families_differ = |ip: &IpAddr| {
        targets
            .iter()
            .chain([publish])
            .any(|t| ip.is_ipv4() != t.addr.is_ipv4())
    };
    Ok(if !common.source_ips.is_empty() {
        if common.source_ips.iter().any(families_differ) {
            bail!("--source-ips must be of the same family as the target addresses");
        }
        common.source_ips.clone()
    } else if targets
        .iter()
        .chain([publish])
        .all(|t| matches!(t.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()))
    {
        (1..=8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect()
    } else {
        Vec::new()
    })
}

/// Every server answers `/healthz`, and every `--server-pid` is a process
/// of this machine.
async fn check_servers(
    common: &Common,
    targets: &[Arc<Target>],
    publish: &Arc<Target>,
    sources: &[IpAddr],
    timeout: Duration,
) -> anyhow::Result<()> {
    for target in targets.iter().chain([publish]) {
        let health = Rest::new(target.clone(), sources.to_vec(), timeout)
            .get("/healthz", None)
            .await
            .with_context(|| format!("is the server running at {}?", target.url))?;
        if health.status != 200 {
            bail!("{}/healthz answered {}", target.url, health.status);
        }
    }
    for pid in &common.server_pid {
        procfs::sample(&pid.to_string())
            .with_context(|| format!("--server-pid {pid} (it must run on this machine)"))?;
    }
    Ok(())
}

/// How the accounts of a run are set up.
struct SetUp<'a> {
    common: &'a Common,
    rest: &'a Rest,
    /// The server that issued the cached tokens.
    publish_url: &'a str,
    want_admin: bool,
    want_platform: bool,
    deadline: Instant,
}

/// The accounts of a run, and what setting them up took.
struct Accounts {
    users: Vec<Account>,
    admin: Option<Account>,
    stats: SetupStats,
    setup_s: f64,
}

impl SetUp<'_> {
    /// `users` bench users, then the admin when wanted.
    async fn accounts(&self, users: usize) -> anyhow::Result<Accounts> {
        let common = self.common;
        // Tokens are valid on every server of a cluster: keyed by the server
        // that issued them.
        let cache = Mutex::new(TokenCache::load(
            common.token_cache.as_deref(),
            self.publish_url,
        )?);
        // A cached token must outlive the run by a margin.
        let valid_until = chrono::Utc::now().timestamp() + common.max_runtime_s as i64 + 600;
        let setup = Setup {
            rest: self.rest,
            password: &common.password,
            cache: &cache,
            valid_until,
            want_platform: self.want_platform,
        };
        let emails: Vec<String> = (0..users)
            .map(|i| format!("{}-{i}@example.com", common.user_prefix))
            .collect();
        eprintln!(
            "setting up {users} users (cache: {})",
            common
                .token_cache
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string())
        );
        let setup_started = Instant::now();
        let result =
            accounts::setup_all(&setup, &emails, common.setup_concurrency, self.deadline).await;
        let admin = match &common.publisher_key {
            // A publisher key publishes as an admin does, with no account.
            Some(key) if self.want_admin => Some(Ok(Some(Account {
                email: "publisher key".into(),
                id: String::new(),
                token: key.as_str().into(),
                role: "admin".into(),
                platform: None,
            }))),
            _ if self.want_admin && result.is_ok() => Some(self.admin(&setup).await),
            _ => None,
        };
        // Save what was paid for even when something failed.
        cache.lock().unwrap_or_else(|p| p.into_inner()).save()?;
        let (users, stats) = result?;
        let admin = admin.map(checked_admin).transpose()?;
        let setup_s = setup_started.elapsed().as_secs_f64();
        eprintln!(
            "accounts ready in {setup_s:.1}s ({} cached, {} registered, {} logged in)",
            stats.cached, stats.registered, stats.logged_in
        );
        Ok(Accounts {
            users,
            admin,
            stats,
            setup_s,
        })
    }

    /// The admin account (`--admin-email`), without a platform.
    async fn admin(&self, setup: &Setup<'_>) -> anyhow::Result<Option<Account>> {
        let no_platform = Setup {
            want_platform: false,
            ..*setup
        };
        accounts::setup_all(
            &no_platform,
            std::slice::from_ref(&self.common.admin_email),
            1,
            self.deadline,
        )
        .await
        .map(|(mut a, _)| a.pop())
    }
}

/// The admin account, once the server says it is one.
fn checked_admin(set_up: anyhow::Result<Option<Account>>) -> anyhow::Result<Account> {
    let a = set_up?.context("admin account missing")?;
    if a.role != "admin" {
        bail!(
            "{} is not an admin: run `earntrack admin grant {}` on the server's database, \
             or publish with --publisher-key",
            a.email,
            a.email
        );
    }
    Ok(a)
}

impl Prepared {
    /// The servers' RSS and CPU, summed over --server-pid (`None` when no
    /// pid was given or one of them is gone).
    pub fn server(&self) -> Option<procfs::Sample> {
        if self.server_pids.is_empty() {
            return None;
        }
        let mut sum = procfs::Sample::default();
        for pid in &self.server_pids {
            let s = procfs::sample(pid).ok()?;
            sum.rss_kib += s.rss_kib;
            sum.cpu_s += s.cpu_s;
        }
        Some(sum)
    }

    /// The index of the server that holds the streams of `user`. Users go
    /// round-robin over the servers, so that all streams of one user are on
    /// one server; with fewer users than servers, streams go round-robin.
    pub fn server_of(&self, stream: usize, user: usize) -> usize {
        let n = self.targets.len();
        if self.users.len() >= n {
            user % n
        } else {
            stream % n
        }
    }

    /// Whether a stream on server `server` is on another server than the
    /// one events are published through.
    pub fn is_remote(&self, server: usize) -> bool {
        self.targets[server].url != self.publish.url
    }
}
