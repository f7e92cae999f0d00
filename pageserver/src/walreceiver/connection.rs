//! One replication connection to a safekeeper: `START_REPLICATION PHYSICAL` from the
//! timeline's last record, decode, ingest, feedback.
//!
//! Feedback: a standby status update (`'r'`, write = last received, flush = disk
//! consistent) and the pageserver feedback block (`'z'`: last received, disk consistent
//! and remote consistent LSNs) after every batch that moved an LSN, at least once a
//! second, and whenever a keepalive asks for a reply. Safekeepers remove WAL only below
//! the remote consistent LSN.

use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use postgres_ffi::WalStreamDecoder;
use postgres_ffi::decoder::WalDecoderConfig;
use pq_proto::StartupParams;
use pq_proto::client::ClientConnection;
use pq_proto::replication::{ReplicationFeedback, ReplicationMessage, StandbyStatusUpdate};
use safekeeper_api::feedback::PageserverFeedback;
use utils::Lsn;
use utils::pg_time::now_pg_timestamp;

use crate::metrics;
use crate::tenant::TenantResources;
use crate::timeline::Timeline;
use crate::timeline::ingest::WalIngest;

/// How a stream ended without an error.
#[derive(Debug)]
pub enum StreamEnd {
    /// The timeline is stopping.
    Cancelled,
    /// Time to use another safekeeper (silence, lag).
    Switch(String),
}

/// How a stream failed.
#[derive(Debug)]
pub enum StreamError {
    /// Connection trouble: try again (maybe elsewhere).
    Retry(String),
    /// A record that cannot be applied: ingest stops.
    Fatal(String),
}

const FEEDBACK_INTERVAL: Duration = Duration::from_secs(1);

fn feedback(tl: &Timeline, received: Lsn) -> BytesMut {
    let mut buf = BytesMut::new();
    let disk = tl.disk_consistent_lsn();
    ReplicationFeedback::StandbyStatus(StandbyStatusUpdate {
        write_lsn: received,
        flush_lsn: disk,
        apply_lsn: tl.remote_consistent_lsn(),
        reply_time: now_pg_timestamp(),
        reply_requested: false,
    })
    .encode(&mut buf);
    buf
}

fn ps_feedback(tl: &Timeline, received: Lsn) -> BytesMut {
    let mut block = BytesMut::new();
    PageserverFeedback {
        current_timeline_size: 0,
        last_received_lsn: received,
        disk_consistent_lsn: tl.disk_consistent_lsn(),
        remote_consistent_lsn: tl.remote_consistent_lsn(),
        replytime: SystemTime::now(),
        shard_number: 0,
        corruption_detected: false,
    }
    .encode(&mut block);
    let mut buf = BytesMut::new();
    ReplicationFeedback::Pageserver(block.freeze()).encode(&mut buf);
    buf
}

/// Streams from `addr` until cancelled, switched away from, or failed.
pub async fn stream(
    tl: &std::sync::Arc<Timeline>,
    res: &TenantResources,
    addr: &str,
) -> Result<StreamEnd, StreamError> {
    let retry =
        |what: &str, e: &dyn std::fmt::Display| StreamError::Retry(format!("{addr}: {what}: {e}"));
    let conf = tl.tenant_conf.read().clone();
    let connect = async {
        let mut conn = ClientConnection::connect_tcp(addr)
            .await
            .map_err(|e| retry("connect", &e))?;
        let app = format!("pageserver-{}", res.node_id.0);
        let params = StartupParams::for_timeline(tl.tenant_id, tl.timeline_id, &app);
        conn.startup(&params, res.safekeeper_token.as_deref())
            .await
            .map_err(|e| retry("login", &e))?;
        let start = tl.last_record_lsn();
        conn.start_copy_both(&format!("START_REPLICATION PHYSICAL {start}"))
            .await
            .map_err(|e| retry("START_REPLICATION", &e))?;
        Ok::<_, StreamError>((conn, start))
    };
    let (conn, start) = tokio::select! {
        r = tokio::time::timeout(conf.walreceiver_connect_timeout, connect) => match r {
            Ok(r) => r?,
            Err(_) => return Err(StreamError::Retry(format!("{addr}: connection timed out"))),
        },
        _ = tl.cancel.cancelled() => return Ok(StreamEnd::Cancelled),
    };
    {
        let mut st = tl.walreceiver_status.lock();
        st.connected_to = Some(addr.to_string());
        st.last_error = None;
    }
    tracing::info!(
        tenant_id = %tl.tenant_id,
        timeline_id = %tl.timeline_id,
        "streaming WAL from {addr} at {start}"
    );
    let (mut reader, mut writer) = conn.into_split();
    let mut decoder = WalStreamDecoder::new(start, WalDecoderConfig::v15_default());
    if let Some(prev) = tl.last_record().prev {
        decoder = decoder.with_prev_record(prev);
    }
    let mut ingest = WalIngest::new(tl.clone())
        .await
        .map_err(|e| StreamError::Fatal(format!("starting ingest: {e}")))?;
    let mut last_data = Instant::now();
    let mut last_feedback = Instant::now();
    let mut received = start;
    let mut tick = tokio::time::interval(FEEDBACK_INTERVAL);
    loop {
        let data = tokio::select! {
            _ = tl.cancel.cancelled() => return Ok(StreamEnd::Cancelled),
            _ = tick.tick() => None,
            d = reader.read_copy_data(1 << 24) => Some(d),
        };
        if let Some(d) = data {
            let d = d.map_err(|e| retry("reading", &e))?;
            let Some(d) = d else {
                return Err(StreamError::Retry(format!("{addr}: the stream ended")));
            };
            last_data = Instant::now();
            match ReplicationMessage::decode(&d).map_err(|e| retry("decoding", &e))? {
                ReplicationMessage::XLogData(x) => {
                    if x.wal_start != decoder.available() {
                        return Err(StreamError::Retry(format!(
                            "{addr}: sent WAL at {}, expected {}",
                            x.wal_start,
                            decoder.available()
                        )));
                    }
                    metrics::INGEST_BYTES.inc_by(x.data.len() as u64);
                    decoder.feed_bytes(&x.data);
                    received = decoder.available();
                    loop {
                        match decoder.poll_decode() {
                            Ok(Some((rec_start, rec_end, rec))) => {
                                ingest
                                    .ingest_record(&rec, rec_start, rec_end)
                                    .await
                                    .map_err(|e| {
                                        StreamError::Fatal(format!("record at {rec_start}: {e}"))
                                    })?;
                                if ingest.should_commit() {
                                    ingest.commit().await.map_err(|e| {
                                        StreamError::Fatal(format!("committing: {e}"))
                                    })?;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                return Err(StreamError::Fatal(format!("decoding WAL: {e}")));
                            }
                        }
                    }
                    ingest
                        .commit()
                        .await
                        .map_err(|e| StreamError::Fatal(format!("committing: {e}")))?;
                    let mut st = tl.walreceiver_status.lock();
                    st.last_received_lsn = Some(received);
                }
                ReplicationMessage::Keepalive(k) => {
                    tl.walreceiver_status.lock().commit_lsn = Some(k.wal_end);
                    if k.reply_requested {
                        last_feedback = Instant::now() - FEEDBACK_INTERVAL;
                    }
                }
            }
        }
        if last_feedback.elapsed() >= FEEDBACK_INTERVAL {
            writer.write_copy_data(&feedback(tl, received));
            writer.write_copy_data(&ps_feedback(tl, received));
            writer
                .flush()
                .await
                .map_err(|e| retry("sending feedback", &e))?;
            last_feedback = Instant::now();
        }
        if last_data.elapsed() > conf.walreceiver_connect_timeout {
            return Ok(StreamEnd::Switch(format!(
                "nothing received for {:?}",
                conf.walreceiver_connect_timeout
            )));
        }
        if let Some(b) = &res.broker {
            let live = b.live(
                tl.tenant_id,
                tl.timeline_id,
                conf.walreceiver_connect_timeout,
            );
            if let Some(best) = live.first()
                && best.safekeeper_connstr != addr
                && best.commit_lsn.0 > received.0.saturating_add(conf.max_lsn_wal_lag)
            {
                return Ok(StreamEnd::Switch(format!(
                    "{} is ahead by more than {} bytes",
                    best.safekeeper_connstr, conf.max_lsn_wal_lag
                )));
            }
        }
    }
}
