//! The `safekeeper` binary: loads the timelines of a data directory and serves them on a
//! libpq port (walproposers, pageservers, standbys) and an HTTP port (management API).
//!
//! Start-up order: logging, the pid-file lock of the data directory, the node id file,
//! failpoints, timelines, listeners, then the servers and background tasks. SIGTERM or
//! SIGINT stops accepting, ends connections (a WAL push flushes what it received first),
//! persists every timeline's positions and exits 0; a second signal or SIGQUIT exits at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use safekeeper::SafeKeeperConf;
use safekeeper::background::{self, BackgroundConf};
use safekeeper::global_timelines::GlobalTimelines;
use safekeeper::http::{self as sk_http, ADMIN_SCOPES, ApiState};
use safekeeper::wal_service::{self, WalServiceConf};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utils::NodeId;
use utils::auth::JwtAuth;
use utils::http::{HttpOptions, StatusInfo};
use utils::logging::LogFormat;

/// The file in the data directory that records which node owns it.
const ID_FILE_NAME: &str = "safekeeper.id";
/// The pid file (and lock) of the data directory.
const PID_FILE_NAME: &str = "safekeeper.pid";

/// The safekeeper: one acceptor of the quorum that makes WAL durable.
#[derive(Debug, Parser)]
#[command(name = "safekeeper", version, about)]
struct Args {
    /// This safekeeper's node id. Required the first time a data directory is used; after
    /// that it must match the id recorded there (or be omitted).
    #[arg(long)]
    id: Option<u64>,
    /// The data directory.
    #[arg(short = 'D', long, default_value = ".")]
    datadir: PathBuf,
    /// Where to listen for libpq connections (walproposers, pageservers, standbys).
    #[arg(short = 'l', long, default_value = "127.0.0.1:5454")]
    listen_pg: String,
    /// The libpq address published to the broker (default: --listen-pg).
    #[arg(long)]
    advertise_pg: Option<String>,
    /// Where to listen for the HTTP management API.
    #[arg(long, default_value = "127.0.0.1:7676")]
    listen_http: String,
    /// The NATS broker URL (nats://host:port); without it no heartbeats are exchanged.
    #[arg(long)]
    broker_endpoint: Option<String>,
    /// Skip fsyncs: survives a process crash but not a power loss. For tests only.
    #[arg(short = 'n', long)]
    no_sync: bool,
    /// Ed25519 public key (PEM file, or a directory of *.pem) for JWTs on the libpq port.
    #[arg(long)]
    pg_auth_public_key_path: Option<PathBuf>,
    /// Ed25519 public key (PEM file, or a directory of *.pem) for JWTs on the HTTP port.
    #[arg(long)]
    http_auth_public_key_path: Option<PathBuf>,
    /// Write the node id into the data directory (created if needed) and exit.
    #[arg(long)]
    init: bool,
    /// Log format: plain or json.
    #[arg(long, default_value = "plain")]
    log_format: LogFormat,
    /// How often every timeline's in-memory positions are persisted if they changed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300s")]
    control_file_save_interval: Duration,
    /// How often WAL below the removal horizon is deleted.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    wal_removal_interval: Duration,
    /// How often each timeline's state is published to the broker.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    broker_publish_interval: Duration,
    /// Availability zone, published in heartbeats.
    #[arg(long)]
    availability_zone: Option<String>,
    /// WAL removal keeps the WAL a peer safekeeper still lacks while it lags by at most this
    /// many MiB (as its heartbeats last said); a peer further behind must recover otherwise.
    #[arg(long, default_value_t = safekeeper::DEFAULT_MAX_PEER_LAG >> 20)]
    max_peer_lag_mib: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = utils::logging::init(args.log_format) {
        eprintln!("safekeeper: setting up logging: {e}");
        return ExitCode::FAILURE;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("safekeeper failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let datadir = &args.datadir;
    std::fs::create_dir_all(datadir)
        .with_context(|| format!("creating data directory {}", datadir.display()))?;
    let datadir = datadir
        .canonicalize()
        .with_context(|| format!("resolving data directory {}", datadir.display()))?;
    let _pid_guard = utils::pid_file::claim(&datadir.join(PID_FILE_NAME))?;
    let node_id = resolve_node_id(&datadir, args.id, args.no_sync)?;
    if args.init {
        info!(id = node_id.0, datadir = %datadir.display(), "initialized data directory");
        return Ok(());
    }
    utils::failpoint::init_from_env().context("FAILPOINTS")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("safekeeper")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args, datadir, node_id))
}

/// Reads, checks or writes `<datadir>/safekeeper.id`.
fn resolve_node_id(datadir: &Path, id: Option<u64>, no_sync: bool) -> anyhow::Result<NodeId> {
    let path = datadir.join(ID_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded: u64 = text.trim().parse().with_context(|| {
                format!("{} holds {:?}, not a node id", path.display(), text.trim())
            })?;
            if let Some(id) = id
                && id != recorded
            {
                bail!(
                    "data directory {} belongs to safekeeper {recorded}, not {id} (see {})",
                    datadir.display(),
                    path.display()
                );
            }
            Ok(NodeId(recorded))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(id) = id else {
                bail!(
                    "{} does not exist: give the node id with --id (e.g. `safekeeper --init --id 1 -D {}`)",
                    path.display(),
                    datadir.display()
                );
            };
            utils::crashsafe::overwrite(
                &path,
                format!("{id}\n").as_bytes(),
                utils::crashsafe::Sync::from_no_sync(no_sync),
            )
            .with_context(|| format!("writing {}", path.display()))?;
            info!(id, path = %path.display(), "recorded node id");
            Ok(NodeId(id))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn load_auth(path: &Option<PathBuf>, what: &str) -> anyhow::Result<Option<Arc<JwtAuth>>> {
    path.as_ref()
        .map(|p| {
            JwtAuth::from_path(p)
                .map(Arc::new)
                .with_context(|| format!("loading the {what} auth public key"))
        })
        .transpose()
}

async fn serve(args: Args, datadir: PathBuf, node_id: NodeId) -> anyhow::Result<()> {
    safekeeper::metrics::register_all();
    let root = CancellationToken::new();
    let _signals = utils::shutdown::spawn_signal_handler(root.clone())
        .context("installing signal handlers")?;
    let conf = SafeKeeperConf {
        datadir: datadir.clone(),
        my_id: node_id,
        no_sync: args.no_sync,
        max_peer_lag: args.max_peer_lag_mib.saturating_mul(1 << 20),
    };
    if args.no_sync {
        info!("--no-sync: WAL and control files are not fsynced");
    }
    let pg_auth = load_auth(&args.pg_auth_public_key_path, "libpq")?;
    let http_auth = load_auth(&args.http_auth_public_key_path, "HTTP")?;

    let timelines = {
        let conf = conf.clone();
        let cancel = root.clone();
        tokio::task::spawn_blocking(move || GlobalTimelines::load(conf, cancel))
            .await
            .context("loading timelines")?
            .context("loading timelines")?
    };
    let timelines = Arc::new(timelines);
    for (ttid, e) in timelines.broken() {
        warn!(%ttid, "timeline is broken and will not be served: {e}");
    }

    let pg_listener = tokio::net::TcpListener::bind(&args.listen_pg)
        .await
        .with_context(|| format!("binding the libpq port {}", args.listen_pg))?;
    let http_listener = tokio::net::TcpListener::bind(&args.listen_http)
        .await
        .with_context(|| format!("binding the HTTP port {}", args.listen_http))?;
    let pg_addr = pg_listener.local_addr()?.to_string();
    let http_addr = http_listener.local_addr()?.to_string();
    info!(id = node_id.0, datadir = %datadir.display(), pg = %pg_addr, http = %http_addr,
        timelines = timelines.list().len(), broken = timelines.broken().len(), "safekeeper starting");

    let router = utils::http::build_router(
        sk_http::routes(ApiState {
            timelines: Arc::clone(&timelines),
            node_id,
        }),
        HttpOptions {
            status: StatusInfo {
                service: "safekeeper".into(),
                id: Some(node_id),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            auth: http_auth,
            admin_scopes: ADMIN_SCOPES.to_vec(),
        },
    );
    let http_task = tokio::spawn(utils::http::serve(
        http_listener,
        router,
        root.child_token(),
    ));

    let wal_conf = Arc::new(WalServiceConf {
        node_id,
        auth: pg_auth,
    });
    let wal_task = tokio::spawn(wal_service::serve(
        pg_listener,
        Arc::clone(&timelines),
        wal_conf,
        root.child_token(),
    ));

    let background_tasks = background::spawn_all(
        Arc::clone(&timelines),
        BackgroundConf {
            node_id,
            control_file_save_interval: args.control_file_save_interval,
            wal_removal_interval: args.wal_removal_interval,
            broker_endpoint: args.broker_endpoint.clone(),
            broker_publish_interval: args.broker_publish_interval,
            advertise_pg: args.advertise_pg.clone().unwrap_or(pg_addr),
            advertise_http: http_addr,
            availability_zone: args.availability_zone.clone(),
        },
        root.child_token(),
    );

    root.cancelled().await;
    info!("shutting down");
    if let Err(e) = wal_task.await {
        warn!("libpq server task failed: {e}");
    }
    for t in background_tasks {
        let _ = t.await;
    }
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("HTTP server failed: {e}"),
        Err(e) => warn!("HTTP server task failed: {e}"),
    }
    let persisted = tokio::task::spawn_blocking(move || background::persist_all(&timelines)).await;
    if let Err(e) = persisted {
        warn!("persisting control files at shutdown failed: {e}");
    }
    info!("shut down");
    Ok(())
}
