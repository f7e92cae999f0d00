//! PostgreSQL 15 constants: magic numbers, resource manager ids, record info bits and flag
//! values, named exactly as in PostgreSQL's headers so they can be grepped for.
//!
//! Struct layouts are documented next to the code that parses them; this module holds only
//! numbers. Values were taken from PostgreSQL 15's `access/xlog_internal.h`,
//! `access/xlogrecord.h`, `catalog/pg_control.h`, `access/rmgrlist.h` and the per-rmgr
//! `*_xlog.h` headers, and are checked against real WAL by the crate's oracle tests.

/// `XLOG_PAGE_MAGIC` for PostgreSQL 15: the first two bytes of every WAL page.
pub const XLOG_PAGE_MAGIC: u16 = 0xD110;
/// `PG_CONTROL_VERSION` for PostgreSQL 15.
pub const PG_CONTROL_VERSION: u32 = 1300;
/// `CATALOG_VERSION_NO` of PostgreSQL 15 releases.
pub const CATALOG_VERSION_NO: u32 = 202209061;
/// `TABLESPACE_VERSION_DIRECTORY`: the per-version directory inside a tablespace.
pub const TABLESPACE_VERSION_DIRECTORY: &str = "PG_15_202209061";

// ---- Resource managers (access/rmgrlist.h) ----

/// `RM_XLOG_ID`: checkpoints, switch, FPIs, parameter changes.
pub const RM_XLOG_ID: u8 = 0;
/// `RM_XACT_ID`: commit, abort, prepare.
pub const RM_XACT_ID: u8 = 1;
/// `RM_SMGR_ID`: relation file create and truncate.
pub const RM_SMGR_ID: u8 = 2;
/// `RM_CLOG_ID`: commit log page zeroing and truncation.
pub const RM_CLOG_ID: u8 = 3;
/// `RM_DBASE_ID`: database create and drop.
pub const RM_DBASE_ID: u8 = 4;
/// `RM_TBLSPC_ID`: tablespace create and drop.
pub const RM_TBLSPC_ID: u8 = 5;
/// `RM_MULTIXACT_ID`.
pub const RM_MULTIXACT_ID: u8 = 6;
/// `RM_RELMAP_ID`: relation mapper file updates.
pub const RM_RELMAP_ID: u8 = 7;
/// `RM_STANDBY_ID`: locks, running transactions, invalidations.
pub const RM_STANDBY_ID: u8 = 8;
/// `RM_HEAP2_ID`.
pub const RM_HEAP2_ID: u8 = 9;
/// `RM_HEAP_ID`.
pub const RM_HEAP_ID: u8 = 10;
/// `RM_BTREE_ID`.
pub const RM_BTREE_ID: u8 = 11;
/// `RM_HASH_ID`.
pub const RM_HASH_ID: u8 = 12;
/// `RM_GIN_ID`.
pub const RM_GIN_ID: u8 = 13;
/// `RM_GIST_ID`.
pub const RM_GIST_ID: u8 = 14;
/// `RM_SEQ_ID`.
pub const RM_SEQ_ID: u8 = 15;
/// `RM_SPGIST_ID`.
pub const RM_SPGIST_ID: u8 = 16;
/// `RM_BRIN_ID`.
pub const RM_BRIN_ID: u8 = 17;
/// `RM_COMMIT_TS_ID`.
pub const RM_COMMIT_TS_ID: u8 = 18;
/// `RM_REPLORIGIN_ID`.
pub const RM_REPLORIGIN_ID: u8 = 19;
/// `RM_GENERIC_ID`.
pub const RM_GENERIC_ID: u8 = 20;
/// `RM_LOGICALMSG_ID`.
pub const RM_LOGICALMSG_ID: u8 = 21;
/// `RM_MAX_BUILTIN_ID`: the last built-in resource manager.
pub const RM_MAX_BUILTIN_ID: u8 = RM_LOGICALMSG_ID;
/// `RM_MIN_CUSTOM_ID`: ids 128..=255 belong to extensions (custom WAL resource managers).
pub const RM_MIN_CUSTOM_ID: u8 = 128;

/// Built-in resource manager names, indexed by id, as `pg_waldump` prints them.
pub const RMGR_NAMES: [&str; RM_MAX_BUILTIN_ID as usize + 1] = [
    "XLOG",
    "Transaction",
    "Storage",
    "CLOG",
    "Database",
    "Tablespace",
    "MultiXact",
    "RelMap",
    "Standby",
    "Heap2",
    "Heap",
    "Btree",
    "Hash",
    "Gin",
    "Gist",
    "Sequence",
    "SPGist",
    "BRIN",
    "CommitTs",
    "ReplicationOrigin",
    "Generic",
    "LogicalMessage",
];

/// Whether PostgreSQL 15 accepts `rmid` in a record header (`RmgrIdIsValid`): a built-in id or
/// a custom one. Anything else marks the record invalid.
pub fn rmgr_id_is_valid(rmid: u8) -> bool {
    rmid <= RM_MAX_BUILTIN_ID || rmid >= RM_MIN_CUSTOM_ID
}

/// The name `pg_waldump` prints for a resource manager.
pub fn rmgr_name(rmid: u8) -> String {
    match RMGR_NAMES.get(usize::from(rmid)) {
        Some(name) => (*name).to_string(),
        None => format!("custom{rmid:03}"),
    }
}

// ---- XLogRecord (access/xlogrecord.h) ----

/// `SizeOfXLogRecord`: the fixed record header.
pub const SIZE_OF_XLOG_RECORD: usize = 24;
/// Offset of `xl_crc` within the record header.
pub const XLOG_RECORD_CRC_OFFS: usize = 20;
/// `XLR_INFO_MASK`: the low bits of `xl_info` that belong to the WAL machinery.
pub const XLR_INFO_MASK: u8 = 0x0F;
/// `XLR_RMGR_INFO_MASK`: the high bits of `xl_info` that the resource manager owns.
pub const XLR_RMGR_INFO_MASK: u8 = 0xF0;
/// `XLR_SPECIAL_REL_UPDATE`: the record changes relation files in ways block references do
/// not show (e.g. truncation); tools that track files must look inside.
pub const XLR_SPECIAL_REL_UPDATE: u8 = 0x01;
/// `XLR_CHECK_CONSISTENCY`: every block carries an image for `wal_consistency_checking`;
/// such images are applied only if `BKPIMAGE_APPLY` is also set.
pub const XLR_CHECK_CONSISTENCY: u8 = 0x02;

/// `XLR_MAX_BLOCK_ID`: block reference ids are 0..=32.
pub const XLR_MAX_BLOCK_ID: u8 = 32;
/// `XLR_BLOCK_ID_DATA_SHORT`: main data with a 1-byte length follows.
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
/// `XLR_BLOCK_ID_DATA_LONG`: main data with a 4-byte length follows.
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
/// `XLR_BLOCK_ID_ORIGIN`: a 2-byte replication origin id follows.
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
/// `XLR_BLOCK_ID_TOPLEVEL_XID`: a 4-byte top-level xid follows (logical decoding of
/// subtransactions).
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;

/// `BKPBLOCK_FORK_MASK`: the fork number in `fork_flags`.
pub const BKPBLOCK_FORK_MASK: u8 = 0x0F;
/// `BKPBLOCK_HAS_IMAGE`: an image header and page image follow.
pub const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
/// `BKPBLOCK_HAS_DATA`: the block has rmgr data.
pub const BKPBLOCK_HAS_DATA: u8 = 0x20;
/// `BKPBLOCK_WILL_INIT`: redo initializes the page from scratch, so no earlier version is
/// needed.
pub const BKPBLOCK_WILL_INIT: u8 = 0x40;
/// `BKPBLOCK_SAME_REL`: the `RelFileNode` is omitted; it is the previous block's.
pub const BKPBLOCK_SAME_REL: u8 = 0x80;

/// `BKPIMAGE_HAS_HOLE`: the image omits a run of zero bytes (between `pd_lower` and
/// `pd_upper`).
pub const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// `BKPIMAGE_APPLY`: redo restores the image (otherwise it is only for consistency checks).
pub const BKPIMAGE_APPLY: u8 = 0x02;
/// `BKPIMAGE_COMPRESS_PGLZ`.
pub const BKPIMAGE_COMPRESS_PGLZ: u8 = 0x04;
/// `BKPIMAGE_COMPRESS_LZ4`.
pub const BKPIMAGE_COMPRESS_LZ4: u8 = 0x08;
/// `BKPIMAGE_COMPRESS_ZSTD`.
pub const BKPIMAGE_COMPRESS_ZSTD: u8 = 0x10;

// ---- WAL pages (access/xlog_internal.h) ----

/// `SizeOfXLogShortPHD`.
pub const SIZE_OF_XLOG_SHORT_PHD: usize = 24;
/// `SizeOfXLogLongPHD`.
pub const SIZE_OF_XLOG_LONG_PHD: usize = 40;
/// `XLP_FIRST_IS_CONTRECORD`: the page starts with the continuation of a record.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`: the long header (first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_BKP_REMOVABLE`: backup blocks on this page are optional.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD`: a record that began on an earlier page was never
/// finished (the server crashed); this page starts fresh with an `OVERWRITE_CONTRECORD`
/// record and the partial record is to be ignored.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `XLP_ALL_FLAGS`.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// The largest record PostgreSQL will write or read (`XLogRecordMaxSize`, 1020 MiB).
pub const XLOG_RECORD_MAX_SIZE: u32 = 1020 * 1024 * 1024;

// ---- XLOG rmgr (catalog/pg_control.h) ----

/// `XLOG_CHECKPOINT_SHUTDOWN`.
pub const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
/// `XLOG_CHECKPOINT_ONLINE`.
pub const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
/// `XLOG_NOOP`.
pub const XLOG_NOOP: u8 = 0x20;
/// `XLOG_NEXTOID`.
pub const XLOG_NEXTOID: u8 = 0x30;
/// `XLOG_SWITCH`: the rest of the segment is unused.
pub const XLOG_SWITCH: u8 = 0x40;
/// `XLOG_BACKUP_END`.
pub const XLOG_BACKUP_END: u8 = 0x50;
/// `XLOG_PARAMETER_CHANGE`.
pub const XLOG_PARAMETER_CHANGE: u8 = 0x60;
/// `XLOG_RESTORE_POINT`.
pub const XLOG_RESTORE_POINT: u8 = 0x70;
/// `XLOG_FPW_CHANGE`.
pub const XLOG_FPW_CHANGE: u8 = 0x80;
/// `XLOG_END_OF_RECOVERY`.
pub const XLOG_END_OF_RECOVERY: u8 = 0x90;
/// `XLOG_FPI_FOR_HINT`: a full-page image taken because a hint bit changed.
pub const XLOG_FPI_FOR_HINT: u8 = 0xA0;
/// `XLOG_FPI`: full-page images only (e.g. `log_newpage`).
pub const XLOG_FPI: u8 = 0xB0;
/// `XLOG_OVERWRITE_CONTRECORD`.
pub const XLOG_OVERWRITE_CONTRECORD: u8 = 0xD0;

// ---- XACT rmgr (access/xact.h) ----

/// `XLOG_XACT_COMMIT`.
pub const XLOG_XACT_COMMIT: u8 = 0x00;
/// `XLOG_XACT_PREPARE`.
pub const XLOG_XACT_PREPARE: u8 = 0x10;
/// `XLOG_XACT_ABORT`.
pub const XLOG_XACT_ABORT: u8 = 0x20;
/// `XLOG_XACT_COMMIT_PREPARED`.
pub const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
/// `XLOG_XACT_ABORT_PREPARED`.
pub const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
/// `XLOG_XACT_ASSIGNMENT`.
pub const XLOG_XACT_ASSIGNMENT: u8 = 0x50;
/// `XLOG_XACT_INVALIDATIONS`.
pub const XLOG_XACT_INVALIDATIONS: u8 = 0x60;
/// `XLOG_XACT_OPMASK`.
pub const XLOG_XACT_OPMASK: u8 = 0x70;
/// `XLOG_XACT_HAS_INFO`: an `xinfo` word follows the timestamp.
pub const XLOG_XACT_HAS_INFO: u8 = 0x80;

/// `XACT_XINFO_HAS_DBINFO`.
pub const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
/// `XACT_XINFO_HAS_SUBXACTS`.
pub const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
/// `XACT_XINFO_HAS_RELFILENODES`.
pub const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
/// `XACT_XINFO_HAS_INVALS`.
pub const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
/// `XACT_XINFO_HAS_TWOPHASE`.
pub const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
/// `XACT_XINFO_HAS_ORIGIN`.
pub const XACT_XINFO_HAS_ORIGIN: u32 = 1 << 5;
/// `XACT_XINFO_HAS_AE_LOCKS`.
pub const XACT_XINFO_HAS_AE_LOCKS: u32 = 1 << 6;
/// `XACT_XINFO_HAS_GID`.
pub const XACT_XINFO_HAS_GID: u32 = 1 << 7;
/// `XACT_XINFO_HAS_DROPPED_STATS`.
pub const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;
/// `TWOPHASE_MAGIC`: the first word of a two-phase state file and a PREPARE record.
pub const TWOPHASE_MAGIC: u32 = 0x57F9_4534;
/// `sizeof(SharedInvalidationMessage)`.
pub const SIZE_OF_SHARED_INVAL_MESSAGE: usize = 16;
/// `sizeof(xl_xact_stats_item)`.
pub const SIZE_OF_XACT_STATS_ITEM: usize = 12;
/// `GIDSIZE`: the longest two-phase GID including its terminator.
pub const GIDSIZE: usize = 200;

// ---- SMGR rmgr (catalog/storage_xlog.h) ----

/// `XLOG_SMGR_CREATE`.
pub const XLOG_SMGR_CREATE: u8 = 0x10;
/// `XLOG_SMGR_TRUNCATE`.
pub const XLOG_SMGR_TRUNCATE: u8 = 0x20;
/// `SMGR_TRUNCATE_HEAP`: truncate the main fork.
pub const SMGR_TRUNCATE_HEAP: u32 = 0x0001;
/// `SMGR_TRUNCATE_VM`: truncate the visibility map.
pub const SMGR_TRUNCATE_VM: u32 = 0x0002;
/// `SMGR_TRUNCATE_FSM`: truncate the free space map.
pub const SMGR_TRUNCATE_FSM: u32 = 0x0004;
/// `SMGR_TRUNCATE_ALL`.
pub const SMGR_TRUNCATE_ALL: u32 = SMGR_TRUNCATE_HEAP | SMGR_TRUNCATE_VM | SMGR_TRUNCATE_FSM;

// ---- DBASE rmgr (commands/dbcommands_xlog.h) ----

/// `XLOG_DBASE_CREATE_FILE_COPY`: the new database is a file copy of a template.
pub const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
/// `XLOG_DBASE_CREATE_WAL_LOG`: only the directory; contents follow as ordinary WAL.
pub const XLOG_DBASE_CREATE_WAL_LOG: u8 = 0x10;
/// `XLOG_DBASE_DROP`.
pub const XLOG_DBASE_DROP: u8 = 0x20;

// ---- TBLSPC rmgr (commands/tablespace.h) ----

/// `XLOG_TBLSPC_CREATE`.
pub const XLOG_TBLSPC_CREATE: u8 = 0x00;
/// `XLOG_TBLSPC_DROP`.
pub const XLOG_TBLSPC_DROP: u8 = 0x10;

// ---- RELMAP rmgr (utils/relmapper.h) ----

/// `XLOG_RELMAP_UPDATE`.
pub const XLOG_RELMAP_UPDATE: u8 = 0x00;
/// Size of a relation mapper file (`RELMAPPER_FILESIZE`).
pub const RELMAPPER_FILESIZE: usize = 512;
/// The relation mapper file's magic number (`RELMAPPER_FILEMAGIC`).
pub const RELMAPPER_FILEMAGIC: u32 = 0x0059_2717;

// ---- CLOG rmgr (access/clog.h) ----

/// `CLOG_ZEROPAGE`.
pub const CLOG_ZEROPAGE: u8 = 0x00;
/// `CLOG_TRUNCATE`.
pub const CLOG_TRUNCATE: u8 = 0x10;
/// `TRANSACTION_STATUS_IN_PROGRESS`.
pub const TRANSACTION_STATUS_IN_PROGRESS: u8 = 0x00;
/// `TRANSACTION_STATUS_COMMITTED`.
pub const TRANSACTION_STATUS_COMMITTED: u8 = 0x01;
/// `TRANSACTION_STATUS_ABORTED`.
pub const TRANSACTION_STATUS_ABORTED: u8 = 0x02;
/// `TRANSACTION_STATUS_SUB_COMMITTED`.
pub const TRANSACTION_STATUS_SUB_COMMITTED: u8 = 0x03;

// ---- MULTIXACT rmgr (access/multixact.h) ----

/// `XLOG_MULTIXACT_ZERO_OFF_PAGE`.
pub const XLOG_MULTIXACT_ZERO_OFF_PAGE: u8 = 0x00;
/// `XLOG_MULTIXACT_ZERO_MEM_PAGE`.
pub const XLOG_MULTIXACT_ZERO_MEM_PAGE: u8 = 0x10;
/// `XLOG_MULTIXACT_CREATE_ID`.
pub const XLOG_MULTIXACT_CREATE_ID: u8 = 0x20;
/// `XLOG_MULTIXACT_TRUNCATE_ID`.
pub const XLOG_MULTIXACT_TRUNCATE_ID: u8 = 0x30;

// ---- STANDBY rmgr (storage/standbydefs.h) ----

/// `XLOG_STANDBY_LOCK`.
pub const XLOG_STANDBY_LOCK: u8 = 0x00;
/// `XLOG_RUNNING_XACTS`.
pub const XLOG_RUNNING_XACTS: u8 = 0x10;
/// `XLOG_INVALIDATIONS`.
pub const XLOG_INVALIDATIONS: u8 = 0x20;

// ---- HEAP and HEAP2 rmgrs (access/heapam_xlog.h) ----

/// `XLOG_HEAP_INSERT`.
pub const XLOG_HEAP_INSERT: u8 = 0x00;
/// `XLOG_HEAP_DELETE`.
pub const XLOG_HEAP_DELETE: u8 = 0x10;
/// `XLOG_HEAP_UPDATE`.
pub const XLOG_HEAP_UPDATE: u8 = 0x20;
/// `XLOG_HEAP_TRUNCATE`.
pub const XLOG_HEAP_TRUNCATE: u8 = 0x30;
/// `XLOG_HEAP_HOT_UPDATE`.
pub const XLOG_HEAP_HOT_UPDATE: u8 = 0x40;
/// `XLOG_HEAP_CONFIRM`.
pub const XLOG_HEAP_CONFIRM: u8 = 0x50;
/// `XLOG_HEAP_LOCK`.
pub const XLOG_HEAP_LOCK: u8 = 0x60;
/// `XLOG_HEAP_INPLACE`.
pub const XLOG_HEAP_INPLACE: u8 = 0x70;
/// `XLOG_HEAP_OPMASK`.
pub const XLOG_HEAP_OPMASK: u8 = 0x70;
/// `XLOG_HEAP_INIT_PAGE`: the operation starts a fresh page.
pub const XLOG_HEAP_INIT_PAGE: u8 = 0x80;

/// `XLOG_HEAP2_REWRITE`.
pub const XLOG_HEAP2_REWRITE: u8 = 0x00;
/// `XLOG_HEAP2_PRUNE`.
pub const XLOG_HEAP2_PRUNE: u8 = 0x10;
/// `XLOG_HEAP2_VACUUM`.
pub const XLOG_HEAP2_VACUUM: u8 = 0x20;
/// `XLOG_HEAP2_FREEZE_PAGE`.
pub const XLOG_HEAP2_FREEZE_PAGE: u8 = 0x30;
/// `XLOG_HEAP2_VISIBLE`.
pub const XLOG_HEAP2_VISIBLE: u8 = 0x40;
/// `XLOG_HEAP2_MULTI_INSERT`.
pub const XLOG_HEAP2_MULTI_INSERT: u8 = 0x50;
/// `XLOG_HEAP2_LOCK_UPDATED`.
pub const XLOG_HEAP2_LOCK_UPDATED: u8 = 0x60;
/// `XLOG_HEAP2_NEW_CID`.
pub const XLOG_HEAP2_NEW_CID: u8 = 0x70;

/// `XLH_INSERT_ALL_VISIBLE_CLEARED` (INSERT and MULTI_INSERT).
pub const XLH_INSERT_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
/// `XLH_INSERT_ALL_FROZEN_SET` (MULTI_INSERT into a fresh page with `COPY FREEZE`).
pub const XLH_INSERT_ALL_FROZEN_SET: u8 = 1 << 5;
/// `XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED`.
pub const XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
/// `XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED`.
pub const XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED: u8 = 1 << 1;
/// `XLH_DELETE_ALL_VISIBLE_CLEARED`.
pub const XLH_DELETE_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
/// `XLH_LOCK_ALL_FROZEN_CLEARED` (LOCK and LOCK_UPDATED).
pub const XLH_LOCK_ALL_FROZEN_CLEARED: u8 = 0x01;

/// `VISIBILITYMAP_ALL_VISIBLE`.
pub const VISIBILITYMAP_ALL_VISIBLE: u8 = 0x01;
/// `VISIBILITYMAP_ALL_FROZEN`.
pub const VISIBILITYMAP_ALL_FROZEN: u8 = 0x02;
/// `VISIBILITYMAP_VALID_BITS`.
pub const VISIBILITYMAP_VALID_BITS: u8 = 0x03;

// ---- Control file (catalog/pg_control.h) ----

/// `PG_CONTROL_FILE_SIZE`: `pg_control` is zero-padded to this size on disk.
pub const PG_CONTROL_FILE_SIZE: usize = 8192;
/// `sizeof(ControlFileData)` on 64-bit platforms.
pub const SIZE_OF_CONTROL_FILE_DATA: usize = 296;
/// `offsetof(ControlFileData, crc)`: the CRC covers everything before it.
pub const CONTROL_FILE_CRC_OFFSET: usize = 288;
/// `sizeof(CheckPoint)`.
pub const SIZE_OF_CHECKPOINT: usize = 88;
/// `FLOATFORMAT_VALUE`: checks float representation compatibility.
pub const FLOATFORMAT_VALUE: f64 = 1_234_567.0;
/// `MOCK_AUTH_NONCE_LEN`.
pub const MOCK_AUTH_NONCE_LEN: usize = 32;
/// Default `RELSEG_SIZE` (blocks per 1 GiB relation segment file).
pub const RELSEG_SIZE: u32 = 131_072;
/// `NAMEDATALEN`.
pub const NAMEDATALEN: u32 = 64;
/// `INDEX_MAX_KEYS`.
pub const INDEX_MAX_KEYS: u32 = 32;
/// `TOAST_MAX_CHUNK_SIZE` with 8 KiB pages.
pub const TOAST_MAX_CHUNK_SIZE: u32 = 1996;
/// `LOBLKSIZE` with 8 KiB pages.
pub const LOBLKSIZE: u32 = 2048;

// ---- Relation pages (storage/bufpage.h) ----

/// `SizeOfPageHeaderData`.
pub const SIZE_OF_PAGE_HEADER_DATA: usize = 24;
/// `PG_PAGE_LAYOUT_VERSION`.
pub const PG_PAGE_LAYOUT_VERSION: u16 = 4;
/// `PD_HAS_FREE_LINES`.
pub const PD_HAS_FREE_LINES: u16 = 0x0001;
/// `PD_PAGE_FULL`.
pub const PD_PAGE_FULL: u16 = 0x0002;
/// `PD_ALL_VISIBLE`.
pub const PD_ALL_VISIBLE: u16 = 0x0004;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmgr_ids() {
        assert_eq!(rmgr_name(RM_HEAP_ID), "Heap");
        assert_eq!(rmgr_name(RM_LOGICALMSG_ID), "LogicalMessage");
        assert_eq!(rmgr_name(130), "custom130");
        assert!(rmgr_id_is_valid(0));
        assert!(rmgr_id_is_valid(21));
        assert!(!rmgr_id_is_valid(22));
        assert!(!rmgr_id_is_valid(127));
        assert!(rmgr_id_is_valid(128));
    }
}
