//! Types shared by the safekeeper and its clients (the walproposer, pageservers, the
//! control plane): the consensus vocabulary, the proposer protocol v3 codec, the
//! pageserver-feedback block, the simple-query commands of its libpq port, broker heartbeats
//! and HTTP API bodies. The generic libpq crate (`pq_proto`) knows none of these types: the
//! services use both, and `pq_proto` carries the feedback block as opaque bytes.
//!
//! Everything here is plain data plus codecs: no I/O, no async, no state machines. The
//! safekeeper's acceptor logic and the walproposer build on these types, so both sides of
//! every wire format are defined in exactly one place.

#![warn(missing_docs)]

pub mod broker;
pub mod command;
pub mod feedback;
pub mod membership;
pub mod models;
pub mod proto;
pub mod term;
mod wire;

pub use command::ReplicationCommand;
pub use feedback::PageserverFeedback;
pub use membership::{Configuration, Generation, Member};
pub use proto::{AcceptorMessage, ProposerMessage, ServerInfo};
pub use term::{INITIAL_TERM, Term, TermHistory, TermLsn};
pub use wire::ProtoError;
