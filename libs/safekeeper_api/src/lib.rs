//! Types shared by the safekeeper and its clients (the walproposer, pageservers, the
//! control plane): the consensus vocabulary, the proposer protocol v3 codec, the
//! pageserver-feedback block, broker heartbeats and HTTP API bodies.
//!
//! Everything here is plain data plus codecs: no I/O, no async, no state machines. The
//! safekeeper's acceptor logic and the walproposer build on these types, so both sides of
//! every wire format are defined in exactly one place.

#![warn(missing_docs)]

pub mod broker;
pub mod feedback;
pub mod membership;
pub mod models;
pub mod pg_time;
pub mod proto;
pub mod term;
mod wire;

pub use feedback::PageserverFeedback;
pub use membership::{Configuration, Generation, Member};
pub use proto::{AcceptorMessage, ProposerMessage, ServerInfo};
pub use term::{INITIAL_TERM, Term, TermHistory, TermLsn};
pub use wire::ProtoError;
