//! One timeline's link to remote storage: the [`RemoteTimelineClient`] queues uploads of
//! layer files and indexes and deletions of layer objects, and runs them in the order
//! [`upload_queue`] allows, retrying each until it succeeds.
//!
//! Invariants (with [`upload_queue`] keeping the ordering ones):
//! - **an uploaded index never names a layer that is not already uploaded**;
//! - **a layer named by the latest uploaded index is never deleted**; a deletion is always
//!   queued behind an index that no longer names the layer;
//! - two index values are kept: the *projected* one (what the queue will upload: every
//!   scheduled change applied) and the *uploaded* one; each new projected index is checked
//!   to follow the previous ([`IndexPart::check_follows`]) and serialized **when it is
//!   queued**, so a bad index is the caller's error, never an upload retried forever;
//! - `remote_consistent_lsn` is the uploaded index's `disk_consistent_lsn` (what object
//!   storage holds), made visible only once the [`DeletionQueue`] has validated the
//!   generation that uploaded it;
//! - a deletion operation hands its objects to the [`DeletionQueue`] (durable, validated
//!   against the control plane before it runs) and completes once the list is durable.
//!
//! Every operation is retried with capped, jittered backoff until it succeeds or the client
//! is cancelled (a warning from the third failure on): a transient outage queues work, it
//! loses none.

pub mod download;
pub mod index;
pub mod layout;
pub mod upload_queue;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use camino::Utf8PathBuf;
use futures::FutureExt;
use futures::future::BoxFuture;
use pageserver_api::Generation;
use parking_lot::Mutex;
use remote_storage::{
    DownloadOpts, GenericRemoteStorage, ListingMode, RemotePath, RemotePathError, UploadSource,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};
use utils::backoff::{self, RetryPolicy};
use utils::{Lsn, TenantId, TenantTimelineId, TimelineId};

use crate::deletion_queue::DeletionQueue;
use crate::layers::LayerName;
use crate::metrics;
use crate::timeline::metadata::TimelineMetadata;
use index::{IndexError, IndexPart, LayerFileMeta, MonotonicityError};
use upload_queue::{OpId, OpKind, QueueStopped, UploadOp, UploadQueue};

/// What a timeline needs to reach object storage: the bucket, its tenant's generation and
/// the pageserver's deletion queue.
#[derive(Debug, Clone)]
pub struct RemoteSetup {
    /// The bucket.
    pub storage: GenericRemoteStorage,
    /// The generation its objects carry.
    pub generation: Generation,
    /// Where its deletions go.
    pub deletions: DeletionQueue,
}

/// Operations of one timeline running at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// How a client runs its queue.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Operations running at once.
    pub concurrency: usize,
    /// How each operation is retried (`max_attempts` is ignored: always until it succeeds).
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    /// [`DEFAULT_CONCURRENCY`]; 100 ms backoff doubling to 10 s, a warning from the third
    /// failure on.
    fn default() -> Self {
        ClientOptions {
            concurrency: DEFAULT_CONCURRENCY,
            retry: RetryPolicy::default(),
        }
    }
}

/// Why a call to the client failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The client was shut down or cancelled.
    #[error("the remote timeline client of {timeline} is shut down")]
    Stopped {
        /// Which timeline.
        timeline: TimelineId,
    },
    /// The change would make an index go backwards.
    #[error("timeline {timeline}: {source}")]
    Monotonicity {
        /// Which timeline.
        timeline: TimelineId,
        /// What would go back.
        #[source]
        source: MonotonicityError,
    },
    /// An index could not be serialized or parsed.
    #[error("timeline {timeline}: {source}")]
    Index {
        /// Which timeline.
        timeline: TimelineId,
        /// Why.
        #[source]
        source: IndexError,
    },
    /// A name could not be a remote path.
    #[error("timeline {timeline}: {source}")]
    Path {
        /// Which timeline.
        timeline: TimelineId,
        /// Why.
        #[source]
        source: RemotePathError,
    },
    /// Remote storage failed (downloads; the queue's operations retry instead).
    #[error("timeline {timeline}: {source}")]
    Storage {
        /// Which timeline.
        timeline: TimelineId,
        /// Why.
        #[source]
        source: remote_storage::Error,
    },
    /// A local layer file could not be read.
    #[error("timeline {timeline}: reading {}: {source}", path.display())]
    Local {
        /// Which timeline.
        timeline: TimelineId,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

struct State {
    queue: UploadQueue,
    /// The projected index: every scheduled change applied.
    projected: IndexPart,
}

struct Inner {
    tenant: TenantId,
    timeline: TimelineId,
    generation: Generation,
    storage: GenericRemoteStorage,
    deletions: DeletionQueue,
    /// The validated `remote_consistent_lsn` (0: none yet).
    visible_lsn: Arc<AtomicU64>,
    retry: RetryPolicy,
    state: Mutex<State>,
    /// Something was queued.
    wake: Notify,
    /// Bumped on every completion, for waiters.
    progress: watch::Sender<u64>,
    cancel: CancellationToken,
}

/// See the module docs. Cloning shares the client.
#[derive(Clone)]
pub struct RemoteTimelineClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RemoteTimelineClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTimelineClient")
            .field("tenant", &self.inner.tenant)
            .field("timeline", &self.inner.timeline)
            .field("generation", &self.inner.generation)
            .finish()
    }
}

impl RemoteTimelineClient {
    /// A client for `timeline` attached in `generation`, starting from the remote index
    /// found at attach (`None`: nothing uploaded yet; the projected index then starts
    /// empty with `metadata`). Spawns its executor on the current tokio runtime; it stops
    /// at [`RemoteTimelineClient::shutdown`] or when `cancel` fires.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: GenericRemoteStorage,
        deletions: DeletionQueue,
        ttid: TenantTimelineId,
        generation: Generation,
        remote: Option<IndexPart>,
        metadata: TimelineMetadata,
        options: ClientOptions,
        cancel: CancellationToken,
    ) -> RemoteTimelineClient {
        let (tenant, timeline) = (ttid.tenant_id, ttid.timeline_id);
        let projected = remote.clone().unwrap_or_else(|| IndexPart::empty(metadata));
        // What object storage held at attach was written and published by its owner then.
        let visible = remote
            .as_ref()
            .map_or(0, |i| i.metadata.disk_consistent_lsn.0);
        let inner = Arc::new(Inner {
            tenant,
            timeline,
            generation,
            storage,
            deletions,
            visible_lsn: Arc::new(AtomicU64::new(visible)),
            retry: RetryPolicy {
                max_attempts: None,
                ..options.retry
            },
            state: Mutex::new(State {
                queue: UploadQueue::new(options.concurrency, remote),
                projected,
            }),
            wake: Notify::new(),
            progress: watch::channel(0).0,
            cancel,
        });
        let span = info_span!("remote_client", tenant_id = %tenant, timeline_id = %timeline);
        tokio::spawn(run(Arc::clone(&inner)).instrument(span));
        RemoteTimelineClient { inner }
    }

    /// The generation it writes in.
    pub fn generation(&self) -> Generation {
        self.inner.generation
    }

    /// The projected index (what the queue will have uploaded once drained).
    pub fn projected_index(&self) -> IndexPart {
        self.inner.state.lock().projected.clone()
    }

    /// The last uploaded index.
    pub fn uploaded_index(&self) -> Option<IndexPart> {
        self.inner
            .state
            .lock()
            .queue
            .clean()
            .map(|i| IndexPart::clone(i))
    }

    /// What object storage holds, as validated: the uploaded index's
    /// `disk_consistent_lsn` once the generation that uploaded it was confirmed current.
    pub fn remote_consistent_lsn(&self) -> Option<Lsn> {
        match self.inner.visible_lsn.load(Ordering::Acquire) {
            0 => None,
            n => Some(Lsn(n)),
        }
    }

    fn err_stopped(&self, _: QueueStopped) -> RemoteError {
        RemoteError::Stopped {
            timeline: self.inner.timeline,
        }
    }

    fn push(&self, st: &mut State, op: UploadOp) -> Result<OpId, RemoteError> {
        let kind = op.kind();
        let id = st.queue.push(op).map_err(|e| self.err_stopped(e))?;
        metrics::REMOTE_QUEUE_DEPTH
            .with_label_values(&[kind.label()])
            .inc();
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Queues the upload of a local layer file (fsynced and in place) and adds it to the
    /// projected index; its size and checksum are taken now (a blocking read of the file:
    /// call from blocking context). The layer is named by an uploaded index only after the
    /// next [`RemoteTimelineClient::schedule_index_upload`] completes.
    pub fn schedule_layer_upload(
        &self,
        name: &LayerName,
        local: &Path,
    ) -> Result<LayerFileMeta, RemoteError> {
        let (file_size, checksum) = file_checksum(local).map_err(|source| RemoteError::Local {
            timeline: self.inner.timeline,
            path: local.to_path_buf(),
            source,
        })?;
        let meta = LayerFileMeta {
            file_size,
            generation: self.inner.generation,
            checksum,
        };
        let mut st = self.inner.state.lock();
        self.push(
            &mut st,
            UploadOp::UploadLayer {
                name: name.clone(),
                meta,
                local: local.to_path_buf(),
            },
        )?;
        st.projected.layer_metadata.insert(name.to_string(), meta);
        Ok(meta)
    }

    /// Queues an upload of the projected index with `metadata`; it uploads after the
    /// layers it names.
    pub fn schedule_index_upload(&self, metadata: TimelineMetadata) -> Result<(), RemoteError> {
        let mut st = self.inner.state.lock();
        let mut next = st.projected.clone();
        next.metadata = metadata;
        self.queue_index(&mut st, next)
    }

    fn queue_index(&self, st: &mut State, next: IndexPart) -> Result<(), RemoteError> {
        let timeline = self.inner.timeline;
        next.check_follows(&st.projected)
            .map_err(|source| RemoteError::Monotonicity { timeline, source })?;
        let bytes = next
            .to_json()
            .map_err(|source| RemoteError::Index { timeline, source })?;
        let index = Arc::new(next.clone());
        self.push(
            st,
            UploadOp::UploadIndex {
                index,
                bytes: Bytes::from(bytes),
            },
        )?;
        st.projected = next;
        Ok(())
    }

    /// Queues an index marked deleted at `at` (RFC 3339): the first step of a timeline
    /// deletion, so that a crash later leaves a timeline no attach brings back.
    pub fn schedule_deletion_mark(&self, at: String) -> Result<(), RemoteError> {
        let mut st = self.inner.state.lock();
        let mut next = st.projected.clone();
        next.deleted_at = Some(at);
        self.queue_index(&mut st, next)
    }

    /// Removes layers from the projected index, queues an index upload without them, and
    /// then their deletion (which runs only once no uploaded index names them). Layers the
    /// index does not name are ignored.
    pub fn schedule_layer_deletions(&self, names: &[LayerName]) -> Result<(), RemoteError> {
        let mut st = self.inner.state.lock();
        let mut next = st.projected.clone();
        let mut layers = Vec::new();
        for name in names {
            if let Some(meta) = next.layer_metadata.remove(&name.to_string()) {
                layers.push((name.clone(), meta.generation));
            }
        }
        if layers.is_empty() {
            return Ok(());
        }
        self.queue_index(&mut st, next)?;
        self.push(&mut st, UploadOp::Delete { layers })?;
        Ok(())
    }

    /// Waits until every operation queued so far has completed.
    pub async fn wait_completion(&self) -> Result<(), RemoteError> {
        let last = self.inner.state.lock().queue.last_id();
        match last {
            Some(id) => self.wait_for(id).await,
            None => Ok(()),
        }
    }

    /// Queues a barrier and waits for it: everything queued before it has completed.
    pub async fn barrier(&self) -> Result<(), RemoteError> {
        let id = {
            let mut st = self.inner.state.lock();
            self.push(&mut st, UploadOp::Barrier)?
        };
        self.wait_for(id).await
    }

    /// Lets everything queued drain, then stops the executor; later calls fail with
    /// [`RemoteError::Stopped`].
    pub async fn shutdown(&self) -> Result<(), RemoteError> {
        let id = {
            let mut st = self.inner.state.lock();
            self.push(&mut st, UploadOp::Shutdown)?
        };
        self.wait_for(id).await
    }

    async fn wait_for(&self, id: OpId) -> Result<(), RemoteError> {
        let mut rx = self.inner.progress.subscribe();
        loop {
            if self.inner.state.lock().queue.completed_through(id) {
                return Ok(());
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(self.err_stopped(QueueStopped));
                    }
                }
                _ = self.inner.cancel.cancelled() => {
                    return Err(self.err_stopped(QueueStopped));
                }
            }
        }
    }
}

/// The executor: starts what the queue allows, records completions.
async fn run(inner: Arc<Inner>) {
    let mut running: JoinSet<(OpId, OpKind)> = JoinSet::new();
    loop {
        let ready = {
            let mut st = inner.state.lock();
            if st.queue.is_stopped() {
                break;
            }
            st.queue.take_ready()
        };
        for (id, op) in ready {
            let kind = op.kind();
            let fut = execute(Arc::clone(&inner), op);
            running.spawn(async move {
                fut.await;
                (id, kind)
            });
        }
        tokio::select! {
            done = running.join_next(), if !running.is_empty() => {
                // A cancelled or panicked operation (Err): the client is going away.
                if let Some(Ok((id, kind))) = done {
                    let uploaded = {
                        let mut st = inner.state.lock();
                        st.queue.complete(id);
                        st.queue.clean().map(|i| i.metadata.disk_consistent_lsn)
                    };
                    if let (OpKind::UploadIndex, Some(lsn)) = (kind, uploaded) {
                        metrics::REMOTE_CONSISTENT_LSN
                            .with_label_values(&[
                                &inner.tenant.to_string(),
                                &inner.timeline.to_string(),
                            ])
                            .set(lsn.0 as i64);
                        inner.deletions.publish_lsn(
                            inner.tenant,
                            inner.generation,
                            lsn,
                            Arc::clone(&inner.visible_lsn),
                        );
                    }
                    metrics::REMOTE_QUEUE_DEPTH.with_label_values(&[kind.label()]).dec();
                    inner.progress.send_modify(|n| *n += 1);
                }
            }
            _ = inner.wake.notified() => {}
            _ = inner.cancel.cancelled() => break,
        }
        // Coalesced index uploads never ran: take them out of the depth gauge.
        let dropped = std::mem::take(&mut inner.state.lock().queue.coalesced);
        if dropped > 0 {
            metrics::REMOTE_QUEUE_DEPTH
                .with_label_values(&[OpKind::UploadIndex.label()])
                .sub(dropped as i64);
        }
    }
    running.abort_all();
    // Wake waiters: progress stops here.
    inner.progress.send_modify(|n| *n += 1);
    info!("remote timeline client stopped");
}

/// Runs one operation until it succeeds (or the client is cancelled).
fn execute(inner: Arc<Inner>, op: UploadOp) -> BoxFuture<'static, ()> {
    async move {
        let kind = op.kind();
        let (tenant, timeline, cancel) = (inner.tenant, inner.timeline, &inner.cancel);
        let what;
        if !matches!(op, UploadOp::Barrier | UploadOp::Shutdown) {
            crash_point("before", kind).await;
        }
        // After the test hook: a paused failpoint is not the operation's time.
        let started = Instant::now();
        let result = match &op {
            UploadOp::UploadLayer { name, meta, local } => {
                what = format!("upload of layer {name}");
                match (
                    layout::layer_path(tenant, timeline, name, meta.generation),
                    Utf8PathBuf::from_path_buf(local.clone()),
                ) {
                    (Ok(to), Ok(local)) => retried(&inner, &what, kind, || {
                        inner.storage.upload(
                            UploadSource::from_file(local.clone()),
                            meta.file_size,
                            &to,
                            None,
                            cancel,
                        )
                    })
                    .await
                    .map(|()| metrics::REMOTE_UPLOAD_BYTES.inc_by(meta.file_size)),
                    (Err(e), _) => Err(e.to_string()),
                    (_, Err(p)) => Err(format!("{} is not a UTF-8 path", p.display())),
                }
            }
            UploadOp::UploadIndex { index, bytes } => {
                what = format!(
                    "upload of the index at {}",
                    index.metadata.disk_consistent_lsn
                );
                match layout::index_path(tenant, timeline, inner.generation) {
                    Ok(to) => retried(&inner, &what, kind, || {
                        inner.storage.upload(
                            UploadSource::from_bytes(bytes.clone()),
                            bytes.len() as u64,
                            &to,
                            None,
                            cancel,
                        )
                    })
                    .await
                    .map(|()| metrics::REMOTE_UPLOAD_BYTES.inc_by(bytes.len() as u64)),
                    Err(e) => Err(e.to_string()),
                }
            }
            UploadOp::Delete { layers } => {
                what = format!("deletion of {} layers", layers.len());
                let paths: Result<Vec<RemotePath>, _> = layers
                    .iter()
                    .map(|(n, g)| layout::layer_path(tenant, timeline, n, *g))
                    .collect();
                match paths {
                    // Durable in the deletion queue: it deletes once the generation is
                    // validated.
                    Ok(paths) => {
                        let paths = Arc::new(paths);
                        backoff::retry(
                            &what,
                            inner.retry,
                            cancel,
                            |e: &crate::deletion_queue::DeletionError| {
                                matches!(e, crate::deletion_queue::DeletionError::Stopped)
                            },
                            || {
                                let (q, paths) = (inner.deletions.clone(), Arc::clone(&paths));
                                let generation = inner.generation;
                                async move {
                                    tokio::task::spawn_blocking(move || {
                                        q.push(tenant, timeline, generation, &paths)
                                    })
                                    .await
                                    .unwrap_or(Err(crate::deletion_queue::DeletionError::Stopped))
                                }
                            },
                        )
                        .await
                        .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            UploadOp::Barrier | UploadOp::Shutdown => return,
        };
        match result {
            Ok(()) => {
                crash_point("after", kind).await;
                metrics::REMOTE_OP_SECONDS
                    .with_label_values(&[kind.label()])
                    .observe(started.elapsed().as_secs_f64());
            }
            // Only a bad name (a bug, reported loudly) or cancellation ends here; the op
            // then never completes, and the queue behind it waits, as it must.
            Err(e) => {
                if !cancel.is_cancelled() {
                    tracing::error!("{what} cannot run: {e}");
                }
                futures::future::pending::<()>().await;
            }
        }
    }
    .boxed()
}

/// Test hook for crash tests: failpoint `remote-<before|after>-<kind>` (for example
/// `remote-after-upload_index` with the `exit` action); other actions are ignored.
async fn crash_point(when: &str, kind: OpKind) {
    if utils::failpoint::supported() {
        let _ = utils::failpoint::eval_async(&format!("remote-{when}-{}", kind.label())).await;
    }
}

/// Retries `op` forever (until cancelled), counting failures.
async fn retried<F, Fut>(inner: &Inner, what: &str, kind: OpKind, op: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), remote_storage::Error>>,
{
    backoff::retry(
        what,
        inner.retry,
        &inner.cancel,
        |_| false,
        || {
            let fut = op();
            async move {
                let r = fut.await;
                if r.is_err() {
                    metrics::REMOTE_OP_FAILURES
                        .with_label_values(&[kind.label()])
                        .inc();
                }
                r
            }
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// Size and crc32c of a file, read in 1 MiB chunks.
pub fn file_checksum(path: &Path) -> std::io::Result<(u64, u32)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((size, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
}

/// Runs a one-off remote call (start-up, attach, deletion, the tenant manifest), retrying
/// transient failures under the default bounded [`RetryPolicy`]; the caller reports what
/// is left. (The upload queue's operations retry forever instead.)
pub async fn retry_transient<T, Fut>(
    what: &str,
    cancel: &CancellationToken,
    op: impl FnMut() -> Fut,
) -> Result<T, remote_storage::Error>
where
    Fut: std::future::Future<Output = Result<T, remote_storage::Error>>,
{
    backoff::retry(
        what,
        RetryPolicy::default(),
        cancel,
        |e: &remote_storage::Error| !e.is_transient(),
        op,
    )
    .await
    .map_err(|e| e.into_inner().unwrap_or(remote_storage::Error::Cancelled))
}

/// Loads a timeline's remote index for an attachment in generation `mine`: the one with
/// the highest generation not above it ([`layout::pick_index_generation`]). `None` when
/// the timeline has no index. Transient failures are retried ([`retry_transient`]).
pub async fn download_index_part(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
    mine: Generation,
    cancel: &CancellationToken,
) -> Result<Option<(IndexPart, Generation)>, RemoteError> {
    let path_err = |source| RemoteError::Path { timeline, source };
    let storage_err = |source| RemoteError::Storage { timeline, source };
    let prefix = layout::timeline_prefix(tenant, timeline).map_err(path_err)?;
    let listing = retry_transient("listing the timeline's indexes", cancel, || {
        storage.list(Some(&prefix), ListingMode::WithDelimiter, None, cancel)
    })
    .await
    .map_err(storage_err)?;
    let present = listing
        .keys
        .iter()
        .filter_map(|o| layout::parse_index_generation(o.key.as_str()));
    let Some(generation) = layout::pick_index_generation(present, mine) else {
        return Ok(None);
    };
    let path = layout::index_path(tenant, timeline, generation).map_err(path_err)?;
    let bytes = retry_transient("download of index_part.json", cancel, || async {
        storage
            .download(&path, &DownloadOpts::default(), cancel)
            .await?
            .read_all()
            .await
    })
    .await
    .map_err(storage_err)?;
    let index = IndexPart::parse(&bytes).map_err(|source| RemoteError::Index {
        timeline,
        source: match source {
            IndexError::Corrupt(msg) => IndexError::Corrupt(format!("{}: {msg}", path.as_str())),
            other => other,
        },
    })?;
    Ok(Some((index, generation)))
}

#[cfg(test)]
mod tests;
