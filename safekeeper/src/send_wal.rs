//! `START_REPLICATION`: streams a timeline's WAL to a pageserver, a PostgreSQL standby, or
//! a walproposer / peer reading WAL of one term.
//!
//! * Without `(term 'N')` the stream ends at **commit_lsn** and follows it as it moves.
//!   With a term it ends at **flush_lsn**, and only while the safekeeper's `(term,
//!   last_log_term)` stay what they were when streaming began; the requested term must be
//!   one of the two. Any change (a vote, an election, a truncation) ends the stream with
//!   "term changed", so WAL that may be truncated is never sent as if it were stable.
//! * The start may be anywhere from the start of the segment holding `timeline_start_lsn`
//!   on; a start beyond the end bound waits for WAL to get there. PostgreSQL's walreceiver
//!   rounds its start down to the segment start and checks the long page header there, so
//!   the bytes before `timeline_start_lsn` are served as
//!   [`crate::wal_storage::synthesize_prefix`] builds them.
//! * WAL goes out in XLogData messages of at most [`MAX_SEND_SIZE`] (128 KiB); a chunk that
//!   does not reach the end bound is cut at a page boundary. When there is nothing to send,
//!   a keepalive goes out every [`KEEPALIVE_INTERVAL`].
//! * The client's messages are parsed as they come: standby status updates (`'r'`),
//!   hot-standby feedback (`'h'`, relayed to proposers in AppendResponse) and pageserver
//!   feedback (`'z'`, whose remote_consistent_lsn feeds the WAL-removal horizon). A
//!   malformed one ends the stream with an error naming it.
//! * File reads run on blocking threads, one hop per chunk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BufMut;
use pq_proto::messages::BeMessage;
use pq_proto::replication::{PrimaryKeepalive, ReplicationFeedback, ReplicationMessage, XLogData};
use pq_proto::{FeMessage, ProtocolError, SqlState};
use safekeeper_api::PageserverFeedback;
use safekeeper_api::command::StartReplication;
use safekeeper_api::models::{WalSenderInfo, WalSenderKind};
use safekeeper_api::proto::HotStandbyFeedback;
use safekeeper_api::term::Term;
use tracing::{Instrument, debug, info};
use utils::Lsn;
use utils::pg_time::now_pg_timestamp;

use crate::shared_timeline::{SharedTimeline, TimelineSnapshot};
use crate::wal_reader::WalReader;
use crate::wal_service::{Conn, ConnCtx, ConnError, refuse};

/// Largest WAL payload of one XLogData message.
pub const MAX_SEND_SIZE: usize = 128 * 1024;
/// How often an idle stream sends a keepalive.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Largest client message accepted while streaming.
const MAX_FEEDBACK_LEN: usize = 64 * 1024;

/// Why the client side of a stream ended.
#[derive(Debug)]
enum ClientEnd {
    /// CopyDone: the client wants to stop streaming.
    CopyDone,
    /// EOF or Terminate.
    Closed,
}

/// Serves one `START_REPLICATION`. Returns the connection if the session goes on (the
/// command was refused before streaming began).
pub async fn handle(
    mut conn: Conn,
    ctx: &ConnCtx,
    args: StartReplication,
) -> Result<Option<Conn>, ConnError> {
    let tl = match ctx.timeline("START_REPLICATION") {
        Ok(tl) => tl,
        Err((code, msg)) => {
            refuse(&mut conn, code, &msg);
            conn.flush().await?;
            return Ok(Some(conn));
        }
    };
    match prepare(&tl, &args).await {
        Ok((reader, bound)) => {
            let span = tracing::info_span!("walsender", ttid = %tl.ttid(), start = %args.start_lsn);
            stream(conn, ctx, tl, args, reader, bound)
                .instrument(span)
                .await
                .map(|()| None)
        }
        Err(msg) => {
            refuse(&mut conn, SqlState::INVALID_PARAMETER_VALUE, &msg);
            conn.flush().await?;
            Ok(Some(conn))
        }
    }
}

/// Checks the request against the timeline and opens a reader at the start.
async fn prepare(
    tl: &Arc<SharedTimeline>,
    args: &StartReplication,
) -> Result<(WalReader, StreamBound), String> {
    if let Some(t) = args.timeline
        && t != 1
    {
        return Err(format!(
            "START_REPLICATION: PostgreSQL timeline {t} requested, but safekeepers serve only timeline 1"
        ));
    }
    let tl2 = Arc::clone(tl);
    let start = args.start_lsn;
    let opened = tokio::task::spawn_blocking(move || {
        tl2.with_acceptor(|a| {
            let snap_flush = a.flush_lsn();
            let reader = a.wal_reader(start);
            (snap_flush, reader)
        })
    })
    .await
    .map_err(|e| format!("START_REPLICATION: {e}"))?
    .map_err(|e| format!("START_REPLICATION: {e}"))?;
    let (flush_lsn, reader) = opened;
    let reader = reader.map_err(|e| format!("START_REPLICATION: {e}"))?;
    let snap = tl.snapshot();
    let bound = StreamBound::open(args.term, snap.term, snap.last_log_term)
        .map_err(|e| format!("START_REPLICATION: {e}"))?;
    if start > flush_lsn {
        // Unlike a PostgreSQL primary, a safekeeper may lag the WAL its clients already
        // have (a standby restored from a base backup of the compute): wait for it.
        debug!(%start, %flush_lsn, "start is ahead of the flush LSN: waiting for WAL");
    }
    Ok((reader, bound))
}

/// How far a `START_REPLICATION` stream may read, decided from the safekeeper's positions
/// alone (see the module docs). The one definition of the rule: the consensus simulation
/// serves its donor fetches by it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamBound {
    /// No term: up to `commit_lsn`, following it.
    Committed,
    /// A term-bound read (a proposer's recovery): up to `flush_lsn`, while the
    /// safekeeper's `(term, last_log_term)` stay what they were when it began.
    Term {
        /// The term the reader asked for.
        requested: Term,
        /// The safekeeper's term when streaming began.
        term: Term,
        /// Its last log term then.
        last_log_term: Term,
    },
}

impl StreamBound {
    /// Starts a stream: a requested term must be the safekeeper's term or its last log
    /// term (it voted for that proposer and has seen no newer one, or holds its WAL).
    pub fn open(requested: Option<Term>, term: Term, last_log_term: Term) -> Result<Self, String> {
        let Some(requested) = requested else {
            return Ok(StreamBound::Committed);
        };
        if requested != term && requested != last_log_term {
            return Err(format!(
                "term {requested} requested, but this safekeeper is in term {term} with last log term {last_log_term}"
            ));
        }
        Ok(StreamBound::Term {
            requested,
            term,
            last_log_term,
        })
    }

    /// The end the stream may read to now; for a term-bound one an error once the
    /// safekeeper's `(term, last_log_term)` changed (a vote, an election, a truncation): the
    /// WAL it would send may be cut.
    pub fn end(
        &self,
        term: Term,
        last_log_term: Term,
        flush_lsn: Lsn,
        commit_lsn: Lsn,
    ) -> Result<Lsn, String> {
        match *self {
            StreamBound::Committed => Ok(commit_lsn),
            StreamBound::Term {
                requested,
                term: t0,
                last_log_term: l0,
            } => {
                if (term, last_log_term) != (t0, l0) {
                    return Err(format!(
                        "term changed: streaming was for term {requested} (safekeeper term {t0}, last log term {l0}), now term {term} with last log term {last_log_term}"
                    ));
                }
                Ok(flush_lsn)
            }
        }
    }

    fn end_at(&self, snap: &TimelineSnapshot) -> Result<Lsn, String> {
        self.end(
            snap.term,
            snap.last_log_term,
            snap.flush_lsn,
            snap.commit_lsn,
        )
    }
}

type Writer = pq_proto::framed::MessageWriter<tokio::net::tcp::OwnedWriteHalf>;

fn kind_of(ctx: &ConnCtx, args: &StartReplication) -> WalSenderKind {
    if args.term.is_some() {
        WalSenderKind::Recovery
    } else if ctx
        .application_name
        .as_deref()
        .is_some_and(|a| a.starts_with("pageserver"))
    {
        WalSenderKind::Pageserver
    } else {
        WalSenderKind::Standby
    }
}

async fn stream(
    conn: Conn,
    ctx: &ConnCtx,
    tl: Arc<SharedTimeline>,
    args: StartReplication,
    reader: WalReader,
    bound: StreamBound,
) -> Result<(), ConnError> {
    let conn_id = ctx.conn_id;
    let _registration = tl.register_walsender(WalSenderInfo {
        conn_id,
        remote_addr: ctx.peer.to_string(),
        application_name: ctx.application_name.clone(),
        kind: kind_of(ctx, &args),
        start_lsn: args.start_lsn,
        sent_lsn: args.start_lsn,
        term: args.term,
        last_received_lsn: None,
        disk_consistent_lsn: None,
        remote_consistent_lsn: None,
        standby_flush_lsn: None,
        standby_apply_lsn: None,
    });
    let (mut net_reader, mut writer) = conn.into_split();
    writer.write_be(&BeMessage::CopyBothResponse);
    writer.flush().await?;
    info!(app = ?ctx.application_name, term = ?args.term, "streaming WAL");

    let feedback_tl = Arc::clone(&tl);
    let mut client = tokio::spawn(
        async move {
            loop {
                let msg = net_reader.read_fe_message(MAX_FEEDBACK_LEN).await?;
                match msg {
                    None | Some(FeMessage::Terminate) => return Ok(ClientEnd::Closed),
                    Some(FeMessage::CopyDone) => return Ok(ClientEnd::CopyDone),
                    Some(FeMessage::CopyData(bytes)) => {
                        let fb = ReplicationFeedback::decode(&bytes)?;
                        apply_feedback(&feedback_tl, conn_id, fb)?;
                    }
                    Some(other) => {
                        return Err(ProtocolError::Unexpected {
                            got: other.name(),
                            expected: "CopyData with a standby reply or feedback",
                        });
                    }
                }
            }
        }
        .instrument(tracing::Span::current()),
    );

    let result = send_loop(&mut writer, ctx, &tl, &args, reader, bound, &mut client).await;
    client.abort();
    match result {
        Ok(SendEnd::Client(ClientEnd::Closed)) => {
            info!("WAL receiver disconnected");
            Ok(())
        }
        Ok(SendEnd::Client(ClientEnd::CopyDone)) => {
            writer.write_be(&BeMessage::CopyDone);
            writer.write_be(&BeMessage::CommandComplete("START_STREAMING"));
            writer.write_be(&BeMessage::ReadyForQuery);
            let _ = writer.flush().await;
            info!("WAL receiver ended streaming");
            Ok(())
        }
        Ok(SendEnd::Stopped(msg)) => {
            writer.write_be(&BeMessage::ErrorResponse {
                code: SqlState::ADMIN_SHUTDOWN,
                message: &msg,
                fatal: true,
            });
            let _ = writer.flush().await;
            info!("streaming stopped: {msg}");
            Ok(())
        }
        Err(e) => {
            if let ConnError::Protocol(p) = &e
                && matches!(p, ProtocolError::Io(_))
            {
                return Err(e);
            }
            let text = e.to_string();
            writer.write_be(&BeMessage::ErrorResponse {
                code: SqlState::PROTOCOL_VIOLATION,
                message: &text,
                fatal: true,
            });
            let _ = writer.flush().await;
            Err(e)
        }
    }
}

/// Folds one feedback message into the timeline; a malformed pageserver-feedback block is
/// a protocol error (the connection ends).
fn apply_feedback(
    tl: &SharedTimeline,
    conn_id: u64,
    fb: ReplicationFeedback,
) -> Result<(), ProtocolError> {
    match fb {
        ReplicationFeedback::StandbyStatus(r) => {
            debug!(write = %r.write_lsn, flush = %r.flush_lsn, apply = %r.apply_lsn, "standby reply");
            tl.update_walsender(conn_id, |i| {
                i.standby_flush_lsn = Some(r.flush_lsn);
                i.standby_apply_lsn = Some(r.apply_lsn);
            });
        }
        ReplicationFeedback::HotStandby(h) => {
            tl.record_hs_feedback(
                conn_id,
                HotStandbyFeedback {
                    ts: h.reply_time,
                    xmin: if h.xmin == 0 { 0 } else { h.full_xmin() },
                    catalog_xmin: if h.catalog_xmin == 0 {
                        0
                    } else {
                        h.full_catalog_xmin()
                    },
                },
            );
        }
        ReplicationFeedback::Pageserver(block) => {
            let fb = PageserverFeedback::decode(&block).map_err(|e| {
                ProtocolError::malformed("PageserverFeedback message", e.to_string())
            })?;
            debug!(last_received = %fb.last_received_lsn, remote_consistent = %fb.remote_consistent_lsn, "pageserver feedback");
            tl.record_ps_feedback(conn_id, fb);
        }
    }
    Ok(())
}

enum SendEnd {
    Client(ClientEnd),
    /// Shutdown, deletion or a term change: the message says which.
    Stopped(String),
}

type ClientTask = tokio::task::JoinHandle<Result<ClientEnd, ProtocolError>>;

async fn client_result(client: &mut ClientTask) -> Result<SendEnd, ConnError> {
    match client.await {
        Ok(Ok(end)) => Ok(SendEnd::Client(end)),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(ConnError::Other(format!("feedback reader failed: {e}"))),
    }
}

async fn send_loop(
    writer: &mut Writer,
    ctx: &ConnCtx,
    tl: &Arc<SharedTimeline>,
    args: &StartReplication,
    reader: WalReader,
    bound: StreamBound,
    client: &mut ClientTask,
) -> Result<SendEnd, ConnError> {
    let mut changes = tl.subscribe();
    let mut reader = Some(reader);
    let mut pos = args.start_lsn;
    let mut last_sent = Instant::now();
    loop {
        if ctx.cancel.is_cancelled() {
            return Ok(SendEnd::Stopped("the safekeeper is shutting down".into()));
        }
        if tl.cancel_token().is_cancelled() {
            return Ok(SendEnd::Stopped(format!(
                "timeline {} was deleted",
                tl.ttid()
            )));
        }
        if client.is_finished() {
            return client_result(client).await;
        }
        let snap = *changes.borrow_and_update();
        let end = match bound.end_at(&snap) {
            Ok(end) => end,
            Err(changed) => return Ok(SendEnd::Stopped(changed)),
        };
        if pos < end {
            let mut chunk_end = Lsn(pos.0 + (end.0 - pos.0).min(MAX_SEND_SIZE as u64));
            if chunk_end < end {
                let aligned = chunk_end.page_start();
                if aligned > pos {
                    chunk_end = aligned;
                }
            }
            let Some(mut r) = reader.take() else {
                return Err(ConnError::Other("WAL reader lost".into()));
            };
            let (r, data) = tokio::task::spawn_blocking(move || {
                let data = r.read_to_vec(chunk_end);
                (r, data)
            })
            .await
            .map_err(|e| ConnError::Other(format!("WAL read task failed: {e}")))?;
            reader = Some(r);
            let data = data.map_err(|e| ConnError::Other(format!("reading WAL at {pos}: {e}")))?;
            // A term-bound stream must not send what a concurrent election may have cut.
            if bound.end_at(&tl.snapshot()).is_err() {
                continue;
            }
            let start = pos;
            writer
                .write_copy_data_with(|buf| {
                    XLogData::put_header(buf, start, end, now_pg_timestamp());
                    buf.put_slice(&data);
                    Ok::<(), std::convert::Infallible>(())
                })
                .unwrap_or(());
            writer.flush().await?;
            pos = chunk_end;
            last_sent = Instant::now();
            tl.update_walsender(ctx.conn_id, |i| i.sent_lsn = pos);
            continue;
        }
        let wait = KEEPALIVE_INTERVAL.saturating_sub(last_sent.elapsed());
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return Ok(SendEnd::Stopped(format!("timeline {} was deleted", tl.ttid())));
                }
            }
            _ = tokio::time::sleep(wait) => {
                let msg = ReplicationMessage::Keepalive(PrimaryKeepalive {
                    wal_end: end,
                    send_time: now_pg_timestamp(),
                    reply_requested: true,
                });
                writer
                    .write_copy_data_with(|buf| {
                        msg.encode(buf);
                        Ok::<(), std::convert::Infallible>(())
                    })
                    .unwrap_or(());
                writer.flush().await?;
                last_sent = Instant::now();
            }
            r = &mut *client => {
                return match r {
                    Ok(Ok(end)) => Ok(SendEnd::Client(end)),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(ConnError::Other(format!("feedback reader failed: {e}"))),
                };
            }
            _ = ctx.cancel.cancelled() => {}
            _ = tl.cancel_token().cancelled() => {}
        }
    }
}
