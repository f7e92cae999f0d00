//! The safekeeper: one acceptor of the quorum that makes WAL durable.
//!
//! The durable core lives here: [`control_file`] (the per-timeline persistent state),
//! [`wal_storage`] (WAL segments, with [`wal_reader`] to read them back), [`timeline`]
//! (durable creation, loading and deletion of timeline directories) and [`acceptor`] (the
//! acceptor state machine of the proposer protocol). The network servers build on them.

pub mod acceptor;
pub mod control_file;
pub mod metrics;
pub mod wal_reader;
pub mod wal_storage;
