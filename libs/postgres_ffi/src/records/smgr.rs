//! Storage manager records (`RM_SMGR_ID`): relation file creation and truncation.
//!
//! ```text
//! XLOG_SMGR_CREATE   (xl_smgr_create, 16 bytes):   RelFileNode rnode, i32 forkNum
//! XLOG_SMGR_TRUNCATE (xl_smgr_truncate, 20 bytes): u32 blkno, RelFileNode rnode, i32 flags
//! ```
//!
//! Truncation flags say which forks to cut: `SMGR_TRUNCATE_HEAP` (main fork to `blkno`
//! blocks), `SMGR_TRUNCATE_FSM` and `SMGR_TRUNCATE_VM` (to the blocks covering `blkno` heap
//! blocks; the partial last map page must also be cleared past the cut).

use super::{RecordParseError, short};
use crate::reader::Reader;
use crate::types::{BlockNumber, ForkNumber, RelFileNode};
use crate::v15::{
    SMGR_TRUNCATE_FSM, SMGR_TRUNCATE_HEAP, SMGR_TRUNCATE_VM, XLOG_SMGR_CREATE, XLOG_SMGR_TRUNCATE,
};
use crate::xlog_record::DecodedWalRecord;

/// A parsed storage-manager record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmgrRecord {
    /// A fork of a relation was created (empty).
    Create {
        /// The relation.
        rel: RelFileNode,
        /// The fork.
        fork: ForkNumber,
    },
    /// A relation was truncated to `blkno` heap blocks.
    Truncate {
        /// The relation.
        rel: RelFileNode,
        /// New length in blocks of the main fork.
        blkno: BlockNumber,
        /// `SMGR_TRUNCATE_*` flags.
        flags: u32,
    },
}

impl SmgrRecord {
    /// For a truncation, whether the main fork is truncated.
    pub fn truncates_main(flags: u32) -> bool {
        flags & SMGR_TRUNCATE_HEAP != 0
    }
    /// For a truncation, whether the free space map is truncated.
    pub fn truncates_fsm(flags: u32) -> bool {
        flags & SMGR_TRUNCATE_FSM != 0
    }
    /// For a truncation, whether the visibility map is truncated.
    pub fn truncates_vm(flags: u32) -> bool {
        flags & SMGR_TRUNCATE_VM != 0
    }
}

/// Parses an `RM_SMGR_ID` record.
pub fn parse(record: &DecodedWalRecord) -> Result<Option<SmgrRecord>, RecordParseError> {
    let e = short(record);
    let mut r = Reader::new(&record.main_data);
    Ok(match record.rmgr_info() {
        XLOG_SMGR_CREATE => {
            let rel = RelFileNode::read(&mut r).map_err(&e)?;
            let fork_num = r.i32().map_err(&e)?;
            let fork = ForkNumber::from_i32(fork_num)
                .ok_or_else(|| RecordParseError::new(record, format!("invalid fork {fork_num}")))?;
            Some(SmgrRecord::Create { rel, fork })
        }
        XLOG_SMGR_TRUNCATE => {
            let blkno = r.u32().map_err(&e)?;
            let rel = RelFileNode::read(&mut r).map_err(&e)?;
            let flags = r.i32().map_err(&e)? as u32;
            Some(SmgrRecord::Truncate { rel, blkno, flags })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::{Le, record};
    use crate::v15::{RM_SMGR_ID, SMGR_TRUNCATE_ALL};

    #[test]
    fn create_and_truncate() {
        let rel = RelFileNode {
            spc_node: 1663,
            db_node: 5,
            rel_node: 16384,
        };
        let rec = record(
            RM_SMGR_ID,
            XLOG_SMGR_CREATE,
            1,
            &Le::default().bytes(&rel.encode()).i32(2).0,
        );
        assert_eq!(
            parse(&rec).unwrap(),
            Some(SmgrRecord::Create {
                rel,
                fork: ForkNumber::VisibilityMap
            })
        );
        let rec = record(
            RM_SMGR_ID,
            XLOG_SMGR_TRUNCATE,
            1,
            &Le::default()
                .u32(7)
                .bytes(&rel.encode())
                .i32(SMGR_TRUNCATE_ALL as i32)
                .0,
        );
        let Some(SmgrRecord::Truncate { blkno, flags, .. }) = parse(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(blkno, 7);
        assert!(
            SmgrRecord::truncates_main(flags)
                && SmgrRecord::truncates_fsm(flags)
                && SmgrRecord::truncates_vm(flags)
        );
        let rec = record(
            RM_SMGR_ID,
            XLOG_SMGR_CREATE,
            1,
            &Le::default().bytes(&rel.encode()).i32(9).0,
        );
        assert!(parse(&rec).is_err());
        let rec = record(RM_SMGR_ID, XLOG_SMGR_TRUNCATE, 1, &[1, 2, 3]);
        assert!(parse(&rec).is_err());
    }
}
