//! Building WAL: records ([`XLogRecordBuilder`]) and their layout on pages ([`WalWriter`]).
//!
//! This is the inverse of [`crate::xlog_record`] and [`crate::decoder`], following what
//! PostgreSQL's `XLogRecordAssemble` and `XLogInsertRecord` do: block headers in block order
//! (eliding a relation equal to the previous block's with `BKPBLOCK_SAME_REL`), then the
//! origin, the top-level xid and the main-data header; then payloads; the CRC over body and
//! header. On pages, records start `MAXALIGN`ed; a record that does not fit continues on the
//! next page, whose header sets `XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len`; the first page of
//! each segment has the long header; `XLOG_SWITCH` ends a segment early.
//!
//! Uses: test WAL with exact edge cases (records crossing page and segment boundaries,
//! records ending on a page boundary, switches), and WAL that Strata itself must produce,
//! such as the segment with a shutdown checkpoint that a basebackup hands to stock PostgreSQL.

use bytes::Bytes;
use utils::Lsn;

use crate::compression::{ImageCompression, compress_image};
use crate::types::{BlockNumber, ForkNumber, RelFileNode, RepOriginId, TimeLineId, TransactionId};
use crate::v15::{
    BKPBLOCK_HAS_DATA, BKPBLOCK_HAS_IMAGE, BKPBLOCK_SAME_REL, BKPBLOCK_WILL_INIT, BKPIMAGE_APPLY,
    BKPIMAGE_HAS_HOLE, RM_XLOG_ID, SIZE_OF_PAGE_HEADER_DATA, SIZE_OF_XLOG_RECORD, XLOG_SWITCH,
    XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER, XLR_BLOCK_ID_DATA_LONG, XLR_BLOCK_ID_DATA_SHORT,
    XLR_BLOCK_ID_ORIGIN, XLR_BLOCK_ID_TOPLEVEL_XID,
};
use crate::xlog_page::{XLogLongPageHeaderFields, XLogPageHeader};
use crate::xlog_record::{XLogRecordHeader, record_crc};
use crate::{BLCKSZ, PgMajorVersion, XLOG_BLCKSZ};

/// A page image to attach to a block reference.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The full 8 KiB page.
    pub page: Vec<u8>,
    /// `BKPIMAGE_APPLY`.
    pub apply: bool,
    /// Compress with this method (stored uncompressed if that does not help, as PostgreSQL).
    pub compression: Option<ImageCompression>,
    /// `(hole_offset, hole_length)` to omit; must be zeros in `page`.
    pub hole: Option<(u16, u16)>,
}

impl ImageSpec {
    /// An image of `page` with the hole PostgreSQL would cut from a standard page: the
    /// bytes between `pd_lower` and `pd_upper`, when the header makes sense.
    pub fn new(page: &[u8], apply: bool, compression: Option<ImageCompression>) -> Self {
        let lower = crate::reader::le_u16(page, 12).unwrap_or(0);
        let upper = crate::reader::le_u16(page, 14).unwrap_or(0);
        let hole = (usize::from(lower) >= SIZE_OF_PAGE_HEADER_DATA
            && upper > lower
            && usize::from(upper) <= BLCKSZ)
            .then(|| (lower, upper - lower));
        ImageSpec {
            page: page.to_vec(),
            apply,
            compression,
            hole,
        }
    }
}

/// A block reference to put in a record.
#[derive(Debug, Clone)]
pub struct BlockRefSpec {
    /// Block id (0..=32), strictly increasing within a record.
    pub block_id: u8,
    /// Relation.
    pub rel: RelFileNode,
    /// Fork.
    pub fork: ForkNumber,
    /// Block number.
    pub blkno: BlockNumber,
    /// `BKPBLOCK_WILL_INIT`.
    pub will_init: bool,
    /// A page image.
    pub image: Option<ImageSpec>,
    /// Block data (`BKPBLOCK_HAS_DATA` iff non-empty).
    pub data: Vec<u8>,
}

impl BlockRefSpec {
    /// A main-fork block with data only.
    pub fn data_only(block_id: u8, rel: RelFileNode, blkno: BlockNumber, data: Vec<u8>) -> Self {
        BlockRefSpec {
            block_id,
            rel,
            fork: ForkNumber::Main,
            blkno,
            will_init: false,
            image: None,
            data,
        }
    }

    /// A main-fork block with an image only (as in `XLOG_FPI`).
    pub fn image_only(
        block_id: u8,
        rel: RelFileNode,
        blkno: BlockNumber,
        image: ImageSpec,
    ) -> Self {
        BlockRefSpec {
            block_id,
            rel,
            fork: ForkNumber::Main,
            blkno,
            will_init: false,
            image: Some(image),
            data: Vec::new(),
        }
    }
}

/// Assembles one WAL record's bytes, CRC included.
#[derive(Debug, Clone)]
pub struct XLogRecordBuilder {
    rmid: u8,
    info: u8,
    xid: TransactionId,
    prev: Lsn,
    blocks: Vec<BlockRefSpec>,
    origin: Option<RepOriginId>,
    toplevel_xid: Option<TransactionId>,
    main: Vec<u8>,
}

impl XLogRecordBuilder {
    /// A record of resource manager `rmid` with `xl_info = info` (rmgr bits and, if wanted,
    /// `XLR_SPECIAL_REL_UPDATE` / `XLR_CHECK_CONSISTENCY`).
    pub fn new(rmid: u8, info: u8) -> Self {
        XLogRecordBuilder {
            rmid,
            info,
            xid: 0,
            prev: Lsn::INVALID,
            blocks: Vec::new(),
            origin: None,
            toplevel_xid: None,
            main: Vec::new(),
        }
    }

    /// `xl_xid`.
    pub fn xid(mut self, xid: TransactionId) -> Self {
        self.xid = xid;
        self
    }

    /// `xl_prev` ([`WalWriter`] sets it for you).
    pub fn prev(mut self, prev: Lsn) -> Self {
        self.prev = prev;
        self
    }

    /// Adds a block reference.
    pub fn block(mut self, block: BlockRefSpec) -> Self {
        self.blocks.push(block);
        self
    }

    /// Records a replication origin.
    pub fn origin(mut self, origin: RepOriginId) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Records the top-level xid of a subtransaction.
    pub fn toplevel_xid(mut self, xid: TransactionId) -> Self {
        self.toplevel_xid = Some(xid);
        self
    }

    /// Sets the main data.
    pub fn main_data(mut self, data: &[u8]) -> Self {
        self.main = data.to_vec();
        self
    }

    /// The record's bytes with `xl_tot_len` and `xl_crc` filled in.
    pub fn build(&self) -> Bytes {
        let mut headers: Vec<u8> = Vec::new();
        let mut payload: Vec<u8> = Vec::new();
        let mut prev_rel: Option<RelFileNode> = None;
        for b in &self.blocks {
            let mut fork_flags = b.fork as u8;
            if !b.data.is_empty() {
                fork_flags |= BKPBLOCK_HAS_DATA;
            }
            if b.will_init {
                fork_flags |= BKPBLOCK_WILL_INIT;
            }
            let same_rel = prev_rel == Some(b.rel);
            if same_rel {
                fork_flags |= BKPBLOCK_SAME_REL;
            }
            if b.image.is_some() {
                fork_flags |= BKPBLOCK_HAS_IMAGE;
            }
            headers.push(b.block_id);
            headers.push(fork_flags);
            headers.extend_from_slice(&(b.data.len() as u16).to_le_bytes());
            if let Some(img) = &b.image {
                let (hole_offset, hole_length) = img.hole.unwrap_or((0, 0));
                let (ho, hl) = (usize::from(hole_offset), usize::from(hole_length));
                let mut stored = img.page[..ho].to_vec();
                stored.extend_from_slice(&img.page[ho + hl..]);
                let compressed = img
                    .compression
                    .and_then(|m| compress_image(m, &stored).map(|c| (m, c)));
                let mut bimg_info = if img.apply { BKPIMAGE_APPLY } else { 0 };
                if hole_length != 0 {
                    bimg_info |= BKPIMAGE_HAS_HOLE;
                }
                match compressed {
                    Some((method, bytes)) => {
                        bimg_info |= method.bimg_flag();
                        headers.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                        headers.extend_from_slice(&hole_offset.to_le_bytes());
                        headers.push(bimg_info);
                        if hole_length != 0 {
                            headers.extend_from_slice(&hole_length.to_le_bytes());
                        }
                        payload.extend_from_slice(&bytes);
                    }
                    None => {
                        headers.extend_from_slice(&(stored.len() as u16).to_le_bytes());
                        headers.extend_from_slice(&hole_offset.to_le_bytes());
                        headers.push(bimg_info);
                        payload.extend_from_slice(&stored);
                    }
                }
            }
            if !same_rel {
                headers.extend_from_slice(&b.rel.encode());
            }
            headers.extend_from_slice(&b.blkno.to_le_bytes());
            payload.extend_from_slice(&b.data);
            prev_rel = Some(b.rel);
        }
        if let Some(origin) = self.origin {
            headers.push(XLR_BLOCK_ID_ORIGIN);
            headers.extend_from_slice(&origin.to_le_bytes());
        }
        if let Some(xid) = self.toplevel_xid {
            headers.push(XLR_BLOCK_ID_TOPLEVEL_XID);
            headers.extend_from_slice(&xid.to_le_bytes());
        }
        if !self.main.is_empty() {
            if self.main.len() > 255 {
                headers.push(XLR_BLOCK_ID_DATA_LONG);
                headers.extend_from_slice(&(self.main.len() as u32).to_le_bytes());
            } else {
                headers.push(XLR_BLOCK_ID_DATA_SHORT);
                headers.push(self.main.len() as u8);
            }
            payload.extend_from_slice(&self.main);
        }
        let tot_len = SIZE_OF_XLOG_RECORD + headers.len() + payload.len();
        let header = XLogRecordHeader {
            tot_len: tot_len as u32,
            xid: self.xid,
            prev: self.prev,
            info: self.info,
            rmid: self.rmid,
            crc: 0,
        };
        let mut raw = Vec::with_capacity(tot_len);
        raw.extend_from_slice(&header.encode());
        raw.extend_from_slice(&headers);
        raw.extend_from_slice(&payload);
        let crc = record_crc(&raw);
        raw[20..24].copy_from_slice(&crc.to_le_bytes());
        Bytes::from(raw)
    }
}

/// Cluster identity and geometry that page headers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalWriterConfig {
    /// Major version (page magic).
    pub version: PgMajorVersion,
    /// `wal_segment_size`.
    pub seg_size: u64,
    /// System identifier for long headers.
    pub system_id: u64,
    /// Timeline for `xlp_tli`.
    pub timeline: TimeLineId,
}

/// Lays records out on WAL pages, starting at some LSN.
///
/// [`WalWriter::bytes`] are the WAL from the start LSN to the current position. If the start
/// is inside a page, the bytes of that page before it (its header included) are the caller's.
#[derive(Debug, Clone)]
pub struct WalWriter {
    config: WalWriterConfig,
    start: Lsn,
    pos: Lsn,
    prev_record: Lsn,
    buf: Vec<u8>,
}

impl WalWriter {
    /// A writer whose next byte goes to `start`, with `prev_record` the start of the record
    /// before it (for `xl_prev`; [`Lsn::INVALID`] if none).
    pub fn new(config: WalWriterConfig, start: Lsn, prev_record: Lsn) -> Self {
        WalWriter {
            config,
            start,
            pos: start,
            prev_record,
            buf: Vec::new(),
        }
    }

    /// The LSN the next byte goes to.
    pub fn position(&self) -> Lsn {
        self.pos
    }

    /// The LSN where the writer started.
    pub fn start(&self) -> Lsn {
        self.start
    }

    /// The start LSN of the last record written (or the one given to [`WalWriter::new`]).
    pub fn prev_record(&self) -> Lsn {
        self.prev_record
    }

    /// The WAL written so far, from [`WalWriter::start`].
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn page_header(&self, page_lsn: Lsn, rem_len: u32) -> XLogPageHeader {
        let first_in_segment = page_lsn.segment_offset(self.config.seg_size) == 0;
        let mut info = if first_in_segment { XLP_LONG_HEADER } else { 0 };
        if rem_len > 0 {
            info |= XLP_FIRST_IS_CONTRECORD;
        }
        XLogPageHeader {
            magic: self.config.version.xlog_page_magic(),
            info,
            tli: self.config.timeline,
            pageaddr: page_lsn,
            rem_len,
            long: first_in_segment.then_some(XLogLongPageHeaderFields {
                sysid: self.config.system_id,
                seg_size: self.config.seg_size as u32,
                xlog_blcksz: XLOG_BLCKSZ as u32,
            }),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pos = Lsn(self.pos.0 + bytes.len() as u64);
    }

    /// At a page boundary, writes the page header (with `rem_len` continuation bytes).
    fn header_if_at_page_start(&mut self, rem_len: u32) {
        if self.pos.page_offset() == 0 {
            let h = self.page_header(self.pos, rem_len).encode();
            self.push(&h);
        }
    }

    fn pad_to_alignment(&mut self) {
        let aligned = self.pos.0.next_multiple_of(8);
        let pad = (aligned - self.pos.0) as usize;
        self.push(&vec![0u8; pad]);
    }

    /// Writes a complete record (its `xl_prev` is used as given) and returns its start and
    /// end LSN (the end `MAXALIGN`ed, as PostgreSQL reports it).
    pub fn append_raw(&mut self, raw: &[u8]) -> (Lsn, Lsn) {
        self.pad_to_alignment();
        self.header_if_at_page_start(0);
        let start = self.pos;
        let mut rest = raw;
        loop {
            let room = self.pos.remaining_in_page() as usize;
            let n = room.min(rest.len());
            self.push(&rest[..n]);
            rest = &rest[n..];
            if rest.is_empty() {
                break;
            }
            self.header_if_at_page_start(rest.len() as u32);
        }
        self.prev_record = start;
        let end = Lsn(self.pos.0.next_multiple_of(8));
        (start, end)
    }

    /// Sets `xl_prev` to the previous record, builds and writes the record.
    pub fn append(&mut self, record: XLogRecordBuilder) -> (Lsn, Lsn) {
        let raw = record.prev(self.prev_record).build();
        self.append_raw(&raw)
    }

    /// Writes an `XLOG_SWITCH` record and fills the rest of the segment with empty pages, as
    /// `pg_switch_wal()` does. Returns the record's start and its end (the next segment).
    pub fn switch(&mut self) -> (Lsn, Lsn) {
        let (start, _) = self.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_SWITCH));
        let end = Lsn(self.pos.0.next_multiple_of(self.config.seg_size));
        self.fill_until(end);
        (start, end)
    }

    /// Writes empty WAL (valid page headers, zeros elsewhere) up to `lsn`, which must not be
    /// behind the current position.
    pub fn fill_until(&mut self, lsn: Lsn) {
        while self.pos < lsn {
            self.header_if_at_page_start(0);
            if self.pos >= lsn {
                break;
            }
            let n = (self.pos.remaining_in_page()).min(lsn.0 - self.pos.0) as usize;
            self.push(&vec![0u8; n]);
        }
    }

    /// Pads with zeros (no page headers) up to `lsn`, as an unwritten tail of a segment
    /// looks on disk.
    pub fn zero_until(&mut self, lsn: Lsn) {
        if lsn > self.pos {
            let n = (lsn.0 - self.pos.0) as usize;
            self.push(&vec![0u8; n]);
        }
    }
}

/// Builds a whole WAL segment holding `records` starting at `lsn` (aligned, inside segment
/// `lsn.segment_number(seg_size)`), with valid empty pages before and zeros after. The
/// records' `xl_prev` chain starts from `prev_record`. Returns the segment bytes and each
/// record's `(start, end)`.
///
/// This is what a basebackup needs to give stock PostgreSQL a checkpoint record to start
/// from: PostgreSQL reads the record's page, checks its header, and never looks back.
pub fn generate_segment(
    config: WalWriterConfig,
    lsn: Lsn,
    prev_record: Lsn,
    records: Vec<XLogRecordBuilder>,
) -> (Vec<u8>, Vec<(Lsn, Lsn)>) {
    let seg_start = lsn.segment_start(config.seg_size);
    let mut w = WalWriter::new(config, seg_start, prev_record);
    // A record asked for at a page start lands after that page's header.
    w.fill_until(lsn);
    let positions = records.into_iter().map(|r| w.append(r)).collect();
    w.zero_until(Lsn(seg_start.0 + config.seg_size));
    let mut bytes = w.into_bytes();
    bytes.truncate(config.seg_size as usize);
    (bytes, positions)
}

/// Bytes of WAL header that precede the first record byte of a page at `lsn`.
pub fn page_header_size_at(lsn: Lsn, seg_size: u64) -> usize {
    crate::xlog_page::page_header_size(lsn, seg_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xlog_page::XLogPageHeader;

    fn cfg() -> WalWriterConfig {
        WalWriterConfig {
            version: PgMajorVersion::V15,
            seg_size: 1024 * 1024,
            system_id: 7,
            timeline: 1,
        }
    }

    #[test]
    fn records_cross_pages_with_contrecord_headers() {
        let mut w = WalWriter::new(cfg(), Lsn(0x10_0000), Lsn::INVALID);
        let (s1, e1) = w.append(XLogRecordBuilder::new(1, 0).main_data(&[1; 10]));
        assert_eq!(s1, Lsn(0x10_0000 + 40), "after the long header");
        assert_eq!(e1, Lsn(0x10_0000 + 40 + 40));
        let big = vec![5u8; 20000];
        let (s2, e2) = w.append(XLogRecordBuilder::new(1, 0).main_data(&big));
        assert_eq!(s2, e1);
        let bytes = w.bytes();
        let h2 = XLogPageHeader::decode(&bytes[8192..]).unwrap();
        assert!(h2.is_contrecord());
        let tot = 24 + 5 + 20000;
        assert_eq!(h2.rem_len as usize, tot - (8192 - 80));
        let h3 = XLogPageHeader::decode(&bytes[16384..]).unwrap();
        assert_eq!(h3.rem_len as usize, tot - (8192 - 80) - (8192 - 24));
        assert_eq!(e2.0, w.position().0.next_multiple_of(8));
    }

    #[test]
    fn generated_segment_has_record_at_lsn() {
        let lsn = Lsn(0x10_0000 + 3 * 8192 + 128);
        let (seg, pos) = generate_segment(
            cfg(),
            lsn,
            Lsn(0x0F_FF00),
            vec![XLogRecordBuilder::new(0, 0x30).main_data(&16384u32.to_le_bytes())],
        );
        assert_eq!(seg.len(), 1024 * 1024);
        assert_eq!(pos, vec![(lsn, Lsn(lsn.0 + 32))]);
        for page in 0..4 {
            let h = XLogPageHeader::decode(&seg[page * 8192..]).unwrap();
            h.validate(
                PgMajorVersion::V15,
                Lsn(0x10_0000 + page as u64 * 8192),
                1024 * 1024,
                Some(7),
            )
            .unwrap();
        }
        let off = (lsn.0 - 0x10_0000) as usize;
        let h = XLogRecordHeader::decode(&seg[off..]).unwrap();
        assert_eq!(h.prev, Lsn(0x0F_FF00));
        assert_eq!(h.tot_len, 30);
        assert!(seg[off + 30..].iter().all(|&b| b == 0));
    }
}
