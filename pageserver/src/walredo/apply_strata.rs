//! Applying Strata records to pages, in Rust (no redo process round trip).
//!
//! The layouts are PostgreSQL 15's:
//! - CLOG (`pg_xact`) pages have no header: 2 status bits per transaction, 4 per byte, so
//!   32,768 transactions per 8 KiB page; transaction `x` lives in byte `(x % 32768) / 4`
//!   at bit `(x % 4) * 2`.
//! - Multixact offsets pages: one 4-byte offset per multixact, 2,048 per page.
//! - Multixact members pages: groups of 4 members, each group 4 flag bytes followed by 4
//!   xids (20 bytes); 409 groups (1,636 members) per page, the tail unused.
//! - Visibility-map pages: a standard page header, then from byte 24 (`MAXALIGN` of the
//!   header) 2 bits per heap block, 32,672 heap blocks per page. Clearing bits does not
//!   change the page LSN (PostgreSQL does not either). A new (all-zero) VM page is
//!   initialized first, as `vm_readbuf` does.

use crate::walrecord::{ClogStatus, MultiXactMember, WalRecord};

use postgres_ffi::BLCKSZ;
use postgres_ffi::page::{init_page, is_new};
use postgres_ffi::records::heap::{HEAPBLOCKS_PER_PAGE, vm_clear as clear_vm_bits, vm_location};
use postgres_ffi::slru;

/// Transactions per CLOG page.
pub const CLOG_XACTS_PER_PAGE: u32 = slru::CLOG_XACTS_PER_PAGE;
/// Multixact offsets per offsets page.
pub const MULTIXACT_OFFSETS_PER_PAGE: u32 = slru::MULTIXACT_OFFSETS_PER_PAGE;
/// Multixact members per members page.
pub const MULTIXACT_MEMBERS_PER_PAGE: u32 = slru::MULTIXACT_MEMBERS_PER_PAGE;
/// Heap blocks covered by one VM page.
pub const VM_HEAPBLOCKS_PER_PAGE: u32 = HEAPBLOCKS_PER_PAGE;

/// A Strata record that does not fit the page it was applied to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The record names something that does not live on this page.
    #[error("{what} does not belong on page {pageno}")]
    WrongPage {
        /// What was out of place.
        what: String,
        /// The page's number in its SLRU or fork.
        pageno: u32,
    },
    /// A PostgreSQL record reached the Rust path (a caller bug).
    #[error("PostgreSQL records must be replayed by a redo process")]
    NotStrataRecord,
}

/// Applies one Strata record to `page` (number `pageno` in its SLRU or fork).
pub fn apply(page: &mut [u8; BLCKSZ], pageno: u32, record: &WalRecord) -> Result<(), ApplyError> {
    match record {
        WalRecord::Postgres { .. } => Err(ApplyError::NotStrataRecord),
        WalRecord::ClogSetStatus { xids, status, .. } => {
            clog_set_status(page, pageno, xids, *status)
        }
        WalRecord::MultixactOffsets { entries } => {
            let mut applied = false;
            for &(mid, moff) in entries {
                if slru::mx_offset_page(mid) == pageno {
                    let at = slru::mx_offset_byte(mid);
                    page[at..at + 4].copy_from_slice(&moff.to_le_bytes());
                    applied = true;
                }
            }
            if applied {
                Ok(())
            } else {
                Err(ApplyError::WrongPage {
                    what: format!("multixact offsets {entries:?}"),
                    pageno,
                })
            }
        }
        WalRecord::MultixactMembersCreate { moff, members } => {
            multixact_members(page, pageno, *moff, members);
            Ok(())
        }
        WalRecord::ClearVisibilityMapFlags { heap_blknos, flags } => {
            vm_clear(page, pageno, heap_blknos, *flags)
        }
        WalRecord::TruncateVisibilityMap { heap_blocks } => vm_truncate(page, pageno, *heap_blocks),
    }
}

fn clog_set_status(
    page: &mut [u8; BLCKSZ],
    pageno: u32,
    xids: &[u32],
    status: ClogStatus,
) -> Result<(), ApplyError> {
    for &xid in xids {
        if slru::clog_page(xid) != pageno {
            return Err(ApplyError::WrongPage {
                what: format!("transaction {xid}"),
                pageno,
            });
        }
        slru::clog_set_status(&mut page[..], xid, status as u8);
    }
    Ok(())
}

/// Writes the members that fall on `pageno`; members on other pages are someone else's.
fn multixact_members(page: &mut [u8; BLCKSZ], pageno: u32, moff: u32, members: &[MultiXactMember]) {
    for (i, member) in members.iter().enumerate() {
        // Offsets wrap around at 2^32, as PostgreSQL's do.
        let offset = moff.wrapping_add(i as u32);
        if slru::mx_member_page(offset) != pageno {
            continue;
        }
        // One flag byte per member (MXACT_MEMBER_BITS_PER_XACT = 8) in its group's flag word.
        let flag_at =
            slru::mx_member_flags_byte(offset) + (slru::mx_member_flags_shift(offset) / 8) as usize;
        page[flag_at] = member.status;
        let xid_at = slru::mx_member_xid_byte(offset);
        page[xid_at..xid_at + 4].copy_from_slice(&member.xid.to_le_bytes());
    }
}

/// PostgreSQL's `PageInit(page, BLCKSZ, 0)`, as `vm_readbuf` does for a new VM page.
pub fn page_init(page: &mut [u8; BLCKSZ]) {
    init_page(page, 0);
}

fn vm_clear(
    page: &mut [u8; BLCKSZ],
    pageno: u32,
    heap_blknos: &[u32],
    flags: u8,
) -> Result<(), ApplyError> {
    if is_new(&page[..]) {
        page_init(page);
    }
    for &blk in heap_blknos {
        if vm_location(blk).0 != pageno {
            return Err(ApplyError::WrongPage {
                what: format!("heap block {blk}"),
                pageno,
            });
        }
        clear_vm_bits(&mut page[..], blk, flags);
    }
    Ok(())
}

/// `visibilitymap_prepare_truncate` for the page holding the truncation point: clears the
/// bits of every heap block at or after `heap_blocks` on this page.
fn vm_truncate(page: &mut [u8; BLCKSZ], pageno: u32, heap_blocks: u32) -> Result<(), ApplyError> {
    let (map_block, byte, shift) = vm_location(heap_blocks);
    if map_block != pageno {
        return Err(ApplyError::WrongPage {
            what: format!("truncation to {heap_blocks} heap blocks"),
            pageno,
        });
    }
    if is_new(&page[..]) {
        page_init(page);
    }
    page[byte + 1..].fill(0);
    page[byte] &= (1u8 << shift).wrapping_sub(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero() -> Box<[u8; BLCKSZ]> {
        Box::new([0u8; BLCKSZ])
    }

    #[test]
    fn clog_bits() {
        let mut page = zero();
        let rec = WalRecord::ClogSetStatus {
            xids: vec![32768 + 5, 32768 + 6],
            status: ClogStatus::Committed,
            timestamp: 0,
        };
        apply(&mut page, 1, &rec).unwrap();
        // xid%32768 = 5: byte 1, bits 2-3; 6: byte 1, bits 4-5.
        assert_eq!(page[1], 0b0001_0100);
        let abort = WalRecord::ClogSetStatus {
            xids: vec![32768 + 5],
            status: ClogStatus::Aborted,
            timestamp: 0,
        };
        apply(&mut page, 1, &abort).unwrap();
        assert_eq!(page[1], 0b0001_1000);
        assert!(page.iter().enumerate().all(|(i, &b)| i == 1 || b == 0));
        let e = apply(&mut page, 0, &rec).unwrap_err();
        assert!(e.to_string().contains("32773"), "{e}");
    }

    #[test]
    fn multixact_offsets_and_members() {
        let mut offsets = zero();
        let rec = WalRecord::MultixactOffsets {
            entries: vec![(2048 + 3, 77), (2048 + 4, 80)],
        };
        apply(&mut offsets, 1, &rec).unwrap();
        assert_eq!(&offsets[12..16], &77u32.to_le_bytes());
        assert_eq!(&offsets[16..20], &80u32.to_le_bytes());
        // The next multixact on the following page: each page takes its own entry.
        let straddle = WalRecord::MultixactOffsets {
            entries: vec![(2047, 5), (2048, 9)],
        };
        let mut p0 = zero();
        apply(&mut p0, 0, &straddle).unwrap();
        assert_eq!(&p0[8188..8192], &5u32.to_le_bytes());
        assert!(p0[..8188].iter().all(|&b| b == 0));
        assert!(apply(&mut offsets, 0, &rec).is_err(), "no entry for page 0");

        // Members 1634..1638 straddle pages 0 and 1 (1636 per page).
        let members: Vec<_> = (0..4)
            .map(|i| MultiXactMember {
                xid: 1000 + i,
                status: i as u8 + 1,
            })
            .collect();
        let rec = WalRecord::MultixactMembersCreate {
            moff: 1634,
            members,
        };
        let mut p0 = zero();
        let mut p1 = zero();
        apply(&mut p0, 0, &rec).unwrap();
        apply(&mut p1, 1, &rec).unwrap();
        // Offset 1634: group 408 (starts at 8160), member 2 → flag 8162, xid 8164+8.
        assert_eq!(p0[8162], 1);
        assert_eq!(&p0[8172..8176], &1000u32.to_le_bytes());
        // Offset 1635: member 3 of group 408.
        assert_eq!(p0[8163], 2);
        assert_eq!(&p0[8176..8180], &1001u32.to_le_bytes());
        // Offset 1636: page 1, group 0, member 0.
        assert_eq!(p1[0], 3);
        assert_eq!(&p1[4..8], &1002u32.to_le_bytes());
        assert_eq!(p1[1], 4);
        assert_eq!(&p1[8..12], &1003u32.to_le_bytes());
        assert!(
            p0[8180..].iter().all(|&b| b == 0),
            "tail of the page stays unused"
        );
    }

    #[test]
    fn vm_clear_and_truncate() {
        let mut page = zero();
        page_init(&mut page);
        page[24..].fill(0xFF);
        let blk = VM_HEAPBLOCKS_PER_PAGE + 6; // page 1, byte 1, bits 4-5
        apply(
            &mut page,
            1,
            &WalRecord::ClearVisibilityMapFlags {
                heap_blknos: vec![blk],
                flags: 1,
            },
        )
        .unwrap();
        assert_eq!(page[25], 0b1110_1111);
        apply(
            &mut page,
            1,
            &WalRecord::ClearVisibilityMapFlags {
                heap_blknos: vec![blk],
                flags: 3,
            },
        )
        .unwrap();
        assert_eq!(page[25], 0b1100_1111);
        assert!(
            apply(
                &mut page,
                0,
                &WalRecord::ClearVisibilityMapFlags {
                    heap_blknos: vec![blk],
                    flags: 3
                }
            )
            .is_err()
        );

        apply(
            &mut page,
            1,
            &WalRecord::TruncateVisibilityMap {
                heap_blocks: VM_HEAPBLOCKS_PER_PAGE + 9,
            },
        )
        .unwrap();
        // Heap blocks 8 and up (in page) cleared: byte 26 keeps bits for block 8 only (bits 0-1).
        assert_eq!(page[24], 0xFF);
        assert_eq!(page[26], 0b0000_0011);
        assert!(page[27..].iter().all(|&b| b == 0));

        let mut fresh = zero();
        apply(
            &mut fresh,
            0,
            &WalRecord::ClearVisibilityMapFlags {
                heap_blknos: vec![3],
                flags: 1,
            },
        )
        .unwrap();
        assert_eq!(
            u16::from_le_bytes([fresh[12], fresh[13]]),
            24,
            "new VM page initialized"
        );
    }

    #[test]
    fn postgres_records_are_refused() {
        let rec = WalRecord::Postgres {
            start_lsn: utils::Lsn(0),
            will_init: false,
            rec: bytes::Bytes::new(),
        };
        assert_eq!(
            apply(&mut zero(), 0, &rec),
            Err(ApplyError::NotStrataRecord)
        );
    }
}
