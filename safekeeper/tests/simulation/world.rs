//! One seeded run: acceptors, proposers, the network, faults, and the checker, advanced one
//! randomly chosen event at a time under virtual time.
//!
//! Each step picks one event by weight from those possible now (deliver a queued message,
//! take a step of an acceptor's flush task, let a compute write WAL, complete a connect or
//! a step of a donor fetch, let time pass, or a fault: acceptor power loss — now, or armed
//! to fall between two of its next file-system calls — and restart, a broken connection, a
//! partition, a lost or reordered message, a compute crash and restart), applies it, ticks
//! the proposers, carries out their actions, and checks every invariant
//! ([`super::checker`]). The first violation ends the run with a trace of the last steps.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use postgres_ffi::PgMajorVersion;
use postgres_ffi::decoder::WalDecoderConfig;
use postgres_ffi::v15::{RM_XLOG_ID, XLOG_NOOP};
use postgres_ffi::wal_generate::{WalWriterConfig, XLogRecordBuilder};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use safekeeper::acceptor::AcceptorError;
use safekeeper::control_file::{ControlFileStore, TimelinePersistentState};
use safekeeper::send_wal::StreamBound;
use safekeeper_api::membership::Configuration;
use safekeeper_api::proto::MAX_WAL_PAYLOAD;
use safekeeper_api::term::Term;
use safekeeper_api::{AcceptorMessage, ProposerMessage, ServerInfo};
use utils::crashsafe::Sync;
use utils::{Lsn, NodeId, TenantId, TenantTimelineId, TimelineId};
use walproposer::{
    Action, Election, FetchRequest, Proposer, ProposerConfig, SkId, Timeouts, UnsafeRules,
};

use super::checker::Checker;
use super::fs::SimFs;
use super::network::{Network, Pair};
use super::nodes::{AcceptorNode, Compute, FlushTask, ProposerNode};

#[path = "figure8.rs"]
pub mod figure8;

const SEG: u64 = 1024 * 1024;
const SYSID: u64 = 0x5EED;
const TRACE_LEN: usize = 60;
/// Full re-read of every acceptor's committed prefix this often (and at the end).
const RECHECK_EVERY: u64 = 250;

/// What a run is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Rules to break (negative controls).
    pub unsafe_rules: UnsafeRules,
    /// Print every step.
    pub verbose: bool,
    /// Every acceptor's disk lies about fsync once set up (negative control).
    pub lying_fsync: bool,
}

/// Counters of one run (summed over runs for the report).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Steps taken.
    pub steps: u64,
    /// Proposers elected.
    pub elections: u64,
    /// CommitAdvanced actions.
    pub commits: u64,
    /// Bytes of committed WAL at the end.
    pub committed_bytes: u64,
    /// Acceptor power losses (immediate ones and armed ones that fell).
    pub crashes: u64,
    /// Of those, the ones that fell between two file-system calls of an operation.
    pub crashes_mid_io: u64,
    /// File-system calls the acceptors made.
    pub fs_calls: u64,
    /// Proposers ended by a fatal error.
    pub fatals: u64,
    /// Computes crashed by the schedule.
    pub kills: u64,
    /// Connections broken (all causes).
    pub breaks: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost.
    pub lost: u64,
    /// Truncations and crash losses observed (write LSN went down).
    pub cuts: u64,
    /// Donor fetches served.
    pub fetches: u64,
    /// Acceptor errors, by kind.
    pub acceptor_errors: BTreeMap<String, u64>,
}

impl Stats {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.elections += o.elections;
        self.commits += o.commits;
        self.committed_bytes += o.committed_bytes;
        self.crashes += o.crashes;
        self.crashes_mid_io += o.crashes_mid_io;
        self.fs_calls += o.fs_calls;
        self.fatals += o.fatals;
        self.kills += o.kills;
        self.breaks += o.breaks;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.cuts += o.cuts;
        self.fetches += o.fetches;
        for (k, v) in &o.acceptor_errors {
            *self.acceptor_errors.entry(k.clone()).or_default() += v;
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct RunResult {
    /// The seed.
    pub seed: u64,
    /// Its counters.
    pub stats: Stats,
    /// The first violation: what, at which step, and the steps before it.
    pub violation: Option<(u64, String, Vec<String>)>,
    /// Something about the world itself broke (not an invariant).
    pub harness_error: Option<String>,
}

#[derive(Debug, Clone)]
enum Pending {
    Connect {
        p: usize,
        attempt: u64,
        a: usize,
    },
    /// A donor fetch: opening the stream, then (with its bound) reading.
    Fetch {
        p: usize,
        inc: u32,
        req: FetchRequest,
        /// The stream's bound and the donor's run it was opened in.
        bound: Option<(StreamBound, u64)>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Deliver(Pair, bool),
    Lose(Pair, bool),
    Reorder(Pair, bool),
    Flush(usize),
    FlushSync(usize),
    FlushDone(usize),
    Persist(usize),
    Compute(usize),
    Pending(usize),
    Idle,
    Crash(usize),
    Restart(usize),
    Break(Pair),
    Partition(Option<usize>, usize),
    Kill(usize),
    Start(usize),
}

/// Parameters drawn from the seed.
#[derive(Debug, Clone, Copy)]
struct Params {
    acceptors: usize,
    proposers: usize,
    steps: u64,
    wal_budget: u64,
    max_append: usize,
    loss: f64,
    fault: f64,
}

/// The simulated world of one seed.
pub struct World {
    rng: StdRng,
    params: Params,
    opts: RunOptions,
    epoch: Instant,
    now_ms: u64,
    step: u64,
    base: Lsn,
    proposer_config: ProposerConfig,
    acceptors: Vec<AcceptorNode>,
    proposers: Vec<ProposerNode>,
    net: Network,
    pending: Vec<Pending>,
    /// The connect attempt each pair waits for (an abandoned attempt completes into
    /// nothing).
    attempts: BTreeMap<Pair, u64>,
    next_attempt: u64,
    checker: Checker,
    elected_terms: BTreeMap<Term, (usize, u32)>,
    wal_written: u64,
    stats: Stats,
    trace: VecDeque<String>,
    violation: Option<String>,
}

fn writer_config() -> WalWriterConfig {
    WalWriterConfig {
        version: PgMajorVersion::V15,
        seg_size: SEG,
        system_id: SYSID,
        timeline: 1,
    }
}

fn decoder_config() -> WalDecoderConfig {
    WalDecoderConfig {
        version: PgMajorVersion::V15,
        seg_size: SEG,
        system_id: Some(SYSID),
    }
}

fn describe_proposer_msg(m: &ProposerMessage) -> String {
    match m {
        ProposerMessage::Greeting(_) => "Greeting".to_string(),
        ProposerMessage::VoteRequest(v) => format!("VoteRequest(term {})", v.term),
        ProposerMessage::Elected(e) => format!(
            "Elected(term {}, start {}, history {})",
            e.term, e.start_streaming_at, e.term_history
        ),
        ProposerMessage::AppendRequest(a) => format!(
            "Append(term {}, [{}, {}), commit {})",
            a.h.term, a.h.begin_lsn, a.h.end_lsn, a.h.commit_lsn
        ),
    }
}

fn describe_acceptor_msg(m: &AcceptorMessage) -> String {
    match m {
        AcceptorMessage::Greeting(g) => format!("Greeting(term {})", g.term),
        AcceptorMessage::VoteResponse(v) => format!(
            "Vote(term {}, given {}, flush {}, history {})",
            v.term, v.vote_given, v.flush_lsn, v.term_history
        ),
        AcceptorMessage::AppendResponse(r) => format!(
            "AppendResponse(term {}, flush {}, commit {})",
            r.term, r.flush_lsn, r.commit_lsn
        ),
    }
}

/// The kind of an acceptor error (its variant name), for the statistics.
fn error_kind(e: &impl std::fmt::Debug) -> String {
    let s = format!("{e:?}");
    let end = s.find([' ', '(', '{']).unwrap_or(s.len());
    let kind = &s[..end];
    if kind == "Storage" {
        // One level deeper: which storage error.
        let inner = &s[end + 1..];
        let iend = inner.find([' ', '(', '{']).unwrap_or(inner.len());
        return format!("Storage::{}", &inner[..iend]);
    }
    kind.to_string()
}

impl World {
    /// Sets up seed `seed`'s world under `root` (a fresh directory).
    pub fn new(seed: u64, root: &Path, opts: RunOptions) -> Result<World, String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let params = Params {
            acceptors: [3, 3, 4, 5][rng.random_range(0..4)],
            proposers: rng.random_range(2..=3),
            steps: rng.random_range(1500..=2500),
            wal_budget: rng.random_range(32..=192) * 1024,
            max_append: [256, 1000, 4096, 16384, MAX_WAL_PAYLOAD][rng.random_range(0..5)],
            loss: [0.0, 0.02, 0.1][rng.random_range(0..3)],
            fault: [0.5, 1.0, 2.0, 4.0][rng.random_range(0..4)],
        };
        Self::with_params(rng, params, root, opts)
    }

    /// A world with the given parameters (a scripted scenario's).
    fn with_params(
        mut rng: StdRng,
        params: Params,
        root: &Path,
        opts: RunOptions,
    ) -> Result<World, String> {
        // The timeline starts a few pages before the end of segment 1, so WAL crosses
        // into segment 2 in some runs.
        let page = Lsn(2 * SEG - rng.random_range(1..=24u64) * 8192);
        let base = Lsn(page.0 + postgres_ffi::xlog_page::page_header_size(page, SEG) as u64);
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let ttid = TenantTimelineId::new(TenantId::from_bytes(id), TimelineId::from_bytes(id));
        let server = ServerInfo {
            pg_version: 150007,
            system_id: SYSID,
            wal_seg_size: SEG as u32,
        };
        let mut acceptors = Vec::new();
        for i in 0..params.acceptors {
            let dir = root.join(format!("sk{i}"));
            let fs = SimFs::default();
            fs.mkdir(&dir);
            let state = TimelinePersistentState::new(
                ttid,
                Configuration::empty(),
                server,
                SystemTime::UNIX_EPOCH,
            );
            let mut node = AcceptorNode {
                dir,
                fs,
                node_id: NodeId(i as u64 + 1),
                acc: None,
                starts: 0,
                flush: None,
                down: None,
            };
            ControlFileStore::create_in(node.vfs(), &node.dir, state, Sync::Yes)
                .map_err(|e| format!("create timeline {}: {e}", node.dir.display()))?;
            if opts.lying_fsync {
                node.fs.lie_about_fsync();
            }
            node.open()?;
            acceptors.push(node);
        }
        let mut proposer_config = ProposerConfig::new(ttid, params.acceptors, server, base);
        proposer_config.timeouts = Timeouts {
            heartbeat_interval: Duration::from_millis(100),
            keepalive_timeout: Duration::from_millis(800),
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(200),
            fetch_retry: Duration::from_millis(30),
        };
        proposer_config.max_append_bytes = params.max_append;
        proposer_config.max_inflight_bytes = (params.max_append as u64).max(32 * 1024);
        let proposer_config = proposer_config.with_unsafe_rules(opts.unsafe_rules);
        let proposers = (0..params.proposers)
            .map(|_| ProposerNode {
                inc: 0,
                core: None,
                compute: None,
                restart_at_ms: rng.random_range(0..300),
                commit: Lsn::INVALID,
            })
            .collect();
        Ok(World {
            rng,
            params,
            opts,
            epoch: Instant::now(),
            now_ms: 0,
            step: 0,
            base,
            proposer_config,
            checker: Checker::new(base, params.acceptors),
            acceptors,
            proposers,
            net: Network::default(),
            pending: Vec::new(),
            attempts: BTreeMap::new(),
            next_attempt: 0,
            elected_terms: BTreeMap::new(),
            wal_written: 0,
            stats: Stats::default(),
            trace: VecDeque::new(),
            violation: None,
        })
    }

    /// Runs every step (or until the first violation) and the final checks.
    pub fn run(mut self, seed: u64) -> RunResult {
        let mut harness_error = None;
        while self.step < self.params.steps && self.violation.is_none() {
            if let Err(e) = self.step() {
                harness_error = Some(format!("step {}: {e}", self.step));
                break;
            }
        }
        if self.violation.is_none() && harness_error.is_none() {
            for i in 0..self.acceptors.len() {
                if let Err(e) = self.checker.recheck_prefix(i, &self.acceptors[i]) {
                    self.violation = Some(e);
                    break;
                }
            }
        }
        self.stats.steps = self.step;
        self.stats.fs_calls = self.acceptors.iter().map(|a| a.fs.calls()).sum();
        self.stats.cuts = self.checker.cuts;
        self.stats.committed_bytes = self.checker.committed_end().0 - self.base.0;
        RunResult {
            seed,
            violation: self
                .violation
                .take()
                .map(|v| (self.step, v, self.trace.iter().cloned().collect())),
            stats: self.stats,
            harness_error,
        }
    }

    fn now(&self) -> Instant {
        self.epoch + Duration::from_millis(self.now_ms)
    }

    fn log(&mut self, line: String) {
        let line = format!("[{} t={}ms] {line}", self.step, self.now_ms);
        if self.opts.verbose {
            eprintln!("{line}");
        }
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.log(format!("VIOLATION: {what}"));
            self.violation = Some(what);
        }
    }

    fn step(&mut self) -> Result<(), String> {
        self.step += 1;
        self.now_ms += self.rng.random_range(0..=2);
        self.net.heal(self.now_ms);
        let ev = self.choose();
        self.apply(ev)?;
        self.reap_dead()?;
        let now = self.now();
        for p in 0..self.proposers.len() {
            if let Some(core) = &mut self.proposers[p].core {
                core.tick(now);
                self.drain(p)?;
            }
        }
        self.check()
    }

    /// Applies the power loss of every acceptor whose armed crash fell.
    fn reap_dead(&mut self) -> Result<(), String> {
        for a in 0..self.acceptors.len() {
            self.died(a)?;
        }
        Ok(())
    }

    /// Whether acceptor `a`'s machine died during its last operation; if so the power loss
    /// is applied now (the caller must drop whatever that operation produced).
    fn died(&mut self, a: usize) -> Result<bool, String> {
        if !self.acceptors[a].fs.is_dead() {
            return Ok(false);
        }
        self.stats.crashes_mid_io += 1;
        self.power_loss(a, "an armed crash fell between two file-system calls")?;
        Ok(true)
    }

    fn choose(&mut self) -> Ev {
        let f = self.params.fault;
        let mut c: Vec<(f64, Ev)> = Vec::new();
        for (&pair, link) in &self.net.links {
            if self.net.is_blocked(pair, self.now_ms) {
                continue;
            }
            for (to_acc, q) in [(true, &link.to_acc), (false, &link.to_prop)] {
                if !q.is_empty() {
                    c.push((10.0, Ev::Deliver(pair, to_acc)));
                    c.push((10.0 * self.params.loss, Ev::Lose(pair, to_acc)));
                }
                if q.len() >= 2 {
                    c.push((0.005 * f, Ev::Reorder(pair, to_acc)));
                }
            }
            c.push((0.01 * f, Ev::Break(pair)));
        }
        for (a, node) in self.acceptors.iter().enumerate() {
            match (&node.acc, &node.down) {
                (Some(_), _) => {
                    if let Some(ev) = self.flush_step(a) {
                        c.push((4.0, ev));
                    }
                    c.push((0.2, Ev::Persist(a)));
                    c.push((0.012 * f, Ev::Crash(a)));
                }
                (None, Some(d)) if d.restart_at_ms <= self.now_ms => c.push((3.0, Ev::Restart(a))),
                _ => {}
            }
            c.push((0.004 * f, Ev::Partition(None, a)));
            for p in 0..self.proposers.len() {
                c.push((0.002 * f, Ev::Partition(Some(p), a)));
            }
        }
        for (p, node) in self.proposers.iter().enumerate() {
            if node.core.is_some() {
                if node.compute.is_some() && self.wal_written < self.params.wal_budget {
                    c.push((3.0, Ev::Compute(p)));
                }
                c.push((0.004 * f, Ev::Kill(p)));
            } else if node.restart_at_ms <= self.now_ms {
                c.push((3.0, Ev::Start(p)));
            }
        }
        for i in 0..self.pending.len() {
            c.push((6.0, Ev::Pending(i)));
        }
        c.push((1.0, Ev::Idle));
        let total: f64 = c.iter().map(|(w, _)| w).sum();
        let mut x = self.rng.random::<f64>() * total;
        for (w, ev) in &c {
            if x < *w {
                return *ev;
            }
            x -= w;
        }
        Ev::Idle
    }

    /// The next step of acceptor `a`'s flush task, if it has one to take: a ticket when
    /// appends await an answer or written WAL is unflushed, then the fdatasync, then the
    /// completion.
    fn flush_step(&self, a: usize) -> Option<Ev> {
        let node = &self.acceptors[a];
        let acc = node.acc.as_ref()?;
        match &node.flush {
            None => {
                let asked = self
                    .net
                    .links
                    .iter()
                    .any(|(&(_, la), l)| la == a && l.need_flush);
                (asked || acc.wal().has_unflushed()).then_some(Ev::Flush(a))
            }
            Some(t) if t.synced.is_none() => Some(Ev::FlushSync(a)),
            Some(_) => Some(Ev::FlushDone(a)),
        }
    }

    fn apply(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Deliver(pair, true) => self.deliver_to_acceptor(pair)?,
            Ev::Deliver(pair, false) => self.deliver_to_proposer(pair)?,
            Ev::Lose(pair, to_acc) => {
                if let Some(l) = self.net.links.get_mut(&pair) {
                    l.queue(to_acc).pop_front();
                    self.stats.lost += 1;
                    self.log(format!(
                        "lost a message on p{}-a{} (to_acc {to_acc})",
                        pair.0, pair.1
                    ));
                }
            }
            Ev::Reorder(pair, to_acc) => {
                if let Some(l) = self.net.links.get_mut(&pair) {
                    let q = l.queue(to_acc);
                    let i = self.rng.random_range(0..q.len().min(3) - 1);
                    q.swap(i, i + 1);
                    self.log(format!("reordered messages on p{}-a{}", pair.0, pair.1));
                }
            }
            Ev::Flush(a) => self.begin_flush(a)?,
            Ev::FlushSync(a) => self.flush_sync(a),
            Ev::FlushDone(a) => self.complete_flush(a)?,
            Ev::Persist(a) => {
                if let Some(acc) = &mut self.acceptors[a].acc
                    && let Err(e) = acc.persist_positions_if_needed(true)
                {
                    self.count_error(error_kind(&e));
                    self.log(format!("a{a} failed to persist its positions: {e}"));
                }
            }
            Ev::Compute(p) => self.compute_writes(p)?,
            Ev::Pending(i) => {
                let ev = self.pending.swap_remove(i);
                self.complete(ev)?;
            }
            Ev::Idle => {
                self.now_ms += self.rng.random_range(10..=150);
            }
            Ev::Crash(a) => self.crash(a)?,
            Ev::Restart(a) => {
                let opened = self.acceptors[a].open();
                if self.died(a)? {
                    return Ok(());
                }
                if let Err(e) = opened {
                    // Not a harness problem: the system under test cannot come back.
                    self.violate(format!("a{a} cannot restart: {e}"));
                    return Ok(());
                }
                let acc = self.acceptors[a]
                    .acc
                    .as_ref()
                    .map(|x| (x.flush_lsn(), x.commit_lsn()));
                self.log(format!("a{a} restarted: flush/commit {acc:?}"));
            }
            Ev::Break(pair) => {
                self.log(format!("connection p{}-a{} breaks", pair.0, pair.1));
                self.break_link(pair, true)?;
            }
            Ev::Partition(p, a) => {
                let heal = self.now_ms + self.rng.random_range(100..=1500);
                let ps: Vec<usize> = match p {
                    Some(p) => vec![p],
                    None => (0..self.proposers.len()).collect(),
                };
                for p in ps {
                    self.net.blocked.insert((p, a), heal);
                }
                self.log(format!("partition {p:?} from a{a} until {heal}ms"));
            }
            Ev::Kill(p) => {
                self.stats.kills += 1;
                self.log(format!("compute p{p} crashes"));
                self.stop_proposer(p)?;
            }
            Ev::Start(p) => self.start_proposer(p)?,
        }
        Ok(())
    }

    fn count_error(&mut self, kind: String) {
        *self.stats.acceptor_errors.entry(kind).or_default() += 1;
    }

    fn deliver_to_acceptor(&mut self, pair: Pair) -> Result<(), String> {
        let (p, a) = pair;
        let Some(bytes) = self
            .net
            .links
            .get_mut(&pair)
            .and_then(|l| l.to_acc.pop_front())
        else {
            return Ok(());
        };
        self.stats.delivered += 1;
        let msg = ProposerMessage::decode_bytes(&bytes)
            .map_err(|e| format!("a{a} cannot decode a proposer message: {e}"))?;
        let Some(acc) = &mut self.acceptors[a].acc else {
            return Err(format!("delivery to down acceptor a{a}"));
        };
        let result = acc.process_msg(&msg);
        let desc = describe_proposer_msg(&msg);
        if self.died(a)? {
            self.log(format!("p{p} -> a{a}: {desc} => the machine died"));
            return Ok(());
        }
        match result {
            Ok(reply) => {
                if matches!(msg, ProposerMessage::AppendRequest(_))
                    && reply.is_none()
                    && let Some(l) = self.net.links.get_mut(&pair)
                {
                    l.need_flush = true;
                }
                let rdesc = reply.as_ref().map(describe_acceptor_msg);
                self.log(format!("p{p} -> a{a}: {desc} => {rdesc:?}"));
                if let Some(reply) = reply {
                    let mut buf = BytesMut::new();
                    reply
                        .encode(&mut buf)
                        .map_err(|e| format!("encode reply: {e}"))?;
                    if let Some(l) = self.net.links.get_mut(&pair) {
                        l.to_prop.push_back(buf.freeze());
                    }
                }
            }
            Err(e) => {
                self.count_error(error_kind(&e));
                self.log(format!("p{p} -> a{a}: {desc} => error: {e}"));
                // The server answers an error and closes the connection.
                self.break_link(pair, false)?;
            }
        }
        Ok(())
    }

    fn deliver_to_proposer(&mut self, pair: Pair) -> Result<(), String> {
        let (p, a) = pair;
        let Some(bytes) = self
            .net
            .links
            .get_mut(&pair)
            .and_then(|l| l.to_prop.pop_front())
        else {
            return Ok(());
        };
        self.stats.delivered += 1;
        let msg = AcceptorMessage::decode(&bytes)
            .map_err(|e| format!("p{p} cannot decode an acceptor message: {e}"))?;
        self.log(format!("a{a} -> p{p}: {}", describe_acceptor_msg(&msg)));
        if let Some(core) = &mut self.proposers[p].core {
            core.message_from(SkId(a), msg);
            self.drain(p)?;
        }
        Ok(())
    }

    /// The flush task takes a ticket (under the acceptor, like the production flush
    /// thread) for everything written so far, to answer every connection that sent
    /// appends since the last flush.
    fn begin_flush(&mut self, a: usize) -> Result<(), String> {
        let Some(acc) = &mut self.acceptors[a].acc else {
            return Ok(());
        };
        let ticket = acc.begin_flush();
        if self.died(a)? {
            return Ok(());
        }
        match ticket {
            Ok(ticket) => {
                let mut answers = Vec::new();
                for (&(p, la), l) in self.net.links.iter_mut() {
                    if la == a && l.need_flush {
                        l.need_flush = false;
                        answers.push(p);
                    }
                }
                let upto = ticket.as_ref().map(|t| t.upto());
                self.log(format!(
                    "a{a} flush task: ticket up to {upto:?} for {answers:?}"
                ));
                self.acceptors[a].flush = Some(FlushTask {
                    ticket,
                    synced: None,
                    answers,
                });
            }
            Err(e) => self.flush_failed(a, &e)?,
        }
        Ok(())
    }

    /// A failed flush ends every connection of the acceptor (as a failed fdatasync ends the
    /// server's).
    fn flush_failed(&mut self, a: usize, e: &AcceptorError) -> Result<(), String> {
        self.count_error(error_kind(e));
        self.log(format!("a{a} flush failed: {e}"));
        for p in self.net.proposers_of(a) {
            self.break_link((p, a), false)?;
        }
        Ok(())
    }

    /// The flush task's fdatasync, outside the acceptor (appends, votes and truncations
    /// may come in between).
    fn flush_sync(&mut self, a: usize) {
        let Some(task) = &mut self.acceptors[a].flush else {
            return;
        };
        let synced = match &task.ticket {
            Some(t) => t.sync(),
            None => Ok(()),
        };
        task.synced = Some(synced);
        self.log(format!("a{a} flush task: fdatasync done"));
    }

    /// The flush task hands the outcome back and answers.
    fn complete_flush(&mut self, a: usize) -> Result<(), String> {
        let node = &mut self.acceptors[a];
        let (Some(acc), Some(task)) = (&mut node.acc, node.flush.take()) else {
            return Ok(());
        };
        let synced = task.synced.unwrap_or(Ok(()));
        let result = acc.complete_flush(task.ticket, synced);
        if self.died(a)? {
            return Ok(());
        }
        match result {
            Ok(resp) => {
                let msg = AcceptorMessage::AppendResponse(resp);
                let mut buf = BytesMut::new();
                msg.encode(&mut buf).map_err(|e| format!("encode: {e}"))?;
                let bytes = buf.freeze();
                let mut to = Vec::new();
                for p in task.answers {
                    if let Some(l) = self.net.links.get_mut(&(p, a)) {
                        l.to_prop.push_back(bytes.clone());
                        to.push(p);
                    }
                }
                self.log(format!(
                    "a{a} flushes: {} to {to:?}",
                    describe_acceptor_msg(&msg)
                ));
            }
            Err(e) => self.flush_failed(a, &e)?,
        }
        Ok(())
    }

    /// All three steps of a flush at once, when no flush is in progress (a server that
    /// sees its connection close flushes what it received before its threads exit).
    fn flush_now(&mut self, a: usize) -> Result<(), String> {
        if self.acceptors[a].acc.is_none() || self.acceptors[a].flush.is_some() {
            return Ok(());
        }
        self.begin_flush(a)?;
        self.flush_sync(a);
        self.complete_flush(a)
    }

    /// Destroys a connection and tells the proposer. `server_notices`: the acceptor's
    /// server sees the disconnect and flushes what it received, as the real one does.
    fn break_link(&mut self, pair: Pair, server_notices: bool) -> Result<(), String> {
        if !self.net.break_link(pair) {
            return Ok(());
        }
        self.stats.breaks += 1;
        let (p, a) = pair;
        if server_notices && self.rng.random_bool(0.5) {
            self.flush_now(a)?;
        }
        if let Some(core) = &mut self.proposers[p].core {
            core.disconnected(SkId(a));
            self.drain(p)?;
        }
        Ok(())
    }

    /// A scheduled fault: power loss now, or armed to fall during one of the acceptor's
    /// next few file-system calls (mid-operation).
    fn crash(&mut self, a: usize) -> Result<(), String> {
        if self.rng.random_bool(0.5) {
            let n = self.rng.random_range(0..12);
            self.acceptors[a].fs.arm_crash(n);
            self.log(format!("a{a}: power loss armed in {n} file-system calls"));
            return Ok(());
        }
        self.power_loss(a, "scheduled")
    }

    /// Acceptor `a` loses power: its connections break, its process is gone, and its files
    /// keep only what was durable (and what partial writeback let through).
    fn power_loss(&mut self, a: usize, why: &str) -> Result<(), String> {
        self.stats.crashes += 1;
        for p in self.net.proposers_of(a) {
            self.break_link((p, a), false)?;
        }
        let restart_at = self.now_ms + self.rng.random_range(20..=800);
        let before = self.acceptors[a]
            .acc
            .as_ref()
            .map(|x| (x.flush_lsn(), x.write_lsn(), x.commit_lsn()));
        let mode = self.acceptors[a].power_loss(&mut self.rng, restart_at);
        self.log(format!(
            "a{a} loses power ({why}): (flush, write, commit) {before:?}, unsynced writes: {mode:?}; restarts at {restart_at}ms"
        ));
        Ok(())
    }

    fn start_proposer(&mut self, p: usize) -> Result<(), String> {
        let now = self.now();
        let node = &mut self.proposers[p];
        node.inc += 1;
        node.commit = Lsn::INVALID;
        node.compute = None;
        let core = Proposer::new(self.proposer_config.clone(), now)
            .map_err(|e| format!("proposer config: {e}"))?;
        node.core = Some(core);
        let inc = node.inc;
        self.log(format!("p{p} starts (incarnation {inc})"));
        self.drain(p)
    }

    /// Ends the proposer's incarnation: its connections close; it restarts later.
    fn stop_proposer(&mut self, p: usize) -> Result<(), String> {
        self.attempts.retain(|&(ap, _), _| ap != p);
        let node = &mut self.proposers[p];
        node.core = None;
        node.compute = None;
        node.restart_at_ms = self.now_ms + self.rng.random_range(50..=1500);
        for a in self.net.acceptors_of(p) {
            self.break_link((p, a), true)?;
        }
        Ok(())
    }

    fn drain(&mut self, p: usize) -> Result<(), String> {
        loop {
            let Some(core) = &mut self.proposers[p].core else {
                return Ok(());
            };
            let Some(action) = core.poll_action() else {
                return Ok(());
            };
            self.act(p, action)?;
        }
    }

    fn act(&mut self, p: usize, action: Action) -> Result<(), String> {
        let inc = self.proposers[p].inc;
        match action {
            Action::Connect(SkId(a)) => {
                self.net.break_link((p, a));
                self.next_attempt += 1;
                let attempt = self.next_attempt;
                self.attempts.insert((p, a), attempt);
                self.pending.push(Pending::Connect { p, attempt, a });
            }
            Action::Disconnect {
                sk: SkId(a),
                reason,
            } => {
                self.log(format!("p{p} drops a{a}: {reason}"));
                self.attempts.remove(&(p, a));
                if self.net.break_link((p, a)) {
                    self.stats.breaks += 1;
                }
            }
            Action::Send { sk: SkId(a), msg } => {
                let mut buf = BytesMut::new();
                msg.encode(&mut buf).map_err(|e| format!("encode: {e}"))?;
                if let Some(l) = self.net.links.get_mut(&(p, a)) {
                    l.to_acc.push_back(buf.freeze());
                }
            }
            Action::Elected(e) => self.on_elected(p, e)?,
            Action::FetchFromDonor(req) => self.pending.push(Pending::Fetch {
                p,
                inc,
                req,
                bound: None,
            }),
            Action::CommitAdvanced(lsn) => self.on_commit(p, lsn)?,
            Action::Fatal(e) => {
                self.stats.fatals += 1;
                self.log(format!("p{p} stops: {e}"));
                self.stop_proposer(p)?;
            }
        }
        Ok(())
    }

    fn on_elected(&mut self, p: usize, e: Election) -> Result<(), String> {
        self.stats.elections += 1;
        let inc = self.proposers[p].inc;
        self.log(format!(
            "p{p}#{inc} ELECTED in term {} at {} (donor a{}, history {})",
            e.term, e.term_start_lsn, e.donor.0, e.history
        ));
        if let Some(&(q, qinc)) = self.elected_terms.get(&e.term) {
            self.violate(format!(
                "election safety: term {} won by p{q}#{qinc} and by p{p}#{inc}",
                e.term
            ));
            return Ok(());
        }
        self.elected_terms.insert(e.term, (p, inc));
        // The compute starts from the donor's log (its "basebackup"), read with the same
        // check as a donor fetch.
        let donor = &self.acceptors[e.donor.0];
        let prefix = match donor
            .open_term_read(e.term)
            .and_then(|b| donor.read_term_bound(&b, self.base, e.term_start_lsn))
        {
            Ok(b) => b,
            Err(reason) => {
                self.log(format!("p{p}'s compute cannot start: {reason}"));
                return self.stop_proposer(p);
            }
        };
        match Compute::new(e.term, self.base, prefix, writer_config(), decoder_config()) {
            Ok(c) => self.proposers[p].compute = Some(c),
            Err(reason) => self.violate(format!("donor a{} of p{p}: {reason}", e.donor.0)),
        }
        Ok(())
    }

    fn on_commit(&mut self, p: usize, lsn: Lsn) -> Result<(), String> {
        self.stats.commits += 1;
        let node = &self.proposers[p];
        let Some(c) = &node.compute else {
            self.violate(format!("p{p} committed {lsn} before its compute started"));
            return Ok(());
        };
        if lsn > c.end() || lsn < node.commit {
            self.violate(format!(
                "p{p} committed {lsn}: its WAL ends at {}, its previous commit was {}",
                c.end(),
                node.commit
            ));
            return Ok(());
        }
        // Everything below its previous commit was compared then.
        let from = node.commit.max(self.base);
        let bytes = c.log(from, lsn);
        self.proposers[p].commit = lsn;
        self.log(format!("p{p} commits {lsn}"));
        if let Err(v) = self.checker.merge(&format!("proposer p{p}"), from, &bytes) {
            self.violate(v);
        }
        Ok(())
    }

    fn compute_writes(&mut self, p: usize) -> Result<(), String> {
        let n = self.rng.random_range(1..=4);
        let mut records = Vec::new();
        for _ in 0..n {
            let size = match self.rng.random_range(0..100) {
                0..70 => self.rng.random_range(8..200),
                70..95 => self.rng.random_range(200..1500),
                _ => self.rng.random_range(3000..12000),
            };
            let mut data = vec![0u8; size];
            self.rng.fill_bytes(&mut data);
            records.push(data);
        }
        self.emit_records(p, records)
    }

    /// Proposer `p`'s compute writes `records` (NOOP records with these payloads) and hands
    /// them to its proposer.
    fn emit_records(&mut self, p: usize, records: Vec<Vec<u8>>) -> Result<(), String> {
        let n = records.len();
        let node = &mut self.proposers[p];
        let (Some(c), Some(core)) = (&mut node.compute, &mut node.core) else {
            return Ok(());
        };
        for data in records {
            let (_, end) = c
                .writer
                .append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&data));
            c.writer.zero_until(end);
        }
        let bytes = &c.writer.bytes()[c.emitted..];
        let up_to = c.writer.position();
        self.wal_written += bytes.len() as u64;
        core.wal_available(up_to, bytes)
            .map_err(|e| format!("p{p} refused its compute's WAL: {e}"))?;
        c.emitted = c.writer.bytes().len();
        let term = c.term;
        self.log(format!(
            "p{p}'s compute writes {n} records up to {up_to} in term {term}"
        ));
        self.drain(p)
    }

    fn complete(&mut self, ev: Pending) -> Result<(), String> {
        match ev {
            Pending::Connect { p, attempt, a } => {
                if self.attempts.get(&(p, a)) != Some(&attempt) {
                    return Ok(());
                }
                self.attempts.remove(&(p, a));
                let ok =
                    self.acceptors[a].acc.is_some() && !self.net.is_blocked((p, a), self.now_ms);
                self.log(format!(
                    "p{p} connects to a{a}: {}",
                    if ok { "ok" } else { "failed" }
                ));
                if ok {
                    self.net.connect((p, a));
                }
                if let Some(core) = &mut self.proposers[p].core {
                    if ok {
                        core.connected(SkId(a));
                    } else {
                        core.disconnected(SkId(a));
                    }
                }
                self.drain(p)
            }
            Pending::Fetch { p, inc, req, bound } => {
                if self.proposers[p].inc != inc || self.proposers[p].core.is_none() {
                    return Ok(());
                }
                let d = req.donor.0;
                let term = req.history.last().map(|t| t.term).unwrap_or_default();
                let read = match bound {
                    None => match self.acceptors[d].open_term_read(term) {
                        Ok(bound) => {
                            // The stream is open; its WAL comes in a later step.
                            let run = self.acceptors[d].starts;
                            self.pending.push(Pending::Fetch {
                                p,
                                inc,
                                req,
                                bound: Some((bound, run)),
                            });
                            return Ok(());
                        }
                        Err(e) => Err(e),
                    },
                    Some((_, run)) if run != self.acceptors[d].starts => {
                        Err("the stream broke: the donor restarted".to_string())
                    }
                    Some((b, _)) => self.acceptors[d].read_term_bound(&b, req.start, req.end),
                };
                match read {
                    Ok(bytes) => {
                        self.stats.fetches += 1;
                        if let Some(c) = &self.proposers[p].compute
                            && c.log(req.start, req.end) != bytes
                        {
                            self.violate(format!(
                                "donor a{d} served [{}, {}) differing from p{p}'s log",
                                req.start, req.end
                            ));
                        }
                        self.log(format!(
                            "p{p} fetched [{}, {}) from a{d}",
                            req.start, req.end
                        ));
                        if let Some(core) = &mut self.proposers[p].core
                            && let Err(e) = core.donor_wal(req.start, bytes.into())
                        {
                            return Err(format!("p{p} refused the donor WAL it asked for: {e}"));
                        }
                    }
                    Err(reason) => {
                        self.log(format!("p{p}'s fetch from a{d} fails: {reason}"));
                        if let Some(core) = &mut self.proposers[p].core {
                            core.donor_fetch_failed(&reason);
                        }
                    }
                }
                self.drain(p)
            }
        }
    }

    fn check(&mut self) -> Result<(), String> {
        if self.violation.is_some() {
            return Ok(());
        }
        for i in 0..self.acceptors.len() {
            if let Err(v) = self.checker.check_running(i, &self.acceptors[i]) {
                self.violate(v);
                return Ok(());
            }
        }
        if let Err(v) = self.checker.check_quorum() {
            self.violate(v);
            return Ok(());
        }
        if self.step.is_multiple_of(RECHECK_EVERY) {
            for i in 0..self.acceptors.len() {
                if let Err(v) = self.checker.recheck_prefix(i, &self.acceptors[i]) {
                    self.violate(v);
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The directory for one seed's files.
pub fn seed_dir(root: &Path, seed: u64) -> PathBuf {
    root.join(format!("seed-{seed}"))
}
