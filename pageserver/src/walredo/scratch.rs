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
//! `/dev/shm` is often unusable for this in containers (mounted `noexec`, so the module
//! cannot be mapped, or a few MiB in size): [`ScratchRoot::create`] checks the preferred
//! parent and falls back to a private directory (under the pageserver's workdir) with a log
//! line. The root is made with `mkdir`, never reused: a directory of that name that
//! already exists and belongs to someone else is refused, since whoever owns it could
//! swap the module we load.
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
    /// Creates `<parent>/strata-walredo-<pid>-<random>` with the module and a template;
    /// under `fallback` instead when `parent` cannot hold it (mounted `noexec`, or the
    /// module cannot be written there).
    pub fn create(
        parent: &Path,
        fallback: &Path,
        pg_bin: &Path,
        run_as: Option<RunAs>,
    ) -> Result<Self, WalRedoError> {
        let preferred = match unusable_reason(parent) {
            Some(why) => Err(WalRedoError::Setup(why)),
            None => Self::create_in(parent, pg_bin, run_as.clone()),
        };
        match preferred {
            Ok(root) => Ok(root),
            Err(e) if parent != fallback => {
                tracing::warn!(
                    "redo scratch space cannot be under {} ({e}); using {} instead",
                    parent.display(),
                    fallback.display()
                );
                std::fs::create_dir_all(fallback)
                    .map_err(|e| setup_err(format!("create {}", fallback.display()), e))?;
                if let Some(why) = unusable_reason(fallback) {
                    return Err(WalRedoError::Setup(why));
                }
                Self::create_in(fallback, pg_bin, run_as)
            }
            Err(e) => Err(e),
        }
    }

    fn create_in(
        parent: &Path,
        pg_bin: &Path,
        run_as: Option<RunAs>,
    ) -> Result<Self, WalRedoError> {
        let path = make_private_dir(parent)?;
        // Traversable by the unprivileged user; only we write here.
        let built = (|| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| setup_err(format!("chmod {}", path.display()), e))?;
            let module_path = path.join("strata_walredo.so");
            std::fs::write(&module_path, MODULE_SO)
                .map_err(|e| setup_err(format!("write {}", module_path.display()), e))?;
            std::fs::set_permissions(&module_path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| setup_err(format!("chmod {}", module_path.display()), e))?;
            let template = template(pg_bin, run_as.as_ref(), &path)?;
            Ok((module_path, template))
        })();
        match built {
            Ok((module_path, template)) => Ok(ScratchRoot {
                path,
                module_path,
                run_as,
                template,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }

    /// Where the root is.
    pub fn path(&self) -> &Path {
        &self.path
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

/// Why `dir` cannot hold the redo module, if it cannot: a `noexec` mount makes
/// PostgreSQL's `dlopen` of it fail.
fn unusable_reason(dir: &Path) -> Option<String> {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(st) if st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC) => {
            Some(format!("{} is mounted noexec", dir.display()))
        }
        Ok(_) => None,
        Err(e) => Some(format!("cannot stat {}: {e}", dir.display())),
    }
}

/// `mkdir`s a fresh `strata-walredo-<pid>-<random>` under `parent`. A name that exists
/// already is never adopted: one of ours (a leftover) is skipped for another name, one
/// owned by someone else is an error naming it.
fn make_private_dir(parent: &Path) -> Result<PathBuf, WalRedoError> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..8 {
        let path = parent.join(format!(
            "strata-walredo-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::symlink_metadata(&path).map(|m| m.uid()).ok();
                if owner != Some(nix::unistd::Uid::effective().as_raw()) {
                    return Err(WalRedoError::Setup(format!(
                        "{} already exists and is not ours (owner uid {owner:?}); refusing to use it",
                        path.display()
                    )));
                }
            }
            Err(e) => return Err(setup_err(format!("create {}", path.display()), e)),
        }
    }
    Err(WalRedoError::Setup(format!(
        "no fresh scratch directory name under {}",
        parent.display()
    )))
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
