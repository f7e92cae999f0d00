//! Hand-built PostgreSQL 15 WAL records, for tests and benchmarks of the redo path.
//!
//! Real workloads feed the redo manager records decoded from PostgreSQL's WAL; these
//! builders make small, exactly known records without a running server: a full-page image
//! (`XLOG_FPI`) and a heap insert (`XLOG_HEAP_INSERT`). Layouts are PostgreSQL 15's
//! records, assembled (CRC included) by `postgres_ffi::wal_generate`.

use bytes::Bytes;
use pageserver_api::reltag::BufferTag;
use postgres_ffi::wal_generate::{BlockRefSpec, ImageSpec, XLogRecordBuilder};
use postgres_ffi::{ForkNumber, RelFileNode};

use super::apply_strata::page_init;
use postgres_ffi::BLCKSZ;

const RM_XLOG_ID: u8 = 0;
const RM_HEAP_ID: u8 = 10;
const XLOG_FPI: u8 = 0xB0;
const XLOG_HEAP_INSERT: u8 = 0x00;

fn rel(tag: BufferTag) -> RelFileNode {
    RelFileNode {
        spc_node: tag.rel.spcnode,
        db_node: tag.rel.dbnode,
        rel_node: tag.rel.relnode,
    }
}

/// An applied, uncompressed full-page image of `image` for `tag`, without a hole.
fn image_block(block_id: u8, tag: BufferTag, image: &[u8; BLCKSZ]) -> BlockRefSpec {
    let mut spec = BlockRefSpec::image_only(
        block_id,
        rel(tag),
        tag.blkno,
        ImageSpec {
            page: image.to_vec(),
            apply: true,
            compression: None,
            hole: None,
        },
    );
    spec.fork = fork(tag);
    spec
}

fn fork(tag: BufferTag) -> ForkNumber {
    match tag.rel.forknum {
        1 => ForkNumber::Fsm,
        2 => ForkNumber::VisibilityMap,
        3 => ForkNumber::Init,
        _ => ForkNumber::Main,
    }
}

/// An `XLOG_FPI` record carrying `image` for `tag` (applied: it replaces the page).
pub fn fpi(tag: BufferTag, image: &[u8; BLCKSZ]) -> Bytes {
    XLogRecordBuilder::new(RM_XLOG_ID, XLOG_FPI)
        .block(image_block(0, tag, image))
        .build()
}

/// An `XLOG_FPI` record with images of two blocks: the redo of the one that is not the
/// target must not leak into the target.
pub fn fpi_two_blocks(
    a: BufferTag,
    a_img: &[u8; BLCKSZ],
    b: BufferTag,
    b_img: &[u8; BLCKSZ],
) -> Bytes {
    XLogRecordBuilder::new(RM_XLOG_ID, XLOG_FPI)
        .block(image_block(0, a, a_img))
        .block(image_block(1, b, b_img))
        .build()
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
    let mut block = BlockRefSpec::data_only(0, rel(tag), tag.blkno, data);
    block.fork = fork(tag);
    XLogRecordBuilder::new(RM_HEAP_ID, XLOG_HEAP_INSERT)
        .xid(xid)
        .block(block)
        .main_data(&main)
        .build()
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
    postgres_ffi::page::get_lsn(page).map_or(0, |l| l.0)
}

/// `PageGetMaxOffsetNumber`: how many line pointers the page has.
pub fn max_offset_number(page: &[u8]) -> u16 {
    postgres_ffi::page::PageHeader::decode(page).map_or(0, |h| h.max_offset_number() as u16)
}
