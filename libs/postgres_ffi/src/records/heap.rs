//! Heap records (`RM_HEAP_ID`, `RM_HEAP2_ID`) that clear visibility-map bits, and the
//! visibility map's addressing.
//!
//! When a heap change makes a page no longer all-visible (or all-frozen), redo clears the
//! page's bits in the relation's visibility map, a page that is *not* among the record's
//! block references. Whoever rebuilds pages from WAL must do the same, so these flags matter:
//!
//! ```text
//! HEAP INSERT    xl_heap_insert  { u16 offnum, u8 flags }                flags at 2
//! HEAP DELETE    xl_heap_delete  { u32 xmax, u16 offnum, u8 infobits, u8 flags }   at 7
//! HEAP UPDATE, HOT_UPDATE  xl_heap_update { u32 old_xmax, u16 old_offnum,
//!                u8 old_infobits, u8 flags, u32 new_xmax, u16 new_offnum }          at 7
//! HEAP LOCK      xl_heap_lock    { u32 xid, u16 offnum, i8 infobits, u8 flags }     at 7
//! HEAP2 MULTI_INSERT  xl_heap_multi_insert { u8 flags, u16 ntuples, ... }          at 0
//! HEAP2 LOCK_UPDATED  xl_heap_lock_updated { u32 xmax, u16 offnum, u8 infobits, u8 flags } at 7
//! ```
//!
//! Insert, multi-insert and delete with `*_ALL_VISIBLE_CLEARED` clear both bits of block 0's
//! heap page. Update clears the new page (block 0) with `XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED`
//! and the old page (block 1, or block 0 if the update stayed on one page) with
//! `XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED`. Lock and lock-updated with
//! `XLH_LOCK_ALL_FROZEN_CLEARED` clear only the all-frozen bit of block 0's page.
//!
//! The map keeps 2 bits per heap block in the contents of each VM page (after the 24-byte
//! page header): 32672 heap blocks per VM page.

use super::RecordParseError;
use crate::types::{BlockNumber, RelFileNode};
use crate::v15::*;
use crate::xlog_record::DecodedWalRecord;
use crate::{BLCKSZ, maxalign};

/// Bits per heap block in the visibility map.
pub const BITS_PER_HEAPBLOCK: u32 = 2;
/// Heap blocks per VM byte.
pub const HEAPBLOCKS_PER_BYTE: u32 = 8 / BITS_PER_HEAPBLOCK;
/// Bytes of map per VM page (`MAPSIZE`).
pub const VM_MAPSIZE: u32 = (BLCKSZ - maxalign(SIZE_OF_PAGE_HEADER_DATA)) as u32;
/// Heap blocks covered by one VM page (`HEAPBLOCKS_PER_PAGE`).
pub const HEAPBLOCKS_PER_PAGE: u32 = VM_MAPSIZE * HEAPBLOCKS_PER_BYTE;

/// Where a heap block's bits are: `(VM block, byte offset within the VM page including its
/// header, bit shift)`.
pub fn vm_location(heap_blk: BlockNumber) -> (BlockNumber, usize, u32) {
    let map_block = heap_blk / HEAPBLOCKS_PER_PAGE;
    let map_byte = (heap_blk % HEAPBLOCKS_PER_PAGE) / HEAPBLOCKS_PER_BYTE;
    let shift = (heap_blk % HEAPBLOCKS_PER_BYTE) * BITS_PER_HEAPBLOCK;
    (
        map_block,
        maxalign(SIZE_OF_PAGE_HEADER_DATA) + map_byte as usize,
        shift,
    )
}

/// Clears `flags` (`VISIBILITYMAP_*`) for `heap_blk` on its VM page, as
/// `visibilitymap_clear` does. The caller picks the page with [`vm_location`].
pub fn vm_clear(vm_page: &mut [u8], heap_blk: BlockNumber, flags: u8) {
    let (_, byte, shift) = vm_location(heap_blk);
    if let Some(b) = vm_page.get_mut(byte) {
        *b &= !((flags & VISIBILITYMAP_VALID_BITS) << shift);
    }
}

/// The VM bits a heap record clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClearVmBits {
    /// The heap relation (the bits live in its VM fork).
    pub rel: RelFileNode,
    /// Heap block that received the new tuple(s) (insert, multi-insert, update's new page).
    pub new_heap_blkno: Option<BlockNumber>,
    /// Heap block of the changed old tuple (delete, lock, update's old page).
    pub old_heap_blkno: Option<BlockNumber>,
    /// `VISIBILITYMAP_*` bits to clear.
    pub flags: u8,
}

fn flag_byte(record: &DecodedWalRecord, offset: usize) -> Result<u8, RecordParseError> {
    record
        .main_data
        .get(offset)
        .copied()
        .ok_or_else(|| RecordParseError::new(record, "main data too short for its flags"))
}

/// The VM bits `record` clears, if it is a heap record that clears any.
pub fn vm_bits_to_clear(
    record: &DecodedWalRecord,
) -> Result<Option<ClearVmBits>, RecordParseError> {
    let info = record.rmgr_info();
    let op = info & XLOG_HEAP_OPMASK;
    let (new, old, flags) = match (record.rmid(), op) {
        (RM_HEAP_ID, XLOG_HEAP_INSERT) => {
            let f = flag_byte(record, 2)?;
            if f & XLH_INSERT_ALL_VISIBLE_CLEARED == 0 {
                return Ok(None);
            }
            (Some(0u8), None, VISIBILITYMAP_VALID_BITS)
        }
        (RM_HEAP_ID, XLOG_HEAP_DELETE) => {
            let f = flag_byte(record, 7)?;
            if f & XLH_DELETE_ALL_VISIBLE_CLEARED == 0 {
                return Ok(None);
            }
            (None, Some(0u8), VISIBILITYMAP_VALID_BITS)
        }
        (RM_HEAP_ID, XLOG_HEAP_UPDATE | XLOG_HEAP_HOT_UPDATE) => {
            let f = flag_byte(record, 7)?;
            let new = (f & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED != 0).then_some(0u8);
            let old_block = if record.block(1).is_some() { 1u8 } else { 0 };
            let old = (f & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED != 0).then_some(old_block);
            if new.is_none() && old.is_none() {
                return Ok(None);
            }
            (new, old, VISIBILITYMAP_VALID_BITS)
        }
        (RM_HEAP_ID, XLOG_HEAP_LOCK) | (RM_HEAP2_ID, XLOG_HEAP2_LOCK_UPDATED) => {
            let f = flag_byte(record, 7)?;
            if f & XLH_LOCK_ALL_FROZEN_CLEARED == 0 {
                return Ok(None);
            }
            (None, Some(0u8), VISIBILITYMAP_ALL_FROZEN)
        }
        (RM_HEAP2_ID, XLOG_HEAP2_MULTI_INSERT) => {
            let f = flag_byte(record, 0)?;
            if f & XLH_INSERT_ALL_VISIBLE_CLEARED == 0 {
                return Ok(None);
            }
            (Some(0u8), None, VISIBILITYMAP_VALID_BITS)
        }
        _ => return Ok(None),
    };
    let block = |id: u8| {
        record
            .block(id)
            .ok_or_else(|| RecordParseError::new(record, format!("no block reference {id}")))
    };
    let rel = block(0)?.rel;
    Ok(Some(ClearVmBits {
        rel,
        new_heap_blkno: new.map(|id| block(id).map(|b| b.blkno)).transpose()?,
        old_heap_blkno: old.map(|id| block(id).map(|b| b.blkno)).transpose()?,
        flags,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_util::Le;
    use crate::wal_generate::{BlockRefSpec, XLogRecordBuilder};
    use utils::Lsn;

    fn rel() -> RelFileNode {
        RelFileNode {
            spc_node: 1663,
            db_node: 5,
            rel_node: 16384,
        }
    }

    fn heap_record(rmid: u8, info: u8, main: &[u8], blocks: &[u32]) -> DecodedWalRecord {
        let mut b = XLogRecordBuilder::new(rmid, info).main_data(main);
        for (i, blk) in blocks.iter().enumerate() {
            b = b.block(BlockRefSpec::data_only(i as u8, rel(), *blk, vec![1]));
        }
        DecodedWalRecord::decode(Lsn(0x100), b.build()).unwrap()
    }

    #[test]
    fn addressing() {
        assert_eq!(HEAPBLOCKS_PER_PAGE, 32672);
        assert_eq!(vm_location(0), (0, 24, 0));
        assert_eq!(vm_location(5), (0, 25, 2));
        assert_eq!(vm_location(32672), (1, 24, 0));
        let mut page = vec![0xFFu8; BLCKSZ];
        vm_clear(&mut page, 5, VISIBILITYMAP_ALL_FROZEN);
        assert_eq!(page[25], 0b1111_0111);
        vm_clear(&mut page, 5, VISIBILITYMAP_VALID_BITS);
        assert_eq!(page[25], 0b1111_0011);
    }

    #[test]
    fn which_records_clear_what() {
        let insert = Le::default().u16(3).u8(XLH_INSERT_ALL_VISIBLE_CLEARED).0;
        let r = heap_record(RM_HEAP_ID, XLOG_HEAP_INSERT, &insert, &[7]);
        assert_eq!(
            vm_bits_to_clear(&r).unwrap(),
            Some(ClearVmBits {
                rel: rel(),
                new_heap_blkno: Some(7),
                old_heap_blkno: None,
                flags: VISIBILITYMAP_VALID_BITS
            })
        );
        let plain = Le::default().u16(3).u8(0).0;
        let r = heap_record(
            RM_HEAP_ID,
            XLOG_HEAP_INSERT | XLOG_HEAP_INIT_PAGE,
            &plain,
            &[7],
        );
        assert_eq!(vm_bits_to_clear(&r).unwrap(), None);

        let update = Le::default()
            .u32(1)
            .u16(1)
            .u8(0)
            .u8(XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED | XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED)
            .u32(0)
            .u16(2)
            .0;
        let r = heap_record(RM_HEAP_ID, XLOG_HEAP_UPDATE, &update, &[9, 4]);
        let c = vm_bits_to_clear(&r).unwrap().unwrap();
        assert_eq!((c.new_heap_blkno, c.old_heap_blkno), (Some(9), Some(4)));
        let r = heap_record(RM_HEAP_ID, XLOG_HEAP_HOT_UPDATE, &update, &[9]);
        let c = vm_bits_to_clear(&r).unwrap().unwrap();
        assert_eq!((c.new_heap_blkno, c.old_heap_blkno), (Some(9), Some(9)));

        let lock = Le::default()
            .u32(1)
            .u16(1)
            .u8(0)
            .u8(XLH_LOCK_ALL_FROZEN_CLEARED)
            .0;
        let r = heap_record(RM_HEAP_ID, XLOG_HEAP_LOCK, &lock, &[2]);
        let c = vm_bits_to_clear(&r).unwrap().unwrap();
        assert_eq!(
            (c.old_heap_blkno, c.flags),
            (Some(2), VISIBILITYMAP_ALL_FROZEN)
        );
        let r = heap_record(RM_HEAP2_ID, XLOG_HEAP2_LOCK_UPDATED, &lock, &[2]);
        assert!(vm_bits_to_clear(&r).unwrap().is_some());

        let delete = Le::default()
            .u32(1)
            .u16(1)
            .u8(0)
            .u8(XLH_DELETE_ALL_VISIBLE_CLEARED)
            .0;
        let r = heap_record(RM_HEAP_ID, XLOG_HEAP_DELETE, &delete, &[11]);
        assert_eq!(
            vm_bits_to_clear(&r).unwrap().unwrap().old_heap_blkno,
            Some(11)
        );

        let multi = Le::default()
            .u8(XLH_INSERT_ALL_VISIBLE_CLEARED)
            .u16(1)
            .u16(1)
            .0;
        let r = heap_record(RM_HEAP2_ID, XLOG_HEAP2_MULTI_INSERT, &multi, &[12]);
        assert_eq!(
            vm_bits_to_clear(&r).unwrap().unwrap().new_heap_blkno,
            Some(12)
        );

        // Flags without the block they refer to, or without the flags byte, are errors.
        let r = heap_record(RM_HEAP_ID, XLOG_HEAP_INSERT, &insert, &[]);
        assert!(vm_bits_to_clear(&r).is_err());
        let r = heap_record(RM_HEAP_ID, XLOG_HEAP_DELETE, &[0; 3], &[1]);
        assert!(vm_bits_to_clear(&r).is_err());
        // Other heap2 records: nothing.
        let r = heap_record(RM_HEAP2_ID, XLOG_HEAP2_PRUNE, &[0; 8], &[1]);
        assert_eq!(vm_bits_to_clear(&r).unwrap(), None);
    }
}
