//! The pageserver: ingests WAL into layered storage and serves any page at any LSN.
//!
//! A map of the crate (`docs/pageserver.md` has the whole picture):
//! - [`keyspace`], [`value`]: what is stored, under which key;
//! - [`layers`], [`layer_map`], [`page_cache`]: where it is stored and how it is found;
//! - [`timeline`]: one branch (writes, reads, flushes, loading, the engine side of
//!   ingest); [`tenant`], [`tenant_manager`]: the tenants that own timelines;
//! - [`walingest`], [`walrecord`], [`walreceiver`]: WAL in; [`walredo`]: pages rebuilt;
//! - [`import`]: data directories in; [`page_service`], [`http`]: the service's doors.

pub mod basebackup;
pub mod config;
pub mod control_plane_client;
pub mod deletion_queue;
pub mod disk_usage_eviction;
pub mod http;
pub mod import;
pub mod keyspace;
pub mod layer_map;
pub mod layers;
pub mod metrics;
pub mod page_cache;
pub mod page_service;
pub mod remote_timeline_client;
pub mod tenant;
pub mod tenant_manager;
pub mod timeline;
pub mod value;
pub mod wal_import;
pub mod walingest;
pub mod walreceiver;
pub mod walrecord;
pub mod walredo;
