//! Reads: GetPage@LSN and the metadata questions a compute and a basebackup ask.
//!
//! A read of `key` at `lsn` collects values newest first, until one initializes the page:
//! the in-memory layers (newest first), then the layer map ([`crate::layer_map`]) from
//! the highest layer down, then the ancestor at the branch point. A page rebuilt earlier
//! (the page cache's materialized entry at `L <= lsn`) ends the walk at `L`. What is
//! collected goes to the redo pool unless it is one image.
//!
//! Invariants:
//! - a read never returns a page for an LSN above `last_record_lsn` (callers wait first);
//! - a relation block past the relation's size, or of a relation that does not exist at
//!   the LSN, is an error, never a zero page; a block below the size that has no value is
//!   a zero page (PostgreSQL extends with zeros);
//! - a rebuilt page is cached only for LSNs at or below `last_record_lsn` at the time of
//!   the read, so no later ingest can add a value below it.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pageserver_api::reltag::RelTag;
use parking_lot::RwLock;
use utils::Lsn;

use super::Timeline;
use crate::keyspace::{self, Key, RelSizeEntry};
use crate::layers::LayerKind;
use crate::layers::file_format::LayerFileError;
use crate::layers::in_memory::InMemoryError;
use crate::layers::residence::{Layer, ResidenceError};
use crate::page_cache::{CacheKey, CacheValue};
use crate::value::{self, ValueDecodeError};
use crate::walingest::{SlruKind, Value};
use crate::walrecord::WalRecord;
use crate::walredo::WalRedoError;
use postgres_ffi::BLCKSZ;

/// The bytes of relation forks of these sizes (in blocks).
fn total_bytes(rels: &BTreeMap<RelTag, u32>) -> u64 {
    rels.values().map(|n| u64::from(*n) * BLCKSZ as u64).sum()
}

/// How many evicted layers one read may download before it gives up (each download makes
/// the read start over; more than this means layers are evicted as fast as they return).
const MAX_DOWNLOADS_PER_READ: usize = 64;

static ZERO_PAGE: [u8; BLCKSZ] = [0u8; BLCKSZ];

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The LSN did not arrive in time.
    #[error("timed out after {timeout:?} waiting for WAL up to {lsn} (last received {last})")]
    WaitLsnTimeout {
        /// Asked for.
        lsn: Lsn,
        /// What the timeline has.
        last: Lsn,
        /// How long it waited.
        timeout: Duration,
    },
    /// The timeline is shutting down.
    #[error("timeline is shutting down")]
    Cancelled,
    /// What was asked for does not exist at the LSN.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is invalid (an LSN of 0, or below `not_modified_since`).
    #[error("{0}")]
    BadRequest(String),
    /// The timeline has no data at the LSN: below its start or its GC cutoff.
    #[error("{0}")]
    LsnOutOfRange(String),
    /// A layer file failed (I/O or corruption).
    #[error(transparent)]
    Layer(#[from] LayerFileError),
    /// A layer the read needs is evicted (internal: the read downloads it and retries).
    #[error("layer {} is evicted", .0.name())]
    Evicted(Arc<Layer>),
    /// An evicted layer could not be brought back.
    #[error(transparent)]
    Residence(#[from] ResidenceError),
    /// The in-memory layer failed.
    #[error(transparent)]
    InMemory(#[from] InMemoryError),
    /// A stored value does not decode.
    #[error(transparent)]
    Decode(#[from] ValueDecodeError),
    /// Redo failed.
    #[error("rebuilding {key} at {lsn}: {source}")]
    Redo {
        /// The page.
        key: Key,
        /// The LSN.
        lsn: Lsn,
        /// Why.
        source: WalRedoError,
    },
}

/// The newest known size of each relation fork, as ingest last set it (valid from the
/// LSN stored with it until ingest changes it again).
#[derive(Debug, Default)]
pub(crate) struct RelSizeCache(RwLock<HashMap<RelTag, (Lsn, Option<u32>)>>);

impl RelSizeCache {
    /// Records `size` as valid from `at`, unless a newer entry is there.
    pub(crate) fn update(&self, rel: RelTag, at: Lsn, size: Option<u32>) {
        let mut m = self.0.write();
        match m.get(&rel) {
            Some((old, _)) if *old > at => {}
            _ => {
                m.insert(rel, (at, size));
            }
        }
    }

    fn get(&self, rel: &RelTag, lsn: Lsn) -> Option<Option<u32>> {
        let m = self.0.read();
        let (at, size) = m.get(rel)?;
        (lsn >= *at).then_some(*size)
    }
}

/// Values collected for a key, newest first.
struct Collected {
    values: Vec<(Lsn, Value)>,
    /// A page rebuilt earlier that the values apply on top of.
    cached_base: Option<(Lsn, Bytes)>,
}

impl Timeline {
    /// Refuses an LSN the timeline cannot answer for.
    pub fn check_read_lsn(&self, lsn: Lsn) -> Result<(), ReadError> {
        let cutoff = self.gc_cutoff_lsn();
        if lsn < cutoff {
            return Err(ReadError::LsnOutOfRange(format!(
                "LSN {lsn} is below the GC cutoff {cutoff}"
            )));
        }
        let start = if self.ancestor.is_some() {
            self.ancestor_lsn
        } else {
            self.initdb_lsn
        };
        if lsn < start {
            return Err(ReadError::LsnOutOfRange(format!(
                "LSN {lsn} is below the timeline's start {start}"
            )));
        }
        Ok(())
    }

    fn collect(&self, key: Key, lsn: Lsn, use_cache: bool) -> Result<Collected, ReadError> {
        let mut values: Vec<(Lsn, Value)> = Vec::new();
        let mut floor = Lsn(0);
        let mut cached_base = None;
        if use_cache
            && let Some(c) = self.cache.get(&CacheKey::Materialized {
                timeline_seq: self.seq,
                key,
            })
            && c.lsn <= lsn
        {
            floor = Lsn(c.lsn.0 + 1);
            cached_base = Some((c.lsn, c.data));
        }
        let mut tl: &Timeline = self;
        let mut end = Lsn(lsn.0.saturating_add(1));
        'timelines: loop {
            let (mem, map) = tl.layer_snapshot();
            for layer in &mem {
                if layer.start_lsn >= end {
                    continue;
                }
                let lo = layer.start_lsn.max(floor);
                if lo < end && layer.get_values(key, lo..end, &mut values)? {
                    cached_base = None;
                    break 'timelines;
                }
                end = end.min(layer.start_lsn);
                if end <= floor {
                    break 'timelines;
                }
            }
            while end > floor {
                let Some(res) = map.search(key, end) else {
                    break;
                };
                let lo = res.lsn_floor.max(floor);
                let Some(file) = res.layer.file() else {
                    return Err(ReadError::Evicted(res.layer.clone()));
                };
                let mut refs = Vec::new();
                let done = file.refs_for_key(key, lo..end, &mut refs)?;
                for r in &refs {
                    values.push((r.lsn, value::decode(file.read_value(r)?)?));
                }
                if done {
                    cached_base = None;
                    break 'timelines;
                }
                if res.name.kind == LayerKind::Image {
                    // An image layer holds every key of its range that exists at its LSN.
                    break 'timelines;
                }
                end = res.lsn_floor;
            }
            if end <= floor {
                break;
            }
            match &tl.ancestor {
                Some(a) => {
                    end = end.min(Lsn(tl.ancestor_lsn.0 + 1));
                    tl = a;
                }
                None => break,
            }
        }
        Ok(Collected {
            values,
            cached_base,
        })
    }

    /// The value of `key` at `lsn`: `None` when the key has no value there. Pages are
    /// rebuilt; metadata values are returned as stored (empty = tombstone).
    pub async fn get(&self, key: Key, lsn: Lsn) -> Result<Option<Bytes>, ReadError> {
        let use_cache = key.is_page();
        // An evicted layer on the way is downloaded, and the search starts again (the
        // layers may have changed meanwhile).
        let mut downloads = 0;
        let c = loop {
            match self.collect(key, lsn, use_cache) {
                Err(ReadError::Evicted(layer)) if downloads < MAX_DOWNLOADS_PER_READ => {
                    downloads += 1;
                    layer.get_or_download().await?;
                }
                r => break r?,
            }
        };
        let Collected {
            mut values,
            cached_base,
        } = c;
        if values.is_empty() {
            return Ok(cached_base.map(|(_, b)| b));
        }
        // A page key's empty image is a zero page (what a relation extension or an SLRU
        // page zeroing stores, without 8 KiB of zeros).
        let page_image = |img: Bytes| {
            if key.is_page() && img.is_empty() {
                Bytes::from_static(&ZERO_PAGE)
            } else {
                img
            }
        };
        if let (Value::Image(img), true) = (&values[0].1, values.len() == 1) {
            return Ok(Some(page_image(img.clone())));
        }
        // Oldest first: the base is the oldest value when it is an image.
        values.reverse();
        let mut base = cached_base;
        let mut records: Vec<(Lsn, WalRecord)> = Vec::with_capacity(values.len());
        for (l, v) in values {
            match v {
                Value::Image(img) => {
                    base = Some((l, page_image(img)));
                    records.clear();
                }
                Value::Record(r) => records.push((l, r)),
            }
        }
        if records.is_empty() {
            return Ok(base.map(|(_, b)| b));
        }
        if !key.is_page() {
            return Err(ReadError::Decode(ValueDecodeError(format!(
                "metadata key {key} has records"
            ))));
        }
        let page = self
            .walredo
            .request_redo(
                key.redo_tag(),
                base.as_ref().map(|(l, b)| (*l, &b[..])),
                &records,
            )
            .await
            .map_err(|source| ReadError::Redo { key, lsn, source })?;
        if lsn <= self.last_record_lsn() {
            self.cache.put(
                CacheKey::Materialized {
                    timeline_seq: self.seq,
                    key,
                },
                CacheValue {
                    lsn,
                    data: page.clone(),
                },
            );
        }
        Ok(Some(page))
    }

    /// A relation fork's size in blocks at `lsn`; `None` when it does not exist.
    pub async fn get_rel_size(&self, rel: RelTag, lsn: Lsn) -> Result<Option<u32>, ReadError> {
        if let Some(s) = self.rel_sizes.get(&rel, lsn) {
            return Ok(s);
        }
        let v = self.get(keyspace::rel_size_key(rel), lsn).await?;
        let size = v.and_then(|b| RelSizeEntry::decode(&b)).map(|e| e.nblocks);
        if lsn >= self.last_record_lsn() {
            self.rel_sizes.update(rel, lsn, size);
        }
        Ok(size)
    }

    /// A relation block at `lsn`: an error if the relation or the block does not exist.
    pub async fn get_rel_page(
        &self,
        rel: RelTag,
        blkno: u32,
        lsn: Lsn,
    ) -> Result<Bytes, ReadError> {
        let Some(nblocks) = self.get_rel_size(rel, lsn).await? else {
            return Err(ReadError::NotFound(format!(
                "relation {rel} does not exist at {lsn}"
            )));
        };
        if blkno >= nblocks {
            return Err(ReadError::NotFound(format!(
                "block {blkno} of relation {rel} is past its end ({nblocks} blocks) at {lsn}"
            )));
        }
        let page = self.get(keyspace::rel_block_key(rel, blkno), lsn).await?;
        Ok(page.unwrap_or_else(|| Bytes::from_static(&ZERO_PAGE)))
    }

    /// The newest value of every key in `keys` at `lsn` (metadata keys: whole values),
    /// without tombstones. Used for directories.
    pub fn scan_latest(
        &self,
        keys: Range<Key>,
        lsn: Lsn,
    ) -> Result<BTreeMap<Key, Bytes>, ReadError> {
        self.scan(keys, lsn, true)
    }

    /// [`Timeline::scan_latest`]; with `download` false an evicted layer on the way is
    /// [`ReadError::Evicted`] instead of a download (for what is only nice to show).
    fn scan(
        &self,
        keys: Range<Key>,
        lsn: Lsn,
        download: bool,
    ) -> Result<BTreeMap<Key, Bytes>, ReadError> {
        let mut found: BTreeMap<Key, (Lsn, Bytes)> = BTreeMap::new();
        let mut tl: &Timeline = self;
        let mut end = Lsn(lsn.0.saturating_add(1));
        loop {
            let mut level: BTreeMap<Key, (Lsn, Bytes)> = BTreeMap::new();
            fn offer(level: &mut BTreeMap<Key, (Lsn, Bytes)>, key: Key, l: Lsn, v: Bytes) {
                match level.get(&key) {
                    Some((old, _)) if *old >= l => {}
                    _ => {
                        level.insert(key, (l, v));
                    }
                }
            }
            let (mem, map) = tl.layer_snapshot();
            for layer in &mem {
                if layer.start_lsn >= end {
                    continue;
                }
                let mut err = None;
                layer.scan_latest(keys.clone(), end, |k, l, v| match v {
                    Value::Image(b) => offer(&mut level, k, l, b),
                    Value::Record(_) => {
                        err = Some(ValueDecodeError(format!("metadata key {k} has a record")))
                    }
                })?;
                if let Some(e) = err {
                    return Err(e.into());
                }
            }
            for (_, layer) in map.overlapping(keys.clone(), Lsn(0)..end) {
                let file = match layer.file() {
                    Some(f) => f,
                    None if download => layer.get_or_download_blocking()?,
                    None => return Err(ReadError::Evicted(layer.clone())),
                };
                let mut pending = Vec::new();
                file.scan(keys.clone(), end, |r| {
                    pending.push(r);
                    Ok(())
                })?;
                // Keep only each key's newest entry in this file before reading values.
                let mut newest: BTreeMap<Key, crate::layers::file_format::ValueRef> =
                    BTreeMap::new();
                for r in pending {
                    newest.insert(r.key, r);
                }
                for (k, r) in newest {
                    if level.get(&k).is_some_and(|(l, _)| *l >= r.lsn) {
                        continue;
                    }
                    match value::decode(file.read_value(&r)?)? {
                        Value::Image(b) => offer(&mut level, k, r.lsn, b),
                        Value::Record(_) => {
                            return Err(
                                ValueDecodeError(format!("metadata key {k} has a record")).into()
                            );
                        }
                    }
                }
            }
            // A branch's own values shadow its ancestor's.
            for (k, v) in level {
                found.entry(k).or_insert(v);
            }
            match &tl.ancestor {
                Some(a) => {
                    end = end.min(Lsn(tl.ancestor_lsn.0 + 1));
                    tl = a;
                }
                None => break,
            }
        }
        Ok(found
            .into_iter()
            .filter(|(_, (_, v))| !v.is_empty())
            .map(|(k, (_, v))| (k, v))
            .collect())
    }

    /// Every relation fork of a database with its size, at `lsn`.
    pub fn list_rels(
        &self,
        spcnode: u32,
        dbnode: u32,
        lsn: Lsn,
    ) -> Result<BTreeMap<RelTag, u32>, ReadError> {
        Ok(self
            .scan_latest(keyspace::rel_size_range(spcnode, dbnode), lsn)?
            .into_iter()
            .filter_map(|(k, v)| {
                RelSizeEntry::decode(&v).map(|e| (keyspace::rel_of_size_key(&k), e.nblocks))
            })
            .collect())
    }

    /// Every relation fork of the cluster with its size, at `lsn`.
    pub fn list_all_rels(&self, lsn: Lsn) -> Result<BTreeMap<RelTag, u32>, ReadError> {
        self.all_rels(lsn, true)
    }

    fn all_rels(&self, lsn: Lsn, download: bool) -> Result<BTreeMap<RelTag, u32>, ReadError> {
        Ok(self
            .scan(keyspace::all_rel_sizes_range(), lsn, download)?
            .into_iter()
            .filter_map(|(k, v)| {
                RelSizeEntry::decode(&v).map(|e| (keyspace::rel_of_size_key(&k), e.nblocks))
            })
            .collect())
    }

    /// Every database directory `(spcnode, dbnode)` at `lsn`.
    pub fn list_dbs(&self, lsn: Lsn) -> Result<Vec<(u32, u32)>, ReadError> {
        Ok(self
            .scan_latest(keyspace::kind_range(keyspace::KIND_DB_DIR), lsn)?
            .keys()
            .map(|k| (k.f2, k.f3))
            .collect())
    }

    /// A database's size in bytes (its relation forks) at `lsn`.
    pub fn db_size(&self, spcnode: u32, dbnode: u32, lsn: Lsn) -> Result<u64, ReadError> {
        Ok(total_bytes(&self.list_rels(spcnode, dbnode, lsn)?))
    }

    /// The logical size: every relation fork's bytes at `lsn`.
    pub fn logical_size(&self, lsn: Lsn) -> Result<u64, ReadError> {
        Ok(total_bytes(&self.list_all_rels(lsn)?))
    }

    /// [`Timeline::logical_size`] from the cache or from resident layers only: `None` when
    /// it would need a download (a status call must not pull a timeline's every layer
    /// back from object storage).
    pub fn logical_size_if_resident(&self, lsn: Lsn) -> Option<u64> {
        if let Some(size) = self.logical_sizes.lock().get(&lsn) {
            return Some(*size);
        }
        Some(total_bytes(&self.all_rels(lsn, false).ok()?))
    }

    /// [`Timeline::logical_size`] through the per-timeline cache (the size model asks for the
    /// same points again at every calculation).
    pub fn logical_size_cached(&self, lsn: Lsn) -> Result<u64, ReadError> {
        if let Some(size) = self.logical_sizes.lock().get(&lsn) {
            return Ok(*size);
        }
        let size = self.logical_size(lsn)?;
        if lsn > self.last_record_lsn() {
            // Above the last record the answer may still change: do not keep it.
            return Ok(size);
        }
        let mut cache = self.logical_sizes.lock();
        if cache.len() >= super::LOGICAL_SIZE_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(lsn, size);
        Ok(size)
    }

    /// The pages in an SLRU segment at `lsn`; `None` when the segment does not exist.
    pub async fn get_slru_segment_size(
        &self,
        kind: SlruKind,
        segno: u32,
        lsn: Lsn,
    ) -> Result<Option<u32>, ReadError> {
        Ok(self
            .get(keyspace::slru_segment_key(kind, segno), lsn)
            .await?
            .and_then(|v| keyspace::decode_u32(&v)))
    }

    /// A whole SLRU segment's bytes at `lsn`.
    pub async fn get_slru_segment(
        &self,
        kind: SlruKind,
        segno: u32,
        lsn: Lsn,
    ) -> Result<Bytes, ReadError> {
        let Some(pages) = self.get_slru_segment_size(kind, segno, lsn).await? else {
            return Err(ReadError::NotFound(format!(
                "{} segment {segno:04X} does not exist at {lsn}",
                keyspace::slru_dir(kind)
            )));
        };
        let mut out = Vec::with_capacity(pages as usize * BLCKSZ);
        let first = segno * postgres_ffi::slru::SLRU_PAGES_PER_SEGMENT;
        for p in 0..pages {
            let page = self
                .get(keyspace::slru_block_key(kind, first + p), lsn)
                .await?;
            match page {
                Some(b) if b.len() == BLCKSZ => out.extend_from_slice(&b),
                Some(b) => {
                    return Err(ReadError::Decode(ValueDecodeError(format!(
                        "SLRU page of {} bytes",
                        b.len()
                    ))));
                }
                None => out.extend_from_slice(&[0u8; BLCKSZ]),
            }
        }
        Ok(Bytes::from(out))
    }

    /// The SLRU segments that exist at `lsn`, with their sizes in pages.
    pub fn list_slru_segments(
        &self,
        kind: SlruKind,
        lsn: Lsn,
    ) -> Result<BTreeMap<u32, u32>, ReadError> {
        Ok(self
            .scan_latest(keyspace::slru_segment_range(kind), lsn)?
            .into_iter()
            .filter_map(|(k, v)| keyspace::decode_u32(&v).map(|n| (k.f3, n)))
            .collect())
    }
}
