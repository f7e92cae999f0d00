//! WAL ingest from the safekeepers: one walreceiver task per active timeline.
//!
//! Choosing a safekeeper: with a broker, from the NATS heartbeats ([`Broker`]) — the live
//! one (heard from within `walreceiver_connect_timeout`) with the highest commit LSN;
//! without one, the tenant config's static `safekeepers` list, in turn after failures.
//! While connected, the task switches when the stream is silent for
//! `walreceiver_connect_timeout`, or when another live safekeeper's commit LSN is ahead of
//! ours by more than `max_lsn_wal_lag`.
//!
//! Invariants:
//! - streaming always starts at the timeline's `last_record_lsn` (a record boundary), so a
//!   switch or a reconnect neither skips nor repeats a record;
//! - a record that cannot be decoded or applied stops ingest for the timeline with a
//!   clear error in its status and log; the timeline stays readable below it. A
//!   connection failure is retried with backoff.

mod connection;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use safekeeper_api::broker::{SUBJECT_ALL, SafekeeperTimelineInfo};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use utils::{NodeId, TenantId, TimelineId};

use crate::metrics;
use crate::tenant::TenantResources;
use crate::timeline::{Timeline, TimelineState};

type Heartbeats =
    HashMap<(TenantId, TimelineId), HashMap<NodeId, (Instant, SafekeeperTimelineInfo)>>;

/// The latest heartbeat of every safekeeper for every timeline, from NATS.
#[derive(Clone)]
pub struct Broker {
    heartbeats: Arc<Mutex<Heartbeats>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish()
    }
}

impl Broker {
    /// Connects (in the background, retrying forever) and subscribes to every heartbeat.
    pub async fn start(endpoint: &str, cancel: CancellationToken) -> Result<Broker, String> {
        let options = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => info!("connected to the broker"),
                    async_nats::Event::Disconnected => warn!("disconnected from the broker"),
                    _ => {}
                }
            });
        let client = options
            .connect(endpoint)
            .await
            .map_err(|e| format!("broker endpoint {endpoint:?}: {e}"))?;
        let broker = Broker {
            heartbeats: Arc::new(Mutex::new(HashMap::new())),
        };
        let b = broker.clone();
        tokio::spawn(async move {
            let mut sub = loop {
                match client.subscribe(SUBJECT_ALL).await {
                    Ok(s) => break s,
                    Err(e) => {
                        tracing::debug!("subscribing to {SUBJECT_ALL}: {e}");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = sub.next() => match m { Some(m) => m, None => return },
                };
                let Ok(info) = SafekeeperTimelineInfo::from_json(&msg.payload) else {
                    tracing::debug!(subject = %msg.subject, "ignoring an invalid heartbeat");
                    continue;
                };
                b.heartbeats
                    .lock()
                    .entry((info.tenant_id, info.timeline_id))
                    .or_default()
                    .insert(info.safekeeper_id, (Instant::now(), info));
            }
        });
        Ok(broker)
    }

    /// The live safekeepers of a timeline (heard from within `max_age`).
    pub fn live(
        &self,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        max_age: Duration,
    ) -> Vec<SafekeeperTimelineInfo> {
        let hb = self.heartbeats.lock();
        let mut v: Vec<SafekeeperTimelineInfo> = hb
            .get(&(tenant_id, timeline_id))
            .map(|m| {
                m.values()
                    .filter(|(at, _)| at.elapsed() <= max_age)
                    .map(|(_, i)| i.clone())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|i| (std::cmp::Reverse(i.commit_lsn), i.safekeeper_id));
        v
    }
}

/// Where to stream from next: the best live safekeeper (broker) or the next static one.
fn choose(tl: &Timeline, res: &TenantResources, attempt: usize) -> Option<String> {
    let conf = tl.tenant_conf.read().clone();
    if let Some(b) = &res.broker {
        let live = b.live(
            tl.tenant_id,
            tl.timeline_id,
            conf.walreceiver_connect_timeout,
        );
        if !live.is_empty() {
            // After failures, try the others in commit-LSN order too.
            return Some(live[attempt % live.len()].safekeeper_connstr.clone());
        }
    }
    if conf.safekeepers.is_empty() {
        return None;
    }
    Some(conf.safekeepers[attempt % conf.safekeepers.len()].clone())
}

/// Starts the walreceiver of an active timeline.
pub fn spawn(tl: Arc<Timeline>, res: TenantResources) {
    tokio::spawn(async move {
        let mut attempt = 0usize;
        let mut last_addr: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            if tl.cancel.is_cancelled() || tl.state() != TimelineState::Active {
                return;
            }
            let Some(addr) = choose(&tl, &res, attempt) else {
                tokio::select! {
                    _ = tl.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            };
            if last_addr.as_ref().is_some_and(|a| *a != addr) {
                metrics::WALRECEIVER_SWITCHES.inc();
                tl.walreceiver_status.lock().switches += 1;
            }
            last_addr = Some(addr.clone());
            let started = Instant::now();
            match connection::stream(&tl, &res, &addr).await {
                Ok(connection::StreamEnd::Cancelled) => return,
                Ok(connection::StreamEnd::Switch(why)) => {
                    info!(
                        tenant_id = %tl.tenant_id,
                        timeline_id = %tl.timeline_id,
                        "leaving safekeeper {addr}: {why}"
                    );
                    attempt += 1;
                    continue;
                }
                Err(connection::StreamError::Fatal(e)) if tl.is_stopping() => {
                    // A shutdown raced the commit: the timeline refused the write because
                    // it is stopping, which is not a failure of the WAL.
                    info!(
                        tenant_id = %tl.tenant_id,
                        timeline_id = %tl.timeline_id,
                        "ingest ended by shutdown at {}: {e}",
                        tl.last_record_lsn()
                    );
                    return;
                }
                Err(connection::StreamError::Fatal(e)) => {
                    // The timeline stays readable below the failed record.
                    tracing::error!(
                        tenant_id = %tl.tenant_id,
                        timeline_id = %tl.timeline_id,
                        "ingest stopped at {}: {e}",
                        tl.last_record_lsn()
                    );
                    let mut st = tl.walreceiver_status.lock();
                    st.last_error = Some(format!("ingest stopped: {e}"));
                    st.ingest_stopped = true;
                    st.connected_to = None;
                    return;
                }
                Err(connection::StreamError::Retry(e)) => {
                    {
                        let mut st = tl.walreceiver_status.lock();
                        st.last_error = Some(e.clone());
                        st.connected_to = None;
                    }
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff = Duration::from_millis(100);
                    }
                    tracing::info!(
                        tenant_id = %tl.tenant_id,
                        timeline_id = %tl.timeline_id,
                        "walreceiver: {e}; retrying in {backoff:?}"
                    );
                    attempt += 1;
                    tokio::select! {
                        _ = tl.cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}
