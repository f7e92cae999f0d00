//! Strata's layer file: one format for delta and image layers (`docs/formats.md`).
//!
//! ```text
//! block 0          summary (8 KiB, zero-padded): magic, version, kind, tenant, timeline,
//!                  key range, LSN range, value count, where the index is
//! from byte 8192   values: blob = len_flags u32 BE (bit 31: zstd) | crc32c u32 BE | payload
//! block-aligned    index: a B-tree of 8 KiB blocks over (key, lsn), leaves first, root last
//! last 16 bytes    trailer: crc32c(summary block ‖ index blocks) u32 | "STEN" | file length u64
//! ```
//!
//! Index block: `level u8 | 0 u8 | count u16 | crc32c u32` (of the block with this field
//! zero) then `count` entries. A leaf entry (level 0) is `key 18 | lsn 8 | offset u64 |
//! stored length u32 | flags u8` (bit 0: the value initializes the page); an inner entry is
//! `key 18 | lsn 8 | child block u32`, the first (key, lsn) below that child. Leaves are
//! consecutive blocks in (key, lsn) order, so a scan walks them forwards or backwards
//! without going back up.
//!
//! Invariants:
//! - entries are strictly increasing in (key, lsn): [`LayerWriter::put`] refuses anything
//!   else, so a reader's binary search is sound;
//! - [`LayerFile::open`] verifies the trailer checksum over the summary and the whole index
//!   before the file serves a single read; every index block's own checksum is verified
//!   when it is read, and every blob's when it is read, so a flipped bit anywhere is an
//!   error, never a wrong page;
//! - a finished file is fsynced and durably renamed into place ([`LayerWriter::finish`]);
//!   a temporary file is never read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use utils::crashsafe::{self, Sync};
use utils::{Lsn, TenantId, TimelineId};

use super::{LayerKind, LayerName};
use crate::keyspace::{KEY_SIZE, Key};
use crate::page_cache::{CacheKey, CacheValue, PageCache, next_id};

/// Size of the summary and of index blocks.
pub const BLOCK: usize = 8192;
const MAGIC: u32 = 0x5354_4C59; // "STLY"
const TRAILER_MAGIC: u32 = 0x5354_454E; // "STEN"
const VERSION: u16 = 1;
const TRAILER: usize = 16;
const BLOB_HEADER: usize = 8;
const COMPRESSED: u32 = 1 << 31;
const MAX_BLOB: usize = (1 << 30) - 1;
const NODE_HEADER: usize = 8;
const LEAF_ENTRY: usize = KEY_SIZE + 8 + 8 + 4 + 1;
const INNER_ENTRY: usize = KEY_SIZE + 8 + 4;
const LEAF_FANOUT: usize = (BLOCK - NODE_HEADER) / LEAF_ENTRY;
const INNER_FANOUT: usize = (BLOCK - NODE_HEADER) / INNER_ENTRY;
const FLAG_WILL_INIT: u8 = 1;

/// Why a layer file cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LayerFileError {
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid layer file (corrupt, truncated, foreign).
    #[error("{path}: corrupt layer file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A caller broke the writer's contract (out-of-order put, oversized value).
    #[error("layer writer: {0}")]
    Usage(String),
}

/// The summary block, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Delta or image.
    pub kind: LayerKind,
    /// The tenant the file belongs to.
    pub tenant_id: TenantId,
    /// The timeline the file belongs to.
    pub timeline_id: TimelineId,
    /// Keys covered.
    pub key_range: Range<Key>,
    /// LSNs covered.
    pub lsn_range: Range<Lsn>,
    /// Entries in the index.
    pub value_count: u64,
    index_start_blk: u32,
    index_blocks: u32,
    index_root_blk: u32,
}

impl Summary {
    /// The name this file must have.
    pub fn name(&self) -> LayerName {
        LayerName {
            kind: self.kind,
            key_range: self.key_range.clone(),
            lsn_range: self.lsn_range.clone(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(BLOCK);
        b.put_u32(MAGIC);
        b.put_u16(VERSION);
        b.put_u8(match self.kind {
            LayerKind::Delta => 1,
            LayerKind::Image => 2,
        });
        b.put_u8(0);
        b.put_slice(self.tenant_id.as_bytes());
        b.put_slice(self.timeline_id.as_bytes());
        b.put_slice(&self.key_range.start.to_bytes());
        b.put_slice(&self.key_range.end.to_bytes());
        b.put_u64(self.lsn_range.start.0);
        b.put_u64(self.lsn_range.end.0);
        b.put_u64(self.value_count);
        b.put_u32(self.index_start_blk);
        b.put_u32(self.index_blocks);
        b.put_u32(self.index_root_blk);
        let mut v = b.to_vec();
        v.resize(BLOCK, 0);
        v
    }

    fn decode(b: &[u8]) -> Result<Summary, String> {
        if b.len() < 128 {
            return Err("short summary".into());
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        if u32_at(0) != MAGIC {
            return Err(format!("bad magic {:#010x}", u32_at(0)));
        }
        let version = u16::from_be_bytes([b[4], b[5]]);
        if version != VERSION {
            return Err(format!(
                "format version {version}, this build reads {VERSION}"
            ));
        }
        let kind = match b[6] {
            1 => LayerKind::Delta,
            2 => LayerKind::Image,
            k => return Err(format!("unknown layer kind {k}")),
        };
        let id16 = |i: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[i..i + 16]);
            a
        };
        let key = |i: usize| Key::from_bytes(&b[i..i + KEY_SIZE]).map_err(|e| e.to_string());
        Ok(Summary {
            kind,
            tenant_id: TenantId::from_bytes(id16(8)),
            timeline_id: TimelineId::from_bytes(id16(24)),
            key_range: key(40)?..key(58)?,
            lsn_range: Lsn(u64_at(76))..Lsn(u64_at(84)),
            value_count: u64_at(92),
            index_start_blk: u32_at(100),
            index_blocks: u32_at(104),
            index_root_blk: u32_at(108),
        })
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LayerFileError + '_ {
    move |source| LayerFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn put_node_header(block: &mut [u8], level: u8, count: usize) {
    block[0] = level;
    block[1] = 0;
    block[2..4].copy_from_slice(&(count as u16).to_be_bytes());
    block[4..8].copy_from_slice(&[0; 4]);
    let crc = crc32c::crc32c(block);
    block[4..8].copy_from_slice(&crc.to_be_bytes());
}

/// Writes one layer file, values in (key, lsn) order.
pub struct LayerWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    file: BufWriter<File>,
    summary: Summary,
    offset: u64,
    compress_images: bool,
    last: Option<(Key, Lsn)>,
    /// Finished leaf blocks, and the first (key, lsn) of each.
    leaves: Vec<u8>,
    leaf_firsts: Vec<(Key, Lsn)>,
    leaf: Vec<u8>,
    leaf_count: usize,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for LayerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl LayerWriter {
    /// Starts `dir/<name>` (written as a temporary file until [`LayerWriter::finish`]).
    /// `compress_images`: store each image zstd-compressed when that is smaller.
    pub fn create(
        dir: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        name: &LayerName,
        compress_images: bool,
    ) -> Result<LayerWriter, LayerFileError> {
        let path = dir.join(name.to_string());
        let tmp_path = crashsafe::temp_path_for(&path);
        let file = File::create(&tmp_path).map_err(io_err(&tmp_path))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(&[0u8; BLOCK]).map_err(io_err(&tmp_path))?;
        Ok(LayerWriter {
            path,
            tmp_path,
            file,
            summary: Summary {
                kind: name.kind,
                tenant_id,
                timeline_id,
                key_range: name.key_range.clone(),
                lsn_range: name.lsn_range.clone(),
                value_count: 0,
                index_start_blk: 0,
                index_blocks: 0,
                index_root_blk: 0,
            },
            offset: BLOCK as u64,
            compress_images,
            last: None,
            leaves: Vec::new(),
            leaf_firsts: Vec::new(),
            leaf: vec![0u8; BLOCK],
            leaf_count: 0,
            scratch: Vec::new(),
        })
    }

    /// Bytes written so far (values, compressed where they were).
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Ends the layer's key range at `end` instead of the end it was created with (a
    /// writer that cuts a key space into several layers learns where one ends only when
    /// the next key arrives). Every key put must be below `end`.
    pub fn set_key_end(&mut self, end: Key) -> Result<(), LayerFileError> {
        if self.summary.key_range.start >= end || self.last.is_some_and(|(k, _)| k >= end) {
            return Err(LayerFileError::Usage(format!(
                "key range end {end} does not lie above the layer's keys"
            )));
        }
        self.summary.key_range.end = end;
        let name = LayerName {
            kind: self.summary.kind,
            key_range: self.summary.key_range.clone(),
            lsn_range: self.summary.lsn_range.clone(),
        };
        self.path = self.path.with_file_name(name.to_string());
        Ok(())
    }

    /// Appends the stored form of a value (`crate::value`) for `key` at `lsn`.
    /// `is_image`: the value is an image (a candidate for compression).
    pub fn put(
        &mut self,
        key: Key,
        lsn: Lsn,
        stored: &[u8],
        will_init: bool,
        is_image: bool,
    ) -> Result<(), LayerFileError> {
        if let Some(last) = self.last
            && (key, lsn) <= last
        {
            return Err(LayerFileError::Usage(format!(
                "{key}@{lsn} after {}@{}",
                last.0, last.1
            )));
        }
        if !self.summary.key_range.contains(&key) || !self.summary.lsn_range.contains(&lsn) {
            return Err(LayerFileError::Usage(format!(
                "{key}@{lsn} outside the layer's ranges"
            )));
        }
        if stored.len() > MAX_BLOB {
            return Err(LayerFileError::Usage(format!(
                "value of {} bytes",
                stored.len()
            )));
        }
        self.last = Some((key, lsn));
        let mut flags = 0u32;
        let mut payload = stored;
        if is_image && self.compress_images && stored.len() > 64 {
            self.scratch = zstd::bulk::compress(stored, 1).map_err(io_err(&self.tmp_path))?;
            if self.scratch.len() < stored.len() {
                payload = &self.scratch;
                flags = COMPRESSED;
            }
        }
        let header = (payload.len() as u32) | flags;
        let crc = crc32c::crc32c(payload);
        let tmp = &self.tmp_path;
        let mut head = [0u8; BLOB_HEADER];
        head[..4].copy_from_slice(&header.to_be_bytes());
        head[4..].copy_from_slice(&crc.to_be_bytes());
        self.file
            .write_all(&head)
            .and_then(|_| self.file.write_all(payload))
            .map_err(io_err(tmp))?;
        let offset = self.offset;
        self.offset += (BLOB_HEADER + payload.len()) as u64;
        self.summary.value_count += 1;

        if self.leaf_count == 0 {
            self.leaf_firsts.push((key, lsn));
        }
        let at = NODE_HEADER + self.leaf_count * LEAF_ENTRY;
        let e = &mut self.leaf[at..at + LEAF_ENTRY];
        e[..KEY_SIZE].copy_from_slice(&key.to_bytes());
        e[KEY_SIZE..KEY_SIZE + 8].copy_from_slice(&lsn.0.to_be_bytes());
        e[KEY_SIZE + 8..KEY_SIZE + 16].copy_from_slice(&offset.to_be_bytes());
        e[KEY_SIZE + 16..KEY_SIZE + 20]
            .copy_from_slice(&((BLOB_HEADER + payload.len()) as u32).to_be_bytes());
        e[KEY_SIZE + 20] = if will_init { FLAG_WILL_INIT } else { 0 };
        self.leaf_count += 1;
        if self.leaf_count == LEAF_FANOUT {
            self.finish_leaf();
        }
        Ok(())
    }

    fn finish_leaf(&mut self) {
        if self.leaf_count == 0 {
            return;
        }
        put_node_header(&mut self.leaf, 0, self.leaf_count);
        self.leaves.extend_from_slice(&self.leaf);
        self.leaf.iter_mut().for_each(|b| *b = 0);
        self.leaf_count = 0;
    }

    /// Values written so far.
    pub fn value_count(&self) -> u64 {
        self.summary.value_count
    }

    /// Bytes written so far (values and summary).
    pub fn size(&self) -> u64 {
        self.offset
    }

    /// Writes the index, summary and trailer, fsyncs, and renames the file into place
    /// (directory fsynced). Returns the final path and file size.
    pub fn finish(mut self, sync: Sync) -> Result<(PathBuf, u64), LayerFileError> {
        self.finish_leaf();
        let tmp = self.tmp_path.clone();
        // Pad the values to a block boundary.
        let pad = (BLOCK as u64 - self.offset % BLOCK as u64) % BLOCK as u64;
        self.file
            .write_all(&vec![0u8; pad as usize])
            .map_err(io_err(&tmp))?;
        self.offset += pad;
        let index_start_blk = (self.offset / BLOCK as u64) as u32;

        // Levels: leaves, then inner levels until one block remains.
        let mut index = std::mem::take(&mut self.leaves);
        let mut level_firsts = std::mem::take(&mut self.leaf_firsts);
        let mut level_start = 0u32; // block number (relative) of the current level's first
        let mut level = 0u8;
        while level_firsts.len() > 1 {
            level += 1;
            let children = level_firsts;
            level_firsts = Vec::new();
            let next_level_start = (index.len() / BLOCK) as u32;
            for (chunk_no, chunk) in children.chunks(INNER_FANOUT).enumerate() {
                let mut block = vec![0u8; BLOCK];
                for (i, (k, l)) in chunk.iter().enumerate() {
                    let child =
                        index_start_blk + level_start + (chunk_no * INNER_FANOUT + i) as u32;
                    let at = NODE_HEADER + i * INNER_ENTRY;
                    block[at..at + KEY_SIZE].copy_from_slice(&k.to_bytes());
                    block[at + KEY_SIZE..at + KEY_SIZE + 8].copy_from_slice(&l.0.to_be_bytes());
                    block[at + KEY_SIZE + 8..at + INNER_ENTRY]
                        .copy_from_slice(&child.to_be_bytes());
                }
                put_node_header(&mut block, level, chunk.len());
                level_firsts.push(chunk[0]);
                index.extend_from_slice(&block);
            }
            level_start = next_level_start;
        }
        let index_blocks = (index.len() / BLOCK) as u32;
        self.summary.index_start_blk = index_start_blk;
        self.summary.index_blocks = index_blocks;
        self.summary.index_root_blk = if index_blocks == 0 {
            0
        } else {
            index_start_blk + index_blocks - 1
        };
        self.file.write_all(&index).map_err(io_err(&tmp))?;

        let summary = self.summary.encode();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&summary), &index);
        let file_len = self.offset + index.len() as u64 + TRAILER as u64;
        let mut trailer = Vec::with_capacity(TRAILER);
        trailer.extend_from_slice(&crc.to_be_bytes());
        trailer.extend_from_slice(&TRAILER_MAGIC.to_be_bytes());
        trailer.extend_from_slice(&file_len.to_be_bytes());
        self.file.write_all(&trailer).map_err(io_err(&tmp))?;
        let file = self
            .file
            .into_inner()
            .map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.write_all_at(&summary, 0).map_err(io_err(&tmp))?;
        if sync == Sync::Yes {
            file.sync_all().map_err(io_err(&tmp))?;
        }
        drop(file);
        crashsafe::durable_rename(&tmp, &self.path, sync).map_err(io_err(&self.path))?;
        Ok((self.path, file_len))
    }
}

/// One index entry: where a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRef {
    /// The key.
    pub key: Key,
    /// The LSN.
    pub lsn: Lsn,
    /// Whether the value initializes the page (history below it is not needed).
    pub will_init: bool,
    offset: u64,
    len: u32,
}

/// An open, verified layer file.
pub struct LayerFile {
    path: PathBuf,
    file: File,
    file_id: u64,
    len: u64,
    summary: Summary,
    cache: Arc<PageCache>,
}

impl std::fmt::Debug for LayerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerFile")
            .field("path", &self.path)
            .finish()
    }
}

impl LayerFile {
    /// Opens `path` and verifies its summary, index and trailer checksum.
    pub fn open(path: &Path, cache: Arc<PageCache>) -> Result<LayerFile, LayerFileError> {
        let corrupt = |reason: String| LayerFileError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        if len < (BLOCK + TRAILER) as u64 {
            return Err(corrupt(format!("{len} bytes is too short")));
        }
        let mut trailer = [0u8; TRAILER];
        file.read_exact_at(&mut trailer, len - TRAILER as u64)
            .map_err(io_err(path))?;
        let crc = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let tmagic = u32::from_be_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        let mut l = [0u8; 8];
        l.copy_from_slice(&trailer[8..16]);
        if tmagic != TRAILER_MAGIC || u64::from_be_bytes(l) != len {
            return Err(corrupt(
                "bad trailer (truncated or not a layer file)".into(),
            ));
        }
        let mut summary_block = vec![0u8; BLOCK];
        file.read_exact_at(&mut summary_block, 0)
            .map_err(io_err(path))?;
        let summary = Summary::decode(&summary_block).map_err(corrupt)?;
        let index_bytes = summary.index_blocks as u64 * BLOCK as u64;
        let index_off = summary.index_start_blk as u64 * BLOCK as u64;
        if index_off + index_bytes + TRAILER as u64 != len {
            return Err(corrupt("index does not end at the trailer".into()));
        }
        // Stream the index through the checksum without keeping it.
        let mut running = crc32c::crc32c(&summary_block);
        let mut buf = vec![0u8; 1 << 20];
        let mut off = index_off;
        while off < index_off + index_bytes {
            let n = buf.len().min((index_off + index_bytes - off) as usize);
            file.read_exact_at(&mut buf[..n], off)
                .map_err(io_err(path))?;
            running = crc32c::crc32c_append(running, &buf[..n]);
            off += n as u64;
        }
        if running != crc {
            return Err(corrupt(format!(
                "checksum mismatch: stored {crc:#010x}, computed {running:#010x}"
            )));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(LayerName::parse);
        if let Some(Ok(name)) = name
            && name != summary.name()
        {
            return Err(corrupt(format!(
                "summary says {}, file name says {name}",
                summary.name()
            )));
        }
        Ok(LayerFile {
            path: path.to_path_buf(),
            file,
            file_id: next_id(),
            len,
            summary,
            cache,
        })
    }

    /// The decoded summary.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Bytes of the file (as verified at open).
    pub fn file_size(&self) -> u64 {
        self.len
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, reason: String) -> LayerFileError {
        LayerFileError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn block(&self, blkno: u32) -> Result<Bytes, LayerFileError> {
        let ck = CacheKey::FileBlock {
            file_id: self.file_id,
            blkno,
        };
        if let Some(v) = self.cache.get(&ck) {
            return Ok(v.data);
        }
        let mut buf = vec![0u8; BLOCK];
        self.file
            .read_exact_at(&mut buf, blkno as u64 * BLOCK as u64)
            .map_err(io_err(&self.path))?;
        let stored = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        buf[4..8].copy_from_slice(&[0; 4]);
        let computed = crc32c::crc32c(&buf);
        if stored != computed {
            return Err(self.corrupt(format!("index block {blkno}: checksum mismatch")));
        }
        buf[4..8].copy_from_slice(&stored.to_be_bytes());
        let data = Bytes::from(buf);
        self.cache.put(
            ck,
            CacheValue {
                lsn: Lsn(0),
                data: data.clone(),
            },
        );
        Ok(data)
    }

    fn node(&self, blkno: u32) -> Result<(u8, usize, Bytes), LayerFileError> {
        let b = self.block(blkno)?;
        let level = b[0];
        let count = u16::from_be_bytes([b[2], b[3]]) as usize;
        let fanout = if level == 0 {
            LEAF_FANOUT
        } else {
            INNER_FANOUT
        };
        if count == 0 || count > fanout {
            return Err(self.corrupt(format!("index block {blkno}: {count} entries")));
        }
        Ok((level, count, b))
    }

    fn entry_key(b: &[u8], level: u8, i: usize) -> (Key, Lsn) {
        let size = if level == 0 { LEAF_ENTRY } else { INNER_ENTRY };
        let at = NODE_HEADER + i * size;
        let key = Key::from_bytes(&b[at..at + KEY_SIZE]).unwrap_or(Key::MAX);
        let mut l = [0u8; 8];
        l.copy_from_slice(&b[at + KEY_SIZE..at + KEY_SIZE + 8]);
        (key, Lsn(u64::from_be_bytes(l)))
    }

    fn leaf_entry(b: &[u8], i: usize) -> ValueRef {
        let at = NODE_HEADER + i * LEAF_ENTRY;
        let (key, lsn) = Self::entry_key(b, 0, i);
        let mut o = [0u8; 8];
        o.copy_from_slice(&b[at + KEY_SIZE + 8..at + KEY_SIZE + 16]);
        let len = u32::from_be_bytes([
            b[at + KEY_SIZE + 16],
            b[at + KEY_SIZE + 17],
            b[at + KEY_SIZE + 18],
            b[at + KEY_SIZE + 19],
        ]);
        ValueRef {
            key,
            lsn,
            will_init: b[at + KEY_SIZE + 20] & FLAG_WILL_INIT != 0,
            offset: u64::from_be_bytes(o),
            len,
        }
    }

    fn child(b: &[u8], i: usize) -> u32 {
        let at = NODE_HEADER + i * INNER_ENTRY + KEY_SIZE + 8;
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// The leaf block holding the greatest entry `<= target`, and that entry's position;
    /// `None` when every entry is greater.
    fn find_le(&self, target: (Key, Lsn)) -> Result<Option<(u32, usize)>, LayerFileError> {
        if self.summary.index_blocks == 0 {
            return Ok(None);
        }
        let mut blk = self.summary.index_root_blk;
        let mut depth = 0;
        loop {
            let (level, count, b) = self.node(blk)?;
            // Number of entries <= target.
            let (mut lo, mut hi) = (0usize, count);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if Self::entry_key(&b, level, mid) <= target {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo == 0 {
                return Ok(None);
            }
            if level == 0 {
                return Ok(Some((blk, lo - 1)));
            }
            blk = Self::child(&b, lo - 1);
            depth += 1;
            if depth > 16
                || blk < self.summary.index_start_blk
                || blk >= self.summary.index_root_blk
            {
                return Err(self.corrupt(format!("index child {blk} out of place")));
            }
        }
    }

    fn first_leaf(&self) -> u32 {
        self.summary.index_start_blk
    }

    /// The entries of `key` with `lsn_range.start <= lsn < lsn_range.end`, newest first,
    /// stopping after the first that initializes the page.
    pub fn refs_for_key(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
        out: &mut Vec<ValueRef>,
    ) -> Result<bool, LayerFileError> {
        if lsn_range.end.0 == 0 {
            return Ok(false);
        }
        let Some((mut blk, mut i)) = self.find_le((key, Lsn(lsn_range.end.0 - 1)))? else {
            return Ok(false);
        };
        let (_, _, mut b) = self.node(blk)?;
        loop {
            let r = Self::leaf_entry(&b, i);
            if r.key != key || r.lsn < lsn_range.start {
                return Ok(false);
            }
            out.push(r);
            if r.will_init {
                return Ok(true);
            }
            if i == 0 {
                if blk == self.first_leaf() {
                    return Ok(false);
                }
                blk -= 1;
                let (level, count, nb) = self.node(blk)?;
                if level != 0 {
                    return Err(self.corrupt(format!("block {blk} is not a leaf")));
                }
                b = nb;
                i = count - 1;
            } else {
                i -= 1;
            }
        }
    }

    /// Visits every entry with a key in `keys` and `lsn < lsn_end`, in (key, lsn) order.
    pub fn scan(
        &self,
        keys: Range<Key>,
        lsn_end: Lsn,
        mut visit: impl FnMut(ValueRef) -> Result<(), LayerFileError>,
    ) -> Result<(), LayerFileError> {
        if self.summary.index_blocks == 0 || keys.start >= keys.end {
            return Ok(());
        }
        let (mut blk, mut i) = match self.find_le((keys.start, Lsn(0)))? {
            Some((blk, i)) => (blk, i),
            None => (self.first_leaf(), 0),
        };
        let last_leaf = self.last_leaf()?;
        let (_, mut count, mut b) = self.node(blk)?;
        loop {
            if i >= count {
                if blk >= last_leaf {
                    return Ok(());
                }
                blk += 1;
                let (_, c, nb) = self.node(blk)?;
                count = c;
                b = nb;
                i = 0;
            }
            let r = Self::leaf_entry(&b, i);
            i += 1;
            if r.key < keys.start {
                continue;
            }
            if r.key >= keys.end {
                return Ok(());
            }
            if r.lsn < lsn_end {
                visit(r)?;
            }
        }
    }

    fn last_leaf(&self) -> Result<u32, LayerFileError> {
        let leaves = self.summary.value_count.div_ceil(LEAF_FANOUT as u64);
        if leaves == 0 || leaves > self.summary.index_blocks as u64 {
            return Err(self.corrupt("value count does not match the index".into()));
        }
        Ok(self.first_leaf() + leaves as u32 - 1)
    }

    /// Reads and verifies a value's stored bytes (decompressed).
    pub fn read_value(&self, r: &ValueRef) -> Result<Bytes, LayerFileError> {
        if (r.len as usize) < BLOB_HEADER {
            return Err(self.corrupt(format!("value of {} bytes at {}", r.len, r.offset)));
        }
        let mut buf = vec![0u8; r.len as usize];
        self.file
            .read_exact_at(&mut buf, r.offset)
            .map_err(io_err(&self.path))?;
        let header = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let plen = (header & !COMPRESSED) as usize;
        if plen + BLOB_HEADER != buf.len() {
            return Err(self.corrupt(format!("value at {} has a wrong length", r.offset)));
        }
        let payload = &buf[BLOB_HEADER..];
        if crc32c::crc32c(payload) != crc {
            return Err(self.corrupt(format!(
                "value {}@{} at offset {}: checksum mismatch",
                r.key, r.lsn, r.offset
            )));
        }
        if header & COMPRESSED != 0 {
            let out = zstd::stream::decode_all(payload)
                .map_err(|e| self.corrupt(format!("value at {}: zstd: {e}", r.offset)))?;
            return Ok(Bytes::from(out));
        }
        let mut b = Bytes::from(buf);
        Ok(b.split_off(BLOB_HEADER))
    }
}

#[cfg(test)]
mod tests;
