//! `storage_controller`: the minimal control plane that issues attachment generations to
//! pageservers (`control_plane_api` in pageserver.toml points at its `/upcall/v1/`).
//!
//! It keeps each tenant's generation and node in a crash-safe JSON file in its data
//! directory ([`state`]); it is the seed of the storage controller that will place tenants
//! on several pageservers (ARCHITECTURE.md, "Control plane").

mod http;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::info;
use utils::auth::JwtAuth;
use utils::crashsafe::Sync;
use utils::http::{HttpOptions, StatusInfo};
use utils::logging::LogFormat;

/// The controller's pid file in its data directory.
const PID_FILE_NAME: &str = "storage_controller.pid";

/// Issues pageserver attachment generations and validates them.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Data directory (created if needed): holds the state file and the pid file.
    #[arg(short = 'D', long)]
    datadir: PathBuf,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:1234")]
    listen: String,
    /// Ed25519 public key (PEM file, or a directory of *.pem): JWTs are required when given.
    #[arg(long)]
    auth_public_key_path: Option<PathBuf>,
    /// Skip fsyncs (tests): survives a process crash, not a power loss.
    #[arg(long)]
    no_sync: bool,
    /// Log format: plain or json.
    #[arg(long, default_value = "plain")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = utils::logging::init(args.log_format) {
        eprintln!("storage_controller: setting up logging: {e}");
        return ExitCode::FAILURE;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("storage_controller failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.datadir)
        .with_context(|| format!("creating data directory {}", args.datadir.display()))?;
    let datadir = args
        .datadir
        .canonicalize()
        .with_context(|| format!("resolving data directory {}", args.datadir.display()))?;
    let _pid_guard = utils::pid_file::claim(&datadir.join(PID_FILE_NAME))?;
    utils::failpoint::init_from_env().context("FAILPOINTS")?;
    let state = state::ControllerState::load(&datadir, Sync::from_no_sync(args.no_sync))?;
    let auth = args
        .auth_public_key_path
        .as_ref()
        .map(|p| JwtAuth::from_path(p).map(Arc::new))
        .transpose()
        .context("loading the auth public key")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("storage_controller")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let _signals = utils::shutdown::spawn_signal_handler(cancel.clone())
            .context("installing signal handlers")?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let router = utils::http::build_router(
            http::routes(http::ApiState {
                state: Arc::new(tokio::sync::Mutex::new(state)),
            }),
            HttpOptions {
                status: StatusInfo {
                    service: "storage_controller".into(),
                    id: None,
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                auth,
                admin_scopes: http::ADMIN_SCOPES.to_vec(),
            },
        );
        info!(
            listen = %listener.local_addr()?,
            datadir = %datadir.display(),
            "storage controller starting"
        );
        utils::http::serve(listener, router, cancel)
            .await
            .context("serving HTTP")?;
        info!("storage controller stopped");
        Ok(())
    })
}
