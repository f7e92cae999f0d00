//! The walproposer: makes a stock PostgreSQL 15 commit only what a quorum of safekeepers
//! has fsynced. `sync` settles the safekeepers before a compute starts and prints the LSN to
//! start from; `stream` is the compute's sidecar. See the crate docs and docs/walproposer.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use safekeeper_api::ServerInfo;
use tokio_util::sync::CancellationToken;
use utils::crashsafe::Sync;
use utils::http::{HttpOptions, StatusInfo};
use utils::logging::LogFormat;
use utils::{Lsn, TenantId, TenantTimelineId, TimelineId};
use walproposer::compute::Conninfo;
use walproposer::driver::{DEFAULT_CONNECT_TIMEOUT, SafekeepersConf};
use walproposer::{stream_mode, sync_mode};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The proposer of the safekeeper quorum, for a stock PostgreSQL compute"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Run an election and recovery until the reachable safekeepers agree on one WAL end,
    /// print it (`X/YYYYYYYY`) on stdout and exit 0.
    Sync(SyncArgs),
    /// Stream the local Postgres's WAL to the safekeepers and report the quorum commit LSN
    /// back to it as a synchronous standby.
    Stream(StreamArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// The safekeepers' libpq addresses, comma-separated (`host:port,host:port,…`).
    #[arg(long, value_delimiter = ',', required = true)]
    safekeepers: Vec<String>,
    /// The tenant.
    #[arg(long)]
    tenant_id: TenantId,
    /// The timeline.
    #[arg(long)]
    timeline_id: TimelineId,
    /// Let the greeting create the timeline on a safekeeper that does not have it (by
    /// default the timeline must exist, created with the safekeepers' HTTP API).
    #[arg(long)]
    create_timeline: bool,
    /// A file holding the JWT for the safekeepers (tenant scope).
    #[arg(long, conflicts_with = "auth_token")]
    auth_token_file: Option<PathBuf>,
    /// The JWT for the safekeepers.
    #[arg(long, env = "STRATA_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Give up (exit 1) if no quorum elects us within this many seconds.
    #[arg(long, default_value_t = 60.0)]
    election_timeout: f64,
    /// How long one connection attempt to a safekeeper may take, in seconds.
    #[arg(long, default_value_t = DEFAULT_CONNECT_TIMEOUT.as_secs_f64())]
    connect_timeout: f64,
    /// Serve `/v1/status` and `/metrics` (Prometheus) on this address.
    #[arg(long)]
    listen_http: Option<std::net::SocketAddr>,
    /// Log format: plain or json (logs go to stderr).
    #[arg(long, default_value = "plain")]
    log_format: LogFormat,
}

#[derive(Debug, Args)]
struct SyncArgs {
    #[command(flatten)]
    common: Common,
    /// Where the timeline's first term starts if no safekeeper has any WAL for it.
    #[arg(long)]
    start_lsn: Option<Lsn>,
    /// `server_version_num` announced to the safekeepers (only the major version matters).
    #[arg(long, default_value_t = 150000)]
    pg_version: u32,
    /// WAL segment size of the cluster.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    wal_seg_size: u32,
    /// Give up if the whole sync takes longer than this many seconds.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// Once a quorum has the end, wait this many seconds for the other reachable
    /// safekeepers to confirm it.
    #[arg(long, default_value_t = 10.0)]
    settle_timeout: f64,
}

#[derive(Debug, Args)]
struct StreamArgs {
    #[command(flatten)]
    common: Common,
    /// The local Postgres, as a libpq key=value string (host, port, user, password).
    #[arg(long)]
    pg: Conninfo,
    /// The LSN this compute started from (what `walproposer sync` printed).
    #[arg(long)]
    start_lsn: Lsn,
    /// The directory for the sidecar's state (the terms it won); next to the compute's
    /// data directory, and discarded with it.
    #[arg(long)]
    state_dir: PathBuf,
    /// The physical replication slot on Postgres (created if missing).
    #[arg(long, default_value = "walproposer")]
    slot: String,
    /// Our application_name: what `synchronous_standby_names` must name.
    #[arg(long, default_value = "walproposer")]
    application_name: String,
    /// Most uncommitted WAL kept in memory, in MiB; beyond it reading from Postgres pauses.
    #[arg(long, default_value_t = 128)]
    max_buffer_mib: u64,
    /// Do not fsync the state file (tests only).
    #[arg(long)]
    no_sync: bool,
}

fn seconds(what: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .with_context(|| format!("--{what} {s} is not a duration in seconds"))
}

impl Common {
    fn safekeepers(&self) -> anyhow::Result<SafekeepersConf> {
        let auth_token = match (&self.auth_token_file, &self.auth_token) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading --auth-token-file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, t) => t.clone(),
        };
        for a in &self.safekeepers {
            if a.is_empty() || !a.contains(':') {
                anyhow::bail!("--safekeepers: {a:?} is not host:port");
            }
        }
        Ok(SafekeepersConf {
            addrs: self.safekeepers.clone(),
            ttid: TenantTimelineId::new(self.tenant_id, self.timeline_id),
            auth_token,
            allow_timeline_creation: self.create_timeline,
            connect_timeout: seconds("connect-timeout", self.connect_timeout)?,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.mode {
        Mode::Sync(a) => a.common.log_format,
        Mode::Stream(a) => a.common.log_format,
    };
    if let Err(e) = utils::logging::init(log_format) {
        eprintln!("walproposer: setting up logging: {e}");
        return ExitCode::FAILURE;
    }
    // One thread: the sidecar mostly moves small messages between sockets, and a
    // multi-threaded runtime pays cross-thread wake-ups for every one of them.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("walproposer failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let _signals = utils::shutdown::spawn_signal_handler(cancel.clone())
        .context("installing signal handlers")?;
    let listen_http = match &cli.mode {
        Mode::Sync(a) => a.common.listen_http,
        Mode::Stream(a) => a.common.listen_http,
    };
    if let Some(addr) = listen_http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --listen-http {addr}"))?;
        let router = utils::http::build_router(
            utoipa_axum::router::OpenApiRouter::new(),
            HttpOptions {
                status: StatusInfo {
                    service: "walproposer".into(),
                    id: None,
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                auth: None,
                admin_scopes: Vec::new(),
            },
        );
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = utils::http::serve(listener, router, cancel).await {
                tracing::error!("HTTP server failed: {e}");
            }
        });
    }
    match cli.mode {
        Mode::Sync(a) => {
            let sks = a.common.safekeepers()?;
            let conf = sync_mode::SyncConf {
                bootstrap_lsn: a.start_lsn,
                server: ServerInfo {
                    pg_version: a.pg_version,
                    system_id: 0,
                    wal_seg_size: a.wal_seg_size,
                },
                election_timeout: seconds("election-timeout", a.common.election_timeout)?,
                total_timeout: seconds("timeout", a.timeout)?,
                settle_timeout: seconds("settle-timeout", a.settle_timeout)?,
            };
            let lsn = sync_mode::run(sks, conf, cancel).await?;
            println!("{lsn}");
            Ok(())
        }
        Mode::Stream(a) => {
            let sks = a.common.safekeepers()?;
            let conf = stream_mode::StreamConf {
                pg: a.pg,
                application_name: a.application_name,
                slot: a.slot,
                start_lsn: a.start_lsn,
                state_dir: a.state_dir,
                election_timeout: seconds("election-timeout", a.common.election_timeout)?,
                max_buffer_bytes: a.max_buffer_mib.saturating_mul(1024 * 1024),
                sync: Sync::from_no_sync(a.no_sync),
            };
            stream_mode::run(sks, conf, cancel).await?;
            Ok(())
        }
    }
}
