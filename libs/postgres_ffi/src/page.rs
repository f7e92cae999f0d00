//! Relation pages: the 24-byte page header (`PageHeaderData`) and the operations WAL
//! ingest and redo need on it.
//!
//! ```text
//!  0  u32 pd_lsn.xlogid    high half of the LSN of the last change (stored as two u32 halves,
//!  4  u32 pd_lsn.xrecoff   low half                 so *not* one little-endian u64)
//!  8  u16 pd_checksum
//! 10  u16 pd_flags         PD_HAS_FREE_LINES, PD_PAGE_FULL, PD_ALL_VISIBLE
//! 12  u16 pd_lower         end of the line pointer array
//! 14  u16 pd_upper         start of tuple space
//! 16  u16 pd_special       start of the special space
//! 18  u16 pd_pagesize_version   page size (high byte) | layout version 4 (low byte)
//! 20  u32 pd_prune_xid
//! 24  line pointers (ItemIdData, 4 bytes each)
//! ```
//!
//! A page whose `pd_upper` is 0 is "new" (all zeros, never initialized); redo leaves its LSN
//! alone. The hole a full-page image omits is `[pd_lower, pd_upper)`.

use utils::Lsn;

use crate::BLCKSZ;
use crate::reader::{Reader, ShortInput};
use crate::types::TransactionId;
use crate::v15::{PG_PAGE_LAYOUT_VERSION, SIZE_OF_PAGE_HEADER_DATA};

/// A parsed page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageHeader {
    /// `pd_lsn`: the end LSN of the last WAL record that changed the page.
    pub lsn: Lsn,
    /// `pd_checksum` (0 unless data checksums are on).
    pub checksum: u16,
    /// `pd_flags`.
    pub flags: u16,
    /// `pd_lower`.
    pub lower: u16,
    /// `pd_upper`.
    pub upper: u16,
    /// `pd_special`.
    pub special: u16,
    /// `pd_pagesize_version`.
    pub pagesize_version: u16,
    /// `pd_prune_xid`: oldest xid that might make pruning worthwhile.
    pub prune_xid: TransactionId,
}

impl PageHeader {
    /// Parses the first 24 bytes of a page.
    pub fn decode(page: &[u8]) -> Result<Self, ShortInput> {
        let mut r = Reader::new(page);
        let hi = r.u32()?;
        let lo = r.u32()?;
        Ok(PageHeader {
            lsn: Lsn((u64::from(hi) << 32) | u64::from(lo)),
            checksum: r.u16()?,
            flags: r.u16()?,
            lower: r.u16()?,
            upper: r.u16()?,
            special: r.u16()?,
            pagesize_version: r.u16()?,
            prune_xid: r.u32()?,
        })
    }

    /// The 24 header bytes.
    pub fn encode(&self) -> [u8; SIZE_OF_PAGE_HEADER_DATA] {
        let mut out = [0u8; SIZE_OF_PAGE_HEADER_DATA];
        let (hi, lo) = self.lsn.halves();
        out[0..4].copy_from_slice(&hi.to_le_bytes());
        out[4..8].copy_from_slice(&lo.to_le_bytes());
        out[8..10].copy_from_slice(&self.checksum.to_le_bytes());
        out[10..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..14].copy_from_slice(&self.lower.to_le_bytes());
        out[14..16].copy_from_slice(&self.upper.to_le_bytes());
        out[16..18].copy_from_slice(&self.special.to_le_bytes());
        out[18..20].copy_from_slice(&self.pagesize_version.to_le_bytes());
        out[20..24].copy_from_slice(&self.prune_xid.to_le_bytes());
        out
    }

    /// The page size recorded in `pd_pagesize_version`.
    pub fn page_size(&self) -> usize {
        usize::from(self.pagesize_version & 0xFF00)
    }

    /// The layout version recorded in `pd_pagesize_version` (4 since PostgreSQL 8.3).
    pub fn layout_version(&self) -> u8 {
        (self.pagesize_version & 0x00FF) as u8
    }

    /// Number of line pointers (`PageGetMaxOffsetNumber`).
    pub fn max_offset_number(&self) -> usize {
        usize::from(self.lower).saturating_sub(SIZE_OF_PAGE_HEADER_DATA) / 4
    }
}

/// Whether the page was never initialized (`PageIsNew`: `pd_upper == 0`).
pub fn is_new(page: &[u8]) -> bool {
    page.get(14..16).is_none_or(|b| b == [0, 0])
}

/// The page's `pd_lsn`, or `None` if the slice is shorter than a header.
pub fn get_lsn(page: &[u8]) -> Option<Lsn> {
    PageHeader::decode(page).ok().map(|h| h.lsn)
}

/// Sets `pd_lsn` (`PageSetLSN`). No-op on a slice shorter than a header.
pub fn set_lsn(page: &mut [u8], lsn: Lsn) {
    if page.len() >= 8 {
        let (hi, lo) = lsn.halves();
        page[0..4].copy_from_slice(&hi.to_le_bytes());
        page[4..8].copy_from_slice(&lo.to_le_bytes());
    }
}

/// What redo does after restoring a full-page image from the record ending at `end_lsn`:
/// stamps the page with that LSN unless the page is new (`XLogReadBufferForRedoExtended`).
/// Pages rebuilt from WAL match the data directory only with this applied.
pub fn set_lsn_after_redo(page: &mut [u8], end_lsn: Lsn) {
    if !is_new(page) {
        set_lsn(page, end_lsn);
    }
}

/// Initializes an empty page with `special_size` bytes of special space (`PageInit`).
pub fn init_page(page: &mut [u8; BLCKSZ], special_size: usize) {
    page.fill(0);
    let special = BLCKSZ - crate::maxalign(special_size);
    let header = PageHeader {
        lower: SIZE_OF_PAGE_HEADER_DATA as u16,
        upper: special as u16,
        special: special as u16,
        pagesize_version: BLCKSZ as u16 | PG_PAGE_LAYOUT_VERSION,
        ..PageHeader::default()
    };
    page[..SIZE_OF_PAGE_HEADER_DATA].copy_from_slice(&header.encode());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_lsn_halves() {
        let h = PageHeader {
            lsn: Lsn(0x1_0000_0002),
            checksum: 3,
            flags: 4,
            lower: 28,
            upper: 8000,
            special: 8192,
            pagesize_version: 8192 | 4,
            prune_xid: 77,
        };
        let bytes = h.encode();
        // xlogid (high half) first.
        assert_eq!(&bytes[0..8], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(PageHeader::decode(&bytes).unwrap(), h);
        assert_eq!(h.page_size(), 8192);
        assert_eq!(h.layout_version(), 4);
        assert_eq!(h.max_offset_number(), 1);
        assert!(PageHeader::decode(&bytes[..23]).is_err());
    }

    #[test]
    fn init_and_redo_lsn() {
        let mut page = [0u8; BLCKSZ];
        assert!(is_new(&page));
        set_lsn_after_redo(&mut page, Lsn(99));
        assert_eq!(get_lsn(&page), Some(Lsn(0)), "new pages keep LSN 0");
        init_page(&mut page, 16);
        assert!(!is_new(&page));
        let h = PageHeader::decode(&page).unwrap();
        assert_eq!((h.lower, h.upper, h.special), (24, 8176, 8176));
        assert_eq!(h.pagesize_version, 0x2004);
        set_lsn_after_redo(&mut page, Lsn(0xABCD_0000_1234));
        assert_eq!(get_lsn(&page), Some(Lsn(0xABCD_0000_1234)));
        assert_eq!(get_lsn(&page[..4]), None);
    }
}
