//! A historic layer as the layer map holds it: **resident** (its file on the local disk,
//! open) or **evicted** (only in object storage; a small stub file says how to get it
//! back). Reads download an evicted layer on demand.
//!
//! Invariants:
//! - a layer is evicted only when the uploaded index names it (the caller checks), and its
//!   stub `<name>.evicted` (generation, size, crc32c) is durable before the local file
//!   goes: a crash leaves the file, the stub, or both, never neither; at load the file wins
//!   and a stray stub is removed;
//! - a download puts the verified file in place (see `remote_timeline_client::download`)
//!   before the stub goes; concurrent readers of one evicted layer share one download;
//! - a reader holding an open [`LayerFile`] keeps reading it after an eviction (the
//!   unlinked file lives while it is open), so an eviction never fails a read in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use remote_storage::GenericRemoteStorage;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::info;
use utils::crashsafe::{self, Sync};
use utils::{TenantId, TimelineId};

use super::LayerName;
use super::file_format::{LayerFile, LayerFileError};
use crate::metrics;
use crate::page_cache::PageCache;
use crate::remote_timeline_client::download::download_layer_file;
use crate::remote_timeline_client::index::LayerFileMeta;

/// The suffix of an evicted layer's stub file.
pub const EVICTED_SUFFIX: &str = ".evicted";
/// The stub format written.
const STUB_VERSION: u32 = 1;

/// Why a layer could not be evicted or downloaded.
#[derive(Debug, thiserror::Error)]
pub enum ResidenceError {
    /// Local file I/O.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The layer is evicted and there is no object storage to get it from.
    #[error("layer {0} is evicted and the pageserver has no remote_storage")]
    NoRemoteStorage(LayerName),
    /// The download failed (after its retries) or was cancelled.
    #[error("downloading layer {name}: {reason}")]
    Download {
        /// The layer.
        name: LayerName,
        /// What failed.
        reason: String,
    },
    /// The downloaded file does not open as the layer.
    #[error(transparent)]
    Layer(#[from] LayerFileError),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ResidenceError + '_ {
    move |source| ResidenceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an evicted layer's stub records: enough to download and verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvictedStub {
    /// The stub format version (1).
    pub version: u32,
    /// The layer object as the index names it.
    pub meta: LayerFileMeta,
}

impl EvictedStub {
    /// The stub of a layer the index describes with `meta`.
    pub fn new(meta: LayerFileMeta) -> EvictedStub {
        EvictedStub {
            version: STUB_VERSION,
            meta,
        }
    }

    /// The stub path of layer `name` in `dir`.
    pub fn path(dir: &Path, name: &LayerName) -> PathBuf {
        dir.join(format!("{name}{EVICTED_SUFFIX}"))
    }

    /// Writes it crash-safely.
    pub fn persist(&self, path: &Path, sync: Sync) -> Result<(), ResidenceError> {
        let bytes = serde_json::to_vec(self).map_err(|e| ResidenceError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        crashsafe::overwrite(path, &bytes, sync).map_err(io_err(path))
    }

    /// Reads one; `Err` says why it is unusable.
    pub fn load(path: &Path) -> Result<EvictedStub, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let stub: EvictedStub = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if stub.version > STUB_VERSION {
            return Err(format!(
                "stub version {} is newer than {STUB_VERSION}",
                stub.version
            ));
        }
        Ok(stub)
    }
}

enum Residence {
    Resident(Arc<LayerFile>),
    Evicted(EvictedStub),
}

/// Where the layer lives and what it needs to come back.
pub struct LayerHome {
    /// The tenant (remote path).
    pub tenant: TenantId,
    /// The timeline (remote path).
    pub timeline: TimelineId,
    /// The timeline's directory.
    pub dir: PathBuf,
    /// Object storage, when configured.
    pub storage: Option<GenericRemoteStorage>,
    /// Index and page blocks of the opened file.
    pub cache: Arc<PageCache>,
    /// fsync or not.
    pub sync: Sync,
}

impl std::fmt::Debug for LayerHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerHome").field("dir", &self.dir).finish()
    }
}

/// One historic layer (see the module docs).
pub struct Layer {
    name: LayerName,
    home: Arc<LayerHome>,
    state: Mutex<Residence>,
    /// One download at a time; the others wait and find it resident.
    download_lock: tokio::sync::Mutex<()>,
    /// Seconds since the epoch of the last read, for least-recently-used eviction.
    last_access: AtomicU64,
    file_size: AtomicU64,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("name", &self.name)
            .field("resident", &self.is_resident())
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Layer {
    /// A layer whose file is open.
    pub fn resident(name: LayerName, file: Arc<LayerFile>, home: Arc<LayerHome>) -> Arc<Layer> {
        let size = file.file_size();
        Arc::new(Layer {
            name,
            home,
            state: Mutex::new(Residence::Resident(file)),
            download_lock: tokio::sync::Mutex::new(()),
            last_access: AtomicU64::new(now_secs()),
            file_size: AtomicU64::new(size),
        })
    }

    /// A layer known only by its stub.
    pub fn evicted(name: LayerName, stub: EvictedStub, home: Arc<LayerHome>) -> Arc<Layer> {
        Arc::new(Layer {
            name,
            home,
            file_size: AtomicU64::new(stub.meta.file_size),
            state: Mutex::new(Residence::Evicted(stub)),
            download_lock: tokio::sync::Mutex::new(()),
            last_access: AtomicU64::new(0),
        })
    }

    /// Its name.
    pub fn name(&self) -> &LayerName {
        &self.name
    }

    /// Bytes of the file (local or remote).
    pub fn file_size(&self) -> u64 {
        self.file_size.load(Ordering::Relaxed)
    }

    /// Whether its file is on the local disk.
    pub fn is_resident(&self) -> bool {
        matches!(*self.state.lock(), Residence::Resident(_))
    }

    /// Seconds since the epoch of the last read (0: never since load, for an evicted one).
    pub fn last_access(&self) -> u64 {
        self.last_access.load(Ordering::Relaxed)
    }

    /// The local path of its file (present only while resident).
    pub fn local_path(&self) -> PathBuf {
        self.home.dir.join(self.name.to_string())
    }

    /// The open file, if resident (a read: counts as an access).
    pub fn file(&self) -> Option<Arc<LayerFile>> {
        match &*self.state.lock() {
            Residence::Resident(f) => {
                self.last_access.store(now_secs(), Ordering::Relaxed);
                Some(f.clone())
            }
            Residence::Evicted(_) => None,
        }
    }

    /// Evicts it: the stub (from `meta`, what the uploaded index says of it) is made
    /// durable, then the local file goes. False when it was already evicted.
    pub fn evict(&self, meta: LayerFileMeta) -> Result<bool, ResidenceError> {
        let mut st = self.state.lock();
        if matches!(*st, Residence::Evicted(_)) {
            return Ok(false);
        }
        let stub = EvictedStub::new(meta);
        let stub_path = EvictedStub::path(&self.home.dir, &self.name);
        stub.persist(&stub_path, self.home.sync)?;
        // Tests crash here (`exit`): the file and its stub both exist.
        let _ = utils::failpoint::eval("layer-evict-after-stub");
        let path = self.local_path();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        crashsafe::fsync_dir(&self.home.dir, self.home.sync).map_err(io_err(&self.home.dir))?;
        *st = Residence::Evicted(stub);
        drop(st);
        metrics::LAYER_EVICTIONS.inc();
        info!(layer = %self.name, "evicted");
        Ok(true)
    }

    /// The open file, downloading it first if it is evicted. Concurrent callers share one
    /// download.
    pub async fn get_or_download(&self) -> Result<Arc<LayerFile>, ResidenceError> {
        if let Some(f) = self.file() {
            return Ok(f);
        }
        let _one = self.download_lock.lock().await;
        let stub = match &*self.state.lock() {
            Residence::Resident(f) => return Ok(f.clone()),
            Residence::Evicted(s) => *s,
        };
        let Some(storage) = &self.home.storage else {
            return Err(ResidenceError::NoRemoteStorage(self.name.clone()));
        };
        let started = Instant::now();
        let path = download_layer_file(
            storage,
            self.home.tenant,
            self.home.timeline,
            &self.name,
            &stub.meta,
            &self.home.dir,
            self.home.sync,
            &CancellationToken::new(),
        )
        .await
        .map_err(|reason| {
            metrics::LAYER_DOWNLOADS.with_label_values(&["error"]).inc();
            ResidenceError::Download {
                name: self.name.clone(),
                reason,
            }
        })?;
        let cache = self.home.cache.clone();
        let file = tokio::task::spawn_blocking(move || LayerFile::open(&path, cache))
            .await
            .map_err(|e| ResidenceError::Download {
                name: self.name.clone(),
                reason: e.to_string(),
            })??;
        // Tests crash here (`exit`): the verified file is in place, its stub not yet gone.
        let _ = utils::failpoint::eval_async("layer-download-after-rename").await;
        let file = Arc::new(file);
        *self.state.lock() = Residence::Resident(file.clone());
        self.last_access.store(now_secs(), Ordering::Relaxed);
        let stub_path = EvictedStub::path(&self.home.dir, &self.name);
        if let Err(e) = std::fs::remove_file(&stub_path)
            .and_then(|()| crashsafe::fsync_dir(&self.home.dir, self.home.sync))
        {
            // The next load sees the file and removes the stub.
            tracing::warn!("{}: removing the stub: {e}", stub_path.display());
        }
        metrics::LAYER_DOWNLOADS.with_label_values(&["ok"]).inc();
        metrics::LAYER_DOWNLOAD_BYTES.inc_by(stub.meta.file_size);
        metrics::LAYER_DOWNLOAD_SECONDS.observe(started.elapsed().as_secs_f64());
        info!(layer = %self.name, bytes = stub.meta.file_size,
            "downloaded on demand in {:?}", started.elapsed());
        Ok(file)
    }

    /// [`Layer::get_or_download`] from synchronous code (the metadata scans): blocks the
    /// calling thread for the download.
    pub fn get_or_download_blocking(&self) -> Result<Arc<LayerFile>, ResidenceError> {
        if let Some(f) = self.file() {
            return Ok(f);
        }
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(self.get_or_download()))
            }
            // A current-thread runtime cannot be blocked on from inside: a helper thread
            // with its own runtime downloads.
            _ => std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| ResidenceError::Download {
                            name: self.name.clone(),
                            reason: format!("a runtime for the download: {e}"),
                        })?
                        .block_on(self.get_or_download())
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(ResidenceError::Download {
                        name: self.name.clone(),
                        reason: "the download thread panicked".into(),
                    })
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests;
