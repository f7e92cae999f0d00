//! The in-memory layer: where ingest puts values until they are written as a delta layer.
//!
//! Values are appended, in their stored form, to an ephemeral file (unlinked at creation, so
//! a crash leaves nothing behind; its tail lives in a buffer until it is large enough to
//! write); an in-memory index maps each key to its `(lsn, position)` entries in LSN order.
//! Readers and the single writer share the layer through a `RwLock`: a batch of puts holds
//! the write lock for the time it takes to append, and reads hold the read lock only while
//! they copy values out.
//!
//! Invariants:
//! - per key, entries are strictly increasing in LSN ([`InMemoryLayer::put_batch`] refuses
//!   an LSN at or below the key's last, which would be a WAL replay bug);
//! - once frozen (an end LSN set) the layer takes no more values; it is written out whole
//!   by [`InMemoryLayer::write_delta`], which reads it through the same index.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::RwLock;
use utils::crashsafe::Sync;
use utils::{Lsn, TenantId, TimelineId};

use super::LayerName;
use super::file_format::{LayerFileError, LayerWriter};
use crate::keyspace::Key;
use crate::value;
use crate::walingest::Value;

/// Buffered tail of the ephemeral file, written out when it reaches this size.
const TAIL_FLUSH: usize = 1 << 20;

/// A key packed into two integers: the index compares these instead of six fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PackedKey(u128, u16);

impl PackedKey {
    fn new(k: &Key) -> PackedKey {
        let b = k.to_bytes();
        let mut hi = [0u8; 16];
        hi.copy_from_slice(&b[..16]);
        PackedKey(u128::from_be_bytes(hi), u16::from_be_bytes([b[16], b[17]]))
    }

    fn key(&self) -> Key {
        let mut b = [0u8; crate::keyspace::KEY_SIZE];
        b[..16].copy_from_slice(&self.0.to_be_bytes());
        b[16..].copy_from_slice(&self.1.to_be_bytes());
        Key::from_bytes(&b).unwrap_or(Key::MAX)
    }
}

/// A key's entries in LSN order; most keys of a layer have one, kept without a heap
/// allocation.
#[derive(Debug, Clone)]
enum Entries {
    One(Entry),
    Many(Vec<Entry>),
}

impl Entries {
    fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::One(e) => std::slice::from_ref(e),
            Entries::Many(v) => v,
        }
    }

    fn push(&mut self, e: Entry) {
        match self {
            Entries::One(first) => *self = Entries::Many(vec![*first, e]),
            Entries::Many(v) => v.push(e),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    lsn: Lsn,
    pos: u64,
    len: u32,
    will_init: bool,
    is_image: bool,
}

struct Inner {
    index: BTreeMap<PackedKey, Entries>,
    file: File,
    path: PathBuf,
    /// Bytes of the file that are on disk; the rest is in `tail`.
    on_disk: u64,
    tail: Vec<u8>,
    values: u64,
    max_lsn: Option<Lsn>,
}

impl Inner {
    fn read_at(&self, pos: u64, len: u32) -> std::io::Result<Bytes> {
        let len = len as usize;
        if pos >= self.on_disk {
            let at = (pos - self.on_disk) as usize;
            return Ok(Bytes::copy_from_slice(&self.tail[at..at + len]));
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(Bytes::from(buf))
    }

    fn size(&self) -> u64 {
        self.on_disk + self.tail.len() as u64
    }

    /// An entry's value, decoded.
    fn value(&self, e: &Entry) -> Result<Value, InMemoryError> {
        let raw = self
            .read_at(e.pos, e.len)
            .map_err(|source| InMemoryError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(value::decode(raw)?)
    }
}

/// An open or frozen in-memory layer.
pub struct InMemoryLayer {
    /// The first LSN it may hold.
    pub start_lsn: Lsn,
    end_lsn: OnceLock<Lsn>,
    /// When it was opened (for `checkpoint_timeout`).
    pub opened_at: Instant,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for InMemoryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryLayer")
            .field("start_lsn", &self.start_lsn)
            .field("end_lsn", &self.end_lsn.get())
            .finish()
    }
}

/// Why the in-memory layer refused a value or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InMemoryError {
    /// The ephemeral file failed.
    #[error("ephemeral file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value at or below the key's newest LSN, or outside the layer.
    #[error("value {key}@{lsn} out of order (newest is {newest})")]
    OutOfOrder {
        /// The key.
        key: Key,
        /// The refused LSN.
        lsn: Lsn,
        /// What the layer already has.
        newest: Lsn,
    },
    /// The layer is frozen.
    #[error("in-memory layer is frozen")]
    Frozen,
    /// A stored value does not decode.
    #[error(transparent)]
    Decode(#[from] value::ValueDecodeError),
}

impl InMemoryLayer {
    /// A new open layer starting at `start_lsn`, its ephemeral file in `dir`.
    pub fn create(dir: &Path, start_lsn: Lsn) -> Result<InMemoryLayer, InMemoryError> {
        let path = dir.join(format!(
            "ephemeral-{:016X}-{}",
            start_lsn.0,
            crate::page_cache::next_id()
        ));
        let io = |source| InMemoryError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        std::fs::remove_file(&path).map_err(io)?;
        Ok(InMemoryLayer {
            start_lsn,
            end_lsn: OnceLock::new(),
            opened_at: Instant::now(),
            inner: RwLock::new(Inner {
                index: BTreeMap::new(),
                file,
                path,
                on_disk: 0,
                tail: Vec::with_capacity(TAIL_FLUSH),
                values: 0,
                max_lsn: None,
            }),
        })
    }

    /// The end LSN (exclusive), once frozen.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.end_lsn.get().copied()
    }

    /// The LSN range it covers (open: up to `Lsn::MAX`).
    pub fn lsn_range(&self) -> Range<Lsn> {
        self.start_lsn..self.end_lsn().unwrap_or(Lsn(u64::MAX))
    }

    /// Bytes of values held.
    pub fn size(&self) -> u64 {
        self.inner.read().size()
    }

    /// Values held.
    pub fn value_count(&self) -> u64 {
        self.inner.read().values
    }

    /// The newest LSN of any value held.
    pub fn max_lsn(&self) -> Option<Lsn> {
        self.inner.read().max_lsn
    }

    /// Appends values (each key's LSNs increasing, all at or above the start).
    pub fn put_batch(&self, batch: &[(Key, Lsn, Value)]) -> Result<(), InMemoryError> {
        if self.end_lsn.get().is_some() {
            return Err(InMemoryError::Frozen);
        }
        let mut inner = self.inner.write();
        let Inner {
            index,
            file,
            path,
            on_disk,
            tail,
            values,
            max_lsn,
        } = &mut *inner;
        for (key, lsn, v) in batch {
            if *lsn < self.start_lsn {
                return Err(InMemoryError::OutOfOrder {
                    key: *key,
                    lsn: *lsn,
                    newest: self.start_lsn,
                });
            }
            let slot = index.entry(PackedKey::new(key));
            if let std::collections::btree_map::Entry::Occupied(o) = &slot {
                let newest = o.get().as_slice()[o.get().as_slice().len() - 1].lsn;
                if newest >= *lsn {
                    return Err(InMemoryError::OutOfOrder {
                        key: *key,
                        lsn: *lsn,
                        newest,
                    });
                }
            }
            // Encoded straight into the buffered tail of the file.
            let pos = *on_disk + tail.len() as u64;
            value::encode(v, tail);
            let entry = Entry {
                lsn: *lsn,
                pos,
                len: (*on_disk + tail.len() as u64 - pos) as u32,
                will_init: value::will_init(v),
                is_image: matches!(v, Value::Image(_)),
            };
            match slot {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Entries::One(entry));
                }
                std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().push(entry),
            }
            *values += 1;
            *max_lsn = Some(max_lsn.map_or(*lsn, |m| m.max(*lsn)));
            if tail.len() >= TAIL_FLUSH {
                file.write_all_at(tail, *on_disk)
                    .map_err(|source| InMemoryError::Io {
                        path: path.clone(),
                        source,
                    })?;
                *on_disk += tail.len() as u64;
                tail.clear();
            }
        }
        Ok(())
    }

    /// Marks the layer frozen at `end_lsn` (exclusive). Idempotent for the same LSN.
    pub fn freeze(&self, end_lsn: Lsn) {
        let _ = self.end_lsn.set(end_lsn);
    }

    /// The values of `key` with `range.start <= lsn < range.end`, newest first, up to and
    /// including the first that initializes the page. Returns whether one did.
    pub fn get_values(
        &self,
        key: Key,
        range: Range<Lsn>,
        out: &mut Vec<(Lsn, Value)>,
    ) -> Result<bool, InMemoryError> {
        let inner = self.inner.read();
        let Some(entries) = inner.index.get(&PackedKey::new(&key)) else {
            return Ok(false);
        };
        for e in entries.as_slice().iter().rev() {
            if e.lsn >= range.end {
                continue;
            }
            if e.lsn < range.start {
                break;
            }
            out.push((e.lsn, inner.value(e)?));
            if e.will_init {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The newest value LSN of each key in `keys` below `lsn_end`, with its value.
    pub fn scan_latest(
        &self,
        keys: Range<Key>,
        lsn_end: Lsn,
        mut visit: impl FnMut(Key, Lsn, Value),
    ) -> Result<(), InMemoryError> {
        let inner = self.inner.read();
        for (pk, entries) in inner
            .index
            .range(PackedKey::new(&keys.start)..PackedKey::new(&keys.end))
        {
            let key = pk.key();
            if let Some(e) = entries.as_slice().iter().rev().find(|e| e.lsn < lsn_end) {
                visit(key, e.lsn, inner.value(e)?);
            }
        }
        Ok(())
    }

    /// Writes the frozen layer as a delta layer file in `dir`, returning its name, path
    /// and size. The layer stays readable meanwhile.
    pub fn write_delta(
        &self,
        dir: &Path,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        sync: Sync,
    ) -> Result<(LayerName, PathBuf, u64), LayerFileError> {
        let end = self
            .end_lsn()
            .ok_or_else(|| LayerFileError::Usage("writing an open in-memory layer".into()))?;
        let name = LayerName::delta(Key::MIN..Key::MAX, self.start_lsn..end);
        let mut w = LayerWriter::create(dir, tenant_id, timeline_id, &name, false)?;
        let inner = self.inner.read();
        // One sequential read of the file part (at most checkpoint_distance bytes) instead
        // of a read per value: the values are in arrival order, the layer in key order.
        let mut on_disk = vec![0u8; inner.on_disk as usize];
        inner
            .file
            .read_exact_at(&mut on_disk, 0)
            .map_err(|source| LayerFileError::Io {
                path: inner.path.clone(),
                source,
            })?;
        for (pk, entries) in &inner.index {
            let key = pk.key();
            for e in entries.as_slice() {
                let (start, end) = (e.pos as usize, e.pos as usize + e.len as usize);
                let raw: &[u8] = if e.pos >= inner.on_disk {
                    let at = (e.pos - inner.on_disk) as usize;
                    &inner.tail[at..at + e.len as usize]
                } else {
                    &on_disk[start..end]
                };
                w.put(key, e.lsn, raw, e.will_init, e.is_image)?;
            }
        }
        drop(inner);
        let (path, size) = w.finish(sync)?;
        Ok((name, path, size))
    }

    /// Every key held (for tests and the layer listing).
    pub fn key_count(&self) -> usize {
        self.inner.read().index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::file_format::LayerFile;
    use crate::page_cache::PageCache;
    use std::sync::Arc;

    fn k(n: u32) -> Key {
        Key { f6: n, ..Key::MIN }
    }

    fn img(n: u8) -> Value {
        Value::Image(Bytes::from(vec![n; 100]))
    }

    fn rec(n: u8) -> Value {
        Value::Record(crate::walrecord::WalRecord::Postgres {
            start_lsn: Lsn(1),
            will_init: false,
            rec: Bytes::from(vec![n; 30]),
        })
    }

    #[test]
    fn put_get_freeze_write() {
        let dir = tempfile::tempdir().unwrap();
        let l = InMemoryLayer::create(dir.path(), Lsn(100)).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "unlinked"
        );
        // Over TAIL_FLUSH worth of values, so reads cross the file/tail boundary.
        let mut batch = Vec::new();
        for i in 0..30_000u32 {
            let lsn = Lsn(100 + u64::from(i));
            let v = if i % 10 == 0 {
                img(i as u8)
            } else {
                rec(i as u8)
            };
            batch.push((k(i % 100), lsn, v));
        }
        l.put_batch(&batch).unwrap();
        assert!(l.size() > TAIL_FLUSH as u64);
        assert!(matches!(
            l.put_batch(&[(k(5), Lsn(150), img(1))]),
            Err(InMemoryError::OutOfOrder { .. })
        ));
        let mut out = Vec::new();
        // Key 7 only ever gets records: the scan reaches the layer start.
        assert!(
            !l.get_values(k(7), Lsn(0)..Lsn(100 + 2000), &mut out)
                .unwrap()
        );
        assert_eq!(out.len(), 20);
        assert_eq!(out.first().unwrap().0, Lsn(100 + 1907));
        out.clear();
        assert!(
            l.get_values(k(10), Lsn(0)..Lsn(100 + 2000), &mut out)
                .unwrap()
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0], (Lsn(100 + 1910), img(1910u32 as u8)));

        l.freeze(Lsn(100 + 30_000));
        assert!(matches!(
            l.put_batch(&[(k(5), Lsn(90_000), img(1))]),
            Err(InMemoryError::Frozen)
        ));
        let (name, path, _) = l
            .write_delta(
                dir.path(),
                TenantId::generate(),
                TimelineId::generate(),
                Sync::No,
            )
            .unwrap();
        assert_eq!(name.lsn_range, Lsn(100)..Lsn(30_100));
        let f = LayerFile::open(&path, Arc::new(PageCache::new(100))).unwrap();
        assert_eq!(f.summary().value_count, 30_000);
        let mut refs = Vec::new();
        assert!(
            f.refs_for_key(k(10), Lsn(0)..Lsn(100 + 2000), &mut refs)
                .unwrap()
        );
        assert_eq!(refs.len(), 1);
        let v = value::decode(f.read_value(&refs[0]).unwrap()).unwrap();
        assert_eq!(v, img(1910u32 as u8));
    }
}
