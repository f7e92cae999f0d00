//! Resource-manager specific records the pageserver interprets beyond block references.
//!
//! Most records only change the pages their block references name; WAL redo replays them.
//! The ones parsed here also change state that is not a relation page, or that redo cannot
//! see from block references alone: transaction status (CLOG), multixacts, relation files
//! (create, truncate, drop), databases, relation maps, checkpoints and `nextOid`, running
//! transactions, and visibility-map bits cleared as a side effect of heap changes.
//!
//! [`parse_record`] dispatches on `xl_rmid` and returns `Ok(None)` for records it has nothing
//! to say about. Each submodule documents its layouts. Parsers read only the main data (and,
//! for heap records, the block references), never trust a count before checking the bytes are
//! there, and report errors with the record's LSN.

pub mod clog;
pub mod dbase;
pub mod heap;
pub mod multixact;
pub mod relmap;
pub mod smgr;
pub mod standby;
pub mod xact;
pub mod xlog;

use utils::Lsn;

use crate::PgMajorVersion;
use crate::reader::ShortInput;
use crate::v15::*;
use crate::xlog_record::DecodedWalRecord;

/// A parsed rmgr-specific record.
#[derive(Debug, Clone, PartialEq)]
pub enum RmgrRecord {
    /// Transaction commit, abort, prepare, assignment.
    Xact(xact::XactRecord),
    /// Relation file create / truncate.
    Smgr(smgr::SmgrRecord),
    /// Database create / drop.
    Dbase(dbase::DbaseRecord),
    /// Relation mapper file update.
    Relmap(relmap::RelmapUpdate),
    /// CLOG page zeroing / truncation.
    Clog(clog::ClogRecord),
    /// Multixact pages, creation, truncation.
    MultiXact(multixact::MultiXactRecord),
    /// XLOG rmgr: checkpoints, next OID, switch, FPIs, parameter changes.
    Xlog(xlog::XlogRecord),
    /// Standby: running transactions, locks, invalidations.
    Standby(standby::StandbyRecord),
    /// A heap or heap2 record that clears visibility-map bits.
    ClearVmBits(heap::ClearVmBits),
}

/// An rmgr record whose main data does not match its layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {rmgr} record (info {info:#04X}) at {lsn}: {reason}")]
pub struct RecordParseError {
    /// Start LSN of the record.
    pub lsn: Lsn,
    /// Resource manager name.
    pub rmgr: String,
    /// `xl_info`'s rmgr bits.
    pub info: u8,
    /// What did not fit.
    pub reason: String,
}

impl RecordParseError {
    pub(crate) fn new(record: &DecodedWalRecord, reason: impl std::fmt::Display) -> Self {
        RecordParseError {
            lsn: record.lsn,
            rmgr: rmgr_name(record.rmid()),
            info: record.rmgr_info(),
            reason: reason.to_string(),
        }
    }
}

/// Wraps a short read in a [`RecordParseError`] for `record`.
pub(crate) fn short(record: &DecodedWalRecord) -> impl Fn(ShortInput) -> RecordParseError + '_ {
    move |e| RecordParseError::new(record, e)
}

/// Parses the rmgr-specific content of `record` if it is one the pageserver interprets.
pub fn parse_record(
    record: &DecodedWalRecord,
    version: PgMajorVersion,
) -> Result<Option<RmgrRecord>, RecordParseError> {
    match version {
        PgMajorVersion::V15 => {}
    }
    Ok(match record.rmid() {
        RM_XACT_ID => xact::parse(record)?.map(RmgrRecord::Xact),
        RM_SMGR_ID => smgr::parse(record)?.map(RmgrRecord::Smgr),
        RM_DBASE_ID => dbase::parse(record)?.map(RmgrRecord::Dbase),
        RM_RELMAP_ID => relmap::parse(record)?.map(RmgrRecord::Relmap),
        RM_CLOG_ID => clog::parse(record)?.map(RmgrRecord::Clog),
        RM_MULTIXACT_ID => multixact::parse(record)?.map(RmgrRecord::MultiXact),
        RM_XLOG_ID => xlog::parse(record)?.map(RmgrRecord::Xlog),
        RM_STANDBY_ID => standby::parse(record)?.map(RmgrRecord::Standby),
        RM_HEAP_ID | RM_HEAP2_ID => heap::vm_bits_to_clear(record)?.map(RmgrRecord::ClearVmBits),
        _ => None,
    })
}

/// The record type name `pg_waldump` prints after `desc:` (`rm_identify`), for the
/// resource managers this crate knows; `None` for others and unknown info values.
pub fn identify(rmid: u8, info: u8) -> Option<&'static str> {
    let info = info & XLR_RMGR_INFO_MASK;
    Some(match rmid {
        RM_XLOG_ID => match info {
            XLOG_CHECKPOINT_SHUTDOWN => "CHECKPOINT_SHUTDOWN",
            XLOG_CHECKPOINT_ONLINE => "CHECKPOINT_ONLINE",
            XLOG_NOOP => "NOOP",
            XLOG_NEXTOID => "NEXTOID",
            XLOG_SWITCH => "SWITCH",
            XLOG_BACKUP_END => "BACKUP_END",
            XLOG_PARAMETER_CHANGE => "PARAMETER_CHANGE",
            XLOG_RESTORE_POINT => "RESTORE_POINT",
            XLOG_FPW_CHANGE => "FPW_CHANGE",
            XLOG_END_OF_RECOVERY => "END_OF_RECOVERY",
            XLOG_OVERWRITE_CONTRECORD => "OVERWRITE_CONTRECORD",
            XLOG_FPI => "FPI",
            XLOG_FPI_FOR_HINT => "FPI_FOR_HINT",
            _ => return None,
        },
        RM_XACT_ID => match info & XLOG_XACT_OPMASK {
            XLOG_XACT_COMMIT => "COMMIT",
            XLOG_XACT_PREPARE => "PREPARE",
            XLOG_XACT_ABORT => "ABORT",
            XLOG_XACT_COMMIT_PREPARED => "COMMIT_PREPARED",
            XLOG_XACT_ABORT_PREPARED => "ABORT_PREPARED",
            XLOG_XACT_ASSIGNMENT => "ASSIGNMENT",
            XLOG_XACT_INVALIDATIONS => "INVALIDATION",
            _ => return None,
        },
        RM_SMGR_ID => match info {
            XLOG_SMGR_CREATE => "CREATE",
            XLOG_SMGR_TRUNCATE => "TRUNCATE",
            _ => return None,
        },
        RM_CLOG_ID => match info {
            CLOG_ZEROPAGE => "ZEROPAGE",
            CLOG_TRUNCATE => "TRUNCATE",
            _ => return None,
        },
        RM_DBASE_ID => match info {
            XLOG_DBASE_CREATE_FILE_COPY => "CREATE_FILE_COPY",
            XLOG_DBASE_CREATE_WAL_LOG => "CREATE_WAL_LOG",
            XLOG_DBASE_DROP => "DROP",
            _ => return None,
        },
        RM_MULTIXACT_ID => match info {
            XLOG_MULTIXACT_ZERO_OFF_PAGE => "ZERO_OFF_PAGE",
            XLOG_MULTIXACT_ZERO_MEM_PAGE => "ZERO_MEM_PAGE",
            XLOG_MULTIXACT_CREATE_ID => "CREATE_ID",
            XLOG_MULTIXACT_TRUNCATE_ID => "TRUNCATE_ID",
            _ => return None,
        },
        RM_RELMAP_ID => match info {
            XLOG_RELMAP_UPDATE => "UPDATE",
            _ => return None,
        },
        RM_STANDBY_ID => match info {
            XLOG_STANDBY_LOCK => "LOCK",
            XLOG_RUNNING_XACTS => "RUNNING_XACTS",
            XLOG_INVALIDATIONS => "INVALIDATIONS",
            _ => return None,
        },
        RM_HEAP_ID => {
            let init = info & XLOG_HEAP_INIT_PAGE != 0;
            match (info & XLOG_HEAP_OPMASK, init) {
                (XLOG_HEAP_INSERT, false) => "INSERT",
                (XLOG_HEAP_INSERT, true) => "INSERT+INIT",
                (XLOG_HEAP_DELETE, _) => "DELETE",
                (XLOG_HEAP_UPDATE, false) => "UPDATE",
                (XLOG_HEAP_UPDATE, true) => "UPDATE+INIT",
                (XLOG_HEAP_HOT_UPDATE, false) => "HOT_UPDATE",
                (XLOG_HEAP_HOT_UPDATE, true) => "HOT_UPDATE+INIT",
                (XLOG_HEAP_TRUNCATE, _) => "TRUNCATE",
                (XLOG_HEAP_CONFIRM, _) => "HEAP_CONFIRM",
                (XLOG_HEAP_LOCK, _) => "LOCK",
                (XLOG_HEAP_INPLACE, _) => "INPLACE",
                _ => return None,
            }
        }
        RM_HEAP2_ID => {
            let init = info & XLOG_HEAP_INIT_PAGE != 0;
            match (info & XLOG_HEAP_OPMASK, init) {
                (XLOG_HEAP2_REWRITE, _) => "REWRITE",
                (XLOG_HEAP2_PRUNE, _) => "PRUNE",
                (XLOG_HEAP2_VACUUM, _) => "VACUUM",
                (XLOG_HEAP2_FREEZE_PAGE, _) => "FREEZE_PAGE",
                (XLOG_HEAP2_VISIBLE, _) => "VISIBLE",
                (XLOG_HEAP2_MULTI_INSERT, false) => "MULTI_INSERT",
                (XLOG_HEAP2_MULTI_INSERT, true) => "MULTI_INSERT+INIT",
                (XLOG_HEAP2_LOCK_UPDATED, _) => "LOCK_UPDATED",
                (XLOG_HEAP2_NEW_CID, _) => "NEW_CID",
                _ => return None,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod test_util {
    use bytes::Bytes;
    use utils::Lsn;

    use crate::wal_generate::XLogRecordBuilder;
    use crate::xlog_record::DecodedWalRecord;

    /// A decoded record of `rmid`/`info` with `main` as main data.
    pub(crate) fn record(rmid: u8, info: u8, xid: u32, main: &[u8]) -> DecodedWalRecord {
        let raw: Bytes = XLogRecordBuilder::new(rmid, info)
            .xid(xid)
            .main_data(main)
            .build();
        DecodedWalRecord::decode(Lsn(0x0100_0028), raw).expect("valid record")
    }

    /// Little-endian field concatenation for building main data.
    #[derive(Default)]
    pub(crate) struct Le(pub Vec<u8>);

    impl Le {
        pub(crate) fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        pub(crate) fn u16(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub(crate) fn bytes(mut self, v: &[u8]) -> Self {
            self.0.extend_from_slice(v);
            self
        }
        pub(crate) fn pad_to(mut self, n: usize) -> Self {
            self.0.resize(n, 0);
            self
        }
    }
}
