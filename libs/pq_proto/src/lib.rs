//! The libpq (PostgreSQL frontend/backend protocol v3) pieces Strata needs on both sides
//! of a connection: the safekeeper and pageserver serve it; the walproposer and the
//! pageserver's WAL receiver speak it as clients.
//!
//! - [`startup`]: the startup packet (SSL/GSS negotiation, cancel, parameters) and the
//!   `options` parameter's `-c name=value` settings.
//! - [`messages`]: tagged messages a server reads ([`FeMessage`]) and writes
//!   ([`BeMessage`]); clients use the `postgres-protocol` crate for their half.
//! - [`framed`]: async readers and buffered writers over `AsyncRead`/`AsyncWrite`.
//! - [`server`]: the server handshake with optional JWT authentication.
//! - [`client`]: startup, simple queries and CopyBoth for clients.
//! - [`replication`]: the sub-messages inside CopyData (XLogData, keepalive, standby
//!   replies, hot-standby and pageserver feedback).
//!
//! Nothing here trusts the peer: every length is checked against a caller-given limit
//! before memory is reserved, and malformed input is an error naming what was wrong.

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod framed;
pub mod messages;
pub mod replication;
pub mod server;
pub mod startup;

pub use error::{ProtocolError, ServerError, SqlState};
pub use messages::{BeMessage, FeMessage, FieldDescription};
pub use server::{Handshake, HandshakeConfig, ServerConnection};
pub use startup::{FeStartupPacket, StartupParams};
