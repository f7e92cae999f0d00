//! The pageserver's key space: every versioned thing of a PostgreSQL cluster has one
//! fixed-width, order-preserving [`Key`]. `docs/pageserver_keyspace.md` is the reference.
//!
//! A key is 18 bytes, big-endian: `kind:u8 | f2:u32 | f3:u32 | f4:u32 | f5:u8 | f6:u32`.
//! The derived ordering of [`Key`] (field by field) is the byte order of its encoding, so a
//! sorted layer file and an in-memory `BTreeMap<Key, _>` agree. Kinds are chosen so that
//! what is read together sorts together: a relation's blocks are contiguous, and the size
//! entries of one database's relations form one range (listing a database's relations is
//! a range scan, not a blob rewritten on every CREATE TABLE).
//!
//! Invariants:
//! - every key but relation blocks and SLRU blocks holds whole values (images): reading
//!   one needs no redo, and the newest value at or below an LSN is the answer;
//! - an empty image is a *tombstone*: the entry does not exist at that LSN (a dropped
//!   relation, a removed SLRU segment, a finished two-phase transaction).

use std::fmt;
use std::ops::Range;

use pageserver_api::reltag::{BufferTag, RelTag};

use crate::walingest::{PageKey, SlruKind};

/// Bytes in an encoded key.
pub const KEY_SIZE: usize = 18;

/// Relation block: `00 spc db rel fork blk` → page.
pub const KIND_REL_BLOCK: u8 = 0x00;
/// Relation fork size: `01 spc db rel fork 0` → [`RelSizeEntry`] or tombstone.
pub const KIND_REL_SIZE: u8 = 0x01;
/// Database directory entry: `02 spc db 0 0 0` → marker or tombstone.
pub const KIND_DB_DIR: u8 = 0x02;
/// Relation mapper file (`pg_filenode.map`): `03 spc db 0 0 0` → file bytes.
pub const KIND_RELMAP: u8 = 0x03;
/// SLRU page: `04 kind 0 0 0 pageno` → page (pageno counts from the SLRU's start).
pub const KIND_SLRU_BLOCK: u8 = 0x04;
/// SLRU segment: `05 kind segno 0 0 0` → pages in the segment (u32 LE) or tombstone.
pub const KIND_SLRU_SEGMENT: u8 = 0x05;
/// Two-phase state file: `06 0 0 0 0 xid` → file bytes or tombstone.
pub const KIND_TWOPHASE: u8 = 0x06;
/// Cluster-wide singletons: `07 0 0 0 0 0` pg_control, `07 0 0 0 0 1` checkpoint.
pub const KIND_CONTROL: u8 = 0x07;
/// Other files a data directory needs back (PG_VERSION, configuration files):
/// `08 h h h 0 h` (a 128-bit hash of the path) → `path NUL contents`, or tombstone.
pub const KIND_FILE: u8 = 0x08;

/// The marker stored in a present directory entry.
pub const DIR_ENTRY_PRESENT: &[u8] = b"\x01";

/// A key: see the module docs for the layout.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Key {
    /// What kind of thing this is (`KIND_*`).
    pub kind: u8,
    /// Tablespace, SLRU kind, or part of a hash.
    pub f2: u32,
    /// Database, SLRU segment, or part of a hash.
    pub f3: u32,
    /// Relation, or part of a hash.
    pub f4: u32,
    /// Fork.
    pub f5: u8,
    /// Block, page, xid, or part of a hash.
    pub f6: u32,
}

/// A key that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key: {0}")]
pub struct KeyError(pub String);

impl Key {
    /// The smallest key.
    pub const MIN: Key = Key {
        kind: 0,
        f2: 0,
        f3: 0,
        f4: 0,
        f5: 0,
        f6: 0,
    };
    /// The largest key (an exclusive end that covers everything).
    pub const MAX: Key = Key {
        kind: 0xFF,
        f2: u32::MAX,
        f3: u32::MAX,
        f4: u32::MAX,
        f5: 0xFF,
        f6: u32::MAX,
    };

    /// The 18-byte big-endian encoding.
    pub fn to_bytes(&self) -> [u8; KEY_SIZE] {
        let mut b = [0u8; KEY_SIZE];
        b[0] = self.kind;
        b[1..5].copy_from_slice(&self.f2.to_be_bytes());
        b[5..9].copy_from_slice(&self.f3.to_be_bytes());
        b[9..13].copy_from_slice(&self.f4.to_be_bytes());
        b[13] = self.f5;
        b[14..18].copy_from_slice(&self.f6.to_be_bytes());
        b
    }

    /// Decodes [`Key::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<Key, KeyError> {
        if b.len() != KEY_SIZE {
            return Err(KeyError(format!("{} bytes, expected {KEY_SIZE}", b.len())));
        }
        let u = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Ok(Key {
            kind: b[0],
            f2: u(1),
            f3: u(5),
            f4: u(9),
            f5: b[13],
            f6: u(14),
        })
    }

    /// The next key in order (saturating at [`Key::MAX`]).
    pub fn next(&self) -> Key {
        let mut b = self.to_bytes();
        for i in (0..KEY_SIZE).rev() {
            if b[i] == 0xFF {
                b[i] = 0;
            } else {
                b[i] += 1;
                return Key::from_bytes(&b).unwrap_or(Key::MAX);
            }
        }
        Key::MAX
    }

    /// Parses the 36-hex-digit form used in layer file names.
    pub fn from_hex(s: &str) -> Result<Key, KeyError> {
        let raw = hex::decode(s).map_err(|e| KeyError(format!("{s:?}: {e}")))?;
        Key::from_bytes(&raw)
    }

    /// Whether this key holds a relation block (a page rebuilt by redo).
    pub fn is_rel_block(&self) -> bool {
        self.kind == KIND_REL_BLOCK
    }

    /// Whether values of this key are pages (relation or SLRU blocks).
    pub fn is_page(&self) -> bool {
        matches!(self.kind, KIND_REL_BLOCK | KIND_SLRU_BLOCK)
    }

    /// The relation block this key names, if it is one.
    pub fn to_buffer_tag(&self) -> Option<BufferTag> {
        (self.kind == KIND_REL_BLOCK).then_some(BufferTag {
            rel: RelTag {
                spcnode: self.f2,
                dbnode: self.f3,
                relnode: self.f4,
                forknum: self.f5,
            },
            blkno: self.f6,
        })
    }

    /// The tag the redo pool is given for this page: the block itself for relations; for
    /// SLRU pages, the page number as the block number (the Rust appliers read it).
    pub fn redo_tag(&self) -> BufferTag {
        self.to_buffer_tag().unwrap_or(BufferTag {
            rel: RelTag {
                spcnode: 0,
                dbnode: 0,
                relnode: self.f2,
                forknum: 0,
            },
            blkno: self.f6,
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(self.to_bytes()))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A relation block's key.
pub fn rel_block_key(rel: RelTag, blkno: u32) -> Key {
    Key {
        kind: KIND_REL_BLOCK,
        f2: rel.spcnode,
        f3: rel.dbnode,
        f4: rel.relnode,
        f5: rel.forknum,
        f6: blkno,
    }
}

/// Every block key of a relation fork.
pub fn rel_block_range(rel: RelTag) -> Range<Key> {
    rel_block_key(rel, 0)..rel_block_key(rel, u32::MAX)
}

/// Every block key of every relation of a database.
pub fn db_block_range(spcnode: u32, dbnode: u32) -> Range<Key> {
    let start = Key {
        kind: KIND_REL_BLOCK,
        f2: spcnode,
        f3: dbnode,
        ..Key::MIN
    };
    let end = Key {
        kind: KIND_REL_BLOCK,
        f2: spcnode,
        f3: dbnode,
        f4: u32::MAX,
        f5: 0xFF,
        f6: u32::MAX,
    };
    start..end
}

/// A relation fork's size entry key.
pub fn rel_size_key(rel: RelTag) -> Key {
    Key {
        kind: KIND_REL_SIZE,
        f2: rel.spcnode,
        f3: rel.dbnode,
        f4: rel.relnode,
        f5: rel.forknum,
        f6: 0,
    }
}

/// The size entries of one database's relations.
pub fn rel_size_range(spcnode: u32, dbnode: u32) -> Range<Key> {
    let start = Key {
        kind: KIND_REL_SIZE,
        f2: spcnode,
        f3: dbnode,
        ..Key::MIN
    };
    let end = Key {
        kind: KIND_REL_SIZE,
        f2: spcnode,
        f3: dbnode.saturating_add(1),
        ..Key::MIN
    };
    if dbnode == u32::MAX {
        return start..Key {
            kind: KIND_REL_SIZE,
            f2: spcnode.saturating_add(1),
            ..Key::MIN
        };
    }
    start..end
}

/// The size entries of every relation of the cluster.
pub fn all_rel_sizes_range() -> Range<Key> {
    kind_range(KIND_REL_SIZE)
}

/// Every key of one kind.
pub fn kind_range(kind: u8) -> Range<Key> {
    Key { kind, ..Key::MIN }..Key {
        kind: kind + 1,
        ..Key::MIN
    }
}

/// The relation a size key names.
pub fn rel_of_size_key(key: &Key) -> RelTag {
    RelTag {
        spcnode: key.f2,
        dbnode: key.f3,
        relnode: key.f4,
        forknum: key.f5,
    }
}

/// A database directory entry.
pub fn db_dir_key(spcnode: u32, dbnode: u32) -> Key {
    Key {
        kind: KIND_DB_DIR,
        f2: spcnode,
        f3: dbnode,
        ..Key::MIN
    }
}

/// A database's (or, with dbnode 0, the shared) relation map file.
pub fn relmap_key(spcnode: u32, dbnode: u32) -> Key {
    Key {
        kind: KIND_RELMAP,
        f2: spcnode,
        f3: dbnode,
        ..Key::MIN
    }
}

/// The number the SLRU kind has in keys.
pub fn slru_kind_number(kind: SlruKind) -> u32 {
    match kind {
        SlruKind::Clog => 0,
        SlruKind::MultiXactMembers => 1,
        SlruKind::MultiXactOffsets => 2,
    }
}

/// The SLRU kind numbered `n` in keys.
pub fn slru_kind_from_number(n: u32) -> Option<SlruKind> {
    match n {
        0 => Some(SlruKind::Clog),
        1 => Some(SlruKind::MultiXactMembers),
        2 => Some(SlruKind::MultiXactOffsets),
        _ => None,
    }
}

/// The SLRU's directory in a data directory.
pub fn slru_dir(kind: SlruKind) -> &'static str {
    match kind {
        SlruKind::Clog => "pg_xact",
        SlruKind::MultiXactMembers => "pg_multixact/members",
        SlruKind::MultiXactOffsets => "pg_multixact/offsets",
    }
}

/// An SLRU page.
pub fn slru_block_key(kind: SlruKind, pageno: u32) -> Key {
    Key {
        kind: KIND_SLRU_BLOCK,
        f2: slru_kind_number(kind),
        f6: pageno,
        ..Key::MIN
    }
}

/// An SLRU segment's entry.
pub fn slru_segment_key(kind: SlruKind, segno: u32) -> Key {
    Key {
        kind: KIND_SLRU_SEGMENT,
        f2: slru_kind_number(kind),
        f3: segno,
        ..Key::MIN
    }
}

/// The segment entries of one SLRU.
pub fn slru_segment_range(kind: SlruKind) -> Range<Key> {
    let n = slru_kind_number(kind);
    Key {
        kind: KIND_SLRU_SEGMENT,
        f2: n,
        ..Key::MIN
    }..Key {
        kind: KIND_SLRU_SEGMENT,
        f2: n + 1,
        ..Key::MIN
    }
}

/// A two-phase state file.
pub fn twophase_key(xid: u32) -> Key {
    Key {
        kind: KIND_TWOPHASE,
        f6: xid,
        ..Key::MIN
    }
}

/// `global/pg_control`.
pub const CONTROLFILE_KEY: Key = Key {
    kind: KIND_CONTROL,
    f2: 0,
    f3: 0,
    f4: 0,
    f5: 0,
    f6: 0,
};

/// The latest `CheckPoint` struct, kept up to date by ingest (nextXid, nextOid, …).
pub const CHECKPOINT_KEY: Key = Key {
    kind: KIND_CONTROL,
    f2: 0,
    f3: 0,
    f4: 0,
    f5: 0,
    f6: 1,
};

/// A file kept by path (PG_VERSION, configuration files).
pub fn file_key(path: &str) -> Key {
    // Two independent 64-bit FNV-1a hashes make the 128 bits spread over the key; the
    // value carries the path, so a collision is detected rather than served.
    let h1 = fnv1a(path.as_bytes(), 0xcbf2_9ce4_8422_2325);
    let h2 = fnv1a(path.as_bytes(), 0x6c62_272e_07bb_0142);
    Key {
        kind: KIND_FILE,
        f2: (h1 >> 32) as u32,
        f3: h1 as u32,
        f4: (h2 >> 32) as u32,
        f5: 0,
        f6: h2 as u32,
    }
}

fn fnv1a(data: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The value of a [`file_key`]: `path NUL contents`.
pub fn encode_file_value(path: &str, contents: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(path.len() + 1 + contents.len());
    v.extend_from_slice(path.as_bytes());
    v.push(0);
    v.extend_from_slice(contents);
    v
}

/// Splits a [`file_key`] value into path and contents.
pub fn decode_file_value(v: &[u8]) -> Option<(&str, &[u8])> {
    let nul = v.iter().position(|b| *b == 0)?;
    let path = std::str::from_utf8(&v[..nul]).ok()?;
    Some((path, &v[nul + 1..]))
}

/// The key of a page as `walingest` names it.
pub fn page_key(p: &PageKey) -> Key {
    match p {
        PageKey::Rel(tag) => rel_block_key(tag.rel, tag.blkno),
        PageKey::Slru(kind, pageno) => slru_block_key(*kind, *pageno),
    }
}

/// A relation fork's size entry: its length in blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelSizeEntry {
    /// Blocks in the fork.
    pub nblocks: u32,
}

impl RelSizeEntry {
    /// The stored form (u32 little-endian).
    pub fn encode(&self) -> [u8; 4] {
        self.nblocks.to_le_bytes()
    }

    /// Decodes a present entry; `None` for a tombstone or a malformed value.
    pub fn decode(v: &[u8]) -> Option<RelSizeEntry> {
        let b: [u8; 4] = v.try_into().ok()?;
        Some(RelSizeEntry {
            nblocks: u32::from_le_bytes(b),
        })
    }
}

/// Decodes a u32 LE value (SLRU segment sizes); `None` for a tombstone.
pub fn decode_u32(v: &[u8]) -> Option<u32> {
    let b: [u8; 4] = v.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_key() -> impl Strategy<Value = Key> {
        (
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u32>(),
        )
            .prop_map(|(kind, f2, f3, f4, f5, f6)| Key {
                kind,
                f2,
                f3,
                f4,
                f5,
                f6,
            })
    }

    proptest! {
        #[test]
        fn encoding_preserves_order(a in any_key(), b in any_key()) {
            prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
            prop_assert_eq!(Key::from_bytes(&a.to_bytes()).unwrap(), a);
            prop_assert_eq!(Key::from_hex(&a.to_string()).unwrap(), a);
        }

        #[test]
        fn next_is_the_successor(a in any_key()) {
            prop_assume!(a != Key::MAX);
            let (hi, lo) = as_int(&a);
            let (lo1, carry) = lo.overflowing_add(1);
            let hi1 = hi + u16::from(carry);
            prop_assert_eq!(as_int(&a.next()), (hi1, lo1));
        }
    }

    /// The 18 bytes as (top 2 bytes, low 16 bytes).
    fn as_int(k: &Key) -> (u16, u128) {
        let b = k.to_bytes();
        (
            u16::from_be_bytes([b[0], b[1]]),
            u128::from_be_bytes(b[2..].try_into().unwrap()),
        )
    }

    #[test]
    fn relation_keys_group_together() {
        let rel = RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
            forknum: 0,
        };
        let fsm = RelTag { forknum: 1, ..rel };
        let r = rel_block_range(rel);
        assert!(r.contains(&rel_block_key(rel, 0)));
        assert!(r.contains(&rel_block_key(rel, u32::MAX - 1)));
        assert!(!r.contains(&rel_block_key(fsm, 0)));
        let db = db_block_range(1663, 5);
        assert!(db.contains(&rel_block_key(fsm, 7)));
        let sizes = rel_size_range(1663, 5);
        assert!(sizes.contains(&rel_size_key(rel)));
        assert!(sizes.contains(&rel_size_key(fsm)));
        assert!(!sizes.contains(&rel_size_key(RelTag { dbnode: 6, ..rel })));
        assert!(all_rel_sizes_range().contains(&rel_size_key(rel)));
        assert_eq!(rel_of_size_key(&rel_size_key(fsm)), fsm);
        assert!(rel_block_key(rel, 1).is_rel_block());
        assert_eq!(
            rel_block_key(rel, 9).to_buffer_tag(),
            Some(BufferTag { rel, blkno: 9 })
        );
    }

    #[test]
    fn slru_and_files() {
        let k = slru_block_key(SlruKind::MultiXactOffsets, 40);
        assert!(k.is_page() && !k.is_rel_block());
        assert_eq!(k.redo_tag().blkno, 40);
        assert!(slru_segment_range(SlruKind::Clog).contains(&slru_segment_key(SlruKind::Clog, 3)));
        assert!(
            !slru_segment_range(SlruKind::Clog)
                .contains(&slru_segment_key(SlruKind::MultiXactMembers, 0))
        );
        for kind in [
            SlruKind::Clog,
            SlruKind::MultiXactMembers,
            SlruKind::MultiXactOffsets,
        ] {
            assert_eq!(slru_kind_from_number(slru_kind_number(kind)), Some(kind));
        }
        assert_ne!(file_key("PG_VERSION"), file_key("postgresql.conf"));
        let v = encode_file_value("pg_hba.conf", b"local all all trust\n");
        assert_eq!(
            decode_file_value(&v),
            Some(("pg_hba.conf", &b"local all all trust\n"[..]))
        );
        assert_eq!(
            RelSizeEntry::decode(&RelSizeEntry { nblocks: 7 }.encode())
                .unwrap()
                .nblocks,
            7
        );
        assert_eq!(RelSizeEntry::decode(b""), None);
    }
}
