//! The pageserver: ingests WAL into layered storage and serves any page at any LSN.
//!
//! Built up issue by issue; today it holds page reconstruction ([`walredo`]) and the
//! values it works on ([`walrecord`]).

pub mod wal_import;
pub mod walingest;
pub mod walrecord;
pub mod walredo;
