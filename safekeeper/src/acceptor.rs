//! The acceptor state machine: one safekeeper's side of the proposer protocol, for one
//! timeline, over its control file ([`ControlFileStore`]) and WAL ([`PhysicalStorage`]).
//!
//! The struct does no networking: the server feeds it decoded [`ProposerMessage`]s and sends
//! back what it returns. All I/O is blocking (see [`crate::wal_storage`] for why); the server
//! calls it from a blocking thread.
//!
//! # Rules
//! * **Votes are durable before they are answered**: a vote for a higher term persists the
//!   term in the control file (fsynced) before [`Acceptor::handle_vote_request`] returns.
//!   The response carries the term, whether the vote was given, the flush LSN, the truncate
//!   LSN (= `peer_horizon_lsn`) and the term history up to the flush LSN.
//! * **Elected**: a higher term is adopted (persisted); a lower one is ignored and answered
//!   with the acceptor's term. The acceptor recomputes the divergence point itself with
//!   [`TermHistory::find_highest_common_point`] and refuses a `start_streaming_at` that
//!   differs, or that lies below `commit_lsn`. Then it truncates its WAL there, adopts the
//!   proposer's history (persisted after the truncation, so a crash in between leaves an
//!   old history that still describes the WAL on disk) and, on first use, records
//!   `timeline_start_lsn`/`local_start_lsn`.
//! * **Appends** are accepted only in the term this acceptor saw elected (in this process
//!   lifetime) and only in sequence (`begin == write_lsn`). A lower term gets a reply
//!   carrying the acceptor's higher term; a higher or not-elected term is an error.
//! * **commit_lsn = min(proposer's commit, own flush_lsn)**, never moving backwards; so
//!   **commit_lsn ≤ flush_lsn** always, and **nothing below commit_lsn is ever truncated**
//!   (refused here, and again by the storage).
//! * **flush_lsn is always a record boundary** (see [`crate::wal_storage`]). Writes are not
//!   durable until [`Acceptor::flush`], which the caller drives: when its input queue drains,
//!   and at least every [`crate::wal_storage::FLUSH_INTERVAL`] ([`Acceptor::flush_due`]).
//! * Membership: generation 0 means "no configuration" and disables generation checks;
//!   otherwise vote, elected and append messages must carry exactly the acceptor's
//!   generation. A greeting with a higher generation switches the acceptor to it.
//!
//! The in-memory positions (`commit_lsn`, `backup_lsn`, `peer_horizon_lsn`,
//! `remote_consistent_lsn`) may run ahead of the control file; they are persisted with every
//! term change, when `commit_lsn` first reaches the current term's start, and by
//! [`Acceptor::persist_positions_if_needed`]. That is safe: on start the WAL is rescanned
//! from the persisted `commit_lsn`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use postgres_ffi::PgMajorVersion;
use prometheus::IntGauge;
use safekeeper_api::membership::{Configuration, Generation};
use safekeeper_api::proto::{
    AcceptorGreeting, AppendRequest, AppendResponse, HotStandbyFeedback, ProposerElected,
    ProposerGreeting, VoteRequest, VoteResponse,
};
use safekeeper_api::term::{Term, TermHistory, TermLsn};
use safekeeper_api::{AcceptorMessage, ProposerMessage, ServerInfo};
use tracing::info;
use utils::crashsafe::Sync;
use utils::vfs::{self, Vfs};
use utils::{Lsn, NodeId, TenantTimelineId};

use crate::control_file::{ControlFileError, ControlFileStore, TimelinePersistentState};
use crate::metrics;
use crate::wal_storage::{
    FlushTicket, PhysicalStorage, StorageError, WalReader, WalStartPositions, WalStorageConfig,
    remove_segments_below,
};

/// Why a message was refused. Each one names the timeline and the positions involved.
#[derive(Debug, thiserror::Error)]
pub enum AcceptorError {
    /// A greeting for another timeline.
    #[error("greeting for timeline {got}, but this connection serves timeline {ours}")]
    WrongTimeline {
        /// This timeline.
        ours: TenantTimelineId,
        /// What the proposer named.
        got: TenantTimelineId,
    },
    /// The proposer's server is not the timeline's.
    #[error("timeline {ttid}: proposer's {what} {theirs} does not match the timeline's {ours}")]
    ServerMismatch {
        /// The timeline.
        ttid: TenantTimelineId,
        /// Which fact.
        what: &'static str,
        /// The timeline's value.
        ours: u64,
        /// The proposer's.
        theirs: u64,
    },
    /// Server facts this safekeeper cannot store WAL for.
    #[error("timeline {ttid}: unsupported server: {msg}")]
    UnsupportedServer {
        /// The timeline.
        ttid: TenantTimelineId,
        /// What is wrong.
        msg: String,
    },
    /// A message from another membership generation.
    #[error(
        "timeline {ttid}: {msg} carries generation {got}, but this safekeeper is at generation {ours}"
    )]
    GenerationMismatch {
        /// The timeline.
        ttid: TenantTimelineId,
        /// Which message.
        msg: &'static str,
        /// The acceptor's generation.
        ours: Generation,
        /// The message's.
        got: Generation,
    },
    /// An append in a term this acceptor has not seen elected.
    #[error(
        "timeline {ttid}: AppendRequest in term {term} before ProposerElected (acceptor term {acceptor_term})"
    )]
    NotElected {
        /// The timeline.
        ttid: TenantTimelineId,
        /// The append's term.
        term: Term,
        /// The acceptor's term.
        acceptor_term: Term,
    },
    /// A ProposerElected whose history is malformed.
    #[error("timeline {ttid}: invalid term history in ProposerElected for term {term}: {msg}")]
    InvalidHistory {
        /// The timeline.
        ttid: TenantTimelineId,
        /// The proposer's term.
        term: Term,
        /// What is wrong.
        msg: String,
    },
    /// The proposer's divergence point is not the one this acceptor computes.
    #[error(
        "timeline {ttid}: ProposerElected in term {term} starts streaming at {start_streaming_at}, but the highest common point of the histories is {computed}"
    )]
    CommonPointMismatch {
        /// The timeline.
        ttid: TenantTimelineId,
        /// The proposer's term.
        term: Term,
        /// What the proposer sent.
        start_streaming_at: Lsn,
        /// What the acceptor computed.
        computed: Lsn,
    },
    /// Streaming would start below committed WAL.
    #[error(
        "timeline {ttid}: refusing ProposerElected in term {term}: start_streaming_at {start_streaming_at} is below commit_lsn {commit_lsn}; committed WAL is never truncated"
    )]
    WouldTruncateCommitted {
        /// The timeline.
        ttid: TenantTimelineId,
        /// The proposer's term.
        term: Term,
        /// What the proposer sent.
        start_streaming_at: Lsn,
        /// The acceptor's commit LSN.
        commit_lsn: Lsn,
    },
    /// Streaming would start before the timeline's first WAL.
    #[error(
        "timeline {ttid}: refusing ProposerElected in term {term}: start_streaming_at {start_streaming_at} is before timeline_start_lsn {timeline_start_lsn}"
    )]
    BeforeTimelineStart {
        /// The timeline.
        ttid: TenantTimelineId,
        /// The proposer's term.
        term: Term,
        /// What the proposer sent.
        start_streaming_at: Lsn,
        /// Where the timeline begins.
        timeline_start_lsn: Lsn,
    },
    /// An append whose payload length disagrees with its positions.
    #[error("timeline {ttid}: AppendRequest [{begin}, {end}) carries {len} bytes")]
    BadAppend {
        /// The timeline.
        ttid: TenantTimelineId,
        /// Start.
        begin: Lsn,
        /// End.
        end: Lsn,
        /// Payload length.
        len: usize,
    },
    /// WAL storage refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The control file could not be written or read.
    #[error(transparent)]
    ControlFile(#[from] ControlFileError),
}

/// Positions kept in memory ahead of the control file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InMemoryPositions {
    /// See [`TimelinePersistentState::commit_lsn`].
    pub commit_lsn: Lsn,
    /// See [`TimelinePersistentState::backup_lsn`].
    pub backup_lsn: Lsn,
    /// See [`TimelinePersistentState::peer_horizon_lsn`].
    pub peer_horizon_lsn: Lsn,
    /// See [`TimelinePersistentState::remote_consistent_lsn`].
    pub remote_consistent_lsn: Lsn,
}

impl InMemoryPositions {
    fn of(s: &TimelinePersistentState) -> Self {
        InMemoryPositions {
            commit_lsn: s.commit_lsn,
            backup_lsn: s.backup_lsn,
            peer_horizon_lsn: s.peer_horizon_lsn,
            remote_consistent_lsn: s.remote_consistent_lsn,
        }
    }

    fn apply_to(&self, s: &mut TimelinePersistentState) {
        s.commit_lsn = self.commit_lsn;
        s.backup_lsn = self.backup_lsn;
        s.peer_horizon_lsn = self.peer_horizon_lsn;
        s.remote_consistent_lsn = self.remote_consistent_lsn;
    }
}

/// The WAL storage settings for a timeline's persisted state.
pub fn wal_storage_config(
    fs: Arc<dyn Vfs>,
    dir: &Path,
    state: &TimelinePersistentState,
    sync: Sync,
) -> Result<WalStorageConfig, AcceptorError> {
    let ttid = state.ttid();
    let unsupported = |msg: String| AcceptorError::UnsupportedServer { ttid, msg };
    let pg_version = PgMajorVersion::from_number(state.server.pg_version / 10000)
        .ok_or_else(|| unsupported(format!("PostgreSQL version {}", state.server.pg_version)))?;
    let seg_size = u64::from(state.server.wal_seg_size);
    if !postgres_ffi::is_valid_wal_segment_size(seg_size) {
        return Err(unsupported(format!("wal_seg_size {seg_size}")));
    }
    Ok(WalStorageConfig {
        fs,
        dir: dir.to_path_buf(),
        ttid,
        seg_size,
        pg_version,
        system_id: state.server.system_id,
        sync,
    })
}

/// One timeline's acceptor. See the module docs for the rules it enforces.
#[derive(Debug)]
pub struct Acceptor {
    ttid: TenantTimelineId,
    node_id: NodeId,
    control: ControlFileStore,
    mem: InMemoryPositions,
    wal: PhysicalStorage,
    /// The term whose ProposerElected this acceptor accepted (since it was opened).
    elected_term: Option<Term>,
    /// Where the elected term's WAL starts.
    term_start_lsn: Lsn,
    /// The highest commit LSN a proposer has sent in the elected term.
    proposer_commit_lsn: Lsn,
    /// The flush LSN each peer safekeeper last published (broker heartbeats; in memory):
    /// WAL a peer still lacks is kept for it, within the lag bound.
    peer_flush: std::collections::BTreeMap<NodeId, Lsn>,
    commit_gauge: IntGauge,
    term_gauge: IntGauge,
}

impl Acceptor {
    /// Opens the acceptor of the timeline in `dir`: its control file, then its WAL (which
    /// finds the end of valid WAL from the persisted commit LSN and cuts a torn tail).
    pub fn open(dir: &Path, node_id: NodeId, sync: Sync) -> Result<Self, AcceptorError> {
        Self::open_in(vfs::os(), dir, node_id, sync)
    }

    /// [`Acceptor::open`] on `fs` (the simulation's file system).
    pub fn open_in(
        fs: Arc<dyn Vfs>,
        dir: &Path,
        node_id: NodeId,
        sync: Sync,
    ) -> Result<Self, AcceptorError> {
        let control = ControlFileStore::load_in(fs, dir, sync)?;
        Self::with_control_file(dir, control, node_id, sync)
    }

    /// Like [`Acceptor::open`], with the control file already loaded (so the caller can
    /// check it before any WAL file is touched).
    pub fn with_control_file(
        dir: &Path,
        control: ControlFileStore,
        node_id: NodeId,
        sync: Sync,
    ) -> Result<Self, AcceptorError> {
        let state = control.state();
        let config = wal_storage_config(Arc::clone(control.fs()), dir, state, sync)?;
        let wal = PhysicalStorage::open(
            config,
            WalStartPositions {
                local_start_lsn: state.local_start_lsn,
                commit_lsn: state.commit_lsn,
            },
        )?;
        let ttid = state.ttid();
        let acceptor = Acceptor {
            ttid,
            node_id,
            mem: InMemoryPositions::of(state),
            wal,
            elected_term: None,
            term_start_lsn: Lsn::INVALID,
            proposer_commit_lsn: state.commit_lsn,
            peer_flush: Default::default(),
            commit_gauge: metrics::commit_lsn_gauge(&ttid),
            term_gauge: metrics::term_gauge(&ttid),
            control,
        };
        metrics::set_lsn(&acceptor.commit_gauge, acceptor.mem.commit_lsn);
        acceptor.term_gauge.set(acceptor.term() as i64);
        Ok(acceptor)
    }

    /// Which timeline.
    pub fn ttid(&self) -> TenantTimelineId {
        self.ttid
    }

    /// The state as persisted in the control file.
    pub fn persisted_state(&self) -> &TimelinePersistentState {
        self.control.state()
    }

    /// The positions as known in memory (never behind the persisted ones).
    pub fn positions(&self) -> InMemoryPositions {
        self.mem
    }

    /// The highest term voted for.
    pub fn term(&self) -> Term {
        self.control.state().acceptor_state.term
    }

    /// The term history (possibly extending beyond the flush LSN).
    pub fn term_history(&self) -> &TermHistory {
        &self.control.state().acceptor_state.term_history
    }

    /// The term of the last WAL this acceptor holds.
    pub fn last_log_term(&self) -> Term {
        self.term_history().last_log_term(self.flush_lsn())
    }

    /// End of the last complete, durable record.
    pub fn flush_lsn(&self) -> Lsn {
        self.wal.flush_lsn()
    }

    /// End of the WAL written (durable or not).
    pub fn write_lsn(&self) -> Lsn {
        self.wal.write_lsn()
    }

    /// The commit LSN (in memory).
    pub fn commit_lsn(&self) -> Lsn {
        self.mem.commit_lsn
    }

    /// The membership configuration.
    pub fn mconf(&self) -> &Configuration {
        &self.control.state().mconf
    }

    /// The WAL storage (read-only access).
    pub fn wal(&self) -> &PhysicalStorage {
        &self.wal
    }

    /// A reader of this timeline's WAL from `start`.
    pub fn wal_reader(&self, start: Lsn) -> Result<WalReader, StorageError> {
        WalReader::new(
            self.wal.config(),
            self.control.state().timeline_start_lsn,
            start,
        )
    }

    /// Persists the current state with `change` applied; the in-memory positions follow
    /// what was written.
    fn persist_with(
        &mut self,
        change: impl FnOnce(&mut TimelinePersistentState),
    ) -> Result<(), AcceptorError> {
        let mut state = self.control.state().clone();
        self.mem.apply_to(&mut state);
        change(&mut state);
        self.control.persist(state)?;
        self.mem = InMemoryPositions::of(self.control.state());
        self.wal.set_commit_lsn(self.mem.commit_lsn);
        metrics::set_lsn(&self.commit_gauge, self.mem.commit_lsn);
        self.term_gauge.set(self.term() as i64);
        Ok(())
    }

    fn check_generation(&self, msg: &'static str, got: Generation) -> Result<(), AcceptorError> {
        let ours = self.mconf().generation;
        if ours.accepts(got) {
            Ok(())
        } else {
            Err(AcceptorError::GenerationMismatch {
                ttid: self.ttid,
                msg,
                ours,
                got,
            })
        }
    }

    /// Dispatches one proposer message; returns the reply to send, if any. Appends get no
    /// immediate reply (except a term-only one to a stale proposer): the caller calls
    /// [`Acceptor::flush`] when its queue drains and sends that response.
    pub fn process_msg(
        &mut self,
        msg: &ProposerMessage,
    ) -> Result<Option<AcceptorMessage>, AcceptorError> {
        // After a failed control-file write the disk may be ahead of memory: answer nothing.
        self.control.check_not_broken()?;
        Ok(match msg {
            ProposerMessage::Greeting(m) => {
                Some(AcceptorMessage::Greeting(self.handle_greeting(m)?))
            }
            ProposerMessage::VoteRequest(m) => {
                Some(AcceptorMessage::VoteResponse(self.handle_vote_request(m)?))
            }
            ProposerMessage::Elected(m) => {
                self.handle_elected(m)?.map(AcceptorMessage::AppendResponse)
            }
            ProposerMessage::AppendRequest(m) => {
                self.handle_append(m)?.map(AcceptorMessage::AppendResponse)
            }
        })
    }

    /// Checks the proposer's timeline and server against ours, adopts a higher membership
    /// generation and a system id learned for the first time, and answers with our node id,
    /// configuration and term.
    pub fn handle_greeting(
        &mut self,
        msg: &ProposerGreeting,
    ) -> Result<AcceptorGreeting, AcceptorError> {
        let got = TenantTimelineId::new(msg.tenant_id, msg.timeline_id);
        if got != self.ttid {
            return Err(AcceptorError::WrongTimeline {
                ours: self.ttid,
                got,
            });
        }
        let ours = self.control.state().server;
        let mismatch = |what, ours: u64, theirs: u64| AcceptorError::ServerMismatch {
            ttid: self.ttid,
            what,
            ours,
            theirs,
        };
        if msg.wal_seg_size != ours.wal_seg_size {
            return Err(mismatch(
                "wal_seg_size",
                ours.wal_seg_size.into(),
                msg.wal_seg_size.into(),
            ));
        }
        if ours.system_id != 0 && msg.system_id != 0 && msg.system_id != ours.system_id {
            return Err(mismatch("system_id", ours.system_id, msg.system_id));
        }
        if msg.pg_version / 10000 != ours.pg_version / 10000 {
            return Err(mismatch(
                "PostgreSQL major version",
                (ours.pg_version / 10000).into(),
                (msg.pg_version / 10000).into(),
            ));
        }
        let new_server = ServerInfo {
            pg_version: msg.pg_version,
            system_id: if ours.system_id == 0 {
                msg.system_id
            } else {
                ours.system_id
            },
            wal_seg_size: ours.wal_seg_size,
        };
        let new_mconf = (msg.mconf.generation > self.mconf().generation).then(|| msg.mconf.clone());
        if new_server != ours || new_mconf.is_some() {
            if let Some(conf) = &new_mconf {
                info!(ttid = %self.ttid, from = %self.mconf(), to = %conf, "switching membership configuration");
            }
            self.persist_with(|s| {
                s.server = new_server;
                if let Some(conf) = new_mconf {
                    s.mconf = conf;
                }
            })?;
            self.wal.set_system_id(new_server.system_id);
        }
        Ok(AcceptorGreeting {
            node_id: self.node_id,
            mconf: self.mconf().clone(),
            term: self.term(),
        })
    }

    /// Switches to `conf` if its generation is higher than ours (persisted). Returns whether
    /// it switched.
    pub fn update_membership(&mut self, conf: &Configuration) -> Result<bool, AcceptorError> {
        if conf.generation <= self.mconf().generation {
            return Ok(false);
        }
        let conf = conf.clone();
        self.persist_with(|s| s.mconf = conf)?;
        Ok(true)
    }

    /// Raises the term durably to at least `to` (or to the current term + 1 when `to` is
    /// `None`), deposing any proposer of a lower term. Returns `(previous, current)`; a
    /// `to` at or below the current term changes nothing.
    pub fn bump_term(&mut self, to: Option<Term>) -> Result<(Term, Term), AcceptorError> {
        let previous = self.term();
        let target = to.unwrap_or_else(|| previous.saturating_add(1));
        if target > previous {
            info!(ttid = %self.ttid, from = previous, to = target, "bumping term");
            self.persist_with(|s| s.acceptor_state.term = target)?;
            self.elected_term = None;
        }
        Ok((previous, self.term()))
    }

    /// Votes for `msg.term` if it is higher than ours, persisting the term before replying.
    pub fn handle_vote_request(
        &mut self,
        msg: &VoteRequest,
    ) -> Result<VoteResponse, AcceptorError> {
        self.check_generation("VoteRequest", msg.generation)?;
        // Report everything written as flushed: the proposer picks its start from this.
        if self.wal.is_initialized() {
            self.wal.flush()?;
            self.update_commit()?;
        }
        let vote_given = self.term() < msg.term;
        if vote_given {
            info!(ttid = %self.ttid, from = self.term(), to = msg.term, "voting");
            self.persist_with(|s| s.acceptor_state.term = msg.term)?;
            self.elected_term = None;
        }
        let flush_lsn = self.flush_lsn();
        Ok(VoteResponse {
            generation: self.mconf().generation,
            term: self.term(),
            vote_given,
            flush_lsn,
            truncate_lsn: self.mem.peer_horizon_lsn,
            term_history: self.term_history().up_to(flush_lsn),
        })
    }

    /// A reply that only tells a stale proposer our (higher) term and positions.
    fn term_only_response(&self) -> AppendResponse {
        self.append_response()
    }

    /// Accepts the elected proposer: truncates the WAL at the divergence point (after checking
    /// it) and adopts the proposer's history. Returns a reply only when the message is
    /// ignored because our term is higher.
    pub fn handle_elected(
        &mut self,
        msg: &ProposerElected,
    ) -> Result<Option<AppendResponse>, AcceptorError> {
        self.check_generation("ProposerElected", msg.generation)?;
        if self.term() > msg.term {
            return Ok(Some(self.term_only_response()));
        }
        let invalid = |msg_text: String| AcceptorError::InvalidHistory {
            ttid: self.ttid,
            term: msg.term,
            msg: msg_text,
        };
        msg.term_history
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        let Some(TermLsn {
            term: last_term,
            lsn: term_start_lsn,
        }) = msg.term_history.last()
        else {
            return Err(invalid("empty".to_string()));
        };
        if last_term != msg.term {
            return Err(invalid(format!("ends with term {last_term}")));
        }
        if self.term() < msg.term {
            // Elected without our vote on this connection (e.g. recovery): adopt the term
            // durably first, as a vote would.
            self.persist_with(|s| s.acceptor_state.term = msg.term)?;
        }
        if self.wal.is_initialized() {
            self.wal.flush()?;
            self.update_commit()?;
        }
        let start = msg.start_streaming_at;
        let flush_lsn = self.flush_lsn();
        let computed = TermHistory::find_highest_common_point(
            self.term_history(),
            &msg.term_history,
            flush_lsn,
        )
        .map(|p| p.lsn)
        .or_else(|| msg.term_history.0.first().map(|e| e.lsn))
        .ok_or_else(|| AcceptorError::InvalidHistory {
            ttid: self.ttid,
            term: msg.term,
            msg: "empty".to_string(),
        })?;
        if computed != start {
            return Err(AcceptorError::CommonPointMismatch {
                ttid: self.ttid,
                term: msg.term,
                start_streaming_at: start,
                computed,
            });
        }
        if start < self.mem.commit_lsn {
            return Err(AcceptorError::WouldTruncateCommitted {
                ttid: self.ttid,
                term: msg.term,
                start_streaming_at: start,
                commit_lsn: self.mem.commit_lsn,
            });
        }
        let timeline_start_lsn = self.control.state().timeline_start_lsn;
        if timeline_start_lsn.is_valid() && start < timeline_start_lsn {
            return Err(AcceptorError::BeforeTimelineStart {
                ttid: self.ttid,
                term: msg.term,
                start_streaming_at: start,
                timeline_start_lsn,
            });
        }
        let history = msg.term_history.clone();
        if self.wal.is_initialized() {
            // Truncate first, adopt the history second: a crash in between leaves the old
            // history, which still describes the (shorter) WAL.
            self.wal.truncate(start)?;
            self.persist_with(|s| s.acceptor_state.term_history = history)?;
        } else {
            // First use: record where the WAL starts, then create the first segment (opening
            // creates it too if a crash comes in between).
            self.wal.check_start_lsn(start)?;
            self.persist_with(|s| {
                if !s.timeline_start_lsn.is_valid() {
                    s.timeline_start_lsn = start;
                }
                s.local_start_lsn = start;
                let floor = s.timeline_start_lsn;
                for lsn in [
                    &mut s.commit_lsn,
                    &mut s.backup_lsn,
                    &mut s.peer_horizon_lsn,
                    &mut s.remote_consistent_lsn,
                ] {
                    *lsn = (*lsn).max(floor);
                }
                s.acceptor_state.term_history = history;
            })?;
            self.wal.initialize(start)?;
        }
        info!(ttid = %self.ttid, term = msg.term, %start, %term_start_lsn, "proposer elected");
        self.elected_term = Some(msg.term);
        self.term_start_lsn = term_start_lsn;
        self.proposer_commit_lsn = self.mem.commit_lsn;
        Ok(None)
    }

    /// Writes the WAL of an append (not yet durable) and takes its commit and truncate LSNs.
    /// Returns a reply only to a proposer with a lower term (carrying our term).
    pub fn handle_append(
        &mut self,
        msg: &AppendRequest,
    ) -> Result<Option<AppendResponse>, AcceptorError> {
        let h = &msg.h;
        self.check_generation("AppendRequest", h.generation)?;
        if h.term < self.term() {
            return Ok(Some(self.term_only_response()));
        }
        if h.term > self.term() || self.elected_term != Some(h.term) {
            return Err(AcceptorError::NotElected {
                ttid: self.ttid,
                term: h.term,
                acceptor_term: self.term(),
            });
        }
        if !msg.wal_data.is_empty() {
            if h.end_lsn.checked_distance(h.begin_lsn) != Some(msg.wal_data.len() as u64) {
                return Err(AcceptorError::BadAppend {
                    ttid: self.ttid,
                    begin: h.begin_lsn,
                    end: h.end_lsn,
                    len: msg.wal_data.len(),
                });
            }
            self.wal.write_wal(h.begin_lsn, &msg.wal_data)?;
        }
        self.proposer_commit_lsn = self.proposer_commit_lsn.max(h.commit_lsn);
        self.mem.peer_horizon_lsn = self.mem.peer_horizon_lsn.max(h.truncate_lsn);
        self.update_commit()?;
        Ok(None)
    }

    /// commit_lsn = min(proposer's commit, flush_lsn), never moving backwards. Persists the
    /// control file when commit_lsn first reaches the elected term's start (so a restarted
    /// safekeeper reports the new term's commit, which sync-safekeepers waits for).
    fn update_commit(&mut self) -> Result<(), AcceptorError> {
        let candidate = self.proposer_commit_lsn.min(self.wal.flush_lsn());
        if candidate <= self.mem.commit_lsn {
            return Ok(());
        }
        let crossed_term_start = self.term_start_lsn.is_valid()
            && self.control.state().commit_lsn < self.term_start_lsn
            && candidate >= self.term_start_lsn;
        self.mem.commit_lsn = candidate;
        self.wal.set_commit_lsn(candidate);
        metrics::set_lsn(&self.commit_gauge, candidate);
        if crossed_term_start {
            self.persist_with(|_| {})?;
        }
        Ok(())
    }

    /// Makes written WAL durable, advances flush and commit LSNs, and returns the response
    /// to send to the proposer.
    pub fn flush(&mut self) -> Result<AppendResponse, AcceptorError> {
        if self.wal.is_initialized() {
            self.wal.flush()?;
            self.update_commit()?;
        }
        Ok(self.append_response())
    }

    /// Prepares a flush whose fdatasync the caller runs without holding the acceptor
    /// ([`FlushTicket::sync`]), then hands back to [`Acceptor::complete_flush`]. `None`
    /// while the timeline has no WAL (nothing to sync).
    pub fn begin_flush(&mut self) -> Result<Option<FlushTicket>, AcceptorError> {
        if !self.wal.is_initialized() {
            return Ok(None);
        }
        Ok(Some(self.wal.begin_flush()?))
    }

    /// Takes a ticket's fdatasync outcome: advances flush and commit LSNs (see
    /// [`PhysicalStorage::complete_flush`]) and returns the response to send. A failed
    /// fdatasync is an error and leaves the storage broken.
    pub fn complete_flush(
        &mut self,
        ticket: Option<FlushTicket>,
        synced: Result<(), StorageError>,
    ) -> Result<AppendResponse, AcceptorError> {
        if let Some(ticket) = ticket {
            self.wal.complete_flush(ticket, synced)?;
            self.update_commit()?;
        } else {
            synced?;
        }
        Ok(self.append_response())
    }

    /// Whether written WAL has waited long enough that the caller should flush now even
    /// though messages keep arriving.
    pub fn flush_due(&self, now: Instant) -> bool {
        self.wal.flush_due(now)
    }

    /// The current AppendResponse (the server adds feedback).
    pub fn append_response(&self) -> AppendResponse {
        AppendResponse {
            generation: self.mconf().generation,
            term: self.term(),
            flush_lsn: self.flush_lsn(),
            commit_lsn: self.mem.commit_lsn,
            hs_feedback: HotStandbyFeedback::default(),
            pageserver_feedback: None,
        }
    }

    /// Records the pageservers' minimum remote consistent LSN (monotonic, in memory).
    pub fn update_remote_consistent_lsn(&mut self, lsn: Lsn) {
        self.mem.remote_consistent_lsn = self.mem.remote_consistent_lsn.max(lsn);
    }

    /// Records the end of WAL backed up to object storage (monotonic, in memory).
    pub fn update_backup_lsn(&mut self, lsn: Lsn) {
        self.mem.backup_lsn = self.mem.backup_lsn.max(lsn);
    }

    /// Takes what a peer safekeeper published (broker heartbeat): its commit LSN when its
    /// last log term equals ours (then our WAL up to our flush LSN is a prefix of its, so
    /// what it knows committed is committed here too, up to our flush LSN), the maximum of
    /// the peer horizons, and its flush LSN (which holds back WAL removal for it, see
    /// [`Acceptor::wal_removal_horizon`]). In memory. Returns whether a position moved.
    ///
    /// A peer's backup and remote consistent LSNs are *not* taken: heartbeats are not
    /// authenticated, and those positions decide what WAL may be deleted. Deletion follows
    /// only what pageservers report on their own streams to this safekeeper (and, once it
    /// exists, this safekeeper's own backup).
    pub fn record_peer_info(
        &mut self,
        peer: NodeId,
        last_log_term: Term,
        flush_lsn: Lsn,
        commit_lsn: Lsn,
        peer_horizon_lsn: Lsn,
    ) -> Result<bool, AcceptorError> {
        if peer != self.node_id {
            self.peer_flush.insert(peer, flush_lsn);
        }
        let before = self.mem;
        if self.wal.is_initialized()
            && last_log_term == self.last_log_term()
            && commit_lsn > self.mem.commit_lsn
        {
            self.proposer_commit_lsn = self.proposer_commit_lsn.max(commit_lsn);
            self.update_commit()?;
        }
        self.mem.peer_horizon_lsn = self.mem.peer_horizon_lsn.max(peer_horizon_lsn);
        Ok(self.mem != before)
    }

    /// Persists the in-memory positions if they differ from the control file and either
    /// `force` is set (the periodic save) or one of them leads its persisted value by a
    /// segment or more. Returns whether it wrote.
    pub fn persist_positions_if_needed(&mut self, force: bool) -> Result<bool, AcceptorError> {
        let persisted = InMemoryPositions::of(self.control.state());
        if persisted == self.mem {
            return Ok(false);
        }
        let seg = self.wal.config().seg_size;
        let far = |mem: Lsn, disk: Lsn| mem.0.saturating_sub(disk.0) >= seg;
        let lagging = far(self.mem.commit_lsn, persisted.commit_lsn)
            || far(self.mem.backup_lsn, persisted.backup_lsn)
            || far(
                self.mem.remote_consistent_lsn,
                persisted.remote_consistent_lsn,
            )
            || far(self.mem.peer_horizon_lsn, persisted.peer_horizon_lsn);
        if !force && !lagging {
            return Ok(false);
        }
        self.persist_with(|_| {})?;
        Ok(true)
    }

    /// Where WAL may be removed below: the minimum of the *persisted* remote consistent
    /// LSN, backup LSN (when backup is enabled) and commit LSN, and the flush LSN. Persisted
    /// values, so a crash never brings back a position whose WAL is gone.
    ///
    /// It is also held at the flush LSN of every peer that lags by at most `max_peer_lag`
    /// (the members of the timeline's configuration when it has one, else every peer heard
    /// from): a safekeeper that was down must find the WAL it lacks on its peers. A peer
    /// further behind is left to recover another way (from backup, or by pull_timeline), so
    /// one dead node cannot make the others keep WAL forever.
    pub fn wal_removal_horizon(&self, backup_enabled: bool, max_peer_lag: u64) -> Lsn {
        let s = self.control.state();
        let mut horizon = s
            .remote_consistent_lsn
            .min(s.commit_lsn)
            .min(self.flush_lsn());
        if backup_enabled {
            horizon = horizon.min(s.backup_lsn);
        }
        let mconf = self.mconf();
        let member = |id: &NodeId| {
            mconf.generation == Generation::NONE
                || mconf.members.iter().any(|m| m.node_id == *id)
                || mconf.new_members.iter().flatten().any(|m| m.node_id == *id)
        };
        let ours = self.flush_lsn();
        for (_, &flush) in self.peer_flush.iter().filter(|(id, _)| member(id)) {
            if flush.0.saturating_add(max_peer_lag) >= ours.0 {
                horizon = horizon.min(flush);
            }
        }
        horizon
    }

    /// Deletes the segments wholly below [`Acceptor::wal_removal_horizon`]; returns their
    /// numbers.
    pub fn remove_old_wal(
        &self,
        backup_enabled: bool,
        max_peer_lag: u64,
    ) -> Result<Vec<u64>, StorageError> {
        let horizon = self.wal_removal_horizon(backup_enabled, max_peer_lag);
        if !horizon.is_valid() {
            return Ok(Vec::new());
        }
        let config = self.wal.config();
        remove_segments_below(config, horizon)
    }
}

#[cfg(test)]
mod tests;
