//! `walproposer sync`: settle the safekeepers on one WAL end before a compute starts.
//!
//! Runs an election and recovery, then waits until (1) a quorum has flushed the term start
//! E (the commit LSN reaches E) and (2) every safekeeper we can reach reports E committed:
//! walsenders serve only committed WAL, so without (2) the pageserver and standbys might
//! never see E. A safekeeper that stays connected but does not confirm within the settle
//! time is logged and ignored: a quorum has E, which is what durability needs.
//!
//! The result is printed by the binary as one `X/YYYYYYYY` line; the compute starts there.

use std::time::{Duration, Instant};

use safekeeper_api::ServerInfo;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utils::Lsn;

use crate::driver::{Driver, DriverError, SafekeepersConf};
use crate::mode::ModeError;
use crate::{ProposerConfig, ProposerError};

/// Parameters of a sync run.
#[derive(Debug, Clone)]
pub struct SyncConf {
    /// Where the first term starts if no safekeeper has any WAL for the timeline.
    pub bootstrap_lsn: Option<Lsn>,
    /// The compute's server facts (system id 0 = unknown: the safekeepers' is kept).
    pub server: ServerInfo,
    /// Give up if not elected within this.
    pub election_timeout: Duration,
    /// Give up if not done within this (election, recovery, settling).
    pub total_timeout: Duration,
    /// After a quorum has E, how long to wait for the other reachable safekeepers.
    pub settle_timeout: Duration,
}

/// Runs sync mode to completion; returns E.
pub async fn run(
    sks: SafekeepersConf,
    conf: SyncConf,
    cancel: CancellationToken,
) -> Result<Lsn, ModeError> {
    let started = Instant::now();
    let n = sks.addrs.len();
    // Without --start-lsn, a quorum without WAL stops the proposer before it proposes.
    let bootstrap = conf.bootstrap_lsn.unwrap_or(Lsn::INVALID);
    let mut driver = Driver::new(
        sks.clone(),
        ProposerConfig::new(sks.ttid, n, conf.server, bootstrap),
    )?;
    let mut quorum_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Err(ModeError::Cancelled),
            ev = driver.next_event() => match driver.handle(ev) {
                Err(DriverError::Proposer(ProposerError::NoWal)) => return Err(ModeError::NoWal),
                r => r?,
            },
        }
        driver.take_notices();
        driver.check_election_deadline(conf.election_timeout)?;
        if started.elapsed() >= conf.total_timeout {
            return Err(ModeError::Timeout {
                what: "sync",
                waited: started.elapsed(),
                details: driver.describe(),
            });
        }
        let Some(election) = driver.election() else {
            continue;
        };
        let target = election.term_start_lsn;
        if driver.proposer().commit_lsn() < target {
            continue;
        }
        let since = *quorum_at.get_or_insert_with(|| {
            info!(%target, "a quorum has flushed the term start");
            Instant::now()
        });
        if driver.reachable_committed(target) {
            info!(term = election.term, lsn = %target, elapsed = ?started.elapsed(), "safekeepers are in sync");
            return Ok(target);
        }
        if since.elapsed() >= conf.settle_timeout {
            warn!(
                lagging = ?driver.lagging(target),
                "some reachable safekeepers did not confirm {target} committed within {:?}; a quorum has it",
                conf.settle_timeout
            );
            return Ok(target);
        }
    }
}
