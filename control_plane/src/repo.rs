//! The local cluster's repository: `$STRATA_REPO_DIR` (default `./.strata`).
//!
//! ```text
//! <repo>/config.toml        what `strata init` chose: ports, binaries, services
//! <repo>/.lock              flock held by every command but `init` (one at a time)
//! <repo>/nats/              nats-server's log and pid file
//! <repo>/pageserver_<id>/   a pageserver's workdir (pageserver.toml, tenants/, log)
//! <repo>/safekeeper_<id>/   a safekeeper's data directory (timelines, log)
//! <repo>/auth/              with `--auth`: the JWT key pair and service tokens (auth.rs)
//! ```
//!
//! Invariant: `config.toml` is written once, crash-safely (temp file, fsync, rename, fsync
//! dir), after every directory it names exists; a repository without it is not a
//! repository, so an interrupted `init` is simply run again with `--force`.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use utils::crashsafe::{self, Sync};

/// The config file's name inside the repository.
pub const CONFIG_FILE: &str = "config.toml";

/// What `strata init` recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where `pageserver`, `safekeeper` and `walproposer` are.
    pub bin_dir: PathBuf,
    /// PostgreSQL 15's server binaries.
    pub pg_bin_dir: PathBuf,
    /// The unprivileged user that runs PostgreSQL when we are root.
    pub pg_user: String,
    /// The broker.
    pub nats: NatsConfig,
    /// The pageservers.
    pub pageservers: Vec<ServiceConfig>,
    /// The safekeepers.
    pub safekeepers: Vec<ServiceConfig>,
    /// JWT auth on every service's libpq and HTTP port (keys in `<repo>/auth`, auth.rs).
    #[serde(default)]
    pub auth: bool,
    /// The pageservers' object storage (`strata init --remote-storage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_storage: Option<remote_storage::RemoteStorageConfig>,
    /// The storage controller that issues the pageservers' generations (with remote
    /// storage: two pageservers must never both own a tenant's objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_controller: Option<StorageControllerConfig>,
}

/// The storage controller's port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageControllerConfig {
    /// HTTP port.
    pub port: u16,
}

/// The broker's ports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Client port.
    pub port: u16,
    /// HTTP monitoring port (`/healthz`).
    pub monitor_port: u16,
}

/// A pageserver or safekeeper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Node id.
    pub id: u64,
    /// libpq port.
    pub pg_port: u16,
    /// HTTP port.
    pub http_port: u16,
}

/// An opened repository.
#[derive(Debug)]
pub struct Repo {
    /// Its directory (absolute).
    pub dir: PathBuf,
    /// Its config.
    pub config: ClusterConfig,
    _lock: Option<Flock<File>>,
}

/// The repository directory: `$STRATA_REPO_DIR`, else `./.strata`, made absolute.
pub fn repo_dir(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match arg {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from(".strata"),
    };
    Ok(if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .context("the current directory")?
            .join(dir)
    })
}

impl Repo {
    /// Opens the repository at `dir` and takes its lock (waiting for another command to
    /// finish, with a message if it has to wait).
    pub fn open(dir: &Path) -> anyhow::Result<Repo> {
        let config_path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no Strata repository at {} (run `strata init` first, or set STRATA_REPO_DIR)",
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", config_path.display())),
        };
        let config: ClusterConfig = toml::from_str(&text)
            .with_context(|| format!("{}: not a valid cluster config", config_path.display()))?;
        let lock = lock_repo(dir)?;
        Ok(Repo {
            dir: dir.to_path_buf(),
            config,
            _lock: Some(lock),
        })
    }

    /// Writes a new repository's config (the directories must exist).
    pub fn create(dir: &Path, config: ClusterConfig) -> anyhow::Result<Repo> {
        let text = toml::to_string_pretty(&config).context("encoding the cluster config")?;
        crashsafe::overwrite(&dir.join(CONFIG_FILE), text.as_bytes(), Sync::Yes)
            .with_context(|| format!("writing {}", dir.join(CONFIG_FILE).display()))?;
        Ok(Repo {
            dir: dir.to_path_buf(),
            config,
            _lock: None,
        })
    }

    /// A repository that is being initialized: no lock, no config file yet.
    pub fn staged(dir: &Path, config: ClusterConfig) -> Repo {
        Repo {
            dir: dir.to_path_buf(),
            config,
            _lock: None,
        }
    }

    /// The broker's directory.
    pub fn nats_dir(&self) -> PathBuf {
        self.dir.join("nats")
    }

    /// The storage controller's data directory.
    pub fn storage_controller_dir(&self) -> PathBuf {
        self.dir.join("storage_controller")
    }

    /// The pageservers' `control_plane_api`, when there is a storage controller.
    pub fn control_plane_api(&self) -> Option<String> {
        self.config
            .storage_controller
            .as_ref()
            .map(|c| format!("http://127.0.0.1:{}/upcall/v1/", c.port))
    }

    /// A pageserver's workdir.
    pub fn pageserver_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("pageserver_{id}"))
    }

    /// A safekeeper's data directory.
    pub fn safekeeper_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("safekeeper_{id}"))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn broker_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.config.nats.port)
    }

    /// The pageserver `id` (`None`: the first).
    pub fn pageserver(&self, id: Option<u64>) -> anyhow::Result<&ServiceConfig> {
        find(&self.config.pageservers, id, "pageserver")
    }

    /// The safekeeper `id` (`None`: the first).
    pub fn safekeeper(&self, id: Option<u64>) -> anyhow::Result<&ServiceConfig> {
        find(&self.config.safekeepers, id, "safekeeper")
    }
}

fn find<'a>(
    list: &'a [ServiceConfig],
    id: Option<u64>,
    what: &str,
) -> anyhow::Result<&'a ServiceConfig> {
    match id {
        None => list
            .first()
            .with_context(|| format!("the cluster has no {what}")),
        Some(id) => list.iter().find(|s| s.id == id).with_context(|| {
            let ids: Vec<String> = list.iter().map(|s| s.id.to_string()).collect();
            format!(
                "no {what} with id {id} (the cluster has {})",
                ids.join(", ")
            )
        }),
    }
}

fn lock_repo(dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = dir.join(".lock");
    let open = || {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    };
    match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            eprintln!("strata: waiting for another strata command on this repository to finish");
            Flock::lock(open()?, FlockArg::LockExclusive)
                .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
        }
        Err((_, e)) => bail!("locking {}: {e}", path.display()),
    }
}

/// `n` distinct free TCP ports on 127.0.0.1 (bound together, then released).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("finding free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig {
            bin_dir: "/bin".into(),
            pg_bin_dir: "/pg".into(),
            pg_user: "strata".into(),
            nats: NatsConfig {
                port: 1,
                monitor_port: 2,
            },
            pageservers: vec![ServiceConfig {
                id: 1,
                pg_port: 3,
                http_port: 4,
            }],
            safekeepers: vec![],
            auth: false,
            remote_storage: None,
            storage_controller: None,
        }
    }

    #[test]
    fn a_config_round_trips_and_a_second_command_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path(), config()).unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        assert_eq!(repo.pageserver(None).unwrap().http_port, 4);
        assert!(repo.pageserver(Some(7)).is_err());
        assert!(repo.safekeeper(None).is_err());
        // The lock is held: a non-blocking attempt fails.
        let f = File::options()
            .write(true)
            .open(dir.path().join(".lock"))
            .unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err());
        drop(repo);
        let f = File::options()
            .write(true)
            .open(dir.path().join(".lock"))
            .unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
    }

    #[test]
    fn no_repo_and_a_corrupt_config_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = Repo::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("strata init"), "{e}");
        std::fs::write(dir.path().join(CONFIG_FILE), "bin_dir = 3").unwrap();
        let e = format!("{:#}", Repo::open(dir.path()).unwrap_err());
        assert!(e.contains("not a valid cluster config"), "{e}");
    }

    #[test]
    fn free_ports_are_distinct() {
        let p = free_ports(8).unwrap();
        let set: std::collections::BTreeSet<_> = p.iter().collect();
        assert_eq!(set.len(), 8);
    }
}
