//! Commit log records (`RM_CLOG_ID`).
//!
//! ```text
//! CLOG_ZEROPAGE: i32 pageno                                    (a new, all-zero CLOG page)
//! CLOG_TRUNCATE: i32 pageno, u32 oldestXact, u32 oldestXactDb  (xl_clog_truncate, 12 bytes)
//! ```
//!
//! Transaction status itself is not logged by CLOG records: it follows from commit and abort
//! records (see [`super::xact`]), and [`crate::slru`] says where it goes.

use super::{RecordParseError, short};
use crate::reader::Reader;
use crate::types::{Oid, TransactionId};
use crate::v15::{CLOG_TRUNCATE, CLOG_ZEROPAGE};
use crate::xlog_record::DecodedWalRecord;

/// A parsed CLOG record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClogRecord {
    /// Page `pageno` starts as zeros.
    ZeroPage {
        /// CLOG page number.
        pageno: i32,
    },
    /// Segments wholly before `pageno` are removed.
    Truncate {
        /// The cutoff page.
        pageno: i32,
        /// The oldest xid still needed.
        oldest_xact: TransactionId,
        /// The database that holds it.
        oldest_xact_db: Oid,
    },
}

/// Parses an `RM_CLOG_ID` record.
pub fn parse(record: &DecodedWalRecord) -> Result<Option<ClogRecord>, RecordParseError> {
    let e = short(record);
    let mut r = Reader::new(&record.main_data);
    Ok(match record.rmgr_info() {
        CLOG_ZEROPAGE => Some(ClogRecord::ZeroPage {
            pageno: r.i32().map_err(&e)?,
        }),
        CLOG_TRUNCATE => Some(ClogRecord::Truncate {
            pageno: r.i32().map_err(&e)?,
            oldest_xact: r.u32().map_err(&e)?,
            oldest_xact_db: r.u32().map_err(&e)?,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::{Le, record};
    use crate::v15::RM_CLOG_ID;

    #[test]
    fn zero_and_truncate() {
        let rec = record(RM_CLOG_ID, CLOG_ZEROPAGE, 0, &Le::default().i32(3).0);
        assert_eq!(
            parse(&rec).unwrap(),
            Some(ClogRecord::ZeroPage { pageno: 3 })
        );
        let rec = record(
            RM_CLOG_ID,
            CLOG_TRUNCATE,
            0,
            &Le::default().i32(32).u32(1_048_576).u32(1).0,
        );
        assert_eq!(
            parse(&rec).unwrap(),
            Some(ClogRecord::Truncate {
                pageno: 32,
                oldest_xact: 1_048_576,
                oldest_xact_db: 1
            })
        );
        assert!(parse(&record(RM_CLOG_ID, CLOG_TRUNCATE, 0, &[0; 8])).is_err());
    }
}
