//! `strata endpoint …`: compute endpoints, stock PostgreSQL 15 started from a pageserver
//! basebackup, with the walproposer sidecar.
//!
//! Start (ARCHITECTURE.md "Compute"): (1) `walproposer sync` → L (a read-only endpoint
//! uses its `--lsn` instead); (2) wait until the pageserver has L; (3) basebackup at L
//! into a **fresh** data directory (a compute never restarts from its old one); (4) start
//! Postgres as the unprivileged user with the compute settings; (5) start the sidecar from
//! exactly L. Each step is named when it fails; the connection string is printed last.
//!
//! Invariant: at most one running primary endpoint per timeline (a second is refused).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use utils::auth::Claims;
use utils::crashsafe::{self, Sync};
use utils::{Lsn, TenantId, TimelineId};

use crate::auth;
use crate::branches::{Api, Branches};
use crate::repo::{Repo, free_ports};
use crate::service::{Service, State};

/// What `endpoint create` recorded (`<repo>/endpoints/<name>/endpoint.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Its name.
    pub name: String,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The branch's name.
    pub branch: String,
    /// The branch's timeline.
    pub timeline_id: TimelineId,
    /// Postgres's port.
    pub pg_port: u16,
    /// The sidecar's HTTP port.
    pub http_port: u16,
    /// Read-only at this LSN (no sidecar); `None`: a primary.
    pub lsn: Option<Lsn>,
}

/// Options of `strata endpoint create`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  strata endpoint create main\n  strata endpoint create old --branch-name main --lsn 0/1A2B3C8"
)]
pub struct CreateArgs {
    /// The endpoint's name.
    name: String,
    /// The branch it runs on.
    #[arg(long, default_value = "main")]
    branch_name: String,
    /// Postgres's port (default: a free one).
    #[arg(long)]
    pg_port: Option<u16>,
    /// A read-only endpoint at this LSN.
    #[arg(long)]
    lsn: Option<Lsn>,
    /// The tenant (default: the default tenant).
    #[arg(long)]
    tenant_id: Option<TenantId>,
}

/// Options naming an endpoint.
#[derive(clap::Args, Debug)]
pub struct NameArgs {
    /// The endpoint's name.
    name: String,
}

/// Options of `strata endpoint stop`.
#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// The endpoint's name.
    name: String,
    /// Also forget the endpoint (its directory is removed).
    #[arg(long)]
    destroy: bool,
    /// Kill instead of a clean shutdown.
    #[arg(long)]
    immediate: bool,
}

fn endpoints_dir(repo: &Repo) -> PathBuf {
    repo.dir.join("endpoints")
}

fn load(repo: &Repo, name: &str) -> anyhow::Result<EndpointConfig> {
    let path = endpoints_dir(repo).join(name).join("endpoint.toml");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow::anyhow!(
            "no endpoint {name:?} (`strata endpoint list`, `strata endpoint create {name}`)"
        )
    })?;
    toml::from_str(&text).with_context(|| format!("{}: not valid", path.display()))
}

fn all(repo: &Repo) -> anyhow::Result<Vec<EndpointConfig>> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(endpoints_dir(repo)) {
        for e in rd.flatten() {
            if let Some(name) = e.file_name().to_str()
                && e.path().join("endpoint.toml").exists()
            {
                out.push(load(repo, name)?);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn pg_user_ids(repo: &Repo) -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(&repo.config.pg_user)
        .context("looking up the PostgreSQL user")?
        .with_context(|| {
            format!(
                "PostgreSQL refuses to run as root and user {:?} does not exist (scripts/setup creates it)",
                repo.config.pg_user
            )
        })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn postgres_service(repo: &Repo, ep: &EndpointConfig) -> anyhow::Result<Service> {
    let dir = endpoints_dir(repo).join(&ep.name);
    Ok(Service {
        name: "postgres".into(),
        binary: repo.config.pg_bin_dir.join("postgres"),
        args: vec!["-D".into(), dir.join("data").display().to_string()],
        dir,
        ready_url: format!("pg_isready:{}", ep.pg_port),
        run_as: pg_user_ids(repo)?,
        stop_signal: Signal::SIGINT,
    })
}

/// `<endpoint dir>/safekeeper.token`: the sidecar's token, for its tenant only.
fn token_file(repo: &Repo, ep: &EndpointConfig) -> PathBuf {
    endpoints_dir(repo).join(&ep.name).join("safekeeper.token")
}

/// With auth on, writes the endpoint's tenant token (for the sidecar, `walproposer sync` and
/// the basebackup) and returns it.
fn tenant_token(repo: &Repo, ep: &EndpointConfig) -> anyhow::Result<Option<String>> {
    let token = auth::token(repo, &Claims::tenant(ep.tenant_id))?;
    if let Some(t) = &token {
        auth::write_secret(&token_file(repo, ep), t.as_bytes())?;
    }
    Ok(token)
}

fn sidecar_service(repo: &Repo, ep: &EndpointConfig, lsn: Lsn) -> Service {
    let dir = endpoints_dir(repo).join(&ep.name);
    let mut auth_args = Vec::new();
    if repo.config.auth {
        auth_args = vec![
            "--auth-token-file".to_string(),
            token_file(repo, ep).display().to_string(),
        ];
    }
    let sks: Vec<String> = repo
        .config
        .safekeepers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.pg_port))
        .collect();
    Service {
        name: "walproposer".into(),
        binary: repo.config.bin_dir.join("walproposer"),
        args: vec![
            "stream".into(),
            "--pg".into(),
            format!("host=127.0.0.1 port={} user=postgres", ep.pg_port),
            "--safekeepers".into(),
            sks.join(","),
            "--tenant-id".into(),
            ep.tenant_id.to_string(),
            "--timeline-id".into(),
            ep.timeline_id.to_string(),
            "--start-lsn".into(),
            lsn.to_string(),
            "--state-dir".into(),
            dir.join("walproposer").display().to_string(),
            "--listen-http".into(),
            format!("127.0.0.1:{}", ep.http_port),
        ]
        .into_iter()
        .chain(auth_args)
        .collect(),
        dir,
        ready_url: format!("http://127.0.0.1:{}/v1/status", ep.http_port),
        run_as: None,
        stop_signal: Signal::SIGTERM,
    }
}

/// `strata endpoint create`.
pub fn create(repo: &Repo, args: &CreateArgs) -> anyhow::Result<()> {
    if args.name.is_empty()
        || !args
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "endpoint name {:?}: use letters, digits, '-' and '_'",
            args.name
        );
    }
    let dir = endpoints_dir(repo).join(&args.name);
    if dir.join("endpoint.toml").exists() {
        bail!(
            "endpoint {:?} already exists (`strata endpoint stop {} --destroy` first)",
            args.name,
            args.name
        );
    }
    let branches = Branches::load(repo)?;
    let tenant_id = branches.tenant(args.tenant_id)?;
    let timeline_id = branches.timeline(tenant_id, &args.branch_name)?;
    let ports = free_ports(2)?;
    let pg_port = match args.pg_port {
        Some(p) => {
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
                bail!("port {p} is in use; pick another --pg-port");
            }
            p
        }
        None => ports[0],
    };
    let ep = EndpointConfig {
        name: args.name.clone(),
        tenant_id,
        branch: args.branch_name.clone(),
        timeline_id,
        pg_port,
        http_port: ports[1],
        lsn: args.lsn,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = toml::to_string_pretty(&ep).context("encoding endpoint.toml")?;
    crashsafe::overwrite(&dir.join("endpoint.toml"), text.as_bytes(), Sync::Yes)?;
    println!(
        "strata: endpoint {} created on branch {} (port {pg_port}{})",
        ep.name,
        ep.branch,
        match ep.lsn {
            Some(l) => format!(", read-only at {l}"),
            None => String::new(),
        }
    );
    Ok(())
}

/// `strata endpoint start`.
pub async fn start(repo: &Repo, args: &NameArgs) -> anyhow::Result<()> {
    let ep = load(repo, &args.name)?;
    let pg = postgres_service(repo, &ep)?;
    if let State::Running(pid) = pg.state() {
        bail!(
            "endpoint {} is already running (postgres pid {pid})",
            ep.name
        );
    }
    if ep.lsn.is_none() {
        for other in all(repo)? {
            if other.name != ep.name
                && other.lsn.is_none()
                && other.timeline_id == ep.timeline_id
                && postgres_service(repo, &other)?.state() != State::Stopped
            {
                bail!(
                    "endpoint {} already runs a primary on branch {}; stop it first (one primary per branch)",
                    other.name,
                    ep.branch
                );
            }
        }
    }
    let dir = endpoints_dir(repo).join(&ep.name);
    let started = Instant::now();
    let token = tenant_token(repo, &ep)?;
    // (1) The LSN.
    let lsn = match ep.lsn {
        Some(l) => l,
        None => sync(repo, &ep)
            .await
            .context("step 1 (walproposer sync) failed")?,
    };
    println!(
        "  [1/5] start LSN {lsn} ({:.2}s)",
        started.elapsed().as_secs_f64()
    );
    // (2) The pageserver has it.
    let ps_conf = repo.pageserver(None)?;
    let ps = Api::pageserver(repo, ps_conf)?;
    ps.wait_lsn(ep.tenant_id, ep.timeline_id, lsn, "120s")
        .await
        .context("step 2 (waiting for the pageserver to reach the LSN) failed")?;
    println!(
        "  [2/5] pageserver has {lsn} ({:.2}s)",
        started.elapsed().as_secs_f64()
    );
    // (3) A fresh data directory from the basebackup.
    let t = Instant::now();
    let bytes = basebackup(repo, &ep, ps_conf.http_port, lsn, &dir, token.as_deref())
        .await
        .context("step 3 (basebackup) failed")?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  [3/5] basebackup: {} MiB in {secs:.2}s ({:.0} MiB/s) ({:.2}s)",
        bytes >> 20,
        (bytes as f64 / 1048576.0) / secs.max(1e-6),
        started.elapsed().as_secs_f64()
    );
    // (4) Postgres.
    pg.start(Duration::from_secs(120))
        .await
        .context("step 4 (starting PostgreSQL) failed")?;
    println!(
        "  [4/5] postgres running ({:.2}s)",
        started.elapsed().as_secs_f64()
    );
    // (5) The sidecar, for a primary.
    if ep.lsn.is_none() {
        let sidecar = sidecar_service(repo, &ep, lsn);
        if let Err(e) = sidecar.start(Duration::from_secs(60)).await {
            let _ = pg.stop(true, Duration::from_secs(10)).await;
            return Err(
                e.context("step 5 (starting the walproposer sidecar) failed; postgres stopped")
            );
        }
        println!(
            "  [5/5] walproposer sidecar running ({:.2}s)",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("  [5/5] read-only: no sidecar");
    }
    println!("postgresql://postgres@127.0.0.1:{}/postgres", ep.pg_port);
    Ok(())
}

async fn sync(repo: &Repo, ep: &EndpointConfig) -> anyhow::Result<Lsn> {
    let sks: Vec<String> = repo
        .config
        .safekeepers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.pg_port))
        .collect();
    let mut cmd = tokio::process::Command::new(repo.config.bin_dir.join("walproposer"));
    cmd.args(["sync", "--safekeepers", &sks.join(",")])
        .args(["--tenant-id", &ep.tenant_id.to_string()])
        .args(["--timeline-id", &ep.timeline_id.to_string()])
        .args(["--timeout", "120"]);
    if repo.config.auth {
        cmd.arg("--auth-token-file").arg(token_file(repo, ep));
    }
    let out = cmd.output().await.context("running walproposer sync")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        bail!(
            "walproposer sync exited {}:\n    {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
        );
    }
    stdout
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("walproposer sync printed {stdout:?}, not an LSN"))
}

/// Streams the basebackup straight into a fresh `<dir>/data` (unpacked as it arrives,
/// owned by the PostgreSQL user), with the compute settings appended to postgresql.conf.
/// A stream that breaks off fails the unpacking: a partial directory is never started.
async fn basebackup(
    repo: &Repo,
    ep: &EndpointConfig,
    ps_port: u16,
    lsn: Lsn,
    dir: &Path,
    token: Option<&str>,
) -> anyhow::Result<u64> {
    let url = format!(
        "http://127.0.0.1:{ps_port}/v1/tenant/{}/timeline/{}/basebackup?lsn={lsn}",
        ep.tenant_id, ep.timeline_id
    );
    let mut req = reqwest::Client::new().get(&url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let mut resp = req.send().await.context("pageserver")?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!(
            "pageserver answered {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let data = dir.join("data");
    let ids = pg_user_ids(repo)?;
    let conf = compute_settings(ep);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(32);
    let unpacker = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            cur: bytes::Bytes::new(),
        };
        unpack(reader, &data, ids, &conf)
    });
    let mut bytes = 0u64;
    let started = Instant::now();
    let mut reported = started;
    loop {
        if reported.elapsed() >= crate::branches::PROGRESS_EVERY {
            reported = Instant::now();
            println!(
                "        basebackup: {} MiB so far ({:.0} MiB/s)",
                bytes >> 20,
                (bytes as f64 / 1048576.0) / started.elapsed().as_secs_f64().max(1e-6)
            );
        }
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => break,
            Err(e) => Err(format!("the basebackup stream broke off: {e}")),
        };
        let failed = chunk.is_err();
        bytes += chunk.as_ref().map(|c| c.len() as u64).unwrap_or(0);
        // A closed channel means the unpacker stopped (its error is reported below).
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    unpacker.await.context("unpacking")??;
    Ok(bytes)
}

/// A blocking reader over the chunks the async side receives.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    cur: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

fn compute_settings(ep: &EndpointConfig) -> String {
    let mut s = format!(
        "\n# strata endpoint {}\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n\
         logging_collector = off\nwal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
         fsync = off\nwal_log_hints = on\nhot_standby = on\n",
        ep.name, ep.pg_port
    );
    if ep.lsn.is_some() {
        s.push_str("synchronous_standby_names = ''\ndefault_transaction_read_only = on\n");
    } else {
        s.push_str("synchronous_standby_names = 'walproposer'\nsynchronous_commit = on\n");
    }
    s
}

fn unpack(
    reader: impl std::io::Read,
    data: &Path,
    ids: Option<(u32, u32)>,
    conf: &str,
) -> anyhow::Result<()> {
    if data.exists() {
        std::fs::remove_dir_all(data)
            .with_context(|| format!("removing the old {}", data.display()))?;
    }
    std::fs::create_dir_all(data)?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive
        .unpack(data)
        .with_context(|| format!("unpacking into {}", data.display()))?;
    use std::io::Write;
    let mut pgconf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .context("postgresql.conf is missing from the basebackup")?;
    pgconf.write_all(conf.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = ids {
        chown_tree(data, uid, gid)?;
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// `strata endpoint stop`.
pub async fn stop(repo: &Repo, args: &StopArgs) -> anyhow::Result<()> {
    let ep = load(repo, &args.name)?;
    stop_one(repo, &ep, args.immediate).await?;
    if args.destroy {
        let dir = endpoints_dir(repo).join(&ep.name);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        println!("strata: endpoint {} destroyed", ep.name);
    }
    Ok(())
}

async fn stop_one(repo: &Repo, ep: &EndpointConfig, immediate: bool) -> anyhow::Result<()> {
    let grace = Duration::from_secs(30);
    // The sidecar first: a fast shutdown of Postgres then does not wait for it.
    sidecar_service(repo, ep, Lsn(0))
        .stop(immediate, grace)
        .await?;
    let was = postgres_service(repo, ep)?.stop(immediate, grace).await?;
    println!(
        "  endpoint {:<10} {}",
        ep.name,
        if was { "stopped" } else { "was not running" }
    );
    Ok(())
}

/// Stops every endpoint (for `strata stop`).
pub async fn stop_all(repo: &Repo, immediate: bool) -> anyhow::Result<()> {
    for ep in all(repo)? {
        stop_one(repo, &ep, immediate).await?;
    }
    Ok(())
}

/// `strata endpoint list`.
pub fn list(repo: &Repo) -> anyhow::Result<()> {
    println!(
        "{:<12} {:<22} {:<10} {:<34} {:<14} status",
        "name", "address", "branch", "timeline", "lsn"
    );
    for ep in all(repo)? {
        let status = match postgres_service(repo, &ep)?.state() {
            State::Running(_) => "running",
            State::Stopped => "stopped",
        };
        println!(
            "{:<12} {:<22} {:<10} {:<34} {:<14} {status}",
            ep.name,
            format!("127.0.0.1:{}", ep.pg_port),
            ep.branch,
            ep.timeline_id.to_string(),
            ep.lsn
                .map(|l| l.to_string())
                .unwrap_or_else(|| "primary".into())
        );
    }
    Ok(())
}
