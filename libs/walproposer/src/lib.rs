//! The proposer side of the safekeeper consensus protocol, and the `walproposer` binary
//! that drives it for a stock PostgreSQL (`sync` before a compute starts, `stream` as its
//! sidecar).
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
//! * [`driver`]: the tokio driver: safekeeper connections, recovery reads, the clock.
//! * [`compute`]: the physical replication client of the local Postgres.
//! * [`won_terms`]: the terms a compute's sidecar won, persisted crash-safely.
//! * [`sync_mode`], [`stream_mode`]: the binary's two modes; [`mode`]: their errors.
//! * [`metrics`]: Prometheus metrics (served with `--listen-http`).
//!
//! Safety rests on three invariants the state machine keeps: it writes only in a term a
//! quorum voted for, it continues the most advanced voter's log (so every committed byte
//! survives into its log), and it counts a flush acknowledgement towards commit only at or
//! after its own term's start.

#![warn(missing_docs)]

pub mod compute;
pub mod driver;
pub mod metrics;
pub mod mode;
pub mod proposer;
pub mod rules;
pub mod stream_mode;
pub mod sync_mode;
pub mod wal_buffer;
pub mod won_terms;

pub use proposer::{
    Action, ConfigError, Election, FetchRequest, InputError, Proposer, ProposerConfig,
    ProposerError, ProposerState, SkId, Timeouts, UnsafeRules,
};
