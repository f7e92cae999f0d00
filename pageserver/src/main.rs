//! The `pageserver` binary: loads the tenants of a workdir and serves them on a libpq
//! port (page service) and an HTTP port (management API), ingesting WAL from safekeepers.
//!
//! Start-up order: logging, the pid-file lock of the workdir, `pageserver.toml` and
//! `identity.toml` (a bad key exits at once with one line naming it), failpoints, the redo
//! pool, the tenants, the listeners, then the servers. SIGTERM or SIGINT stops the servers
//! and every timeline's tasks and exits 0 (what was not flushed is re-ingested from the
//! safekeepers at the next start).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use pageserver::config::{CONFIG_FILE, IDENTITY_FILE, Identity, PageserverConfig};
use pageserver::control_plane_client::ControlPlaneClient;
use pageserver::deletion_queue::DeletionQueue;
use pageserver::http::{self as ps_http, ADMIN_SCOPES, ApiState};
use pageserver::page_cache::PageCache;
use pageserver::tenant::TenantResources;
use pageserver::tenant_manager::TenantManager;
use pageserver::walredo::{WalRedoConfig, WalRedoManager};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utils::NodeId;
use utils::auth::JwtAuth;
use utils::http::{HttpOptions, StatusInfo};
use utils::logging::LogFormat;

const PID_FILE_NAME: &str = "pageserver.pid";

/// The pageserver: keeps every version of every page and serves any page at any LSN.
#[derive(Debug, Parser)]
#[command(name = "pageserver", version, about)]
struct Args {
    /// The working directory (holds pageserver.toml, identity.toml and tenants/).
    #[arg(short = 'D', long, default_value = ".")]
    workdir: PathBuf,
    /// Write pageserver.toml (defaults plus -c overrides) and identity.toml, then exit.
    #[arg(long)]
    init: bool,
    /// The node id, with --init.
    #[arg(long)]
    id: Option<u64>,
    /// A config override `key=value` (TOML value), with --init; repeatable.
    #[arg(short = 'c', long = "config-override")]
    config_override: Vec<String>,
    /// Log format: plain or json.
    #[arg(long, default_value = "plain")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = utils::logging::init(args.log_format) {
        eprintln!("pageserver: setting up logging: {e}");
        return ExitCode::FAILURE;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, for people and for scripts that show the last line of the log.
            eprintln!("pageserver: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init(workdir: &Path, args: &Args) -> anyhow::Result<()> {
    let Some(id) = args.id else {
        bail!("--init needs --id N");
    };
    std::fs::create_dir_all(workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let conf_path = workdir.join(CONFIG_FILE);
    if conf_path.exists() {
        bail!("{} exists already", conf_path.display());
    }
    let text =
        PageserverConfig::with_overrides(&args.config_override).map_err(anyhow::Error::msg)?;
    let sync = utils::crashsafe::Sync::Yes;
    utils::crashsafe::overwrite(
        &workdir.join(IDENTITY_FILE),
        format!("id = {id}\n").as_bytes(),
        sync,
    )
    .with_context(|| format!("writing {IDENTITY_FILE}"))?;
    utils::crashsafe::overwrite(&conf_path, text.as_bytes(), sync)
        .with_context(|| format!("writing {CONFIG_FILE}"))?;
    // Parse what was written, so a bad override fails here and not at the next start.
    if let Err(e) = PageserverConfig::load(workdir) {
        let _ = std::fs::remove_file(&conf_path);
        return Err(e.into());
    }
    info!(id, workdir = %workdir.display(), "initialized the workdir");
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    let workdir = &args.workdir;
    if args.init {
        return init(workdir, &args);
    }
    let workdir = workdir
        .canonicalize()
        .with_context(|| format!("workdir {}", workdir.display()))?;
    let conf = PageserverConfig::load(&workdir)?;
    let identity = Identity::load(&workdir)?;
    let _pid_guard = utils::pid_file::claim(&workdir.join(PID_FILE_NAME))?;
    utils::failpoint::init_from_env().context("FAILPOINTS")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pageserver")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(workdir, conf, identity.id))
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

async fn serve(workdir: PathBuf, conf: PageserverConfig, node_id: NodeId) -> anyhow::Result<()> {
    let root = CancellationToken::new();
    let _signals = utils::shutdown::spawn_signal_handler(root.clone())
        .context("installing signal handlers")?;
    let http_auth = load_auth(&conf.http_auth_public_key_path, "HTTP")?;
    let pg_auth = load_auth(&conf.pg_auth_public_key_path, "libpq")?;
    let safekeeper_token = conf
        .safekeeper_auth_token_path
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|t| t.trim().to_string())
                .with_context(|| format!("reading safekeeper_auth_token_path {}", p.display()))
        })
        .transpose()?;
    if conf.no_sync {
        info!("no_sync: layer files and metadata are not fsynced");
    }
    let walredo = WalRedoManager::new(WalRedoConfig {
        pg_bin_dir: conf.pg_bin_dir(),
        pg_user: conf.pg_user.clone(),
        processes: conf.walredo_processes,
        // Used when /dev/shm cannot be (noexec in many containers).
        fallback_scratch_parent: workdir.join("walredo_scratch"),
        ..WalRedoConfig::default()
    })
    .context("starting the redo pool")?;
    let cache = Arc::new(PageCache::new(conf.page_cache_size));
    let remote = match &conf.remote_storage {
        Some(rc) => {
            let storage = remote_storage::GenericRemoteStorage::from_config(rc)
                .await
                .context("remote_storage")?
                .with_simulated_failures(&remote_storage::SimulatedFailures {
                    test_remote_failures: conf.test_remote_failures,
                    test_remote_failures_probability: conf.test_remote_failures_probability,
                });
            info!("remote storage: {}", storage.backend_name());
            Some(storage)
        }
        None => None,
    };
    let broker = match &conf.broker_endpoint {
        Some(ep) => Some(
            pageserver::walreceiver::Broker::start(ep, root.child_token())
                .await
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let pg_listener = tokio::net::TcpListener::bind(&conf.listen_pg_addr)
        .await
        .with_context(|| format!("binding the libpq port {}", conf.listen_pg_addr))?;
    let http_listener = tokio::net::TcpListener::bind(&conf.listen_http_addr)
        .await
        .with_context(|| format!("binding the HTTP port {}", conf.listen_http_addr))?;
    let control_plane = conf
        .control_plane_api
        .as_ref()
        .map(|api| {
            let token = conf
                .control_plane_api_token_path
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .map(|t| t.trim().to_string())
                        .with_context(|| {
                            format!("reading control_plane_api_token_path {}", p.display())
                        })
                })
                .transpose()?;
            ControlPlaneClient::new(api, token)
                .map(|c| c.for_node(node_id))
                .context("control_plane_api client")
        })
        .transpose()?;
    let deletions = match &remote {
        Some(storage) => Some(
            DeletionQueue::start(
                &workdir,
                storage.clone(),
                control_plane.clone(),
                utils::crashsafe::Sync::from_no_sync(conf.no_sync),
                root.child_token(),
            )
            .context("starting the deletion queue")?,
        ),
        None => None,
    };
    // The control plane says which tenants are ours, each in a new generation.
    let attached = match &control_plane {
        Some(cp) => {
            let a = tokio::select! {
                r = cp.re_attach(node_id, &root) => r.context("re-attach upcall")?,
                _ = root.cancelled() => return Ok(()),
            };
            info!(
                "re-attach: the control plane gives this node {} tenants",
                a.len()
            );
            Some(a)
        }
        None => None,
    };
    let conf = Arc::new(conf);
    let res = TenantResources {
        walredo: Arc::new(walredo),
        cache,
        conf: conf.clone(),
        workdir: workdir.clone(),
        broker,
        safekeeper_token,
        node_id,
        remote,
        deletions: deletions.clone(),
    };
    let _ = std::fs::remove_dir_all(workdir.join("tmp"));
    let (tenants, to_attach) = {
        let res = res.clone();
        tokio::task::spawn_blocking(move || TenantManager::load(res, attached.as_ref()))
            .await
            .context("loading tenants")?
            .context("loading tenants")?
    };
    let tenants = Arc::new(tenants);
    tenants.activate_all();
    // Tenants the control plane gives us that the local disk lacks (a lost or new disk):
    // rebuilt from object storage in the background.
    for (id, generation) in to_attach {
        let tenants = tenants.clone();
        tokio::spawn(async move {
            match tenants.attach(id, generation, None).await {
                Ok(_) => info!(tenant_id = %id, %generation, "attached at start-up"),
                Err(e) => warn!(tenant_id = %id, "attach at start-up failed: {e}"),
            }
        });
    }
    info!(id = node_id.0, workdir = %workdir.display(),
        pg = %pg_listener.local_addr()?, http = %http_listener.local_addr()?,
        tenants = tenants.list().len(), "pageserver starting");

    let router = utils::http::build_router(
        ps_http::routes(ApiState {
            tenants: tenants.clone(),
            wait_lsn_timeout: conf.wait_lsn_timeout,
            wait_lsn_max_timeout: conf.wait_lsn_max_timeout,
        }),
        HttpOptions {
            status: StatusInfo {
                service: "pageserver".into(),
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
    let page_task = tokio::spawn(pageserver::page_service::serve(
        pg_listener,
        tenants.clone(),
        pg_auth,
        conf.wait_lsn_timeout,
        root.child_token(),
    ));

    let size_task = tokio::spawn(pageserver::tenant::size::refresh_in_background(
        tenants.clone(),
        conf.synthetic_size_calculation_interval,
        root.child_token(),
    ));
    let eviction_task = conf.disk_usage_based_eviction.clone().map(|c| {
        tokio::spawn(pageserver::disk_usage_eviction::run(
            tenants.clone(),
            workdir.clone(),
            c,
            root.child_token(),
        ))
    });

    root.cancelled().await;
    info!("shutting down");
    size_task.abort();
    if let Some(t) = eviction_task {
        t.abort();
    }
    tenants
        .drain_uploads(std::time::Duration::from_secs(10))
        .await;
    tenants.shutdown();
    if let Err(e) = page_task.await {
        warn!("page service task failed: {e}");
    }
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("HTTP server failed: {e}"),
        Err(e) => warn!("HTTP server task failed: {e}"),
    }
    // Lists not executed yet are durable: the next start resumes them.
    if let Some(d) = &deletions
        && d.pending() > 0
    {
        info!("{} deletion lists left for the next start", d.pending());
    }
    res.walredo.shutdown().await;
    info!("shut down");
    Ok(())
}
