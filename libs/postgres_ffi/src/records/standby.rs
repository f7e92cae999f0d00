//! Standby records (`RM_STANDBY_ID`): the information hot standbys need.
//!
//! ```text
//! XLOG_RUNNING_XACTS (xl_running_xacts): i32 xcnt, i32 subxcnt, bool subxid_overflow (+3),
//!     u32 nextXid, u32 oldestRunningXid, u32 latestCompletedXid,
//!     u32 xids[xcnt + subxcnt]   (top-level xids first, then subxids)
//! XLOG_STANDBY_LOCK (xl_standby_locks):  i32 nlocks, {u32 xid, u32 dbOid, u32 relOid}[n]
//! XLOG_INVALIDATIONS (xl_invalidations): u32 dbId, u32 tsId, bool relcacheInitFileInval (+3),
//!     i32 nmsgs, 16-byte msgs[n]
//! ```
//!
//! The pageserver uses running-xacts' `oldestRunningXid` to keep the checkpoint's
//! `oldestActiveXid` current, so a basebackup's synthetic checkpoint is right.

use super::{RecordParseError, short};
use crate::reader::Reader;
use crate::types::{Oid, TransactionId};
use crate::v15::{
    SIZE_OF_SHARED_INVAL_MESSAGE, XLOG_INVALIDATIONS, XLOG_RUNNING_XACTS, XLOG_STANDBY_LOCK,
};
use crate::xlog_record::DecodedWalRecord;

/// A snapshot of running transactions (`xl_running_xacts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningXacts {
    /// `xcnt`: top-level transactions in `xids`.
    pub xcnt: usize,
    /// `subxcnt`: subtransactions in `xids` after the top-level ones.
    pub subxcnt: usize,
    /// `subxid_overflow`: some subxids are missing.
    pub subxid_overflow: bool,
    /// `nextXid`.
    pub next_xid: TransactionId,
    /// `oldestRunningXid`.
    pub oldest_running_xid: TransactionId,
    /// `latestCompletedXid`.
    pub latest_completed_xid: TransactionId,
    /// The running xids.
    pub xids: Vec<TransactionId>,
}

/// An `AccessExclusiveLock` held by a transaction (`xl_standby_lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyLock {
    /// Holder.
    pub xid: TransactionId,
    /// Database.
    pub db_oid: Oid,
    /// Relation.
    pub rel_oid: Oid,
}

/// A parsed standby record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandbyRecord {
    /// `XLOG_RUNNING_XACTS`.
    RunningXacts(RunningXacts),
    /// `XLOG_STANDBY_LOCK`.
    Locks(Vec<StandbyLock>),
    /// `XLOG_INVALIDATIONS`.
    Invalidations {
        /// Database.
        db_id: Oid,
        /// Tablespace.
        ts_id: Oid,
        /// `relcacheInitFileInval`.
        relcache_init_file_inval: bool,
        /// Number of messages.
        nmsgs: usize,
    },
}

/// Parses an `RM_STANDBY_ID` record.
pub fn parse(record: &DecodedWalRecord) -> Result<Option<StandbyRecord>, RecordParseError> {
    let e = short(record);
    let mut r = Reader::new(&record.main_data);
    Ok(match record.rmgr_info() {
        XLOG_RUNNING_XACTS => {
            let xcnt = r.count_i32().map_err(&e)?;
            let subxcnt = r.count_i32().map_err(&e)?;
            let subxid_overflow = r.bool().map_err(&e)?;
            r.skip(3).map_err(&e)?;
            let next_xid = r.u32().map_err(&e)?;
            let oldest_running_xid = r.u32().map_err(&e)?;
            let latest_completed_xid = r.u32().map_err(&e)?;
            let n = xcnt
                .checked_add(subxcnt)
                .ok_or_else(|| RecordParseError::new(record, "xid count overflow"))?;
            let raw = r.array_of(n, 4).map_err(&e)?;
            let xids = raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Some(StandbyRecord::RunningXacts(RunningXacts {
                xcnt,
                subxcnt,
                subxid_overflow,
                next_xid,
                oldest_running_xid,
                latest_completed_xid,
                xids,
            }))
        }
        XLOG_STANDBY_LOCK => {
            let n = r.count_i32().map_err(&e)?;
            let raw = r.array_of(n, 12).map_err(&e)?;
            let locks = raw
                .chunks_exact(12)
                .map(|c| StandbyLock {
                    xid: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    db_oid: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                    rel_oid: u32::from_le_bytes([c[8], c[9], c[10], c[11]]),
                })
                .collect();
            Some(StandbyRecord::Locks(locks))
        }
        XLOG_INVALIDATIONS => {
            let db_id = r.u32().map_err(&e)?;
            let ts_id = r.u32().map_err(&e)?;
            let relcache_init_file_inval = r.bool().map_err(&e)?;
            r.skip(3).map_err(&e)?;
            let nmsgs = r.count_i32().map_err(&e)?;
            r.array_of(nmsgs, SIZE_OF_SHARED_INVAL_MESSAGE)
                .map_err(&e)?;
            Some(StandbyRecord::Invalidations {
                db_id,
                ts_id,
                relcache_init_file_inval,
                nmsgs,
            })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::{Le, record};
    use crate::v15::RM_STANDBY_ID;

    #[test]
    fn running_xacts_and_locks() {
        let rec = record(
            RM_STANDBY_ID,
            XLOG_RUNNING_XACTS,
            0,
            &Le::default()
                .i32(1)
                .i32(1)
                .u8(0)
                .pad_to(12)
                .u32(717)
                .u32(716)
                .u32(715)
                .u32(716)
                .u32(720)
                .0,
        );
        let Some(StandbyRecord::RunningXacts(rx)) = parse(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(
            (rx.next_xid, rx.oldest_running_xid, rx.latest_completed_xid),
            (717, 716, 715)
        );
        assert_eq!(rx.xids, vec![716, 720]);
        let rec = record(
            RM_STANDBY_ID,
            XLOG_STANDBY_LOCK,
            4,
            &Le::default().i32(1).u32(4).u32(1).u32(1255).0,
        );
        assert_eq!(
            parse(&rec).unwrap(),
            Some(StandbyRecord::Locks(vec![StandbyLock {
                xid: 4,
                db_oid: 1,
                rel_oid: 1255
            }]))
        );
        let rec = record(
            RM_STANDBY_ID,
            XLOG_RUNNING_XACTS,
            0,
            &Le::default().i32(5).i32(0).u8(0).pad_to(24).0,
        );
        assert!(parse(&rec).is_err());
    }
}
