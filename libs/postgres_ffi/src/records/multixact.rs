//! Multixact records (`RM_MULTIXACT_ID`).
//!
//! ```text
//! XLOG_MULTIXACT_ZERO_OFF_PAGE: i32 pageno            (offsets SLRU)
//! XLOG_MULTIXACT_ZERO_MEM_PAGE: i32 pageno            (members SLRU)
//! XLOG_MULTIXACT_CREATE_ID:     u32 mid, u32 moff, i32 nmembers,
//!                               {u32 xid, i32 status}[nmembers]     (xl_multixact_create)
//! XLOG_MULTIXACT_TRUNCATE_ID:   u32 oldestMultiDB, u32 startTruncOff, u32 endTruncOff,
//!                               u32 startTruncMemb, u32 endTruncMemb (xl_multixact_truncate)
//! ```
//!
//! Creating multixact `mid` writes `moff` into its offsets entry and each member's xid and
//! status at offsets `moff..moff+n` of the members SLRU ([`crate::slru`] has the addressing).

use super::{RecordParseError, short};
use crate::reader::Reader;
use crate::types::{MultiXactId, MultiXactOffset, Oid, TransactionId};
use crate::v15::{
    XLOG_MULTIXACT_CREATE_ID, XLOG_MULTIXACT_TRUNCATE_ID, XLOG_MULTIXACT_ZERO_MEM_PAGE,
    XLOG_MULTIXACT_ZERO_OFF_PAGE,
};
use crate::xlog_record::DecodedWalRecord;

/// How a member holds the tuple (`MultiXactStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiXactStatus {
    /// `MultiXactStatusForKeyShare`.
    ForKeyShare = 0,
    /// `MultiXactStatusForShare`.
    ForShare = 1,
    /// `MultiXactStatusForNoKeyUpdate`.
    ForNoKeyUpdate = 2,
    /// `MultiXactStatusForUpdate`.
    ForUpdate = 3,
    /// `MultiXactStatusNoKeyUpdate`.
    NoKeyUpdate = 4,
    /// `MultiXactStatusUpdate`.
    Update = 5,
}

impl MultiXactStatus {
    /// The status for its stored number.
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => MultiXactStatus::ForKeyShare,
            1 => MultiXactStatus::ForShare,
            2 => MultiXactStatus::ForNoKeyUpdate,
            3 => MultiXactStatus::ForUpdate,
            4 => MultiXactStatus::NoKeyUpdate,
            5 => MultiXactStatus::Update,
            _ => return None,
        })
    }

    /// The abbreviation `pg_waldump` prints (`keysh`, `sh`, `fornokeyupd`, `forupd`,
    /// `nokeyupd`, `upd`).
    pub fn short_name(self) -> &'static str {
        match self {
            MultiXactStatus::ForKeyShare => "keysh",
            MultiXactStatus::ForShare => "sh",
            MultiXactStatus::ForNoKeyUpdate => "fornokeyupd",
            MultiXactStatus::ForUpdate => "forupd",
            MultiXactStatus::NoKeyUpdate => "nokeyupd",
            MultiXactStatus::Update => "upd",
        }
    }
}

/// One member of a multixact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiXactMember {
    /// The member transaction.
    pub xid: TransactionId,
    /// Its lock strength.
    pub status: MultiXactStatus,
}

/// A parsed multixact record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiXactRecord {
    /// A new offsets page.
    ZeroOffPage {
        /// Page number in `pg_multixact/offsets`.
        pageno: i32,
    },
    /// A new members page.
    ZeroMemPage {
        /// Page number in `pg_multixact/members`.
        pageno: i32,
    },
    /// A multixact was created.
    CreateId {
        /// Its id.
        mid: MultiXactId,
        /// Offset of its first member.
        moff: MultiXactOffset,
        /// Its members.
        members: Vec<MultiXactMember>,
    },
    /// Old multixacts were truncated away.
    TruncateId {
        /// `oldestMultiDB`.
        oldest_multi_db: Oid,
        /// `startTruncOff`.
        start_trunc_off: MultiXactId,
        /// `endTruncOff`: the new oldest multixact.
        end_trunc_off: MultiXactId,
        /// `startTruncMemb`.
        start_trunc_memb: MultiXactOffset,
        /// `endTruncMemb`.
        end_trunc_memb: MultiXactOffset,
    },
}

/// Parses an `RM_MULTIXACT_ID` record.
pub fn parse(record: &DecodedWalRecord) -> Result<Option<MultiXactRecord>, RecordParseError> {
    let e = short(record);
    let mut r = Reader::new(&record.main_data);
    Ok(match record.rmgr_info() {
        XLOG_MULTIXACT_ZERO_OFF_PAGE => Some(MultiXactRecord::ZeroOffPage {
            pageno: r.i32().map_err(&e)?,
        }),
        XLOG_MULTIXACT_ZERO_MEM_PAGE => Some(MultiXactRecord::ZeroMemPage {
            pageno: r.i32().map_err(&e)?,
        }),
        XLOG_MULTIXACT_CREATE_ID => {
            let mid = r.u32().map_err(&e)?;
            let moff = r.u32().map_err(&e)?;
            let n = r.count_i32().map_err(&e)?;
            let raw = r.array_of(n, 8).map_err(&e)?;
            let mut members = Vec::with_capacity(n);
            for c in raw.chunks_exact(8) {
                let xid = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let s = i32::from_le_bytes([c[4], c[5], c[6], c[7]]);
                let status = MultiXactStatus::from_i32(s).ok_or_else(|| {
                    RecordParseError::new(record, format!("invalid member status {s}"))
                })?;
                members.push(MultiXactMember { xid, status });
            }
            Some(MultiXactRecord::CreateId { mid, moff, members })
        }
        XLOG_MULTIXACT_TRUNCATE_ID => Some(MultiXactRecord::TruncateId {
            oldest_multi_db: r.u32().map_err(&e)?,
            start_trunc_off: r.u32().map_err(&e)?,
            end_trunc_off: r.u32().map_err(&e)?,
            start_trunc_memb: r.u32().map_err(&e)?,
            end_trunc_memb: r.u32().map_err(&e)?,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::{Le, record};
    use crate::v15::RM_MULTIXACT_ID;

    #[test]
    fn create_zero_truncate() {
        let rec = record(
            RM_MULTIXACT_ID,
            XLOG_MULTIXACT_CREATE_ID,
            732,
            &Le::default()
                .u32(1)
                .u32(1)
                .i32(2)
                .u32(731)
                .i32(1)
                .u32(732)
                .i32(4)
                .0,
        );
        let Some(MultiXactRecord::CreateId { mid, moff, members }) = parse(&rec).unwrap() else {
            panic!()
        };
        assert_eq!((mid, moff), (1, 1));
        assert_eq!(
            members,
            vec![
                MultiXactMember {
                    xid: 731,
                    status: MultiXactStatus::ForShare
                },
                MultiXactMember {
                    xid: 732,
                    status: MultiXactStatus::NoKeyUpdate
                }
            ]
        );
        assert_eq!(members[1].status.short_name(), "nokeyupd");
        let rec = record(
            RM_MULTIXACT_ID,
            XLOG_MULTIXACT_ZERO_MEM_PAGE,
            0,
            &Le::default().i32(0).0,
        );
        assert_eq!(
            parse(&rec).unwrap(),
            Some(MultiXactRecord::ZeroMemPage { pageno: 0 })
        );
        let rec = record(
            RM_MULTIXACT_ID,
            XLOG_MULTIXACT_TRUNCATE_ID,
            0,
            &Le::default().u32(1).u32(1).u32(3).u32(1).u32(5).0,
        );
        assert!(matches!(
            parse(&rec).unwrap(),
            Some(MultiXactRecord::TruncateId {
                end_trunc_off: 3,
                end_trunc_memb: 5,
                ..
            })
        ));
        let rec = record(
            RM_MULTIXACT_ID,
            XLOG_MULTIXACT_CREATE_ID,
            0,
            &Le::default().u32(1).u32(1).i32(1).u32(731).i32(9).0,
        );
        assert!(parse(&rec).is_err());
    }
}
