//! One branch of a tenant: an LSN-versioned key-value store over layers.
//!
//! - writes come from ingest as batches of `(key, lsn, value)` ([`Timeline::put_batch`]);
//!   `last_record_lsn` advances only after the batch is in the open layer, and only to a
//!   record boundary, so a reader that waited for an LSN sees every value at or below it;
//! - the open in-memory layer is frozen at `checkpoint_distance` / `checkpoint_timeout`
//!   and written out by the timeline's flush task ([`flush`]); every change to the set of
//!   layers and to the durable metadata goes through [`Timeline::apply_layer_change`], the
//!   one place the upload queue will hook;
//! - reads ([`read`]) walk in-memory layers, then the layer map, then the ancestor at the
//!   branch point.
//!
//! Invariants:
//! - `disk_consistent_lsn <= last_record_lsn`, and every value at or below
//!   `disk_consistent_lsn` is in a layer named in the layer map: an fsynced local file,
//!   or an evicted one that the uploaded index names ([`eviction`]);
//! - in-memory layers cover `(disk_consistent_lsn, ∞)` contiguously: frozen ones oldest
//!   first, then the open one;
//! - a branch's own values are all above its `ancestor_lsn`.

pub mod commit_times;
pub mod eviction;
pub mod flush;
pub mod ingest;
pub mod load;
pub mod metadata;
pub mod read;
pub mod remote;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use utils::crashsafe::Sync;
use utils::{Lsn, TenantId, TimelineId};

use crate::config::TenantConfig;
use crate::keyspace::Key;
use crate::layer_map::LayerMap;
use crate::layers::in_memory::{InMemoryError, InMemoryLayer};
use crate::layers::residence::{Layer, LayerHome};
use crate::metrics;
use crate::page_cache::{PageCache, next_id};
use crate::remote_timeline_client::RemoteTimelineClient;
use crate::walingest::Value;
use crate::walredo::WalRedoManager;
use metadata::TimelineMetadata;

/// Logical sizes cached per timeline; the cache is cleared when it reaches this many.
pub const LOGICAL_SIZE_CACHE_ENTRIES: usize = 1024;

/// A timeline's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", content = "reason")]
pub enum TimelineState {
    /// Being loaded or created; not yet serving.
    Loading,
    /// Serving reads and ingesting.
    Active,
    /// Shutting down or being deleted; never Active again.
    Stopping,
    /// Cannot serve: a corrupt file, a failed ingest. The reason names the cause.
    Broken(String),
}

impl TimelineState {
    /// The name alone.
    pub fn name(&self) -> &'static str {
        match self {
            TimelineState::Loading => "Loading",
            TimelineState::Active => "Active",
            TimelineState::Stopping => "Stopping",
            TimelineState::Broken(_) => "Broken",
        }
    }
}

/// The last ingested record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRecord {
    /// Where it ends (where the next one starts): the timeline's readable LSN.
    pub last: Lsn,
    /// Where it starts.
    pub prev: Option<Lsn>,
}

/// What the walreceiver reports for the timeline's status.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct WalReceiverStatus {
    /// The safekeeper streamed from now.
    pub connected_to: Option<String>,
    /// The end of the WAL received so far.
    pub last_received_lsn: Option<Lsn>,
    /// The safekeeper's commit LSN, from its last message.
    pub commit_lsn: Option<Lsn>,
    /// How often the walreceiver changed safekeepers.
    pub switches: u64,
    /// The last connection or ingest error.
    pub last_error: Option<String>,
    /// Set when a record could not be applied: ingest has stopped for good.
    pub ingest_stopped: bool,
}

/// The layers of a timeline.
#[derive(Default)]
pub(crate) struct LayerSet {
    pub(crate) open: Option<Arc<InMemoryLayer>>,
    /// Frozen layers, oldest first, with the last record at their end.
    pub(crate) frozen: Vec<(Arc<InMemoryLayer>, LastRecord)>,
    pub(crate) historic: Arc<LayerMap<Arc<Layer>>>,
    /// Where the next open layer starts.
    pub(crate) next_open_start: Lsn,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The in-memory layer refused (out-of-order LSN, I/O).
    #[error(transparent)]
    InMemory(#[from] InMemoryError),
    /// The timeline is not accepting writes.
    #[error("timeline is {0}")]
    NotActive(&'static str),
}

/// One branch.
pub struct Timeline {
    /// The tenant.
    pub tenant_id: TenantId,
    /// This timeline.
    pub timeline_id: TimelineId,
    /// `tenants/<t>/timelines/<tl>`.
    pub dir: PathBuf,
    /// Process-unique number (page cache keys).
    pub(crate) seq: u64,
    /// The parent, for a branch.
    pub ancestor: Option<Arc<Timeline>>,
    /// The branch point (0 without an ancestor).
    pub ancestor_lsn: Lsn,
    /// Where this timeline's own history starts.
    pub initdb_lsn: Lsn,
    /// PostgreSQL major version.
    pub pg_version: u32,
    state: watch::Sender<TimelineState>,
    pub(crate) layers: RwLock<LayerSet>,
    last_record: watch::Sender<LastRecord>,
    disk_consistent_lsn: AtomicU64,
    /// The metadata as last persisted.
    pub(crate) metadata: Mutex<TimelineMetadata>,
    pub(crate) walredo: Arc<WalRedoManager>,
    pub(crate) cache: Arc<PageCache>,
    /// The tenant's effective config (shared with the tenant, changed by the API).
    pub tenant_conf: Arc<RwLock<TenantConfig>>,
    pub(crate) sync: Sync,
    /// What the walreceiver reports.
    pub walreceiver_status: Mutex<WalReceiverStatus>,
    pub(crate) flush_requested: Notify,
    pub(crate) flush_done: watch::Sender<Lsn>,
    /// Cancelled when the timeline stops: ends its tasks.
    pub cancel: CancellationToken,
    pub(crate) rel_sizes: read::RelSizeCache,
    /// Commit time → LSN samples, for retention by time.
    pub commit_times: commit_times::CommitTimes,
    /// Logical sizes already computed, by LSN (history at or below last_record_lsn never
    /// changes, so an entry never goes stale); bounded by [`LOGICAL_SIZE_CACHE_ENTRIES`].
    pub(crate) logical_sizes: Mutex<std::collections::HashMap<Lsn, u64>>,
    /// Serializes freezes, and ingest batches against them.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    /// Object storage and the generation to write in, until the client is started.
    pub(crate) remote_setup: Option<crate::remote_timeline_client::RemoteSetup>,
    /// The upload queue, once started ([`Timeline::start_remote`]).
    pub(crate) remote_client: std::sync::OnceLock<RemoteTimelineClient>,
    /// What this timeline's layers need to be evicted and downloaded.
    pub(crate) layer_home: Arc<LayerHome>,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("tenant_id", &self.tenant_id)
            .field("timeline_id", &self.timeline_id)
            .finish()
    }
}

/// What a timeline needs from its tenant and the process.
#[derive(Clone)]
pub struct TimelineResources {
    /// The redo pool.
    pub walredo: Arc<WalRedoManager>,
    /// The page cache.
    pub cache: Arc<PageCache>,
    /// The tenant's config.
    pub tenant_conf: Arc<RwLock<TenantConfig>>,
    /// fsync or not.
    pub sync: Sync,
    /// Object storage and the tenant's generation, when configured.
    pub remote: Option<crate::remote_timeline_client::RemoteSetup>,
}

impl TimelineResources {
    /// Where a timeline's layers live and come back from.
    pub fn layer_home(
        &self,
        tenant: TenantId,
        timeline: TimelineId,
        dir: &std::path::Path,
    ) -> Arc<LayerHome> {
        Arc::new(LayerHome {
            tenant,
            timeline,
            dir: dir.to_path_buf(),
            storage: self.remote.as_ref().map(|r| r.storage.clone()),
            cache: self.cache.clone(),
            sync: self.sync,
        })
    }
}

impl std::fmt::Debug for TimelineResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimelineResources")
            .field("sync", &self.sync)
            .finish()
    }
}

impl Timeline {
    /// A timeline object over `meta` and the `historic` layers found on disk (state
    /// Loading; the caller activates it).
    pub(crate) fn new(
        tenant_id: TenantId,
        timeline_id: TimelineId,
        dir: PathBuf,
        meta: TimelineMetadata,
        ancestor: Option<Arc<Timeline>>,
        historic: LayerMap<Arc<Layer>>,
        res: TimelineResources,
    ) -> Arc<Timeline> {
        let layer_home = res.layer_home(tenant_id, timeline_id, &dir);
        let last = LastRecord {
            last: meta.disk_consistent_lsn,
            prev: meta.prev_record_lsn,
        };
        Arc::new(Timeline {
            tenant_id,
            timeline_id,
            dir,
            seq: next_id(),
            ancestor,
            ancestor_lsn: meta.ancestor_lsn,
            initdb_lsn: meta.initdb_lsn,
            pg_version: meta.pg_version,
            state: watch::Sender::new(TimelineState::Loading),
            layers: RwLock::new(LayerSet {
                open: None,
                frozen: Vec::new(),
                historic: Arc::new(historic),
                next_open_start: Lsn(meta.disk_consistent_lsn.0 + 1),
            }),
            last_record: watch::Sender::new(last),
            disk_consistent_lsn: AtomicU64::new(meta.disk_consistent_lsn.0),
            flush_done: watch::Sender::new(meta.disk_consistent_lsn),
            metadata: Mutex::new(meta),
            walredo: res.walredo,
            cache: res.cache,
            tenant_conf: res.tenant_conf,
            sync: res.sync,
            walreceiver_status: Mutex::new(WalReceiverStatus::default()),
            flush_requested: Notify::new(),
            cancel: CancellationToken::new(),
            rel_sizes: read::RelSizeCache::default(),
            commit_times: commit_times::CommitTimes::default(),
            logical_sizes: Mutex::new(std::collections::HashMap::new()),
            write_lock: tokio::sync::Mutex::new(()),
            remote_setup: res.remote,
            remote_client: std::sync::OnceLock::new(),
            layer_home,
        })
    }

    /// The current state.
    pub fn state(&self) -> TimelineState {
        self.state.borrow().clone()
    }

    /// Moves to `new` unless the timeline is already Stopping or Broken (those are final).
    pub fn set_state(&self, new: TimelineState) {
        self.state.send_if_modified(|s| {
            let final_state = matches!(s, TimelineState::Stopping | TimelineState::Broken(_));
            if final_state && !matches!(new, TimelineState::Broken(_) | TimelineState::Stopping) {
                return false;
            }
            if matches!(s, TimelineState::Broken(_)) {
                return false;
            }
            if *s != new {
                if let TimelineState::Broken(reason) = &new {
                    tracing::error!(
                        tenant_id = %self.tenant_id,
                        timeline_id = %self.timeline_id,
                        "timeline is broken: {reason}"
                    );
                }
                *s = new;
                return true;
            }
            false
        });
    }

    /// The end of the last ingested record.
    pub fn last_record_lsn(&self) -> Lsn {
        self.last_record.borrow().last
    }

    /// The last ingested record.
    pub fn last_record(&self) -> LastRecord {
        *self.last_record.borrow()
    }

    /// Everything at or below this is in fsynced layer files.
    pub fn disk_consistent_lsn(&self) -> Lsn {
        Lsn(self.disk_consistent_lsn.load(Ordering::Acquire))
    }

    /// What object storage holds: the uploaded index's `disk_consistent_lsn` (0 before the
    /// first upload). Without remote storage configured, the local disk is all there is:
    /// `disk_consistent_lsn`. Safekeepers trim WAL below this.
    pub fn remote_consistent_lsn(&self) -> Lsn {
        if self.remote_setup.is_none() {
            return self.disk_consistent_lsn();
        }
        self.remote_client
            .get()
            .and_then(|c| c.remote_consistent_lsn())
            .unwrap_or(Lsn(0))
    }

    /// The upload queue, when remote storage is configured and it has started.
    pub fn remote_client(&self) -> Option<&RemoteTimelineClient> {
        self.remote_client.get()
    }

    /// The GC cutoff: reads below it are refused.
    pub fn gc_cutoff_lsn(&self) -> Lsn {
        self.metadata.lock().latest_gc_cutoff_lsn
    }

    /// Adds a batch of values (ingest) and then advances the last record to `last`.
    pub async fn put_batch(
        &self,
        batch: &[(Key, Lsn, Value)],
        last: LastRecord,
    ) -> Result<(), WriteError> {
        let _guard = self.write_lock.lock().await;
        if let TimelineState::Stopping | TimelineState::Broken(_) = self.state() {
            return Err(WriteError::NotActive(self.state().name()));
        }
        if !batch.is_empty() {
            let open = self.open_layer()?;
            open.put_batch(batch)?;
        }
        self.last_record.send_replace(last);
        metrics::LAST_RECORD_LSN
            .with_label_values(&[&self.tenant_id.to_string(), &self.timeline_id.to_string()])
            .set(last.last.0 as i64);
        self.maybe_freeze_locked(false);
        Ok(())
    }

    fn open_layer(&self) -> Result<Arc<InMemoryLayer>, InMemoryError> {
        if let Some(open) = &self.layers.read().open {
            return Ok(open.clone());
        }
        let mut layers = self.layers.write();
        if let Some(open) = &layers.open {
            return Ok(open.clone());
        }
        let open = Arc::new(InMemoryLayer::create(&self.dir, layers.next_open_start)?);
        layers.open = Some(open.clone());
        Ok(open)
    }

    /// Freezes the open layer if it is due (or `force` and it holds anything). The
    /// caller holds `write_lock`, so no batch is half-applied.
    fn maybe_freeze_locked(&self, force: bool) -> bool {
        let conf = self.tenant_conf.read().clone();
        let last = self.last_record();
        let mut layers = self.layers.write();
        let Some(open) = layers.open.clone() else {
            return false;
        };
        let due = open.size() >= conf.checkpoint_distance
            || open.opened_at.elapsed() >= conf.checkpoint_timeout;
        if !(due || force) || open.value_count() == 0 {
            return false;
        }
        let end = Lsn(last.last.0 + 1);
        open.freeze(end);
        layers.frozen.push((open, last));
        layers.open = None;
        layers.next_open_start = end;
        drop(layers);
        self.flush_requested.notify_one();
        true
    }

    /// Freezes the open layer now (if it has values) and waits until every frozen layer
    /// is on disk: `disk_consistent_lsn` then covers everything ingested so far.
    pub async fn checkpoint(&self) -> Result<Lsn, flush::FlushError> {
        let target = {
            let _guard = self.write_lock.lock().await;
            self.maybe_freeze_locked(true);
            let layers = self.layers.read();
            layers.frozen.last().map(|(l, rec)| (l.clone(), rec.last))
        };
        let Some((_, target)) = target else {
            return Ok(self.disk_consistent_lsn());
        };
        self.wait_flushed(target).await?;
        Ok(self.disk_consistent_lsn())
    }

    /// Freezes the open layer if `checkpoint_timeout` has passed (called periodically).
    pub async fn freeze_if_old(&self) {
        let _guard = self.write_lock.lock().await;
        self.maybe_freeze_locked(false);
    }

    /// Waits until `disk_consistent_lsn >= lsn`, or the flush task fails.
    pub async fn wait_flushed(&self, lsn: Lsn) -> Result<(), flush::FlushError> {
        let mut rx = self.flush_done.subscribe();
        loop {
            if self.disk_consistent_lsn() >= lsn {
                return Ok(());
            }
            if let TimelineState::Broken(reason) = self.state() {
                return Err(flush::FlushError::Broken(reason));
            }
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        return Err(flush::FlushError::Cancelled);
                    }
                }
                _ = self.cancel.cancelled() => return Err(flush::FlushError::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Waits until `last_record_lsn >= lsn`, up to `timeout`.
    pub async fn wait_lsn(&self, lsn: Lsn, timeout: Duration) -> Result<(), read::ReadError> {
        if self.last_record_lsn() >= lsn {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut rx = self.last_record.subscribe();
        let wait = async {
            loop {
                if rx.borrow_and_update().last >= lsn {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(read::ReadError::Cancelled);
                }
            }
        };
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, wait) => match r {
                Ok(r) => r,
                Err(_) => Err(read::ReadError::WaitLsnTimeout {
                    lsn,
                    last: self.last_record_lsn(),
                    timeout,
                }),
            },
            _ = self.cancel.cancelled() => Err(read::ReadError::Cancelled),
        };
        metrics::WAIT_LSN_SECONDS.observe(started.elapsed().as_secs_f64());
        result
    }

    /// Sets `disk_consistent_lsn` (after the metadata is persisted).
    pub(crate) fn set_disk_consistent_lsn(&self, lsn: Lsn) {
        self.disk_consistent_lsn.store(lsn.0, Ordering::Release);
        metrics::DISK_CONSISTENT_LSN
            .with_label_values(&[&self.tenant_id.to_string(), &self.timeline_id.to_string()])
            .set(lsn.0 as i64);
        self.flush_done.send_replace(lsn);
    }

    /// A snapshot of the in-memory layers (newest first) and the layer map, for a read.
    pub(crate) fn layer_snapshot(&self) -> (Vec<Arc<InMemoryLayer>>, Arc<LayerMap<Arc<Layer>>>) {
        let layers = self.layers.read();
        let mut mem: Vec<Arc<InMemoryLayer>> = Vec::with_capacity(layers.frozen.len() + 1);
        if let Some(open) = &layers.open {
            mem.push(open.clone());
        }
        mem.extend(layers.frozen.iter().rev().map(|(l, _)| l.clone()));
        (mem, layers.historic.clone())
    }

    /// Freezes and flushes inline (no flush task running): for tests.
    #[cfg(test)]
    pub(crate) async fn checkpoint_for_test(self: &Arc<Self>) -> Lsn {
        {
            let _g = self.write_lock.lock().await;
            self.maybe_freeze_locked(true);
        }
        while self.flush_one().await.expect("flush") {}
        self.disk_consistent_lsn()
    }

    /// Whether [`Timeline::shutdown`] has begun: errors seen after it are the shutdown's,
    /// not the data's.
    pub fn is_stopping(&self) -> bool {
        self.cancel.is_cancelled() || matches!(self.state(), TimelineState::Stopping)
    }

    /// Stops the timeline's tasks; it never becomes Active again.
    pub fn shutdown(&self) {
        self.set_state(TimelineState::Stopping);
        self.cancel.cancel();
    }
}
