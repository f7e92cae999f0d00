//! The proposer protocol, version 3: the messages a walproposer and a safekeeper exchange
//! inside CopyData after `START_WAL_PUSH (proto_version '3')`, and their codec.
//!
//! Wire-compatible with the reference system's version 3. Every message is one CopyData
//! payload: a one-byte ASCII tag, then fields in the order below, **all integers
//! big-endian**, strings NUL-terminated (`cstr`). Tags are reused across directions
//! (`'g'`, `'v'`, `'a'`), so the decoder must know which side sent a message: hence the
//! two enums [`ProposerMessage`] and [`AcceptorMessage`].
//!
//! ```text
//! MConf     = generation u32, n u32, n × {node_id u64, host cstr, pg_port u16},
//!             new_n u32 (0 = not joint), new_n × {…}
//! History   = n u32, n × {term u64, lsn u64}
//!
//! ProposerGreeting 'g'  tenant_id cstr(32 hex), timeline_id cstr(32 hex), MConf,
//!                       pg_version u32, system_id u64, wal_seg_size u32
//! AcceptorGreeting 'g'  node_id u64, MConf, term u64
//! VoteRequest      'v'  generation u32, term u64
//! VoteResponse     'v'  generation u32, term u64, vote_given u8, flush_lsn u64,
//!                       truncate_lsn u64, History
//! ProposerElected  'e'  generation u32, term u64, start_streaming_at u64, History
//! AppendRequest    'a'  generation u32, term u64, begin_lsn u64, end_lsn u64,
//!                       commit_lsn u64, truncate_lsn u64, then end−begin WAL bytes
//! AppendResponse   'a'  generation u32, term u64, flush_lsn u64, commit_lsn u64,
//!                       hs_ts i64, hs_xmin u64, hs_catalog_xmin u64,
//!                       then an optional PageserverFeedback block (crate::feedback)
//! ```
//!
//! A joint configuration's `new_members` is sent as its count and entries; an empty
//! `Some(vec![])` is indistinguishable from "not joint" on the wire and decodes as `None`.
//!
//! Decoding checks, and rejects with a [`ProtoError`] naming the message and field:
//! truncation, trailing bytes, unknown tags, ids that are not 32 hex digits, booleans other
//! than 0/1, malformed term histories (see [`crate::term`]), member counts above
//! [`MAX_MEMBERS`], `end_lsn < begin_lsn`, WAL payloads above [`MAX_WAL_PAYLOAD`] or whose
//! length is not `end − begin`.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use utils::{Lsn, NodeId, TenantId, TimelineId};

use crate::feedback::PageserverFeedback;
use crate::membership::{Configuration, Generation, Member};
use crate::term::{Term, TermHistory, TermLsn};
use crate::wire::{ProtoError, Reader, put_count, put_cstr};

/// The only proposer protocol version Strata speaks.
pub const PROTOCOL_VERSION: u32 = 3;

/// The most WAL one AppendRequest may carry: 16 WAL pages (`XLOG_BLCKSZ · 16`), as the
/// reference proposer's `MAX_SEND_SIZE`.
pub const MAX_WAL_PAYLOAD: usize = 128 * 1024;

/// Size of an AppendRequest before its WAL bytes: tag, generation, five u64s.
pub const APPEND_REQUEST_HEADER_SIZE: usize = 1 + 4 + 5 * 8;

/// The largest AppendRequest on the wire; a reader may refuse longer messages up front.
pub const MAX_APPEND_REQUEST_SIZE: usize = APPEND_REQUEST_HEADER_SIZE + MAX_WAL_PAYLOAD;

/// The most safekeepers in one member set (the reference system's `MAX_SAFEKEEPERS`).
pub const MAX_MEMBERS: usize = 32;

/// Tag of a greeting (both directions).
pub const TAG_GREETING: u8 = b'g';
/// Tag of a vote request / response.
pub const TAG_VOTE: u8 = b'v';
/// Tag of ProposerElected.
pub const TAG_ELECTED: u8 = b'e';
/// Tag of an append request / response.
pub const TAG_APPEND: u8 = b'a';

/// What a timeline's PostgreSQL server is: fixed when the timeline is created and checked
/// on every greeting, so WAL from a different cluster is never mixed in.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct ServerInfo {
    /// `PG_VERSION_NUM`, e.g. 150007.
    pub pg_version: u32,
    /// The cluster's system identifier (from pg_control); 0 = unknown yet.
    pub system_id: u64,
    /// WAL segment size in bytes (a power of two; 16 MiB by default).
    pub wal_seg_size: u32,
}

/// The proposer's first message: which timeline, which configuration, which server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposerGreeting {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The timeline.
    pub timeline_id: TimelineId,
    /// The proposer's membership configuration ([`Configuration::empty`] if none).
    pub mconf: Configuration,
    /// `PG_VERSION_NUM` of the compute.
    pub pg_version: u32,
    /// The compute's system identifier; 0 = unknown (not checked).
    pub system_id: u64,
    /// The compute's WAL segment size.
    pub wal_seg_size: u32,
}

impl ProposerGreeting {
    /// The server facts the greeting carries.
    pub fn server_info(&self) -> ServerInfo {
        ServerInfo {
            pg_version: self.pg_version,
            system_id: self.system_id,
            wal_seg_size: self.wal_seg_size,
        }
    }
}

/// The acceptor's answer to a greeting: who it is, its configuration and its term, from
/// which the proposer picks a term above everyone's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptorGreeting {
    /// The safekeeper's node id.
    pub node_id: NodeId,
    /// The safekeeper's configuration for this timeline.
    pub mconf: Configuration,
    /// The highest term it has voted in.
    pub term: Term,
}

/// A request to vote for the sender in `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// The proposer's generation.
    pub generation: Generation,
    /// The term being campaigned for.
    pub term: Term,
}

/// An acceptor's vote, with what the proposer needs to pick the most advanced log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    /// The acceptor's generation.
    pub generation: Generation,
    /// The acceptor's term after handling the request.
    pub term: Term,
    /// Whether the vote was given (persisted before this reply was sent).
    pub vote_given: bool,
    /// End of the acceptor's WAL.
    pub flush_lsn: Lsn,
    /// The acceptor's peer horizon: WAL below it is on every safekeeper.
    pub truncate_lsn: Lsn,
    /// The acceptor's history up to `flush_lsn`.
    pub term_history: TermHistory,
}

/// Sent to each voter once the proposer is elected: its history and where this acceptor
/// must start receiving (the divergence point; the acceptor truncates there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposerElected {
    /// The proposer's generation.
    pub generation: Generation,
    /// The won term.
    pub term: Term,
    /// Where this acceptor's log diverges from the proposer's.
    pub start_streaming_at: Lsn,
    /// The proposer's history, ending with `(term, term start LSN)`.
    pub term_history: TermHistory,
}

/// The fixed part of an AppendRequest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendRequestHeader {
    /// The proposer's generation.
    pub generation: Generation,
    /// The proposer's term.
    pub term: Term,
    /// Where the WAL bytes start.
    pub begin_lsn: Lsn,
    /// Where they end (exclusive); `end − begin` bytes follow the header.
    pub end_lsn: Lsn,
    /// The proposer's commit LSN (quorum-flushed).
    pub commit_lsn: Lsn,
    /// The proposer's truncate LSN (WAL below it is on every safekeeper).
    pub truncate_lsn: Lsn,
}

/// WAL from the proposer; with no bytes it is a heartbeat that also carries commit_lsn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRequest {
    /// Positions and terms.
    pub h: AppendRequestHeader,
    /// The WAL bytes `[begin_lsn, end_lsn)`, at most [`MAX_WAL_PAYLOAD`].
    pub wal_data: Bytes,
}

/// Hot-standby feedback relayed to the compute: the oldest xmin any standby needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotStandbyFeedback {
    /// When the feedback was generated (µs since 2000-01-01; 0 = none).
    pub ts: i64,
    /// Oldest xmin, as a 64-bit full transaction id (epoch in the high half).
    pub xmin: u64,
    /// Oldest catalog xmin, same form.
    pub catalog_xmin: u64,
}

/// An acceptor's progress report: flushed WAL, known commit, and relayed feedback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResponse {
    /// The acceptor's generation.
    pub generation: Generation,
    /// The acceptor's term; higher than the proposer's means the proposer was deposed.
    pub term: Term,
    /// End of WAL flushed to disk (at a record boundary).
    pub flush_lsn: Lsn,
    /// The acceptor's commit LSN.
    pub commit_lsn: Lsn,
    /// Hot-standby feedback of the standbys streaming from this safekeeper.
    pub hs_feedback: HotStandbyFeedback,
    /// The latest pageserver feedback, if any pageserver reported.
    pub pageserver_feedback: Option<PageserverFeedback>,
}

/// A message from proposer to acceptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposerMessage {
    /// `'g'`.
    Greeting(ProposerGreeting),
    /// `'v'`.
    VoteRequest(VoteRequest),
    /// `'e'`.
    Elected(ProposerElected),
    /// `'a'`.
    AppendRequest(AppendRequest),
}

/// A message from acceptor to proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorMessage {
    /// `'g'`.
    Greeting(AcceptorGreeting),
    /// `'v'`.
    VoteResponse(VoteResponse),
    /// `'a'`.
    AppendResponse(AppendResponse),
}

// ---------------------------------------------------------------------------------------
// Encoding and decoding of the shared pieces.

fn put_members(
    buf: &mut BytesMut,
    members: &[Member],
    msg: &'static str,
) -> Result<(), ProtoError> {
    if members.len() > MAX_MEMBERS {
        return Err(ProtoError::Invalid {
            msg,
            field: "mconf members",
            reason: format!("{} members, at most {MAX_MEMBERS}", members.len()),
        });
    }
    put_count(buf, members.len(), msg, "mconf members")?;
    for m in members {
        buf.put_u64(m.node_id.0);
        put_cstr(buf, &m.host, msg, "mconf member host")?;
        buf.put_u16(m.pg_port);
    }
    Ok(())
}

fn put_mconf(buf: &mut BytesMut, c: &Configuration, msg: &'static str) -> Result<(), ProtoError> {
    buf.put_u32(c.generation.0);
    put_members(buf, &c.members, msg)?;
    put_members(buf, c.new_members.as_deref().unwrap_or(&[]), msg)
}

fn read_members(r: &mut Reader<'_>) -> Result<Vec<Member>, ProtoError> {
    // node_id + at least the NUL + port.
    let n = r.count("mconf members", 8 + 1 + 2, MAX_MEMBERS)?;
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        members.push(Member {
            node_id: NodeId(r.u64("mconf member node_id")?),
            host: r.cstr("mconf member host")?.to_string(),
            pg_port: r.u16("mconf member pg_port")?,
        });
    }
    Ok(members)
}

fn read_mconf(r: &mut Reader<'_>) -> Result<Configuration, ProtoError> {
    let generation = Generation(r.u32("mconf generation")?);
    let members = read_members(r)?;
    let new_members = read_members(r)?;
    Ok(Configuration {
        generation,
        members,
        new_members: (!new_members.is_empty()).then_some(new_members),
    })
}

fn put_history(buf: &mut BytesMut, h: &TermHistory, msg: &'static str) -> Result<(), ProtoError> {
    put_count(buf, h.len(), msg, "term_history length")?;
    for e in &h.0 {
        buf.put_u64(e.term);
        buf.put_u64(e.lsn.0);
    }
    Ok(())
}

fn read_history(r: &mut Reader<'_>) -> Result<TermHistory, ProtoError> {
    let n = r.count("term_history length", 16, usize::MAX)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(TermLsn {
            term: r.u64("term_history term")?,
            lsn: r.lsn("term_history lsn")?,
        });
    }
    let h = TermHistory(entries);
    h.validate()
        .map_err(|e| r.invalid("term_history", e.to_string()))?;
    Ok(h)
}

fn read_id<T: std::str::FromStr>(r: &mut Reader<'_>, field: &'static str) -> Result<T, ProtoError>
where
    T::Err: std::fmt::Display,
{
    let s = r.cstr(field)?;
    s.parse()
        .map_err(|e: T::Err| r.invalid(field, e.to_string()))
}

// ---------------------------------------------------------------------------------------
// Per-message codecs.

impl ProposerGreeting {
    const MSG: &'static str = "ProposerGreeting";

    fn encode_body(&self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        put_cstr(buf, &self.tenant_id.to_string(), Self::MSG, "tenant_id")?;
        put_cstr(buf, &self.timeline_id.to_string(), Self::MSG, "timeline_id")?;
        put_mconf(buf, &self.mconf, Self::MSG)?;
        buf.put_u32(self.pg_version);
        buf.put_u64(self.system_id);
        buf.put_u32(self.wal_seg_size);
        Ok(())
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(ProposerGreeting {
            tenant_id: read_id(r, "tenant_id")?,
            timeline_id: read_id(r, "timeline_id")?,
            mconf: read_mconf(r)?,
            pg_version: r.u32("pg_version")?,
            system_id: r.u64("system_id")?,
            wal_seg_size: r.u32("wal_seg_size")?,
        })
    }
}

impl AcceptorGreeting {
    const MSG: &'static str = "AcceptorGreeting";

    fn encode_body(&self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        buf.put_u64(self.node_id.0);
        put_mconf(buf, &self.mconf, Self::MSG)?;
        buf.put_u64(self.term);
        Ok(())
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(AcceptorGreeting {
            node_id: NodeId(r.u64("node_id")?),
            mconf: read_mconf(r)?,
            term: r.u64("term")?,
        })
    }
}

impl VoteRequest {
    const MSG: &'static str = "VoteRequest";

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(self.generation.0);
        buf.put_u64(self.term);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(VoteRequest {
            generation: Generation(r.u32("generation")?),
            term: r.u64("term")?,
        })
    }
}

impl VoteResponse {
    const MSG: &'static str = "VoteResponse";

    fn encode_body(&self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        buf.put_u32(self.generation.0);
        buf.put_u64(self.term);
        buf.put_u8(u8::from(self.vote_given));
        buf.put_u64(self.flush_lsn.0);
        buf.put_u64(self.truncate_lsn.0);
        put_history(buf, &self.term_history, Self::MSG)
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(VoteResponse {
            generation: Generation(r.u32("generation")?),
            term: r.u64("term")?,
            vote_given: r.bool("vote_given")?,
            flush_lsn: r.lsn("flush_lsn")?,
            truncate_lsn: r.lsn("truncate_lsn")?,
            term_history: read_history(r)?,
        })
    }
}

impl ProposerElected {
    const MSG: &'static str = "ProposerElected";

    fn encode_body(&self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        buf.put_u32(self.generation.0);
        buf.put_u64(self.term);
        buf.put_u64(self.start_streaming_at.0);
        put_history(buf, &self.term_history, Self::MSG)
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(ProposerElected {
            generation: Generation(r.u32("generation")?),
            term: r.u64("term")?,
            start_streaming_at: r.lsn("start_streaming_at")?,
            term_history: read_history(r)?,
        })
    }
}

impl AppendRequestHeader {
    /// The payload length `end − begin`, checked against [`MAX_WAL_PAYLOAD`].
    pub fn payload_len(&self) -> Result<usize, ProtoError> {
        let invalid = |reason: String| ProtoError::Invalid {
            msg: AppendRequest::MSG,
            field: "end_lsn",
            reason,
        };
        let len = self
            .end_lsn
            .checked_distance(self.begin_lsn)
            .ok_or_else(|| {
                invalid(format!(
                    "end_lsn {} is before begin_lsn {}",
                    self.end_lsn, self.begin_lsn
                ))
            })?;
        if len > MAX_WAL_PAYLOAD as u64 {
            return Err(invalid(format!(
                "{len} bytes of WAL (begin {} end {}), at most {MAX_WAL_PAYLOAD}",
                self.begin_lsn, self.end_lsn
            )));
        }
        Ok(len as usize)
    }
}

impl AppendRequest {
    const MSG: &'static str = "AppendRequest";

    fn encode_body(&self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        let len = self.h.payload_len()?;
        if len != self.wal_data.len() {
            return Err(ProtoError::Invalid {
                msg: Self::MSG,
                field: "wal_data",
                reason: format!(
                    "{} bytes, but end_lsn − begin_lsn = {len}",
                    self.wal_data.len()
                ),
            });
        }
        buf.reserve(APPEND_REQUEST_HEADER_SIZE - 1 + len);
        buf.put_u32(self.h.generation.0);
        buf.put_u64(self.h.term);
        buf.put_u64(self.h.begin_lsn.0);
        buf.put_u64(self.h.end_lsn.0);
        buf.put_u64(self.h.commit_lsn.0);
        buf.put_u64(self.h.truncate_lsn.0);
        buf.put_slice(&self.wal_data);
        Ok(())
    }

    /// Reads the header and checks that exactly `end − begin` WAL bytes follow; returns the
    /// header and those bytes.
    fn decode_parts<'a>(r: &mut Reader<'a>) -> Result<(AppendRequestHeader, &'a [u8]), ProtoError> {
        let h = AppendRequestHeader {
            generation: Generation(r.u32("generation")?),
            term: r.u64("term")?,
            begin_lsn: r.lsn("begin_lsn")?,
            end_lsn: r.lsn("end_lsn")?,
            commit_lsn: r.lsn("commit_lsn")?,
            truncate_lsn: r.lsn("truncate_lsn")?,
        };
        let len = h.payload_len()?;
        let wal = r.bytes(len, "wal_data")?;
        Ok((h, wal))
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let (h, wal) = Self::decode_parts(r)?;
        Ok(AppendRequest {
            h,
            wal_data: Bytes::copy_from_slice(wal),
        })
    }
}

impl AppendResponse {
    const MSG: &'static str = "AppendResponse";

    /// A response carrying only the acceptor's term (and generation): what an acceptor in a
    /// higher term answers, so the proposer learns it was deposed.
    pub fn term_only(generation: Generation, term: Term) -> Self {
        AppendResponse {
            generation,
            term,
            flush_lsn: Lsn::INVALID,
            commit_lsn: Lsn::INVALID,
            hs_feedback: HotStandbyFeedback::default(),
            pageserver_feedback: None,
        }
    }

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(self.generation.0);
        buf.put_u64(self.term);
        buf.put_u64(self.flush_lsn.0);
        buf.put_u64(self.commit_lsn.0);
        buf.put_i64(self.hs_feedback.ts);
        buf.put_u64(self.hs_feedback.xmin);
        buf.put_u64(self.hs_feedback.catalog_xmin);
        if let Some(fb) = &self.pageserver_feedback {
            fb.encode(buf);
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let mut resp = AppendResponse {
            generation: Generation(r.u32("generation")?),
            term: r.u64("term")?,
            flush_lsn: r.lsn("flush_lsn")?,
            commit_lsn: r.lsn("commit_lsn")?,
            hs_feedback: HotStandbyFeedback {
                ts: r.i64("hs_ts")?,
                xmin: r.u64("hs_xmin")?,
                catalog_xmin: r.u64("hs_catalog_xmin")?,
            },
            pageserver_feedback: None,
        };
        if r.remaining() > 0 {
            let fb = PageserverFeedback::decode(r.rest()).map_err(|e| ProtoError::Invalid {
                msg: Self::MSG,
                field: "pageserver feedback",
                reason: e.to_string(),
            })?;
            resp.pageserver_feedback = Some(fb);
        }
        Ok(resp)
    }
}

fn unknown_tag(direction: &'static str, tag: u8) -> ProtoError {
    ProtoError::UnknownTag {
        direction,
        tag,
        printable: if tag.is_ascii_graphic() {
            tag as char
        } else {
            '?'
        },
    }
}

impl ProposerMessage {
    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            ProposerMessage::Greeting(_) => ProposerGreeting::MSG,
            ProposerMessage::VoteRequest(_) => VoteRequest::MSG,
            ProposerMessage::Elected(_) => ProposerElected::MSG,
            ProposerMessage::AppendRequest(_) => AppendRequest::MSG,
        }
    }

    /// Appends the message (tag and body) to `buf`. Fails only on values the layout cannot
    /// carry (a NUL in a host name, too many members, WAL length ≠ `end − begin`); then
    /// `buf` may hold a partial message and must be discarded.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        match self {
            ProposerMessage::Greeting(m) => {
                buf.put_u8(TAG_GREETING);
                m.encode_body(buf)
            }
            ProposerMessage::VoteRequest(m) => {
                buf.put_u8(TAG_VOTE);
                m.encode_body(buf);
                Ok(())
            }
            ProposerMessage::Elected(m) => {
                buf.put_u8(TAG_ELECTED);
                m.encode_body(buf)
            }
            ProposerMessage::AppendRequest(m) => {
                buf.put_u8(TAG_APPEND);
                m.encode_body(buf)
            }
        }
    }

    /// Like [`decode`](Self::decode), but an AppendRequest's WAL shares `buf` instead of
    /// being copied: the hot path of a safekeeper receiving WAL.
    pub fn decode_bytes(buf: &Bytes) -> Result<Self, ProtoError> {
        if buf.first() != Some(&TAG_APPEND) {
            return Self::decode(buf);
        }
        let mut r = Reader::new(&buf[1..], AppendRequest::MSG);
        let (h, _) = AppendRequest::decode_parts(&mut r)?;
        r.finish()?;
        Ok(ProposerMessage::AppendRequest(AppendRequest {
            h,
            wal_data: buf.slice(APPEND_REQUEST_HEADER_SIZE..),
        }))
    }

    /// Decodes one whole message (one CopyData payload).
    pub fn decode(buf: &[u8]) -> Result<Self, ProtoError> {
        let (&tag, body) = buf.split_first().ok_or(ProtoError::Empty {
            direction: "proposer",
        })?;
        let msg = match tag {
            TAG_GREETING => {
                let mut r = Reader::new(body, ProposerGreeting::MSG);
                let m = ProposerGreeting::decode_body(&mut r)?;
                r.finish()?;
                ProposerMessage::Greeting(m)
            }
            TAG_VOTE => {
                let mut r = Reader::new(body, VoteRequest::MSG);
                let m = VoteRequest::decode_body(&mut r)?;
                r.finish()?;
                ProposerMessage::VoteRequest(m)
            }
            TAG_ELECTED => {
                let mut r = Reader::new(body, ProposerElected::MSG);
                let m = ProposerElected::decode_body(&mut r)?;
                r.finish()?;
                ProposerMessage::Elected(m)
            }
            TAG_APPEND => {
                let mut r = Reader::new(body, AppendRequest::MSG);
                let m = AppendRequest::decode_body(&mut r)?;
                r.finish()?;
                ProposerMessage::AppendRequest(m)
            }
            other => return Err(unknown_tag("proposer", other)),
        };
        Ok(msg)
    }
}

impl AcceptorMessage {
    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            AcceptorMessage::Greeting(_) => AcceptorGreeting::MSG,
            AcceptorMessage::VoteResponse(_) => VoteResponse::MSG,
            AcceptorMessage::AppendResponse(_) => AppendResponse::MSG,
        }
    }

    /// Appends the message (tag and body) to `buf`. Fails only on values the layout cannot
    /// carry; then `buf` may hold a partial message and must be discarded.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        match self {
            AcceptorMessage::Greeting(m) => {
                buf.put_u8(TAG_GREETING);
                m.encode_body(buf)
            }
            AcceptorMessage::VoteResponse(m) => {
                buf.put_u8(TAG_VOTE);
                m.encode_body(buf)
            }
            AcceptorMessage::AppendResponse(m) => {
                buf.put_u8(TAG_APPEND);
                m.encode_body(buf);
                Ok(())
            }
        }
    }

    /// Decodes one whole message (one CopyData payload).
    pub fn decode(buf: &[u8]) -> Result<Self, ProtoError> {
        let (&tag, body) = buf.split_first().ok_or(ProtoError::Empty {
            direction: "acceptor",
        })?;
        let msg = match tag {
            TAG_GREETING => {
                let mut r = Reader::new(body, AcceptorGreeting::MSG);
                let m = AcceptorGreeting::decode_body(&mut r)?;
                r.finish()?;
                AcceptorMessage::Greeting(m)
            }
            TAG_VOTE => {
                let mut r = Reader::new(body, VoteResponse::MSG);
                let m = VoteResponse::decode_body(&mut r)?;
                r.finish()?;
                AcceptorMessage::VoteResponse(m)
            }
            TAG_APPEND => {
                let mut r = Reader::new(body, AppendResponse::MSG);
                let m = AppendResponse::decode_body(&mut r)?;
                r.finish()?;
                AcceptorMessage::AppendResponse(m)
            }
            other => return Err(unknown_tag("acceptor", other)),
        };
        Ok(msg)
    }
}
