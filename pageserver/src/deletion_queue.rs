//! Deletions of remote objects, made durable first and run only once the control plane
//! confirms that the generation asking for them is still the tenant's current one.
//!
//! A pageserver whose attachment was superseded (another node attached the tenant in a
//! newer generation and it did not hear yet) keeps compacting and collecting garbage for a
//! while. Its layer deletions are about objects of *its* generation, but the new owner's
//! index may well name some of them (it attached from the stale node's index). So:
//!
//! - a deletion is a **list** (tenant, timeline, generation, object paths) written
//!   crash-safely to `<workdir>/deletion/<sequence:016x>.list` before the upload queue
//!   counts it done; a restart resumes every list it finds;
//! - lists are **validated in batches**: one `validate` upcall covers every (tenant,
//!   generation) pending; a list whose generation is no longer current is **dropped**
//!   (logged; the objects leak, which is safe, and are left for a scrubber); a valid one is
//!   executed with batch deletes, then its file is removed;
//! - `remote_consistent_lsn` goes through the same validation before the timeline
//!   advertises it ([`DeletionQueue::publish_lsn`]): safekeepers trim WAL below it, and
//!   a stale node's uploads are not what the new owner reads;
//! - without `control_plane_api` every generation is valid: the pageserver trusts the
//!   generation `location_config` gave it (a single-pageserver setup);
//! - a tenant **held** ([`DeletionQueue::hold`]: `location_config` mode AttachedStale,
//!   during a migration) has its lists and LSNs kept pending, neither validated nor
//!   dropped, until it is released (AttachedSingle again) or detached (its lists are
//!   dropped then: another node owns the tenant).
//!
//! Invariant: **an object is deleted only after a validation, made after its list was
//! durable, said the list's generation is current.**

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pageserver_api::Generation;
use parking_lot::Mutex;
use remote_storage::{GenericRemoteStorage, RemotePath};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use utils::backoff::{self, RetryPolicy};
use utils::crashsafe::{self, Sync};
use utils::{Lsn, TenantId, TimelineId};

use crate::control_plane_client::ControlPlaneClient;
use crate::metrics;

/// The directory under the workdir.
pub const DELETION_DIR: &str = "deletion";
/// The list format written.
const LIST_VERSION: u32 = 1;
/// How long the worker waits after a push for more to batch with it.
const BATCH_DELAY: Duration = Duration::from_millis(50);
/// How soon a round that could not validate (control plane unreachable) is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Why the queue could not take a deletion.
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    /// Writing or reading a list file.
    #[error("deletion queue {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The queue has stopped.
    #[error("the deletion queue is shut down")]
    Stopped,
}

/// One durable list: objects one timeline asked to delete in one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionList {
    /// The format version (1).
    pub version: u32,
    /// Its place in the queue (also its file name).
    pub sequence: u64,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The timeline.
    pub timeline_id: TimelineId,
    /// The generation that asked: validated before anything is deleted.
    pub generation: Generation,
    /// The remote paths.
    pub objects: Vec<String>,
}

/// A `remote_consistent_lsn` waiting for validation before it becomes visible.
struct PendingLsn {
    tenant: TenantId,
    generation: Generation,
    lsn: Lsn,
    visible: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    next_sequence: u64,
    lists: Vec<DeletionList>,
    lsns: Vec<PendingLsn>,
    /// Tenants whose deletions and LSNs wait (AttachedStale).
    held: HashSet<TenantId>,
    stopped: bool,
}

impl State {
    /// Whether anything pending may be acted on now.
    fn actionable(&self) -> bool {
        self.lists.iter().any(|l| !self.held.contains(&l.tenant_id))
            || self.lsns.iter().any(|l| !self.held.contains(&l.tenant))
    }

    /// The lowest sequence a flush still waits for: held tenants' lists are not waited for.
    fn handled_below(&self) -> u64 {
        self.lists
            .iter()
            .filter(|l| !self.held.contains(&l.tenant_id))
            .map(|l| l.sequence)
            .min()
            .unwrap_or(self.next_sequence)
    }
}

struct Inner {
    dir: PathBuf,
    storage: GenericRemoteStorage,
    validator: Option<ControlPlaneClient>,
    sync: Sync,
    state: Mutex<State>,
    wake: Notify,
    /// The lowest sequence not yet handled (executed or dropped).
    handled_below: watch::Sender<u64>,
    cancel: CancellationToken,
}

/// See the module docs. Cloning shares the queue.
#[derive(Clone)]
pub struct DeletionQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeletionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeletionQueue")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DeletionError + '_ {
    move |source| DeletionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn list_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:016x}.list"))
}

impl DeletionQueue {
    /// Loads the lists left in `<workdir>/deletion` (a corrupt one is renamed aside with
    /// `.corrupt`, and its objects leak) and starts the worker on the current runtime;
    /// it stops when `cancel` fires.
    pub fn start(
        workdir: &Path,
        storage: GenericRemoteStorage,
        validator: Option<ControlPlaneClient>,
        sync: Sync,
        cancel: CancellationToken,
    ) -> Result<DeletionQueue, DeletionError> {
        let dir = workdir.join(DELETION_DIR);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        crashsafe::remove_temp_files(&dir, sync).map_err(io_err(&dir))?;
        let mut lists = Vec::new();
        // The highest sequence any file names, set-aside ones included: new lists go after
        // it, so no name is ever reused.
        let mut max_seen = 0;
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = e.map_err(io_err(&dir))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(seq) = name
                .as_deref()
                .and_then(|n| n.get(..16))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                max_seen = max_seen.max(seq);
            }
            if path.extension().is_none_or(|x| x != "list") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<DeletionList>(&b).map_err(|e| e.to_string()))
                .and_then(|l| {
                    if l.version > LIST_VERSION {
                        Err(format!(
                            "version {} is newer than {LIST_VERSION}",
                            l.version
                        ))
                    } else {
                        Ok(l)
                    }
                });
            match parsed {
                Ok(l) => lists.push(l),
                Err(e) => {
                    let aside = path.with_extension("list.corrupt");
                    warn!(
                        "{}: unreadable deletion list ({e}); renamed to {}, its objects are left in remote storage",
                        path.display(),
                        aside.display()
                    );
                    std::fs::rename(&path, &aside).map_err(io_err(&path))?;
                }
            }
        }
        lists.sort_by_key(|l| l.sequence);
        let next_sequence = lists
            .last()
            .map_or(0, |l| l.sequence)
            .max(max_seen)
            .saturating_add(1);
        let first = lists.first().map_or(next_sequence, |l| l.sequence);
        if !lists.is_empty() {
            info!("resuming {} deletion lists", lists.len());
        }
        metrics::DELETION_QUEUE_LISTS.set(lists.len() as i64);
        let inner = Arc::new(Inner {
            dir,
            storage,
            validator,
            sync,
            state: Mutex::new(State {
                next_sequence,
                lists,
                ..State::default()
            }),
            wake: Notify::new(),
            handled_below: watch::channel(first).0,
            cancel,
        });
        tokio::spawn(run(Arc::clone(&inner)).instrument(info_span!("deletion_queue")));
        inner.wake.notify_one();
        Ok(DeletionQueue { inner })
    }

    /// Makes the deletion of `objects` durable and queues it; it runs once `generation` is
    /// validated, or is dropped if it is stale. Blocking file I/O: call from blocking
    /// context or accept a short stall (the list is small).
    pub fn push(
        &self,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        generation: Generation,
        objects: &[RemotePath],
    ) -> Result<(), DeletionError> {
        if objects.is_empty() {
            return Ok(());
        }
        // The sequence is taken and the file written under the lock: lists become durable
        // in sequence order, so `flush` can wait on a sequence.
        let mut st = self.inner.state.lock();
        if st.stopped || self.inner.cancel.is_cancelled() {
            return Err(DeletionError::Stopped);
        }
        let list = DeletionList {
            version: LIST_VERSION,
            sequence: st.next_sequence,
            tenant_id,
            timeline_id,
            generation,
            objects: objects.iter().map(|p| p.as_str().to_string()).collect(),
        };
        let path = list_path(&self.inner.dir, list.sequence);
        let bytes = serde_json::to_vec(&list).map_err(|e| DeletionError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        crashsafe::overwrite(&path, &bytes, self.inner.sync).map_err(io_err(&path))?;
        st.next_sequence += 1;
        st.lists.push(list);
        metrics::DELETION_QUEUE_LISTS.set(st.lists.len() as i64);
        drop(st);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Makes `lsn` the value of `visible` (if higher) once `generation` is validated for
    /// `tenant`; dropped if it is stale. Without a control plane, at once.
    pub fn publish_lsn(
        &self,
        tenant: TenantId,
        generation: Generation,
        lsn: Lsn,
        visible: Arc<AtomicU64>,
    ) {
        let mut st = self.inner.state.lock();
        if self.inner.validator.is_none() && !st.held.contains(&tenant) {
            visible.fetch_max(lsn.0, Ordering::AcqRel);
            return;
        }
        st.lsns.push(PendingLsn {
            tenant,
            generation,
            lsn,
            visible,
        });
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Whether `generation` is `tenant`'s current one (always, without a control plane):
    /// asked before a timeline's objects are removed wholesale. One attempt.
    pub async fn validate_now(
        &self,
        tenant: TenantId,
        generation: Generation,
    ) -> Result<bool, crate::control_plane_client::UpcallError> {
        match &self.inner.validator {
            None => Ok(true),
            Some(v) => Ok(v
                .validate(&[(tenant, generation)])
                .await?
                .get(&(tenant, generation))
                .copied()
                .unwrap_or(false)),
        }
    }

    /// Waits until every list pushed before the call has been executed or dropped.
    pub async fn flush(&self) -> Result<(), DeletionError> {
        let target = self.inner.state.lock().next_sequence;
        self.inner.wake.notify_one();
        let mut rx = self.inner.handled_below.subscribe();
        loop {
            if *rx.borrow_and_update() >= target {
                return Ok(());
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(DeletionError::Stopped);
                    }
                }
                _ = self.inner.cancel.cancelled() => return Err(DeletionError::Stopped),
            }
        }
    }

    /// Lists not yet executed or dropped.
    pub fn pending(&self) -> usize {
        self.inner.state.lock().lists.len()
    }

    /// Holds (`true`) or releases `tenant`'s deletions and LSN publications: while held,
    /// nothing of the tenant is validated, executed or dropped.
    pub fn hold(&self, tenant: TenantId, held: bool) {
        let mut st = self.inner.state.lock();
        let changed = if held {
            st.held.insert(tenant)
        } else {
            st.held.remove(&tenant)
        };
        if changed {
            info!(tenant_id = %tenant, "deletions {}", if held { "held" } else { "released" });
        }
        let below = st.handled_below();
        drop(st);
        self.inner.handled_below.send_replace(below);
        self.inner.wake.notify_one();
    }

    /// Whether `tenant`'s deletions are held.
    pub fn is_held(&self, tenant: TenantId) -> bool {
        self.inner.state.lock().held.contains(&tenant)
    }

    /// Drops every pending list and LSN of `tenant` (it was detached while held: another
    /// node owns it now, so nothing it asked for may run) and releases it. The objects
    /// leak, which is safe.
    pub fn forget_tenant(&self, tenant: TenantId) {
        let mut st = self.inner.state.lock();
        let (gone, kept): (Vec<DeletionList>, Vec<DeletionList>) = std::mem::take(&mut st.lists)
            .into_iter()
            .partition(|l| l.tenant_id == tenant);
        st.lists = kept;
        st.lsns.retain(|l| l.tenant != tenant);
        st.held.remove(&tenant);
        metrics::DELETION_QUEUE_LISTS.set(st.lists.len() as i64);
        let below = st.handled_below();
        drop(st);
        for list in &gone {
            metrics::DELETION_QUEUE_DROPPED.inc();
            warn!(
                "dropping deletion list {:016x} of {}/{} ({} objects): the tenant was detached while AttachedStale",
                list.sequence,
                list.tenant_id,
                list.timeline_id,
                list.objects.len()
            );
            let path = list_path(&self.inner.dir, list.sequence);
            if let Err(e) = std::fs::remove_file(&path) {
                warn!("{}: removing a dropped list: {e}", path.display());
            }
        }
        if !gone.is_empty()
            && let Err(e) = crashsafe::fsync_dir(&self.inner.dir, self.inner.sync)
        {
            warn!("{}: fsync: {e}", self.inner.dir.display());
        }
        self.inner.handled_below.send_replace(below);
    }
}

/// The worker: a validation round whenever something is pending.
async fn run(inner: Arc<Inner>) {
    loop {
        let idle = !inner.state.lock().actionable();
        if idle {
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = inner.cancel.cancelled() => break,
            }
            // Let a burst of pushes land in one round.
            if backoff::sleep(BATCH_DELAY, &inner.cancel).await.is_err() {
                break;
            }
        }
        if !round(&inner).await {
            tokio::select! {
                _ = tokio::time::sleep(RETRY_INTERVAL) => {}
                _ = inner.cancel.cancelled() => break,
            }
        }
    }
    inner.state.lock().stopped = true;
    info!("deletion queue stopped");
}

/// One round: validate what is pending, execute or drop it. False when validation could
/// not be had (retry later).
async fn round(inner: &Inner) -> bool {
    let (lists, lsns) = {
        let mut st = inner.state.lock();
        let held = st.held.clone();
        let lists: Vec<DeletionList> = st
            .lists
            .iter()
            .filter(|l| !held.contains(&l.tenant_id))
            .cloned()
            .collect();
        let (lsns, kept): (Vec<PendingLsn>, Vec<PendingLsn>) = std::mem::take(&mut st.lsns)
            .into_iter()
            .partition(|l| !held.contains(&l.tenant));
        st.lsns = kept;
        (lists, lsns)
    };
    let mut pairs: Vec<(TenantId, Generation)> = lists
        .iter()
        .map(|l| (l.tenant_id, l.generation))
        .chain(lsns.iter().map(|l| (l.tenant, l.generation)))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if pairs.is_empty() {
        return true;
    }
    pairs.sort();
    let valid: HashMap<(TenantId, Generation), bool> = match &inner.validator {
        None => pairs.iter().map(|&p| (p, true)).collect(),
        Some(v) => match v.validate(&pairs).await {
            Ok(m) => m,
            Err(e) => {
                metrics::DELETION_QUEUE_VALIDATION_FAILURES.inc();
                warn!(
                    "validating {} generations failed, deletions wait: {e}",
                    pairs.len()
                );
                inner.state.lock().lsns.extend(lsns);
                return false;
            }
        },
    };
    let is_valid = |t, g| valid.get(&(t, g)).copied().unwrap_or(false);
    for l in lsns {
        if is_valid(l.tenant, l.generation) {
            l.visible.fetch_max(l.lsn.0, Ordering::AcqRel);
        } else {
            info!(
                "tenant {}: generation {} is stale; remote_consistent_lsn {} not published",
                l.tenant, l.generation, l.lsn
            );
        }
    }
    for list in &lists {
        if is_valid(list.tenant_id, list.generation) {
            if !execute(inner, list).await {
                return true; // cancelled
            }
        } else {
            metrics::DELETION_QUEUE_DROPPED.inc();
            warn!(
                "dropping deletion list {:016x} of {}/{} ({} objects): generation {} is no longer the tenant's current one",
                list.sequence,
                list.tenant_id,
                list.timeline_id,
                list.objects.len(),
                list.generation
            );
        }
        let path = list_path(&inner.dir, list.sequence);
        if let Err(e) =
            std::fs::remove_file(&path).and_then(|()| crashsafe::fsync_dir(&inner.dir, inner.sync))
        {
            // It is run again after a restart: deleting twice is harmless.
            warn!("{}: removing the finished list: {e}", path.display());
        }
        let mut st = inner.state.lock();
        st.lists.retain(|l| l.sequence != list.sequence);
        metrics::DELETION_QUEUE_LISTS.set(st.lists.len() as i64);
        let below = st.handled_below();
        drop(st);
        inner.handled_below.send_replace(below);
    }
    true
}

/// Deletes a valid list's objects in batches, retrying until done. False if cancelled.
async fn execute(inner: &Inner, list: &DeletionList) -> bool {
    if utils::failpoint::supported() {
        let _ = utils::failpoint::eval_async("deletion-before-execute").await;
    }
    let paths: Vec<RemotePath> = list
        .objects
        .iter()
        .filter_map(|o| match RemotePath::new(o) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!("deletion list {:016x}: skipping {o:?}: {e}", list.sequence);
                None
            }
        })
        .collect();
    let policy = RetryPolicy {
        max_attempts: None,
        ..RetryPolicy::default()
    };
    let batch = inner.storage.max_keys_per_delete().max(1);
    for chunk in paths.chunks(batch) {
        let r = backoff::retry(
            "deleting remote objects",
            policy,
            &inner.cancel,
            |_: &remote_storage::Error| false,
            || inner.storage.delete_objects(chunk, &inner.cancel),
        )
        .await;
        if r.is_err() {
            return false;
        }
        metrics::DELETION_QUEUE_DELETED_OBJECTS.inc_by(chunk.len() as u64);
    }
    if utils::failpoint::supported() {
        let _ = utils::failpoint::eval_async("deletion-after-execute").await;
    }
    true
}

#[cfg(test)]
mod tests;
