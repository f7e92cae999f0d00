//! The tokio driver of a [`Proposer`]: real connections to the safekeepers, a clock, and
//! recovery reads. It carries out the proposer's [`Action`]s and turns network events into
//! proposer events; everything protocol-related stays in the sans-I/O core.
//!
//! The driver also keeps what the binary's modes need beyond the protocol: the last error
//! of every safekeeper (for a clear "no quorum" message), which safekeepers refused
//! permanently (wrong token, unknown timeline), and the commit LSN each safekeeper reported
//! (`walproposer sync` waits until every reachable one has the term start).

mod connection;
mod fetch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use safekeeper_api::AcceptorMessage;
use tokio::sync::mpsc;
use tracing::{info, warn};
use utils::{Lsn, TenantTimelineId};

pub use connection::{ConnFailure, DEFAULT_CONNECT_TIMEOUT};

use crate::metrics;
use crate::{
    Action, ConfigError, Election, InputError, Proposer, ProposerConfig, ProposerError, SkId,
};

/// How often the proposer's clock ticks (timers are in the hundreds of milliseconds).
const TICK: Duration = Duration::from_millis(50);

/// Where the safekeepers are and how to talk to them.
#[derive(Debug, Clone)]
pub struct SafekeepersConf {
    /// `host:port` of each safekeeper's libpq port; `SkId(i)` is `addrs[i]`.
    pub addrs: Vec<String>,
    /// The timeline.
    pub ttid: TenantTimelineId,
    /// A JWT, sent as the password.
    pub auth_token: Option<String>,
    /// Whether the greeting may create the timeline on a safekeeper that lacks it.
    pub allow_timeline_creation: bool,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

/// Why the driver stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The proposer configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The proposer stopped (another proposer took over).
    #[error(transparent)]
    Proposer(#[from] ProposerError),
    /// Two entries of `--safekeepers` reach one node: it would count twice in quorums.
    #[error(
        "--safekeepers lists node {node_id} twice, as {first} and {second}: each safekeeper must appear once, or a minority could commit"
    )]
    DuplicateSafekeeper {
        /// The node id both greeted with.
        node_id: utils::NodeId,
        /// The first address.
        first: String,
        /// The second address.
        second: String,
    },
    /// The compute's WAL did not fit the proposer's (a gap, or WAL before election).
    #[error("the proposer refused WAL: {0}")]
    Input(#[from] InputError),
    /// No quorum could be reached in time.
    #[error("no quorum of safekeepers ({quorum} of {total}) within {waited:?}: {details}")]
    NoQuorum {
        /// The quorum size.
        quorum: usize,
        /// How many are configured.
        total: usize,
        /// How long we tried.
        waited: Duration,
        /// Every safekeeper's state or last error.
        details: String,
    },
    /// So many safekeepers refused for good that no quorum is possible.
    #[error("{refused} of {total} safekeepers refused (a quorum needs {quorum}): {details}")]
    Refused {
        /// How many refused.
        refused: usize,
        /// How many are configured.
        total: usize,
        /// The quorum size.
        quorum: usize,
        /// Every safekeeper's state or last error.
        details: String,
    },
}

/// Something the binary's mode reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// The election was won.
    Elected(Election),
    /// The quorum commit LSN advanced.
    Commit(Lsn),
}

/// What the background tasks report.
#[derive(Debug)]
pub enum Event {
    /// A connection is up (START_WAL_PUSH accepted).
    Connected {
        /// Which safekeeper.
        sk: SkId,
        /// Which connection.
        id: u64,
    },
    /// A message arrived.
    Message {
        /// From which safekeeper.
        sk: SkId,
        /// On which connection.
        id: u64,
        /// The message.
        msg: AcceptorMessage,
    },
    /// A connection failed or ended.
    Closed {
        /// Which safekeeper.
        sk: SkId,
        /// Which connection.
        id: u64,
        /// Why.
        failure: ConnFailure,
    },
    /// A recovery read finished.
    Fetched {
        /// Which fetch.
        id: u64,
        /// Where the bytes start.
        start: Lsn,
        /// The bytes, or why not.
        result: Result<bytes::Bytes, String>,
    },
    /// The clock.
    Tick,
}

#[derive(Debug, Default)]
struct SkStatus {
    conn: Option<connection::ConnHandle>,
    connected: bool,
    last_error: Option<String>,
    permanent_error: Option<String>,
    /// The commit LSN it reported in an AppendResponse of our term on this connection.
    reported_commit: Option<Lsn>,
}

/// Where a safekeeper's log ends, as `SHOW strata_timeline_position` reports it without
/// any vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// The term of its last history entry at or below `flush_lsn`: what elections compare.
    pub last_log_term: safekeeper_api::term::Term,
    /// The end of its log.
    pub flush_lsn: Lsn,
    /// The term that wrote its last byte (`None`: no bytes); differs from `last_log_term`
    /// when a term was won at `flush_lsn` and wrote nothing.
    pub last_byte_term: Option<safekeeper_api::term::Term>,
}

/// Asks every safekeeper for its [`LogPosition`] (in parallel, each within the connect
/// timeout); `None` for those that do not answer, do not have the timeline, or do not
/// support the query (warned about once per address: see [`position_unsupported`]).
pub async fn read_positions(conf: &SafekeepersConf) -> Vec<Option<LogPosition>> {
    let conf = Arc::new(conf.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, addr) in conf.addrs.iter().enumerate() {
        let (conf, addr) = (Arc::clone(&conf), addr.clone());
        tasks.spawn(async move {
            let read = async {
                let mut c = connection::open(&conf, &addr, "walproposer-precheck")
                    .await
                    .ok()?;
                let r = match c.simple_query("SHOW strata_timeline_position").await {
                    Ok(r) => r,
                    Err(e) => {
                        position_unsupported(&addr, &e.to_string());
                        return None;
                    }
                };
                let text = r.rows.first()?.first()?.clone()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                let term = v.get("last_log_term")?.as_u64()?;
                let flush: Lsn = v.get("flush_lsn")?.as_str()?.parse().ok()?;
                // Older safekeepers do not report it: then the last entry is the best guess.
                let last_byte_term = match v.get("last_byte_term") {
                    None => Some(term),
                    Some(t) if t.is_null() => None,
                    Some(t) => Some(t.as_u64()?),
                };
                // Term 0 at 0/0: the safekeeper has no such timeline yet, so no log.
                (term != 0 || flush.is_valid()).then_some(LogPosition {
                    last_log_term: term,
                    flush_lsn: flush,
                    last_byte_term,
                })
            };
            (
                i,
                tokio::time::timeout(conf.connect_timeout, read)
                    .await
                    .ok()
                    .flatten(),
            )
        });
    }
    let mut out = vec![None; conf.addrs.len()];
    while let Some(r) = tasks.join_next().await {
        if let Ok((i, pos)) = r {
            out[i] = pos;
        }
    }
    out
}

/// A reachable safekeeper that answered `SHOW strata_timeline_position` with an error
/// (Neon's safekeeper does not know it): its log is left out of the pre-campaign no-fork
/// check, which must not happen silently. Warns once per address per process and counts
/// every occurrence.
fn position_unsupported(addr: &str, err: &str) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    metrics::POSITION_CHECK_SKIPPED.inc();
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if !warned.iter().any(|a| a == addr) {
        warned.push(addr.to_string());
        warn!(
            "safekeeper {addr} does not answer SHOW strata_timeline_position ({err}): the \
             pre-campaign no-fork check cannot see its log; the post-election check still \
             applies (see docs/safekeeper_protocol.md, mixed clusters)"
        );
    }
}

/// The proposer with its connections. See the module docs.
pub struct Driver {
    proposer: Proposer,
    conf: Arc<SafekeepersConf>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    tick: tokio::time::Interval,
    sks: Vec<SkStatus>,
    next_id: u64,
    fetch: Option<fetch::FetchHandle>,
    notices: Vec<Notice>,
    started: Instant,
    election: Option<Election>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("state", &self.proposer.state())
            .field("term", &self.proposer.term())
            .field("safekeepers", &self.describe())
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver that starts connecting at once. `config.safekeepers` must equal the number
    /// of addresses.
    pub fn new(conf: SafekeepersConf, mut config: ProposerConfig) -> Result<Driver, DriverError> {
        config.safekeepers = conf.addrs.len();
        config.ttid = conf.ttid;
        let now = Instant::now();
        let proposer = Proposer::new(config, now)?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let n = conf.addrs.len();
        let mut driver = Driver {
            proposer,
            conf: Arc::new(conf),
            events_tx,
            events_rx,
            tick,
            sks: (0..n).map(|_| SkStatus::default()).collect(),
            next_id: 0,
            fetch: None,
            notices: Vec::new(),
            started: now,
            election: None,
        };
        driver.run_actions()?;
        Ok(driver)
    }

    /// The proposer (read-only).
    pub fn proposer(&self) -> &Proposer {
        &self.proposer
    }

    /// The won election, if any.
    pub fn election(&self) -> Option<&Election> {
        self.election.as_ref()
    }

    /// The next event. Cancel-safe: use it in `select!`, then [`Driver::handle`] it.
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            ev = self.events_rx.recv() => ev.unwrap_or(Event::Tick),
            _ = self.tick.tick() => Event::Tick,
        }
    }

    /// Feeds one event to the proposer and carries out what follows.
    pub fn handle(&mut self, ev: Event) -> Result<(), DriverError> {
        match ev {
            Event::Connected { sk, id } => {
                if self.current(sk, id) {
                    self.sks[sk.0].connected = true;
                    self.proposer.connected(sk);
                    self.update_connected();
                }
            }
            Event::Message { sk, id, msg } => {
                if self.current(sk, id) {
                    if let AcceptorMessage::AppendResponse(r) = &msg
                        && r.term == self.proposer.term()
                    {
                        let st = &mut self.sks[sk.0];
                        st.reported_commit =
                            Some(st.reported_commit.unwrap_or_default().max(r.commit_lsn));
                    }
                    self.proposer.message_from(sk, msg);
                }
            }
            Event::Closed { sk, id, failure } => {
                if self.current(sk, id) {
                    let st = &mut self.sks[sk.0];
                    if st.connected || st.last_error.as_deref() != Some(&failure.message) {
                        warn!(%sk, addr = %self.conf.addrs[sk.0], "safekeeper connection ended: {}", failure.message);
                    }
                    st.conn = None;
                    st.connected = false;
                    st.reported_commit = None;
                    st.last_error = Some(failure.message.clone());
                    st.permanent_error = failure.permanent.then_some(failure.message);
                    self.proposer.disconnected(sk);
                    metrics::SAFEKEEPER_DISCONNECTS.inc();
                    self.update_connected();
                }
            }
            Event::Fetched { id, start, result } => {
                if self.fetch.as_ref().is_some_and(|f| f.id == id) {
                    self.fetch = None;
                    let ok = match result {
                        Ok(bytes) => match self.proposer.donor_wal(start, bytes) {
                            Ok(()) => true,
                            Err(e) => {
                                self.proposer.donor_fetch_failed(&e.to_string());
                                false
                            }
                        },
                        Err(e) => {
                            self.proposer.donor_fetch_failed(&e);
                            false
                        }
                    };
                    metrics::RECOVERY_FETCHES
                        .with_label_values(&[if ok { "ok" } else { "error" }])
                        .inc();
                }
            }
            Event::Tick => {}
        }
        self.proposer.tick(Instant::now());
        self.run_actions()?;
        metrics::TERM.set(i64::try_from(self.proposer.term()).unwrap_or(i64::MAX));
        self.check_refusals()
    }

    fn update_connected(&self) {
        let n = self.sks.iter().filter(|s| s.connected).count();
        metrics::SAFEKEEPERS_CONNECTED.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The compute's WAL (see [`Proposer::wal_available`]).
    ///
    /// WAL the proposer refuses (not contiguous, or not elected) is an error, never dropped:
    /// a gap in what was proposed could not be told apart later.
    pub fn wal_available(&mut self, up_to: Lsn, bytes: &[u8]) -> Result<(), DriverError> {
        self.proposer.wal_available(up_to, bytes)?;
        self.run_actions()
    }

    /// Notices since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Fails with [`DriverError::NoQuorum`] if not elected after `timeout`.
    pub fn check_election_deadline(&self, timeout: Duration) -> Result<(), DriverError> {
        if self.election.is_none() && self.started.elapsed() >= timeout {
            return Err(DriverError::NoQuorum {
                quorum: self.proposer.quorum(),
                total: self.sks.len(),
                waited: self.started.elapsed(),
                details: self.describe(),
            });
        }
        Ok(())
    }

    /// Whether every safekeeper we are connected to reported a commit LSN of at least
    /// `lsn` in our term. Those not connected are not reachable and do not count.
    pub fn reachable_committed(&self, lsn: Lsn) -> bool {
        self.sks
            .iter()
            .all(|s| !s.connected || s.reported_commit.is_some_and(|c| c >= lsn))
    }

    /// Safekeepers connected but not yet reporting `lsn` committed, for logs.
    pub fn lagging(&self, lsn: Lsn) -> Vec<String> {
        self.sks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.connected && s.reported_commit.is_none_or(|c| c < lsn))
            .map(|(i, _)| self.conf.addrs[i].clone())
            .collect()
    }

    /// One line per safekeeper: where it stands, or its last error.
    pub fn describe(&self) -> String {
        self.sks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let addr = &self.conf.addrs[i];
                match (&s.connected, &s.last_error) {
                    (true, _) => format!("{addr}: connected"),
                    (false, Some(e)) => format!("{addr}: {e}"),
                    (false, None) => format!("{addr}: not connected yet"),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn current(&self, sk: SkId, id: u64) -> bool {
        self.sks
            .get(sk.0)
            .and_then(|s| s.conn.as_ref())
            .is_some_and(|c| c.id == id)
    }

    fn check_refusals(&self) -> Result<(), DriverError> {
        if self.election.is_some() {
            return Ok(());
        }
        let refused = self
            .sks
            .iter()
            .filter(|s| s.permanent_error.is_some())
            .count();
        let quorum = self.proposer.quorum();
        if refused > self.sks.len() - quorum {
            return Err(DriverError::Refused {
                refused,
                total: self.sks.len(),
                quorum,
                details: self.describe(),
            });
        }
        Ok(())
    }

    fn run_actions(&mut self) -> Result<(), DriverError> {
        while let Some(action) = self.proposer.poll_action() {
            match action {
                Action::Connect(sk) => {
                    self.next_id += 1;
                    let handle = connection::spawn(
                        sk,
                        self.next_id,
                        Arc::clone(&self.conf),
                        self.events_tx.clone(),
                    );
                    let st = &mut self.sks[sk.0];
                    st.conn = Some(handle);
                    st.connected = false;
                    st.reported_commit = None;
                }
                Action::Disconnect { sk, reason } => {
                    let st = &mut self.sks[sk.0];
                    st.conn = None;
                    st.connected = false;
                    st.reported_commit = None;
                    st.last_error = Some(reason);
                }
                Action::Send { sk, msg } => {
                    if let Some(c) = &self.sks[sk.0].conn {
                        c.send(msg);
                    }
                }
                Action::Elected(e) => {
                    info!(
                        term = e.term,
                        term_start = %e.term_start_lsn,
                        donor = %self.conf.addrs[e.donor.0],
                        history = %e.history,
                        "elected"
                    );
                    self.election = Some(e.clone());
                    self.notices.push(Notice::Elected(e));
                }
                Action::FetchFromDonor(req) => {
                    info!(
                        from = %self.conf.addrs[req.donor.0],
                        start = %req.start,
                        end = %req.end,
                        "recovering WAL for lagging safekeepers"
                    );
                    self.next_id += 1;
                    self.fetch = Some(fetch::spawn(
                        self.next_id,
                        req,
                        Arc::clone(&self.conf),
                        self.events_tx.clone(),
                    ));
                }
                Action::CommitAdvanced(lsn) => {
                    metrics::COMMIT_LSN.set(metrics::lsn_value(lsn));
                    self.notices.push(Notice::Commit(lsn));
                }
                Action::Fatal(ProposerError::DuplicateNodeId {
                    node_id,
                    first,
                    second,
                }) => {
                    self.shutdown();
                    return Err(DriverError::DuplicateSafekeeper {
                        node_id,
                        first: self.conf.addrs[first.0].clone(),
                        second: self.conf.addrs[second.0].clone(),
                    });
                }
                Action::Fatal(e) => {
                    self.shutdown();
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Closes every connection.
    pub fn shutdown(&mut self) {
        self.fetch = None;
        for s in &mut self.sks {
            s.conn = None;
            s.connected = false;
        }
    }
}
