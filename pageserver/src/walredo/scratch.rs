//! Scratch space for redo processes.
//!
//! Each redo process runs `postgres --single` on a private, minimal data directory
//! (`PG_VERSION`, `global/pg_control`, an empty `postgresql.conf`, `pg_notify/`): about
//! 10 kB, because the process never reads relation files (targets come in the request,
//! other blocks become sentinels). Redo still creates empty relation files and FSM/VM
//! side files there, so the directory lives on tmpfs (`/dev/shm` when present), is watched
//! for growth, and is wiped whenever its process is replaced.
//!
//! The scratch root holds the embedded `strata_walredo.so` (loaded by absolute path, so
//! nothing is installed into the system's PostgreSQL) and one `p<N>` directory per
//! process. `pg_control` comes from a one-time `initdb` (cached per process and binary
//! directory), the only PostgreSQL-15-valid control file we can be sure of.
//!
//! When the pageserver runs as root, PostgreSQL (which refuses root) runs as an
//! unprivileged user ([`RunAs`]); every directory it uses is owned by that user and the
//! scratch root is world-traversable.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::WalRedoError;

/// The redo module, built from `pgxn/strata_walredo` by `build.rs`.
static MODULE_SO: &[u8] = include_bytes!(env!("STRATA_WALREDO_SO"));

/// The unprivileged identity PostgreSQL processes run as when we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User name (for messages).
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric primary group id.
    pub gid: u32,
}

impl RunAs {
    /// Resolves `user` when running as root; `None` (run as ourselves) otherwise.
    pub fn for_current_process(user: &str) -> Result<Option<RunAs>, WalRedoError> {
        if !nix::unistd::Uid::effective().is_root() {
            return Ok(None);
        }
        match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => Ok(Some(RunAs {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })),
            Ok(None) => Err(WalRedoError::Setup(format!(
                "running as root, but the unprivileged user {user:?} that PostgreSQL must run as does not exist (./scripts/setup creates it)"
            ))),
            Err(e) => Err(WalRedoError::Setup(format!(
                "cannot look up user {user:?}: {e}"
            ))),
        }
    }

    fn chown(&self, path: &Path) -> Result<(), WalRedoError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| setup_err(format!("chown {} to {}", path.display(), self.name), e))
    }
}

fn setup_err(what: String, e: impl std::fmt::Display) -> WalRedoError {
    WalRedoError::Setup(format!("{what}: {e}"))
}

/// `PG_VERSION` and `global/pg_control` of a fresh PostgreSQL 15 cluster.
#[derive(Debug, Clone)]
struct Template {
    pg_version: Vec<u8>,
    pg_control: Vec<u8>,
}

/// Runs initdb once per binary directory for this process's lifetime.
fn template(pg_bin: &Path, run_as: Option<&RunAs>, work: &Path) -> Result<Template, WalRedoError> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Template>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = cache.get(pg_bin) {
        return Ok(t.clone());
    }
    let dir = work.join("initdb");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(|e| setup_err(format!("create {}", dir.display()), e))?;
    if let Some(r) = run_as {
        r.chown(&dir)?;
    }
    let mut cmd = Command::new(pg_bin.join("initdb"));
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args([
            "--no-sync",
            "--no-instructions",
            "-A",
            "trust",
            "-U",
            "strata_walredo",
        ])
        .env_clear()
        .env("LC_ALL", "C");
    if let Some(r) = run_as {
        use std::os::unix::process::CommandExt;
        cmd.uid(r.uid).gid(r.gid);
    }
    let out = cmd
        .output()
        .map_err(|e| setup_err(format!("run {}", pg_bin.join("initdb").display()), e))?;
    if !out.status.success() {
        return Err(WalRedoError::Setup(format!(
            "initdb for the redo template failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let read = |p: &str| {
        std::fs::read(dir.join("data").join(p))
            .map_err(|e| setup_err(format!("read template {p}"), e))
    };
    let t = Template {
        pg_version: read("PG_VERSION")?,
        pg_control: read("global/pg_control")?,
    };
    let _ = std::fs::remove_dir_all(&dir);
    cache.insert(pg_bin.to_path_buf(), t.clone());
    Ok(t)
}

/// The directory all of one manager's redo processes live under; removed on drop.
#[derive(Debug)]
pub struct ScratchRoot {
    path: PathBuf,
    module_path: PathBuf,
    run_as: Option<RunAs>,
    template: Template,
}

impl ScratchRoot {
    /// Creates `<parent>/strata-walredo-<pid>-<random>` with the module and a template.
    pub fn create(
        parent: &Path,
        pg_bin: &Path,
        run_as: Option<RunAs>,
    ) -> Result<Self, WalRedoError> {
        let path = parent.join(format!(
            "strata-walredo-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| setup_err(format!("create {}", path.display()), e))?;
        // Traversable by the unprivileged user; only we write here.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| setup_err(format!("chmod {}", path.display()), e))?;
        let module_path = path.join("strata_walredo.so");
        std::fs::write(&module_path, MODULE_SO)
            .map_err(|e| setup_err(format!("write {}", module_path.display()), e))?;
        std::fs::set_permissions(&module_path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| setup_err(format!("chmod {}", module_path.display()), e))?;
        let template = match template(pg_bin, run_as.as_ref(), &path) {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                return Err(e);
            }
        };
        Ok(ScratchRoot {
            path,
            module_path,
            run_as,
            template,
        })
    }

    /// Absolute path of the redo module, for `shared_preload_libraries`.
    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    /// Who processes run as.
    pub fn run_as(&self) -> Option<&RunAs> {
        self.run_as.as_ref()
    }

    /// Makes a fresh, minimal data directory `p<seq>` (wiping any old one).
    pub fn make_datadir(&self, seq: u64) -> Result<PathBuf, WalRedoError> {
        let dir = self.path.join(format!("p{seq}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mk = |p: &Path| {
            std::fs::create_dir(p).map_err(|e| setup_err(format!("create {}", p.display()), e))
        };
        mk(&dir)?;
        for sub in ["global", "pg_notify", "base"] {
            mk(&dir.join(sub))?;
        }
        let write = |p: PathBuf, data: &[u8]| {
            std::fs::write(&p, data).map_err(|e| setup_err(format!("write {}", p.display()), e))
        };
        write(dir.join("PG_VERSION"), &self.template.pg_version)?;
        write(dir.join("global/pg_control"), &self.template.pg_control)?;
        write(dir.join("postgresql.conf"), b"")?;
        // PostgreSQL insists on 0700 data directories it owns.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| setup_err(format!("chmod {}", dir.display()), e))?;
        if let Some(r) = &self.run_as {
            for p in [
                dir.clone(),
                dir.join("global"),
                dir.join("pg_notify"),
                dir.join("base"),
                dir.join("PG_VERSION"),
                dir.join("global/pg_control"),
                dir.join("postgresql.conf"),
            ] {
                r.chown(&p)?;
            }
        }
        Ok(dir)
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("cannot remove redo scratch {}: {e}", self.path.display());
        }
    }
}

/// What a scratch directory costs: its files' bytes plus [`ENTRY_COST`] per entry, because
/// redo's side effects are mostly empty files (one inode each, per relation touched).
/// Best effort: unreadable entries count only their entry cost.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            ENTRY_COST
                + match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                    Err(_) => 0,
                }
        })
        .sum()
}

/// The nominal cost of one directory entry (an inode and its dentry in tmpfs).
pub const ENTRY_COST: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_files_count_towards_the_size() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(dir_size(dir.path()), 0);
        for i in 0..10 {
            std::fs::write(dir.path().join(format!("{i}_vm")), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/data"), [0u8; 100]).unwrap();
        assert_eq!(
            dir_size(dir.path()),
            10 * ENTRY_COST + ENTRY_COST + (ENTRY_COST + 100)
        );
    }
}
