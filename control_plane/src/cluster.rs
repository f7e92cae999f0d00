//! `strata init | start | stop | status` and the per-service commands: the local cluster's
//! services (nats-server, pageservers, safekeepers) as background processes.
//!
//! Order: start is broker → safekeepers → pageservers (each awaited on its readiness URL);
//! stop is the reverse. A failed start stops what this command started, so a half-started
//! cluster is never left behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::auth;
use crate::repo::{
    ClusterConfig, NatsConfig, Repo, ServiceConfig, StorageControllerConfig, free_ports,
};
use crate::service::{Service, State};

/// How long a service may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service may take to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Options of `strata init`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  strata init\n  strata init --num-safekeepers 1 --force\n  strata init --auth\n  strata init --remote-storage local\n  strata init --remote-storage s3.toml   (a file holding the remote_storage table, e.g. bucket_name = \"b\"\n                                          bucket_region = \"us-east-1\" endpoint = \"http://127.0.0.1:5000\")"
)]
pub struct InitArgs {
    /// Safekeepers in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    num_safekeepers: u64,
    /// Pageservers in the cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=9))]
    num_pageservers: u64,
    /// JWT auth on every service's libpq and HTTP port (`strata token` mints tokens).
    #[arg(long)]
    auth: bool,
    /// Replace an existing repository (its data is deleted; the cluster must be stopped).
    #[arg(long)]
    force: bool,
    /// Object storage for the pageservers: `local` (a directory in the repository) or a
    /// TOML file holding a `remote_storage` table (LocalFs, S3 or Azure fields).
    #[arg(long, value_name = "local|FILE")]
    remote_storage: Option<String>,
    /// PostgreSQL 15's server binaries.
    #[arg(
        long,
        env = "STRATA_PG_BIN",
        default_value = "/usr/lib/postgresql/15/bin"
    )]
    pg_bin: PathBuf,
    /// The unprivileged user that runs PostgreSQL when strata runs as root.
    #[arg(long, env = "STRATA_PG_USER", default_value = "strata")]
    pg_user: String,
    /// Where the Strata binaries are (default: beside this `strata`).
    #[arg(long, env = "STRATA_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

/// Which services a command acts on.
#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// SIGKILL instead of a clean shutdown.
    #[arg(long)]
    pub immediate: bool,
}

/// Services of the cluster, in start order.
pub fn services(repo: &Repo) -> Vec<Service> {
    let mut out = vec![nats_service(repo)];
    // Before the pageservers: a pageserver's start asks it for its tenants (re-attach).
    out.extend(storage_controller_service(repo));
    out.extend(
        repo.config
            .safekeepers
            .iter()
            .map(|s| safekeeper_service(repo, s)),
    );
    out.extend(
        repo.config
            .pageservers
            .iter()
            .map(|p| pageserver_service(repo, p)),
    );
    out
}

fn nats_service(repo: &Repo) -> Service {
    let n = &repo.config.nats;
    Service {
        name: "nats".into(),
        binary: nats_binary(),
        args: vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            n.port.to_string(),
            "-m".into(),
            n.monitor_port.to_string(),
        ],
        dir: repo.nats_dir(),
        ready_url: format!("http://127.0.0.1:{}/healthz", n.monitor_port),
        run_as: None,
        stop_signal: nix::sys::signal::Signal::SIGTERM,
    }
}

fn nats_binary() -> PathBuf {
    [
        "/usr/bin/nats-server",
        "/usr/sbin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| PathBuf::from("/usr/bin/nats-server"))
}

/// The safekeeper `s`'s service.
pub fn safekeeper_service(repo: &Repo, s: &ServiceConfig) -> Service {
    let mut args: Vec<String> = vec![
        "-D".into(),
        repo.safekeeper_dir(s.id).display().to_string(),
        "--id".into(),
        s.id.to_string(),
        "--listen-pg".into(),
        format!("127.0.0.1:{}", s.pg_port),
        "--listen-http".into(),
        format!("127.0.0.1:{}", s.http_port),
        "--broker-endpoint".into(),
        repo.broker_url(),
    ];
    if repo.config.auth {
        let key = auth::public_key_path(&repo.dir).display().to_string();
        args.extend([
            "--pg-auth-public-key-path".into(),
            key.clone(),
            "--http-auth-public-key-path".into(),
            key,
        ]);
    }
    Service {
        name: format!("safekeeper-{}", s.id),
        binary: repo.config.bin_dir.join("safekeeper"),
        args,
        dir: repo.safekeeper_dir(s.id),
        ready_url: format!("http://127.0.0.1:{}/v1/status", s.http_port),
        run_as: None,
        stop_signal: nix::sys::signal::Signal::SIGTERM,
    }
}

/// The storage controller's service, when the cluster has one.
pub fn storage_controller_service(repo: &Repo) -> Option<Service> {
    let c = repo.config.storage_controller.as_ref()?;
    let mut args: Vec<String> = vec![
        "-D".into(),
        repo.storage_controller_dir().display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", c.port),
    ];
    if repo.config.auth {
        args.extend([
            "--auth-public-key-path".into(),
            auth::public_key_path(&repo.dir).display().to_string(),
        ]);
    }
    Some(Service {
        name: "storage_controller".into(),
        binary: repo.config.bin_dir.join("storage_controller"),
        args,
        dir: repo.storage_controller_dir(),
        ready_url: format!("http://127.0.0.1:{}/v1/status", c.port),
        run_as: None,
        stop_signal: nix::sys::signal::Signal::SIGTERM,
    })
}

/// The pageserver `p`'s service.
pub fn pageserver_service(repo: &Repo, p: &ServiceConfig) -> Service {
    Service {
        name: format!("pageserver-{}", p.id),
        binary: repo.config.bin_dir.join("pageserver"),
        args: vec![
            "--workdir".into(),
            repo.pageserver_dir(p.id).display().to_string(),
        ],
        dir: repo.pageserver_dir(p.id),
        ready_url: format!("http://127.0.0.1:{}/v1/status", p.http_port),
        run_as: None,
        stop_signal: nix::sys::signal::Signal::SIGTERM,
    }
}

/// `strata init`.
pub async fn init(dir: &Path, args: &InitArgs) -> anyhow::Result<()> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .context("locating the strata binary")?
            .parent()
            .context("the strata binary's directory")?
            .to_path_buf(),
    };
    for b in [
        "pageserver",
        "safekeeper",
        "walproposer",
        "storage_controller",
    ] {
        if !bin_dir.join(b).is_file() {
            bail!(
                "{} not found (build with `cargo build --workspace --bins`, or pass --bin-dir)",
                bin_dir.join(b).display()
            );
        }
    }
    // A bad --remote-storage is refused before anything is touched.
    let remote_file = match args.remote_storage.as_deref() {
        None | Some("local") => None,
        Some(spec) => Some(remote_storage_file(spec)?),
    };
    if !args.pg_bin.join("postgres").is_file() {
        bail!(
            "{} not found: is PostgreSQL 15 installed? (scripts/setup installs it)",
            args.pg_bin.join("postgres").display()
        );
    }
    if dir.join(crate::repo::CONFIG_FILE).exists() || dir.join(".lock").exists() {
        if !args.force {
            bail!(
                "{} already holds a Strata repository (use --force to replace it, or set STRATA_REPO_DIR)",
                dir.display()
            );
        }
        if let Ok(old) = Repo::open(dir) {
            let running: Vec<String> = services(&old)
                .into_iter()
                .filter(|s| s.state() != State::Stopped)
                .map(|s| s.name)
                .collect();
            if !running.is_empty() {
                bail!(
                    "the cluster in {} is running ({}); `strata stop` it first",
                    dir.display(),
                    running.join(", ")
                );
            }
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let remote_storage = match (args.remote_storage.as_deref(), remote_file) {
        (_, Some(c)) => Some(c),
        (Some(_), None) => Some(local_remote_storage(dir)?),
        (None, None) => None,
    };
    let n = (3 + 2 * (args.num_safekeepers + args.num_pageservers)) as usize;
    let mut ports = free_ports(n)?.into_iter();
    let mut next = || ports.next().context("ran out of ports");
    let nats = NatsConfig {
        port: next()?,
        monitor_port: next()?,
    };
    let mut svc = |id| -> anyhow::Result<ServiceConfig> {
        Ok(ServiceConfig {
            id,
            pg_port: next()?,
            http_port: next()?,
        })
    };
    let safekeepers = (1..=args.num_safekeepers)
        .map(&mut svc)
        .collect::<Result<_, _>>()?;
    let pageservers = (1..=args.num_pageservers)
        .map(&mut svc)
        .collect::<Result<_, _>>()?;
    // With object storage, generations keep two pageservers from owning one tenant's
    // objects: the controller issues them.
    let storage_controller = match remote_storage {
        Some(_) => Some(StorageControllerConfig { port: next()? }),
        None => None,
    };
    let config = ClusterConfig {
        bin_dir,
        pg_bin_dir: args.pg_bin.clone(),
        pg_user: args.pg_user.clone(),
        nats,
        pageservers,
        safekeepers,
        auth: args.auth,
        remote_storage,
        storage_controller,
    };
    // The directories first, then the config that names them (see repo.rs).
    let staged = Repo::staged(dir, config.clone());
    std::fs::create_dir_all(staged.nats_dir())?;
    if config.storage_controller.is_some() {
        std::fs::create_dir_all(staged.storage_controller_dir())?;
    }
    if args.auth {
        auth::init_keys(dir)?;
    }
    for s in &config.safekeepers {
        std::fs::create_dir_all(staged.safekeeper_dir(s.id))?;
    }
    for p in &config.pageservers {
        init_pageserver(&staged, p).await?;
    }
    Repo::create(dir, config)?;
    println!("strata: initialized a cluster in {}", dir.display());
    println!(
        "  {} safekeeper(s), {} pageserver(s), NATS on port {}; start it with `strata start`",
        args.num_safekeepers, args.num_pageservers, staged.config.nats.port
    );
    if args.auth {
        println!(
            "  auth on: keys in {}; `strata token --tenant-id <id>` mints a tenant's token",
            auth::auth_dir(dir).display()
        );
    }
    Ok(())
}

/// `--remote-storage local`: `<repo>/remote_storage`.
fn local_remote_storage(repo_dir: &Path) -> anyhow::Result<remote_storage::RemoteStorageConfig> {
    let path = repo_dir.join("remote_storage");
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(remote_storage::RemoteStorageConfig::local_fs(camino_path(
        &path,
    )?))
}

/// `--remote-storage FILE`: a TOML file with the table's fields, validated now.
fn remote_storage_file(spec: &str) -> anyhow::Result<remote_storage::RemoteStorageConfig> {
    let text = std::fs::read_to_string(spec).with_context(|| {
        format!("--remote-storage {spec}: expected `local` or a TOML file holding the remote_storage table")
    })?;
    remote_storage::RemoteStorageConfig::from_toml(&text)
        .with_context(|| format!("--remote-storage {spec}"))
}

fn camino_path(p: &Path) -> anyhow::Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not a UTF-8 path", p.display()))
}

/// The config as the TOML inline table a `-c remote_storage=…` override takes.
fn remote_storage_toml(c: &remote_storage::RemoteStorageConfig) -> anyhow::Result<String> {
    let value = toml::Value::try_from(c).context("serializing remote_storage")?;
    Ok(value.to_string())
}

/// `pageserver --init`: writes its pageserver.toml and identity.
async fn init_pageserver(repo: &Repo, p: &ServiceConfig) -> anyhow::Result<()> {
    let workdir = repo.pageserver_dir(p.id);
    let c = &repo.config;
    let settings = [
        ("listen_pg_addr", format!("\"127.0.0.1:{}\"", p.pg_port)),
        ("listen_http_addr", format!("\"127.0.0.1:{}\"", p.http_port)),
        ("broker_endpoint", format!("\"{}\"", repo.broker_url())),
        (
            "pg_distrib_dir",
            format!(
                "\"{}\"",
                c.pg_bin_dir.parent().unwrap_or(&c.pg_bin_dir).display()
            ),
        ),
        ("pg_user", format!("\"{}\"", c.pg_user)),
    ];
    let mut settings = settings.to_vec();
    if let Some(rs) = &c.remote_storage {
        settings.push(("remote_storage", remote_storage_toml(rs)?));
    }
    if let Some(api) = repo.control_plane_api() {
        settings.push(("control_plane_api", format!("\"{api}\"")));
        if c.auth {
            let token = auth::generations_token_path(&repo.dir);
            settings.push((
                "control_plane_api_token_path",
                format!("\"{}\"", token.display()),
            ));
        }
    }
    if c.auth {
        let key = format!("\"{}\"", auth::public_key_path(&repo.dir).display());
        let token = format!("\"{}\"", auth::pageserver_token_path(&repo.dir).display());
        settings.extend([
            ("http_auth_public_key_path", key.clone()),
            ("pg_auth_public_key_path", key),
            ("safekeeper_auth_token_path", token),
        ]);
    }
    let mut cmd = tokio::process::Command::new(c.bin_dir.join("pageserver"));
    cmd.arg("--workdir")
        .arg(&workdir)
        .arg("--init")
        .arg("--id")
        .arg(p.id.to_string());
    for (k, v) in settings {
        cmd.arg("-c").arg(format!("{k}={v}"));
    }
    let out = cmd.output().await.context("running pageserver --init")?;
    if !out.status.success() {
        bail!(
            "pageserver --init failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `strata start`: every service, in order; on failure, stops what it started.
pub async fn start(repo: &Repo) -> anyhow::Result<()> {
    let mut started: Vec<Service> = Vec::new();
    for s in services(repo) {
        let was_running = s.state() != State::Stopped;
        match s.start(START_TIMEOUT).await {
            Ok(pid) => {
                if was_running {
                    println!("  {:<18} already running (pid {pid})", s.name);
                } else {
                    println!(
                        "  {:<18} started (pid {pid}), log {}",
                        s.name,
                        s.log_path().display()
                    );
                    started.push(s);
                }
            }
            Err(e) => {
                for t in started.iter().rev() {
                    let _ = t.stop(true, STOP_GRACE).await;
                }
                return Err(e.context(format!(
                    "starting {} failed; stopped the {} service(s) this command had started",
                    s.name,
                    started.len()
                )));
            }
        }
    }
    println!("strata: cluster running; `strata status` shows it, `strata stop` stops it");
    Ok(())
}

/// `strata stop`: every service, in reverse order.
pub async fn stop(repo: &Repo, args: &StopArgs) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    for s in services(repo).iter().rev() {
        match s.stop(args.immediate, STOP_GRACE).await {
            Ok(true) => println!("  {:<18} stopped", s.name),
            Ok(false) => println!("  {:<18} was not running", s.name),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// `strata status`.
pub fn status(repo: &Repo) {
    println!("repository {}", repo.dir.display());
    for s in services(repo) {
        let state = match s.state() {
            State::Running(pid) => format!("running (pid {pid})"),
            State::Stopped => "stopped".into(),
        };
        println!("  {:<18} {:<22} {}", s.name, state, s.ready_url);
    }
}

/// Which service `strata pageserver|safekeeper …` names.
#[derive(clap::Args, Debug)]
pub struct OneServiceArgs {
    /// The node id (default: the first).
    #[arg(long)]
    pub id: Option<u64>,
    /// With stop/restart: SIGKILL instead of a clean shutdown.
    #[arg(long)]
    pub immediate: bool,
}

/// `start`, `stop` or `restart` of one service.
pub async fn one_service(
    service: Service,
    action: &str,
    args: &OneServiceArgs,
) -> anyhow::Result<()> {
    if action != "start" {
        let was = service.stop(args.immediate, STOP_GRACE).await?;
        println!(
            "  {:<18} {}",
            service.name,
            if was { "stopped" } else { "was not running" }
        );
    }
    if action != "stop" {
        let pid = service.start(START_TIMEOUT).await?;
        println!(
            "  {:<18} running (pid {pid}), log {}",
            service.name,
            service.log_path().display()
        );
    }
    Ok(())
}
