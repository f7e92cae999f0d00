//! Relation mapper records (`RM_RELMAP_ID`): a new `pg_filenode.map`.
//!
//! ```text
//! XLOG_RELMAP_UPDATE: u32 dbid (0 for the shared map), u32 tsid, i32 nbytes, u8 data[nbytes]
//! ```
//!
//! `data` is the complete 512-byte map file (`RELMAPPER_FILESIZE`, starting with
//! `RELMAPPER_FILEMAGIC`), to be written to `global/pg_filenode.map` (dbid 0) or
//! `base/<dbid>/pg_filenode.map`.

use bytes::Bytes;

use super::{RecordParseError, short};
use crate::reader::Reader;
use crate::types::Oid;
use crate::v15::XLOG_RELMAP_UPDATE;
use crate::xlog_record::DecodedWalRecord;

/// A relation map file update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelmapUpdate {
    /// Database, or 0 for the shared map.
    pub dbid: Oid,
    /// The database's tablespace (or `pg_global`).
    pub tsid: Oid,
    /// The new map file contents.
    pub data: Bytes,
}

/// Parses an `RM_RELMAP_ID` record.
pub fn parse(record: &DecodedWalRecord) -> Result<Option<RelmapUpdate>, RecordParseError> {
    if record.rmgr_info() != XLOG_RELMAP_UPDATE {
        return Ok(None);
    }
    let e = short(record);
    let mut r = Reader::new(&record.main_data);
    let dbid = r.u32().map_err(&e)?;
    let tsid = r.u32().map_err(&e)?;
    let nbytes = r.count_i32().map_err(&e)?;
    let start = r.pos();
    r.skip(nbytes).map_err(&e)?;
    Ok(Some(RelmapUpdate {
        dbid,
        tsid,
        data: record.main_data.slice(start..start + nbytes),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::{Le, record};
    use crate::v15::RM_RELMAP_ID;

    #[test]
    fn update() {
        let map = [7u8; 512];
        let rec = record(
            RM_RELMAP_ID,
            XLOG_RELMAP_UPDATE,
            1,
            &Le::default().u32(5).u32(1663).i32(512).bytes(&map).0,
        );
        let u = parse(&rec).unwrap().unwrap();
        assert_eq!((u.dbid, u.tsid), (5, 1663));
        assert_eq!(u.data.as_ref(), &map[..]);
        let rec = record(
            RM_RELMAP_ID,
            XLOG_RELMAP_UPDATE,
            1,
            &Le::default().u32(5).u32(1663).i32(513).bytes(&map).0,
        );
        assert!(parse(&rec).is_err());
    }
}
