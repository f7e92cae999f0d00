//! The proposer side of the safekeeper consensus protocol, and (later) the walproposer
//! sidecar that drives it for a stock PostgreSQL.
//!
//! The core is [`Proposer`], a sans-I/O state machine: it consumes events (a connection
//! came up, a message arrived, WAL is available, time passed) and emits [`Action`]s (send
//! this, connect there, fetch the donor's WAL, commit advanced, stop). Because it does no
//! I/O and reads no clock, the deterministic simulation in `safekeeper/tests/simulation.rs`
//! runs exactly the code the binary will run, against real acceptors.
//!
//! * [`rules`]: the consensus rules as pure functions (quorum, donor choice, divergence
//!   points, the commit rule).
//! * [`proposer`]: the state machine (`CollectingTerms → Campaign → Elected`).
//! * [`wal_buffer`]: the WAL the elected proposer holds for its acceptors.
//!
//! Safety rests on three invariants the state machine keeps: it writes only in a term a
//! quorum voted for, it continues the most advanced voter's log (so every committed byte
//! survives into its log), and it counts a flush acknowledgement towards commit only at or
//! after its own term's start.

#![warn(missing_docs)]

pub mod proposer;
pub mod rules;
pub mod wal_buffer;

pub use proposer::{
    Action, ConfigError, Election, FetchRequest, InputError, Proposer, ProposerConfig,
    ProposerError, ProposerState, SkId, Timeouts, UnsafeRules,
};
