//! Transaction records (`RM_XACT_ID`): commit, abort, their two-phase variants, prepare and
//! subtransaction assignment.
//!
//! Commit and abort main data (`xl_xact_commit` / `xl_xact_abort`), in order, each part only
//! when its `xinfo` bit is set:
//!
//! ```text
//! i64 xact_time
//! u32 xinfo                                  if XLOG_XACT_HAS_INFO in xl_info
//! u32 dbId, u32 tsId                         XACT_XINFO_HAS_DBINFO
//! i32 nsubxacts, u32 subxacts[n]             XACT_XINFO_HAS_SUBXACTS
//! i32 nrels, RelFileNode xnodes[n]           XACT_XINFO_HAS_RELFILENODES   (dropped files)
//! i32 nitems, {i32 kind, u32 dboid, u32 objoid}[n]   XACT_XINFO_HAS_DROPPED_STATS
//! i32 nmsgs, 16-byte invalidation msgs[n]    XACT_XINFO_HAS_INVALS   (commit only)
//! u32 twophase xid                           XACT_XINFO_HAS_TWOPHASE
//!   NUL-terminated gid                         and XACT_XINFO_HAS_GID
//! i64 origin_lsn, i64 origin_timestamp       XACT_XINFO_HAS_ORIGIN (unaligned)
//! ```
//!
//! For `COMMIT_PREPARED`/`ABORT_PREPARED` the transaction is the two-phase xid, not the
//! record's `xl_xid` (0 then). `PREPARE`'s main data is the two-phase state file body
//! (`xl_xact_prepare` header of 72 bytes, then the gid, subxacts, commit rels, abort rels,
//! commit stats, abort stats and invalidations, each `MAXALIGN`ed); the file on disk is that
//! body followed by its CRC-32C, and the header's `total_len` counts the CRC.

use bytes::Bytes;
use utils::Lsn;

use super::{RecordParseError, short};
use crate::reader::Reader;
use crate::types::{Oid, RelFileNode, TimestampTz, TransactionId};
use crate::v15::*;
use crate::xlog_record::DecodedWalRecord;
use crate::{crc32c, maxalign};

/// A dropped-statistics entry (`xl_xact_stats_item`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DroppedStats {
    /// Statistics kind.
    pub kind: i32,
    /// Database OID.
    pub dboid: Oid,
    /// Object OID.
    pub objoid: Oid,
}

/// Which transaction-ending record this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XactCompletionKind {
    /// `XLOG_XACT_COMMIT`.
    Commit,
    /// `XLOG_XACT_ABORT`.
    Abort,
    /// `XLOG_XACT_COMMIT_PREPARED`.
    CommitPrepared,
    /// `XLOG_XACT_ABORT_PREPARED`.
    AbortPrepared,
}

impl XactCompletionKind {
    /// Whether the transaction committed.
    pub fn is_commit(self) -> bool {
        matches!(
            self,
            XactCompletionKind::Commit | XactCompletionKind::CommitPrepared
        )
    }

    /// Whether it ends a prepared (two-phase) transaction.
    pub fn is_prepared(self) -> bool {
        matches!(
            self,
            XactCompletionKind::CommitPrepared | XactCompletionKind::AbortPrepared
        )
    }
}

/// A commit or abort record (`xl_xact_parsed_commit` / `xl_xact_parsed_abort`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XactCompletion {
    /// Which record.
    pub kind: XactCompletionKind,
    /// The transaction that ended: `xl_xid`, or the two-phase xid for `*_PREPARED`.
    pub xid: TransactionId,
    /// `xact_time`: commit or abort time.
    pub xact_time: TimestampTz,
    /// `xinfo` flags (0 without `XLOG_XACT_HAS_INFO`).
    pub xinfo: u32,
    /// `dbId`, if recorded.
    pub db_id: Oid,
    /// `tsId`, if recorded.
    pub ts_id: Oid,
    /// Subtransactions that end with it.
    pub subxacts: Vec<TransactionId>,
    /// Relation files to drop (all forks).
    pub dropped_rels: Vec<RelFileNode>,
    /// Statistics to drop.
    pub dropped_stats: Vec<DroppedStats>,
    /// Number of shared invalidation messages (commit only).
    pub ninval_msgs: usize,
    /// The two-phase xid, for `*_PREPARED`.
    pub twophase_xid: Option<TransactionId>,
    /// The two-phase GID, if recorded.
    pub twophase_gid: Option<String>,
    /// `(origin_lsn, origin_timestamp)` with `XACT_XINFO_HAS_ORIGIN`.
    pub origin: Option<(Lsn, TimestampTz)>,
}

/// A `PREPARE TRANSACTION` record: the two-phase state file body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XactPrepare {
    /// `magic` (`TWOPHASE_MAGIC`).
    pub magic: u32,
    /// `total_len`: the state file's length, CRC included.
    pub total_len: u32,
    /// The prepared transaction.
    pub xid: TransactionId,
    /// Its database.
    pub database: Oid,
    /// `prepared_at`.
    pub prepared_at: TimestampTz,
    /// `owner` role.
    pub owner: Oid,
    /// Subtransactions.
    pub subxacts: Vec<TransactionId>,
    /// Relations to drop if it commits.
    pub commit_rels: Vec<RelFileNode>,
    /// Relations to drop if it aborts.
    pub abort_rels: Vec<RelFileNode>,
    /// `ncommitstats`.
    pub ncommit_stats: usize,
    /// `nabortstats`.
    pub nabort_stats: usize,
    /// `ninvalmsgs`.
    pub ninval_msgs: usize,
    /// `initfileinval`.
    pub init_file_inval: bool,
    /// The GID.
    pub gid: String,
    /// `origin_lsn`.
    pub origin_lsn: Lsn,
    /// `origin_timestamp`.
    pub origin_timestamp: TimestampTz,
    /// The whole state file body (the record's main data).
    pub state_data: Bytes,
}

impl XactPrepare {
    /// The contents of `pg_twophase/<xid>`: the body followed by its CRC-32C.
    pub fn twophase_file(&self) -> Vec<u8> {
        let mut out = self.state_data.to_vec();
        out.extend_from_slice(&crc32c(&self.state_data).to_le_bytes());
        out
    }
}

/// A parsed transaction record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XactRecord {
    /// Commit or abort, plain or two-phase.
    Completion(XactCompletion),
    /// `PREPARE TRANSACTION`.
    Prepare(XactPrepare),
    /// `XLOG_XACT_ASSIGNMENT`: subtransaction ids assigned to a top-level transaction.
    Assignment {
        /// `xtop`.
        xtop: TransactionId,
        /// `xsub`.
        subxacts: Vec<TransactionId>,
    },
}

fn read_xids(
    r: &mut Reader<'_>,
    n: usize,
) -> Result<Vec<TransactionId>, crate::reader::ShortInput> {
    let raw = r.array_of(n, 4)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_rels(r: &mut Reader<'_>, n: usize) -> Result<Vec<RelFileNode>, crate::reader::ShortInput> {
    let raw = r.array_of(n, RelFileNode::SIZE)?;
    raw.chunks_exact(RelFileNode::SIZE)
        .map(RelFileNode::decode)
        .collect()
}

/// Parses an `RM_XACT_ID` record; `None` for invalidation-only records.
pub fn parse(record: &DecodedWalRecord) -> Result<Option<XactRecord>, RecordParseError> {
    let info = record.rmgr_info();
    let kind = match info & XLOG_XACT_OPMASK {
        XLOG_XACT_COMMIT => XactCompletionKind::Commit,
        XLOG_XACT_ABORT => XactCompletionKind::Abort,
        XLOG_XACT_COMMIT_PREPARED => XactCompletionKind::CommitPrepared,
        XLOG_XACT_ABORT_PREPARED => XactCompletionKind::AbortPrepared,
        XLOG_XACT_PREPARE => return parse_prepare(record).map(|p| Some(XactRecord::Prepare(p))),
        XLOG_XACT_ASSIGNMENT => {
            let mut r = Reader::new(&record.main_data);
            let xtop = r.u32().map_err(short(record))?;
            let n = r.count_i32().map_err(short(record))?;
            let subxacts = read_xids(&mut r, n).map_err(short(record))?;
            return Ok(Some(XactRecord::Assignment { xtop, subxacts }));
        }
        _ => return Ok(None),
    };
    parse_completion(record, kind).map(|c| Some(XactRecord::Completion(c)))
}

fn parse_completion(
    record: &DecodedWalRecord,
    kind: XactCompletionKind,
) -> Result<XactCompletion, RecordParseError> {
    let e = short(record);
    let mut r = Reader::new(&record.main_data);
    let xact_time = r.i64().map_err(&e)?;
    let xinfo = if record.rmgr_info() & XLOG_XACT_HAS_INFO != 0 {
        r.u32().map_err(&e)?
    } else {
        0
    };
    let (mut db_id, mut ts_id) = (0, 0);
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        db_id = r.u32().map_err(&e)?;
        ts_id = r.u32().map_err(&e)?;
    }
    let mut subxacts = Vec::new();
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = r.count_i32().map_err(&e)?;
        subxacts = read_xids(&mut r, n).map_err(&e)?;
    }
    let mut dropped_rels = Vec::new();
    if xinfo & XACT_XINFO_HAS_RELFILENODES != 0 {
        let n = r.count_i32().map_err(&e)?;
        dropped_rels = read_rels(&mut r, n).map_err(&e)?;
    }
    let mut dropped_stats = Vec::new();
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        let n = r.count_i32().map_err(&e)?;
        let raw = r.array_of(n, SIZE_OF_XACT_STATS_ITEM).map_err(&e)?;
        for c in raw.chunks_exact(SIZE_OF_XACT_STATS_ITEM) {
            let mut ir = Reader::new(c);
            dropped_stats.push(DroppedStats {
                kind: ir.i32().map_err(&e)?,
                dboid: ir.u32().map_err(&e)?,
                objoid: ir.u32().map_err(&e)?,
            });
        }
    }
    let mut ninval_msgs = 0;
    if kind.is_commit() && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        ninval_msgs = r.count_i32().map_err(&e)?;
        r.array_of(ninval_msgs, SIZE_OF_SHARED_INVAL_MESSAGE)
            .map_err(&e)?;
    }
    let mut twophase_xid = None;
    let mut twophase_gid = None;
    if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        twophase_xid = Some(r.u32().map_err(&e)?);
        if xinfo & XACT_XINFO_HAS_GID != 0 {
            let gid = r.cstr().map_err(&e)?;
            twophase_gid = Some(String::from_utf8_lossy(gid).into_owned());
        }
    }
    let mut origin = None;
    if xinfo & XACT_XINFO_HAS_ORIGIN != 0 {
        let lsn = Lsn(r.u64().map_err(&e)?);
        let ts = r.i64().map_err(&e)?;
        origin = Some((lsn, ts));
    }
    let xid = match (kind.is_prepared(), twophase_xid) {
        (true, Some(x)) => x,
        (true, None) => {
            return Err(RecordParseError::new(
                record,
                "two-phase completion without a two-phase xid",
            ));
        }
        (false, _) => record.xid(),
    };
    Ok(XactCompletion {
        kind,
        xid,
        xact_time,
        xinfo,
        db_id,
        ts_id,
        subxacts,
        dropped_rels,
        dropped_stats,
        ninval_msgs,
        twophase_xid,
        twophase_gid,
        origin,
    })
}

fn parse_prepare(record: &DecodedWalRecord) -> Result<XactPrepare, RecordParseError> {
    let e = short(record);
    let data = &record.main_data;
    let mut r = Reader::new(data);
    let magic = r.u32().map_err(&e)?;
    if magic != TWOPHASE_MAGIC {
        return Err(RecordParseError::new(
            record,
            format!("two-phase magic {magic:#010X}"),
        ));
    }
    let total_len = r.u32().map_err(&e)?;
    let xid = r.u32().map_err(&e)?;
    let database = r.u32().map_err(&e)?;
    let prepared_at = r.i64().map_err(&e)?;
    let owner = r.u32().map_err(&e)?;
    let nsubxacts = r.count_i32().map_err(&e)?;
    let ncommitrels = r.count_i32().map_err(&e)?;
    let nabortrels = r.count_i32().map_err(&e)?;
    let ncommit_stats = r.count_i32().map_err(&e)?;
    let nabort_stats = r.count_i32().map_err(&e)?;
    let ninval_msgs = r.count_i32().map_err(&e)?;
    let init_file_inval = r.bool().map_err(&e)?;
    r.skip(1).map_err(&e)?;
    let gidlen = usize::from(r.u16().map_err(&e)?);
    let origin_lsn = Lsn(r.u64().map_err(&e)?);
    let origin_timestamp = r.i64().map_err(&e)?;
    // Header is 72 bytes, already MAXALIGNed.
    let gid_bytes = r.bytes(gidlen).map_err(&e)?;
    let gid_len = gid_bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(gid_bytes.len());
    let gid = String::from_utf8_lossy(&gid_bytes[..gid_len]).into_owned();
    r.skip(maxalign(gidlen) - gidlen).map_err(&e)?;
    let subxacts = read_xids(&mut r, nsubxacts).map_err(&e)?;
    r.align8().map_err(&e)?;
    let commit_rels = read_rels(&mut r, ncommitrels).map_err(&e)?;
    r.align8().map_err(&e)?;
    let abort_rels = read_rels(&mut r, nabortrels).map_err(&e)?;
    r.align8().map_err(&e)?;
    r.array_of(ncommit_stats, SIZE_OF_XACT_STATS_ITEM)
        .map_err(&e)?;
    r.align8().map_err(&e)?;
    r.array_of(nabort_stats, SIZE_OF_XACT_STATS_ITEM)
        .map_err(&e)?;
    r.align8().map_err(&e)?;
    r.array_of(ninval_msgs, SIZE_OF_SHARED_INVAL_MESSAGE)
        .map_err(&e)?;
    Ok(XactPrepare {
        magic,
        total_len,
        xid,
        database,
        prepared_at,
        owner,
        subxacts,
        commit_rels,
        abort_rels,
        ncommit_stats,
        nabort_stats,
        ninval_msgs,
        init_file_inval,
        gid,
        origin_lsn,
        origin_timestamp,
        state_data: record.main_data.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::{Le, record};

    fn rel(n: u32) -> RelFileNode {
        RelFileNode {
            spc_node: 1663,
            db_node: 5,
            rel_node: n,
        }
    }

    #[test]
    fn commit_with_everything() {
        let xinfo = XACT_XINFO_HAS_DBINFO
            | XACT_XINFO_HAS_SUBXACTS
            | XACT_XINFO_HAS_RELFILENODES
            | XACT_XINFO_HAS_DROPPED_STATS
            | XACT_XINFO_HAS_INVALS
            | XACT_XINFO_HAS_ORIGIN;
        let main = Le::default()
            .i64(777)
            .u32(xinfo)
            .u32(5)
            .u32(1663)
            .i32(2)
            .u32(101)
            .u32(102)
            .i32(1)
            .bytes(&rel(16384).encode())
            .i32(1)
            .i32(2)
            .u32(5)
            .u32(16384)
            .i32(1)
            .bytes(&[0xAA; 16])
            .u64(0x1234)
            .i64(99)
            .0;
        let rec = record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO,
            100,
            &main,
        );
        let Some(XactRecord::Completion(c)) = parse(&rec).unwrap() else {
            panic!("not a completion");
        };
        assert_eq!(c.kind, XactCompletionKind::Commit);
        assert_eq!(c.xid, 100);
        assert_eq!(c.xact_time, 777);
        assert_eq!((c.db_id, c.ts_id), (5, 1663));
        assert_eq!(c.subxacts, vec![101, 102]);
        assert_eq!(c.dropped_rels, vec![rel(16384)]);
        assert_eq!(
            c.dropped_stats,
            vec![DroppedStats {
                kind: 2,
                dboid: 5,
                objoid: 16384
            }]
        );
        assert_eq!(c.ninval_msgs, 1);
        assert_eq!(c.origin, Some((Lsn(0x1234), 99)));
        assert!(c.twophase_xid.is_none());

        // Truncated main data is an error naming the LSN.
        let rec = record(
            RM_XACT_ID,
            XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO,
            100,
            &main[..main.len() - 3],
        );
        let e = parse(&rec).unwrap_err();
        assert_eq!(e.lsn, rec.lsn);
        assert_eq!(e.rmgr, "Transaction");
    }

    #[test]
    fn simple_commit_and_two_phase_abort() {
        let rec = record(RM_XACT_ID, XLOG_XACT_COMMIT, 42, &Le::default().i64(5).0);
        let Some(XactRecord::Completion(c)) = parse(&rec).unwrap() else {
            panic!()
        };
        assert_eq!((c.xid, c.xinfo, c.subxacts.len()), (42, 0, 0));

        let main = Le::default()
            .i64(5)
            .u32(XACT_XINFO_HAS_TWOPHASE | XACT_XINFO_HAS_GID | XACT_XINFO_HAS_SUBXACTS)
            .i32(1)
            .u32(731)
            .u32(730)
            .bytes(b"gx2\0")
            .0;
        let rec = record(
            RM_XACT_ID,
            XLOG_XACT_ABORT_PREPARED | XLOG_XACT_HAS_INFO,
            0,
            &main,
        );
        let Some(XactRecord::Completion(c)) = parse(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(c.kind, XactCompletionKind::AbortPrepared);
        assert!(!c.kind.is_commit() && c.kind.is_prepared());
        assert_eq!(c.xid, 730);
        assert_eq!(c.twophase_gid.as_deref(), Some("gx2"));
        assert_eq!(c.subxacts, vec![731]);
    }

    #[test]
    fn prepare_and_assignment() {
        let mut body = Le::default()
            .u32(TWOPHASE_MAGIC)
            .u32(0)
            .u32(729)
            .u32(5)
            .i64(1000)
            .u32(10)
            .i32(1)
            .i32(1)
            .i32(0)
            .i32(0)
            .i32(0)
            .i32(0)
            .u8(0)
            .u8(0)
            .u16(4)
            .u64(0)
            .i64(0)
            .bytes(b"gx1\0")
            .pad_to(80)
            .u32(740)
            .pad_to(88)
            .bytes(&rel(1).encode())
            .pad_to(104)
            .0;
        let total = (body.len() + 4) as u32;
        body[4..8].copy_from_slice(&total.to_le_bytes());
        let rec = record(RM_XACT_ID, XLOG_XACT_PREPARE, 729, &body);
        let Some(XactRecord::Prepare(p)) = parse(&rec).unwrap() else {
            panic!()
        };
        assert_eq!((p.xid, p.database, p.gid.as_str()), (729, 5, "gx1"));
        assert_eq!(p.subxacts, vec![740]);
        assert_eq!(p.commit_rels, vec![rel(1)]);
        let file = p.twophase_file();
        assert_eq!(file.len() as u32, p.total_len);

        let rec = record(
            RM_XACT_ID,
            XLOG_XACT_ASSIGNMENT,
            0,
            &Le::default().u32(10).i32(2).u32(11).u32(12).0,
        );
        assert_eq!(
            parse(&rec).unwrap(),
            Some(XactRecord::Assignment {
                xtop: 10,
                subxacts: vec![11, 12]
            })
        );
        let rec = record(
            RM_XACT_ID,
            XLOG_XACT_ASSIGNMENT,
            0,
            &Le::default().u32(10).i32(-1).0,
        );
        assert!(parse(&rec).is_err());
    }
}
