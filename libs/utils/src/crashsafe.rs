//! Crash-safe file operations.
//!
//! Invariant: a file written through this module is, after any crash, either its complete
//! old content or its complete new content, never a mix and never empty. The recipe is the
//! classic one: write a temp file next to the target, fsync it, rename it over the target,
//! fsync the directory (so the rename itself is durable). Temp files carry the
//! [`TEMP_SUFFIX`]; a crash can leave one behind, and owners remove them at start-up with
//! [`remove_temp_files`] — a temp file is never read as data.
//!
//! [`Sync::No`] skips every fsync: tests run thousands of these and do not simulate power
//! loss. Ordering and atomicity (temp + rename) are kept either way, so a `kill -9` test is
//! still meaningful with `Sync::No`.
//!
//! Every operation has an `_in` form that takes the [`crate::vfs::Vfs`] to work on, so a
//! simulated file system that forgets what was not fsynced can check the recipe; the plain
//! forms work on the real one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::vfs::{OpenMode, OsFs, Vfs, VfsFile};

/// Suffix of the temp files this module creates; never a real data file's name.
pub const TEMP_SUFFIX: &str = "___temp";

/// Whether to fsync. Production always uses [`Sync::Yes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// fsync files and directories: survives power loss.
    Yes,
    /// Skip fsyncs (tests, `--no-sync`): survives a process crash, not a power loss.
    No,
}

impl Sync {
    /// `Sync::No` when `no_sync` is set: the form service configs carry.
    pub fn from_no_sync(no_sync: bool) -> Sync {
        if no_sync { Sync::No } else { Sync::Yes }
    }
}

/// The temp path used while writing `path`.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".");
    name.push(TEMP_SUFFIX);
    path.with_file_name(name)
}

/// Whether `path` names a temp file left by this module.
pub fn is_temp_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(TEMP_SUFFIX))
}

fn parent_dir(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(Path::new(".")),
        Some(p) => Ok(p),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent directory", path.display()),
        )),
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// fsyncs a directory, making the creations, renames and deletions in it durable.
pub fn fsync_dir(dir: &Path, sync: Sync) -> io::Result<()> {
    fsync_dir_in(&OsFs, dir, sync)
}

/// [`fsync_dir`] on `fs`.
pub fn fsync_dir_in(fs: &dyn Vfs, dir: &Path, sync: Sync) -> io::Result<()> {
    if sync == Sync::No {
        return Ok(());
    }
    fs.sync_dir(dir)
        .map_err(|e| with_path(e, "fsync directory", dir))
}

/// Replaces `path` with `contents`, atomically and durably.
pub fn overwrite(path: &Path, contents: &[u8], sync: Sync) -> io::Result<()> {
    overwrite_in(&OsFs, path, contents, sync)
}

/// [`overwrite`] on `fs`.
pub fn overwrite_in(fs: &dyn Vfs, path: &Path, contents: &[u8], sync: Sync) -> io::Result<()> {
    overwrite_with(fs, path, sync, |f| f.write_all_at(contents, 0))
}

/// Replaces `path` with what `write` writes into the (empty) temp file, atomically and
/// durably.
///
/// If `write` fails, the temp file is removed and `path` keeps its old content.
pub fn overwrite_with(
    fs: &dyn Vfs,
    path: &Path,
    sync: Sync,
    write: impl FnOnce(&dyn VfsFile) -> io::Result<()>,
) -> io::Result<()> {
    let temp = temp_path_for(path);
    let result = (|| {
        let file = fs
            .open(&temp, OpenMode::CreateTruncate)
            .map_err(|e| with_path(e, "create", &temp))?;
        write(file.as_ref()).map_err(|e| with_path(e, "write", &temp))?;
        if sync == Sync::Yes {
            file.sync_all().map_err(|e| with_path(e, "fsync", &temp))?;
        }
        drop(file);
        // Already fsynced: only the rename is left to make durable.
        rename_and_sync_dirs(fs, &temp, path, sync)
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is harmless (never read, removed at start-up).
        let _ = fs.remove_file(&temp);
    }
    result
}

/// Renames `from` to `to` and makes the rename durable: fsyncs the file first, then the
/// destination directory (and the source directory when it differs).
pub fn durable_rename(from: &Path, to: &Path, sync: Sync) -> io::Result<()> {
    durable_rename_in(&OsFs, from, to, sync)
}

/// [`durable_rename`] on `fs`.
pub fn durable_rename_in(fs: &dyn Vfs, from: &Path, to: &Path, sync: Sync) -> io::Result<()> {
    if sync == Sync::Yes {
        // The content must be durable before the name points at it.
        fs.open(from, OpenMode::Read)
            .and_then(|f| f.sync_all())
            .map_err(|e| with_path(e, "fsync", from))?;
    }
    rename_and_sync_dirs(fs, from, to, sync)
}

fn rename_and_sync_dirs(fs: &dyn Vfs, from: &Path, to: &Path, sync: Sync) -> io::Result<()> {
    fs.rename(from, to).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("rename {} to {}: {e}", from.display(), to.display()),
        )
    })?;
    let to_dir = parent_dir(to)?;
    fsync_dir_in(fs, to_dir, sync)?;
    let from_dir = parent_dir(from)?;
    if from_dir != to_dir {
        fsync_dir_in(fs, from_dir, sync)?;
    }
    Ok(())
}

/// Creates one directory and fsyncs it and its parent, so it survives a crash.
/// Fails if it already exists (the caller decides whether that is fine).
pub fn create_dir(path: &Path, sync: Sync) -> io::Result<()> {
    fs::create_dir(path).map_err(|e| with_path(e, "create directory", path))?;
    fsync_dir(path, sync)?;
    fsync_dir(parent_dir(path)?, sync)
}

/// Creates a directory and its missing parents, each one durably. An existing directory is
/// fine.
pub fn create_dir_all(path: &Path, sync: Sync) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent, sync)?;
    }
    match create_dir(path, sync) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

/// Removes the temp files a crash left in `dir` (not recursive); returns how many.
pub fn remove_temp_files(dir: &Path, sync: Sync) -> io::Result<usize> {
    remove_temp_files_in(&OsFs, dir, sync)
}

/// [`remove_temp_files`] on `fs`.
pub fn remove_temp_files_in(fs: &dyn Vfs, dir: &Path, sync: Sync) -> io::Result<usize> {
    let mut removed = 0;
    let names = fs
        .read_dir(dir)
        .map_err(|e| with_path(e, "read directory", dir))?;
    for name in names {
        let path = dir.join(name);
        if is_temp_file(&path) && fs.is_file(&path)? {
            fs.remove_file(&path)
                .map_err(|e| with_path(e, "remove", &path))?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsync_dir_in(fs, dir, sync)?;
    }
    Ok(removed)
}

/// [`overwrite`] on tokio's blocking pool, for async callers.
pub async fn overwrite_async(path: PathBuf, contents: Vec<u8>, sync: Sync) -> io::Result<()> {
    tokio::task::spawn_blocking(move || overwrite(&path, &contents, sync))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        overwrite(&path, b"first version", Sync::Yes).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first version");
        overwrite(&path, b"second", Sync::Yes).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert!(!temp_path_for(&path).exists(), "no temp file left behind");
    }

    #[test]
    fn failed_write_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        overwrite(&path, b"old", Sync::No).unwrap();
        let err = overwrite_with(&OsFs, &path, Sync::No, |f| {
            f.write_all_at(b"half of the new con", 0)?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert!(!temp_path_for(&path).exists());
    }

    #[test]
    fn crash_mid_write_leaves_old_file_and_a_removable_temp() {
        // A crash between "write temp" and "rename": simulate the on-disk state it leaves.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("safekeeper.control");
        overwrite(&path, b"complete old state", Sync::No).unwrap();
        fs::write(temp_path_for(&path), b"torn ne").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"complete old state");
        assert!(is_temp_file(&temp_path_for(&path)));
        assert!(!is_temp_file(&path));
        assert_eq!(remove_temp_files(dir.path(), Sync::Yes).unwrap(), 1);
        assert_eq!(remove_temp_files(dir.path(), Sync::Yes).unwrap(), 0);
        assert_eq!(fs::read(&path).unwrap(), b"complete old state");
        // The next write works normally over the stale state.
        fs::write(temp_path_for(&path), b"torn again").unwrap();
        overwrite(&path, b"new", Sync::No).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn dirs_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all(&nested, Sync::Yes).unwrap();
        create_dir_all(&nested, Sync::Yes).unwrap();
        assert!(nested.is_dir());
        let e = create_dir(&nested, Sync::Yes).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("a/b/c"), "error names the path: {e}");

        let from = dir.path().join("staged");
        fs::write(&from, b"x").unwrap();
        let to = nested.join("final");
        durable_rename(&from, &to, Sync::Yes).unwrap();
        assert!(!from.exists());
        assert_eq!(fs::read(&to).unwrap(), b"x");
        let e = durable_rename(&from, &to, Sync::Yes).unwrap_err();
        assert!(e.to_string().contains("staged"), "{e}");
    }

    #[test]
    fn relative_paths_work() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("rel-{}", std::process::id());
        let path = dir.path().join(&name);
        overwrite(&path, b"1", Sync::Yes).unwrap();
        assert!(parent_dir(Path::new("plain")).unwrap() == Path::new("."));
    }

    #[tokio::test]
    async fn async_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        overwrite_async(path.clone(), b"async".to_vec(), Sync::Yes)
            .await
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"async");
    }

    /// Child side of [`kill_9_never_tears_a_file`]: with the env var set, overwrites the file
    /// forever with one of two full-size contents; otherwise a no-op that passes.
    #[test]
    fn kill_9_child_writer() {
        let Some(path) = std::env::var_os("STRATA_CRASHSAFE_CHILD_PATH") else {
            return;
        };
        let path = PathBuf::from(path);
        // Continue from the version on disk, so versions only grow across kills.
        let on_disk = fs::read(&path).unwrap();
        let start = u64::from_le_bytes(on_disk[..8].try_into().unwrap()) + 1;
        for i in start.. {
            overwrite(&path, &versioned_content(i), Sync::No).unwrap();
        }
    }

    /// 256 KiB: the version number, then a fill byte that depends on it.
    fn versioned_content(version: u64) -> Vec<u8> {
        let mut v = version.to_le_bytes().to_vec();
        v.resize(256 * 1024, b'a' + (version % 26) as u8);
        v
    }

    /// kill -9 a process that is overwriting a file in a loop, many times: the file is
    /// always one complete version.
    #[test]
    fn kill_9_never_tears_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        overwrite(&path, &versioned_content(0), Sync::No).unwrap();
        let mut last_version = 0;
        let exe = std::env::current_exe().unwrap();
        for round in 0..5 {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "crashsafe::tests::kill_9_child_writer",
                    "--nocapture",
                ])
                .env("STRATA_CRASHSAFE_CHILD_PATH", &path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(30 + 20 * round));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let content = fs::read(&path).unwrap();
            let version = u64::from_le_bytes(content[..8].try_into().unwrap());
            assert_eq!(
                content,
                versioned_content(version),
                "round {round}: torn file"
            );
            assert!(version >= last_version, "round {round}: went back in time");
            last_version = version;
            remove_temp_files(dir.path(), Sync::No).unwrap();
        }
        assert!(
            last_version > 0,
            "the child never completed a write: the test proved nothing"
        );
    }
}
