//! Recovery reads: the WAL a lagging acceptor needs and the proposer's buffer lacks, read
//! from a safekeeper with `START_REPLICATION PHYSICAL <start> (term '<our term>')`.
//!
//! The term makes the read safe: the safekeeper serves it only while its term and last log
//! term are still ours (it voted for us and has not seen a newer proposer), and streams up
//! to its flush LSN rather than its commit LSN, because recovery is exactly about WAL that
//! may not be known committed yet.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pq_proto::replication::ReplicationMessage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use utils::Lsn;

use super::connection::open;
use super::{Event, SafekeepersConf};
use crate::FetchRequest;
use crate::compute::write_standby_status;

/// A fetch that delivers no WAL for this long is abandoned (and retried by the proposer).
/// Keepalives do not count: a safekeeper that stays connected but sends no WAL (stuck disk,
/// wedged timeline) must not hold recovery, which reads one chunk at a time, forever.
const FETCH_PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

/// The running fetch; dropping it cancels it.
#[derive(Debug)]
pub struct FetchHandle {
    /// Its id, to ignore answers of abandoned fetches.
    pub id: u64,
    task: JoinHandle<()>,
}

impl Drop for FetchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts reading `req` in the background; the answer is [`Event::Fetched`].
pub fn spawn(
    id: u64,
    req: FetchRequest,
    conf: Arc<SafekeepersConf>,
    events: mpsc::UnboundedSender<Event>,
) -> FetchHandle {
    let task = tokio::spawn(async move {
        let result = read(&req, &conf).await;
        let _ = events.send(Event::Fetched {
            id,
            start: req.start,
            result,
        });
    });
    FetchHandle { id, task }
}

async fn read(req: &FetchRequest, conf: &SafekeepersConf) -> Result<bytes::Bytes, String> {
    let addr = &conf.addrs[req.donor.0];
    let term = req
        .history
        .last()
        .map(|t| t.term)
        .ok_or("the fetch request has an empty history")?;
    let len = usize::try_from(req.end.0 - req.start.0)
        .map_err(|_| format!("fetch of {}..{} is too large", req.start, req.end))?;
    let mut conn = tokio::time::timeout(
        conf.connect_timeout,
        open(conf, addr, "walproposer-recovery"),
    )
    .await
    .map_err(|_| format!("connecting to {addr}: timed out"))?
    .map_err(|f| f.message)?;
    conn.start_copy_both(&format!(
        "START_REPLICATION PHYSICAL {} (term '{term}')",
        req.start
    ))
    .await
    .map_err(|e| format!("START_REPLICATION on {addr}: {e}"))?;
    let (mut reader, mut writer) = conn.into_split();
    let mut out = BytesMut::with_capacity(len);
    let mut next = req.start;
    let mut deadline = Instant::now() + FETCH_PROGRESS_TIMEOUT;
    while out.len() < len {
        let data = tokio::time::timeout_at(deadline, reader.read_copy_data(1 << 24))
            .await
            .map_err(|_| format!("{addr} sent no WAL for {FETCH_PROGRESS_TIMEOUT:?}"))?
            .map_err(|e| format!("reading WAL from {addr}: {e}"))?
            .ok_or_else(|| format!("{addr} ended the stream at {next}"))?;
        match ReplicationMessage::decode(&data).map_err(|e| format!("from {addr}: {e}"))? {
            ReplicationMessage::XLogData(x) => {
                if x.wal_start != next {
                    return Err(format!(
                        "{addr} sent WAL at {}, expected {next}",
                        x.wal_start
                    ));
                }
                let take = x.data.len().min(len - out.len());
                out.extend_from_slice(&x.data[..take]);
                next = Lsn(next.0 + take as u64);
                if take > 0 {
                    deadline = Instant::now() + FETCH_PROGRESS_TIMEOUT;
                }
            }
            ReplicationMessage::Keepalive(k) => {
                if k.reply_requested {
                    write_standby_status(&mut writer, next, next);
                    writer
                        .flush()
                        .await
                        .map_err(|e| format!("replying to {addr}: {e}"))?;
                }
            }
        }
    }
    Ok(out.freeze())
}
