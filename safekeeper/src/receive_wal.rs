//! `START_WAL_PUSH`: a walproposer drives this safekeeper's acceptor for one timeline.
//!
//! ```text
//!  socket ──► network reader ──► queue (256 msgs) ──► disk thread ──► replies (16) ──► network writer ──► socket
//!             (decode)                                 (Acceptor)  │        ▲           (encode + feedback)
//!                                                    flush request ▼        │ AppendResponse
//!                                                              flush thread (fdatasync)
//! ```
//!
//! * The **network reader** (async) decodes each CopyData as a [`ProposerMessage`] and
//!   queues it; a malformed message ends the connection with an ErrorResponse naming the
//!   message and field.
//! * The **disk thread** (a dedicated OS thread, because the acceptor does blocking file
//!   I/O) takes everything queued, one acceptor call per message, and asks for a flush
//!   **when the queue drains**, and while it does not, at least every
//!   [`crate::wal_storage::FLUSH_INTERVAL`] and every [`FLUSH_BYTES`] of WAL.
//! * The **flush thread** serves those requests: a [`crate::wal_storage::FlushTicket`] under
//!   the acceptor lock, the fdatasync without it (so the disk thread goes on writing the
//!   next messages meanwhile), the new flush and commit LSNs under the lock again, and
//!   exactly one AppendResponse per flush. Requests made during a flush coalesce into one
//!   more. Nothing is reported flushed before its fdatasync returned, and a failed one ends
//!   the connection and leaves the storage broken until the timeline is opened again.
//! * When the reader ends (disconnect, CopyDone, shutdown) or the acceptor refuses a
//!   message, what was appended before is flushed before the threads exit.
//! * The **network writer** (async) sends replies, adding the standbys' hot-standby
//!   feedback and the latest pageserver feedback to each AppendResponse.
//!
//! An acceptor error (append out of order, a refused election, a storage failure) ends the
//! connection with an ErrorResponse carrying the error; the timeline stays usable for the
//! next proposer. A proposer with a lower term is not an error: it is answered with the
//! higher term and decides to go away itself.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use pq_proto::messages::BeMessage;
use pq_proto::{FeMessage, ProtocolError, SqlState};
use safekeeper_api::models::{ProposerPhase, WalProposerInfo};
use safekeeper_api::proto::{MAX_APPEND_REQUEST_SIZE, ProposerGreeting};
use safekeeper_api::{AcceptorMessage, ProposerMessage};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info};
use utils::TenantTimelineId;
use utils::auth::authorize;

use crate::acceptor::Acceptor;
use crate::global_timelines::GlobalTimelinesError;
use crate::http::TENANT_SCOPES;
use crate::shared_timeline::SharedTimeline;
use crate::wal_service::{Conn, ConnCtx, ConnError, lookup_sqlstate};

/// Proposer messages queued between the network reader and the disk thread.
pub const MSG_QUEUE_SIZE: usize = 256;
/// Replies queued between the disk thread and the network writer.
pub const REPLY_QUEUE_SIZE: usize = 16;
/// While appends keep arriving, flush at least once per this many WAL bytes, so a
/// saturating proposer still gets steady AppendResponses (its commit LSN moves) and the
/// disk gets steady writes rather than a whole segment's fdatasync at once.
pub const FLUSH_BYTES: usize = 1024 * 1024;

/// Failpoint evaluated on the flush thread before each flush (builds with `testing`).
pub const FAILPOINT_BEFORE_FLUSH: &str = "wal-push-before-flush";

/// What the disk thread hands the writer.
#[derive(Debug)]
enum Reply {
    Msg(AcceptorMessage),
    /// The acceptor refused a message; the connection ends with this error.
    Error(String),
}

/// Why the network reader stopped.
#[derive(Debug)]
enum ReadEnd {
    /// EOF, Terminate or CopyDone.
    Closed,
    /// The server is shutting down or the timeline was deleted.
    Cancelled,
}

/// Serves one `START_WAL_PUSH` session until it ends.
pub async fn handle(mut conn: Conn, ctx: &ConnCtx, allow_creation: bool) -> Result<(), ConnError> {
    conn.write_message(&BeMessage::CopyBothResponse);
    conn.flush().await?;
    let (mut reader, mut writer) = conn.into_split();

    // The greeting names the timeline; nothing else may come first.
    let first = tokio::select! {
        _ = ctx.cancel.cancelled() => return Ok(()),
        m = reader.read_fe_message(MAX_APPEND_REQUEST_SIZE) => m,
    };
    let greeting = match first.and_then(|m| decode(m, "ProposerGreeting")) {
        Ok(Some(ProposerMessage::Greeting(g))) => g,
        Ok(Some(other)) => {
            let e = ProtocolError::Unexpected {
                got: other.name().to_string(),
                expected: "ProposerGreeting",
            };
            return fail(&mut writer, e.sql_state(), e.to_string()).await;
        }
        Ok(None) => return Ok(()),
        Err(e) => return fail(&mut writer, e.sql_state(), e.to_string()).await,
    };
    let ttid = TenantTimelineId::new(greeting.tenant_id, greeting.timeline_id);
    if let Some(conn_ttid) = ctx.ttid
        && conn_ttid != ttid
    {
        let msg = format!(
            "ProposerGreeting names timeline {ttid}, but the connection was opened for {conn_ttid}"
        );
        return fail(&mut writer, SqlState::INVALID_PARAMETER_VALUE, msg).await;
    }
    if let Some(claims) = &ctx.claims
        && let Err(e) = authorize(claims, TENANT_SCOPES, Some(ttid.tenant_id))
    {
        return fail(&mut writer, SqlState::INVALID_AUTHORIZATION, e.to_string()).await;
    }
    let tl = {
        let timelines = Arc::clone(&ctx.timelines);
        let (mconf, server) = (greeting.mconf.clone(), greeting.server_info());
        let r = tokio::task::spawn_blocking(move || {
            timelines.get_or_create(ttid, &mconf, server, allow_creation)
        })
        .await
        .map_err(|e| ConnError::Other(format!("timeline lookup task failed: {e}")))?;
        match r {
            Ok((tl, _created)) => tl,
            Err(e) => {
                let code = match &e {
                    GlobalTimelinesError::NotFound(_) => SqlState::UNDEFINED_OBJECT,
                    other => lookup_sqlstate(other),
                };
                let msg = match e {
                    GlobalTimelinesError::NotFound(t) => format!(
                        "timeline {t} not found and START_WAL_PUSH was given allow_timeline_creation 'false'"
                    ),
                    other => other.to_string(),
                };
                return fail(&mut writer, code, msg).await;
            }
        }
    };
    let span = tracing::info_span!("wal_push", ttid = %ttid);
    run_pipeline(reader, &mut writer, ctx, tl, greeting)
        .instrument(span)
        .await
}

type Reader = pq_proto::framed::MessageReader<tokio::net::tcp::OwnedReadHalf>;
type Writer = pq_proto::framed::MessageWriter<tokio::net::tcp::OwnedWriteHalf>;

fn decode(
    msg: Option<FeMessage>,
    expected: &'static str,
) -> Result<Option<ProposerMessage>, ProtocolError> {
    match msg {
        None => Ok(None),
        Some(FeMessage::CopyData(bytes)) => ProposerMessage::decode_bytes(&bytes)
            .map(Some)
            .map_err(|e| ProtocolError::malformed("proposer message", e.to_string())),
        Some(FeMessage::CopyDone | FeMessage::Terminate) => Ok(None),
        Some(other) => Err(ProtocolError::Unexpected {
            got: other.name(),
            expected,
        }),
    }
}

/// Sends an ERROR and ends the session.
async fn fail(writer: &mut Writer, code: SqlState, msg: String) -> Result<(), ConnError> {
    writer.write_be(&BeMessage::ErrorResponse {
        code,
        message: &msg,
        fatal: false,
    });
    // The session ends either way; the error is what gets logged.
    let _ = writer.flush().await;
    Err(ConnError::Other(msg))
}

async fn run_pipeline(
    reader: Reader,
    writer: &mut Writer,
    ctx: &ConnCtx,
    tl: Arc<SharedTimeline>,
    greeting: ProposerGreeting,
) -> Result<(), ConnError> {
    let _registration = tl.register_walproposer(WalProposerInfo {
        conn_id: ctx.conn_id,
        remote_addr: ctx.peer.to_string(),
        phase: ProposerPhase::Voting,
        term: None,
    });
    info!("walproposer connected");
    let cancel = CancellationToken::new();
    let (msg_tx, msg_rx) = mpsc::channel(MSG_QUEUE_SIZE);
    let (reply_tx, reply_rx) = mpsc::channel(REPLY_QUEUE_SIZE);

    let disk = {
        let tl = Arc::clone(&tl);
        let conn_id = ctx.conn_id;
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name(format!("wal-push-{conn_id}"))
            .spawn(move || {
                let _enter = span.enter();
                disk_loop(&tl, conn_id, greeting, msg_rx, &reply_tx)
            })
            .map_err(|e| ConnError::Other(format!("spawning the WAL disk thread: {e}")))?
    };

    let read_cancel = cancel.clone();
    let server_cancel = ctx.cancel.clone();
    let tl_cancel = tl.cancel_token().clone();
    let read_task = tokio::spawn(
        async move {
            tokio::select! {
                r = read_loop(reader, msg_tx) => r,
                _ = read_cancel.cancelled() => Ok(ReadEnd::Closed),
                _ = server_cancel.cancelled() => Ok(ReadEnd::Cancelled),
                _ = tl_cancel.cancelled() => Ok(ReadEnd::Cancelled),
            }
        }
        .instrument(tracing::Span::current()),
    );

    let write_result = write_loop(writer, reply_rx, &tl).await;
    // The disk thread has exited (its reply channel closed): stop reading if still at it.
    cancel.cancel();
    let read_result = read_task
        .await
        .map_err(|e| ConnError::Other(format!("reader task failed: {e}")))?;
    // The thread has exited or is about to (its channel is closed); joining is quick.
    let disk_result = tokio::task::spawn_blocking(move || disk.join())
        .await
        .map_err(|e| ConnError::Other(format!("joining the WAL disk thread: {e}")))?
        .map_err(|_| ConnError::Other("the WAL disk thread panicked".into()))?;

    if let Err(msg) = write_result {
        // The acceptor refused something; the client has the error.
        return Err(ConnError::Other(msg));
    }
    if let Err(e) = disk_result {
        return Err(ConnError::Other(e));
    }
    match read_result {
        Ok(ReadEnd::Closed) => {
            info!("walproposer disconnected");
            Ok(())
        }
        Ok(ReadEnd::Cancelled) => {
            let msg = if tl.cancel_token().is_cancelled() && !ctx.cancel.is_cancelled() {
                format!("timeline {} was deleted", tl.ttid())
            } else {
                "the safekeeper is shutting down".to_string()
            };
            writer.write_be(&BeMessage::ErrorResponse {
                code: SqlState::ADMIN_SHUTDOWN,
                message: &msg,
                fatal: true,
            });
            let _ = writer.flush().await;
            info!("WAL push ended: {msg}");
            Ok(())
        }
        Err(e) => {
            if !matches!(e, ProtocolError::Io(_)) {
                writer.write_be(&BeMessage::ErrorResponse {
                    code: e.sql_state(),
                    message: &e.to_string(),
                    fatal: true,
                });
                let _ = writer.flush().await;
            }
            Err(e.into())
        }
    }
}

async fn read_loop(
    mut reader: Reader,
    tx: mpsc::Sender<ProposerMessage>,
) -> Result<ReadEnd, ProtocolError> {
    loop {
        let msg = reader.read_fe_message(MAX_APPEND_REQUEST_SIZE).await?;
        match decode(msg, "CopyData with a proposer message")? {
            None => return Ok(ReadEnd::Closed),
            Some(m) => {
                if tx.send(m).await.is_err() {
                    // The disk thread stopped (it reports why).
                    return Ok(ReadEnd::Closed);
                }
            }
        }
    }
}

/// Sends replies until the disk thread exits. Returns the acceptor's error, if it ended
/// with one (already sent to the client).
async fn write_loop(
    writer: &mut Writer,
    mut rx: mpsc::Receiver<Reply>,
    tl: &SharedTimeline,
) -> Result<(), String> {
    let mut socket_ok = true;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(reply) = next.take() {
            match reply {
                Reply::Msg(mut msg) => {
                    if let AcceptorMessage::AppendResponse(r) = &mut msg {
                        r.hs_feedback = tl.hs_feedback();
                        r.pageserver_feedback = tl.last_ps_feedback();
                    }
                    if let Err(e) = writer.write_copy_data_with(|buf| msg.encode(buf)) {
                        // Our own message failed to encode: a bug, reported as an error.
                        let text = format!("encoding {}: {e}", msg.name());
                        writer.write_be(&BeMessage::ErrorResponse {
                            code: SqlState::INTERNAL_ERROR,
                            message: &text,
                            fatal: true,
                        });
                        let _ = writer.flush().await;
                        return Err(text);
                    }
                }
                Reply::Error(text) => {
                    writer.write_be(&BeMessage::ErrorResponse {
                        code: SqlState::PROTOCOL_VIOLATION,
                        message: &text,
                        fatal: true,
                    });
                    let _ = writer.flush().await;
                    return Err(text);
                }
            }
            next = rx.try_recv().ok();
        }
        if socket_ok && let Err(e) = writer.flush().await {
            // Keep draining so the disk thread is never blocked on a full channel; the
            // reader sees the broken socket too.
            debug!("sending replies failed: {e}");
            socket_ok = false;
        }
    }
    Ok(())
}

/// The disk side: the only code that appends to the acceptor for this connection. Flushes
/// are requested from the flusher thread (scoped to this function), so the next messages
/// are written while the previous ones are fdatasynced.
fn disk_loop(
    tl: &SharedTimeline,
    conn_id: u64,
    greeting: ProposerGreeting,
    mut rx: mpsc::Receiver<ProposerMessage>,
    tx: &mpsc::Sender<Reply>,
) -> Result<(), String> {
    let flusher = &Flusher::default();
    std::thread::scope(|scope| {
        let span = tracing::Span::current();
        let flush_thread = std::thread::Builder::new()
            .name(format!("wal-flush-{conn_id}"))
            .spawn_scoped(scope, move || {
                let _enter = span.enter();
                flusher.run(tl, tx)
            })
            .map_err(|e| format!("spawning the WAL flush thread: {e}"))?;
        // A panic below must still let the flusher exit: the scope waits for it before
        // the panic goes on, and a flusher left waiting would hang the connection forever.
        let _close_on_unwind = CloseOnDrop(flusher);
        let mut state = DiskState {
            tl,
            conn_id,
            tx,
            flusher,
            need_flush: false,
            unflushed_bytes: 0,
        };
        let result = state.run(greeting, &mut rx);
        // Whatever was appended gets flushed (and acknowledged) before the thread exits.
        state.request_flush_if_needed();
        flusher.close();
        let flushed = flush_thread
            .join()
            .map_err(|_| "the WAL flush thread panicked".to_string())?;
        result.and(flushed)
    })
}

/// Closes the flusher when dropped (also while unwinding from a panic).
struct CloseOnDrop<'a>(&'a Flusher);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Flush requests from the disk thread to the flusher thread. Requests made while a flush
/// runs coalesce into one more flush.
#[derive(Debug, Default)]
struct Flusher {
    state: Mutex<FlushState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct FlushState {
    requested: bool,
    closing: bool,
    failed: bool,
}

impl Flusher {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlushState> {
        crate::lock_ignoring_poison(&self.state)
    }

    fn request(&self) {
        self.lock().requested = true;
        self.wake.notify_one();
    }

    /// The flusher exits after serving any pending request.
    fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }

    fn failed(&self) -> bool {
        self.lock().failed
    }

    /// The flusher thread: for each request, a ticket under the acceptor lock, the
    /// fdatasync without it, the new positions under it again, and one AppendResponse.
    fn run(&self, tl: &SharedTimeline, tx: &mpsc::Sender<Reply>) -> Result<(), String> {
        loop {
            {
                let mut st = self.lock();
                while !st.requested && !st.closing {
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if !st.requested {
                    return Ok(());
                }
                st.requested = false;
            }
            if let Err(msg) = self.flush_once(tl, tx) {
                self.lock().failed = true;
                let _ = tx.blocking_send(Reply::Error(msg.clone()));
                return Err(msg);
            }
        }
    }

    fn flush_once(&self, tl: &SharedTimeline, tx: &mpsc::Sender<Reply>) -> Result<(), String> {
        // Test hook: `return` fails the flush (as an fsync error would end the connection),
        // `sleep(N)`/`pause` hold it.
        if utils::failpoint::eval(FAILPOINT_BEFORE_FLUSH).is_some() {
            return Err(format!("failpoint {FAILPOINT_BEFORE_FLUSH}"));
        }
        let ticket = tl
            .with_acceptor(|a| a.begin_flush())
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let synced = ticket.as_ref().map_or(Ok(()), |t| t.sync());
        let resp = tl
            .with_acceptor(|a| a.complete_flush(ticket, synced))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        tx.blocking_send(Reply::Msg(AcceptorMessage::AppendResponse(resp)))
            .map_err(|_| "the connection's writer has stopped".to_string())
    }
}

struct DiskState<'a> {
    tl: &'a SharedTimeline,
    conn_id: u64,
    tx: &'a mpsc::Sender<Reply>,
    flusher: &'a Flusher,
    /// Appends were processed since the last flush request.
    need_flush: bool,
    /// WAL bytes appended since the last flush request.
    unflushed_bytes: usize,
}

impl DiskState<'_> {
    fn run(
        &mut self,
        greeting: ProposerGreeting,
        rx: &mut mpsc::Receiver<ProposerMessage>,
    ) -> Result<(), String> {
        self.process(ProposerMessage::Greeting(greeting))?;
        loop {
            let Some(msg) = rx.blocking_recv() else {
                return Ok(());
            };
            self.check_flusher()?;
            self.process(msg)?;
            loop {
                match rx.try_recv() {
                    Ok(msg) => {
                        self.process(msg)?;
                        if self.need_flush
                            && (self.unflushed_bytes >= FLUSH_BYTES || self.flush_due()?)
                        {
                            self.request_flush_if_needed();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            // The queue drained: make what arrived durable.
            self.request_flush_if_needed();
        }
    }

    fn check_flusher(&self) -> Result<(), String> {
        if self.flusher.failed() {
            Err("flushing WAL failed".to_string())
        } else {
            Ok(())
        }
    }

    fn acceptor<R>(&self, f: impl FnOnce(&mut Acceptor) -> R) -> Result<R, String> {
        self.tl
            .with_acceptor(f)
            .map_err(|e| self.fail(e.to_string()))
    }

    /// Reports a fatal error to the writer (best effort) and returns it.
    fn fail(&self, msg: String) -> String {
        let _ = self.tx.blocking_send(Reply::Error(msg.clone()));
        msg
    }

    fn send(&self, msg: AcceptorMessage) -> Result<(), String> {
        // A closed channel means the writer is gone (socket dead): stop.
        self.tx
            .blocking_send(Reply::Msg(msg))
            .map_err(|_| "the connection's writer has stopped".to_string())
    }

    fn process(&mut self, msg: ProposerMessage) -> Result<(), String> {
        let append_len = match &msg {
            ProposerMessage::AppendRequest(a) => Some(a.wal_data.len()),
            _ => None,
        };
        let elected_term = match &msg {
            ProposerMessage::Elected(e) => Some(e.term),
            _ => None,
        };
        let result = self.acceptor(|a| a.process_msg(&msg))?;
        match result {
            Ok(reply) => {
                if let Some(term) = elected_term
                    && reply.is_none()
                {
                    self.tl.update_walproposer(self.conn_id, |i| {
                        i.phase = ProposerPhase::Streaming;
                        i.term = Some(term);
                    });
                }
                if let Some(len) = append_len
                    && reply.is_none()
                {
                    self.need_flush = true;
                    self.unflushed_bytes += len;
                }
                if let Some(reply) = reply {
                    self.send(reply)?;
                }
                Ok(())
            }
            Err(e) => Err(self.fail(e.to_string())),
        }
    }

    fn flush_due(&self) -> Result<bool, String> {
        let now = Instant::now();
        self.acceptor(|a| a.flush_due(now))
    }

    fn request_flush_if_needed(&mut self) {
        if self.need_flush {
            self.need_flush = false;
            self.unflushed_bytes = 0;
            self.flusher.request();
        }
    }
}
