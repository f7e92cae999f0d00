//! A bounded cache of 8 KiB things: index blocks of layer files, and pages rebuilt by
//! GetPage (a rebuilt page at LSN `L` is a base for any later read of the key whose newest
//! value is at or below `L`, so repeated reads of a hot page skip redo).
//!
//! Sharded CLOCK (second chance): a hit sets a bit, eviction sweeps a hand clearing bits
//! and takes the first slot whose bit is clear. Capacity is counted in entries
//! (`page_cache_size` pages), not bytes; entries are 8 KiB or less. Hand-written rather
//! than a crate: the eviction policy, the two key kinds and the metrics are ten lines
//! each, and a dependency would add nothing but a layer.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, register_int_counter_vec};
use std::sync::LazyLock as Lazy;
use utils::Lsn;

use crate::keyspace::Key;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// Block `blkno` of layer file `file_id` (a process-unique number per open file).
    FileBlock {
        /// The open file.
        file_id: u64,
        /// The block.
        blkno: u32,
    },
    /// The newest rebuilt page of `key` in timeline `timeline_seq`.
    Materialized {
        /// The timeline (a process-unique number).
        timeline_seq: u64,
        /// The page.
        key: Key,
    },
}

/// A cached thing: bytes, and for rebuilt pages the LSN they are at.
#[derive(Debug, Clone)]
pub struct CacheValue {
    /// The page rebuilt at this LSN (unused for file blocks).
    pub lsn: Lsn,
    /// The bytes.
    pub data: Bytes,
}

struct Slot {
    key: CacheKey,
    value: CacheValue,
    referenced: bool,
}

struct Shard {
    slots: Vec<Slot>,
    index: HashMap<CacheKey, usize>,
    hand: usize,
    capacity: usize,
}

/// The cache.
pub struct PageCache {
    shards: Vec<Mutex<Shard>>,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("shards", &self.shards.len())
            .finish()
    }
}

static HITS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "pageserver_page_cache_reads_total",
        "Page cache lookups, by what was looked up and whether it was there",
        &["kind", "outcome"]
    )
    .unwrap_or_else(|e| panic!("metric: {e}"))
});

static NEXT_FILE_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh process-unique id for an open file or a timeline.
pub fn next_id() -> u64 {
    NEXT_FILE_ID.fetch_add(1, Ordering::Relaxed)
}

const SHARDS: usize = 16;

impl PageCache {
    /// A cache of at most `capacity` entries (at least one per shard).
    pub fn new(capacity: usize) -> PageCache {
        let per = capacity.div_ceil(SHARDS).max(1);
        PageCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        slots: Vec::with_capacity(per.min(4096)),
                        index: HashMap::new(),
                        hand: 0,
                        capacity: per,
                    })
                })
                .collect(),
        }
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    fn kind(key: &CacheKey) -> &'static str {
        match key {
            CacheKey::FileBlock { .. } => "file_block",
            CacheKey::Materialized { .. } => "materialized",
        }
    }

    /// The entry, if cached.
    pub fn get(&self, key: &CacheKey) -> Option<CacheValue> {
        let mut s = self.shard(key).lock();
        let found = s.index.get(key).copied().map(|i| {
            s.slots[i].referenced = true;
            s.slots[i].value.clone()
        });
        HITS.with_label_values(&[
            Self::kind(key),
            if found.is_some() { "hit" } else { "miss" },
        ])
        .inc();
        found
    }

    /// Inserts or replaces an entry.
    pub fn put(&self, key: CacheKey, value: CacheValue) {
        let mut s = self.shard(&key).lock();
        if let Some(&i) = s.index.get(&key) {
            s.slots[i].value = value;
            s.slots[i].referenced = true;
            return;
        }
        if s.slots.len() < s.capacity {
            let i = s.slots.len();
            s.slots.push(Slot {
                key,
                value,
                referenced: false,
            });
            s.index.insert(key, i);
            return;
        }
        loop {
            let hand = s.hand;
            s.hand = (hand + 1) % s.slots.len();
            if s.slots[hand].referenced {
                s.slots[hand].referenced = false;
                continue;
            }
            let old = s.slots[hand].key;
            s.index.remove(&old);
            s.slots[hand] = Slot {
                key,
                value,
                referenced: false,
            };
            s.index.insert(key, hand);
            return;
        }
    }

    /// Forgets an entry (a timeline's page that must not be reused).
    pub fn remove(&self, key: &CacheKey) {
        let mut s = self.shard(key).lock();
        if let Some(i) = s.index.remove(key) {
            s.slots.swap_remove(i);
            if i < s.slots.len() {
                let moved = s.slots[i].key;
                s.index.insert(moved, i);
            }
            if s.hand >= s.slots.len() {
                s.hand = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u32) -> CacheKey {
        CacheKey::FileBlock {
            file_id: 9,
            blkno: n,
        }
    }

    fn val(n: u8) -> CacheValue {
        CacheValue {
            lsn: Lsn(u64::from(n)),
            data: Bytes::from(vec![n; 4]),
        }
    }

    #[test]
    fn bounded_and_second_chance() {
        let c = PageCache::new(SHARDS * 2);
        for i in 0..1000 {
            c.put(block(i), val((i % 200) as u8));
        }
        let held: usize = c.shards.iter().map(|s| s.lock().index.len()).sum();
        assert!(held <= SHARDS * 2 + SHARDS, "{held}");
        // The most recent entry is present; replacing keeps one copy.
        assert_eq!(c.get(&block(999)).unwrap().data[0], (999 % 200) as u8);
        c.put(block(999), val(1));
        assert_eq!(c.get(&block(999)).unwrap().lsn, Lsn(1));
        c.remove(&block(999));
        assert!(c.get(&block(999)).is_none());
    }
}
