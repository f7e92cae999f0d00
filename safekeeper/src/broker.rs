//! Broker heartbeats over NATS: every `--broker-publish-interval` each active timeline's
//! state is published on `strata.sk.<tenant>.<timeline>` as the versioned JSON
//! [`SafekeeperTimelineInfo`], and peers' heartbeats (`strata.sk.>`) are applied to the
//! local timelines.
//!
//! # Rules
//! * **Best effort, never in the way.** The NATS client connects and reconnects in the
//!   background (the first connection too), publishing gives up after a timeout, and all
//!   of it runs in this task only: with NATS down, heartbeats stop and WAL service does not
//!   notice. Connection changes are logged once each.
//! * A timeline is **active**, and published, while a walproposer is connected or its
//!   pageservers have not made everything committed durable remotely
//!   (`remote_consistent_lsn < commit_lsn`).
//! * From a peer's heartbeat a timeline takes ([`crate::acceptor::Acceptor::record_peer_info`])
//!   the commit LSN when the peer's last log term equals its own (capped at its own flush
//!   LSN), the maximum of the peer horizon LSNs, and the peer's flush LSN (which holds back
//!   WAL removal). Never the peer's backup or remote consistent LSN: heartbeats are not
//!   authenticated, and those would let WAL be deleted. Its own
//!   heartbeats (echoed by NATS) and heartbeats for timelines it does not hold are ignored;
//!   a malformed or unknown-version payload is counted and logged at debug level.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use safekeeper_api::broker::{HEARTBEAT_VERSION, SUBJECT_ALL, SafekeeperTimelineInfo};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use utils::TenantTimelineId;

use crate::background::BackgroundConf;
use crate::global_timelines::GlobalTimelines;
use crate::metrics::BROKER_MESSAGES;
use crate::shared_timeline::SharedTimeline;

/// How long one publish may take before the heartbeat is dropped.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs until cancelled.
pub async fn run(
    timelines: Arc<GlobalTimelines>,
    conf: BackgroundConf,
    endpoint: String,
    cancel: CancellationToken,
) {
    let options = async_nats::ConnectOptions::new()
        .name(format!("safekeeper-{}", conf.node_id))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("connected to the broker"),
                async_nats::Event::Disconnected => {
                    warn!("disconnected from the broker; heartbeats paused")
                }
                other => debug!("broker event: {other}"),
            }
        });
    let client = match options.connect(endpoint.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            // Only a malformed endpoint gets here (connection failures are retried).
            warn!(%endpoint, "broker heartbeats disabled: {e}");
            cancel.cancelled().await;
            return;
        }
    };
    info!(%endpoint, "broker heartbeats enabled");
    let subscriber = tokio::spawn(subscribe_loop(
        client.clone(),
        Arc::clone(&timelines),
        conf.clone(),
        cancel.clone(),
    ));
    let mut ticker =
        tokio::time::interval(conf.broker_publish_interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if client.connection_state() != async_nats::connection::State::Connected {
            continue;
        }
        for tl in timelines.all() {
            let Some(info) = heartbeat(&tl, &conf) else {
                continue;
            };
            let publish = client.publish(info.subject(), info.to_json().into());
            match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
                Ok(Ok(())) => BROKER_MESSAGES.with_label_values(&["publish", "ok"]).inc(),
                Ok(Err(e)) => {
                    BROKER_MESSAGES
                        .with_label_values(&["publish", "error"])
                        .inc();
                    debug!(ttid = %tl.ttid(), "publishing a heartbeat failed: {e}");
                }
                Err(_) => {
                    BROKER_MESSAGES
                        .with_label_values(&["publish", "error"])
                        .inc();
                    debug!(ttid = %tl.ttid(), "publishing a heartbeat timed out");
                }
            }
        }
    }
    subscriber.abort();
}

/// The heartbeat of an active timeline, `None` for an idle one.
pub fn heartbeat(tl: &SharedTimeline, conf: &BackgroundConf) -> Option<SafekeeperTimelineInfo> {
    let snap = tl.snapshot();
    let active = tl.num_walproposers() > 0 || snap.remote_consistent_lsn < snap.commit_lsn;
    if !active {
        return None;
    }
    let ttid = tl.ttid();
    Some(SafekeeperTimelineInfo {
        version: HEARTBEAT_VERSION,
        safekeeper_id: conf.node_id,
        tenant_id: ttid.tenant_id,
        timeline_id: ttid.timeline_id,
        term: snap.term,
        last_log_term: snap.last_log_term,
        flush_lsn: snap.flush_lsn,
        commit_lsn: snap.commit_lsn,
        backup_lsn: snap.backup_lsn,
        remote_consistent_lsn: snap.remote_consistent_lsn,
        peer_horizon_lsn: snap.peer_horizon_lsn,
        local_start_lsn: snap.local_start_lsn,
        safekeeper_connstr: conf.advertise_pg.clone(),
        http_connstr: conf.advertise_http.clone(),
        availability_zone: conf.availability_zone.clone(),
    })
}

async fn subscribe_loop(
    client: async_nats::Client,
    timelines: Arc<GlobalTimelines>,
    conf: BackgroundConf,
    cancel: CancellationToken,
) {
    let mut sub = loop {
        match client.subscribe(SUBJECT_ALL).await {
            Ok(s) => break s,
            Err(e) => {
                debug!("subscribing to {SUBJECT_ALL} failed, retrying: {e}");
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
            m = sub.next() => match m {
                Some(m) => m,
                None => return,
            },
        };
        let info = match SafekeeperTimelineInfo::from_json(&msg.payload) {
            Ok(i) => i,
            Err(e) => {
                BROKER_MESSAGES
                    .with_label_values(&["receive", "invalid"])
                    .inc();
                debug!(subject = %msg.subject, "ignoring a heartbeat: {e}");
                continue;
            }
        };
        if info.safekeeper_id == conf.node_id {
            continue;
        }
        let ttid = TenantTimelineId::new(info.tenant_id, info.timeline_id);
        let Ok(tl) = timelines.get(&ttid) else {
            BROKER_MESSAGES
                .with_label_values(&["receive", "ignored"])
                .inc();
            continue;
        };
        BROKER_MESSAGES.with_label_values(&["receive", "ok"]).inc();
        let applied = tokio::task::spawn_blocking(move || {
            tl.with_acceptor(|a| {
                a.record_peer_info(
                    info.safekeeper_id,
                    info.last_log_term,
                    info.flush_lsn,
                    info.commit_lsn,
                    info.peer_horizon_lsn,
                )
            })
        })
        .await;
        match applied {
            Ok(Ok(Ok(true))) => debug!(%ttid, peer = %info.safekeeper_id, "took peer's positions"),
            Ok(Ok(Err(e))) => warn!(%ttid, "applying a peer's heartbeat failed: {e}"),
            _ => {}
        }
    }
}
