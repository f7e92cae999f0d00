//! The proposer state machine, sans I/O.
//!
//! A [`Proposer`] owns no sockets, threads or clocks. The driver (the simulation, or the
//! walproposer binary over tokio) feeds it events — [`Proposer::connected`],
//! [`Proposer::message_from`], [`Proposer::disconnected`], [`Proposer::wal_available`],
//! [`Proposer::donor_wal`], [`Proposer::tick`] — and carries out the [`Action`]s it queues
//! ([`Proposer::poll_action`]): connect, send, fetch the donor's WAL, report commits, stop.
//! The same code therefore runs, step for step, in a deterministic simulation and in
//! production.
//!
//! # States
//! `CollectingTerms → Campaign → Elected`, or `Stopped` after a fatal error:
//! * **CollectingTerms**: greet every safekeeper; remember the highest term any of them
//!   reports. Once a quorum has greeted, campaign in `max + 1`.
//! * **Campaign**: ask every greeted safekeeper for its vote (late greeters are asked as
//!   they come). Each vote carries the voter's flush LSN and term history.
//! * **Elected**: on a quorum of votes, pick the donor (highest `(last_log_term,
//!   flush_lsn)`), start the term at its flush LSN, send each voter `ProposerElected` with
//!   its divergence point, recover from the donor the WAL that voters lack, then stream the
//!   compute's WAL, advance the commit LSN, send heartbeats when idle, and bring
//!   reconnecting safekeepers in through the same greet/vote/elected sequence.
//!
//! # Invariants
//! * The proposer writes WAL only in its own term, and only after a quorum voted for it.
//! * A vote is counted only if given for the proposer's term. Votes are durable on the
//!   acceptor, so a vote survives the connection it came on; a re-vote that is refused
//!   because the acceptor is already in our term confirms it.
//! * **Commit LSN** = the quorum-th highest flush LSN acknowledged *in this term*, counting
//!   only acknowledgements at or after the term start ([`rules::quorum_commit`]); it never
//!   moves backwards and never exceeds WAL a quorum has flushed.
//! * Any message showing a term above ours ends the proposer with [`ProposerError`]: another
//!   proposer has taken over, and this one must never write again.
//! * The WAL buffer holds exactly the proposer's log (the compute's WAL from the term start
//!   on), and so does the recovered chunk below it (read back from a safekeeper whose log
//!   agrees with ours there); an acceptor is sent bytes only from its divergence point on,
//!   in order.
//! * Memory is bounded: the buffer by [`ProposerConfig::max_buffer_bytes`] (committed WAL
//!   beyond it is dropped), recovery by one chunk being streamed and one being read
//!   ([`ProposerConfig::fetch_chunk_bytes`]), however far an acceptor lags.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use safekeeper_api::membership::{Configuration, Generation};
use safekeeper_api::proto::{
    AcceptorGreeting, AppendRequest, AppendRequestHeader, AppendResponse, MAX_MEMBERS,
    MAX_WAL_PAYLOAD, ProposerElected, ProposerGreeting, VoteRequest, VoteResponse,
};
use safekeeper_api::term::{Term, TermHistory};
use safekeeper_api::{AcceptorMessage, ProposerMessage, ServerInfo};
use tracing::{info, warn};
use utils::{Lsn, NodeId, TenantTimelineId};

use crate::rules::{self, VoteInfo};
use crate::wal_buffer::{RecoveredWal, WalBuffer};

/// Acknowledged WAL is dropped from memory in batches of at least this much, so trimming
/// the front of the buffer stays cheap.
const TRIM_BATCH: u64 = 1024 * 1024;

/// A safekeeper, by its index in the configured list (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SkId(pub usize);

impl fmt::Display for SkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sk#{}", self.0)
    }
}

/// Timers of the proposer; the driver's clock only has to be monotonic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// An active safekeeper that was sent nothing for this long gets an empty append (a
    /// heartbeat), which also carries the commit LSN.
    pub heartbeat_interval: Duration,
    /// A safekeeper we await something from (the connection, a greeting, a vote, append
    /// responses) that stays silent this long is disconnected and reconnected: it lags or
    /// has restarted.
    pub keepalive_timeout: Duration,
    /// First delay before reconnecting; doubles on each failure up to
    /// [`Timeouts::reconnect_max`], and resets on a successful greeting.
    pub reconnect_min: Duration,
    /// Longest delay before reconnecting.
    pub reconnect_max: Duration,
    /// Delay before retrying a failed fetch of the donor's WAL.
    pub fetch_retry: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            heartbeat_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            fetch_retry: Duration::from_millis(500),
        }
    }
}

/// Deliberately unsafe protocol rules. They exist only so that the deterministic
/// simulation can prove its invariant checker detects a broken proposer (its negative
/// control); they can only be switched on with the `testing` feature
/// ([`ProposerConfig::with_unsafe_rules`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsafeRules {
    /// Elect and commit with this many safekeepers instead of a majority.
    pub quorum: Option<usize>,
    /// Count acknowledgements below the term start when computing the commit LSN.
    pub count_acks_before_term_start: bool,
    /// Continue the *least* advanced voter's log instead of the most advanced one's.
    pub least_advanced_donor: bool,
}

/// What a proposer needs to know to run.
#[derive(Debug, Clone)]
pub struct ProposerConfig {
    /// The timeline.
    pub ttid: TenantTimelineId,
    /// How many safekeepers are configured; they are named `SkId(0..n)`. The quorum is a
    /// majority of them.
    pub safekeepers: usize,
    /// The membership configuration sent in greetings ([`Configuration::empty`] if none);
    /// a higher one reported by a safekeeper is adopted.
    pub mconf: Configuration,
    /// The compute's server facts (PostgreSQL version, system id, segment size).
    pub server: ServerInfo,
    /// Where the first term starts when no safekeeper has any WAL: the compute's initial
    /// WAL position (a record or page boundary). [`Lsn::INVALID`] = never start a timeline:
    /// an election among voters without WAL then stops with [`ProposerError::NoWal`] before
    /// anything is sent (`walproposer sync` without `--start-lsn`).
    pub bootstrap_lsn: Lsn,
    /// Timers.
    pub timeouts: Timeouts,
    /// Most WAL per AppendRequest (at most [`MAX_WAL_PAYLOAD`]).
    pub max_append_bytes: usize,
    /// Most WAL sent to one safekeeper beyond what it has acknowledged as flushed.
    ///
    /// A safekeeper acknowledges flushes only at record boundaries, so a record longer than
    /// the window (or a segment switch, whose padding runs to the end of the 16 MiB segment)
    /// would stall forever behind a fixed window: a stream whose acknowledgements have not
    /// moved for a heartbeat interval while its window is full gets its window doubled (up
    /// to [`ProposerConfig::max_buffer_bytes`]), and back to this once it catches up.
    pub max_inflight_bytes: u64,
    /// Most WAL held in memory for acceptors that lag. Beyond it, committed WAL (on a
    /// quorum) is dropped even if some acceptor still lacks it; that acceptor then
    /// recovers it from a safekeeper that has it ([`Action::FetchFromDonor`]). So a
    /// safekeeper that is down for long costs a fetch, not unbounded memory.
    pub max_buffer_bytes: u64,
    unsafe_rules: UnsafeRules,
}

impl ProposerConfig {
    /// Most WAL one recovery read asks for: an eighth of
    /// [`ProposerConfig::max_buffer_bytes`] (at least one append). With the chunk being
    /// streamed and the one being read, recovery adds at most a quarter of the buffer limit,
    /// whatever the amount a safekeeper lacks.
    pub fn fetch_chunk_bytes(&self) -> u64 {
        (self.max_buffer_bytes / 8).max(self.max_append_bytes as u64)
    }

    /// A configuration with default timers and limits.
    pub fn new(
        ttid: TenantTimelineId,
        safekeepers: usize,
        server: ServerInfo,
        bootstrap_lsn: Lsn,
    ) -> Self {
        ProposerConfig {
            ttid,
            safekeepers,
            mconf: Configuration::empty(),
            server,
            bootstrap_lsn,
            timeouts: Timeouts::default(),
            max_append_bytes: MAX_WAL_PAYLOAD,
            // Two segments: a segment switch's padding never waits for the stall rule.
            max_inflight_bytes: 32 * 1024 * 1024,
            max_buffer_bytes: 128 * 1024 * 1024,
            unsafe_rules: UnsafeRules::default(),
        }
    }

    /// Switches on deliberately unsafe rules (negative controls of the simulation only).
    #[cfg(feature = "testing")]
    pub fn with_unsafe_rules(mut self, rules: UnsafeRules) -> Self {
        self.unsafe_rules = rules;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.safekeepers == 0 || self.safekeepers > MAX_MEMBERS {
            return Err(ConfigError::SafekeeperCount(self.safekeepers));
        }
        if self.max_append_bytes == 0 || self.max_append_bytes > MAX_WAL_PAYLOAD {
            return Err(ConfigError::AppendSize(self.max_append_bytes));
        }
        if self.max_inflight_bytes < self.max_append_bytes as u64 {
            return Err(ConfigError::InflightWindow {
                window: self.max_inflight_bytes,
                append: self.max_append_bytes,
            });
        }
        if self.max_buffer_bytes < self.max_inflight_bytes {
            return Err(ConfigError::BufferSize {
                buffer: self.max_buffer_bytes,
                window: self.max_inflight_bytes,
            });
        }
        Ok(())
    }
}

/// A configuration the proposer cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No safekeepers, or more than a configuration may have.
    #[error("{0} safekeepers configured; need 1 to {MAX_MEMBERS}")]
    SafekeeperCount(usize),
    /// An append size the protocol cannot carry.
    #[error("max_append_bytes {0} must be between 1 and {MAX_WAL_PAYLOAD}")]
    AppendSize(usize),
    /// An in-flight window smaller than one append would never send anything.
    #[error("max_inflight_bytes {window} is smaller than max_append_bytes {append}")]
    InflightWindow {
        /// The window.
        window: u64,
        /// The append size.
        append: usize,
    },
    /// A WAL buffer smaller than the in-flight window.
    #[error("max_buffer_bytes {buffer} is smaller than max_inflight_bytes {window}")]
    BufferSize {
        /// The buffer limit.
        buffer: u64,
        /// The in-flight window.
        window: u64,
    },
}

/// Why a proposer stopped. Each is final: the process (or simulated compute) must restart
/// with a fresh proposer, which runs a new election.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposerError {
    /// A safekeeper is in a higher term: another proposer has been elected (or is
    /// campaigning) above us.
    #[error(
        "{sk} is in term {their_term}, above our term {our_term} (seen in its {msg}): another proposer has taken over"
    )]
    HigherTerm {
        /// Who told us.
        sk: SkId,
        /// Its term.
        their_term: Term,
        /// Ours.
        our_term: Term,
        /// The message that showed it.
        msg: &'static str,
    },
    /// A quorum voted, none of them has any WAL, and no bootstrap LSN was given: there is
    /// nothing to continue and nowhere to start.
    #[error(
        "no safekeeper of the quorum has any WAL for this timeline, and no start LSN was given"
    )]
    NoWal,
    /// A vote for our term was refused before we were elected: another proposer campaigns
    /// in the same term, and at most one of us may win it.
    #[error(
        "{sk} refused its vote for term {term} (it is in term {their_term}): another proposer is campaigning in this term"
    )]
    VoteRefused {
        /// Who refused.
        sk: SkId,
        /// Our term.
        term: Term,
        /// Its term.
        their_term: Term,
    },
    /// Two configured safekeepers greeted with one node id: one acceptor reached under two
    /// addresses would count twice towards every quorum, so a minority could commit.
    #[error(
        "{first} and {second} are the same safekeeper (both greet as node {node_id}): the safekeeper list must name each node once"
    )]
    DuplicateNodeId {
        /// The node id both reported.
        node_id: NodeId,
        /// The one that greeted first.
        first: SkId,
        /// The one that greeted second.
        second: SkId,
    },
}

/// An event the driver reported that does not fit the proposer's state; the event is
/// ignored and the proposer is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// WAL offered before the proposer was elected (or after it stopped).
    #[error("WAL offered to a proposer that is not elected")]
    NotElected,
    /// Compute WAL that does not continue the proposer's WAL.
    #[error("WAL ending at {up_to} with {len} bytes does not continue the proposer's WAL at {end}")]
    NotContiguous {
        /// Where the offered WAL ends.
        up_to: Lsn,
        /// Its length.
        len: usize,
        /// Where the proposer's WAL ends.
        end: Lsn,
    },
    /// Donor WAL that is not the range the proposer asked for.
    #[error("donor WAL at {start} ({len} bytes) does not answer the outstanding fetch {want:?}")]
    UnexpectedDonorWal {
        /// Where it starts.
        start: Lsn,
        /// Its length.
        len: usize,
        /// The outstanding request, if any.
        want: Option<(Lsn, Lsn)>,
    },
}

/// The outcome of a won election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The term won.
    pub term: Term,
    /// Where this term's WAL starts: the compute must produce WAL from exactly here.
    pub term_start_lsn: Lsn,
    /// The proposer's history: the donor's, then `(term, term_start_lsn)`.
    pub history: TermHistory,
    /// The voter whose log the proposer continues.
    pub donor: SkId,
}

/// A request for the proposer's WAL in `[start, end)` that the buffer no longer (or never)
/// held, for acceptors that lag behind: below the term start it is the election's donor's,
/// above it any acceptor's that acknowledged `end` in this term.
///
/// The driver must answer with [`Proposer::donor_wal`] carrying exactly those bytes, or
/// [`Proposer::donor_fetch_failed`]. It may serve them only while the source's log still
/// agrees with `history` up to `end` (the highest common point of its history and
/// `history`, at its flush LSN, is at least `end`): a safekeeper that has since been
/// truncated by a newer proposer must not be read. Reading with `START_REPLICATION …
/// (term '<our term>')` guarantees it: the safekeeper serves it only while its term and
/// last log term stay ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Whom to read from (the field keeps its name from the common case).
    pub donor: SkId,
    /// First LSN wanted.
    pub start: Lsn,
    /// End (exclusive).
    pub end: Lsn,
    /// The proposer's term history, which the bytes must belong to.
    pub history: TermHistory,
}

/// Something the driver must do for the proposer.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a connection to the safekeeper (then [`Proposer::connected`] or
    /// [`Proposer::disconnected`]).
    Connect(SkId),
    /// Close the connection: the safekeeper stopped answering or broke the protocol. The
    /// driver must not report this connection's later events.
    Disconnect {
        /// Which.
        sk: SkId,
        /// Why, for logs.
        reason: String,
    },
    /// Send a message on the safekeeper's current connection.
    Send {
        /// To whom.
        sk: SkId,
        /// What.
        msg: ProposerMessage,
    },
    /// The proposer won an election; the compute must produce WAL from
    /// [`Election::term_start_lsn`].
    Elected(Election),
    /// Read the donor's WAL (see [`FetchRequest`]).
    FetchFromDonor(FetchRequest),
    /// WAL up to this LSN is on a quorum: the compute may consider it durable.
    CommitAdvanced(Lsn),
    /// The proposer stopped for good; the driver closes every connection.
    Fatal(ProposerError),
}

/// Where the proposer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposerState {
    /// Greeting safekeepers, learning their terms.
    CollectingTerms,
    /// Asking for votes in [`Proposer::term`].
    Campaign,
    /// Won [`Proposer::term`]; streaming.
    Elected,
    /// Ended by a fatal error.
    Stopped,
}

/// Streaming state of one active connection.
#[derive(Debug, Clone)]
struct Stream {
    /// The current in-flight window (see [`ProposerConfig::max_inflight_bytes`]).
    window: u64,
    /// When `flush` last moved (or streaming began).
    flush_moved_at: Instant,
    /// The next byte to send.
    next: Lsn,
    /// The flush LSN this connection last reported (or its start point).
    flush: Lsn,
    /// When we last sent anything.
    last_sent: Instant,
    /// The commit LSN last sent.
    commit_sent: Lsn,
}

#[derive(Debug, Clone)]
enum Phase {
    Offline { reconnect_at: Instant },
    Connecting,
    WaitGreeting,
    Greeted,
    WaitVote,
    Voted,
    Active(Stream),
}

#[derive(Debug, Clone)]
struct Sk {
    phase: Phase,
    /// When we last heard from it (or started waiting for it).
    last_heard: Instant,
    backoff: Duration,
    /// Its vote in our term (durable on the acceptor), with its latest reported log.
    vote: Option<VoteInfo>,
    /// The highest flush LSN it acknowledged in our term, after ProposerElected.
    acked_flush: Option<Lsn>,
    /// The node id it greeted with (kept across reconnections): no two entries of the
    /// list may be one node.
    node_id: Option<NodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    Idle,
    InFlight { start: Lsn, end: Lsn },
    RetryAt(Instant),
}

#[derive(Debug, Clone)]
struct Leader {
    history: TermHistory,
    term_start: Lsn,
    donor: SkId,
    truncate_lsn: Lsn,
    commit_lsn: Lsn,
    wal: WalBuffer,
    /// WAL below `wal` read back for lagging acceptors, one chunk at a time.
    recovered: Option<RecoveredWal>,
    fetch: Fetch,
}

/// The proposer. See the module docs.
#[derive(Debug)]
pub struct Proposer {
    config: ProposerConfig,
    quorum: usize,
    mconf: Configuration,
    now: Instant,
    state: ProposerState,
    term: Term,
    sks: Vec<Sk>,
    leader: Option<Leader>,
    actions: VecDeque<Action>,
}

impl Proposer {
    /// A proposer that starts by connecting to every safekeeper (queued as
    /// [`Action::Connect`]s).
    pub fn new(config: ProposerConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let quorum = config
            .unsafe_rules
            .quorum
            .unwrap_or_else(|| rules::quorum(config.safekeepers));
        let sks = (0..config.safekeepers)
            .map(|_| Sk {
                phase: Phase::Connecting,
                last_heard: now,
                backoff: config.timeouts.reconnect_min,
                vote: None,
                acked_flush: None,
                node_id: None,
            })
            .collect();
        let actions = (0..config.safekeepers)
            .map(|i| Action::Connect(SkId(i)))
            .collect();
        Ok(Proposer {
            mconf: config.mconf.clone(),
            config,
            quorum,
            now,
            state: ProposerState::CollectingTerms,
            term: 0,
            sks,
            leader: None,
            actions,
        })
    }

    /// The next thing to do, if any. Drain this after every event.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The current state.
    pub fn state(&self) -> ProposerState {
        self.state
    }

    /// The term campaigned for or won (before campaigning: the highest term seen).
    pub fn term(&self) -> Term {
        self.term
    }

    /// How many safekeepers an election or a commit needs.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The commit LSN (invalid before anything is committed in this term).
    pub fn commit_lsn(&self) -> Lsn {
        self.leader.as_ref().map_or(Lsn::INVALID, |l| l.commit_lsn)
    }

    /// Where this term's WAL starts, once elected.
    pub fn term_start_lsn(&self) -> Option<Lsn> {
        self.leader.as_ref().map(|l| l.term_start)
    }

    /// The proposer's term history, once elected.
    pub fn history(&self) -> Option<&TermHistory> {
        self.leader.as_ref().map(|l| &l.history)
    }

    /// The end of the WAL the proposer holds, once elected: where the compute's next byte
    /// goes.
    pub fn wal_end(&self) -> Option<Lsn> {
        self.leader.as_ref().map(|l| l.wal.end())
    }

    /// The highest flush LSN `sk` acknowledged in this term.
    pub fn acked_flush(&self, sk: SkId) -> Option<Lsn> {
        self.sks.get(sk.0).and_then(|s| s.acked_flush)
    }

    fn stopped(&self) -> bool {
        self.state == ProposerState::Stopped
    }

    fn send(&mut self, sk: usize, msg: ProposerMessage) {
        self.actions.push_back(Action::Send { sk: SkId(sk), msg });
    }

    fn fatal(&mut self, err: ProposerError) {
        warn!(ttid = %self.config.ttid, term = self.term, "proposer stops: {err}");
        self.state = ProposerState::Stopped;
        self.actions.push_back(Action::Fatal(err));
    }

    fn go_offline(&mut self, sk: usize) {
        let s = &mut self.sks[sk];
        s.phase = Phase::Offline {
            reconnect_at: self.now + s.backoff,
        };
        s.backoff = (s.backoff * 2).min(self.config.timeouts.reconnect_max);
    }

    /// Drops a connection that broke the protocol; it is reconnected later.
    fn drop_connection(&mut self, sk: usize, reason: String) {
        warn!(ttid = %self.config.ttid, sk = %SkId(sk), "disconnecting: {reason}");
        self.actions.push_back(Action::Disconnect {
            sk: SkId(sk),
            reason,
        });
        self.go_offline(sk);
    }

    /// The connection to `sk` (asked for by [`Action::Connect`]) is up: greet.
    pub fn connected(&mut self, sk: SkId) {
        if self.stopped()
            || !matches!(
                self.sks.get(sk.0).map(|s| &s.phase),
                Some(Phase::Connecting)
            )
        {
            return;
        }
        let greeting = ProposerGreeting {
            tenant_id: self.config.ttid.tenant_id,
            timeline_id: self.config.ttid.timeline_id,
            mconf: self.mconf.clone(),
            pg_version: self.config.server.pg_version,
            system_id: self.config.server.system_id,
            wal_seg_size: self.config.server.wal_seg_size,
        };
        let s = &mut self.sks[sk.0];
        s.phase = Phase::WaitGreeting;
        s.last_heard = self.now;
        self.send(sk.0, ProposerMessage::Greeting(greeting));
    }

    /// The connection to `sk` failed or closed; it is retried after a backoff.
    pub fn disconnected(&mut self, sk: SkId) {
        if self.stopped() || sk.0 >= self.sks.len() {
            return;
        }
        if !matches!(self.sks[sk.0].phase, Phase::Offline { .. }) {
            self.go_offline(sk.0);
        }
    }

    /// A message arrived from `sk` on its current connection.
    pub fn message_from(&mut self, sk: SkId, msg: AcceptorMessage) {
        if self.stopped() || sk.0 >= self.sks.len() {
            return;
        }
        let i = sk.0;
        if matches!(self.sks[i].phase, Phase::Offline { .. } | Phase::Connecting) {
            // From a connection we already gave up on.
            return;
        }
        self.sks[i].last_heard = self.now;
        match msg {
            AcceptorMessage::Greeting(g) => self.on_greeting(i, g),
            AcceptorMessage::VoteResponse(v) => self.on_vote(i, v),
            AcceptorMessage::AppendResponse(r) => self.on_append_response(i, r),
        }
    }

    fn on_greeting(&mut self, i: usize, g: AcceptorGreeting) {
        if !matches!(self.sks[i].phase, Phase::WaitGreeting) {
            return self.drop_connection(i, "unexpected second greeting".to_string());
        }
        self.sks[i].backoff = self.config.timeouts.reconnect_min;
        if let Some(first) = self
            .sks
            .iter()
            .position(|s| s.node_id == Some(g.node_id))
            .filter(|&j| j != i)
        {
            return self.fatal(ProposerError::DuplicateNodeId {
                node_id: g.node_id,
                first: SkId(first),
                second: SkId(i),
            });
        }
        if self.sks[i].node_id.is_some_and(|n| n != g.node_id) {
            // The address now reaches another node: its vote and acknowledgements were the
            // old node's and must not count for this one.
            warn!(ttid = %self.config.ttid, sk = %SkId(i), "node id changed from {:?} to {}; forgetting its vote", self.sks[i].node_id, g.node_id);
            self.sks[i].vote = None;
            self.sks[i].acked_flush = None;
        }
        self.sks[i].node_id = Some(g.node_id);
        if g.mconf.generation > self.mconf.generation {
            info!(ttid = %self.config.ttid, from = %self.mconf, to = %g.mconf, "adopting a newer membership configuration");
            self.mconf = g.mconf;
        }
        match self.state {
            ProposerState::CollectingTerms => {
                self.term = self.term.max(g.term);
                self.sks[i].phase = Phase::Greeted;
                let greeted = self
                    .sks
                    .iter()
                    .filter(|s| matches!(s.phase, Phase::Greeted))
                    .count();
                if greeted >= self.quorum {
                    self.start_campaign();
                }
            }
            ProposerState::Campaign | ProposerState::Elected => {
                if g.term > self.term {
                    return self.fatal(ProposerError::HigherTerm {
                        sk: SkId(i),
                        their_term: g.term,
                        our_term: self.term,
                        msg: "greeting",
                    });
                }
                self.request_vote(i);
            }
            ProposerState::Stopped => {}
        }
    }

    fn start_campaign(&mut self) {
        self.term += 1;
        self.state = ProposerState::Campaign;
        info!(ttid = %self.config.ttid, term = self.term, "campaigning");
        for i in 0..self.sks.len() {
            if matches!(self.sks[i].phase, Phase::Greeted) {
                self.request_vote(i);
            }
        }
    }

    fn request_vote(&mut self, i: usize) {
        let msg = VoteRequest {
            generation: self.mconf.generation,
            term: self.term,
        };
        self.sks[i].phase = Phase::WaitVote;
        self.sks[i].last_heard = self.now;
        self.send(i, ProposerMessage::VoteRequest(msg));
    }

    fn on_vote(&mut self, i: usize, v: VoteResponse) {
        if v.term > self.term {
            return self.fatal(ProposerError::HigherTerm {
                sk: SkId(i),
                their_term: v.term,
                our_term: self.term,
                msg: "vote response",
            });
        }
        if !matches!(self.sks[i].phase, Phase::WaitVote) {
            return self.drop_connection(i, "unexpected vote response".to_string());
        }
        if !v.vote_given {
            // Refused: the acceptor is already in our term. That is our own vote if it gave
            // it to us before (on an earlier connection), or if we are elected (then no one
            // else can be elected in this term, and the acceptor follows whoever sends it
            // ProposerElected in it: us).
            let ours = v.term == self.term
                && (self.sks[i].vote.is_some() || self.state == ProposerState::Elected);
            if !ours {
                return self.fatal(ProposerError::VoteRefused {
                    sk: SkId(i),
                    term: self.term,
                    their_term: v.term,
                });
            }
        }
        self.sks[i].vote = Some(VoteInfo {
            flush_lsn: v.flush_lsn,
            truncate_lsn: v.truncate_lsn,
            history: v.term_history,
        });
        match self.state {
            ProposerState::Campaign => {
                self.sks[i].phase = Phase::Voted;
                let votes = self.sks.iter().filter(|s| s.vote.is_some()).count();
                if votes >= self.quorum {
                    self.become_elected();
                }
            }
            ProposerState::Elected => {
                self.start_streaming(i);
                self.maybe_fetch();
                self.pump();
            }
            ProposerState::CollectingTerms | ProposerState::Stopped => {}
        }
    }

    fn become_elected(&mut self) {
        let votes = self
            .sks
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.vote.as_ref().map(|v| (i, v)));
        let chosen = if self.config.unsafe_rules.least_advanced_donor {
            votes.min_by_key(|(i, v)| (v.position(), *i))
        } else {
            rules::choose_donor(votes)
        };
        let Some((donor, dv)) = chosen else {
            return;
        };
        if !dv.flush_lsn.is_valid() && !self.config.bootstrap_lsn.is_valid() {
            return self.fatal(ProposerError::NoWal);
        }
        let (history, term_start) =
            rules::elected_history(dv, self.term, self.config.bootstrap_lsn);
        let truncate_lsn = self
            .sks
            .iter()
            .filter_map(|s| s.vote.as_ref().map(|v| v.truncate_lsn))
            .max()
            .unwrap_or(Lsn::INVALID)
            .min(term_start);
        info!(ttid = %self.config.ttid, term = self.term, %term_start, donor = %SkId(donor), %history, "elected");
        self.state = ProposerState::Elected;
        self.actions.push_back(Action::Elected(Election {
            term: self.term,
            term_start_lsn: term_start,
            history: history.clone(),
            donor: SkId(donor),
        }));
        self.leader = Some(Leader {
            history,
            term_start,
            donor: SkId(donor),
            truncate_lsn,
            commit_lsn: Lsn::INVALID,
            wal: WalBuffer::new(term_start),
            recovered: None,
            fetch: Fetch::Idle,
        });
        for i in 0..self.sks.len() {
            if matches!(self.sks[i].phase, Phase::Voted) {
                self.start_streaming(i);
            }
        }
        self.maybe_fetch();
        self.pump();
    }

    /// Sends ProposerElected to a voter and makes it active from its divergence point.
    fn start_streaming(&mut self, i: usize) {
        let (Some(leader), Some(vote)) = (&self.leader, &self.sks[i].vote) else {
            return;
        };
        let start = rules::start_streaming_at(&vote.history, vote.flush_lsn, &leader.history);
        let msg = ProposerElected {
            generation: self.mconf.generation,
            term: self.term,
            start_streaming_at: start,
            term_history: leader.history.clone(),
        };
        self.sks[i].phase = Phase::Active(Stream {
            window: self.config.max_inflight_bytes,
            flush_moved_at: self.now,
            next: start,
            flush: start,
            last_sent: self.now,
            commit_sent: Lsn::INVALID,
        });
        // ProposerElected has no reply. With nothing to stream yet, an empty append gets
        // the acceptor's flush LSN back at once, so the term start can commit without
        // waiting for the first heartbeat (what `walproposer sync` waits for).
        let beat = (start >= leader.wal.end())
            .then(|| heartbeat(self.mconf.generation, self.term, leader, start));
        self.sks[i].last_heard = self.now;
        self.send(i, ProposerMessage::Elected(msg));
        if let Some(beat) = beat {
            self.send(i, ProposerMessage::AppendRequest(beat));
        }
    }

    fn on_append_response(&mut self, i: usize, r: AppendResponse) {
        if r.term > self.term {
            return self.fatal(ProposerError::HigherTerm {
                sk: SkId(i),
                their_term: r.term,
                our_term: self.term,
                msg: "append response",
            });
        }
        let Phase::Active(stream) = &mut self.sks[i].phase else {
            // Only active connections were sent appends; anything else is stale.
            return;
        };
        if r.term < self.term {
            return self.drop_connection(
                i,
                format!(
                    "append response in term {} after accepting our term {}",
                    r.term, self.term
                ),
            );
        }
        if r.flush_lsn > stream.next {
            // It cannot have flushed in our term what we never sent it: a broken or
            // impersonating acceptor. Never let that release commits.
            let (flush, sent) = (r.flush_lsn, stream.next);
            return self.drop_connection(
                i,
                format!("acknowledged flush LSN {flush} beyond the {sent} it was sent"),
            );
        }
        if r.flush_lsn > stream.flush {
            stream.flush = r.flush_lsn;
            stream.flush_moved_at = self.now;
            if stream.next.0.saturating_sub(stream.flush.0) < self.config.max_inflight_bytes {
                stream.window = self.config.max_inflight_bytes;
            }
        }
        let acked = &mut self.sks[i].acked_flush;
        *acked = Some(acked.map_or(r.flush_lsn, |a| a.max(r.flush_lsn)));
        self.update_commit();
        self.pump();
    }

    fn update_commit(&mut self) {
        let acked: Vec<Option<Lsn>> = self.sks.iter().map(|s| s.acked_flush).collect();
        let Some(leader) = &mut self.leader else {
            return;
        };
        let candidate = rules::quorum_commit(
            &acked,
            self.quorum,
            leader.term_start,
            self.config.unsafe_rules.count_acks_before_term_start,
        );
        if let Some(c) = candidate
            && c > leader.commit_lsn
        {
            leader.commit_lsn = c;
            self.actions.push_back(Action::CommitAdvanced(c));
        }
        // Everyone has the WAL below the minimum acknowledged flush: it is no longer needed
        // for recovery (the truncate LSN, capped by commit) nor in memory.
        if let Some(horizon) = acked.iter().copied().collect::<Option<Vec<Lsn>>>() {
            let horizon = horizon.into_iter().min().unwrap_or(Lsn::INVALID);
            leader.truncate_lsn = leader.truncate_lsn.max(horizon.min(leader.commit_lsn));
            if horizon.0 >= leader.wal.start().0 + TRIM_BATCH {
                leader.wal.trim_to(horizon);
            }
        }
        // Over the memory limit, committed WAL goes even if an acceptor lacks it: it is on a
        // quorum, from where that acceptor reads it back, chunk by chunk, when it gets there
        // (also a connected one that is catching up: it is streamed from the recovered
        // chunks). So the buffer stays bounded however far anyone lags.
        if leader.wal.len() > self.config.max_buffer_bytes {
            let keep_from = Lsn(leader.wal.end().0 - self.config.max_buffer_bytes / 2);
            let target = keep_from.min(leader.commit_lsn);
            let batch = TRIM_BATCH.min(self.config.max_buffer_bytes / 4);
            if target.0 >= leader.wal.start().0 + batch {
                leader.wal.trim_to(target);
            }
        }
    }

    /// Sends every active safekeeper what it can take now: WAL from its next position, or
    /// an empty append when only the commit LSN moved.
    fn pump(&mut self) {
        let Some(leader) = &self.leader else {
            return;
        };
        let mut out = Vec::new();
        for (i, sk) in self.sks.iter_mut().enumerate() {
            let Phase::Active(s) = &mut sk.phase else {
                continue;
            };
            let mut sent = false;
            while s.next < leader.wal.end() && s.next.0.saturating_sub(s.flush.0) < s.window {
                let max = self.config.max_append_bytes;
                let chunk = if s.next < leader.wal.start() {
                    leader.recovered.as_ref().and_then(|r| r.get(s.next, max))
                } else {
                    leader.wal.get(s.next, max)
                };
                let Some(chunk) = chunk else {
                    break; // below the buffer and the recovered chunk: waits for a fetch
                };
                let end = Lsn(s.next.0 + chunk.len() as u64);
                out.push((
                    i,
                    append(self.mconf.generation, self.term, leader, s.next, end, chunk),
                ));
                s.next = end;
                sent = true;
            }
            if !sent && s.commit_sent < leader.commit_lsn {
                out.push((
                    i,
                    heartbeat(self.mconf.generation, self.term, leader, s.next),
                ));
                sent = true;
            }
            if sent {
                s.last_sent = self.now;
                s.commit_sent = leader.commit_lsn;
            }
        }
        for (i, msg) in out {
            self.send(i, ProposerMessage::AppendRequest(msg));
        }
    }

    /// Asks the donor for the next chunk of WAL that an active safekeeper needs and memory
    /// lacks: from the slowest such safekeeper's position, at most
    /// [`ProposerConfig::fetch_chunk_bytes`]. While the slowest one is being streamed from
    /// the recovered chunk nothing more is fetched; once no one needs it, it is dropped.
    fn maybe_fetch(&mut self) {
        let chunk = self.config.fetch_chunk_bytes();
        let Some(leader) = &mut self.leader else {
            return;
        };
        match leader.fetch {
            Fetch::InFlight { .. } => return,
            Fetch::RetryAt(t) if t > self.now => return,
            _ => {}
        }
        let needed = self
            .sks
            .iter()
            .filter_map(|s| match &s.phase {
                Phase::Active(st) if st.next < leader.wal.start() => Some(st.next),
                _ => None,
            })
            .min();
        let Some(start) = needed else {
            leader.fetch = Fetch::Idle;
            leader.recovered = None;
            return;
        };
        if leader.recovered.as_ref().is_some_and(|r| r.covers(start)) {
            return;
        }
        let end = Lsn(start.0.saturating_add(chunk)).min(leader.wal.start());
        leader.fetch = Fetch::InFlight { start, end };
        // Below the term start only the donor has our log. Above it, any acceptor that
        // acknowledged `end` in our term has exactly our WAL up to there (it continued our
        // history from its start point); prefer the most advanced, so an offline donor does
        // not stall recovery of WAL the buffer dropped.
        let source = if end > leader.term_start {
            self.sks
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s.phase, Phase::Active(_)))
                .filter_map(|(i, s)| s.acked_flush.filter(|a| *a >= end).map(|a| (a, i)))
                .max()
                .map_or(leader.donor, |(_, i)| SkId(i))
        } else {
            leader.donor
        };
        let req = FetchRequest {
            donor: source,
            start,
            end,
            history: leader.history.clone(),
        };
        self.actions.push_back(Action::FetchFromDonor(req));
    }

    /// The compute's WAL: `bytes` end at `up_to` and continue the WAL exactly where the
    /// previous call (or the term start) left off.
    pub fn wal_available(&mut self, up_to: Lsn, bytes: &[u8]) -> Result<(), InputError> {
        if self.stopped() {
            return Err(InputError::NotElected);
        }
        let Some(leader) = &mut self.leader else {
            return Err(InputError::NotElected);
        };
        let end = leader.wal.end();
        if end.0 + bytes.len() as u64 != up_to.0 {
            return Err(InputError::NotContiguous {
                up_to,
                len: bytes.len(),
                end,
            });
        }
        leader.wal.append(bytes);
        self.pump();
        Ok(())
    }

    /// The answer to [`Action::FetchFromDonor`]: the donor's WAL from `start` (kept as it
    /// is, without a copy, as the recovered chunk).
    pub fn donor_wal(&mut self, start: Lsn, bytes: Bytes) -> Result<(), InputError> {
        if self.stopped() {
            return Ok(());
        }
        let Some(leader) = &mut self.leader else {
            return Err(InputError::NotElected);
        };
        let want = match leader.fetch {
            Fetch::InFlight { start, end } => Some((start, end)),
            _ => None,
        };
        let ok = want.is_some_and(|(s, e)| s == start && e.0 == s.0 + bytes.len() as u64);
        if !ok {
            return Err(InputError::UnexpectedDonorWal {
                start,
                len: bytes.len(),
                want,
            });
        }
        leader.recovered = Some(RecoveredWal::new(start, bytes));
        leader.fetch = Fetch::Idle;
        self.pump();
        self.maybe_fetch();
        Ok(())
    }

    /// The fetch asked for could not be served (donor unreachable, or its log changed); it
    /// is retried after [`Timeouts::fetch_retry`].
    pub fn donor_fetch_failed(&mut self, reason: &str) {
        let retry_at = self.now + self.config.timeouts.fetch_retry;
        if let Some(leader) = &mut self.leader
            && matches!(leader.fetch, Fetch::InFlight { .. })
        {
            warn!(ttid = %self.config.ttid, donor = %leader.donor, "fetching donor WAL failed: {reason}");
            leader.fetch = Fetch::RetryAt(retry_at);
        }
    }

    /// Time passes: reconnects, keepalive timeouts, heartbeats, fetch retries.
    pub fn tick(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
        if self.stopped() {
            return;
        }
        let t = self.config.timeouts;
        for i in 0..self.sks.len() {
            match self.sks[i].phase {
                Phase::Offline { reconnect_at } if reconnect_at <= self.now => {
                    self.sks[i].phase = Phase::Connecting;
                    self.sks[i].last_heard = self.now;
                    self.actions.push_back(Action::Connect(SkId(i)));
                }
                Phase::Connecting | Phase::WaitGreeting | Phase::WaitVote | Phase::Active(_)
                    if self.now.saturating_duration_since(self.sks[i].last_heard)
                        >= t.keepalive_timeout =>
                {
                    let silent = self.now.saturating_duration_since(self.sks[i].last_heard);
                    self.drop_connection(i, format!("no answer for {silent:?}"));
                }
                _ => {}
            }
        }
        for sk in &mut self.sks {
            if let Phase::Active(s) = &mut sk.phase
                && s.next.0.saturating_sub(s.flush.0) >= s.window
                && s.window < self.config.max_buffer_bytes
                && self.now.saturating_duration_since(s.flush_moved_at) >= t.heartbeat_interval
            {
                // Acknowledgements wait for the end of a long record: let more through.
                s.window = (s.window * 2).min(self.config.max_buffer_bytes);
                s.flush_moved_at = self.now;
                info!(ttid = %self.config.ttid, window = s.window, flush = %s.flush, "in-flight window full without acknowledgements: widened");
            }
        }
        if let Some(leader) = &self.leader {
            let mut beats = Vec::new();
            for (i, sk) in self.sks.iter_mut().enumerate() {
                if let Phase::Active(s) = &mut sk.phase
                    && self.now.saturating_duration_since(s.last_sent) >= t.heartbeat_interval
                {
                    beats.push((
                        i,
                        heartbeat(self.mconf.generation, self.term, leader, s.next),
                    ));
                    s.last_sent = self.now;
                    s.commit_sent = leader.commit_lsn;
                }
            }
            for (i, msg) in beats {
                self.send(i, ProposerMessage::AppendRequest(msg));
            }
        }
        self.maybe_fetch();
        self.pump();
    }
}

fn append(
    generation: Generation,
    term: Term,
    leader: &Leader,
    begin: Lsn,
    end: Lsn,
    wal_data: Bytes,
) -> AppendRequest {
    AppendRequest {
        h: AppendRequestHeader {
            generation,
            term,
            begin_lsn: begin,
            end_lsn: end,
            commit_lsn: leader.commit_lsn,
            truncate_lsn: leader.truncate_lsn,
        },
        wal_data,
    }
}

fn heartbeat(generation: Generation, term: Term, leader: &Leader, at: Lsn) -> AppendRequest {
    append(generation, term, leader, at, at, Bytes::new())
}

#[cfg(test)]
mod tests;
