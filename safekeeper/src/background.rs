//! Background work over all timelines: housekeeping (pageserver progress into the acceptor,
//! lazy position persistence), the periodic control-file save, WAL removal, and the broker.
//!
//! Every task runs until its cancellation token fires, touches acceptors only from blocking
//! threads, and never lets one timeline's failure stop the others: errors are logged per
//! timeline and the task goes on.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use utils::NodeId;

use crate::broker;
use crate::global_timelines::GlobalTimelines;
use crate::metrics;

/// How often pageserver feedback is folded into the acceptors.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of the background tasks.
#[derive(Debug, Clone)]
pub struct BackgroundConf {
    /// This safekeeper.
    pub node_id: NodeId,
    /// Forced persistence of in-memory positions.
    pub control_file_save_interval: Duration,
    /// WAL removal period.
    pub wal_removal_interval: Duration,
    /// NATS URL; `None` disables heartbeats.
    pub broker_endpoint: Option<String>,
    /// Heartbeat period.
    pub broker_publish_interval: Duration,
    /// The libpq address peers and pageservers should use.
    pub advertise_pg: String,
    /// The HTTP address.
    pub advertise_http: String,
    /// Availability zone for heartbeats.
    pub availability_zone: Option<String>,
}

/// Starts every background task.
pub fn spawn_all(
    timelines: Arc<GlobalTimelines>,
    conf: BackgroundConf,
    cancel: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    tasks.push(spawn_periodic(
        "housekeeping",
        HOUSEKEEPING_INTERVAL,
        Arc::clone(&timelines),
        cancel.clone(),
        housekeeping,
    ));
    tasks.push(spawn_periodic(
        "control_file_save",
        conf.control_file_save_interval,
        Arc::clone(&timelines),
        cancel.clone(),
        |t| persist(t, true),
    ));
    tasks.push(spawn_periodic(
        "wal_removal",
        conf.wal_removal_interval,
        Arc::clone(&timelines),
        cancel.clone(),
        remove_wal,
    ));
    if let Some(endpoint) = conf.broker_endpoint.clone() {
        tasks.push(tokio::spawn(
            broker::run(timelines, conf, endpoint, cancel).instrument(info_span!("broker")),
        ));
    }
    tasks
}

fn spawn_periodic(
    name: &'static str,
    period: Duration,
    timelines: Arc<GlobalTimelines>,
    cancel: CancellationToken,
    work: fn(&GlobalTimelines),
) -> JoinHandle<()> {
    let period = period.max(Duration::from_millis(10));
    tokio::spawn(
        async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let t = Arc::clone(&timelines);
                if let Err(e) = tokio::task::spawn_blocking(move || work(&t)).await {
                    warn!("background task {name} failed: {e}");
                }
            }
            debug!("background task {name} stopped");
        }
        .instrument(info_span!("background", task = name)),
    )
}

/// Folds the pageservers' remote consistent LSN into each acceptor and persists positions
/// that lag their persisted values by a segment or more.
fn housekeeping(timelines: &GlobalTimelines) {
    for tl in timelines.all() {
        let ps = tl.min_ps_remote_consistent_lsn();
        let r = tl.with_acceptor(|a| {
            if let Some(lsn) = ps {
                // Never beyond what this safekeeper committed.
                a.update_remote_consistent_lsn(lsn.min(a.commit_lsn()));
            }
            a.persist_positions_if_needed(false)
        });
        if let Ok(Err(e)) = r {
            warn!(ttid = %tl.ttid(), "persisting positions failed: {e}");
        }
    }
}

fn persist(timelines: &GlobalTimelines, force: bool) {
    for tl in timelines.all() {
        match tl.with_acceptor(|a| a.persist_positions_if_needed(force)) {
            Ok(Ok(true)) => debug!(ttid = %tl.ttid(), "persisted control file"),
            Ok(Ok(false)) | Err(_) => {}
            Ok(Err(e)) => warn!(ttid = %tl.ttid(), "persisting control file failed: {e}"),
        }
    }
}

/// Persists every timeline's positions (at shutdown).
pub fn persist_all(timelines: &GlobalTimelines) {
    persist(timelines, true);
}

/// Deletes WAL segments wholly below each timeline's removal horizon.
fn remove_wal(timelines: &GlobalTimelines) {
    let max_peer_lag = timelines.conf().max_peer_lag;
    for tl in timelines.all() {
        match tl.with_acceptor(|a| a.remove_old_wal(false, max_peer_lag)) {
            Ok(Ok(removed)) if !removed.is_empty() => {
                metrics::WAL_SEGMENTS_REMOVED.inc_by(removed.len() as u64);
                info!(ttid = %tl.ttid(), segments = ?removed, "removed WAL segments below the horizon");
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => warn!(ttid = %tl.ttid(), "removing old WAL failed: {e}"),
        }
    }
}
