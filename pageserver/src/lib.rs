//! The pageserver: ingests WAL into layered storage and serves any page at any LSN.
//!
//! Built up issue by issue; today it holds page reconstruction ([`walredo`]) and the
//! values it works on ([`walrecord`]).

pub mod keyspace;
pub mod layer_map;
pub mod layers;
pub mod page_cache;
pub mod value;
pub mod wal_import;
pub mod walingest;
pub mod walrecord;
pub mod walredo;
