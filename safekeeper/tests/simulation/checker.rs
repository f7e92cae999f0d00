//! The invariants, checked after every step.
//!
//! The checker keeps the **committed log**: the bytes from the timeline's first LSN up to
//! the highest LSN anyone has claimed committed (an acceptor's commit LSN, or a proposer's
//! `CommitAdvanced`). Each claim contributes the claimant's own bytes, read from its files
//! or its log; where two claims overlap they must be equal.
//!
//! 1. **Election safety**: at most one proposer incarnation is elected per term (checked
//!    by the world when a proposer reports `Elected`).
//! 2. **Log safety**: any two acceptors (and proposers) agree on the bytes at every LSN
//!    both consider committed (a claim that differs from the committed log).
//! 3. **Stable committed prefix**: an acceptor's log never changes below its own highest
//!    commit LSN, across crashes too: its WAL never ends below it, and after any truncation
//!    or crash (its write LSN went down) its bytes below it are re-read and compared, as
//!    they are periodically and at the end.
//! 4. **Quorum**: the highest committed LSN is held by a quorum: at least a majority of the
//!    acceptors have flushed WAL reaching it whose bytes equal the committed log. Down
//!    acceptors count by what their files hold after the power loss, up to the flush LSN
//!    they had (a crash in the middle of a truncation may leave less).
//!
//! It does not assert that no acceptor ever truncates a committed LSN: an acceptor can hold
//! other bytes at a committed LSN (from a term that lost) and have them replaced.

use utils::Lsn;

use super::nodes::AcceptorNode;

/// What the checker knows about one acceptor.
#[derive(Debug, Clone, Copy)]
struct Track {
    /// The highest commit LSN it ever reported.
    hw_commit: Lsn,
    /// Its durable WAL equals the committed log up to here.
    held: Lsn,
    /// Its WAL differs from the committed log at `held`; cleared when its log is cut.
    diverged: bool,
    /// Its write LSN at the last check.
    last_write: Lsn,
}

/// See the module docs.
#[derive(Debug)]
pub struct Checker {
    base: Lsn,
    quorum: usize,
    committed: Vec<u8>,
    tracks: Vec<Track>,
    /// Times the write LSN of some acceptor went down (truncations and crash losses).
    pub cuts: u64,
}

impl Checker {
    /// A checker for `n` acceptors whose timeline starts at `base`.
    pub fn new(base: Lsn, n: usize) -> Self {
        let t = Track {
            hw_commit: base,
            held: base,
            diverged: false,
            last_write: Lsn::INVALID,
        };
        Checker {
            base,
            quorum: n / 2 + 1,
            committed: Vec::new(),
            tracks: vec![t; n],
            cuts: 0,
        }
    }

    /// The highest committed LSN claimed so far.
    pub fn committed_end(&self) -> Lsn {
        Lsn(self.base.0 + self.committed.len() as u64)
    }

    /// Adds a claim: `who` considers `bytes` at `from` committed. `from` must not be beyond
    /// the committed log's end (claims extend it contiguously).
    pub fn merge(&mut self, who: &str, from: Lsn, bytes: &[u8]) -> Result<(), String> {
        if from < self.base || from > self.committed_end() {
            return Err(format!(
                "checker: claim by {who} at {from} is outside [{}, {}]",
                self.base,
                self.committed_end()
            ));
        }
        let off = (from.0 - self.base.0) as usize;
        let overlap = bytes.len().min(self.committed.len() - off);
        if let Some(i) = (0..overlap).find(|&i| bytes[i] != self.committed[off + i]) {
            return Err(format!(
                "log safety: {who} has {:#04x} at {} where the committed log has {:#04x}",
                bytes[i],
                Lsn(from.0 + i as u64),
                self.committed[off + i]
            ));
        }
        self.committed.extend_from_slice(&bytes[overlap..]);
        Ok(())
    }

    /// First LSN in `[from, from + bytes.len())` where `bytes` differ from the committed log
    /// (within its extent).
    fn first_difference(&self, from: Lsn, bytes: &[u8]) -> Option<Lsn> {
        let off = (from.0 - self.base.0) as usize;
        let overlap = bytes.len().min(self.committed.len().saturating_sub(off));
        (0..overlap)
            .find(|&i| bytes[i] != self.committed[off + i])
            .map(|i| Lsn(from.0 + i as u64))
    }

    /// Re-reads acceptor `i`'s WAL below its highest commit LSN and compares it.
    pub fn recheck_prefix(&self, i: usize, node: &AcceptorNode) -> Result<(), String> {
        let hw = self.tracks[i].hw_commit;
        if hw <= self.base {
            return Ok(());
        }
        let bytes = node.read(self.base, hw)?;
        match self.first_difference(self.base, &bytes) {
            Some(at) => Err(format!(
                "stable prefix: acceptor {i}'s WAL changed at {at}, below its commit LSN {hw}"
            )),
            None => Ok(()),
        }
    }

    /// Invariants 2 and 3 for acceptor `i` (running), and its part of 4.
    pub fn check_running(&mut self, i: usize, node: &AcceptorNode) -> Result<(), String> {
        let Some(acc) = &node.acc else {
            return self.check_down(i, node);
        };
        let (commit, flush, write) = (acc.commit_lsn(), acc.flush_lsn(), acc.write_lsn());
        if !write.is_valid() {
            return Ok(());
        }
        let mut t = self.tracks[i];
        let cut = t.last_write.is_valid() && write < t.last_write;
        t.last_write = write;
        if write < t.hw_commit {
            return Err(format!(
                "stable prefix: acceptor {i}'s WAL ends at {write}, below its commit LSN {}",
                t.hw_commit
            ));
        }
        if commit > flush {
            return Err(format!(
                "acceptor {i}: commit LSN {commit} is beyond its flush LSN {flush}"
            ));
        }
        if cut {
            self.cuts += 1;
            t.diverged = false;
            t.held = t.held.min(flush).max(self.base);
            self.recheck_prefix(i, node)?;
        }
        if commit > t.hw_commit {
            let bytes = node.read(t.hw_commit, commit)?;
            self.merge(&format!("acceptor {i}"), t.hw_commit, &bytes)?;
            t.hw_commit = commit;
        }
        self.tracks[i] = t;
        self.advance_held(i, node, flush)
    }

    fn check_down(&mut self, i: usize, node: &AcceptorNode) -> Result<(), String> {
        match &node.down {
            Some(d) => self.advance_held(i, node, d.flush),
            None => Ok(()),
        }
    }

    /// Extends how far acceptor `i`'s durable WAL (ending at `flush`) is verified to equal
    /// the committed log.
    fn advance_held(&mut self, i: usize, node: &AcceptorNode, flush: Lsn) -> Result<(), String> {
        let t = &mut self.tracks[i];
        // Held up to `base` means nothing held (an acceptor without WAL has flush 0).
        t.held = t.held.min(flush).max(self.base);
        let target = flush.min(Lsn(self.base.0 + self.committed.len() as u64));
        if t.diverged || target <= t.held {
            return Ok(());
        }
        let from = t.held;
        // A running node's WAL reaches its flush LSN; a down one's files may end earlier
        // after a crash in the middle of a truncation (it then holds only what is there).
        let bytes = if node.acc.is_some() {
            node.read(from, target)?
        } else {
            node.read_available(from, target)?
        };
        match self.first_difference(from, &bytes) {
            Some(at) => {
                let t = &mut self.tracks[i];
                t.held = at;
                t.diverged = true;
            }
            None => self.tracks[i].held = Lsn(from.0 + bytes.len() as u64),
        }
        Ok(())
    }

    /// Invariant 4, after every acceptor was checked.
    pub fn check_quorum(&self) -> Result<(), String> {
        let end = self.committed_end();
        if end <= self.base {
            return Ok(());
        }
        let holders = self.tracks.iter().filter(|t| t.held >= end).count();
        if holders < self.quorum {
            let held: Vec<String> = self.tracks.iter().map(|t| t.held.to_string()).collect();
            return Err(format!(
                "quorum: committed LSN {end} is held by {holders} acceptors, fewer than a quorum of {} (held up to: {})",
                self.quorum,
                held.join(", ")
            ));
        }
        Ok(())
    }
}
