//! `strata`: the command line for a local Strata cluster.
//!
//! `init` records a cluster (ports, binaries, service directories) in `$STRATA_REPO_DIR`
//! (default `./.strata`); `start`, `stop`, `status` and the per-service commands run its
//! services as background processes. Every command but `init` holds the repository's lock,
//! so concurrent invocations run one at a time. `doctor` checks the machine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod auth;
mod branches;
mod cluster;
mod doctor;
mod endpoint;
mod repo;
mod service;
mod size;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Run and inspect a local Strata cluster",
    after_help = "Examples:\n  strata init && strata start\n  strata status\n  strata safekeeper restart --id 2\n  strata stop"
)]
struct Cli {
    /// The cluster's repository directory.
    #[arg(long, global = true, env = "STRATA_REPO_DIR")]
    repo_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that this machine has everything a local cluster needs.
    Doctor(doctor::DoctorArgs),
    /// Create a cluster's repository: ports, binaries, service directories.
    Init(cluster::InitArgs),
    /// Start every service (NATS, safekeepers, pageservers), each awaited until ready.
    Start,
    /// Stop every service (pageservers first).
    Stop(cluster::StopArgs),
    /// Show which services run.
    Status,
    /// Tenants: create one (with its branch `main`), list them, show one's config.
    #[command(subcommand)]
    Tenant(TenantAction),
    /// Branches: branch one, create a new root, list them as a tree.
    #[command(subcommand)]
    Timeline(TimelineAction),
    /// Compute endpoints: stock PostgreSQL started from a basebackup, with its sidecar.
    #[command(subcommand)]
    Endpoint(EndpointAction),
    /// Print a JWT signed with the cluster's key (clusters initialized with --auth).
    Token(auth::TokenArgs),
    /// Start, stop or restart one pageserver.
    #[command(subcommand)]
    Pageserver(ServiceAction),
    /// Start, stop or restart one safekeeper.
    #[command(subcommand)]
    Safekeeper(ServiceAction),
}

#[derive(Subcommand, Debug)]
enum ServiceAction {
    /// Start it (no-op if running).
    Start(cluster::OneServiceArgs),
    /// Stop it.
    Stop(cluster::OneServiceArgs),
    /// Stop it, then start it.
    Restart(cluster::OneServiceArgs),
}

#[derive(Subcommand, Debug)]
enum TenantAction {
    /// A new tenant on the pageserver, bootstrapped by initdb as its branch `main`, and
    /// that timeline on every safekeeper.
    Create(branches::TenantCreateArgs),
    /// Every tenant on the pageserver.
    List,
    /// A tenant's config (overrides and effective values).
    Config(branches::TenantArg),
    /// A tenant's synthetic size and its breakdown (`--html FILE`: the picture too).
    Size(size::SizeArgs),
}

#[derive(Subcommand, Debug)]
enum TimelineAction {
    /// A new branch of a branch, at its last record LSN or at `--ancestor-start-lsn`.
    Branch(branches::BranchArgs),
    /// A new root branch, bootstrapped by initdb (shares no history with the others).
    Create(branches::CreateRootArgs),
    /// The tenant's branches as a tree, with their LSNs.
    List(branches::TenantArg),
}

#[derive(Subcommand, Debug)]
enum EndpointAction {
    /// Record an endpoint on a branch (a primary, or read-only with --lsn).
    Create(endpoint::CreateArgs),
    /// sync → wait → basebackup → postgres → sidecar; prints the connection string.
    Start(endpoint::NameArgs),
    /// Stop the sidecar and Postgres (and forget the endpoint with --destroy).
    Stop(endpoint::StopArgs),
    /// Every endpoint with its address, branch, timeline, LSN and status.
    List,
}

impl ServiceAction {
    fn parts(&self) -> (&'static str, &cluster::OneServiceArgs) {
        match self {
            ServiceAction::Start(a) => ("start", a),
            ServiceAction::Stop(a) => ("stop", a),
            ServiceAction::Restart(a) => ("restart", a),
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = repo::repo_dir(cli.repo_dir.as_deref())?;
    match cli.command {
        Command::Doctor(args) => return doctor::run(&args),
        Command::Init(args) => cluster::init(&dir, &args).await?,
        Command::Start => cluster::start(&repo::Repo::open(&dir)?).await?,
        Command::Stop(args) => {
            let repo = repo::Repo::open(&dir)?;
            endpoint::stop_all(&repo, args.immediate).await?;
            cluster::stop(&repo, &args).await?
        }
        Command::Endpoint(action) => {
            let repo = repo::Repo::open(&dir)?;
            match action {
                EndpointAction::Create(args) => endpoint::create(&repo, &args)?,
                EndpointAction::Start(args) => endpoint::start(&repo, &args).await?,
                EndpointAction::Stop(args) => endpoint::stop(&repo, &args).await?,
                EndpointAction::List => endpoint::list(&repo)?,
            }
        }
        Command::Status => cluster::status(&repo::Repo::open(&dir)?),
        Command::Token(args) => auth::print_token(&repo::Repo::open(&dir)?, &args)?,
        Command::Tenant(action) => {
            let repo = repo::Repo::open(&dir)?;
            match action {
                TenantAction::Create(args) => branches::tenant_create(&repo, &args).await?,
                TenantAction::List => branches::tenant_list(&repo).await?,
                TenantAction::Config(args) => branches::tenant_config(&repo, &args).await?,
                TenantAction::Size(args) => size::tenant_size(&repo, &args).await?,
            }
        }
        Command::Timeline(action) => {
            let repo = repo::Repo::open(&dir)?;
            match action {
                TimelineAction::Branch(args) => branches::branch(&repo, &args).await?,
                TimelineAction::Create(args) => branches::create_root(&repo, &args).await?,
                TimelineAction::List(args) => branches::timeline_list(&repo, &args).await?,
            }
        }
        Command::Pageserver(action) => {
            let repo = repo::Repo::open(&dir)?;
            let (verb, args) = action.parts();
            let service = cluster::pageserver_service(&repo, repo.pageserver(args.id)?);
            cluster::one_service(service, verb, args).await?;
        }
        Command::Safekeeper(action) => {
            let repo = repo::Repo::open(&dir)?;
            let (verb, args) = action.parts();
            let service = cluster::safekeeper_service(&repo, repo.safekeeper(args.id)?);
            cluster::one_service(service, verb, args).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
