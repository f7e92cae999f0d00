//! The WAL an elected proposer holds in memory to stream to its acceptors.
//!
//! One contiguous byte range `[start, end)` of the WAL the compute produced in this term. It
//! grows at the end ([`WalBuffer::append`]) as the compute produces WAL and shrinks at the
//! front ([`WalBuffer::trim_to`]) once every acceptor has it durably, or beyond the memory
//! limit once it is committed. WAL below it that a lagging acceptor needs is read back from
//! a safekeeper, one [`RecoveredWal`] chunk at a time.
//!
//! Invariant: the bytes are exactly the proposer's log over `[start, end)`; nothing else is
//! ever inserted, so a range handed out by [`WalBuffer::get`] is always the proposer's WAL.

use std::collections::VecDeque;

use bytes::Bytes;
use utils::Lsn;

/// A contiguous range of the proposer's WAL. See the module docs.
///
/// Held as a deque of shared chunks (as they arrived from the compute or the donor): adding
/// at either end and dropping from the front move no bytes, and [`WalBuffer::get`] hands
/// out a slice of a chunk without copying, so one chunk sent to three safekeepers is held
/// once. A 128 MiB buffer trimmed by 1 MiB used to mean a 127 MiB memmove.
#[derive(Debug, Clone)]
pub struct WalBuffer {
    start: Lsn,
    len: u64,
    /// Contiguous, in order: each chunk starts where the previous one ends, the first at
    /// `start`. Never holds an empty chunk.
    chunks: VecDeque<(Lsn, Bytes)>,
}

impl WalBuffer {
    /// An empty buffer positioned at `at`.
    pub fn new(at: Lsn) -> Self {
        WalBuffer {
            start: at,
            len: 0,
            chunks: VecDeque::new(),
        }
    }

    /// The first LSN held.
    pub fn start(&self) -> Lsn {
        self.start
    }

    /// The LSN after the last byte held.
    pub fn end(&self) -> Lsn {
        Lsn(self.start.0 + self.len)
    }

    /// How many bytes are held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `bytes` at the end.
    pub fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let at = self.end();
        self.chunks.push_back((at, Bytes::copy_from_slice(bytes)));
        self.len += bytes.len() as u64;
    }

    /// Drops the bytes below `lsn` (no-op if `lsn` is at or below the start).
    pub fn trim_to(&mut self, lsn: Lsn) {
        let lsn = lsn.min(self.end());
        if lsn <= self.start {
            return;
        }
        while let Some((at, chunk)) = self.chunks.front_mut() {
            let chunk_end = at.0 + chunk.len() as u64;
            if chunk_end <= lsn.0 {
                self.chunks.pop_front();
            } else {
                if at.0 < lsn.0 {
                    let cut = (lsn.0 - at.0) as usize;
                    *chunk = chunk.slice(cut..);
                    *at = lsn;
                }
                break;
            }
        }
        self.len -= lsn.0 - self.start.0;
        self.start = lsn;
    }

    /// Up to `max_len` bytes from `from` (at most to the end of the chunk holding `from`:
    /// a slice of it, not a copy), or `None` if `from` is outside `[start, end)`.
    pub fn get(&self, from: Lsn, max_len: usize) -> Option<Bytes> {
        if from < self.start || from >= self.end() || max_len == 0 {
            return None;
        }
        // The last chunk starting at or before `from`.
        let i = self.chunks.partition_point(|(at, _)| *at <= from) - 1;
        let (at, chunk) = &self.chunks[i];
        let off = (from.0 - at.0) as usize;
        let len = max_len.min(chunk.len() - off);
        Some(chunk.slice(off..off + len))
    }
}

/// One chunk of the proposer's WAL below the [`WalBuffer`], read back from a safekeeper for
/// acceptors that lag: `[start, start + len)`, at most the configured fetch chunk. A lagging
/// acceptor is streamed from it and the next chunk is fetched when it has been sent, so
/// catching up on any amount of WAL holds a bounded amount of memory.
#[derive(Debug, Clone)]
pub struct RecoveredWal {
    start: Lsn,
    bytes: Bytes,
}

impl RecoveredWal {
    /// The chunk `bytes` at `start`.
    pub fn new(start: Lsn, bytes: Bytes) -> Self {
        RecoveredWal { start, bytes }
    }

    /// The first LSN held.
    pub fn start(&self) -> Lsn {
        self.start
    }

    /// The LSN after the last byte held.
    pub fn end(&self) -> Lsn {
        Lsn(self.start.0 + self.bytes.len() as u64)
    }

    /// Whether `lsn` is held.
    pub fn covers(&self, lsn: Lsn) -> bool {
        self.start <= lsn && lsn < self.end()
    }

    /// Up to `max_len` bytes from `from` (a slice, not a copy), or `None` outside the chunk.
    pub fn get(&self, from: Lsn, max_len: usize) -> Option<Bytes> {
        if !self.covers(from) || max_len == 0 {
            return None;
        }
        let off = (from.0 - self.start.0) as usize;
        let len = max_len.min(self.bytes.len() - off);
        Some(self.bytes.slice(off..off + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovered_chunks_hand_out_slices() {
        let r = RecoveredWal::new(Lsn(10), Bytes::from_static(&[1, 2, 3, 4]));
        assert_eq!((r.start(), r.end()), (Lsn(10), Lsn(14)));
        assert!(r.covers(Lsn(10)) && r.covers(Lsn(13)) && !r.covers(Lsn(14)));
        assert_eq!(r.get(Lsn(11), 2).unwrap().as_ref(), &[2, 3]);
        assert_eq!(r.get(Lsn(12), 10).unwrap().as_ref(), &[3, 4]);
        assert!(r.get(Lsn(9), 1).is_none() && r.get(Lsn(14), 1).is_none());
    }

    #[test]
    fn append_trim_get() {
        let mut b = WalBuffer::new(Lsn(100));
        assert_eq!((b.start(), b.end()), (Lsn(100), Lsn(100)));
        assert!(b.get(Lsn(100), 10).is_none());
        b.append(&[1, 2, 3, 4]);
        assert_eq!(b.end(), Lsn(104));
        assert_eq!(b.get(Lsn(102), 10).unwrap().as_ref(), &[3, 4]);
        assert_eq!(b.get(Lsn(100), 2).unwrap().as_ref(), &[1, 2]);
        b.append(&[5, 6]);
        // A piece ends at its chunk's end; the next one continues.
        assert_eq!(b.get(Lsn(102), 3).unwrap().as_ref(), &[3, 4]);
        assert_eq!(b.get(Lsn(104), 3).unwrap().as_ref(), &[5, 6]);
        assert!(b.get(Lsn(99), 1).is_none());
        b.trim_to(Lsn(101));
        assert_eq!(b.start(), Lsn(101));
        assert_eq!(b.get(Lsn(101), 10).unwrap().as_ref(), &[2, 3, 4]);
        b.trim_to(Lsn(50));
        assert_eq!(b.start(), Lsn(101));
        b.trim_to(Lsn(1000));
        assert_eq!((b.start(), b.end()), (Lsn(106), Lsn(106)));
    }

    /// Random operations against a plain byte vector: the same bytes at every LSN.
    #[test]
    fn matches_a_flat_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..50 {
            let base = 1_000u64;
            let mut b = WalBuffer::new(Lsn(base));
            let (mut model_start, mut model): (u64, Vec<u8>) = (base, Vec::new());
            let mut next = 0u8;
            for _ in 0..200 {
                match rng.random_range(0..3) {
                    0 | 1 => {
                        let n = rng.random_range(0..50);
                        let bytes: Vec<u8> = (0..n)
                            .map(|_| {
                                next = next.wrapping_add(1);
                                next
                            })
                            .collect();
                        b.append(&bytes);
                        model.extend_from_slice(&bytes);
                    }
                    _ => {
                        let to = model_start + rng.random_range(0..=model.len() as u64 + 5);
                        b.trim_to(Lsn(to));
                        let cut = (to.saturating_sub(model_start) as usize).min(model.len());
                        model.drain(..cut);
                        model_start += cut as u64;
                    }
                }
                assert_eq!((b.start().0, b.len()), (model_start, model.len() as u64));
                // Reading everything back, piece by piece, gives the model's bytes.
                let mut at = b.start();
                let mut read = Vec::new();
                while let Some(piece) = b.get(at, rng.random_range(1..40)) {
                    assert!(!piece.is_empty());
                    read.extend_from_slice(&piece);
                    at = Lsn(at.0 + piece.len() as u64);
                }
                assert_eq!(read, model);
            }
        }
    }
}
