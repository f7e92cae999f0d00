//! A simulated file system with power loss, under the real WAL storage and control file
//! (through `utils::vfs`).
//!
//! It keeps, per file, what has been made durable and what was written since (by 512-byte
//! sector, plus the length), and per directory the durable entries and the operations
//! since its last fsync (create, remove, rename) in order. A **power loss** keeps only
//! what the rules of a journaling file system let survive:
//!
//! * file contents and length: the durable ones; in the *partial writeback* mode each
//!   unsynced sector (and the new length) also survives with probability ½, in any order;
//! * directory entries: the durable ones plus a prefix of the operations since the last
//!   fsync of that directory (metadata is journaled in order; a rename is one operation);
//!   in the *lose everything* mode the prefix is empty;
//! * a file no surviving entry names is gone.
//!
//! A crash can also be **armed** to fall between two calls: the n-th call from now finds the
//! machine dead and fails, and so does every later one, with no effect; the world then
//! applies the power loss and drops the acceptor, throwing away anything that call's caller
//! computed. Handles opened before a power loss fail afterwards.
//!
//! Everything is deterministic: maps are ordered and the only randomness is the caller's
//! RNG, passed to [`SimFs::power_loss`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use rand::rngs::StdRng;
use utils::vfs::{OpenMode, Vfs, VfsFile};

const SECTOR: u64 = 512;

/// What a power loss keeps of unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMode {
    /// Nothing that was not fsynced.
    Everything,
    /// Each unsynced sector, length change, and a random prefix of each directory's
    /// unsynced operations survive.
    PartialWriteback,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Sectors written (or cut or extended) since the last sync.
    dirty: BTreeSet<u64>,
    len_dirty: bool,
}

impl Inode {
    fn mark(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        for s in from / SECTOR..to.div_ceil(SECTOR) {
            self.dirty.insert(s);
        }
    }

    fn sync(&mut self) {
        let len = self.data.len();
        self.durable.resize(len, 0);
        for &s in &self.dirty {
            let a = ((s * SECTOR) as usize).min(len);
            let b = (((s + 1) * SECTOR) as usize).min(len);
            self.durable[a..b].copy_from_slice(&self.data[a..b]);
        }
        self.dirty.clear();
        self.len_dirty = false;
    }

    /// What survives a power loss.
    fn lose(&mut self, mode: LossMode, rng: &mut StdRng) {
        let keep = |rng: &mut StdRng| mode == LossMode::PartialWriteback && rng.random_bool(0.5);
        let len = if self.len_dirty && keep(rng) {
            self.data.len()
        } else {
            self.durable.len()
        };
        let mut out = self.durable.clone();
        out.resize(len, 0);
        for &s in &self.dirty {
            if !keep(rng) {
                continue;
            }
            let a = ((s * SECTOR) as usize).min(len);
            let b = (((s + 1) * SECTOR) as usize).min(len);
            for (i, byte) in out[a..b].iter_mut().enumerate() {
                *byte = self.data.get(a + i).copied().unwrap_or(0);
            }
        }
        self.durable = out.clone();
        self.data = out;
        self.dirty.clear();
        self.len_dirty = false;
    }
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(OsString, u64),
    Unlink(OsString),
    Rename(OsString, OsString),
}

#[derive(Debug, Default)]
struct Dir {
    live: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
    pending: Vec<DirOp>,
}

fn apply(entries: &mut BTreeMap<OsString, u64>, op: &DirOp) {
    match op {
        DirOp::Link(name, ino) => {
            entries.insert(name.clone(), *ino);
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(ino) = entries.remove(from) {
                entries.insert(to.clone(), ino);
            }
        }
    }
}

impl Dir {
    fn op(&mut self, op: DirOp) {
        apply(&mut self.live, &op);
        self.pending.push(op);
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    dirs: BTreeMap<PathBuf, Dir>,
    /// Bumped by every power loss: older handles are dead.
    boot: u64,
    /// Calls left before an armed crash.
    crash_in: Option<u32>,
    dead: bool,
    /// The checker is looking: calls neither count nor bring an armed crash closer.
    observing: bool,
    /// A disk that lies: every fsync succeeds and does nothing (negative control).
    lying: bool,
    /// Calls made (for the statistics).
    calls: u64,
}

fn dead_err() -> io::Error {
    io::Error::other("simulated power loss: the machine is off")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl State {
    /// Counts one call; fails if the machine is (or just went) down.
    fn call(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(dead_err());
        }
        if self.observing {
            return Ok(());
        }
        if let Some(n) = &mut self.crash_in {
            if *n == 0 {
                self.dead = true;
                self.crash_in = None;
                return Err(dead_err());
            }
            *n -= 1;
        }
        self.calls += 1;
        Ok(())
    }

    fn split(&mut self, path: &Path) -> io::Result<(&mut Dir, OsString)> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file path", path.display()),
            ));
        };
        let dir = self.dirs.get_mut(parent).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", parent.display()),
            )
        })?;
        Ok((dir, name.to_os_string()))
    }

    fn lookup(&mut self, path: &Path) -> io::Result<Option<u64>> {
        let (dir, name) = self.split(path)?;
        Ok(dir.live.get(&name).copied())
    }
}

/// One machine's file system. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a directory, durably (the simulation's set-up).
    pub fn mkdir(&self, dir: &Path) {
        self.lock().dirs.entry(dir.to_path_buf()).or_default();
    }

    /// Makes every later fsync (file or directory) a successful no-op: the negative
    /// control that shows the simulation notices when durability is not really there.
    pub fn lie_about_fsync(&self) {
        self.lock().lying = true;
    }

    fn lying(&self) -> bool {
        self.lock().lying
    }

    /// Arms a crash: the `n`-th call from now (0: the next one) finds the machine dead.
    pub fn arm_crash(&self, n: u32) {
        let mut s = self.lock();
        if s.crash_in.is_none() && !s.dead {
            s.crash_in = Some(n);
        }
    }

    /// Whether an armed crash has happened (the power loss is still to be applied).
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Runs `f` (the checker reading the files) without it counting as the machine's own
    /// calls: an armed crash never falls in it.
    pub fn observe<R>(&self, f: impl FnOnce() -> R) -> R {
        self.lock().observing = true;
        let r = f();
        self.lock().observing = false;
        r
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Power loss: keeps what survives (see the module docs), kills every open handle, and
    /// powers the machine back on.
    pub fn power_loss(&self, mode: LossMode, rng: &mut StdRng) {
        let mut s = self.lock();
        let s = &mut *s;
        for dir in s.dirs.values_mut() {
            let keep = match mode {
                LossMode::Everything => 0,
                LossMode::PartialWriteback => rng.random_range(0..=dir.pending.len()),
            };
            for op in &dir.pending[..keep] {
                apply(&mut dir.durable, op);
            }
            dir.pending.clear();
            dir.live = dir.durable.clone();
        }
        let named: BTreeSet<u64> = s
            .dirs
            .values()
            .flat_map(|d| d.live.values().copied())
            .collect();
        s.inodes.retain(|ino, _| named.contains(ino));
        for inode in s.inodes.values_mut() {
            inode.lose(mode, rng);
        }
        s.boot += 1;
        s.crash_in = None;
        s.dead = false;
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: u64,
    boot: u64,
    writable: bool,
}

impl SimFile {
    fn with<R>(&self, f: impl FnOnce(&mut Inode) -> io::Result<R>) -> io::Result<R> {
        let mut s = self.fs.lock();
        s.call()?;
        if s.boot != self.boot {
            return Err(io::Error::other("stale handle from before a power loss"));
        }
        let inode = s
            .inodes
            .get_mut(&self.ino)
            .ok_or_else(|| io::Error::other("handle of a vanished file"))?;
        f(inode)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ))
        }
    }
}

impl VfsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.with(|i| {
            let len = i.data.len() as u64;
            if off >= len {
                return Ok(0);
            }
            let n = buf.len().min((len - off) as usize);
            buf[..n].copy_from_slice(&i.data[off as usize..off as usize + n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<usize> {
        self.check_writable()?;
        self.with(|i| {
            let end = off as usize + buf.len();
            if end > i.data.len() {
                i.data.resize(end, 0);
                i.len_dirty = true;
            }
            i.data[off as usize..end].copy_from_slice(buf);
            i.mark(off, end as u64);
            Ok(buf.len())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.with(|i| Ok(i.data.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with(|i| {
            let old = i.data.len() as u64;
            i.data.resize(len as usize, 0);
            i.mark(old.min(len), old.max(len));
            i.len_dirty = true;
            Ok(())
        })
    }

    fn allocate(&self, _len: u64) -> io::Result<()> {
        self.with(|_| Ok(()))
    }

    fn sync_data(&self) -> io::Result<()> {
        let lying = self.fs.lying();
        self.with(|i| {
            if !lying {
                i.sync();
            }
            Ok(())
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

impl Vfs for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut s = self.lock();
        s.call()?;
        let ino = match (s.lookup(path)?, mode) {
            (Some(ino), OpenMode::CreateTruncate) => {
                if let Some(i) = s.inodes.get_mut(&ino) {
                    let old = i.data.len() as u64;
                    i.data.clear();
                    i.mark(0, old);
                    i.len_dirty = true;
                }
                ino
            }
            (Some(ino), _) => ino,
            (None, OpenMode::CreateTruncate) => {
                s.next_ino += 1;
                let ino = s.next_ino;
                s.inodes.insert(ino, Inode::default());
                let (dir, name) = s.split(path)?;
                dir.op(DirOp::Link(name, ino));
                ino
            }
            (None, _) => return Err(not_found(path)),
        };
        let boot = s.boot;
        drop(s);
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            ino,
            boot,
            writable: mode != OpenMode::Read,
        }))
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let mut s = self.lock();
        s.call()?;
        let d = s.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(d.live.keys().cloned().collect())
    }

    fn is_file(&self, path: &Path) -> io::Result<bool> {
        let mut s = self.lock();
        s.call()?;
        Ok(s.lookup(path)?.is_some())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.call()?;
        let ino = s.lookup(from)?.ok_or_else(|| not_found(from))?;
        if from.parent() == to.parent() {
            let (dir, from_name) = s.split(from)?;
            let to_name = to.file_name().map(|n| n.to_os_string()).unwrap_or_default();
            dir.op(DirOp::Rename(from_name, to_name));
        } else {
            let (to_dir, to_name) = s.split(to)?;
            to_dir.op(DirOp::Link(to_name, ino));
            let (from_dir, from_name) = s.split(from)?;
            from_dir.op(DirOp::Unlink(from_name));
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.call()?;
        s.lookup(path)?.ok_or_else(|| not_found(path))?;
        let (dir, name) = s.split(path)?;
        dir.op(DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.call()?;
        let lying = s.lying;
        let d = s.dirs.get_mut(dir).ok_or_else(|| not_found(dir))?;
        if !lying {
            d.durable = d.live.clone();
            d.pending.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use utils::crashsafe::{self, Sync};

    use super::*;

    fn setup() -> (SimFs, PathBuf) {
        let fs = SimFs::default();
        let dir = PathBuf::from("/sim/dir");
        fs.mkdir(&dir);
        (fs, dir)
    }

    #[test]
    fn power_loss_keeps_exactly_what_was_synced() {
        let mut rng = StdRng::seed_from_u64(1);
        let (fs, dir) = setup();
        let a = dir.join("a");
        let f = fs.open(&a, OpenMode::CreateTruncate).unwrap();
        f.write_all_at(b"synced", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        f.write_all_at(b"SYNCED and more", 0).unwrap();
        let b = dir.join("b");
        fs.open(&b, OpenMode::CreateTruncate).unwrap();
        fs.rename(&a, &dir.join("c")).unwrap();
        fs.power_loss(LossMode::Everything, &mut rng);
        assert_eq!(fs.read(&a).unwrap(), b"synced");
        assert!(!fs.is_file(&b).unwrap() && !fs.is_file(&dir.join("c")).unwrap());
        assert!(
            f.size().is_err(),
            "a handle from before the power loss is dead"
        );
        // A synced rename survives; an unsynced removal does not take effect.
        fs.rename(&a, &b).unwrap();
        fs.sync_dir(&dir).unwrap();
        fs.remove_file(&b).unwrap();
        fs.power_loss(LossMode::Everything, &mut rng);
        assert_eq!(fs.read_dir(&dir).unwrap(), vec![OsString::from("b")]);
    }

    #[test]
    fn an_armed_crash_stops_every_later_call() {
        let mut rng = StdRng::seed_from_u64(2);
        let (fs, dir) = setup();
        fs.arm_crash(1);
        let f = fs.open(&dir.join("a"), OpenMode::CreateTruncate).unwrap();
        assert!(f.write_all_at(b"x", 0).is_err());
        assert!(fs.is_dead());
        assert!(fs.read_dir(&dir).is_err());
        fs.power_loss(LossMode::PartialWriteback, &mut rng);
        assert!(!fs.is_dead());
        assert!(fs.read_dir(&dir).unwrap().len() <= 1);
    }

    /// `crashsafe::overwrite_in`, crashed at every call and under both loss modes: the file
    /// is always the whole old or the whole new content, and the new one once the call
    /// returned Ok.
    #[test]
    fn crashsafe_overwrite_is_atomic_and_durable_at_every_crash_point() {
        let path = PathBuf::from("/sim/dir/safekeeper.control");
        let (old, new) = (vec![1u8; 3000], vec![2u8; 5000]);
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            for n in 0..12 {
                for mode in [LossMode::Everything, LossMode::PartialWriteback] {
                    let (fs, _) = setup();
                    crashsafe::overwrite_in(&fs, &path, &old, Sync::Yes).unwrap();
                    fs.arm_crash(n);
                    let ok = crashsafe::overwrite_in(&fs, &path, &new, Sync::Yes).is_ok();
                    fs.power_loss(mode, &mut rng);
                    crashsafe::remove_temp_files_in(&fs, Path::new("/sim/dir"), Sync::Yes).unwrap();
                    let got = fs.read(&path).unwrap();
                    assert!(got == old || got == new, "seed {seed} crash at {n}: torn");
                    assert!(!ok || got == new, "seed {seed} crash at {n}: Ok but lost");
                    assert_eq!(fs.read_dir(Path::new("/sim/dir")).unwrap().len(), 1);
                }
            }
        }
    }

    /// Negative control of the model: a rename whose directory was never fsynced is lost,
    /// and a lying disk loses even a "durable" write.
    #[test]
    fn the_model_catches_a_missing_or_lying_fsync() {
        let mut rng = StdRng::seed_from_u64(3);
        let (fs, dir) = setup();
        let (tmp, target) = (dir.join("t"), dir.join("f"));
        let f = fs.open(&tmp, OpenMode::CreateTruncate).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        f.sync_all().unwrap();
        fs.rename(&tmp, &target).unwrap(); // no sync_dir
        fs.power_loss(LossMode::Everything, &mut rng);
        assert!(!fs.is_file(&target).unwrap());

        let (fs, _) = setup();
        fs.lie_about_fsync();
        crashsafe::overwrite_in(&fs, &target, b"data", Sync::Yes).unwrap();
        fs.power_loss(LossMode::Everything, &mut rng);
        assert!(!fs.is_file(&target).unwrap());
    }
}
