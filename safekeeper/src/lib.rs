//! The safekeeper: one acceptor of the quorum that makes WAL durable.
//!
//! The durable core lives here: [`control_file`] (the per-timeline persistent state),
//! [`wal_storage`] (WAL segments, with [`wal_reader`] to read them back), [`timeline`]
//! (durable creation, loading and deletion of timeline directories) and [`acceptor`] (the
//! acceptor state machine of the proposer protocol). The network servers build on them.

pub mod acceptor;
pub mod control_file;
pub mod metrics;
pub mod timeline;
pub mod wal_reader;
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
}

impl SafeKeeperConf {
    /// The fsync policy.
    pub fn sync(&self) -> Sync {
        Sync::from_no_sync(self.no_sync)
    }
}
