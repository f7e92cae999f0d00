//! WAL page headers (`XLogPageHeaderData`, `XLogLongPageHeaderData`).
//!
//! WAL is a sequence of 8 KiB pages; each starts with a header:
//!
//! ```text
//! short header (24 bytes, SizeOfXLogShortPHD)
//!   0  u16 xlp_magic     XLOG_PAGE_MAGIC of the major version (0xD110 for 15)
//!   2  u16 xlp_info      XLP_* flags
//!   4  u32 xlp_tli       timeline of the first record on the page
//!   8  u64 xlp_pageaddr  LSN of the page itself
//!  16  u32 xlp_rem_len   bytes of a record continued from the previous page (0 if none)
//!  20  4 bytes padding to MAXALIGN
//! long header (40 bytes, SizeOfXLogLongPHD), first page of every segment, XLP_LONG_HEADER set
//!  24  u64 xlp_sysid     system identifier from pg_control
//!  32  u32 xlp_seg_size  wal_segment_size
//!  36  u32 xlp_xlog_blcksz  XLOG_BLCKSZ
//! ```
//!
//! Invariants checked on read (as PostgreSQL's `XLogReaderValidatePageHeader` does): the magic,
//! no unknown flag bits, a long header on the first page of a segment with matching segment
//! size, block size and (if known) system id, and `xlp_pageaddr` equal to the page's LSN.
//! When a record continues onto a page, `XLP_FIRST_IS_CONTRECORD` is set and `xlp_rem_len`
//! counts the record bytes still to come, including those on later pages.

use utils::Lsn;

use crate::reader::Reader;
use crate::types::TimeLineId;
use crate::v15::{
    SIZE_OF_XLOG_LONG_PHD, SIZE_OF_XLOG_SHORT_PHD, XLP_ALL_FLAGS, XLP_FIRST_IS_CONTRECORD,
    XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER,
};
use crate::{PgMajorVersion, XLOG_BLCKSZ};

/// The long-header fields that identify the cluster and its WAL geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XLogLongPageHeaderFields {
    /// `xlp_sysid`: the cluster's system identifier.
    pub sysid: u64,
    /// `xlp_seg_size`: the WAL segment size.
    pub seg_size: u32,
    /// `xlp_xlog_blcksz`: the WAL page size.
    pub xlog_blcksz: u32,
}

/// A parsed WAL page header, short or long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XLogPageHeader {
    /// `xlp_magic`.
    pub magic: u16,
    /// `xlp_info`: `XLP_*` flags.
    pub info: u16,
    /// `xlp_tli`.
    pub tli: TimeLineId,
    /// `xlp_pageaddr`: the LSN of this page.
    pub pageaddr: Lsn,
    /// `xlp_rem_len`: bytes of a continued record still to come (with `XLP_FIRST_IS_CONTRECORD`).
    pub rem_len: u32,
    /// The long-header fields, present iff `XLP_LONG_HEADER` is set.
    pub long: Option<XLogLongPageHeaderFields>,
}

/// Why a page header is not valid at the place it was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageHeaderError {
    /// Fewer bytes than the header needs.
    #[error("page header truncated: {0} bytes")]
    Truncated(usize),
    /// Wrong `xlp_magic` (zeroed or foreign page, or another major version).
    #[error("invalid magic number {found:04X} (expected {expected:04X})")]
    BadMagic {
        /// What the page had.
        found: u16,
        /// What this major version writes.
        expected: u16,
    },
    /// Flag bits PostgreSQL never sets.
    #[error("invalid info bits {0:04X}")]
    BadInfo(u16),
    /// The first page of a segment without `XLP_LONG_HEADER`.
    #[error("invalid info bits {0:04X}: first page of a segment needs a long header")]
    MissingLongHeader(u16),
    /// `xlp_pageaddr` is not this page's LSN: typically an old, recycled segment.
    #[error("unexpected pageaddr {found} (expected {expected})")]
    UnexpectedPageAddr {
        /// What the page had.
        found: Lsn,
        /// The LSN the page is read at.
        expected: Lsn,
    },
    /// The long header names another cluster.
    #[error("WAL is from a different system: page sysid {found}, expected {expected}")]
    SystemIdMismatch {
        /// What the page had.
        found: u64,
        /// The expected system identifier.
        expected: u64,
    },
    /// The long header's segment size or block size disagrees with ours.
    #[error("incorrect segment size {seg_size} or XLOG_BLCKSZ {blcksz} in page header")]
    GeometryMismatch {
        /// `xlp_seg_size` found.
        seg_size: u32,
        /// `xlp_xlog_blcksz` found.
        blcksz: u32,
    },
}

impl XLogPageHeader {
    /// Size of this header on the page: [`SIZE_OF_XLOG_LONG_PHD`] or [`SIZE_OF_XLOG_SHORT_PHD`].
    pub fn size(&self) -> usize {
        Self::size_for_info(self.info)
    }

    /// Header size implied by `xlp_info` (`XLogPageHeaderSize`).
    pub fn size_for_info(info: u16) -> usize {
        if info & XLP_LONG_HEADER != 0 {
            SIZE_OF_XLOG_LONG_PHD
        } else {
            SIZE_OF_XLOG_SHORT_PHD
        }
    }

    /// Whether the page begins with the continuation of an earlier record.
    pub fn is_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_CONTRECORD != 0
    }

    /// Whether the page replaces the continuation of a record that was never finished.
    pub fn is_overwrite_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0
    }

    /// Parses a header from the start of `buf`, which must hold at least the short header
    /// (and the long one if `XLP_LONG_HEADER` is set). No validity checks; see
    /// [`XLogPageHeader::validate`].
    pub fn decode(buf: &[u8]) -> Result<Self, PageHeaderError> {
        let mut r = Reader::new(buf);
        let truncated = |_| PageHeaderError::Truncated(buf.len());
        let magic = r.u16().map_err(truncated)?;
        let info = r.u16().map_err(truncated)?;
        let tli = r.u32().map_err(truncated)?;
        let pageaddr = Lsn(r.u64().map_err(truncated)?);
        let rem_len = r.u32().map_err(truncated)?;
        r.skip(4).map_err(truncated)?;
        let long = if info & XLP_LONG_HEADER != 0 {
            Some(XLogLongPageHeaderFields {
                sysid: r.u64().map_err(truncated)?,
                seg_size: r.u32().map_err(truncated)?,
                xlog_blcksz: r.u32().map_err(truncated)?,
            })
        } else {
            None
        };
        Ok(XLogPageHeader {
            magic,
            info,
            tli,
            pageaddr,
            rem_len,
            long,
        })
    }

    /// Checks the header as PostgreSQL does before trusting a page read at `page_lsn`.
    ///
    /// `system_id` is checked only when given (a decoder started from a mid-segment LSN may
    /// not know it yet).
    pub fn validate(
        &self,
        version: PgMajorVersion,
        page_lsn: Lsn,
        seg_size: u64,
        system_id: Option<u64>,
    ) -> Result<(), PageHeaderError> {
        let expected = version.xlog_page_magic();
        if self.magic != expected {
            return Err(PageHeaderError::BadMagic {
                found: self.magic,
                expected,
            });
        }
        if self.info & !XLP_ALL_FLAGS != 0 {
            return Err(PageHeaderError::BadInfo(self.info));
        }
        match &self.long {
            Some(long) => {
                if let Some(sysid) = system_id
                    && long.sysid != sysid
                {
                    return Err(PageHeaderError::SystemIdMismatch {
                        found: long.sysid,
                        expected: sysid,
                    });
                }
                if u64::from(long.seg_size) != seg_size || long.xlog_blcksz as usize != XLOG_BLCKSZ
                {
                    return Err(PageHeaderError::GeometryMismatch {
                        seg_size: long.seg_size,
                        blcksz: long.xlog_blcksz,
                    });
                }
            }
            None if page_lsn.segment_offset(seg_size) == 0 => {
                return Err(PageHeaderError::MissingLongHeader(self.info));
            }
            None => {}
        }
        if self.pageaddr != page_lsn {
            return Err(PageHeaderError::UnexpectedPageAddr {
                found: self.pageaddr,
                expected: page_lsn,
            });
        }
        Ok(())
    }

    /// The on-disk bytes: 24 or 40, padding zeroed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIZE_OF_XLOG_LONG_PHD);
        out.extend_from_slice(&self.magic.to_le_bytes());
        out.extend_from_slice(&self.info.to_le_bytes());
        out.extend_from_slice(&self.tli.to_le_bytes());
        out.extend_from_slice(&self.pageaddr.0.to_le_bytes());
        out.extend_from_slice(&self.rem_len.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        if let Some(long) = &self.long {
            out.extend_from_slice(&long.sysid.to_le_bytes());
            out.extend_from_slice(&long.seg_size.to_le_bytes());
            out.extend_from_slice(&long.xlog_blcksz.to_le_bytes());
        }
        out
    }
}

/// The size of the page header at `page_lsn` (a page start): long on the first page of a
/// segment, short elsewhere.
pub fn page_header_size(page_lsn: Lsn, seg_size: u64) -> usize {
    if page_lsn.segment_offset(seg_size) == 0 {
        SIZE_OF_XLOG_LONG_PHD
    } else {
        SIZE_OF_XLOG_SHORT_PHD
    }
}

/// Where a record that "starts" at `lsn` really starts: `lsn` itself, or just past the page
/// header when `lsn` is a page boundary. PostgreSQL reports record ends at page boundaries
/// (before the next header); streaming and replication positions sometimes need the
/// position of the first record byte instead.
pub fn skip_page_header(lsn: Lsn, seg_size: u64) -> Lsn {
    if lsn.page_offset() == 0 {
        Lsn(lsn.0 + page_header_size(lsn, seg_size) as u64)
    } else {
        lsn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 * 1024 * 1024;

    fn long_header(lsn: Lsn) -> XLogPageHeader {
        XLogPageHeader {
            magic: 0xD110,
            info: XLP_LONG_HEADER,
            tli: 1,
            pageaddr: lsn,
            rem_len: 0,
            long: Some(XLogLongPageHeaderFields {
                sysid: 42,
                seg_size: SEG as u32,
                xlog_blcksz: 8192,
            }),
        }
    }

    #[test]
    fn round_trip_and_validate() {
        let h = long_header(Lsn(SEG));
        let bytes = h.encode();
        assert_eq!(bytes.len(), 40);
        let back = XLogPageHeader::decode(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.size(), 40);
        back.validate(PgMajorVersion::V15, Lsn(SEG), SEG, Some(42))
            .unwrap();
        back.validate(PgMajorVersion::V15, Lsn(SEG), SEG, None)
            .unwrap();
        assert!(matches!(
            back.validate(PgMajorVersion::V15, Lsn(SEG), SEG, Some(7)),
            Err(PageHeaderError::SystemIdMismatch { .. })
        ));
        assert!(matches!(
            back.validate(PgMajorVersion::V15, Lsn(SEG), SEG * 2, None),
            Err(PageHeaderError::GeometryMismatch { .. })
        ));
        assert!(matches!(
            back.validate(PgMajorVersion::V15, Lsn(2 * SEG), SEG, None),
            Err(PageHeaderError::UnexpectedPageAddr { .. })
        ));
    }

    #[test]
    fn header_sizes() {
        assert_eq!(page_header_size(Lsn(SEG), SEG), 40);
        assert_eq!(page_header_size(Lsn(SEG + 8192), SEG), 24);
        assert_eq!(skip_page_header(Lsn(SEG), SEG), Lsn(SEG + 40));
        assert_eq!(skip_page_header(Lsn(SEG + 8192), SEG), Lsn(SEG + 8192 + 24));
        assert_eq!(skip_page_header(Lsn(SEG + 8200), SEG), Lsn(SEG + 8200));
    }

    #[test]
    fn short_header_rules() {
        let mut h = long_header(Lsn(SEG + 8192));
        h.info = XLP_FIRST_IS_CONTRECORD;
        h.long = None;
        h.rem_len = 100;
        let bytes = h.encode();
        assert_eq!(bytes.len(), 24);
        let back = XLogPageHeader::decode(&bytes).unwrap();
        assert!(back.is_contrecord());
        assert!(!back.is_overwrite_contrecord());
        back.validate(PgMajorVersion::V15, Lsn(SEG + 8192), SEG, None)
            .unwrap();
        assert!(matches!(
            back.validate(PgMajorVersion::V15, Lsn(SEG), SEG, None),
            Err(PageHeaderError::MissingLongHeader(_))
        ));
        let mut bad = back;
        bad.info |= 0x10;
        assert!(matches!(
            bad.validate(PgMajorVersion::V15, Lsn(SEG + 8192), SEG, None),
            Err(PageHeaderError::BadInfo(_))
        ));
        bad = back;
        bad.magic = 0;
        assert!(matches!(
            bad.validate(PgMajorVersion::V15, Lsn(SEG + 8192), SEG, None),
            Err(PageHeaderError::BadMagic { .. })
        ));
        assert!(matches!(
            XLogPageHeader::decode(&bytes[..20]),
            Err(PageHeaderError::Truncated(20))
        ));
        // A long flag with only a short header's bytes is truncated, not a panic.
        let mut long_flag = bytes.clone();
        long_flag[2] = XLP_LONG_HEADER as u8;
        assert!(XLogPageHeader::decode(&long_flag).is_err());
    }
}
