//! The page service: libpq on `listen_pg_addr`, JWT-checked when auth is on.
//!
//! `pagestream <tenant> <timeline>` (also `pagestream_v2`) switches to CopyBoth; each
//! CopyData from the client is one request, each CopyData back one response, in request
//! order. Requests (big-endian): `tag u8 | request_lsn u64 | not_modified_since u64 | body`
//! — 0 exists(rel), 1 nblocks(rel), 2 getpage(rel, blkno u32), 3 dbsize(dbnode u32),
//! 4 get_slru_segment(kind u8, segno u32), with rel = `spc u32 | db u32 | rel u32 | fork u8`.
//! Responses: 100 exists `u8`, 101 nblocks `u32`, 102 page (8192 bytes), 103 error
//! (C string), 104 dbsize `i64`, 105 slru `u32 nblocks | data`.
//!
//! LSN rules: `request_lsn` 0 or below `not_modified_since` is an error; when
//! `not_modified_since` is beyond the last ingested record the read waits for it (up to
//! `wait_lsn_timeout`) and reads there; otherwise it reads at `min(request_lsn,
//! last_record_lsn)`. A bad request gets an error response and the stream goes on.
//!
//! Pipelining: up to [`PIPELINE_DEPTH`] requests are served concurrently; answers still
//! go out in request order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use pageserver_api::reltag::{MAX_FORKNUM, RelTag};
use postgres_ffi::types::DEFAULTTABLESPACE_OID;
use pq_proto::error::SqlState;
use pq_proto::messages::{BeMessage, FeMessage};
use pq_proto::server::{Handshake, HandshakeConfig, ServerConnection};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use utils::auth::{JwtAuth, Scope, authorize};
use utils::{Lsn, TenantId, TimelineId};

use crate::keyspace;
use crate::metrics;
use crate::tenant_manager::TenantManager;
use crate::timeline::read::ReadError;
use crate::timeline::{Timeline, TimelineState};
use crate::walingest::SlruKind;

/// Requests in flight per connection.
pub const PIPELINE_DEPTH: usize = 32;
const MAX_MESSAGE: usize = 1 << 20;
const SCOPES: &[Scope] = &[Scope::PageServerApi, Scope::Tenant];

/// A decoded page-stream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageRequest {
    /// Does the relation exist?
    Exists(RelTag),
    /// Its size in blocks.
    Nblocks(RelTag),
    /// One block.
    GetPage(RelTag, u32),
    /// A database's size in bytes.
    DbSize(u32),
    /// A whole SLRU segment.
    GetSlruSegment(SlruKind, u32),
}

/// A request with its LSNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Read at (at most) this LSN.
    pub request_lsn: Lsn,
    /// The page has not changed since this LSN.
    pub not_modified_since: Lsn,
    /// What.
    pub req: PageRequest,
}

fn rel(b: &mut Bytes) -> Result<RelTag, String> {
    if b.remaining() < 13 {
        return Err("truncated relation tag".into());
    }
    let r = RelTag {
        spcnode: b.get_u32(),
        dbnode: b.get_u32(),
        relnode: b.get_u32(),
        forknum: b.get_u8(),
    };
    if r.forknum > MAX_FORKNUM {
        return Err(format!("fork number {} does not exist", r.forknum));
    }
    Ok(r)
}

impl Request {
    /// Parses one CopyData payload.
    pub fn decode(mut b: Bytes) -> Result<Request, String> {
        if b.remaining() < 17 {
            return Err(format!("request of {} bytes is too short", b.remaining()));
        }
        let tag = b.get_u8();
        let request_lsn = Lsn(b.get_u64());
        let not_modified_since = Lsn(b.get_u64());
        let req = match tag {
            0 => PageRequest::Exists(rel(&mut b)?),
            1 => PageRequest::Nblocks(rel(&mut b)?),
            2 => {
                let r = rel(&mut b)?;
                if b.remaining() < 4 {
                    return Err("truncated block number".into());
                }
                PageRequest::GetPage(r, b.get_u32())
            }
            3 => {
                if b.remaining() < 4 {
                    return Err("truncated database oid".into());
                }
                PageRequest::DbSize(b.get_u32())
            }
            4 => {
                if b.remaining() < 5 {
                    return Err("truncated SLRU request".into());
                }
                let kind = match b.get_u8() {
                    0 => SlruKind::Clog,
                    1 => SlruKind::MultiXactMembers,
                    2 => SlruKind::MultiXactOffsets,
                    k => return Err(format!("unknown SLRU kind {k}")),
                };
                PageRequest::GetSlruSegment(kind, b.get_u32())
            }
            t => return Err(format!("unknown request tag {t}")),
        };
        if b.has_remaining() {
            return Err(format!("{} trailing bytes", b.remaining()));
        }
        Ok(Request {
            request_lsn,
            not_modified_since,
            req,
        })
    }

    /// The wire form (clients and tests).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        let put_rel = |b: &mut BytesMut, r: &RelTag| {
            b.put_u32(r.spcnode);
            b.put_u32(r.dbnode);
            b.put_u32(r.relnode);
            b.put_u8(r.forknum);
        };
        let tag = match &self.req {
            PageRequest::Exists(_) => 0,
            PageRequest::Nblocks(_) => 1,
            PageRequest::GetPage(..) => 2,
            PageRequest::DbSize(_) => 3,
            PageRequest::GetSlruSegment(..) => 4,
        };
        b.put_u8(tag);
        b.put_u64(self.request_lsn.0);
        b.put_u64(self.not_modified_since.0);
        match &self.req {
            PageRequest::Exists(r) | PageRequest::Nblocks(r) => put_rel(&mut b, r),
            PageRequest::GetPage(r, blk) => {
                put_rel(&mut b, r);
                b.put_u32(*blk);
            }
            PageRequest::DbSize(db) => b.put_u32(*db),
            PageRequest::GetSlruSegment(kind, segno) => {
                b.put_u8(keyspace::slru_kind_number(*kind) as u8);
                b.put_u32(*segno);
            }
        }
        b.freeze()
    }

    fn kind(&self) -> &'static str {
        match self.req {
            PageRequest::Exists(_) => "exists",
            PageRequest::Nblocks(_) => "nblocks",
            PageRequest::GetPage(..) => "getpage",
            PageRequest::DbSize(_) => "dbsize",
            PageRequest::GetSlruSegment(..) => "get_slru_segment",
        }
    }
}

fn error_response(msg: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(msg.len() + 2);
    b.put_u8(103);
    b.put_slice(msg.replace('\0', " ").as_bytes());
    b.put_u8(0);
    b.freeze()
}

/// The LSN to read at, waiting for WAL when the request needs it.
async fn effective_lsn(tl: &Timeline, r: &Request, wait: Duration) -> Result<Lsn, ReadError> {
    if r.request_lsn == Lsn(0) {
        return Err(ReadError::BadRequest("request_lsn 0 is invalid".into()));
    }
    if r.request_lsn < r.not_modified_since {
        return Err(ReadError::BadRequest(format!(
            "request_lsn {} is below not_modified_since {}",
            r.request_lsn, r.not_modified_since
        )));
    }
    let last = tl.last_record_lsn();
    let lsn = if r.not_modified_since > last {
        tl.wait_lsn(r.not_modified_since, wait).await?;
        r.not_modified_since
    } else {
        r.request_lsn.min(last)
    };
    tl.check_read_lsn(lsn)?;
    Ok(lsn)
}

/// Serves one request: the response payload.
pub async fn handle(tl: &Timeline, r: &Request, wait: Duration) -> Bytes {
    let started = Instant::now();
    let result: Result<Bytes, ReadError> = async {
        let lsn = effective_lsn(tl, r, wait).await?;
        let mut b = BytesMut::new();
        match &r.req {
            PageRequest::Exists(rel) => {
                b.put_u8(100);
                b.put_u8(u8::from(tl.get_rel_size(*rel, lsn).await?.is_some()));
            }
            PageRequest::Nblocks(rel) => {
                let n = tl.get_rel_size(*rel, lsn).await?.ok_or_else(|| {
                    ReadError::NotFound(format!("relation {rel} does not exist at {lsn}"))
                })?;
                b.put_u8(101);
                b.put_u32(n);
            }
            PageRequest::GetPage(rel, blk) => {
                let page = tl.get_rel_page(*rel, *blk, lsn).await?;
                b.reserve(1 + page.len());
                b.put_u8(102);
                b.put_slice(&page);
            }
            PageRequest::DbSize(db) => {
                let size = tl.db_size(DEFAULTTABLESPACE_OID, *db, lsn)?;
                b.put_u8(104);
                b.put_i64(size as i64);
            }
            PageRequest::GetSlruSegment(kind, segno) => {
                let seg = tl.get_slru_segment(*kind, *segno, lsn).await?;
                b.put_u8(105);
                b.put_u32((seg.len() / 8192) as u32);
                b.put_slice(&seg);
            }
        }
        Ok(b.freeze())
    }
    .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ReadError::NotFound(_)) => "not_found",
        Err(_) => "error",
    };
    metrics::PAGE_SERVICE_REQUESTS
        .with_label_values(&[r.kind(), outcome])
        .inc();
    if matches!(r.req, PageRequest::GetPage(..)) {
        metrics::GETPAGE_SECONDS
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
    }
    match result {
        Ok(b) => b,
        Err(e) => error_response(&e.to_string()),
    }
}

/// Accepts connections until cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tenants: Arc<TenantManager>,
    auth: Option<Arc<JwtAuth>>,
    wait_lsn_timeout: Duration,
    cancel: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!("page service accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (tenants, auth, cancel) = (tenants.clone(), auth.clone(), cancel.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, tenants, auth, wait_lsn_timeout, cancel).await {
                debug!(%peer, "page service connection ended: {e}");
            }
        });
    }
    info!("page service stopped accepting connections");
}

type Conn = ServerConnection<tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf>;

async fn connection(
    stream: tokio::net::TcpStream,
    tenants: Arc<TenantManager>,
    auth: Option<Arc<JwtAuth>>,
    wait: Duration,
    cancel: CancellationToken,
) -> Result<(), pq_proto::ProtocolError> {
    let (r, w) = stream.into_split();
    let mut conn: Conn = ServerConnection::new(r, w);
    let handshake = HandshakeConfig {
        auth: auth.as_deref(),
        allowed_scopes: SCOPES,
        ..HandshakeConfig::default()
    };
    let claims = match conn.handshake(&handshake).await? {
        Handshake::Ready { claims, .. } => claims,
        _ => return Ok(()),
    };
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = conn.read_message(MAX_MESSAGE) => m?,
        };
        let Some(msg) = msg else {
            return Ok(());
        };
        match msg {
            FeMessage::Query(q) => {
                let words: Vec<&str> = q.split_whitespace().collect();
                match words.as_slice() {
                    [cmd, t, tl] if *cmd == "pagestream" || *cmd == "pagestream_v2" => {
                        let target = match (t.parse::<TenantId>(), tl.parse::<TimelineId>()) {
                            (Ok(t), Ok(tl)) => Ok((t, tl)),
                            _ => Err("pagestream: malformed tenant or timeline id".to_string()),
                        };
                        let target = target.and_then(|(t, tl)| {
                            if let Some(c) = &claims {
                                authorize(c, SCOPES, Some(t)).map_err(|e| e.to_string())?;
                            }
                            let tenant = tenants.get(t).map_err(|e| e.to_string())?;
                            let timeline = tenant.timeline(tl).map_err(|e| e.to_string())?;
                            match timeline.state() {
                                TimelineState::Active => Ok(timeline),
                                s => Err(format!("timeline is {}", s.name())),
                            }
                        });
                        match target {
                            Ok(timeline) => {
                                return pagestream(conn, timeline, wait, cancel).await;
                            }
                            Err(e) => {
                                conn.write_error_and_ready(SqlState::INVALID_PARAMETER_VALUE, &e);
                                conn.flush().await?;
                            }
                        }
                    }
                    [cmd, args @ ..] if *cmd == "basebackup" => {
                        match basebackup_target(args, &tenants, claims.as_ref()) {
                            Ok((timeline, lsn, gzip)) => {
                                basebackup(&mut conn, timeline, lsn, gzip, wait).await?;
                            }
                            Err(e) => {
                                conn.write_error_and_ready(SqlState::INVALID_PARAMETER_VALUE, &e);
                                conn.flush().await?;
                            }
                        }
                    }
                    ["set", ..] | ["SET", ..] => {
                        conn.write_message(&BeMessage::CommandComplete("SET"));
                        conn.write_message(&BeMessage::ReadyForQuery);
                        conn.flush().await?;
                    }
                    _ => {
                        conn.write_error_and_ready(
                            SqlState::SYNTAX_ERROR,
                            &format!("unknown page service command {q:?}"),
                        );
                        conn.flush().await?;
                    }
                }
            }
            FeMessage::Terminate => return Ok(()),
            _ => {
                conn.write_error_and_ready(SqlState::PROTOCOL_VIOLATION, "unexpected message");
                conn.flush().await?;
            }
        }
    }
}

/// Parses `basebackup <tenant> <timeline> [<lsn>] [--gzip]` and finds the timeline.
fn basebackup_target(
    args: &[&str],
    tenants: &TenantManager,
    claims: Option<&utils::auth::Claims>,
) -> Result<(Arc<Timeline>, Option<Lsn>, bool), String> {
    const USAGE: &str = "usage: basebackup <tenant> <timeline> [<lsn>] [--gzip]";
    let gzip = args.last() == Some(&"--gzip");
    let args = if gzip { &args[..args.len() - 1] } else { args };
    let (t, tl, lsn) = match args {
        [t, tl] => (t, tl, None),
        [t, tl, lsn] => (t, tl, Some(lsn)),
        _ => return Err(USAGE.to_string()),
    };
    let (Ok(t), Ok(tl)) = (t.parse::<TenantId>(), tl.parse::<TimelineId>()) else {
        return Err(format!(
            "basebackup: malformed tenant or timeline id; {USAGE}"
        ));
    };
    let lsn = match lsn {
        Some(l) => Some(
            l.parse::<Lsn>()
                .map_err(|_| format!("basebackup: malformed LSN {l:?} (expected X/Y)"))?,
        ),
        None => None,
    };
    if let Some(c) = claims {
        authorize(c, SCOPES, Some(t)).map_err(|e| e.to_string())?;
    }
    let timeline = tenants
        .get(t)
        .map_err(|e| e.to_string())?
        .timeline(tl)
        .map_err(|e| e.to_string())?;
    match timeline.state() {
        TimelineState::Active => Ok((timeline, lsn, gzip)),
        s => Err(format!("timeline is {}", s.name())),
    }
}

/// Streams a basebackup as CopyOut: the tar in CopyData chunks, then CopyDone; an error
/// before the first byte is an ordinary ERROR, one mid-stream aborts the copy with an
/// ERROR (the archive then has no end marker).
async fn basebackup(
    conn: &mut Conn,
    timeline: Arc<Timeline>,
    lsn: Option<Lsn>,
    gzip: bool,
    wait: Duration,
) -> Result<(), pq_proto::ProtocolError> {
    let prepared = match crate::basebackup::prepare(timeline, lsn, wait).await {
        Ok(p) => p,
        Err(e) => {
            conn.write_error_and_ready(SqlState::INVALID_PARAMETER_VALUE, &e.to_string());
            return conn.flush().await;
        }
    };
    conn.write_message(&BeMessage::CopyOutResponse);
    let (w, mut r) = tokio::io::duplex(COPY_CHUNK * 4);
    let producer = async move { crate::basebackup::write(&prepared, w, gzip).await };
    // The consumer owns the reader: if the client goes away it ends, the reader is
    // dropped, and the producer's next write fails.
    let c: &mut Conn = &mut *conn;
    let consumer = async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; COPY_CHUNK];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), pq_proto::ProtocolError>(());
            }
            c.write_message(&BeMessage::CopyData(&buf[..n]));
            c.flush().await?;
        }
    };
    let (produced, consumed) = tokio::join!(producer, consumer);
    consumed?;
    match produced {
        Ok(_) => {
            conn.write_message(&BeMessage::CopyDone);
            conn.write_message(&BeMessage::CommandComplete("COPY 0"));
            conn.write_message(&BeMessage::ReadyForQuery);
        }
        Err(e) => {
            warn!("basebackup failed: {e}");
            conn.write_error_and_ready(SqlState::INTERNAL_ERROR, &format!("basebackup: {e}"));
        }
    }
    conn.flush().await
}

/// Bytes per CopyData of a basebackup.
const COPY_CHUNK: usize = 128 * 1024;

async fn pagestream(
    conn: Conn,
    tl: Arc<Timeline>,
    wait: Duration,
    cancel: CancellationToken,
) -> Result<(), pq_proto::ProtocolError> {
    let (mut reader, mut writer) = conn.into_split();
    writer.write_be(&BeMessage::CopyBothResponse);
    writer.flush().await?;
    // One task reads requests and writes answers: with one request in flight (the common
    // client) an answer costs no wake-up of another task. Reading is cancel-safe (a
    // partly read message stays in the reader's buffer), so it can sit in the select.
    let mut inflight: FuturesOrdered<BoxFuture<'static, Bytes>> = FuturesOrdered::new();
    let mut input_open = true;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            _ = tl.cancel.cancelled() => return Ok(()),
            Some(resp) = inflight.next(), if !inflight.is_empty() => {
                writer.write_copy_data(&resp);
                writer.flush().await?;
            }
            msg = reader.read_fe_message(MAX_MESSAGE), if input_open && inflight.len() < PIPELINE_DEPTH => {
                match msg? {
                    Some(FeMessage::CopyData(d)) => {
                        let tl = tl.clone();
                        inflight.push_back(
                            async move {
                                match Request::decode(d) {
                                    Ok(r) => handle(&tl, &r, wait).await,
                                    Err(e) => error_response(&format!("invalid request: {e}")),
                                }
                            }
                            .boxed(),
                        );
                    }
                    // CopyDone, Terminate, end of stream: answer what is in flight, then end.
                    _ => input_open = false,
                }
            }
        }
        if !input_open && inflight.is_empty() {
            return writer.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let rel = RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
            forknum: 0,
        };
        for req in [
            PageRequest::Exists(rel),
            PageRequest::Nblocks(rel),
            PageRequest::GetPage(rel, 7),
            PageRequest::DbSize(5),
            PageRequest::GetSlruSegment(SlruKind::MultiXactOffsets, 2),
        ] {
            let r = Request {
                request_lsn: Lsn(0x100),
                not_modified_since: Lsn(0x50),
                req,
            };
            assert_eq!(Request::decode(r.encode()).unwrap(), r);
            let full = r.encode();
            assert!(Request::decode(full.slice(..full.len() - 1)).is_err());
            let mut longer = full.to_vec();
            longer.push(0);
            assert!(Request::decode(Bytes::from(longer)).is_err());
        }
        let mut bad_fork = Request {
            request_lsn: Lsn(1),
            not_modified_since: Lsn(0),
            req: PageRequest::Exists(rel),
        }
        .encode()
        .to_vec();
        bad_fork[17 + 12] = 9;
        assert!(Request::decode(Bytes::from(bad_fork)).is_err());
        assert!(Request::decode(Bytes::from_static(&[9; 30])).is_err());
    }
}
