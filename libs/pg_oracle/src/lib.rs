//! Real PostgreSQL 15 as a test oracle.
//!
//! Strata's correctness tests compare what Strata produces with what PostgreSQL itself
//! produces. This crate holds the two halves every such test needs:
//! - [`server`]: a throwaway stock PostgreSQL 15 (initdb with options, configure, start, run
//!   SQL, stop, crash with every backend killed, the server log, `pg_waldump` and
//!   `pg_controldata`), run as the unprivileged user when the test runs as root, and always
//!   killed on drop;
//! - [`mask`]: PostgreSQL's rules (from `wal_consistency_checking`) for which bytes of a page
//!   may legitimately differ between a primary and a replay of its WAL: hint bits, LSN and
//!   checksum, unused space, and a few access-method specific flags.

pub mod mask;
pub mod server;

pub use server::{ControlData, PgError, TestPostgres, TestPostgresBuilder, ToolOutput};
