//! The WAL an elected proposer holds in memory to stream to its acceptors.
//!
//! One contiguous byte range `[start, end)`: the donor's WAL recovered for acceptors that
//! lag behind the term start, followed by the WAL the compute produced in this term. It
//! grows at the end ([`WalBuffer::append`]) as the compute produces WAL, at the front
//! ([`WalBuffer::prepend`]) when more of the donor's WAL is fetched for a lagging acceptor,
//! and shrinks at the front ([`WalBuffer::trim_to`]) once every acceptor has it durably.
//!
//! Invariant: the bytes are exactly the proposer's log over `[start, end)`; nothing else is
//! ever inserted, so a range handed out by [`WalBuffer::get`] is always the proposer's WAL.

use bytes::Bytes;
use utils::Lsn;

/// A contiguous range of the proposer's WAL. See the module docs.
#[derive(Debug, Clone)]
pub struct WalBuffer {
    start: Lsn,
    data: Vec<u8>,
}

impl WalBuffer {
    /// An empty buffer positioned at `at`.
    pub fn new(at: Lsn) -> Self {
        WalBuffer {
            start: at,
            data: Vec::new(),
        }
    }

    /// The first LSN held.
    pub fn start(&self) -> Lsn {
        self.start
    }

    /// The LSN after the last byte held.
    pub fn end(&self) -> Lsn {
        Lsn(self.start.0 + self.data.len() as u64)
    }

    /// How many bytes are held.
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Adds `bytes` at the end.
    pub fn append(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Adds `bytes` in front; they must end exactly at [`WalBuffer::start`].
    /// Returns false (and changes nothing) if they do not.
    pub fn prepend(&mut self, at: Lsn, bytes: &[u8]) -> bool {
        if at.0 + bytes.len() as u64 != self.start.0 {
            return false;
        }
        let mut data = Vec::with_capacity(bytes.len() + self.data.len());
        data.extend_from_slice(bytes);
        data.extend_from_slice(&self.data);
        self.data = data;
        self.start = at;
        true
    }

    /// Drops the bytes below `lsn` (no-op if `lsn` is at or below the start).
    pub fn trim_to(&mut self, lsn: Lsn) {
        let lsn = lsn.min(self.end());
        if lsn > self.start {
            self.data.drain(..(lsn.0 - self.start.0) as usize);
            self.start = lsn;
        }
    }

    /// Up to `max_len` bytes from `from`, or `None` if `from` is outside `[start, end)`.
    pub fn get(&self, from: Lsn, max_len: usize) -> Option<Bytes> {
        if from < self.start || from >= self.end() {
            return None;
        }
        let off = (from.0 - self.start.0) as usize;
        let len = max_len.min(self.data.len() - off);
        Some(Bytes::copy_from_slice(&self.data[off..off + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_prepend_trim_get() {
        let mut b = WalBuffer::new(Lsn(100));
        assert_eq!((b.start(), b.end()), (Lsn(100), Lsn(100)));
        assert!(b.get(Lsn(100), 10).is_none());
        b.append(&[1, 2, 3, 4]);
        assert_eq!(b.end(), Lsn(104));
        assert_eq!(b.get(Lsn(102), 10).unwrap().as_ref(), &[3, 4]);
        assert_eq!(b.get(Lsn(100), 2).unwrap().as_ref(), &[1, 2]);
        assert!(!b.prepend(Lsn(97), &[9, 9]), "must end at the start");
        assert!(b.prepend(Lsn(98), &[7, 8]));
        assert_eq!(b.get(Lsn(98), 3).unwrap().as_ref(), &[7, 8, 1]);
        assert!(b.get(Lsn(97), 1).is_none());
        b.trim_to(Lsn(101));
        assert_eq!(b.start(), Lsn(101));
        assert_eq!(b.get(Lsn(101), 10).unwrap().as_ref(), &[2, 3, 4]);
        b.trim_to(Lsn(50));
        assert_eq!(b.start(), Lsn(101));
        b.trim_to(Lsn(1000));
        assert_eq!((b.start(), b.end()), (Lsn(104), Lsn(104)));
    }
}
