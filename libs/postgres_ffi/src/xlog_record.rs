//! WAL records: the `XLogRecord` header, block references, full-page images and main data.
//!
//! A record, once reassembled from its pages, is laid out as (all little-endian, no padding):
//!
//! ```text
//! XLogRecord (24 bytes)
//!   0  u32 xl_tot_len   whole record, header included
//!   4  u32 xl_xid
//!   8  u64 xl_prev      start LSN of the previous record
//!  16  u8  xl_info      low nibble: XLR_SPECIAL_REL_UPDATE, XLR_CHECK_CONSISTENCY; high: rmgr's
//!  17  u8  xl_rmid
//!  18  2 bytes padding (zero)
//!  20  u32 xl_crc       CRC-32C of bytes [24, tot_len) followed by bytes [0, 20)
//! headers, in this order, each introduced by an id byte:
//!   0..=32  XLogRecordBlockHeader: u8 id, u8 fork_flags, u16 data_length, then
//!           if BKPBLOCK_HAS_IMAGE: u16 bimg_len, u16 hole_offset, u8 bimg_info,
//!             and if compressed with BKPIMAGE_HAS_HOLE: u16 hole_length;
//!           if not BKPBLOCK_SAME_REL: RelFileNode (12 bytes); then u32 block number.
//!           Ids strictly increase.
//!   253     XLR_BLOCK_ID_ORIGIN: u16 replication origin
//!   252     XLR_BLOCK_ID_TOPLEVEL_XID: u32 top-level xid
//!   255     XLR_BLOCK_ID_DATA_SHORT: u8 main data length   (always last)
//!   254     XLR_BLOCK_ID_DATA_LONG: u32 main data length   (always last)
//! payloads: for each block in order, its image (bimg_len bytes) then its data
//! (data_length bytes); then the main data. The header lengths must add up to tot_len exactly.
//! ```
//!
//! An uncompressed image without a hole is exactly 8 KiB; with a hole its length is
//! `BLCKSZ - hole_length` (the hole is implicit). A compressed image records `hole_length`
//! explicitly and decompresses to `BLCKSZ - hole_length` bytes. Restoring puts the hole back
//! as zeros at `hole_offset`. Images are *applied* by redo only with `BKPIMAGE_APPLY`; with
//! `XLR_CHECK_CONSISTENCY` every block carries an image, applied or not.
//!
//! [`DecodedWalRecord`] keeps the record's bytes ([`bytes::Bytes`]) exactly as PostgreSQL wrote
//! them, so WAL redo can hand them to PostgreSQL unchanged; block data, images and main data
//! are zero-copy slices of them.

use bytes::Bytes;
use utils::Lsn;

use crate::compression::{ImageCompression, decompress_image};
use crate::reader::{Reader, ShortInput};
use crate::types::{BlockNumber, ForkNumber, RelFileNode, RepOriginId, TransactionId};
use crate::v15::{
    BKPBLOCK_FORK_MASK, BKPBLOCK_HAS_DATA, BKPBLOCK_HAS_IMAGE, BKPBLOCK_SAME_REL,
    BKPBLOCK_WILL_INIT, BKPIMAGE_APPLY, BKPIMAGE_HAS_HOLE, SIZE_OF_XLOG_RECORD,
    XLOG_RECORD_CRC_OFFS, XLR_BLOCK_ID_DATA_LONG, XLR_BLOCK_ID_DATA_SHORT, XLR_BLOCK_ID_ORIGIN,
    XLR_BLOCK_ID_TOPLEVEL_XID, XLR_CHECK_CONSISTENCY, XLR_MAX_BLOCK_ID, XLR_RMGR_INFO_MASK,
    XLR_SPECIAL_REL_UPDATE, rmgr_id_is_valid,
};
use crate::{BLCKSZ, crc32c, crc32c_append};

/// The fixed 24-byte header of every WAL record (`XLogRecord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XLogRecordHeader {
    /// `xl_tot_len`: the whole record's length, header included.
    pub tot_len: u32,
    /// `xl_xid`: the transaction that wrote the record (0 if none).
    pub xid: TransactionId,
    /// `xl_prev`: start LSN of the previous record.
    pub prev: Lsn,
    /// `xl_info`: WAL-machinery flags (low nibble) and rmgr-specific bits (high nibble).
    pub info: u8,
    /// `xl_rmid`: the resource manager.
    pub rmid: u8,
    /// `xl_crc`.
    pub crc: u32,
}

impl XLogRecordHeader {
    /// Parses the first 24 bytes of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, ShortInput> {
        let mut r = Reader::new(buf);
        let tot_len = r.u32()?;
        let xid = r.u32()?;
        let prev = Lsn(r.u64()?);
        let info = r.u8()?;
        let rmid = r.u8()?;
        r.skip(2)?;
        let crc = r.u32()?;
        Ok(XLogRecordHeader {
            tot_len,
            xid,
            prev,
            info,
            rmid,
            crc,
        })
    }

    /// The 24 on-disk bytes (padding zeroed).
    pub fn encode(&self) -> [u8; SIZE_OF_XLOG_RECORD] {
        let mut out = [0u8; SIZE_OF_XLOG_RECORD];
        out[0..4].copy_from_slice(&self.tot_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.xid.to_le_bytes());
        out[8..16].copy_from_slice(&self.prev.0.to_le_bytes());
        out[16] = self.info;
        out[17] = self.rmid;
        out[20..24].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// The rmgr-owned bits of `xl_info` (`XLogRecGetInfo(r) & ~XLR_INFO_MASK`), which tell
    /// the record type within its resource manager.
    pub fn rmgr_info(&self) -> u8 {
        self.info & XLR_RMGR_INFO_MASK
    }

    /// Checks what PostgreSQL checks before reading further (`ValidXLogRecordHeader`, minus
    /// the `xl_prev` link, which needs context): a plausible length and a known rmgr.
    pub fn validate(&self) -> Result<(), RecordErrorKind> {
        if (self.tot_len as usize) < SIZE_OF_XLOG_RECORD {
            return Err(RecordErrorKind::InvalidLength(self.tot_len));
        }
        if !rmgr_id_is_valid(self.rmid) {
            return Err(RecordErrorKind::InvalidRmgr(self.rmid));
        }
        Ok(())
    }
}

/// The CRC PostgreSQL stores in `xl_crc` for a whole record `raw` (body first, then the
/// header up to the CRC field).
pub fn record_crc(raw: &[u8]) -> u32 {
    let body = raw.get(SIZE_OF_XLOG_RECORD..).unwrap_or(&[]);
    let head = &raw[..raw.len().min(XLOG_RECORD_CRC_OFFS)];
    crc32c_append(crc32c(body), head)
}

/// Why a record's bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordErrorKind {
    /// `xl_tot_len` is below the header size (zeros here usually mean the end of WAL).
    #[error("invalid record length: wanted 24, got {0}")]
    InvalidLength(u32),
    /// `xl_tot_len` beyond anything PostgreSQL writes.
    #[error("record length {0} too long")]
    TooLong(u32),
    /// `xl_tot_len` disagrees with the bytes given.
    #[error("record length {header} does not match the {actual} bytes given")]
    LengthMismatch {
        /// `xl_tot_len`.
        header: u32,
        /// Bytes supplied.
        actual: usize,
    },
    /// `xl_rmid` names no resource manager.
    #[error("invalid resource manager ID {0}")]
    InvalidRmgr(u8),
    /// `xl_prev` does not point at the previous record.
    #[error("record with incorrect prev-link {found} (expected {expected})")]
    BadPrevLink {
        /// `xl_prev` found.
        found: Lsn,
        /// The previous record's start.
        expected: Lsn,
    },
    /// The stored CRC does not match the contents.
    #[error(
        "incorrect resource manager data checksum: stored {stored:08X}, computed {computed:08X}"
    )]
    BadCrc {
        /// `xl_crc`.
        stored: u32,
        /// What the bytes hash to.
        computed: u32,
    },
    /// A header or payload length runs past the end of the record.
    #[error("record with invalid length: {0}")]
    Truncated(ShortInput),
    /// Header lengths do not add up to the record length.
    #[error(
        "record with invalid length: headers announce {announced} payload bytes, {present} present"
    )]
    PayloadMismatch {
        /// Sum of block and main data lengths from the headers.
        announced: usize,
        /// Bytes after the headers.
        present: usize,
    },
    /// Block ids must strictly increase.
    #[error("out-of-order block_id {0}")]
    OutOfOrderBlockId(u8),
    /// An id byte that is neither a block nor a known special id.
    #[error("invalid block_id {0}")]
    InvalidBlockId(u8),
    /// `BKPBLOCK_HAS_DATA` and `data_length` disagree.
    #[error("BKPBLOCK_HAS_DATA is {has_data} but data length is {len} (block {block_id})")]
    BlockDataMismatch {
        /// The block.
        block_id: u8,
        /// The flag.
        has_data: bool,
        /// `data_length`.
        len: u16,
    },
    /// Image header fields that contradict each other.
    #[error(
        "inconsistent image header for block {block_id}: bimg_info {bimg_info:#04X}, length {len}, hole offset {hole_offset}, hole length {hole_length}"
    )]
    BadImageHeader {
        /// The block.
        block_id: u8,
        /// `bimg_info`.
        bimg_info: u8,
        /// `bimg_len`.
        len: u16,
        /// `hole_offset`.
        hole_offset: u16,
        /// `hole_length`.
        hole_length: u16,
    },
    /// `BKPBLOCK_SAME_REL` on the first block.
    #[error("BKPBLOCK_SAME_REL set but no previous rel (block {0})")]
    NoPreviousRel(u8),
    /// A fork number above `INIT_FORKNUM`.
    #[error("invalid fork number {fork} (block {block_id})")]
    InvalidFork {
        /// The block.
        block_id: u8,
        /// The fork bits.
        fork: u8,
    },
    /// A block image that cannot be decompressed or restored.
    #[error("could not restore image of block {block_id}: {reason}")]
    BadImage {
        /// The block.
        block_id: u8,
        /// What failed.
        reason: String,
    },
}

/// A record that failed to parse, with its LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL record at {lsn}: {kind}")]
pub struct RecordError {
    /// Start LSN of the record.
    pub lsn: Lsn,
    /// What was wrong.
    pub kind: RecordErrorKind,
}

/// A page image carried by a block reference (`XLogRecordBlockImageHeader` plus its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockImage {
    /// `bimg_info`: `BKPIMAGE_*` flags.
    pub bimg_info: u8,
    /// `hole_offset`: bytes before the omitted hole.
    pub hole_offset: u16,
    /// Length of the omitted hole (explicit when compressed, else `BLCKSZ - bimg_len`).
    pub hole_length: u16,
    /// The image bytes as stored (`bimg_len` of them), possibly compressed.
    pub data: Bytes,
}

impl BlockImage {
    /// Whether redo restores this image (`BKPIMAGE_APPLY`). An image that is not applied
    /// exists only for `wal_consistency_checking`.
    pub fn apply(&self) -> bool {
        self.bimg_info & BKPIMAGE_APPLY != 0
    }

    /// Whether the image omits a hole (`BKPIMAGE_HAS_HOLE`).
    pub fn has_hole(&self) -> bool {
        self.bimg_info & BKPIMAGE_HAS_HOLE != 0
    }

    /// The compression method, if the image is compressed.
    pub fn compression(&self) -> Option<ImageCompression> {
        ImageCompression::from_bimg_info(self.bimg_info)
    }

    /// Rebuilds the 8 KiB page exactly as PostgreSQL's `RestoreBlockImage`: decompress if
    /// needed, then put the hole back as zeros. The page LSN is left as stored; see
    /// [`crate::page::set_lsn_after_redo`] for what redo does next.
    pub fn restore_into(&self, page: &mut [u8; BLCKSZ]) -> Result<(), String> {
        let hole_offset = usize::from(self.hole_offset);
        let hole_length = usize::from(self.hole_length);
        if hole_offset + hole_length > BLCKSZ {
            return Err(format!(
                "hole at {hole_offset} of {hole_length} bytes exceeds the page"
            ));
        }
        let expected = BLCKSZ - hole_length;
        let decompressed;
        let src: &[u8] = match self.compression() {
            Some(method) => {
                decompressed =
                    decompress_image(method, &self.data, expected).map_err(|e| e.to_string())?;
                &decompressed
            }
            None => &self.data,
        };
        if src.len() != expected {
            return Err(format!(
                "image has {} bytes, expected {expected}",
                src.len()
            ));
        }
        page[..hole_offset].copy_from_slice(&src[..hole_offset]);
        page[hole_offset..hole_offset + hole_length].fill(0);
        page[hole_offset + hole_length..].copy_from_slice(&src[hole_offset..]);
        Ok(())
    }

    /// [`BlockImage::restore_into`] into a fresh page.
    pub fn restore(&self) -> Result<Bytes, String> {
        let mut page = Box::new([0u8; BLCKSZ]);
        self.restore_into(&mut page)?;
        Ok(Bytes::from(page.to_vec()))
    }
}

/// One block reference of a record: which page it touches and what it carries for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    /// The block reference id (0..=32); rmgr redo code addresses blocks by it.
    pub block_id: u8,
    /// `fork_flags` as stored: fork number plus `BKPBLOCK_*` flags.
    pub fork_flags: u8,
    /// The relation file.
    pub rel: RelFileNode,
    /// The fork.
    pub fork: ForkNumber,
    /// The block number.
    pub blkno: BlockNumber,
    /// The page image, if the record carries one (`BKPBLOCK_HAS_IMAGE`).
    pub image: Option<BlockImage>,
    /// Rmgr-specific data for this block (empty without `BKPBLOCK_HAS_DATA`).
    pub data: Bytes,
}

impl BlockRef {
    /// `BKPBLOCK_WILL_INIT`: redo builds the page from nothing.
    pub fn will_init(&self) -> bool {
        self.fork_flags & BKPBLOCK_WILL_INIT != 0
    }

    /// `BKPBLOCK_HAS_DATA`.
    pub fn has_data(&self) -> bool {
        self.fork_flags & BKPBLOCK_HAS_DATA != 0
    }

    /// `BKPBLOCK_SAME_REL` as stored (the relation was elided because it repeats).
    pub fn same_rel(&self) -> bool {
        self.fork_flags & BKPBLOCK_SAME_REL != 0
    }

    /// Whether redo restores a full image of this page (`BKPIMAGE_APPLY`).
    pub fn apply_image(&self) -> bool {
        self.image.as_ref().is_some_and(BlockImage::apply)
    }

    /// Whether replaying this record needs no earlier version of the page: it either
    /// restores an image or initializes the page.
    pub fn initializes_page(&self) -> bool {
        self.will_init() || self.apply_image()
    }
}

/// A complete WAL record, with its block references and main data located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedWalRecord {
    /// Start LSN of the record.
    pub lsn: Lsn,
    /// The fixed header.
    pub header: XLogRecordHeader,
    /// The whole record as PostgreSQL wrote it (`xl_tot_len` bytes).
    pub raw: Bytes,
    /// Block references in block-id order.
    pub blocks: Vec<BlockRef>,
    /// The replication origin (`XLR_BLOCK_ID_ORIGIN`), if recorded.
    pub origin: Option<RepOriginId>,
    /// The top-level xid of a subtransaction (`XLR_BLOCK_ID_TOPLEVEL_XID`), if recorded.
    pub toplevel_xid: Option<TransactionId>,
    /// The main data.
    pub main_data: Bytes,
}

impl DecodedWalRecord {
    /// Parses a reassembled record that starts at `lsn`, as PostgreSQL's `DecodeXLogRecord`.
    ///
    /// Checks the header and the consistency of every length and flag; does not check the
    /// CRC (the [`crate::decoder`] does, and stored records need not pay for it twice; call
    /// [`DecodedWalRecord::verify_crc`] if the bytes come from elsewhere).
    pub fn decode(lsn: Lsn, raw: Bytes) -> Result<Self, RecordError> {
        decode_record(&raw)
            .map(
                |(header, blocks, origin, toplevel_xid, main)| DecodedWalRecord {
                    lsn,
                    header,
                    blocks: blocks.into_iter().map(|b| b.into_block_ref(&raw)).collect(),
                    origin,
                    toplevel_xid,
                    main_data: raw.slice(main),
                    raw: raw.clone(),
                },
            )
            .map_err(|kind| RecordError { lsn, kind })
    }

    /// Checks `xl_crc` against the contents.
    pub fn verify_crc(&self) -> Result<(), RecordError> {
        let computed = record_crc(&self.raw);
        if computed != self.header.crc {
            return Err(RecordError {
                lsn: self.lsn,
                kind: RecordErrorKind::BadCrc {
                    stored: self.header.crc,
                    computed,
                },
            });
        }
        Ok(())
    }

    /// `xl_rmid`.
    pub fn rmid(&self) -> u8 {
        self.header.rmid
    }

    /// The rmgr-owned bits of `xl_info`.
    pub fn rmgr_info(&self) -> u8 {
        self.header.rmgr_info()
    }

    /// `xl_xid`.
    pub fn xid(&self) -> TransactionId {
        self.header.xid
    }

    /// Whether this is `XLOG_SWITCH` (the rest of its segment is unused).
    pub fn is_xlog_switch(&self) -> bool {
        self.rmid() == crate::v15::RM_XLOG_ID && self.rmgr_info() == crate::v15::XLOG_SWITCH
    }

    /// `XLR_SPECIAL_REL_UPDATE`: the record changes relation files beyond its block refs.
    pub fn is_special_rel_update(&self) -> bool {
        self.header.info & XLR_SPECIAL_REL_UPDATE != 0
    }

    /// `XLR_CHECK_CONSISTENCY`: every block carries an image for consistency checking.
    pub fn check_consistency(&self) -> bool {
        self.header.info & XLR_CHECK_CONSISTENCY != 0
    }

    /// The block reference with this id.
    pub fn block(&self, block_id: u8) -> Option<&BlockRef> {
        self.blocks.iter().find(|b| b.block_id == block_id)
    }

    /// Total bytes of stored page images (`pg_waldump`'s `tot - rec` difference).
    pub fn fpi_len(&self) -> usize {
        self.blocks
            .iter()
            .filter_map(|b| b.image.as_ref())
            .map(|i| i.data.len())
            .sum()
    }

    /// Restores the image of `block` (see [`BlockImage::restore`]).
    pub fn restore_image(&self, block: &BlockRef) -> Result<Option<Bytes>, RecordError> {
        match &block.image {
            None => Ok(None),
            Some(image) => image.restore().map(Some).map_err(|reason| RecordError {
                lsn: self.lsn,
                kind: RecordErrorKind::BadImage {
                    block_id: block.block_id,
                    reason,
                },
            }),
        }
    }
}

/// A block header before its payloads are located.
struct PendingBlock {
    block_id: u8,
    fork_flags: u8,
    fork: ForkNumber,
    data_len: usize,
    image: Option<(u8, u16, u16, usize)>,
    rel: RelFileNode,
    blkno: BlockNumber,
    image_range: std::ops::Range<usize>,
    data_range: std::ops::Range<usize>,
}

impl PendingBlock {
    fn into_block_ref(self, raw: &Bytes) -> BlockRef {
        BlockRef {
            block_id: self.block_id,
            fork_flags: self.fork_flags,
            rel: self.rel,
            fork: self.fork,
            blkno: self.blkno,
            image: self
                .image
                .map(|(bimg_info, hole_offset, hole_length, _)| BlockImage {
                    bimg_info,
                    hole_offset,
                    hole_length,
                    data: raw.slice(self.image_range.clone()),
                }),
            data: raw.slice(self.data_range),
        }
    }
}

type DecodedParts = (
    XLogRecordHeader,
    Vec<PendingBlock>,
    Option<RepOriginId>,
    Option<TransactionId>,
    std::ops::Range<usize>,
);

fn decode_record(raw: &[u8]) -> Result<DecodedParts, RecordErrorKind> {
    let header = XLogRecordHeader::decode(raw).map_err(RecordErrorKind::Truncated)?;
    header.validate()?;
    if header.tot_len as usize != raw.len() {
        return Err(RecordErrorKind::LengthMismatch {
            header: header.tot_len,
            actual: raw.len(),
        });
    }
    let mut r = Reader::new(raw);
    r.skip(SIZE_OF_XLOG_RECORD)
        .map_err(RecordErrorKind::Truncated)?;
    let short = RecordErrorKind::Truncated;

    let mut blocks: Vec<PendingBlock> = Vec::new();
    let mut origin = None;
    let mut toplevel_xid = None;
    let mut main_len = 0usize;
    let mut datatotal = 0usize;
    let mut last_rel: Option<RelFileNode> = None;

    while r.remaining() > datatotal {
        let id = r.u8().map_err(short)?;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = usize::from(r.u8().map_err(short)?);
                datatotal += main_len;
                break; // the main data header is always last
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = r.u32().map_err(short)? as usize;
                datatotal += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => origin = Some(r.u16().map_err(short)?),
            XLR_BLOCK_ID_TOPLEVEL_XID => toplevel_xid = Some(r.u32().map_err(short)?),
            id if id <= XLR_MAX_BLOCK_ID => {
                if blocks.last().is_some_and(|b| b.block_id >= id) {
                    return Err(RecordErrorKind::OutOfOrderBlockId(id));
                }
                let fork_flags = r.u8().map_err(short)?;
                let data_len_u16 = r.u16().map_err(short)?;
                let data_len = usize::from(data_len_u16);
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data != (data_len != 0) {
                    return Err(RecordErrorKind::BlockDataMismatch {
                        block_id: id,
                        has_data,
                        len: data_len_u16,
                    });
                }
                datatotal += data_len;
                let fork_bits = fork_flags & BKPBLOCK_FORK_MASK;
                let fork = ForkNumber::from_u8(fork_bits).ok_or(RecordErrorKind::InvalidFork {
                    block_id: id,
                    fork: fork_bits,
                })?;
                let image = if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let bimg_len = r.u16().map_err(short)?;
                    let hole_offset = r.u16().map_err(short)?;
                    let bimg_info = r.u8().map_err(short)?;
                    let compressed = ImageCompression::is_compressed(bimg_info);
                    let has_hole = bimg_info & BKPIMAGE_HAS_HOLE != 0;
                    let hole_length = if compressed {
                        if has_hole { r.u16().map_err(short)? } else { 0 }
                    } else {
                        // Uncompressed: the hole is whatever the image lacks.
                        (BLCKSZ as u16).wrapping_sub(bimg_len)
                    };
                    let len = usize::from(bimg_len);
                    let bad = (has_hole && (hole_offset == 0 || hole_length == 0 || len == BLCKSZ))
                        || (!has_hole && (hole_offset != 0 || hole_length != 0))
                        || (compressed && len == BLCKSZ)
                        || (!has_hole && !compressed && len != BLCKSZ)
                        || len > BLCKSZ
                        || usize::from(hole_offset) + usize::from(hole_length) > BLCKSZ;
                    if bad {
                        return Err(RecordErrorKind::BadImageHeader {
                            block_id: id,
                            bimg_info,
                            len: bimg_len,
                            hole_offset,
                            hole_length,
                        });
                    }
                    datatotal += len;
                    Some((bimg_info, hole_offset, hole_length, len))
                } else {
                    None
                };
                let rel = if fork_flags & BKPBLOCK_SAME_REL != 0 {
                    last_rel.ok_or(RecordErrorKind::NoPreviousRel(id))?
                } else {
                    RelFileNode::read(&mut r).map_err(short)?
                };
                last_rel = Some(rel);
                let blkno = r.u32().map_err(short)?;
                blocks.push(PendingBlock {
                    block_id: id,
                    fork_flags,
                    fork,
                    data_len,
                    image,
                    rel,
                    blkno,
                    image_range: 0..0,
                    data_range: 0..0,
                });
            }
            other => return Err(RecordErrorKind::InvalidBlockId(other)),
        }
    }

    if r.remaining() != datatotal {
        return Err(RecordErrorKind::PayloadMismatch {
            announced: datatotal,
            present: r.remaining(),
        });
    }

    // Payloads: each block's image then its data, in block order; then the main data.
    let mut pos = r.pos();
    for b in &mut blocks {
        if let Some((_, _, _, len)) = b.image {
            b.image_range = pos..pos + len;
            pos += len;
        }
        b.data_range = pos..pos + b.data_len;
        pos += b.data_len;
    }
    let main = pos..pos + main_len;
    debug_assert_eq!(main.end, raw.len());
    Ok((header, blocks, origin, toplevel_xid, main))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal_generate::{BlockRefSpec, ImageSpec, XLogRecordBuilder};

    fn rel(n: u32) -> RelFileNode {
        RelFileNode {
            spc_node: 1663,
            db_node: 5,
            rel_node: n,
        }
    }

    fn page_with_hole() -> [u8; BLCKSZ] {
        let mut page = [0u8; BLCKSZ];
        // pd_lower = 100, pd_upper = 8000: hole between them.
        for (i, b) in page.iter_mut().enumerate() {
            if !(100..8000).contains(&i) {
                *b = (i % 251) as u8 + 1;
            }
        }
        page[12..14].copy_from_slice(&100u16.to_le_bytes());
        page[14..16].copy_from_slice(&8000u16.to_le_bytes());
        page
    }

    #[test]
    fn decodes_blocks_images_and_main_data() {
        let page = page_with_hole();
        let raw = XLogRecordBuilder::new(10, 0x20)
            .xid(731)
            .prev(Lsn(0x0100_0028))
            .origin(7)
            .toplevel_xid(700)
            .block(BlockRefSpec {
                block_id: 0,
                rel: rel(16384),
                fork: ForkNumber::Main,
                blkno: 3,
                will_init: false,
                image: Some(ImageSpec::new(&page, true, None)),
                data: b"block zero".to_vec(),
            })
            .block(BlockRefSpec {
                block_id: 2,
                rel: rel(16384),
                fork: ForkNumber::VisibilityMap,
                blkno: 0,
                will_init: true,
                image: None,
                data: vec![],
            })
            .main_data(&[9u8; 300])
            .build();
        let rec = DecodedWalRecord::decode(Lsn(0x0100_00A0), raw.clone()).unwrap();
        rec.verify_crc().unwrap();
        assert_eq!(rec.raw, raw);
        assert_eq!(rec.header.xid, 731);
        assert_eq!(rec.rmid(), 10);
        assert_eq!(rec.rmgr_info(), 0x20);
        assert_eq!(rec.origin, Some(7));
        assert_eq!(rec.toplevel_xid, Some(700));
        assert_eq!(rec.main_data.as_ref(), &[9u8; 300]);
        assert_eq!(rec.blocks.len(), 2);
        let b0 = rec.block(0).unwrap();
        assert_eq!(b0.data.as_ref(), b"block zero");
        assert!(b0.apply_image() && b0.initializes_page() && !b0.will_init());
        let img = b0.image.as_ref().unwrap();
        assert!(img.has_hole());
        assert_eq!((img.hole_offset, img.hole_length), (100, 7900));
        assert_eq!(rec.restore_image(b0).unwrap().unwrap().as_ref(), &page[..]);
        let b2 = rec.block(2).unwrap();
        assert!(b2.same_rel(), "builder elides the repeated relation");
        assert_eq!(b2.rel, rel(16384));
        assert_eq!(b2.fork, ForkNumber::VisibilityMap);
        assert!(b2.will_init() && !b2.has_data() && b2.image.is_none());
        assert!(rec.block(1).is_none());
        assert_eq!(rec.fpi_len(), BLCKSZ - 7900);
    }

    #[test]
    fn compressed_images_restore() {
        let page = page_with_hole();
        for method in [
            ImageCompression::Pglz,
            ImageCompression::Lz4,
            ImageCompression::Zstd,
        ] {
            for hole in [true, false] {
                let mut spec = ImageSpec::new(&page, true, Some(method));
                if !hole {
                    spec.hole = None;
                }
                let raw = XLogRecordBuilder::new(0, 0xB0)
                    .block(BlockRefSpec::image_only(0, rel(1), 7, spec))
                    .build();
                let rec = DecodedWalRecord::decode(Lsn(0x28), raw).unwrap();
                rec.verify_crc().unwrap();
                let b = &rec.blocks[0];
                assert_eq!(b.image.as_ref().unwrap().compression(), Some(method));
                assert_eq!(
                    rec.restore_image(b).unwrap().unwrap().as_ref(),
                    &page[..],
                    "{method:?} hole={hole}"
                );
            }
        }
    }

    #[test]
    fn crc_covers_body_and_header() {
        let raw = XLogRecordBuilder::new(0, 0x30)
            .main_data(&[1, 2, 3, 4])
            .build();
        let rec = DecodedWalRecord::decode(Lsn(8), raw.clone()).unwrap();
        rec.verify_crc().unwrap();
        for flip in [4usize, 16, 26, 29] {
            let mut bad = raw.to_vec();
            bad[flip] ^= 0x40;
            let rec = DecodedWalRecord::decode(Lsn(8), Bytes::from(bad)).unwrap();
            let err = rec.verify_crc().unwrap_err();
            assert!(matches!(err.kind, RecordErrorKind::BadCrc { .. }), "{err}");
            assert_eq!(err.lsn, Lsn(8));
        }
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let good = XLogRecordBuilder::new(10, 0)
            .block(BlockRefSpec::data_only(0, rel(1), 1, b"xyz".to_vec()))
            .main_data(&[1, 2, 3])
            .build();
        // Every truncation and every single-byte corruption either decodes or errors
        // (some truncations are structurally valid; only the CRC would catch them).
        for len in 0..good.len() {
            let mut bad = good[..len].to_vec();
            if bad.len() >= 4 {
                bad[0..4].copy_from_slice(&(len as u32).to_le_bytes());
            }
            let r = DecodedWalRecord::decode(Lsn(0), Bytes::from(bad));
            if [0, 20, 30, 40, 45, 51].contains(&len) {
                assert!(r.is_err(), "{len}");
            }
        }
        assert!(DecodedWalRecord::decode(Lsn(0), good.slice(..50)).is_err());
        for i in 0..good.len() {
            for v in [0u8, 0x7F, 0xFF, 0x80, 33] {
                let mut bad = good.to_vec();
                bad[i] = v;
                let _ = DecodedWalRecord::decode(Lsn(0), Bytes::from(bad));
            }
        }
        let mut bad_rmgr = good.to_vec();
        bad_rmgr[17] = 50;
        let e = DecodedWalRecord::decode(Lsn(0x40), Bytes::from(bad_rmgr)).unwrap_err();
        assert_eq!(e.kind, RecordErrorKind::InvalidRmgr(50));
        assert_eq!(e.lsn, Lsn(0x40));
    }

    #[test]
    fn block_header_rules() {
        // SAME_REL on the first block.
        let mut raw = XLogRecordBuilder::new(10, 0)
            .block(BlockRefSpec::data_only(0, rel(1), 1, b"a".to_vec()))
            .build()
            .to_vec();
        raw[25] |= BKPBLOCK_SAME_REL;
        let e = DecodedWalRecord::decode(Lsn(0), Bytes::from(raw)).unwrap_err();
        assert_eq!(e.kind, RecordErrorKind::NoPreviousRel(0));

        // HAS_DATA without data.
        let mut raw = XLogRecordBuilder::new(10, 0)
            .block(BlockRefSpec::data_only(0, rel(1), 1, vec![]))
            .build()
            .to_vec();
        raw[25] |= BKPBLOCK_HAS_DATA;
        let e = DecodedWalRecord::decode(Lsn(0), Bytes::from(raw)).unwrap_err();
        assert!(matches!(e.kind, RecordErrorKind::BlockDataMismatch { .. }));

        // Out-of-order ids.
        let raw = XLogRecordBuilder::new(10, 0)
            .block(BlockRefSpec::data_only(3, rel(1), 1, b"a".to_vec()))
            .block(BlockRefSpec::data_only(1, rel(1), 2, b"b".to_vec()))
            .build();
        let e = DecodedWalRecord::decode(Lsn(0), raw).unwrap_err();
        assert_eq!(e.kind, RecordErrorKind::OutOfOrderBlockId(1));

        // An unknown id byte.
        let mut raw = XLogRecordBuilder::new(10, 0)
            .main_data(b"abc")
            .build()
            .to_vec();
        raw[24] = 100;
        let e = DecodedWalRecord::decode(Lsn(0), Bytes::from(raw)).unwrap_err();
        assert_eq!(e.kind, RecordErrorKind::InvalidBlockId(100));

        // Fork 5.
        let mut raw = XLogRecordBuilder::new(10, 0)
            .block(BlockRefSpec::data_only(0, rel(1), 1, b"a".to_vec()))
            .build()
            .to_vec();
        raw[25] = (raw[25] & !BKPBLOCK_FORK_MASK) | 5;
        let e = DecodedWalRecord::decode(Lsn(0), Bytes::from(raw)).unwrap_err();
        assert!(matches!(
            e.kind,
            RecordErrorKind::InvalidFork { fork: 5, .. }
        ));
    }

    #[test]
    fn long_main_data_uses_long_header() {
        let big = vec![7u8; 1000];
        let raw = XLogRecordBuilder::new(1, 0).main_data(&big).build();
        assert_eq!(raw[24], XLR_BLOCK_ID_DATA_LONG);
        let rec = DecodedWalRecord::decode(Lsn(0), raw).unwrap();
        assert_eq!(rec.main_data.len(), 1000);
        let raw = XLogRecordBuilder::new(1, 0).main_data(&big[..255]).build();
        assert_eq!(raw[24], XLR_BLOCK_ID_DATA_SHORT);
        let raw = XLogRecordBuilder::new(1, 0).build();
        assert_eq!(raw.len(), SIZE_OF_XLOG_RECORD);
        let rec = DecodedWalRecord::decode(Lsn(0), raw).unwrap();
        assert!(rec.main_data.is_empty() && rec.blocks.is_empty());
    }
}
