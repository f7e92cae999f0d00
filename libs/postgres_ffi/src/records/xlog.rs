//! XLOG resource manager records (`RM_XLOG_ID`).
//!
//! ```text
//! CHECKPOINT_SHUTDOWN / CHECKPOINT_ONLINE: CheckPoint (88 bytes, see crate::controlfile)
//! NEXTOID:            u32 nextOid
//! SWITCH, NOOP:       no data
//! FPI, FPI_FOR_HINT:  no main data; the images are block references
//! PARAMETER_CHANGE:   i32 MaxConnections, max_worker_processes, max_wal_senders,
//!                     max_prepared_xacts, max_locks_per_xact, wal_level;
//!                     bool wal_log_hints, bool track_commit_timestamp (28 bytes with padding)
//! END_OF_RECOVERY:    i64 end_time, u32 ThisTimeLineID, u32 PrevTimeLineID
//! OVERWRITE_CONTRECORD: u64 overwritten_lsn, i64 overwrite_time
//! BACKUP_END:         u64 startpoint
//! RESTORE_POINT:      i64 rp_time, char rp_name[64]
//! FPW_CHANGE:         bool fullPageWrites
//! ```

use utils::Lsn;

use super::{RecordParseError, short};
use crate::controlfile::CheckPoint;
use crate::reader::Reader;
use crate::types::{Oid, TimeLineId, TimestampTz};
use crate::v15::*;
use crate::xlog_record::DecodedWalRecord;

/// Settings that must match between a primary and its standbys (`xl_parameter_change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterChange {
    /// `max_connections`.
    pub max_connections: i32,
    /// `max_worker_processes`.
    pub max_worker_processes: i32,
    /// `max_wal_senders`.
    pub max_wal_senders: i32,
    /// `max_prepared_transactions`.
    pub max_prepared_xacts: i32,
    /// `max_locks_per_transaction`.
    pub max_locks_per_xact: i32,
    /// `wal_level`.
    pub wal_level: i32,
    /// `wal_log_hints`.
    pub wal_log_hints: bool,
    /// `track_commit_timestamp`.
    pub track_commit_timestamp: bool,
}

/// A parsed XLOG record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XlogRecord {
    /// A checkpoint record.
    Checkpoint {
        /// `CHECKPOINT_SHUTDOWN` (true) or `CHECKPOINT_ONLINE`.
        shutdown: bool,
        /// Its contents.
        checkpoint: CheckPoint,
    },
    /// `NEXTOID`: OIDs up to this value may have been handed out.
    NextOid(Oid),
    /// `SWITCH`: the rest of the segment is unused.
    Switch,
    /// `NOOP`.
    Noop,
    /// `FPI`: page images only.
    Fpi,
    /// `FPI_FOR_HINT`: page images logged because hint bits changed.
    FpiForHint,
    /// `PARAMETER_CHANGE`.
    ParameterChange(ParameterChange),
    /// `END_OF_RECOVERY`.
    EndOfRecovery {
        /// When recovery ended.
        end_time: TimestampTz,
        /// The new timeline.
        this_timeline_id: TimeLineId,
        /// The previous timeline.
        prev_timeline_id: TimeLineId,
    },
    /// `OVERWRITE_CONTRECORD`: the partial record at `overwritten_lsn` is void.
    OverwriteContrecord {
        /// Start of the abandoned record.
        overwritten_lsn: Lsn,
        /// When it was overwritten.
        overwrite_time: TimestampTz,
    },
    /// `BACKUP_END`.
    BackupEnd {
        /// The backup's start point.
        start: Lsn,
    },
    /// `RESTORE_POINT`.
    RestorePoint {
        /// When.
        time: TimestampTz,
        /// Its name.
        name: String,
    },
    /// `FPW_CHANGE`.
    FpwChange(bool),
}

/// Parses an `RM_XLOG_ID` record; `None` for info values it does not know.
pub fn parse(record: &DecodedWalRecord) -> Result<Option<XlogRecord>, RecordParseError> {
    let e = short(record);
    let mut r = Reader::new(&record.main_data);
    Ok(Some(match record.rmgr_info() {
        info @ (XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE) => XlogRecord::Checkpoint {
            shutdown: info == XLOG_CHECKPOINT_SHUTDOWN,
            checkpoint: CheckPoint::read(&mut r).map_err(&e)?,
        },
        XLOG_NEXTOID => XlogRecord::NextOid(r.u32().map_err(&e)?),
        XLOG_SWITCH => XlogRecord::Switch,
        XLOG_NOOP => XlogRecord::Noop,
        XLOG_FPI => XlogRecord::Fpi,
        XLOG_FPI_FOR_HINT => XlogRecord::FpiForHint,
        XLOG_PARAMETER_CHANGE => XlogRecord::ParameterChange(ParameterChange {
            max_connections: r.i32().map_err(&e)?,
            max_worker_processes: r.i32().map_err(&e)?,
            max_wal_senders: r.i32().map_err(&e)?,
            max_prepared_xacts: r.i32().map_err(&e)?,
            max_locks_per_xact: r.i32().map_err(&e)?,
            wal_level: r.i32().map_err(&e)?,
            wal_log_hints: r.bool().map_err(&e)?,
            track_commit_timestamp: r.bool().map_err(&e)?,
        }),
        XLOG_END_OF_RECOVERY => XlogRecord::EndOfRecovery {
            end_time: r.i64().map_err(&e)?,
            this_timeline_id: r.u32().map_err(&e)?,
            prev_timeline_id: r.u32().map_err(&e)?,
        },
        XLOG_OVERWRITE_CONTRECORD => XlogRecord::OverwriteContrecord {
            overwritten_lsn: Lsn(r.u64().map_err(&e)?),
            overwrite_time: r.i64().map_err(&e)?,
        },
        XLOG_BACKUP_END => XlogRecord::BackupEnd {
            start: Lsn(r.u64().map_err(&e)?),
        },
        XLOG_RESTORE_POINT => {
            let time = r.i64().map_err(&e)?;
            let raw = r.bytes(64).map_err(&e)?;
            let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            XlogRecord::RestorePoint {
                time,
                name: String::from_utf8_lossy(&raw[..len]).into_owned(),
            }
        }
        XLOG_FPW_CHANGE => XlogRecord::FpwChange(r.bool().map_err(&e)?),
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::{Le, record};

    #[test]
    fn checkpoint_nextoid_and_friends() {
        let cp = CheckPoint {
            redo: Lsn(0x0200_0028),
            this_timeline_id: 1,
            prev_timeline_id: 1,
            full_page_writes: true,
            next_xid: 739,
            next_oid: 16397,
            oldest_active_xid: 716,
            ..CheckPoint::default()
        };
        let rec = record(RM_XLOG_ID, XLOG_CHECKPOINT_ONLINE, 0, &cp.encode());
        assert_eq!(
            parse(&rec).unwrap(),
            Some(XlogRecord::Checkpoint {
                shutdown: false,
                checkpoint: cp
            })
        );
        let rec = record(RM_XLOG_ID, XLOG_NEXTOID, 0, &Le::default().u32(18192).0);
        assert_eq!(parse(&rec).unwrap(), Some(XlogRecord::NextOid(18192)));
        let rec = record(RM_XLOG_ID, XLOG_SWITCH, 0, &[]);
        assert_eq!(parse(&rec).unwrap(), Some(XlogRecord::Switch));
        let rec = record(
            RM_XLOG_ID,
            XLOG_PARAMETER_CHANGE,
            0,
            &Le::default()
                .i32(100)
                .i32(8)
                .i32(10)
                .i32(5)
                .i32(64)
                .i32(1)
                .u8(1)
                .u8(0)
                .pad_to(28)
                .0,
        );
        let Some(XlogRecord::ParameterChange(p)) = parse(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.max_prepared_xacts, p.wal_level, p.wal_log_hints),
            (5, 1, true)
        );
        let mut name = b"before_upgrade".to_vec();
        name.resize(64, 0);
        let rec = record(
            RM_XLOG_ID,
            XLOG_RESTORE_POINT,
            0,
            &Le::default().i64(5).bytes(&name).0,
        );
        assert_eq!(
            parse(&rec).unwrap(),
            Some(XlogRecord::RestorePoint {
                time: 5,
                name: "before_upgrade".into()
            })
        );
        let rec = record(RM_XLOG_ID, XLOG_CHECKPOINT_SHUTDOWN, 0, &[0; 40]);
        assert!(parse(&rec).is_err());
    }
}
