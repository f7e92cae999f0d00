//! The libpq port: accepts connections, runs the handshake (with JWT auth when configured)
//! and serves the simple-query commands of `docs/safekeeper_protocol.md` §2.
//!
//! Each connection is its own task; whatever goes wrong in it (bad input, a broken timeline,
//! a panic) ends that connection only, with an ErrorResponse where the protocol still allows
//! one and a log line naming the reason. `START_WAL_PUSH` is handed to [`crate::receive_wal`],
//! `START_REPLICATION` to [`crate::send_wal`]; the other commands are answered here.
//!
//! A connection names its timeline in the startup packet's `options` (`-c tenant_id=<hex>
//! timeline_id=<hex>`); commands that need a timeline fail (and the session goes on) when it
//! is missing or unknown.

use std::net::SocketAddr;
use std::sync::Arc;

use pq_proto::messages::FieldDescription;
use pq_proto::{FeMessage, Handshake, HandshakeConfig, ProtocolError, ServerConnection, SqlState};
use safekeeper_api::ReplicationCommand;
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use utils::auth::{Claims, JwtAuth};
use utils::{NodeId, TenantTimelineId};

use crate::global_timelines::{GlobalTimelines, GlobalTimelinesError};
use crate::http::TENANT_SCOPES;
use crate::shared_timeline::{SharedTimeline, next_conn_id};
use crate::{metrics, receive_wal, send_wal};

/// Longest simple query accepted (commands are short).
pub const MAX_QUERY_LENGTH: usize = 64 * 1024;

/// What the libpq server needs to know.
#[derive(Debug)]
pub struct WalServiceConf {
    /// This safekeeper's id (in greetings).
    pub node_id: NodeId,
    /// JWT keys for the libpq port; `None` = no authentication.
    pub auth: Option<Arc<JwtAuth>>,
}

/// A server-side libpq connection over TCP.
pub type Conn = ServerConnection<OwnedReadHalf, OwnedWriteHalf>;

/// Why a connection ended abnormally. Each is logged once with the connection's span.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer broke the protocol or the socket failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Anything else, already reported to the client when possible.
    #[error("{0}")]
    Other(String),
}

/// Everything a command handler knows about its connection.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    /// Process-wide connection number.
    pub conn_id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The timeline named in the startup options, if any.
    pub ttid: Option<TenantTimelineId>,
    /// `application_name`, if sent.
    pub application_name: Option<String>,
    /// The verified token's claims (auth on).
    pub claims: Option<Claims>,
    /// The server's settings.
    pub conf: Arc<WalServiceConf>,
    /// The timelines.
    pub timelines: Arc<GlobalTimelines>,
    /// Cancelled when the server shuts down.
    pub cancel: CancellationToken,
}

impl ConnCtx {
    /// The connection's timeline, or an error message for the client.
    pub fn timeline(&self, command: &str) -> Result<Arc<SharedTimeline>, (SqlState, String)> {
        let ttid = self.ttid.ok_or_else(|| {
            (
                SqlState::INVALID_PARAMETER_VALUE,
                format!(
                    "{command}: no timeline given (connect with options '-c tenant_id=<hex> timeline_id=<hex>')"
                ),
            )
        })?;
        self.timelines
            .get(&ttid)
            .map_err(|e| (lookup_sqlstate(&e), format!("{command}: {e}")))
    }
}

/// The SQLSTATE for a failed timeline lookup.
pub fn lookup_sqlstate(e: &GlobalTimelinesError) -> SqlState {
    match e {
        GlobalTimelinesError::NotFound(_) => SqlState::UNDEFINED_OBJECT,
        _ => SqlState::INTERNAL_ERROR,
    }
}

/// How long shutdown waits for connections to end (a WAL push flushes first).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections until `cancel` fires; each runs in its own task. Then waits (at
/// most [`SHUTDOWN_GRACE`]) for the connections, which see the same cancellation, to end.
pub async fn serve(
    listener: TcpListener,
    timelines: Arc<GlobalTimelines>,
    conf: Arc<WalServiceConf>,
    cancel: CancellationToken,
) {
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    warn!("accepting a libpq connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let conn_id = next_conn_id();
        let span = info_span!("conn", id = conn_id, %peer);
        let timelines = Arc::clone(&timelines);
        let conf = Arc::clone(&conf);
        let cancel = cancel.clone();
        tracker.spawn(
            async move {
                if let Err(e) = stream.set_nodelay(true) {
                    debug!("set_nodelay: {e}");
                }
                let (r, w) = stream.into_split();
                let conn = ServerConnection::new(r, w);
                match handle_connection(conn, conn_id, peer, timelines, conf, cancel).await {
                    Ok(()) => debug!("connection closed"),
                    Err(ConnError::Protocol(ProtocolError::Io(e))) => {
                        info!("connection ended: {e}")
                    }
                    Err(e) => warn!("connection ended with error: {e}"),
                }
            }
            .instrument(span),
        );
    }
    info!("libpq server stopped accepting connections");
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            connections = tracker.len(),
            "connections still open after the shutdown grace period"
        );
    }
}

async fn handle_connection(
    mut conn: Conn,
    conn_id: u64,
    peer: SocketAddr,
    timelines: Arc<GlobalTimelines>,
    conf: Arc<WalServiceConf>,
    cancel: CancellationToken,
) -> Result<(), ConnError> {
    let handshake = HandshakeConfig {
        auth: conf.auth.as_deref(),
        allowed_scopes: TENANT_SCOPES,
        ..HandshakeConfig::default()
    };
    let (params, claims) = match conn.handshake(&handshake).await? {
        Handshake::Ready { params, claims } => (params, claims),
        Handshake::Cancel { .. } | Handshake::Closed => return Ok(()),
    };
    let ttid = match params.tenant_timeline_id() {
        Ok(t) => Some(t),
        // No timeline is fine for SET/SHOW; a malformed one is not.
        Err(e)
            if params.setting("tenant_id").ok().flatten().is_none()
                && params.setting("timeline_id").ok().flatten().is_none() =>
        {
            debug!("no timeline in startup options: {e}");
            None
        }
        Err(e) => {
            conn.write_message(&pq_proto::BeMessage::ErrorResponse {
                code: SqlState::INVALID_PARAMETER_VALUE,
                message: &e.to_string(),
                fatal: true,
            });
            let _ = conn.flush().await;
            return Err(e.into());
        }
    };
    let ctx = ConnCtx {
        conn_id,
        peer,
        ttid,
        application_name: params.application_name().map(str::to_string),
        claims,
        conf,
        timelines,
        cancel,
    };
    debug!(ttid = ?ctx.ttid, app = ?ctx.application_name, "connection ready");
    loop {
        let msg = tokio::select! {
            _ = ctx.cancel.cancelled() => {
                conn.write_message(&pq_proto::BeMessage::ErrorResponse {
                    code: SqlState::ADMIN_SHUTDOWN,
                    message: "the safekeeper is shutting down",
                    fatal: true,
                });
                let _ = conn.flush().await;
                return Ok(());
            }
            m = conn.read_message(MAX_QUERY_LENGTH) => m,
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) => {
                report_fatal(&mut conn, &e).await;
                return Err(e.into());
            }
        };
        match msg {
            FeMessage::Query(q) => {
                let q = q.trim().to_string();
                if q.is_empty() {
                    conn.write_message(&pq_proto::BeMessage::EmptyQueryResponse);
                    conn.write_message(&pq_proto::BeMessage::ReadyForQuery);
                    conn.flush().await?;
                    continue;
                }
                match ReplicationCommand::parse(&q) {
                    Ok(cmd) => {
                        if let Some(next) = run_command(conn, &ctx, cmd).await? {
                            conn = next;
                        } else {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        metrics::PG_QUERIES.with_label_values(&["invalid"]).inc();
                        info!("refused query {q:?}: {e}");
                        conn.write_error_and_ready(SqlState::SYNTAX_ERROR, &e.to_string());
                        conn.flush().await?;
                    }
                }
            }
            FeMessage::Terminate => return Ok(()),
            FeMessage::Sync | FeMessage::Flush => {}
            other => {
                let e = ProtocolError::Unexpected {
                    got: other.name(),
                    expected: "a simple Query (the extended query protocol is not supported)",
                };
                report_fatal(&mut conn, &e).await;
                return Err(e.into());
            }
        }
    }
}

/// Sends a FATAL naming `e` (best effort: the connection is closing anyway).
pub async fn report_fatal(conn: &mut Conn, e: &ProtocolError) {
    if matches!(e, ProtocolError::Io(_)) {
        return;
    }
    conn.write_message(&pq_proto::BeMessage::ErrorResponse {
        code: e.sql_state(),
        message: &e.to_string(),
        fatal: true,
    });
    let _ = conn.flush().await;
}

/// Runs one command; returns the connection if the session goes on.
async fn run_command(
    mut conn: Conn,
    ctx: &ConnCtx,
    cmd: ReplicationCommand,
) -> Result<Option<Conn>, ConnError> {
    let name = match &cmd {
        ReplicationCommand::IdentifySystem => "IDENTIFY_SYSTEM",
        ReplicationCommand::TimelineStatus => "TIMELINE_STATUS",
        ReplicationCommand::StartWalPush { .. } => "START_WAL_PUSH",
        ReplicationCommand::StartReplication(_) => "START_REPLICATION",
        ReplicationCommand::Set { .. } => "SET",
        ReplicationCommand::Show { .. } => "SHOW",
    };
    metrics::PG_QUERIES.with_label_values(&[name]).inc();
    match cmd {
        ReplicationCommand::IdentifySystem => {
            match ctx.timeline(name) {
                Ok(tl) => {
                    let snap = tl.snapshot();
                    let recovery = ctx.application_name.as_deref().is_some_and(|a| {
                        a == "wal_proposer_recovery" || a.starts_with("safekeeper")
                    });
                    let pos = if recovery {
                        snap.flush_lsn
                    } else {
                        snap.commit_lsn
                    };
                    let sysid = snap.system_id.to_string();
                    let pos = pos.to_string();
                    conn.write_result_set(
                        &[
                            FieldDescription::text("systemid"),
                            FieldDescription::int4("timeline"),
                            FieldDescription::text("xlogpos"),
                            FieldDescription::text("dbname"),
                        ],
                        &[&[
                            Some(sysid.as_bytes()),
                            Some(b"1"),
                            Some(pos.as_bytes()),
                            None,
                        ]],
                        "IDENTIFY_SYSTEM",
                    );
                    conn.write_message(&pq_proto::BeMessage::ReadyForQuery);
                }
                Err((code, msg)) => refuse(&mut conn, code, &msg),
            }
            conn.flush().await?;
        }
        ReplicationCommand::TimelineStatus => {
            match ctx.timeline(name) {
                Ok(tl) => {
                    let snap = tl.snapshot();
                    let (flush, commit) = (snap.flush_lsn.to_string(), snap.commit_lsn.to_string());
                    conn.write_result_set(
                        &[
                            FieldDescription::text("flush_lsn"),
                            FieldDescription::text("commit_lsn"),
                        ],
                        &[&[Some(flush.as_bytes()), Some(commit.as_bytes())]],
                        "TIMELINE_STATUS",
                    );
                    conn.write_message(&pq_proto::BeMessage::ReadyForQuery);
                }
                Err((code, msg)) => refuse(&mut conn, code, &msg),
            }
            conn.flush().await?;
        }
        ReplicationCommand::Set { .. } => {
            conn.write_message(&pq_proto::BeMessage::CommandComplete("SET"));
            conn.write_message(&pq_proto::BeMessage::ReadyForQuery);
            conn.flush().await?;
        }
        ReplicationCommand::Show { name: param } => {
            match show_value(ctx, &param) {
                Some(value) => {
                    conn.write_result_set(
                        &[FieldDescription::text(&param)],
                        &[&[Some(value.as_bytes())]],
                        "SHOW",
                    );
                    conn.write_message(&pq_proto::BeMessage::ReadyForQuery);
                }
                None => refuse(
                    &mut conn,
                    SqlState::UNDEFINED_OBJECT,
                    &format!("SHOW: unrecognized configuration parameter \"{param}\""),
                ),
            }
            conn.flush().await?;
        }
        ReplicationCommand::StartWalPush {
            allow_timeline_creation,
            ..
        } => {
            receive_wal::handle(conn, ctx, allow_timeline_creation).await?;
            return Ok(None);
        }
        ReplicationCommand::StartReplication(args) => {
            return send_wal::handle(conn, ctx, args).await;
        }
    }
    Ok(Some(conn))
}

/// An ERROR for the command; the session goes on.
pub fn refuse(conn: &mut Conn, code: SqlState, msg: &str) {
    info!("command refused: {msg}");
    conn.write_error_and_ready(code, msg);
}

fn show_value(ctx: &ConnCtx, param: &str) -> Option<String> {
    match param {
        "wal_segment_size" => {
            let seg = ctx
                .ttid
                .and_then(|t| ctx.timelines.get(&t).ok())
                .map_or(16 * 1024 * 1024, |tl| tl.snapshot().wal_seg_size);
            Some(format!("{}MB", seg / (1024 * 1024)))
        }
        // The connection's timeline as a walproposer sees it before campaigning, without
        // bumping any term: `{"term":N,"last_log_term":N,"last_byte_term":N|null,
        // "flush_lsn":"X/Y"}`. A timeline
        // this safekeeper does not have yet holds no WAL: term 0 at 0/0, so the walproposer
        // can tell "nothing here" from "cannot say" (an error: not a Strata safekeeper).
        "strata_timeline_position" => ctx.ttid.and_then(|t| {
            let (term, last_log_term, last_byte_term, flush_lsn) = match ctx.timelines.get(&t) {
                Ok(tl) => {
                    let s = tl.snapshot();
                    (s.term, s.last_log_term, s.last_byte_term, s.flush_lsn)
                }
                Err(crate::global_timelines::GlobalTimelinesError::NotFound(_)) => {
                    (0, 0, None, utils::Lsn::INVALID)
                }
                // Broken: it may hold WAL we cannot read; say nothing rather than "empty".
                Err(_) => return None,
            };
            Some(format!(
                "{{\"term\":{term},\"last_log_term\":{last_log_term},\"last_byte_term\":{},\"flush_lsn\":\"{flush_lsn}\"}}",
                last_byte_term.map_or("null".to_string(), |t| t.to_string())
            ))
        }),
        "server_version" => Some("15.0".into()),
        "server_version_num" => Some("150000".into()),
        "integer_datetimes" | "standard_conforming_strings" => Some("on".into()),
        "data_directory_mode" => Some("0700".into()),
        "server_encoding" | "client_encoding" => Some("UTF8".into()),
        "datestyle" => Some("ISO, MDY".into()),
        "timezone" => Some("UTC".into()),
        _ => None,
    }
}
