//! One served timeline, shared by every connection and task that touches it.
//!
//! [`SharedTimeline`] wraps the timeline's [`Acceptor`] in a mutex, and publishes a
//! [`TimelineSnapshot`] of its positions on a `watch` channel after every change, so async
//! code (walsenders waiting for new WAL, heartbeats, status) reads positions without taking
//! the lock and without blocking a runtime thread.
//!
//! # Invariants
//! * The acceptor is only reached through [`SharedTimeline::with_acceptor`], which runs on a
//!   blocking thread (the WAL-push disk thread, or `spawn_blocking`): the acceptor does
//!   blocking file I/O. The lock is held for one message or one flush, never across a
//!   network wait.
//! * After every call the snapshot is refreshed, so a snapshot is never older than the last
//!   completed acceptor operation, and `commit_lsn ≤ flush_lsn` holds in each snapshot.
//! * Once [`SharedTimeline::mark_deleted`] has run (under the lock), every later
//!   `with_acceptor` fails with [`TimelineGone`] and the timeline's cancellation token is
//!   cancelled, so connections serving it end.
//! * A panic inside `with_acceptor` poisons the acceptor lock, and a poisoned lock is never
//!   taken for acceptor work again: the timeline is Broken ([`TimelineGone::Broken`]; the
//!   registry reports it as broken too), its connections are cancelled, and only a restart,
//!   which reloads it from disk, serves it again. Carrying on with the data a panic left
//!   behind could answer from a decoder or positions out of step with the disk.
//! * The registry of connected proposers and walsenders, and the feedback they reported,
//!   are in a second mutex that is never held across I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use safekeeper_api::PageserverFeedback;
use safekeeper_api::models::{TimelineStatus, WalProposerInfo, WalSenderInfo, WalSenderKind};
use safekeeper_api::proto::HotStandbyFeedback;
use safekeeper_api::term::Term;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utils::{Lsn, TenantTimelineId};

use crate::acceptor::Acceptor;
use crate::metrics;

/// The timeline can no longer be served through this handle.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TimelineGone {
    /// Deleted while a connection or task still held it.
    #[error("timeline {0} has been deleted")]
    Deleted(TenantTimelineId),
    /// A panic happened while the acceptor lock was held: the in-memory acceptor (its WAL
    /// decoder, its positions) may be out of step with the disk, so it is never used again.
    /// Restarting the safekeeper reloads the timeline from disk.
    #[error(
        "timeline {0} is broken: a panic interrupted an operation on it; it is refused until the safekeeper restarts and reloads it from disk"
    )]
    Broken(TenantTimelineId),
}

/// A copy of a timeline's positions, published after every acceptor operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimelineSnapshot {
    /// Highest term voted for.
    pub term: Term,
    /// Term of the last WAL record held.
    pub last_log_term: Term,
    /// The term that wrote the last byte held (`None`: no WAL): unlike `last_log_term`, a
    /// term that starts at `flush_lsn` and wrote nothing does not count.
    pub last_byte_term: Option<Term>,
    /// End of durable WAL (a record boundary).
    pub flush_lsn: Lsn,
    /// Committed WAL held locally.
    pub commit_lsn: Lsn,
    /// End of WAL backed up to object storage.
    pub backup_lsn: Lsn,
    /// What pageservers made durable remotely.
    pub remote_consistent_lsn: Lsn,
    /// WAL below this is on every safekeeper.
    pub peer_horizon_lsn: Lsn,
    /// Where the timeline's WAL starts.
    pub timeline_start_lsn: Lsn,
    /// Where this safekeeper's WAL starts.
    pub local_start_lsn: Lsn,
    /// The cluster's system identifier (0 = not known yet).
    pub system_id: u64,
    /// WAL segment size.
    pub wal_seg_size: u64,
}

impl TimelineSnapshot {
    fn of(a: &Acceptor) -> Self {
        let s = a.persisted_state();
        let p = a.positions();
        TimelineSnapshot {
            term: a.term(),
            last_log_term: a.last_log_term(),
            last_byte_term: a.term_history().last_byte_term(a.flush_lsn()),
            flush_lsn: a.flush_lsn(),
            commit_lsn: p.commit_lsn,
            backup_lsn: p.backup_lsn,
            remote_consistent_lsn: p.remote_consistent_lsn,
            peer_horizon_lsn: p.peer_horizon_lsn,
            timeline_start_lsn: s.timeline_start_lsn,
            local_start_lsn: s.local_start_lsn,
            system_id: s.server.system_id,
            wal_seg_size: u64::from(s.server.wal_seg_size),
        }
    }
}

struct Inner {
    acceptor: Acceptor,
    deleted: bool,
}

/// Who is connected, and what they reported.
#[derive(Debug, Default)]
struct Connections {
    walproposers: BTreeMap<u64, WalProposerInfo>,
    walsenders: BTreeMap<u64, WalSenderInfo>,
    /// Hot-standby feedback per walsender (standbys only).
    hs_feedback: BTreeMap<u64, HotStandbyFeedback>,
    /// The latest pageserver feedback received by any walsender.
    last_ps_feedback: Option<PageserverFeedback>,
}

/// A timeline being served: its acceptor, published positions, connections.
pub struct SharedTimeline {
    ttid: TenantTimelineId,
    dir: PathBuf,
    inner: Mutex<Inner>,
    snapshot: watch::Sender<TimelineSnapshot>,
    conns: Mutex<Connections>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for SharedTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTimeline")
            .field("ttid", &self.ttid)
            .field("snapshot", &*self.snapshot.borrow())
            .finish()
    }
}

/// A process-wide connection number, shown in status and logs.
pub fn next_conn_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

use crate::lock_ignoring_poison as lock;

impl SharedTimeline {
    /// Wraps a loaded acceptor; `parent` is the server's cancellation token.
    pub fn new(
        ttid: TenantTimelineId,
        dir: PathBuf,
        acceptor: Acceptor,
        parent: &CancellationToken,
    ) -> Self {
        let (snapshot, _) = watch::channel(TimelineSnapshot::of(&acceptor));
        SharedTimeline {
            ttid,
            dir,
            inner: Mutex::new(Inner {
                acceptor,
                deleted: false,
            }),
            snapshot,
            conns: Mutex::new(Connections::default()),
            cancel: parent.child_token(),
        }
    }

    /// Which timeline.
    pub fn ttid(&self) -> TenantTimelineId {
        self.ttid
    }

    /// Its directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Cancelled when the timeline is deleted or the server shuts down.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Runs `f` on the acceptor (blocking: call from a blocking thread), then publishes the
    /// new positions.
    pub fn with_acceptor<R>(&self, f: impl FnOnce(&mut Acceptor) -> R) -> Result<R, TimelineGone> {
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            Err(_) => {
                self.cancel.cancel();
                return Err(TimelineGone::Broken(self.ttid));
            }
        };
        if inner.deleted {
            return Err(TimelineGone::Deleted(self.ttid));
        }
        let result = f(&mut inner.acceptor);
        let snap = TimelineSnapshot::of(&inner.acceptor);
        self.snapshot.send_if_modified(|old| {
            let changed = *old != snap;
            *old = snap;
            changed
        });
        Ok(result)
    }

    /// Marks the timeline deleted (waiting for a running acceptor call to finish) and
    /// cancels its connections. Returns false if it already was.
    pub fn mark_deleted(&self) -> bool {
        let mut inner = lock(&self.inner);
        let was = inner.deleted;
        inner.deleted = true;
        drop(inner);
        self.cancel.cancel();
        !was
    }

    /// Whether a panic under the acceptor lock has made the timeline unusable.
    pub fn is_broken(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// The latest positions.
    pub fn snapshot(&self) -> TimelineSnapshot {
        *self.snapshot.borrow()
    }

    /// A receiver that wakes on every change of the positions.
    pub fn subscribe(&self) -> watch::Receiver<TimelineSnapshot> {
        self.snapshot.subscribe()
    }

    /// Registers a connected walproposer; it is removed when the guard drops.
    pub fn register_walproposer(self: &Arc<Self>, info: WalProposerInfo) -> ConnectionGuard {
        let id = info.conn_id;
        lock(&self.conns).walproposers.insert(id, info);
        metrics::WAL_PROPOSERS.inc();
        ConnectionGuard {
            tl: Arc::clone(self),
            conn_id: id,
            walsender: false,
        }
    }

    /// Updates a registered walproposer's entry.
    pub fn update_walproposer(&self, conn_id: u64, f: impl FnOnce(&mut WalProposerInfo)) {
        if let Some(info) = lock(&self.conns).walproposers.get_mut(&conn_id) {
            f(info);
        }
    }

    /// Registers a walsender; it is removed when the guard drops.
    pub fn register_walsender(self: &Arc<Self>, info: WalSenderInfo) -> ConnectionGuard {
        let id = info.conn_id;
        lock(&self.conns).walsenders.insert(id, info);
        metrics::WAL_SENDERS.inc();
        ConnectionGuard {
            tl: Arc::clone(self),
            conn_id: id,
            walsender: true,
        }
    }

    /// Updates a registered walsender's entry.
    pub fn update_walsender(&self, conn_id: u64, f: impl FnOnce(&mut WalSenderInfo)) {
        if let Some(info) = lock(&self.conns).walsenders.get_mut(&conn_id) {
            f(info);
        }
    }

    /// Records a standby's hot-standby feedback.
    pub fn record_hs_feedback(&self, conn_id: u64, fb: HotStandbyFeedback) {
        lock(&self.conns).hs_feedback.insert(conn_id, fb);
    }

    /// Records a pageserver's feedback on a walsender.
    pub fn record_ps_feedback(&self, conn_id: u64, fb: PageserverFeedback) {
        let mut conns = lock(&self.conns);
        if let Some(info) = conns.walsenders.get_mut(&conn_id) {
            info.kind = WalSenderKind::Pageserver;
            info.last_received_lsn = Some(fb.last_received_lsn);
            info.disk_consistent_lsn = Some(fb.disk_consistent_lsn);
            info.remote_consistent_lsn = Some(fb.remote_consistent_lsn);
        }
        conns.last_ps_feedback = Some(fb);
    }

    /// The oldest xmin any connected standby needs (zero fields: none), for AppendResponse.
    pub fn hs_feedback(&self) -> HotStandbyFeedback {
        let conns = lock(&self.conns);
        let mut agg: Option<HotStandbyFeedback> = None;
        for fb in conns.hs_feedback.values() {
            let a = agg.get_or_insert(*fb);
            let min_nonzero = |x: u64, y: u64| match (x, y) {
                (0, y) => y,
                (x, 0) => x,
                (x, y) => x.min(y),
            };
            a.xmin = min_nonzero(a.xmin, fb.xmin);
            a.catalog_xmin = min_nonzero(a.catalog_xmin, fb.catalog_xmin);
            a.ts = a.ts.max(fb.ts);
        }
        agg.unwrap_or_default()
    }

    /// The latest pageserver feedback, for AppendResponse.
    pub fn last_ps_feedback(&self) -> Option<PageserverFeedback> {
        lock(&self.conns).last_ps_feedback.clone()
    }

    /// The minimum remote consistent LSN reported by connected pageservers, if any.
    pub fn min_ps_remote_consistent_lsn(&self) -> Option<Lsn> {
        lock(&self.conns)
            .walsenders
            .values()
            .filter_map(|w| w.remote_consistent_lsn)
            .filter(|l| l.is_valid())
            .min()
    }

    /// How many walproposers are connected.
    pub fn num_walproposers(&self) -> usize {
        lock(&self.conns).walproposers.len()
    }

    /// The full status (blocking: takes the acceptor lock).
    pub fn status(&self) -> Result<TimelineStatus, TimelineGone> {
        let (walproposers, walsenders) = {
            let conns = lock(&self.conns);
            (
                conns.walproposers.values().cloned().collect(),
                conns.walsenders.values().cloned().collect(),
            )
        };
        self.with_acceptor(|a| {
            let s = a.persisted_state();
            let p = a.positions();
            TimelineStatus {
                tenant_id: self.ttid.tenant_id,
                timeline_id: self.ttid.timeline_id,
                mconf: s.mconf.clone(),
                server: s.server,
                term: a.term(),
                last_log_term: a.last_log_term(),
                term_history: a.term_history().clone(),
                flush_lsn: a.flush_lsn(),
                commit_lsn: p.commit_lsn,
                backup_lsn: p.backup_lsn,
                remote_consistent_lsn: p.remote_consistent_lsn,
                peer_horizon_lsn: p.peer_horizon_lsn,
                timeline_start_lsn: s.timeline_start_lsn,
                local_start_lsn: s.local_start_lsn,
                walproposers,
                walsenders,
            }
        })
    }
}

/// Unregisters a connection from its timeline when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    tl: Arc<SharedTimeline>,
    conn_id: u64,
    walsender: bool,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut conns = lock(&self.tl.conns);
        if self.walsender {
            conns.walsenders.remove(&self.conn_id);
            conns.hs_feedback.remove(&self.conn_id);
            metrics::WAL_SENDERS.dec();
        } else {
            conns.walproposers.remove(&self.conn_id);
            metrics::WAL_PROPOSERS.dec();
        }
    }
}
