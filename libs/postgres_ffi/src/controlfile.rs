//! `pg_control` (`ControlFileData`) and checkpoints (`CheckPoint`), read and written with
//! their CRC.
//!
//! `pg_control` is an 8 KiB file whose first 296 bytes are `ControlFileData` (x86-64 layout,
//! PostgreSQL 15, natural C alignment; offsets below) and the rest zeros. Its last field is a
//! CRC-32C of every byte before it (offset 288). A basebackup must produce one that stock
//! PostgreSQL accepts, and `pg_controldata` is the oracle for our reading of it.
//!
//! ```text
//! CheckPoint (88 bytes)                    ControlFileData (296 bytes)
//!   0 u64 redo                               0 u64 system_identifier
//!   8 u32 ThisTimeLineID                     8 u32 pg_control_version (1300)
//!  12 u32 PrevTimeLineID                    12 u32 catalog_version_no
//!  16 bool fullPageWrites (+7 pad)          16 i32 state (DBState)       (+4 pad)
//!  24 u64 nextXid (epoch << 32 | xid)       24 i64 time
//!  32 u32 nextOid                           32 u64 checkPoint
//!  36 u32 nextMulti                         40 CheckPoint checkPointCopy (88)
//!  40 u32 nextMultiOffset                  128 u64 unloggedLSN
//!  44 u32 oldestXid                        136 u64 minRecoveryPoint
//!  48 u32 oldestXidDB                      144 u32 minRecoveryPointTLI   (+4 pad)
//!  52 u32 oldestMulti                      152 u64 backupStartPoint
//!  56 u32 oldestMultiDB (+4 pad)           160 u64 backupEndPoint
//!  64 i64 time                             168 bool backupEndRequired    (+3 pad)
//!  72 u32 oldestCommitTsXid                172 i32 wal_level
//!  76 u32 newestCommitTsXid                176 bool wal_log_hints        (+3 pad)
//!  80 u32 oldestActiveXid (+4 pad)         180 i32 MaxConnections, 184 max_worker_processes,
//!                                          188 max_wal_senders, 192 max_prepared_xacts,
//!                                          196 max_locks_per_xact
//!                                          200 bool track_commit_timestamp (+3 pad)
//!                                          204 u32 maxAlign, 208 f64 floatFormat,
//!                                          216 u32 blcksz, 220 relseg_size, 224 xlog_blcksz,
//!                                          228 xlog_seg_size, 232 nameDataLen,
//!                                          236 indexMaxKeys, 240 toast_max_chunk_size,
//!                                          244 loblksize, 248 bool float8ByVal (+3 pad),
//!                                          252 u32 data_checksum_version,
//!                                          256 [u8; 32] mock_authentication_nonce,
//!                                          288 u32 crc (+4 pad)
//! ```
//!
//! Padding is written as zeros, as PostgreSQL's own writers leave it.

use utils::Lsn;

use crate::reader::{Reader, ShortInput};
use crate::types::{MultiXactId, MultiXactOffset, Oid, TimeLineId, TransactionId};
use crate::v15::{
    CATALOG_VERSION_NO, CONTROL_FILE_CRC_OFFSET, MOCK_AUTH_NONCE_LEN, PG_CONTROL_FILE_SIZE,
    PG_CONTROL_VERSION, SIZE_OF_CHECKPOINT, SIZE_OF_CONTROL_FILE_DATA,
};
use crate::{PgMajorVersion, crc32c};

/// The contents of a checkpoint record and of `pg_control`'s copy of the latest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckPoint {
    /// `redo`: where replay must start for this checkpoint.
    pub redo: Lsn,
    /// `ThisTimeLineID`.
    pub this_timeline_id: TimeLineId,
    /// `PrevTimeLineID`.
    pub prev_timeline_id: TimeLineId,
    /// `fullPageWrites`.
    pub full_page_writes: bool,
    /// `nextXid`: the next full (epoch-qualified) transaction id.
    pub next_xid: u64,
    /// `nextOid`.
    pub next_oid: Oid,
    /// `nextMulti`.
    pub next_multi: MultiXactId,
    /// `nextMultiOffset`.
    pub next_multi_offset: MultiXactOffset,
    /// `oldestXid`: cluster-wide minimum `datfrozenxid`.
    pub oldest_xid: TransactionId,
    /// `oldestXidDB`.
    pub oldest_xid_db: Oid,
    /// `oldestMulti`.
    pub oldest_multi: MultiXactId,
    /// `oldestMultiDB`.
    pub oldest_multi_db: Oid,
    /// `time` (seconds since the Unix epoch, `pg_time_t`).
    pub time: i64,
    /// `oldestCommitTsXid`.
    pub oldest_commit_ts_xid: TransactionId,
    /// `newestCommitTsXid`.
    pub newest_commit_ts_xid: TransactionId,
    /// `oldestActiveXid`: oldest xid still running at an online checkpoint (0 at shutdown).
    pub oldest_active_xid: TransactionId,
}

impl CheckPoint {
    /// `sizeof(CheckPoint)`.
    pub const SIZE: usize = SIZE_OF_CHECKPOINT;

    /// Parses the 88-byte structure (e.g. the main data of a checkpoint record).
    pub fn decode(buf: &[u8]) -> Result<Self, ShortInput> {
        Self::read(&mut Reader::new(buf))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ShortInput> {
        let redo = Lsn(r.u64()?);
        let this_timeline_id = r.u32()?;
        let prev_timeline_id = r.u32()?;
        let full_page_writes = r.bool()?;
        r.skip(7)?;
        let next_xid = r.u64()?;
        let next_oid = r.u32()?;
        let next_multi = r.u32()?;
        let next_multi_offset = r.u32()?;
        let oldest_xid = r.u32()?;
        let oldest_xid_db = r.u32()?;
        let oldest_multi = r.u32()?;
        let oldest_multi_db = r.u32()?;
        r.skip(4)?;
        let time = r.i64()?;
        let oldest_commit_ts_xid = r.u32()?;
        let newest_commit_ts_xid = r.u32()?;
        let oldest_active_xid = r.u32()?;
        r.skip(4)?;
        Ok(CheckPoint {
            redo,
            this_timeline_id,
            prev_timeline_id,
            full_page_writes,
            next_xid,
            next_oid,
            next_multi,
            next_multi_offset,
            oldest_xid,
            oldest_xid_db,
            oldest_multi,
            oldest_multi_db,
            time,
            oldest_commit_ts_xid,
            newest_commit_ts_xid,
            oldest_active_xid,
        })
    }

    /// The 88 on-disk bytes, padding zeroed.
    pub fn encode(&self) -> [u8; SIZE_OF_CHECKPOINT] {
        let mut w = Writer::default();
        w.u64(self.redo.0);
        w.u32(self.this_timeline_id);
        w.u32(self.prev_timeline_id);
        w.bool(self.full_page_writes);
        w.pad(7);
        w.u64(self.next_xid);
        w.u32(self.next_oid);
        w.u32(self.next_multi);
        w.u32(self.next_multi_offset);
        w.u32(self.oldest_xid);
        w.u32(self.oldest_xid_db);
        w.u32(self.oldest_multi);
        w.u32(self.oldest_multi_db);
        w.pad(4);
        w.i64(self.time);
        w.u32(self.oldest_commit_ts_xid);
        w.u32(self.newest_commit_ts_xid);
        w.u32(self.oldest_active_xid);
        w.pad(4);
        let mut out = [0u8; SIZE_OF_CHECKPOINT];
        out.copy_from_slice(&w.0);
        out
    }

    /// The 32-bit xid part of `nextXid`.
    pub fn next_xid_xid(&self) -> TransactionId {
        self.next_xid as u32
    }

    /// The epoch part of `nextXid`.
    pub fn next_xid_epoch(&self) -> u32 {
        (self.next_xid >> 32) as u32
    }
}

/// `DBState`: what the cluster was doing when `pg_control` was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbState {
    /// `DB_STARTUP`.
    Startup = 0,
    /// `DB_SHUTDOWNED`: cleanly shut down.
    Shutdowned = 1,
    /// `DB_SHUTDOWNED_IN_RECOVERY`.
    ShutdownedInRecovery = 2,
    /// `DB_SHUTDOWNING`.
    Shutdowning = 3,
    /// `DB_IN_CRASH_RECOVERY`.
    InCrashRecovery = 4,
    /// `DB_IN_ARCHIVE_RECOVERY`.
    InArchiveRecovery = 5,
    /// `DB_IN_PRODUCTION`.
    InProduction = 6,
}

impl DbState {
    /// The state for its stored number.
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => DbState::Startup,
            1 => DbState::Shutdowned,
            2 => DbState::ShutdownedInRecovery,
            3 => DbState::Shutdowning,
            4 => DbState::InCrashRecovery,
            5 => DbState::InArchiveRecovery,
            6 => DbState::InProduction,
            _ => return None,
        })
    }

    /// The wording `pg_controldata` prints for "Database cluster state".
    pub fn description(self) -> &'static str {
        match self {
            DbState::Startup => "starting up",
            DbState::Shutdowned => "shut down",
            DbState::ShutdownedInRecovery => "shut down in recovery",
            DbState::Shutdowning => "shutting down",
            DbState::InCrashRecovery => "in crash recovery",
            DbState::InArchiveRecovery => "in archive recovery",
            DbState::InProduction => "in production",
        }
    }
}

/// Why a `pg_control` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlFileError {
    /// Fewer bytes than `ControlFileData`.
    #[error("pg_control too short: {0}")]
    Truncated(#[from] ShortInput),
    /// The stored CRC does not match.
    #[error("pg_control CRC mismatch: stored {stored:08X}, computed {computed:08X}")]
    BadCrc {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// Another major version's (or a corrupt) control file.
    #[error(
        "pg_control version {control_version} / catalog version {catalog_version} is not PostgreSQL {expected}"
    )]
    WrongVersion {
        /// `pg_control_version`.
        control_version: u32,
        /// `catalog_version_no`.
        catalog_version: u32,
        /// The version asked for.
        expected: PgMajorVersion,
    },
    /// A `state` value outside `DBState`.
    #[error("invalid database state {0}")]
    BadState(i32),
}

/// The contents of `pg_control` (`ControlFileData`) for PostgreSQL 15.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlFileData {
    /// `system_identifier`: unique per cluster; WAL page headers carry it.
    pub system_identifier: u64,
    /// `pg_control_version`.
    pub pg_control_version: u32,
    /// `catalog_version_no`.
    pub catalog_version_no: u32,
    /// `state`.
    pub state: DbState,
    /// `time`: when the file was last written (seconds since the Unix epoch).
    pub time: i64,
    /// `checkPoint`: LSN of the latest checkpoint record.
    pub checkpoint: Lsn,
    /// `checkPointCopy`: that record's contents.
    pub checkpoint_copy: CheckPoint,
    /// `unloggedLSN`: fake LSN counter for unlogged relations.
    pub unlogged_lsn: Lsn,
    /// `minRecoveryPoint`.
    pub min_recovery_point: Lsn,
    /// `minRecoveryPointTLI`.
    pub min_recovery_point_tli: TimeLineId,
    /// `backupStartPoint`.
    pub backup_start_point: Lsn,
    /// `backupEndPoint`.
    pub backup_end_point: Lsn,
    /// `backupEndRequired`.
    pub backup_end_required: bool,
    /// `wal_level` (0 minimal, 1 replica, 2 logical).
    pub wal_level: i32,
    /// `wal_log_hints`.
    pub wal_log_hints: bool,
    /// `MaxConnections`.
    pub max_connections: i32,
    /// `max_worker_processes`.
    pub max_worker_processes: i32,
    /// `max_wal_senders`.
    pub max_wal_senders: i32,
    /// `max_prepared_xacts`.
    pub max_prepared_xacts: i32,
    /// `max_locks_per_xact`.
    pub max_locks_per_xact: i32,
    /// `track_commit_timestamp`.
    pub track_commit_timestamp: bool,
    /// `maxAlign`.
    pub max_align: u32,
    /// `floatFormat` (1234567.0).
    pub float_format: f64,
    /// `blcksz`.
    pub blcksz: u32,
    /// `relseg_size`.
    pub relseg_size: u32,
    /// `xlog_blcksz`.
    pub xlog_blcksz: u32,
    /// `xlog_seg_size`: the cluster's `wal_segment_size`.
    pub xlog_seg_size: u32,
    /// `nameDataLen`.
    pub name_data_len: u32,
    /// `indexMaxKeys`.
    pub index_max_keys: u32,
    /// `toast_max_chunk_size`.
    pub toast_max_chunk_size: u32,
    /// `loblksize`.
    pub loblksize: u32,
    /// `float8ByVal`.
    pub float8_by_val: bool,
    /// `data_checksum_version` (0: no data checksums).
    pub data_checksum_version: u32,
    /// `mock_authentication_nonce`.
    pub mock_authentication_nonce: [u8; MOCK_AUTH_NONCE_LEN],
    /// `crc` as read (recomputed on [`ControlFileData::encode`]).
    pub crc: u32,
}

impl ControlFileData {
    /// Parses `pg_control` (at least the first 296 bytes), checking the CRC and that it is
    /// PostgreSQL 15's.
    pub fn decode(buf: &[u8]) -> Result<Self, ControlFileError> {
        let cf = Self::decode_unchecked(buf)?;
        let computed = crc32c(&buf[..CONTROL_FILE_CRC_OFFSET]);
        if computed != cf.crc {
            return Err(ControlFileError::BadCrc {
                stored: cf.crc,
                computed,
            });
        }
        if cf.pg_control_version != PG_CONTROL_VERSION
            || cf.catalog_version_no != CATALOG_VERSION_NO
        {
            return Err(ControlFileError::WrongVersion {
                control_version: cf.pg_control_version,
                catalog_version: cf.catalog_version_no,
                expected: PgMajorVersion::V15,
            });
        }
        Ok(cf)
    }

    /// Parses without checking the CRC or the version (for diagnostics of a damaged file).
    pub fn decode_unchecked(buf: &[u8]) -> Result<Self, ControlFileError> {
        let mut r = Reader::new(buf);
        let system_identifier = r.u64()?;
        let pg_control_version = r.u32()?;
        let catalog_version_no = r.u32()?;
        let state_raw = r.i32()?;
        let state = DbState::from_i32(state_raw).ok_or(ControlFileError::BadState(state_raw))?;
        r.skip(4)?;
        let time = r.i64()?;
        let checkpoint = Lsn(r.u64()?);
        let checkpoint_copy = CheckPoint::read(&mut r)?;
        let unlogged_lsn = Lsn(r.u64()?);
        let min_recovery_point = Lsn(r.u64()?);
        let min_recovery_point_tli = r.u32()?;
        r.skip(4)?;
        let backup_start_point = Lsn(r.u64()?);
        let backup_end_point = Lsn(r.u64()?);
        let backup_end_required = r.bool()?;
        r.skip(3)?;
        let wal_level = r.i32()?;
        let wal_log_hints = r.bool()?;
        r.skip(3)?;
        let max_connections = r.i32()?;
        let max_worker_processes = r.i32()?;
        let max_wal_senders = r.i32()?;
        let max_prepared_xacts = r.i32()?;
        let max_locks_per_xact = r.i32()?;
        let track_commit_timestamp = r.bool()?;
        r.skip(3)?;
        let max_align = r.u32()?;
        let float_format = r.f64()?;
        let blcksz = r.u32()?;
        let relseg_size = r.u32()?;
        let xlog_blcksz = r.u32()?;
        let xlog_seg_size = r.u32()?;
        let name_data_len = r.u32()?;
        let index_max_keys = r.u32()?;
        let toast_max_chunk_size = r.u32()?;
        let loblksize = r.u32()?;
        let float8_by_val = r.bool()?;
        r.skip(3)?;
        let data_checksum_version = r.u32()?;
        let mut mock_authentication_nonce = [0u8; MOCK_AUTH_NONCE_LEN];
        mock_authentication_nonce.copy_from_slice(r.bytes(MOCK_AUTH_NONCE_LEN)?);
        let crc = r.u32()?;
        Ok(ControlFileData {
            system_identifier,
            pg_control_version,
            catalog_version_no,
            state,
            time,
            checkpoint,
            checkpoint_copy,
            unlogged_lsn,
            min_recovery_point,
            min_recovery_point_tli,
            backup_start_point,
            backup_end_point,
            backup_end_required,
            wal_level,
            wal_log_hints,
            max_connections,
            max_worker_processes,
            max_wal_senders,
            max_prepared_xacts,
            max_locks_per_xact,
            track_commit_timestamp,
            max_align,
            float_format,
            blcksz,
            relseg_size,
            xlog_blcksz,
            xlog_seg_size,
            name_data_len,
            index_max_keys,
            toast_max_chunk_size,
            loblksize,
            float8_by_val,
            data_checksum_version,
            mock_authentication_nonce,
            crc,
        })
    }

    /// The full 8 KiB `pg_control` file with a fresh CRC (also stored in `self.crc`'s place in
    /// the output; `self` is not changed).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.system_identifier);
        w.u32(self.pg_control_version);
        w.u32(self.catalog_version_no);
        w.i32(self.state as i32);
        w.pad(4);
        w.i64(self.time);
        w.u64(self.checkpoint.0);
        w.0.extend_from_slice(&self.checkpoint_copy.encode());
        w.u64(self.unlogged_lsn.0);
        w.u64(self.min_recovery_point.0);
        w.u32(self.min_recovery_point_tli);
        w.pad(4);
        w.u64(self.backup_start_point.0);
        w.u64(self.backup_end_point.0);
        w.bool(self.backup_end_required);
        w.pad(3);
        w.i32(self.wal_level);
        w.bool(self.wal_log_hints);
        w.pad(3);
        w.i32(self.max_connections);
        w.i32(self.max_worker_processes);
        w.i32(self.max_wal_senders);
        w.i32(self.max_prepared_xacts);
        w.i32(self.max_locks_per_xact);
        w.bool(self.track_commit_timestamp);
        w.pad(3);
        w.u32(self.max_align);
        w.0.extend_from_slice(&self.float_format.to_le_bytes());
        w.u32(self.blcksz);
        w.u32(self.relseg_size);
        w.u32(self.xlog_blcksz);
        w.u32(self.xlog_seg_size);
        w.u32(self.name_data_len);
        w.u32(self.index_max_keys);
        w.u32(self.toast_max_chunk_size);
        w.u32(self.loblksize);
        w.bool(self.float8_by_val);
        w.pad(3);
        w.u32(self.data_checksum_version);
        w.0.extend_from_slice(&self.mock_authentication_nonce);
        debug_assert_eq!(w.0.len(), CONTROL_FILE_CRC_OFFSET);
        let crc = crc32c(&w.0);
        w.u32(crc);
        w.pad(SIZE_OF_CONTROL_FILE_DATA - CONTROL_FILE_CRC_OFFSET - 4);
        w.0.resize(PG_CONTROL_FILE_SIZE, 0);
        w.0
    }
}

/// A little-endian byte writer for fixed layouts.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn pad(&mut self, n: usize) {
        self.0.resize(self.0.len() + n, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> ControlFileData {
        ControlFileData {
            system_identifier: 7_300_000_000_000_000_001,
            pg_control_version: PG_CONTROL_VERSION,
            catalog_version_no: CATALOG_VERSION_NO,
            state: DbState::Shutdowned,
            time: 1_700_000_000,
            checkpoint: Lsn(0x0200_0028),
            checkpoint_copy: CheckPoint {
                redo: Lsn(0x0200_0028),
                this_timeline_id: 1,
                prev_timeline_id: 1,
                full_page_writes: true,
                next_xid: (1 << 32) | 739,
                next_oid: 16397,
                next_multi: 3,
                next_multi_offset: 5,
                oldest_xid: 716,
                oldest_xid_db: 1,
                oldest_multi: 1,
                oldest_multi_db: 1,
                time: 1_700_000_000,
                oldest_commit_ts_xid: 0,
                newest_commit_ts_xid: 0,
                oldest_active_xid: 0,
            },
            unlogged_lsn: Lsn(1000),
            min_recovery_point: Lsn(0),
            min_recovery_point_tli: 0,
            backup_start_point: Lsn(0),
            backup_end_point: Lsn(0),
            backup_end_required: false,
            wal_level: 1,
            wal_log_hints: true,
            max_connections: 100,
            max_worker_processes: 8,
            max_wal_senders: 10,
            max_prepared_xacts: 5,
            max_locks_per_xact: 64,
            track_commit_timestamp: false,
            max_align: 8,
            float_format: crate::v15::FLOATFORMAT_VALUE,
            blcksz: 8192,
            relseg_size: crate::v15::RELSEG_SIZE,
            xlog_blcksz: 8192,
            xlog_seg_size: 16 * 1024 * 1024,
            name_data_len: 64,
            index_max_keys: 32,
            toast_max_chunk_size: 1996,
            loblksize: 2048,
            float8_by_val: true,
            data_checksum_version: 0,
            mock_authentication_nonce: [9; 32],
            crc: 0,
        }
    }

    #[test]
    fn round_trip_with_crc() {
        let cf = sample();
        let bytes = cf.encode();
        assert_eq!(bytes.len(), 8192);
        let back = ControlFileData::decode(&bytes).unwrap();
        assert_eq!(back.crc, crc32c(&bytes[..CONTROL_FILE_CRC_OFFSET]));
        assert_eq!(
            ControlFileData {
                crc: 0,
                ..back.clone()
            },
            cf
        );
        assert_eq!(back.encode(), bytes);
        assert!(bytes[SIZE_OF_CONTROL_FILE_DATA..].iter().all(|&b| b == 0));
        // Offsets from the layout table.
        assert_eq!(&bytes[32..40], &0x0200_0028u64.to_le_bytes());
        assert_eq!(
            &bytes[40 + 24..40 + 32],
            &((1u64 << 32) | 739).to_le_bytes()
        );
        assert_eq!(&bytes[228..232], &(16u32 << 20).to_le_bytes());
        assert_eq!(back.checkpoint_copy.next_xid_xid(), 739);
        assert_eq!(back.checkpoint_copy.next_xid_epoch(), 1);
    }

    #[test]
    fn rejects_corruption_and_other_versions() {
        let mut bytes = sample().encode();
        bytes[100] ^= 1;
        assert!(matches!(
            ControlFileData::decode(&bytes),
            Err(ControlFileError::BadCrc { .. })
        ));
        assert!(ControlFileData::decode_unchecked(&bytes).is_ok());
        let mut other = sample();
        other.catalog_version_no = 202307071;
        assert!(matches!(
            ControlFileData::decode(&other.encode()),
            Err(ControlFileError::WrongVersion { .. })
        ));
        assert!(matches!(
            ControlFileData::decode(&bytes[..200]),
            Err(ControlFileError::Truncated(_))
        ));
        let mut bad_state = sample().encode();
        bad_state[16] = 42;
        assert!(matches!(
            ControlFileData::decode_unchecked(&bad_state),
            Err(ControlFileError::BadState(42))
        ));
    }

    #[test]
    fn checkpoint_round_trip() {
        let cp = sample().checkpoint_copy;
        let bytes = cp.encode();
        assert_eq!(bytes.len(), 88);
        assert_eq!(CheckPoint::decode(&bytes).unwrap(), cp);
        assert!(CheckPoint::decode(&bytes[..87]).is_err());
        assert_eq!(&bytes[64..72], &1_700_000_000i64.to_le_bytes());
    }
}
