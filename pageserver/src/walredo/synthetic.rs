//! Hand-built PostgreSQL 15 WAL records, for tests and benchmarks of the redo path.
//!
//! Real workloads feed the redo manager records decoded from PostgreSQL's WAL; these
//! builders make small, exactly known records without a running server: a full-page image
//! (`XLOG_FPI`) and a heap insert (`XLOG_HEAP_INSERT`). Layouts are PostgreSQL 15's
//! `XLogRecord` (24 bytes), `XLogRecordBlockHeader`, `XLogRecordBlockImageHeader`,
//! `RelFileNode`, block number, then block data and main data; CRC-32C over the body and
//! the header up to `xl_crc`.

use bytes::{BufMut, Bytes, BytesMut};
use pageserver_api::reltag::BufferTag;

use super::apply_strata::{BLCKSZ, page_init};

const RM_XLOG_ID: u8 = 0;
const RM_HEAP_ID: u8 = 10;
const XLOG_FPI: u8 = 0xB0;
const XLOG_HEAP_INSERT: u8 = 0x00;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPIMAGE_APPLY: u8 = 0x02;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;

struct Block<'a> {
    tag: BufferTag,
    image: Option<&'a [u8]>,
    data: &'a [u8],
}

fn build(rmid: u8, info: u8, xid: u32, blocks: &[Block<'_>], main: &[u8]) -> Bytes {
    let mut body = BytesMut::new();
    for (id, b) in blocks.iter().enumerate() {
        let mut fork_flags = b.tag.rel.forknum;
        if b.image.is_some() {
            fork_flags |= BKPBLOCK_HAS_IMAGE;
        }
        if !b.data.is_empty() {
            fork_flags |= BKPBLOCK_HAS_DATA;
        }
        body.put_u8(id as u8);
        body.put_u8(fork_flags);
        body.put_u16_le(b.data.len() as u16);
        if b.image.is_some() {
            body.put_u16_le(BLCKSZ as u16); // image length: whole page, no hole
            body.put_u16_le(0); // hole offset
            body.put_u8(BKPIMAGE_APPLY);
        }
        body.put_u32_le(b.tag.rel.spcnode);
        body.put_u32_le(b.tag.rel.dbnode);
        body.put_u32_le(b.tag.rel.relnode);
        body.put_u32_le(b.tag.blkno);
    }
    if !main.is_empty() {
        body.put_u8(XLR_BLOCK_ID_DATA_SHORT);
        body.put_u8(main.len() as u8);
    }
    for b in blocks {
        if let Some(img) = b.image {
            body.put_slice(img);
        }
        body.put_slice(b.data);
    }
    body.put_slice(main);

    let mut rec = BytesMut::with_capacity(24 + body.len());
    rec.put_u32_le((24 + body.len()) as u32);
    rec.put_u32_le(xid);
    rec.put_u64_le(0); // xl_prev: redo does not look at it
    rec.put_u8(info);
    rec.put_u8(rmid);
    rec.put_u16_le(0);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&body), &rec[..20]);
    rec.put_u32_le(crc);
    rec.put_slice(&body);
    rec.freeze()
}

/// An `XLOG_FPI` record carrying `image` for `tag` (applied: it replaces the page).
pub fn fpi(tag: BufferTag, image: &[u8; BLCKSZ]) -> Bytes {
    build(
        RM_XLOG_ID,
        XLOG_FPI,
        0,
        &[Block {
            tag,
            image: Some(image),
            data: &[],
        }],
        &[],
    )
}

/// An `XLOG_FPI` record with images of two blocks: the redo of the one that is not the
/// target must not leak into the target.
pub fn fpi_two_blocks(
    a: BufferTag,
    a_img: &[u8; BLCKSZ],
    b: BufferTag,
    b_img: &[u8; BLCKSZ],
) -> Bytes {
    build(
        RM_XLOG_ID,
        XLOG_FPI,
        0,
        &[
            Block {
                tag: a,
                image: Some(a_img),
                data: &[],
            },
            Block {
                tag: b,
                image: Some(b_img),
                data: &[],
            },
        ],
        &[],
    )
}

/// An `XLOG_HEAP_INSERT` of a one-`int4` tuple at item `offnum` of `tag`'s page, by
/// transaction `xid`.
pub fn heap_insert(tag: BufferTag, xid: u32, offnum: u16, value: i32) -> Bytes {
    // xl_heap_header: t_infomask2 (1 attribute), t_infomask (none), t_hoff 24; then the
    // tuple from offset 23: one pad byte up to t_hoff, then the int4.
    let mut data = Vec::with_capacity(10);
    data.extend_from_slice(&1u16.to_le_bytes());
    data.extend_from_slice(&0u16.to_le_bytes());
    data.push(24);
    data.push(0);
    data.extend_from_slice(&value.to_le_bytes());
    // xl_heap_insert: offnum, flags (none).
    let mut main = Vec::with_capacity(3);
    main.extend_from_slice(&offnum.to_le_bytes());
    main.push(0);
    build(
        RM_HEAP_ID,
        XLOG_HEAP_INSERT,
        xid,
        &[Block {
            tag,
            image: None,
            data: &data,
        }],
        &main,
    )
}

/// An empty heap page (`PageInit`) with the given LSN: a base image for heap inserts.
pub fn empty_heap_page(lsn: u64) -> Box<[u8; BLCKSZ]> {
    let mut page = Box::new([0u8; BLCKSZ]);
    page_init(&mut page);
    page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
    page[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
    page
}

/// The LSN stored in a page header (`pd_lsn`).
pub fn page_lsn(page: &[u8]) -> u64 {
    let hi = u32::from_le_bytes([page[0], page[1], page[2], page[3]]);
    let lo = u32::from_le_bytes([page[4], page[5], page[6], page[7]]);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// `PageGetMaxOffsetNumber`: how many line pointers the page has.
pub fn max_offset_number(page: &[u8]) -> u16 {
    let pd_lower = u16::from_le_bytes([page[12], page[13]]);
    pd_lower.saturating_sub(24) / 4
}
