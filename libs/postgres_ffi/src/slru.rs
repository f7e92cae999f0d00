//! Addressing inside PostgreSQL's SLRUs (simple LRU-buffered files): the commit log
//! (`pg_xact`) and multixact offsets and members (`pg_multixact/{offsets,members}`).
//!
//! An SLRU is a sequence of 8 KiB pages grouped 32 to a segment file named by the segment
//! number in hex (`0000`, `0001`, ...). Strata stores SLRU pages like relation blocks and
//! applies CLOG and multixact updates in Rust, so it needs the same arithmetic:
//!
//! * CLOG: 2 status bits per transaction, 4 per byte, 32768 per page; xid `x` lives on page
//!   `x / 32768`, byte `(x % 32768) / 4`, bit shift `(x % 4) * 2`.
//! * Multixact offsets: one `u32` per multixact, 2048 per page.
//! * Multixact members: groups of 4 members, each group 4 flag bytes then 4 `u32` xids
//!   (20 bytes); 409 groups (1636 members) per page, the last 12 bytes of a page unused.

use crate::BLCKSZ;
use crate::types::{MultiXactId, MultiXactOffset, TransactionId};

/// `SLRU_PAGES_PER_SEGMENT`.
pub const SLRU_PAGES_PER_SEGMENT: u32 = 32;
/// `CLOG_BITS_PER_XACT`.
pub const CLOG_BITS_PER_XACT: u32 = 2;
/// `CLOG_XACTS_PER_BYTE`.
pub const CLOG_XACTS_PER_BYTE: u32 = 4;
/// `CLOG_XACTS_PER_PAGE`.
pub const CLOG_XACTS_PER_PAGE: u32 = BLCKSZ as u32 * CLOG_XACTS_PER_BYTE;
/// Mask of one transaction's status bits (`CLOG_XACT_BITMASK`).
pub const CLOG_XACT_BITMASK: u8 = 0x03;

/// `MULTIXACT_OFFSETS_PER_PAGE`.
pub const MULTIXACT_OFFSETS_PER_PAGE: u32 = BLCKSZ as u32 / 4;
/// `MULTIXACT_MEMBERS_PER_MEMBERGROUP`.
pub const MULTIXACT_MEMBERS_PER_MEMBERGROUP: u32 = 4;
/// `MULTIXACT_FLAGBYTES_PER_GROUP`.
pub const MULTIXACT_FLAGBYTES_PER_GROUP: u32 = 4;
/// `MULTIXACT_MEMBERGROUP_SIZE`: flag bytes plus four xids.
pub const MULTIXACT_MEMBERGROUP_SIZE: u32 =
    4 * MULTIXACT_MEMBERS_PER_MEMBERGROUP + MULTIXACT_FLAGBYTES_PER_GROUP;
/// `MULTIXACT_MEMBERGROUPS_PER_PAGE`.
pub const MULTIXACT_MEMBERGROUPS_PER_PAGE: u32 = BLCKSZ as u32 / MULTIXACT_MEMBERGROUP_SIZE;
/// `MULTIXACT_MEMBERS_PER_PAGE`.
pub const MULTIXACT_MEMBERS_PER_PAGE: u32 =
    MULTIXACT_MEMBERGROUPS_PER_PAGE * MULTIXACT_MEMBERS_PER_MEMBERGROUP;
/// `MXACT_MEMBER_BITS_PER_XACT`: status bits per member in the flag bytes.
pub const MXACT_MEMBER_BITS_PER_XACT: u32 = 8;

/// CLOG page holding `xid`'s status (`TransactionIdToPage`).
pub fn clog_page(xid: TransactionId) -> u32 {
    xid / CLOG_XACTS_PER_PAGE
}

/// `(byte within page, bit shift)` of `xid`'s status bits.
pub fn clog_byte_and_shift(xid: TransactionId) -> (usize, u32) {
    let index = xid % CLOG_XACTS_PER_PAGE;
    (
        (index / CLOG_XACTS_PER_BYTE) as usize,
        (xid % CLOG_XACTS_PER_BYTE) * CLOG_BITS_PER_XACT,
    )
}

/// Sets `xid`'s status (a `TRANSACTION_STATUS_*` value) on its CLOG page.
pub fn clog_set_status(page: &mut [u8], xid: TransactionId, status: u8) {
    let (byte, shift) = clog_byte_and_shift(xid);
    if let Some(b) = page.get_mut(byte) {
        *b = (*b & !(CLOG_XACT_BITMASK << shift)) | ((status & CLOG_XACT_BITMASK) << shift);
    }
}

/// Reads `xid`'s status from its CLOG page.
pub fn clog_get_status(page: &[u8], xid: TransactionId) -> u8 {
    let (byte, shift) = clog_byte_and_shift(xid);
    page.get(byte)
        .map_or(0, |b| (b >> shift) & CLOG_XACT_BITMASK)
}

/// Segment number and block within the segment of an SLRU page.
pub fn slru_segment_and_block(pageno: u32) -> (u32, u32) {
    (
        pageno / SLRU_PAGES_PER_SEGMENT,
        pageno % SLRU_PAGES_PER_SEGMENT,
    )
}

/// An SLRU segment's file name (`SlruFileName`: four or more hex digits).
pub fn slru_segment_file_name(segno: u32) -> String {
    format!("{segno:04X}")
}

/// Offsets page holding multixact `multi` (`MultiXactIdToOffsetPage`).
pub fn mx_offset_page(multi: MultiXactId) -> u32 {
    multi / MULTIXACT_OFFSETS_PER_PAGE
}

/// Byte offset of `multi`'s entry on its offsets page.
pub fn mx_offset_byte(multi: MultiXactId) -> usize {
    (multi % MULTIXACT_OFFSETS_PER_PAGE) as usize * 4
}

/// Members page holding member `offset` (`MXOffsetToMemberPage`).
pub fn mx_member_page(offset: MultiXactOffset) -> u32 {
    offset / MULTIXACT_MEMBERS_PER_PAGE
}

/// Byte offset of the flag bytes of `offset`'s group (`MXOffsetToFlagsOffset`).
pub fn mx_member_flags_byte(offset: MultiXactOffset) -> usize {
    let group = (offset / MULTIXACT_MEMBERS_PER_MEMBERGROUP) % MULTIXACT_MEMBERGROUPS_PER_PAGE;
    (group * MULTIXACT_MEMBERGROUP_SIZE) as usize
}

/// Bit shift of `offset`'s status within its group's flag word (`MXOffsetToFlagsBitShift`).
pub fn mx_member_flags_shift(offset: MultiXactOffset) -> u32 {
    (offset % MULTIXACT_MEMBERS_PER_MEMBERGROUP) * MXACT_MEMBER_BITS_PER_XACT
}

/// Byte offset of member `offset`'s xid on its page (`MXOffsetToMemberOffset`).
pub fn mx_member_xid_byte(offset: MultiXactOffset) -> usize {
    mx_member_flags_byte(offset)
        + MULTIXACT_FLAGBYTES_PER_GROUP as usize
        + (offset % MULTIXACT_MEMBERS_PER_MEMBERGROUP) as usize * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clog_addressing() {
        assert_eq!(CLOG_XACTS_PER_PAGE, 32768);
        assert_eq!(clog_page(32767), 0);
        assert_eq!(clog_page(32768), 1);
        assert_eq!(clog_byte_and_shift(5), (1, 2));
        let mut page = vec![0u8; BLCKSZ];
        clog_set_status(&mut page, 730, 1);
        clog_set_status(&mut page, 731, 2);
        clog_set_status(&mut page, 731, 3);
        assert_eq!(clog_get_status(&page, 730), 1);
        assert_eq!(clog_get_status(&page, 731), 3);
        assert_eq!(page[182], 0b1101_0000);
        assert_eq!(slru_segment_and_block(33), (1, 1));
        assert_eq!(slru_segment_file_name(1), "0001");
        assert_eq!(slru_segment_file_name(0x12345), "12345");
    }

    #[test]
    fn multixact_addressing() {
        assert_eq!(MULTIXACT_MEMBERS_PER_PAGE, 1636);
        assert_eq!(MULTIXACT_MEMBERGROUPS_PER_PAGE, 409);
        assert_eq!(mx_offset_page(2048), 1);
        assert_eq!(mx_offset_byte(3), 12);
        assert_eq!(mx_member_page(1636), 1);
        assert_eq!(mx_member_flags_byte(5), 20);
        assert_eq!(mx_member_flags_shift(6), 16);
        assert_eq!(mx_member_xid_byte(5), 20 + 4 + 4);
        assert_eq!(mx_member_xid_byte(1635), 408 * 20 + 4 + 12);
    }
}
