//! What the binary's two modes share: their error type.

use std::time::Duration;

use safekeeper_api::term::Term;
use utils::Lsn;

use crate::compute::ComputeError;
use crate::driver::DriverError;
use crate::won_terms::WonTermsError;

/// Why a mode ended without success. Every variant is a clear, final message for the
/// operator; the binary prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    /// The proposer or its connections failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The local Postgres failed or refused.
    #[error(transparent)]
    Compute(#[from] ComputeError),
    /// The won-terms file could not be read or written.
    #[error(transparent)]
    WonTerms(#[from] WonTermsError),
    /// A deadline passed.
    #[error("{what} did not finish within {waited:?}: {details}")]
    Timeout {
        /// What.
        what: &'static str,
        /// How long we waited.
        waited: Duration,
        /// The safekeepers' states.
        details: String,
    },
    /// No safekeeper has WAL for the timeline and no start LSN was given.
    #[error(
        "no safekeeper has any WAL for this timeline: create it with a start LSN (safekeeper HTTP API) or give --start-lsn"
    )]
    NoWal,
    /// Proposing would fork the timeline's history.
    #[error(
        "refusing to propose: the safekeepers' WAL ends at {term_start} (last written in term {donor_term}), but this compute started at {start_lsn} and did not win that term (it won {won:?}); its WAL would fork the timeline's history. Start a new compute from the safekeepers' end instead"
    )]
    WouldFork {
        /// Where the new term starts.
        term_start: Lsn,
        /// The donor's last log term (0 if it had none).
        donor_term: Term,
        /// The compute's start LSN.
        start_lsn: Lsn,
        /// The terms this compute won.
        won: Vec<Term>,
    },
    /// Postgres sent WAL that does not continue what it sent before.
    #[error("Postgres sent WAL at {got}, expected {expected}")]
    WalGap {
        /// Where it started.
        got: Lsn,
        /// Where it should have.
        expected: Lsn,
    },
    /// Postgres closed the replication connection.
    #[error("Postgres ended replication: {0}")]
    PostgresGone(String),
    /// SIGTERM/SIGINT before the mode finished (sync mode only; stream mode stops cleanly).
    #[error("cancelled")]
    Cancelled,
}
