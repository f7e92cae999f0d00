//! WAL redo: rebuilding a page at an LSN from a base image and the records after it.
//!
//! PostgreSQL's own redo code does the work, in a pool of stock `postgres --single`
//! processes running the `strata_walredo` module (see `pgxn/strata_walredo` and
//! `docs/walredo_protocol.md`). What needs no PostgreSQL is done here in Rust, without a
//! round trip: a history that is just an image, and Strata's own records (CLOG,
//! multixact, visibility-map bits; [`apply_strata`]).
//!
//! Invariants:
//! - records are applied in strictly increasing LSN order, all above the base image's
//!   LSN; anything else is [`WalRedoError::InvalidHistory`], never silently skipped;
//! - a process is replaced after an error reply, after it dies, after
//!   `max_requests_per_process` requests, or when its scratch directory outgrows
//!   `max_scratch_bytes`;
//! - when a process dies or stops answering, only the request it was working on fails;
//!   the requests queued behind it are retried on a fresh process (up to
//!   [`MAX_RETRIES`] times), so one poisoned page never kills a second process;
//! - no child outlives the manager: [`WalRedoManager::shutdown`] kills and reaps them,
//!   and dropping does at least the kill.

pub mod apply_strata;
mod metrics;
mod process;
pub mod protocol;
pub mod scratch;
pub mod synthetic;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pageserver_api::reltag::BufferTag;
use utils::Lsn;

use crate::walrecord::WalRecord;
use postgres_ffi::BLCKSZ;
use process::RedoProcess;
use protocol::RecordRef;
use scratch::{RunAs, ScratchRoot};

/// Why a page could not be rebuilt.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalRedoError {
    /// The redo processes cannot be started (missing binaries, user, scratch space).
    #[error("walredo setup: {0}")]
    Setup(String),
    /// PostgreSQL's redo reported an error for this request (the process lives on).
    #[error("redo failed: {0}")]
    Redo(String),
    /// The process died (e.g. a PANIC) while working on this request.
    #[error("walredo process died: {0}")]
    ProcessDied(String),
    /// The process answered nothing for this long while working on this request; it was
    /// killed.
    #[error("walredo request timed out after {0:?}")]
    Timeout(Duration),
    /// The process died while this request waited behind another one; not this request's
    /// doing, so the manager retries it.
    #[error("walredo process died before this request's turn: {0}")]
    Aborted(String),
    /// The history cannot be a page's: out of order, no base, wrong page.
    #[error("invalid page history: {0}")]
    InvalidHistory(String),
    /// The request could not be encoded (too large, bad image).
    #[error("invalid redo request: {0}")]
    InvalidRequest(String),
    /// The manager is shutting down.
    #[error("walredo is shutting down")]
    ShuttingDown,
}

/// How the redo pool runs.
#[derive(Debug, Clone)]
pub struct WalRedoConfig {
    /// PostgreSQL 15's binaries (`postgres`, `initdb`).
    pub pg_bin_dir: PathBuf,
    /// Where scratch directories go; tmpfs is best.
    pub scratch_parent: PathBuf,
    /// Where they go when `scratch_parent` cannot hold them (e.g. `/dev/shm` mounted
    /// `noexec` in a container): a private directory, normally under the workdir.
    pub fallback_scratch_parent: PathBuf,
    /// The unprivileged user PostgreSQL runs as when we are root.
    pub pg_user: String,
    /// Processes in the pool.
    pub processes: usize,
    /// Replace a process after this many requests (bounds per-relation memory growth).
    pub max_requests_per_process: u64,
    /// Replace a process once its scratch directory holds more than this.
    pub max_scratch_bytes: u64,
    /// How long a process with requests in flight may go without answering any before
    /// it is killed (time queued behind other requests does not count).
    pub request_timeout: Duration,
    /// `shared_buffers` of each process: tiny, because every request drops its buffers
    /// with a scan of the whole pool.
    pub shared_buffers: String,
}

impl Default for WalRedoConfig {
    fn default() -> Self {
        let shm = PathBuf::from("/dev/shm");
        WalRedoConfig {
            pg_bin_dir: PathBuf::from("/usr/lib/postgresql/15/bin"),
            scratch_parent: if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            },
            fallback_scratch_parent: std::env::temp_dir(),
            pg_user: "strata".into(),
            processes: 2,
            max_requests_per_process: 100_000,
            max_scratch_bytes: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
            shared_buffers: "1MB".into(),
        }
    }
}

/// How many times a request is retried after its process died under another request.
pub const MAX_RETRIES: u32 = 3;

/// How often (in requests) a process's scratch size is checked.
const SCRATCH_CHECK_INTERVAL: u64 = 1024;

/// The pool of redo processes and the Rust fast paths.
pub struct WalRedoManager {
    conf: WalRedoConfig,
    // Declared before `scratch`, so dropped first: the children are killed before their
    // scratch directories are removed.
    slots: Vec<tokio::sync::Mutex<Option<Arc<RedoProcess>>>>,
    scratch: ScratchRoot,
    next_slot: AtomicUsize,
    next_seq: AtomicU64,
    shutdown: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for WalRedoManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalRedoManager")
            .field("processes", &self.conf.processes)
            .finish()
    }
}

impl WalRedoManager {
    /// Prepares the scratch space (and the template `pg_control`); processes start lazily.
    pub fn new(conf: WalRedoConfig) -> Result<Self, WalRedoError> {
        if conf.processes == 0 {
            return Err(WalRedoError::Setup(
                "walredo needs at least one process".into(),
            ));
        }
        let run_as = RunAs::for_current_process(&conf.pg_user)?;
        let scratch = ScratchRoot::create(
            &conf.scratch_parent,
            &conf.fallback_scratch_parent,
            &conf.pg_bin_dir,
            run_as,
        )?;
        tracing::info!("redo scratch space: {}", scratch.path().display());
        let slots = (0..conf.processes)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        Ok(WalRedoManager {
            conf,
            slots,
            scratch,
            next_slot: AtomicUsize::new(0),
            next_seq: AtomicU64::new(1),
            shutdown: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Rebuilds the page `tag` from `base` (its LSN and 8 KiB image) and `records` (each
    /// at the LSN where it ends), in order.
    pub async fn request_redo(
        &self,
        tag: BufferTag,
        base: Option<(Lsn, &[u8])>,
        records: &[(Lsn, WalRecord)],
    ) -> Result<Bytes, WalRedoError> {
        let start = Instant::now();
        let result = self.redo(tag, base, records).await;
        metrics::observe(start.elapsed(), records.len(), result.is_ok());
        result
    }

    async fn redo(
        &self,
        tag: BufferTag,
        base: Option<(Lsn, &[u8])>,
        records: &[(Lsn, WalRecord)],
    ) -> Result<Bytes, WalRedoError> {
        check_history(tag, base, records)?;
        let mut page: Option<Bytes> = base.map(|(_, img)| Bytes::copy_from_slice(img));
        if records.is_empty() {
            metrics::fast_path("image");
            return page.ok_or_else(|| {
                WalRedoError::InvalidHistory(format!("{tag}: no image and no records"))
            });
        }
        let mut i = 0;
        while i < records.len() {
            if records[i].1.is_postgres() {
                let run_end = records[i..]
                    .iter()
                    .position(|(_, r)| !r.is_postgres())
                    .map_or(records.len(), |n| i + n);
                page = Some(
                    self.redo_in_postgres(tag, page.as_deref(), &records[i..run_end])
                        .await?,
                );
                i = run_end;
            } else {
                // A run of Strata records (a CLOG page can have thousands) shares one
                // buffer: one copy in, one copy out.
                let run_end = records[i..]
                    .iter()
                    .position(|(_, r)| r.is_postgres())
                    .map_or(records.len(), |n| i + n);
                let mut buf = Box::new([0u8; BLCKSZ]);
                if let Some(p) = &page {
                    buf.copy_from_slice(p);
                }
                for (_, record) in &records[i..run_end] {
                    apply_strata::apply(&mut buf, tag.blkno, record)
                        .map_err(|e| WalRedoError::InvalidHistory(format!("{tag}: {e}")))?;
                }
                page = Some(Bytes::copy_from_slice(&buf[..]));
                i = run_end;
            }
        }
        if records.iter().all(|(_, r)| !r.is_postgres()) {
            metrics::fast_path("strata_records");
        }
        page.ok_or_else(|| WalRedoError::InvalidHistory(format!("{tag}: produced no page")))
    }

    async fn redo_in_postgres(
        &self,
        tag: BufferTag,
        base: Option<&[u8]>,
        records: &[(Lsn, WalRecord)],
    ) -> Result<Bytes, WalRedoError> {
        let refs: Vec<RecordRef<'_>> = records
            .iter()
            .filter_map(|(end_lsn, r)| match r {
                WalRecord::Postgres { start_lsn, rec, .. } => Some(RecordRef {
                    start_lsn: *start_lsn,
                    end_lsn: *end_lsn,
                    rec,
                }),
                _ => None,
            })
            .collect();
        let mut attempt = 0;
        loop {
            let process = self.get_process().await?;
            let result = process
                .request(|id| protocol::encode_redo(id, tag, base, &refs))
                .await;
            self.maybe_retire(&process).await;
            match result {
                Err(WalRedoError::Aborted(why))
                    if attempt < MAX_RETRIES && !self.shutdown.is_cancelled() =>
                {
                    tracing::debug!("{tag}: {why}; retrying on a new process");
                    metrics::retry();
                    attempt += 1;
                }
                Ok(page) if page.len() != BLCKSZ => {
                    return Err(WalRedoError::Redo(format!("reply of {} bytes", page.len())));
                }
                other => return other,
            }
        }
    }

    /// A live process from the next slot, starting one if needed.
    async fn get_process(&self) -> Result<Arc<RedoProcess>, WalRedoError> {
        if self.shutdown.is_cancelled() {
            return Err(WalRedoError::ShuttingDown);
        }
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut guard = self.slots[slot].lock().await;
        if let Some(p) = guard.as_ref().filter(|p| !p.is_dead()) {
            return Ok(p.clone());
        }
        if let Some(old) = guard.take() {
            tracing::info!(seq = old.seq, "replacing dead walredo process");
            metrics::restart("died");
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let p = Arc::new(RedoProcess::launch(&self.conf, &self.scratch, seq).await?);
        metrics::process_started();
        *guard = Some(p.clone());
        Ok(p)
    }

    /// Takes a process out of rotation when it should be replaced; it exits once the
    /// requests still using it finish (the last reference closes its stdin).
    async fn maybe_retire(&self, p: &Arc<RedoProcess>) {
        let served = p.served.load(Ordering::Relaxed);
        let reason = if p.is_dead() {
            Some("died")
        } else if p.had_error.load(Ordering::SeqCst) {
            Some("error")
        } else if served >= self.conf.max_requests_per_process {
            Some("max_requests")
        } else if served.is_multiple_of(SCRATCH_CHECK_INTERVAL)
            && scratch::dir_size(p.datadir()) > self.conf.max_scratch_bytes
        {
            Some("scratch_size")
        } else {
            None
        };
        let Some(reason) = reason else { return };
        for slot in &self.slots {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, p)) {
                tracing::info!(seq = p.seq, served, "retiring walredo process: {reason}");
                metrics::restart(reason);
                *guard = None;
            }
        }
        if reason == "died" {
            // Killed or crashed: reap it now rather than leave a zombie until the last
            // reference goes.
            p.kill_and_wait().await;
        }
    }

    /// Sends a ping through a pool process: measures the bare round trip.
    pub async fn ping(&self) -> Result<(), WalRedoError> {
        let p = self.get_process().await?;
        let result = p.request(|id| Ok(protocol::encode_ping(id))).await;
        self.maybe_retire(&p).await;
        result.map(|_| ())
    }

    /// Where the redo processes' scratch directories are.
    pub fn scratch_path(&self) -> &std::path::Path {
        self.scratch.path()
    }

    /// The pids of the live pool processes (for diagnostics and tests).
    pub async fn process_ids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for slot in &self.slots {
            if let Some(p) = slot.lock().await.as_ref().filter(|p| !p.is_dead()) {
                pids.push(p.pid());
            }
        }
        pids
    }

    /// Stops accepting requests, then kills and reaps every process.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        for slot in &self.slots {
            let p = slot.lock().await.take();
            if let Some(p) = p {
                p.kill_and_wait().await;
            }
        }
    }
}

/// Rejects histories PostgreSQL would mis-apply or silently skip.
fn check_history(
    tag: BufferTag,
    base: Option<(Lsn, &[u8])>,
    records: &[(Lsn, WalRecord)],
) -> Result<(), WalRedoError> {
    let bad = |msg: String| Err(WalRedoError::InvalidHistory(format!("{tag}: {msg}")));
    if let Some((_, img)) = base
        && img.len() != BLCKSZ
    {
        return bad(format!("base image is {} bytes", img.len()));
    }
    let mut prev = base.map(|(lsn, _)| lsn);
    for (lsn, rec) in records {
        if let Some(p) = prev
            && *lsn <= p
        {
            return bad(format!("record at {lsn} is not after {p}"));
        }
        if let WalRecord::Postgres { start_lsn, .. } = rec
            && start_lsn >= lsn
        {
            return bad(format!("record ending at {lsn} starts at {start_lsn}"));
        }
        prev = Some(*lsn);
    }
    if base.is_none() {
        match records.first() {
            Some((_, r)) if r.is_postgres() && !r.will_init() => {
                return bad(
                    "no base image and the first record does not initialize the page".into(),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
