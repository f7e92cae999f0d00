//! The file-system seam: the handful of calls durable code makes, behind a trait, so a
//! deterministic simulation can stand in for the kernel.
//!
//! Production code that must survive power loss (the safekeeper's WAL and control file,
//! [`crate::crashsafe`]) does its I/O through [`Vfs`]; in production that is [`OsFs`], a
//! thin pass-through to `std::fs`. A simulated implementation keeps, per file and per
//! directory, what has been made durable and throws the rest away on a simulated power
//! loss, which is how the safekeeper simulation checks that every fsync the durability
//! argument needs is really made.
//!
//! The calls are the ones whose durability semantics differ: file contents become durable
//! with [`VfsFile::sync_data`]/[`VfsFile::sync_all`]; creations, renames and removals with
//! [`Vfs::sync_dir`] of the directory holding them. Nothing else is promised.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write, created if missing, emptied if present.
    CreateTruncate,
}

/// An open file. Positional I/O only, so one handle can be shared (a flush thread syncing
/// while the writer goes on).
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// Reads at `off`; returns the bytes read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    /// Writes at `off`; returns the bytes written.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize>;
    /// The file's length.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Allocates blocks for `[0, len)` (`fallocate`), so running out of space fails here.
    /// `Unsupported` where the file system cannot.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: contents (and the size, when it changed) become durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: contents and all metadata become durable.
    fn sync_all(&self) -> io::Result<()>;

    /// Writes all of `buf` at `off`.
    fn write_all_at(&self, mut buf: &[u8], mut off: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, off) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    buf = &buf[n..];
                    off += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Fills `buf` from `off`; `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, off) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => {
                    buf = &mut buf[n..];
                    off += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The file-system calls of durable code (see the module docs).
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Opens (or creates) a regular file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>>;
    /// The names in a directory (no `.`/`..`), in no particular order.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Whether `path` is a regular file (false when missing).
    fn is_file(&self, path: &Path) -> io::Result<bool>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsyncs a directory: the creations, renames and removals in it become durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path, OpenMode::Read)?;
        let len = usize::try_from(file.size()?).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

/// The real file system as a shared handle (what production code passes around).
pub fn os() -> Arc<dyn Vfs> {
    static OS: OnceLock<Arc<dyn Vfs>> = OnceLock::new();
    Arc::clone(OS.get_or_init(|| Arc::new(OsFs)))
}

impl VfsFile for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        FileExt::write_at(self, buf, off)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        use nix::errno::Errno;
        let len = i64::try_from(len).map_err(io::Error::other)?;
        match nix::fcntl::fallocate(self, nix::fcntl::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => {
                Err(io::Error::from(io::ErrorKind::Unsupported))
            }
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
}

impl Vfs for OsFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateTruncate => o.read(true).write(true).create(true).truncate(true),
        };
        Ok(Arc::new(o.open(path)?))
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    fn is_file(&self, path: &Path) -> io::Result<bool> {
        match fs::metadata(path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_fs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let fs = os();
        let a = dir.path().join("a");
        let f = fs.open(&a, OpenMode::CreateTruncate).unwrap();
        f.set_len(8192).unwrap();
        f.allocate(8192).unwrap_or(());
        f.write_all_at(b"hello", 4096).unwrap();
        f.sync_data().unwrap();
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(f.size().unwrap(), 8192);
        let b = dir.path().join("b");
        fs.rename(&a, &b).unwrap();
        fs.sync_dir(dir.path()).unwrap();
        assert!(!fs.is_file(&a).unwrap() && fs.is_file(&b).unwrap());
        assert_eq!(fs.read_dir(dir.path()).unwrap(), vec![OsString::from("b")]);
        assert_eq!(fs.read(&b).unwrap().len(), 8192);
        fs.remove_file(&b).unwrap();
        assert!(fs.read_dir(dir.path()).unwrap().is_empty());
        assert_eq!(
            fs.open(&b, OpenMode::Read).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
