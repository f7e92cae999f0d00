//! [`LocalFs`]: object storage in a local directory, the embedded default and the backend
//! most tests use.
//!
//! Layout: the object `a/b/c` is the file `<root>/a/b/c`; its user metadata, when it has
//! any, is the JSON sidecar `<root>/a/b/c.___metadata`. Keys whose last component ends in
//! `___metadata` or `___temp` are reserved and refused.
//!
//! Invariants:
//! - An upload streams into a temp file with a unique name next to the target (so
//!   concurrent uploads of one key never share a file), fsyncs it, then renames it over the
//!   target and fsyncs the directory (`utils::crashsafe::durable_rename`). Readers hold an
//!   open file descriptor, so they see one complete version even while it is replaced.
//! - The metadata sidecar and the rename are committed under a per-key lock (striped), so
//!   within one process a head or download sees an object with the metadata of the same
//!   upload. A crash between the sidecar write and the rename can leave the previous
//!   object with the new metadata; nothing else depends on that pairing.
//! - Listings follow S3 semantics: string prefixes, keys in byte order, and with a
//!   delimiter a directory is a common prefix only if some object lies below it.
//!   Directories left empty by deletes are removed.
//! - An operation that returned (timed out, cancelled, dropped) never changes storage
//!   afterwards: its blocking task checks, under the key lock and just before the rename
//!   or delete, whether its caller is still waiting ([`Abandoned`]). Without that, a late
//!   commit of a timed-out upload could overwrite a newer upload of the same key.
//! - I/O errors a retry can fix (EINTR, EAGAIN, EMFILE, ENFILE, EIO, a failed blocking
//!   task) are [`Error::Transient`]; the rest are permanent.
//! - A key cannot be both an object and a prefix of another key (`a` and `a/b`), as a file
//!   system cannot hold a file and a directory of one name: such an upload is refused as
//!   [`Error::BadInput`].

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{self, SeekFrom};
use std::num::NonZeroU32;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};
use futures::{Stream, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use utils::crashsafe::{self, Sync, TEMP_SUFFIX};

use crate::support::{ChunkReader, cancellable, guard_stream, timed, within};
use crate::{
    Download, DownloadOpts, Error, Etag, Listing, ListingMode, ListingObject,
    MAX_KEYS_PER_DELETE_S3, MAX_KEYS_PER_LIST_PAGE, ObjectMeta, RemotePath, RemoteStorage,
    StorageMetadata, UploadSource, UploadStream, apply_max_keys,
};

/// Suffix of a metadata sidecar file.
const METADATA_SUFFIX: &str = "___metadata";
/// Number of lock stripes: enough that unrelated keys rarely wait on each other.
const LOCK_STRIPES: usize = 64;
/// Read and write granularity.
const IO_CHUNK: usize = 1 << 20;

/// A local directory used as object storage. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalFs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: Utf8PathBuf,
    timeout: Duration,
    small_timeout: Duration,
    sync: Sync,
    locks: Vec<Mutex<()>>,
    /// Test hook: how long a commit waits (outside the key lock) before it takes the lock.
    #[cfg(test)]
    commit_delay: Mutex<Option<Duration>>,
}

/// Whether an I/O error may go away on retry: interrupted or would-block calls, descriptor
/// exhaustion (ours or the system's), and EIO (a flaky device or network file system).
fn io_error_is_transient(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    ) || e.raw_os_error().is_some_and(|n| {
        matches!(
            Errno::from_raw(n),
            Errno::EINTR | Errno::EAGAIN | Errno::EMFILE | Errno::ENFILE | Errno::EIO
        )
    })
}

fn io_error(what: impl std::fmt::Display, e: io::Error) -> Error {
    let transient = io_error_is_transient(&e);
    let err = anyhow::Error::new(e).context(what.to_string());
    if transient {
        Error::Transient(err)
    } else {
        Error::Permanent(err)
    }
}

/// A blocking task that panicked or was cancelled at shutdown: nothing about the request
/// says a retry fails too.
fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Transient(anyhow::anyhow!("local fs task failed: {e}"))
}

/// Set when the caller of a blocking operation stopped waiting (its future was dropped by
/// a timeout, a cancellation or the caller itself). Checked under the key lock before
/// anything changes storage, so an abandoned operation changes nothing after its caller
/// saw it fail.
#[derive(Debug, Default, Clone)]
struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    /// `Err` once the caller has gone: the operation must stop without changing storage.
    fn check(&self, key: &RemotePath) -> Result<(), Error> {
        if self.0.load(Ordering::SeqCst) {
            tracing::info!("{key}: caller gave up before the commit; leaving storage as it is");
            return Err(Error::Cancelled);
        }
        Ok(())
    }
}

/// Marks the operation abandoned when dropped before [`AbandonOnDrop::finish`].
struct AbandonOnDrop(Option<Abandoned>);

impl AbandonOnDrop {
    fn finish(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.0.store(true, Ordering::SeqCst);
        }
    }
}

fn is_reserved(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX) || name.ends_with(METADATA_SUFFIX)
}

fn sidecar_path(object: &Utf8Path) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{object}.{METADATA_SUFFIX}"))
}

/// Content identity for etags: the rename gives every upload a new inode.
fn etag_of(meta: &std::fs::Metadata) -> Etag {
    Etag::new(format!(
        "\"{:x}-{:x}-{:x}.{:x}\"",
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

fn modified(meta: &std::fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

fn read_sidecar(object: &Utf8Path) -> Result<StorageMetadata, Error> {
    let path = sidecar_path(object);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let map: std::collections::BTreeMap<String, String> = serde_json::from_slice(&bytes)
                .map_err(|e| {
                    Error::Permanent(anyhow::anyhow!("corrupt metadata file {path}: {e}"))
                })?;
            Ok(StorageMetadata::from_backend(map))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StorageMetadata::new()),
        Err(e) => Err(io_error(format!("read {path}"), e)),
    }
}

/// Removes the temp file of an unfinished upload when the upload is dropped or fails.
struct TempGuard(Option<Utf8PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl LocalFs {
    /// Uses (and creates if needed) `root` as the storage directory.
    pub fn new(
        root: Utf8PathBuf,
        timeout: Duration,
        small_timeout: Duration,
    ) -> Result<LocalFs, Error> {
        crashsafe::create_dir_all(root.as_std_path(), Sync::Yes)
            .map_err(|e| io_error(format!("create local storage root {root}"), e))?;
        Ok(LocalFs {
            inner: Arc::new(Inner {
                root,
                timeout,
                small_timeout,
                sync: Sync::Yes,
                locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
                #[cfg(test)]
                commit_delay: Mutex::new(None),
            }),
        })
    }

    /// The storage directory.
    pub fn root(&self) -> &Utf8Path {
        &self.inner.root
    }

    fn object_path(&self, key: &RemotePath) -> Result<Utf8PathBuf, Error> {
        key.ensure_object_key()?;
        if is_reserved(key.object_name()) {
            return Err(Error::BadInput(format!(
                "key {key} ends with a suffix LocalFs reserves ({METADATA_SUFFIX}, {TEMP_SUFFIX})"
            )));
        }
        Ok(self.inner.root.join(key.as_str()))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(join_error)?
    }

    /// [`LocalFs::blocking`] for an operation that changes storage: `f` gets the
    /// [`Abandoned`] flag, which is set if this future is dropped before the task ends.
    async fn blocking_change<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner, &Abandoned) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let abandoned = Abandoned::default();
        let guard = AbandonOnDrop(Some(abandoned.clone()));
        let r = self.blocking(move |inner| f(inner, &abandoned)).await;
        guard.finish();
        r
    }

    /// A fresh temp file name next to `target`: unique, so concurrent uploads of one key
    /// never write the same file.
    fn temp_for(&self, target: &Utf8Path) -> (Utf8PathBuf, Utf8PathBuf) {
        let dir = target
            .parent()
            .map(Utf8Path::to_owned)
            .unwrap_or_else(|| self.inner.root.clone());
        let name = target.file_name().unwrap_or("object");
        let temp = dir.join(format!(
            "{name}.{}.{TEMP_SUFFIX}",
            uuid::Uuid::new_v4().simple()
        ));
        (dir, temp)
    }

    /// Streams `reader` into a fresh temp file next to `target` and commits it. Every step
    /// (creating the file, each write, the commit; the reader's own waits) gets the data
    /// timeout, so a large object from a slow but live stream goes through; the caller
    /// handles cancellation around the whole.
    async fn write_object(
        &self,
        key: RemotePath,
        target: Utf8PathBuf,
        mut reader: ChunkReader,
        metadata: Option<StorageMetadata>,
    ) -> Result<(), Error> {
        let timeout = self.inner.timeout;
        let (dir, temp) = self.temp_for(&target);
        let mut guard = TempGuard(None);
        // A concurrent delete may remove an emptied parent directory between our mkdir and
        // our create; try again a few times.
        let mut attempt = 0;
        let mut file = loop {
            attempt += 1;
            let (d, k) = (dir.clone(), key.clone());
            within(
                timeout,
                self.blocking(move |inner| inner.ensure_dir(&d, &k)),
            )
            .await?;
            let created =
                within(timeout, async { Ok(tokio::fs::File::create(&temp).await) }).await?;
            match created {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 5 => continue,
                Err(e) => return Err(io_error(format!("create {temp}"), e)),
            }
        };
        guard.0 = Some(temp.clone());
        while let Some(piece) = reader.next_piece(IO_CHUNK).await? {
            within(timeout, async {
                file.write_all(&piece)
                    .await
                    .map_err(|e| io_error(format!("write {temp}"), e))
            })
            .await?;
        }
        within(timeout, async {
            file.flush()
                .await
                .map_err(|e| io_error(format!("write {temp}"), e))
        })
        .await?;
        drop(file);
        let commit_temp = temp.clone();
        within(
            timeout,
            self.blocking_change(move |inner, abandoned| {
                inner.test_commit_delay();
                let _lock = inner.lock(&key);
                abandoned.check(&key)?;
                inner.commit(&commit_temp, &target, &key, metadata.as_ref())
            }),
        )
        .await?;
        guard.0 = None;
        Ok(())
    }

    /// Uploads a local file: the kernel copies it into the temp file (`copy_file_range`),
    /// which is what makes LocalFs uploads of layer files as fast as a plain copy.
    async fn write_object_from_file(
        &self,
        key: RemotePath,
        target: Utf8PathBuf,
        src: Utf8PathBuf,
        size: u64,
        metadata: Option<StorageMetadata>,
    ) -> Result<(), Error> {
        let (dir, temp) = self.temp_for(&target);
        self.blocking_change(move |inner, abandoned| {
            let result = (|| {
                let mut attempt = 0;
                let copied = loop {
                    attempt += 1;
                    inner.ensure_dir(&dir, &key)?;
                    match std::fs::copy(&src, &temp) {
                        Ok(n) => break n,
                        Err(e)
                            if e.kind() == io::ErrorKind::NotFound
                                && !dir.is_dir()
                                && attempt < 5 =>
                        {
                            continue;
                        }
                        Err(e) => return Err(io_error(format!("copy {src} to {temp}"), e)),
                    }
                };
                if copied != size {
                    return Err(Error::BadInput(format!(
                        "upload source {src} has {copied} bytes, not the declared {size}"
                    )));
                }
                inner.test_commit_delay();
                let _lock = inner.lock(&key);
                abandoned.check(&key)?;
                inner.commit(&temp, &target, &key, metadata.as_ref())
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            result
        })
        .await
    }
}

impl Inner {
    #[cfg(test)]
    fn test_commit_delay(&self) {
        let delay = *self.commit_delay.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
    }

    #[cfg(not(test))]
    fn test_commit_delay(&self) {}

    /// Creates the object's directory; a parent that is an object is the caller's error.
    fn ensure_dir(&self, dir: &Utf8Path, key: &RemotePath) -> Result<(), Error> {
        crashsafe::create_dir_all(dir.as_std_path(), self.sync).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => Error::BadInput(
                format!("key {key}: a parent is an object, so it cannot be a prefix on LocalFs"),
            ),
            _ => io_error(format!("create directory {dir}"), e),
        })
    }

    fn lock(&self, key: &RemotePath) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        key.as_str().hash(&mut h);
        let stripe = (h.finish() as usize) % self.locks.len();
        self.locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Under the key lock: metadata sidecar, then the durable rename of the data.
    fn commit(
        &self,
        temp: &Utf8Path,
        target: &Utf8Path,
        key: &RemotePath,
        metadata: Option<&StorageMetadata>,
    ) -> Result<(), Error> {
        let sidecar = sidecar_path(target);
        match metadata.filter(|m| !m.is_empty()) {
            Some(m) => {
                let json = serde_json::to_vec(&m.clone().into_map())
                    .map_err(|e| Error::Permanent(e.into()))?;
                crashsafe::overwrite(sidecar.as_std_path(), &json, self.sync)
                    .map_err(|e| io_error(format!("write {sidecar}"), e))?;
            }
            None => match std::fs::remove_file(&sidecar) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(format!("remove {sidecar}"), e)),
            },
        }
        crashsafe::durable_rename(temp.as_std_path(), target.as_std_path(), self.sync).map_err(
            |e| {
                if target.is_dir() {
                    Error::BadInput(format!(
                        "key {key} is a prefix of other keys, so it cannot be an object on LocalFs"
                    ))
                } else {
                    io_error(format!("commit {target}"), e)
                }
            },
        )
    }

    /// Opens an object with its metadata, consistently (under the key lock).
    fn open(
        &self,
        key: &RemotePath,
        path: &Utf8Path,
    ) -> Result<(std::fs::File, std::fs::Metadata, StorageMetadata), Error> {
        let _lock = self.lock(key);
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                return Err(Error::NotFound(key.to_string()));
            }
            Err(e) => return Err(io_error(format!("open {path}"), e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| io_error(format!("stat {path}"), e))?;
        if !meta.is_file() {
            return Err(Error::NotFound(key.to_string()));
        }
        let metadata = read_sidecar(path)?;
        Ok((file, meta, metadata))
    }

    fn delete(
        &self,
        key: &RemotePath,
        path: &Utf8Path,
        abandoned: &Abandoned,
    ) -> Result<(), Error> {
        let _lock = self.lock(key);
        abandoned.check(key)?;
        for p in [path.to_owned(), sidecar_path(path)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound
                            | io::ErrorKind::NotADirectory
                            | io::ErrorKind::IsADirectory
                    ) => {}
                Err(e) => return Err(io_error(format!("remove {p}"), e)),
            }
        }
        let Some(mut dir) = path.parent() else {
            return Ok(());
        };
        if dir.exists() {
            crashsafe::fsync_dir(dir.as_std_path(), self.sync)
                .map_err(|e| io_error(format!("fsync {dir}"), e))?;
        }
        // Drop directories the delete left empty, so listings show no phantom prefixes.
        while dir != self.root && dir.starts_with(&self.root) {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
            match dir.parent() {
                Some(parent) => dir = parent,
                None => break,
            }
        }
        Ok(())
    }

    fn list(&self, prefix: Option<&RemotePath>, mode: ListingMode) -> Result<Listing, Error> {
        let prefix = prefix.map(RemotePath::as_str).unwrap_or("");
        let (dir_part, name_part) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let dir = self.root.join(dir_part);
        let mut listing = Listing::default();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(listing);
            }
            Err(e) => return Err(io_error(format!("list {dir}"), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error(format!("list {dir}"), e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(name_part) {
                continue;
            }
            let key = format!("{dir_part}{name}");
            let path = dir.join(&name);
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                match mode {
                    ListingMode::NoDelimiter => walk(&path, &format!("{key}/"), &mut listing.keys)?,
                    ListingMode::WithDelimiter => {
                        if has_object(&path)?
                            && let Ok(p) = RemotePath::new(&format!("{key}/"))
                        {
                            listing.prefixes.push(p);
                        }
                    }
                }
            } else if file_type.is_file() && !is_reserved(&name) {
                push_object(&path, &key, &mut listing.keys);
            }
        }
        listing.keys.sort_by(|a, b| a.key.cmp(&b.key));
        listing.prefixes.sort();
        Ok(listing)
    }
}

fn push_object(path: &Utf8Path, key: &str, keys: &mut Vec<ListingObject>) {
    // A concurrent delete may remove it between readdir and stat: then it is not listed.
    let (Ok(meta), Ok(key)) = (std::fs::metadata(path), RemotePath::new(key)) else {
        return;
    };
    keys.push(ListingObject {
        key,
        last_modified: modified(&meta),
        size: meta.len(),
    });
}

/// Every object below `dir`, whose key prefix is `key_prefix` (ends with `/`).
fn walk(dir: &Utf8Path, key_prefix: &str, keys: &mut Vec<ListingObject>) -> Result<(), Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(format!("list {dir}"), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(format!("list {dir}"), e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let path = dir.join(&name);
        if file_type.is_dir() {
            walk(&path, &format!("{key_prefix}{name}/"), keys)?;
        } else if file_type.is_file() && !is_reserved(&name) {
            push_object(&path, &format!("{key_prefix}{name}"), keys);
        }
    }
    Ok(())
}

/// Whether any object lies below `dir` (stops at the first).
fn has_object(dir: &Utf8Path) -> Result<bool, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error(format!("list {dir}"), e)),
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_file() && !is_reserved(&name) {
            return Ok(true);
        }
        if file_type.is_dir() && has_object(&dir.join(&name))? {
            return Ok(true);
        }
    }
    Ok(false)
}

impl RemoteStorage for LocalFs {
    fn list_streaming(
        &self,
        prefix: Option<&RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &CancellationToken,
    ) -> impl Stream<Item = Result<Listing, Error>> + Send {
        let prefix = prefix.cloned();
        let cancel = cancel.clone();
        let this = self.clone();
        async_stream::stream! {
            let listing = timed(this.inner.timeout, &cancel, this.blocking(move |inner| {
                inner.list(prefix.as_ref(), mode)
            }))
            .await;
            let listing = match listing {
                Ok(l) => l,
                Err(e) => {
                    yield Err(e);
                    return;
                }
            };
            let mut remaining = max_keys.map(NonZeroU32::get);
            let mut keys = listing.keys.into_iter();
            let mut prefixes = Some(listing.prefixes);
            loop {
                let mut page = Listing {
                    prefixes: prefixes.take().unwrap_or_default(),
                    keys: keys.by_ref().take(MAX_KEYS_PER_LIST_PAGE as usize).collect(),
                };
                let last = page.keys.len() < MAX_KEYS_PER_LIST_PAGE as usize;
                apply_max_keys(&mut page, &mut remaining);
                yield Ok(page);
                if last || remaining == Some(0) {
                    break;
                }
            }
        }
    }

    async fn head(
        &self,
        path: &RemotePath,
        cancel: &CancellationToken,
    ) -> Result<ObjectMeta, Error> {
        let file_path = self.object_path(path)?;
        let key = path.clone();
        timed(
            self.inner.small_timeout,
            cancel,
            self.blocking(move |inner| {
                let (_file, meta, metadata) = inner.open(&key, &file_path)?;
                Ok(ObjectMeta {
                    size: meta.len(),
                    last_modified: modified(&meta),
                    etag: etag_of(&meta),
                    metadata,
                })
            }),
        )
        .await
    }

    async fn upload(
        &self,
        source: UploadSource,
        size: u64,
        to: &RemotePath,
        metadata: Option<StorageMetadata>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let target = self.object_path(to)?;
        if let Some(file) = source.local_file() {
            let fill =
                self.write_object_from_file(to.clone(), target, file.to_owned(), size, metadata);
            return timed(self.inner.timeout, cancel, fill).await;
        }
        let stream: UploadStream = source.open()?;
        let reader = ChunkReader::new(stream, size, self.inner.timeout);
        cancellable(
            cancel,
            self.write_object(to.clone(), target, reader, metadata),
        )
        .await
    }

    async fn download(
        &self,
        from: &RemotePath,
        opts: &DownloadOpts,
        cancel: &CancellationToken,
    ) -> Result<Download, Error> {
        let path = self.object_path(from)?;
        let key = from.clone();
        let (file, meta, metadata) = timed(
            self.inner.small_timeout,
            cancel,
            self.blocking(move |inner| inner.open(&key, &path)),
        )
        .await?;
        let etag = etag_of(&meta);
        if opts.if_none_match.as_ref() == Some(&etag) {
            return Err(Error::Unmodified);
        }
        let size = meta.len();
        if opts.is_ranged() && opts.byte_start >= size {
            return Err(Error::RangeNotSatisfiable(format!(
                "{from}: range starts at {} but the object has {size} bytes",
                opts.byte_start
            )));
        }
        let end = opts.byte_end.map_or(size, |e| e.min(size));
        let mut file = tokio::fs::File::from_std(file);
        if opts.byte_start > 0 {
            file.seek(SeekFrom::Start(opts.byte_start))
                .await
                .map_err(|e| io_error(format!("seek in {from}"), e))?;
        }
        let what = from.to_string();
        let body =
            tokio_util::io::ReaderStream::with_capacity(file.take(end - opts.byte_start), IO_CHUNK)
                .map_err(move |e| io_error(format!("read {what}"), e));
        Ok(Download {
            stream: guard_stream(body, self.inner.timeout, cancel.clone(), None),
            etag,
            last_modified: modified(&meta),
            metadata,
        })
    }

    async fn delete(&self, path: &RemotePath, cancel: &CancellationToken) -> Result<(), Error> {
        let file_path = self.object_path(path)?;
        let key = path.clone();
        timed(
            self.inner.small_timeout,
            cancel,
            self.blocking_change(move |inner, abandoned| {
                inner.test_commit_delay();
                inner.delete(&key, &file_path, abandoned)
            }),
        )
        .await
    }

    async fn delete_objects(
        &self,
        paths: &[RemotePath],
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let mut items = Vec::with_capacity(paths.len());
        for p in paths {
            items.push((p.clone(), self.object_path(p)?));
        }
        timed(
            self.inner.timeout,
            cancel,
            self.blocking_change(move |inner, abandoned| {
                items
                    .iter()
                    .try_for_each(|(key, path)| inner.delete(key, path, abandoned))
            }),
        )
        .await
    }

    fn max_keys_per_delete(&self) -> usize {
        MAX_KEYS_PER_DELETE_S3
    }

    async fn copy(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let src = self.object_path(from)?;
        let target = self.object_path(to)?;
        let key = from.clone();
        let (file, meta, metadata) = timed(
            self.inner.small_timeout,
            cancel,
            self.blocking(move |inner| inner.open(&key, &src)),
        )
        .await?;
        let size = meta.len();
        let file = tokio::fs::File::from_std(file);
        let stream: UploadStream =
            Box::pin(tokio_util::io::ReaderStream::with_capacity(file, IO_CHUNK));
        let reader = ChunkReader::new(stream, size, self.inner.timeout);
        let metadata = (!metadata.is_empty()).then_some(metadata);
        cancellable(
            cancel,
            self.write_object(to.clone(), target, reader, metadata),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(timeout: Duration) -> (tempfile::TempDir, LocalFs) {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
        let fs = LocalFs::new(root, timeout, timeout).unwrap();
        (dir, fs)
    }

    async fn put(fs: &LocalFs, key: &RemotePath, data: &'static [u8]) -> Result<(), Error> {
        let cancel = CancellationToken::new();
        let source = UploadSource::from_bytes(bytes::Bytes::from_static(data));
        fs.upload(source, data.len() as u64, key, None, &cancel)
            .await
    }

    async fn get(fs: &LocalFs, key: &RemotePath) -> Vec<u8> {
        let cancel = CancellationToken::new();
        let d = fs
            .download(key, &DownloadOpts::default(), &cancel)
            .await
            .unwrap();
        let chunks: Vec<bytes::Bytes> = d.stream.try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn a_timed_out_upload_never_overwrites_a_later_one() {
        let (_dir, fs) = storage(Duration::from_millis(200));
        let key = RemotePath::new("tenants/t/index_part.json").unwrap();
        put(&fs, &key, b"v0").await.unwrap();
        *fs.inner.commit_delay.lock().unwrap() = Some(Duration::from_millis(600));
        let e = put(&fs, &key, b"v1-late").await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        *fs.inner.commit_delay.lock().unwrap() = None;
        put(&fs, &key, b"v2").await.unwrap();
        // Well past the late commit's wake-up.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(get(&fs, &key).await, b"v2");
    }

    #[tokio::test]
    async fn a_timed_out_delete_never_deletes_a_later_upload() {
        let (_dir, fs) = storage(Duration::from_millis(200));
        let key = RemotePath::new("a/b").unwrap();
        put(&fs, &key, b"old").await.unwrap();
        *fs.inner.commit_delay.lock().unwrap() = Some(Duration::from_millis(600));
        let cancel = CancellationToken::new();
        let e = fs.delete(&key, &cancel).await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        *fs.inner.commit_delay.lock().unwrap() = None;
        put(&fs, &key, b"new").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(get(&fs, &key).await, b"new");
    }

    #[test]
    fn transient_io_errors_are_transient() {
        for errno in [
            nix::errno::Errno::EINTR,
            nix::errno::Errno::EAGAIN,
            nix::errno::Errno::EMFILE,
            nix::errno::Errno::ENFILE,
            nix::errno::Errno::EIO,
        ] {
            let e = io_error("op", io::Error::from_raw_os_error(errno as i32));
            assert!(e.is_transient(), "{errno}: {e}");
        }
        for errno in [
            nix::errno::Errno::EACCES,
            nix::errno::Errno::ENOSPC,
            nix::errno::Errno::EROFS,
        ] {
            let e = io_error("op", io::Error::from_raw_os_error(errno as i32));
            assert!(!e.is_transient(), "{errno}: {e}");
        }
    }
}
