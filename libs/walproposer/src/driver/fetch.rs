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
        let result = read(&req, &conf, FETCH_PROGRESS_TIMEOUT).await;
        let _ = events.send(Event::Fetched {
            id,
            start: req.start,
            result,
        });
    });
    FetchHandle { id, task }
}

/// Reads `req`; fails if no WAL arrives for `progress_timeout`.
async fn read(
    req: &FetchRequest,
    conf: &SafekeepersConf,
    progress_timeout: Duration,
) -> Result<bytes::Bytes, String> {
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
    let mut deadline = Instant::now() + progress_timeout;
    while out.len() < len {
        let data = tokio::time::timeout_at(deadline, reader.read_copy_data(1 << 24))
            .await
            .map_err(|_| format!("{addr} sent no WAL for {progress_timeout:?}"))?
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
                    deadline = Instant::now() + progress_timeout;
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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use pq_proto::messages::BeMessage;
    use pq_proto::replication::{PrimaryKeepalive, ReplicationMessage};
    use pq_proto::{HandshakeConfig, ServerConnection};
    use safekeeper_api::term::{TermHistory, TermLsn};
    use tokio::net::TcpListener;
    use utils::TenantTimelineId;

    use super::*;
    use crate::SkId;

    /// A safekeeper that accepts `START_REPLICATION` and then only ever sends keepalives
    /// (asking for replies), as a wedged one would.
    async fn keepalives_only() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, w) = sock.into_split();
            let mut conn = ServerConnection::new(r, w);
            conn.handshake(&HandshakeConfig::default()).await.unwrap();
            let _query = conn.read_message(64 * 1024).await.unwrap();
            conn.write_message(&BeMessage::CopyBothResponse);
            conn.flush().await.unwrap();
            loop {
                let mut buf = BytesMut::new();
                ReplicationMessage::Keepalive(PrimaryKeepalive {
                    wal_end: Lsn(0x200_0000),
                    send_time: 0,
                    reply_requested: true,
                })
                .encode(&mut buf);
                conn.write_message(&BeMessage::CopyData(&buf));
                if conn.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn keepalives_without_wal_do_not_hold_a_fetch() {
        let conf = SafekeepersConf {
            addrs: vec![keepalives_only().await],
            ttid: TenantTimelineId::generate(),
            auth_token: None,
            allow_timeline_creation: false,
            connect_timeout: Duration::from_secs(5),
        };
        let req = FetchRequest {
            donor: SkId(0),
            start: Lsn(0x100_0000),
            end: Lsn(0x100_1000),
            history: TermHistory(vec![TermLsn {
                term: 3,
                lsn: Lsn(0x100_0000),
            }]),
        };
        let started = std::time::Instant::now();
        let e = tokio::time::timeout(
            Duration::from_secs(10),
            read(&req, &conf, Duration::from_millis(500)),
        )
        .await
        .expect("keepalives kept the fetch alive")
        .unwrap_err();
        assert!(e.contains("sent no WAL for 500ms"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
