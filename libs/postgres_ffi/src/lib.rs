//! PostgreSQL on-disk and WAL formats, written by hand from the documented layouts.
//!
//! Strata's storage services never link PostgreSQL; they read and write its bytes. This crate
//! is the one place that knows those bytes:
//!
//! * WAL pages and records: [`xlog_page`] (page headers), [`xlog_record`] (`XLogRecord`, its
//!   block references, full-page images and main data), [`decoder`] (a streaming decoder
//!   that reassembles records across page and segment boundaries and checks their CRC),
//!   [`wal_segment`] (segment file names, finding the end of valid WAL) and [`wal_generate`]
//!   (the inverse: building records and laying them out on pages).
//! * Relation pages ([`page`]), `pg_control` and `CheckPoint` ([`controlfile`]), SLRU
//!   addressing for CLOG and multixacts ([`slru`]).
//! * The resource-manager specific records the pageserver interprets ([`records`]).
//!
//! Layout facts are per major version. Only PostgreSQL 15 exists today; its constants live in
//! [`v15`]. Everything that would change between versions takes or carries a
//! [`PgMajorVersion`], so 16 and 17 can be added as new `vNN` modules and new enum variants
//! without changing callers.
//!
//! All multi-byte fields are little-endian: PostgreSQL writes native byte order and every
//! machine we run on is little-endian. Nothing in this crate panics on malformed input; every
//! error names the LSN (or file offset) where the problem is.

pub mod compression;
pub mod controlfile;
pub mod decoder;
pub mod page;
pub mod pglz;
pub mod records;
pub mod slru;
pub mod types;
pub mod v15;
pub mod wal_generate;
pub mod wal_segment;
pub mod xlog_page;
pub mod xlog_record;

mod reader;

pub use decoder::{WalDecodeError, WalDecodeErrorKind, WalStreamDecoder};
pub use types::{BlockNumber, ForkNumber, Oid, RelFileNode, TimestampTz, TransactionId};
pub use utils::Lsn;
pub use xlog_record::{BlockImage, BlockRef, DecodedWalRecord, XLogRecordHeader};

/// Relation page size (`BLCKSZ`). Fixed at 8 KiB: Strata supports only default builds.
pub const BLCKSZ: usize = 8192;

/// WAL page size (`XLOG_BLCKSZ`), 8 KiB in every supported build: `utils::lsn::XLOG_BLCKSZ`,
/// whose [`Lsn`] page arithmetic needs it, as a `usize`.
pub const XLOG_BLCKSZ: usize = utils::lsn::XLOG_BLCKSZ as usize;

/// The default WAL segment size (`wal_segment_size`), 16 MiB. Clusters may be initialized
/// with another power of two between 1 MiB and 1 GiB; everything here takes the size.
pub const DEFAULT_WAL_SEGMENT_SIZE: usize = 16 * 1024 * 1024;

/// PostgreSQL's `MAXALIGN` on 64-bit platforms.
pub const MAXIMUM_ALIGNOF: usize = 8;

/// Rounds `len` up to a multiple of [`MAXIMUM_ALIGNOF`] (PostgreSQL's `MAXALIGN`).
pub const fn maxalign(len: usize) -> usize {
    (len + MAXIMUM_ALIGNOF - 1) & !(MAXIMUM_ALIGNOF - 1)
}

/// Whether `size` is a valid `wal_segment_size`: a power of two from 1 MiB to 1 GiB
/// (`IsValidWalSegSize`).
pub const fn is_valid_wal_segment_size(size: u64) -> bool {
    size.is_power_of_two() && size >= 1024 * 1024 && size <= 1024 * 1024 * 1024
}

/// PostgreSQL's CRC-32C (Castagnoli) over `data`, exactly as `INIT_CRC32C`, `COMP_CRC32C` and
/// `FIN_CRC32C` compute it. Used by WAL records, `pg_control` and Strata's own files.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continues a finished [`crc32c`] over more bytes, as if the two inputs were one.
///
/// WAL records are checksummed body first, header second; this makes that a two-step call
/// without copying.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// A PostgreSQL major version whose formats this crate knows.
///
/// Only 15 today. The decoder, the control file and the record parsers take it, so adding a
/// version is a new variant plus a `vNN` module of constants, not a new API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PgMajorVersion {
    /// PostgreSQL 15.
    V15,
}

impl PgMajorVersion {
    /// The version as PostgreSQL numbers it (`15`).
    pub fn as_number(self) -> u32 {
        match self {
            PgMajorVersion::V15 => 15,
        }
    }

    /// The version for a major number, if supported.
    pub fn from_number(n: u32) -> Option<Self> {
        match n {
            15 => Some(PgMajorVersion::V15),
            _ => None,
        }
    }

    /// The `xlp_magic` every WAL page of this version carries.
    pub fn xlog_page_magic(self) -> u16 {
        match self {
            PgMajorVersion::V15 => v15::XLOG_PAGE_MAGIC,
        }
    }
}

impl std::fmt::Display for PgMajorVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_known_vectors() {
        // The standard CRC-32C check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_append(crc32c(b"1234"), b"56789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn alignment_and_sizes() {
        assert_eq!(maxalign(0), 0);
        assert_eq!(maxalign(1), 8);
        assert_eq!(maxalign(24), 24);
        assert_eq!(maxalign(25), 32);
        assert!(is_valid_wal_segment_size(16 * 1024 * 1024));
        assert!(is_valid_wal_segment_size(1024 * 1024));
        assert!(!is_valid_wal_segment_size(512 * 1024));
        assert!(!is_valid_wal_segment_size(3 * 1024 * 1024));
        assert_eq!(PgMajorVersion::from_number(15), Some(PgMajorVersion::V15));
        assert_eq!(PgMajorVersion::from_number(14), None);
    }
}
