//! One process per data directory.
//!
//! A service takes an exclusive `flock` on `<datadir>/<name>.pid` and writes its pid there.
//! The lock, not the file's existence, is what counts: it disappears with the process
//! however it dies (kill -9 included), so a stale pid file never blocks a restart, while a
//! second live instance on the same directory is refused with the holder's pid.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the pid file could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another live process holds the lock.
    #[error(
        "{path} is locked by another running process{}; is another instance using this data directory?",
        match .pid { Some(p) => format!(" (pid {p})"), None => String::new() }
    )]
    Locked {
        /// The pid file.
        path: PathBuf,
        /// The holder's pid, if it could be read.
        pid: Option<u32>,
    },
    /// The file could not be opened, locked or written.
    #[error("pid file {path}: {source}")]
    Io {
        /// The pid file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Holds the lock for as long as it lives; keep it alive for the life of the process.
#[derive(Debug)]
pub struct PidFileGuard {
    _lock: Flock<File>,
    path: PathBuf,
}

impl PidFileGuard {
    /// The locked pid file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Locks `path` and writes this process's pid into it.
pub fn claim(path: &Path) -> Result<PidFileGuard, PidFileError> {
    let io_err = |source| PidFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(PidFileError::Locked {
                path: path.to_path_buf(),
                pid,
            });
        }
        Err((_, errno)) => return Err(io_err(errno.into())),
    };
    lock.set_len(0).map_err(io_err)?;
    lock.seek(SeekFrom::Start(0)).map_err(io_err)?;
    writeln!(lock, "{}", std::process::id()).map_err(io_err)?;
    lock.sync_all().map_err(io_err)?;
    Ok(PidFileGuard {
        _lock: lock,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_is_refused_with_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safekeeper.pid");
        let guard = claim(&path).unwrap();
        assert_eq!(guard.path(), path);
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
        // flock locks are per open file description, so a second open in the same process
        // conflicts just as another process would.
        let err = claim(&path).unwrap_err();
        match &err {
            PidFileError::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("another running process"), "{err}");
        drop(guard);
        // A stale file (holder gone) does not block.
        let _again = claim(&path).unwrap();
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let err = claim(Path::new("/nonexistent-strata-dir/x.pid")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-strata-dir/x.pid"),
            "{err}"
        );
    }
}
