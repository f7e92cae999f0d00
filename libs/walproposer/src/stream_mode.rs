//! `walproposer stream`: the sidecar of a running compute.
//!
//! 1. Connect to the local Postgres as a physical replication client and make sure the
//!    slot exists (Postgres then keeps every segment we have not confirmed).
//! 2. Win an election. **No forks**: propose only if the term starts exactly where this
//!    compute started (`--start-lsn`), or the donor's last term is one this compute won
//!    before (recorded in the won-terms file: the safekeepers' WAL is this compute's own,
//!    e.g. after a sidecar restart). Anything else means someone else's WAL follows ours
//!    (or ours is stale), and continuing would splice two histories: exit with an error.
//! 3. Record the term as won (durably), then stream from the term start: every byte
//!    Postgres sends is proposed; status updates report write = received and flush = apply
//!    = the quorum commit LSN, which is what releases COMMITs waiting for synchronous
//!    replication. Keepalives are answered at once and a status update goes out every
//!    second even without a quorum, so `wal_sender_timeout` never drops us.
//! 4. Memory is bounded: when the WAL not yet committed reaches the proposer's buffer
//!    limit, we stop reading from Postgres (its walsender waits; commits wait anyway).
//! 5. SIGTERM: stop at once (what is not committed is not acknowledged, so nothing is
//!    lost). Postgres ending replication (a clean shutdown) ends us after the last WAL is
//!    committed, or after a grace period.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pq_proto::replication::ReplicationMessage;
use safekeeper_api::ServerInfo;
use safekeeper_api::term::TermHistory;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utils::Lsn;
use utils::crashsafe::Sync;

use crate::compute::{Compute, Conninfo, PgWriter, write_standby_status};
use crate::driver::{Driver, LogPosition, Notice, SafekeepersConf, read_positions};
use crate::metrics;
use crate::mode::ModeError;
use crate::won_terms::WonTerms;
use crate::{Election, ProposerConfig};

/// Largest replication message accepted from Postgres (it sends at most ~128 KiB).
const MAX_PG_MESSAGE: usize = 16 * 1024 * 1024;
/// How often a status update is sent even if nothing changed.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How often progress is logged.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// After Postgres ends replication, how long to wait for the rest to be committed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Parameters of the sidecar.
#[derive(Debug, Clone)]
pub struct StreamConf {
    /// How to reach the local Postgres.
    pub pg: Conninfo,
    /// Our `application_name` (what `synchronous_standby_names` names).
    pub application_name: String,
    /// The physical slot.
    pub slot: String,
    /// The LSN the compute started from.
    pub start_lsn: Lsn,
    /// Where the won-terms file lives (next to the compute's data directory).
    pub state_dir: PathBuf,
    /// Give up if not elected within this.
    pub election_timeout: Duration,
    /// Most uncommitted WAL held in memory.
    pub max_buffer_bytes: u64,
    /// Whether to fsync the won-terms file (tests may skip it).
    pub sync: Sync,
}

/// Runs the sidecar until SIGTERM (`Ok`) or a fatal error.
pub async fn run(
    sks: SafekeepersConf,
    conf: StreamConf,
    cancel: CancellationToken,
) -> Result<(), ModeError> {
    let Some(mut compute) = connect_compute(&conf, &cancel).await? else {
        return Ok(());
    };
    let info = compute.info;
    info!(
        system_id = info.system_id,
        pg_version = info.pg_version,
        flush_lsn = %info.flush_lsn,
        "connected to Postgres"
    );
    if compute.ensure_slot(&conf.slot).await? {
        info!(slot = %conf.slot, "created the replication slot");
    }
    let mut won = WonTerms::load(&conf.state_dir, sks.ttid, conf.sync)?;
    precheck_no_fork(&read_positions(&sks).await, conf.start_lsn, &won)?;
    let server = ServerInfo {
        pg_version: info.pg_version,
        system_id: info.system_id,
        wal_seg_size: info.wal_seg_size,
    };
    let n = sks.addrs.len();
    let mut pconf = ProposerConfig::new(sks.ttid, n, server, conf.start_lsn);
    pconf.max_buffer_bytes = conf.max_buffer_bytes.max(pconf.max_inflight_bytes);
    let mut driver = Driver::new(sks, pconf)?;

    let election = loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            ev = driver.next_event() => driver.handle(ev)?,
        }
        driver.take_notices();
        driver.check_election_deadline(conf.election_timeout)?;
        if let Some(e) = driver.election() {
            break e.clone();
        }
    };
    check_no_fork(&election, conf.start_lsn, &won)?;
    won.record(election.term)?;
    info!(term = election.term, won = ?won.terms(), "recorded the term as won; streaming");

    let (mut pg_r, mut pg_w) = compute
        .start_streaming(&conf.slot, election.term_start_lsn)
        .await?;
    let mut received = election.term_start_lsn;
    let mut commit = driver.proposer().commit_lsn();
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_progress = Instant::now();
    let mut pg_done: Option<Instant> = None;
    loop {
        let uncommitted = received
            .0
            .saturating_sub(commit.max(election.term_start_lsn).0);
        let read_pg = pg_done.is_none() && uncommitted < conf.max_buffer_bytes;
        let mut report = false;
        tokio::select! {
            _ = cancel.cancelled() => {
                info!(%received, %commit, "stopping on request");
                return Ok(());
            }
            ev = driver.next_event() => driver.handle(ev)?,
            data = pg_r.read_copy_data(MAX_PG_MESSAGE), if read_pg => {
                let data = match data {
                    Ok(Some(d)) => d,
                    Ok(None) => {
                        info!(%received, %commit, "Postgres ended replication; waiting for the rest to be committed");
                        pg_done = Some(Instant::now());
                        continue;
                    }
                    Err(e) => return Err(ModeError::PostgresGone(e.to_string())),
                };
                match ReplicationMessage::decode(&data)
                    .map_err(|e| ModeError::PostgresGone(format!("bad replication message: {e}")))?
                {
                    ReplicationMessage::XLogData(x) => {
                        if x.wal_start != received {
                            return Err(ModeError::WalGap { got: x.wal_start, expected: received });
                        }
                        let end = Lsn(received.0 + x.data.len() as u64);
                        driver.wal_available(end, &x.data)?;
                        received = end;
                        metrics::WAL_RECEIVED_BYTES.inc_by(x.data.len() as u64);
                        metrics::RECEIVED_LSN.set(metrics::lsn_value(received));
                    }
                    ReplicationMessage::Keepalive(k) => report = k.reply_requested,
                }
            }
            _ = status.tick() => report = true,
        }
        for notice in driver.take_notices() {
            if let Notice::Commit(c) = notice {
                commit = c;
                report = true;
            }
        }
        if report && pg_done.is_none() {
            send_status(&mut pg_w, commit).await?;
        }
        if let Some(since) = pg_done {
            if commit >= received {
                info!(%commit, "everything Postgres sent is committed; exiting");
                return Ok(());
            }
            if since.elapsed() >= SHUTDOWN_GRACE {
                warn!(%received, %commit, "Postgres ended replication and the rest was not committed in time; exiting");
                return Err(ModeError::PostgresGone(
                    "WAL after its shutdown was not committed".into(),
                ));
            }
        }
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            info!(term = election.term, %received, commit_lsn = %commit, "progress");
        }
    }
}

/// Connects to Postgres, retrying while it is not up yet (refused, or starting up) for up
/// to the election timeout: the sidecar may be started right after Postgres. `None` if
/// cancelled meanwhile.
async fn connect_compute(
    conf: &StreamConf,
    cancel: &CancellationToken,
) -> Result<Option<Compute>, ModeError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match Compute::connect(&conf.pg, &conf.application_name).await {
            Ok(c) => return Ok(Some(c)),
            Err(e) if e.is_not_ready() && started.elapsed() < conf.election_timeout => {
                info!("Postgres is not ready yet ({e}); retrying in {delay:?}");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The no-fork rule applied *before* campaigning, to what a quorum of safekeepers reports
/// without voting: a stale compute must not bump the term (that alone would depose the
/// healthy compute on its next append) only to find out afterwards that it may not write.
/// The most advanced position among a quorum of answers is what the election would pick at
/// least; if fewer than a quorum answer, the election decides (and [`check_no_fork`] still
/// guards it).
pub fn precheck_no_fork(
    positions: &[Option<LogPosition>],
    start_lsn: Lsn,
    won: &WonTerms,
) -> Result<(), ModeError> {
    let answers: Vec<LogPosition> = positions.iter().flatten().copied().collect();
    if answers.len() < crate::rules::quorum(positions.len()) {
        return Ok(());
    }
    let Some(best) = answers
        .iter()
        .max_by_key(|p| (p.last_log_term, p.flush_lsn))
    else {
        return Ok(());
    };
    let flush = best.flush_lsn;
    // Whose bytes we would continue: a term won at the flush LSN that wrote nothing (a
    // stale compute that then refused) is nobody's WAL and must not block us.
    let term = best.last_byte_term.unwrap_or(0);
    if flush == start_lsn || best.last_byte_term.is_some_and(|t| won.contains(t)) {
        return Ok(());
    }
    info!(last_byte_term = term, %flush, %start_lsn, "the safekeepers' log continues someone else's: not campaigning");
    Err(ModeError::WouldFork {
        term_start: flush,
        donor_term: term,
        start_lsn,
        won: won.terms().to_vec(),
    })
}

/// The no-fork rule (see the module docs).
pub fn check_no_fork(election: &Election, start_lsn: Lsn, won: &WonTerms) -> Result<(), ModeError> {
    // The donor's history is ours without our own (last) entry; the bytes we continue are
    // those of its last term that starts *below* our term start (a term that starts there
    // was won and wrote nothing).
    let entries = &election.history.0;
    let donor = TermHistory(entries[..entries.len().saturating_sub(1)].to_vec());
    let donor_term = donor.last_byte_term(election.term_start_lsn);
    let ours = election.term_start_lsn == start_lsn || donor_term.is_some_and(|t| won.contains(t));
    if ours {
        return Ok(());
    }
    Err(ModeError::WouldFork {
        term_start: election.term_start_lsn,
        donor_term: donor_term.unwrap_or(0),
        start_lsn,
        won: won.terms().to_vec(),
    })
}

/// Reports `commit` (what a quorum has flushed) as written, flushed and applied: a session
/// with `synchronous_commit = remote_write` must not be released while its WAL exists only
/// in this process's memory.
async fn send_status(w: &mut PgWriter, commit: Lsn) -> Result<(), ModeError> {
    write_standby_status(w, commit, commit);
    w.flush()
        .await
        .map_err(|e| ModeError::PostgresGone(format!("sending a status update: {e}")))
}

#[cfg(test)]
mod tests {
    use safekeeper_api::term::TermLsn;
    use utils::TenantTimelineId;

    use super::*;
    use crate::SkId;

    fn election(history: &[(u64, u64)]) -> Election {
        let h = TermHistory(
            history
                .iter()
                .map(|&(t, l)| TermLsn::new(t, Lsn(l)))
                .collect(),
        );
        let last = h.last().unwrap();
        Election {
            term: last.term,
            term_start_lsn: last.lsn,
            history: h,
            donor: SkId(0),
        }
    }

    #[test]
    fn no_fork_rule() {
        let dir = tempfile::tempdir().unwrap();
        let mut won = WonTerms::load(dir.path(), TenantTimelineId::generate(), Sync::No).unwrap();
        // Started exactly at the term start: fine, whoever wrote before.
        check_no_fork(&election(&[(1, 100), (3, 500), (4, 900)]), Lsn(900), &won).unwrap();
        // Someone else's term (3) continued past our start: refused.
        let e =
            check_no_fork(&election(&[(1, 100), (3, 500), (4, 900)]), Lsn(100), &won).unwrap_err();
        assert!(e.to_string().contains("refusing to propose"), "{e}");
        // Our own term: a restarted sidecar continues.
        won.record(3).unwrap();
        check_no_fork(&election(&[(1, 100), (3, 500), (4, 900)]), Lsn(100), &won).unwrap();
        // A brand-new timeline (no donor history) elsewhere than our start: refused.
        assert!(check_no_fork(&election(&[(1, 100)]), Lsn(50), &won).is_err());

        // A term won at the flush LSN that wrote nothing (a stale compute that refused)
        // does not make the WAL below it someone else's: term 3 (ours) wrote the last byte.
        check_no_fork(
            &election(&[(1, 100), (3, 500), (5, 900), (6, 900)]),
            Lsn(100),
            &won,
        )
        .unwrap();
        // But a term that did write after ours is someone else's.
        assert!(
            check_no_fork(
                &election(&[(1, 100), (3, 500), (5, 700), (6, 900)]),
                Lsn(100),
                &won
            )
            .is_err()
        );

        // Before campaigning: the most advanced of a quorum of answers decides.
        let p = |t: u64, l: u64| {
            Some(LogPosition {
                last_log_term: t,
                flush_lsn: Lsn(l),
                last_byte_term: Some(t),
            })
        };
        precheck_no_fork(&[p(4, 900), p(4, 900), None], Lsn(900), &won).unwrap();
        precheck_no_fork(&[p(3, 950), p(2, 700), None], Lsn(100), &won).unwrap(); // our term 3
        let e = precheck_no_fork(&[p(5, 990), p(3, 950), p(2, 700)], Lsn(100), &won).unwrap_err();
        assert!(e.to_string().contains("refusing to propose"), "{e}");
        // Too few answers to know: left to the election.
        precheck_no_fork(&[p(5, 990), None, None], Lsn(100), &won).unwrap();
        // Term 5 was won at 990 and wrote nothing; the last byte is term 3's (ours).
        let empty_term = Some(LogPosition {
            last_log_term: 5,
            flush_lsn: Lsn(990),
            last_byte_term: Some(3),
        });
        precheck_no_fork(&[empty_term, empty_term, p(3, 990)], Lsn(100), &won).unwrap();
    }
}
