//! Database records (`RM_DBASE_ID`): `CREATE DATABASE` (both strategies) and `DROP DATABASE`.
//!
//! ```text
//! XLOG_DBASE_CREATE_FILE_COPY: u32 db_id, u32 tablespace_id, u32 src_db_id, u32 src_tablespace_id
//! XLOG_DBASE_CREATE_WAL_LOG:   u32 db_id, u32 tablespace_id
//! XLOG_DBASE_DROP:             u32 db_id, i32 ntablespaces, u32 tablespace_ids[n]
//! ```
//!
//! `FILE_COPY` (the default strategy before 15, and `STRATEGY FILE_COPY`) means "copy every
//! file of the source database directory": no WAL for the copied pages follows, so whoever
//! rebuilds pages from WAL must copy the source database's relations as of this record.
//! `WAL_LOG` (15's default) only creates the directory; every page is then WAL-logged.

use super::{RecordParseError, short};
use crate::reader::Reader;
use crate::types::Oid;
use crate::v15::{XLOG_DBASE_CREATE_FILE_COPY, XLOG_DBASE_CREATE_WAL_LOG, XLOG_DBASE_DROP};
use crate::xlog_record::DecodedWalRecord;

/// A parsed database record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbaseRecord {
    /// `CREATE DATABASE ... STRATEGY FILE_COPY`: copy the source directory.
    CreateFileCopy {
        /// New database.
        db_id: Oid,
        /// Its tablespace.
        tablespace_id: Oid,
        /// Template database.
        src_db_id: Oid,
        /// Template's tablespace.
        src_tablespace_id: Oid,
    },
    /// `CREATE DATABASE ... STRATEGY WAL_LOG`: only the directory.
    CreateWalLog {
        /// New database.
        db_id: Oid,
        /// Its tablespace.
        tablespace_id: Oid,
    },
    /// `DROP DATABASE`: remove the database's directories in these tablespaces.
    Drop {
        /// The database.
        db_id: Oid,
        /// Tablespaces it had files in.
        tablespace_ids: Vec<Oid>,
    },
}

/// Parses an `RM_DBASE_ID` record.
pub fn parse(record: &DecodedWalRecord) -> Result<Option<DbaseRecord>, RecordParseError> {
    let e = short(record);
    let mut r = Reader::new(&record.main_data);
    Ok(match record.rmgr_info() {
        XLOG_DBASE_CREATE_FILE_COPY => Some(DbaseRecord::CreateFileCopy {
            db_id: r.u32().map_err(&e)?,
            tablespace_id: r.u32().map_err(&e)?,
            src_db_id: r.u32().map_err(&e)?,
            src_tablespace_id: r.u32().map_err(&e)?,
        }),
        XLOG_DBASE_CREATE_WAL_LOG => Some(DbaseRecord::CreateWalLog {
            db_id: r.u32().map_err(&e)?,
            tablespace_id: r.u32().map_err(&e)?,
        }),
        XLOG_DBASE_DROP => {
            let db_id = r.u32().map_err(&e)?;
            let n = r.count_i32().map_err(&e)?;
            let raw = r.array_of(n, 4).map_err(&e)?;
            let tablespace_ids = raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Some(DbaseRecord::Drop {
                db_id,
                tablespace_ids,
            })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::{Le, record};
    use crate::v15::RM_DBASE_ID;

    #[test]
    fn all_kinds() {
        let rec = record(
            RM_DBASE_ID,
            XLOG_DBASE_CREATE_FILE_COPY,
            1,
            &Le::default().u32(5).u32(1663).u32(1).u32(1663).0,
        );
        assert_eq!(
            parse(&rec).unwrap(),
            Some(DbaseRecord::CreateFileCopy {
                db_id: 5,
                tablespace_id: 1663,
                src_db_id: 1,
                src_tablespace_id: 1663
            })
        );
        let rec = record(
            RM_DBASE_ID,
            XLOG_DBASE_CREATE_WAL_LOG,
            1,
            &Le::default().u32(16391).u32(1663).0,
        );
        assert_eq!(
            parse(&rec).unwrap(),
            Some(DbaseRecord::CreateWalLog {
                db_id: 16391,
                tablespace_id: 1663
            })
        );
        let rec = record(
            RM_DBASE_ID,
            XLOG_DBASE_DROP,
            1,
            &Le::default().u32(16392).i32(2).u32(1663).u32(16400).0,
        );
        assert_eq!(
            parse(&rec).unwrap(),
            Some(DbaseRecord::Drop {
                db_id: 16392,
                tablespace_ids: vec![1663, 16400]
            })
        );
        let rec = record(
            RM_DBASE_ID,
            XLOG_DBASE_DROP,
            1,
            &Le::default().u32(16392).i32(3).u32(1663).0,
        );
        assert!(parse(&rec).is_err());
    }
}
