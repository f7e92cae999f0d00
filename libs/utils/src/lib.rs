//! Shared building blocks of every Strata service: the types that name things (LSNs, ids),
//! the disciplines every service follows (crash-safe files, backoff, one process per data
//! directory, graceful shutdown) and the common front door (logging, JWT auth, HTTP API
//! helpers, failpoints).

pub mod auth;
pub mod backoff;
pub mod crashsafe;
pub mod failpoint;
pub mod http;
pub mod id;
pub mod logging;
pub mod lsn;
pub mod pg_time;
pub mod pid_file;
pub mod schema;
pub mod shutdown;
pub mod vfs;

pub use id::{NodeId, TenantId, TenantTimelineId, TimelineId};
pub use lsn::Lsn;
