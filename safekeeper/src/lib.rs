//! The safekeeper: one acceptor of the quorum that makes WAL durable.
//!
//! The durable core lives here: [`control_file`] (the per-timeline persistent state),
//! [`wal_storage`] (WAL segments, with [`wal_reader`] to read them back), [`timeline`]
//! (durable creation, loading and deletion of timeline directories) and [`acceptor`] (the
//! acceptor state machine of the proposer protocol).
//!
//! The server builds on them: [`global_timelines`] holds every timeline as a
//! [`shared_timeline::SharedTimeline`]; [`wal_service`] serves the libpq port, handing
//! `START_WAL_PUSH` to [`receive_wal`] and `START_REPLICATION` to [`send_wal`]; [`http`] is
//! the management API; [`background`] and [`broker`] run periodic work. The binary
//! (`src/main.rs`) wires them together.

pub mod acceptor;
pub mod background;
pub mod broker;
pub mod control_file;
pub mod global_timelines;
pub mod http;
pub mod metrics;
pub mod receive_wal;
pub mod send_wal;
pub mod shared_timeline;
pub mod timeline;
pub mod wal_reader;
pub mod wal_service;
pub mod wal_storage;

use std::path::PathBuf;

use utils::NodeId;
use utils::crashsafe::Sync;

/// What the durable core needs to know about the safekeeper it runs in.
#[derive(Debug, Clone)]
pub struct SafeKeeperConf {
    /// The data directory: `<datadir>/<tenant>/<timeline>/` per timeline, `tmp/` for staging.
    pub datadir: PathBuf,
    /// This safekeeper's node id (sent in greetings).
    pub my_id: NodeId,
    /// Skip fsyncs (`--no-sync`): survives a process crash, not a power loss.
    pub no_sync: bool,
    /// WAL removal keeps what a peer lacks while it lags by at most this (`--max-peer-lag`).
    pub max_peer_lag: u64,
}

/// Default of [`SafeKeeperConf::max_peer_lag`]: 1 GiB.
pub const DEFAULT_MAX_PEER_LAG: u64 = 1 << 30;

impl SafeKeeperConf {
    /// The fsync policy.
    pub fn sync(&self) -> Sync {
        Sync::from_no_sync(self.no_sync)
    }
}

/// Takes a mutex whose data a panic cannot leave in a state that matters more than losing
/// service would (registries, connection lists, flush requests): a poisoned lock is used
/// as it is. Not for the acceptor, whose poisoned lock makes its timeline Broken
/// ([`shared_timeline::TimelineGone::Broken`]).
pub(crate) fn lock_ignoring_poison<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
