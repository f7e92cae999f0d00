//! Terms and term histories: the Raft-like part of the proposer protocol.
//!
//! A **term** numbers one election. Each elected proposer writes WAL only in its own term,
//! starting at its *term start LSN*. A **term history** lists `(term, start LSN)` pairs for
//! every term whose WAL an acceptor holds (or is about to hold), oldest first.
//!
//! Invariants of a well-formed [`TermHistory`] (checked by [`TermHistory::validate`], and
//! by the wire decoder):
//! - terms are strictly increasing (a term is won at most once and never reused);
//! - start LSNs are non-decreasing (a term that wrote nothing is followed by a term
//!   starting at the same LSN).
//!
//! Two acceptors whose histories contain the same term agree on that term's start LSN and
//! on every WAL byte written in it: that is why the divergence point of two logs can be
//! computed from histories alone ([`TermHistory::find_highest_common_point`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use utils::Lsn;

/// An election number. Terms only grow; a timeline is created in [`INITIAL_TERM`].
pub type Term = u64;

/// The term a timeline is created in. No proposer is ever elected in it, so it never has
/// WAL of its own beyond what a timeline was created with.
pub const INITIAL_TERM: Term = 0;

/// A term and the LSN where its WAL starts (or, in other contexts, a position in a term).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct TermLsn {
    /// The term.
    pub term: Term,
    /// Where the term's WAL starts.
    pub lsn: Lsn,
}

impl TermLsn {
    /// Pairs a term with an LSN.
    pub fn new(term: Term, lsn: Lsn) -> Self {
        TermLsn { term, lsn }
    }
}

impl fmt::Display for TermLsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.term, self.lsn)
    }
}

/// A term history that breaks the invariants in the module docs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermHistoryError {
    /// Entry `index` has a term not greater than the entry before it.
    #[error(
        "term history entry {index} has term {term}, not greater than the previous term {prev}"
    )]
    TermNotIncreasing {
        /// Position of the offending entry.
        index: usize,
        /// Its term.
        term: Term,
        /// The previous entry's term.
        prev: Term,
    },
    /// Entry `index` starts before the entry before it.
    #[error("term history entry {index} starts at {lsn}, before the previous start {prev}")]
    LsnDecreasing {
        /// Position of the offending entry.
        index: usize,
        /// Its start LSN.
        lsn: Lsn,
        /// The previous entry's start LSN.
        prev: Lsn,
    },
}

/// The `(term, start LSN)` pairs of the terms in a log, oldest first.
///
/// The JSON form is a plain array of `{term, lsn}` objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct TermHistory(pub Vec<TermLsn>);

impl TermHistory {
    /// The empty history of an acceptor that has never been given WAL.
    pub fn empty() -> Self {
        TermHistory(Vec::new())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The newest entry.
    pub fn last(&self) -> Option<TermLsn> {
        self.0.last().copied()
    }

    /// Checks the invariants in the module docs.
    pub fn validate(&self) -> Result<(), TermHistoryError> {
        for (index, pair) in self.0.windows(2).enumerate() {
            let (prev, cur) = (pair[0], pair[1]);
            if cur.term <= prev.term {
                return Err(TermHistoryError::TermNotIncreasing {
                    index: index + 1,
                    term: cur.term,
                    prev: prev.term,
                });
            }
            if cur.lsn < prev.lsn {
                return Err(TermHistoryError::LsnDecreasing {
                    index: index + 1,
                    lsn: cur.lsn,
                    prev: prev.lsn,
                });
            }
        }
        Ok(())
    }

    /// The entries whose start LSN is ≤ `flush_lsn`: the terms actually present in a log
    /// that ends at `flush_lsn`.
    ///
    /// An acceptor adopts the elected proposer's history before it has received that
    /// term's WAL, so its stored history may run ahead of its WAL; this is the part that
    /// describes the WAL it has. The last entry is the log's *last log term*.
    pub fn up_to(&self, flush_lsn: Lsn) -> TermHistory {
        TermHistory(
            self.0
                .iter()
                .take_while(|e| e.lsn <= flush_lsn)
                .copied()
                .collect(),
        )
    }

    /// The term of the last WAL record in a log ending at `flush_lsn` (Neon's old "epoch"):
    /// the last entry of [`up_to`](Self::up_to), or [`INITIAL_TERM`] for an empty log.
    ///
    /// Elections compare `(last_log_term, flush_lsn)`, not `flush_lsn` alone: a longer log
    /// from an older term loses to a shorter log from a newer one.
    pub fn last_log_term(&self, flush_lsn: Lsn) -> Term {
        self.0
            .iter()
            .take_while(|e| e.lsn <= flush_lsn)
            .last()
            .map_or(INITIAL_TERM, |e| e.term)
    }

    /// The term that wrote the byte just below `end`: the last entry starting *below* it.
    /// Unlike [`last_log_term`](Self::last_log_term), an entry starting exactly at `end` (a
    /// term that was won and wrote nothing, e.g. by a stale compute that then refused to
    /// write) owns no byte and does not count. `None` when no entry starts below `end`
    /// (no bytes at all).
    ///
    /// This is what the walproposer's no-fork rule asks: whose WAL would it continue?
    pub fn last_byte_term(&self, end: Lsn) -> Option<Term> {
        self.0
            .iter()
            .take_while(|e| e.lsn < end)
            .last()
            .map(|e| e.term)
    }

    /// The point where a log diverges from the leader's: everything before the returned LSN
    /// is identical in both logs, so the acceptor keeps it and truncates the rest.
    ///
    /// - `mine` is the history of the log that **ends** at `my_flush_lsn` (the acceptor's);
    ///   entries starting beyond `my_flush_lsn` are ignored (see [`up_to`](Self::up_to)).
    /// - `theirs` is the leader's (proposer's or donor's) history. Its last term is
    ///   open-ended: the leader goes on writing in it, so it has no end here.
    ///
    /// The rule: find the last term present at the same position in both histories (the
    /// *common term*; histories that agree on a term agree on all earlier ones). The common
    /// term ends, in each log, where that log's next term starts, or at `my_flush_lsn` for
    /// my last term, or never for their last term. The divergence point is the smaller of
    /// the two ends, returned together with the common term.
    ///
    /// Returns `None` when the histories have no common term (for example my log is empty):
    /// then nothing is shared and the leader streams from the start of its own history.
    ///
    /// Histories that name the same term with different start LSNs break the protocol's
    /// invariants; the search stops before such an entry, so it is treated as divergent
    /// (the safe direction: less is kept, and the caller's `≥ commit_lsn` check still
    /// guards committed WAL).
    pub fn find_highest_common_point(
        mine: &TermHistory,
        theirs: &TermHistory,
        my_flush_lsn: Lsn,
    ) -> Option<TermLsn> {
        let mine = mine.up_to(my_flush_lsn);
        let common = mine
            .0
            .iter()
            .zip(theirs.0.iter())
            .take_while(|(m, t)| m.term == t.term && m.lsn == t.lsn)
            .count();
        let last_common = common.checked_sub(1)?;
        let term = mine.0[last_common].term;
        let my_end = mine.0.get(common).map_or(my_flush_lsn, |next| next.lsn);
        let lsn = match theirs.0.get(common) {
            Some(their_next) => my_end.min(their_next.lsn),
            None => my_end,
        };
        Some(TermLsn { term, lsn })
    }
}

impl fmt::Display for TermHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{e}")?;
        }
        f.write_str("]")
    }
}

impl From<Vec<TermLsn>> for TermHistory {
    fn from(v: Vec<TermLsn>) -> Self {
        TermHistory(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(entries: &[(Term, u64)]) -> TermHistory {
        TermHistory(
            entries
                .iter()
                .map(|&(term, lsn)| TermLsn::new(term, Lsn(lsn)))
                .collect(),
        )
    }

    fn tl(term: Term, lsn: u64) -> Option<TermLsn> {
        Some(TermLsn::new(term, Lsn(lsn)))
    }

    #[test]
    fn up_to_and_last_log_term() {
        let h = th(&[(1, 0x10), (2, 0x20), (4, 0x40)]);
        assert_eq!(h.up_to(Lsn(0x0f)), th(&[]));
        assert_eq!(h.up_to(Lsn(0x10)), th(&[(1, 0x10)]));
        assert_eq!(h.up_to(Lsn(0x3f)), th(&[(1, 0x10), (2, 0x20)]));
        assert_eq!(h.up_to(Lsn(0x40)), h);
        assert_eq!(h.up_to(Lsn::MAX), h);
        assert_eq!(h.last_log_term(Lsn(0x0f)), INITIAL_TERM);
        assert_eq!(h.last_log_term(Lsn(0x10)), 1);
        assert_eq!(h.last_log_term(Lsn(0x3f)), 2);
        assert_eq!(h.last_log_term(Lsn(0x1000)), 4);
        assert_eq!(TermHistory::empty().last_log_term(Lsn(5)), INITIAL_TERM);
    }

    #[test]
    fn validate_rejects_bad_histories() {
        th(&[]).validate().unwrap();
        th(&[(0, 5)]).validate().unwrap();
        th(&[(1, 5), (2, 5), (7, 9)]).validate().unwrap();
        let e = th(&[(1, 5), (1, 6)]).validate().unwrap_err();
        assert!(
            matches!(e, TermHistoryError::TermNotIncreasing { index: 1, .. }),
            "{e}"
        );
        let e = th(&[(1, 5), (3, 6), (2, 7)]).validate().unwrap_err();
        assert!(
            matches!(e, TermHistoryError::TermNotIncreasing { index: 2, .. }),
            "{e}"
        );
        let e = th(&[(1, 5), (2, 4)]).validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "term history entry 1 starts at 0/00000004, before the previous start 0/00000005"
        );
    }

    #[test]
    fn common_point_empty_histories() {
        let f = TermHistory::find_highest_common_point;
        assert_eq!(f(&th(&[]), &th(&[]), Lsn(0)), None);
        // Bootstrap: a fresh acceptor, the first proposer's history is just its own term.
        assert_eq!(f(&th(&[]), &th(&[(1, 0x100)]), Lsn(0)), None);
        // My history has entries but none of them is backed by WAL.
        assert_eq!(f(&th(&[(1, 0x100)]), &th(&[(1, 0x100)]), Lsn(0x50)), None);
        // The leader knows nothing (cannot happen in an election, still well-defined).
        assert_eq!(f(&th(&[(1, 0x100)]), &th(&[]), Lsn(0x200)), None);
    }

    #[test]
    fn common_point_bootstrap_from_created_timeline() {
        let f = TermHistory::find_highest_common_point;
        // A timeline created over HTTP starts as [(0, start)] with flush = start; the first
        // proposer extends the donor's history with its own term at the same LSN.
        let mine = th(&[(0, 0x0100_0028)]);
        let theirs = th(&[(0, 0x0100_0028), (1, 0x0100_0028)]);
        assert_eq!(f(&mine, &theirs, Lsn(0x0100_0028)), tl(0, 0x0100_0028));
    }

    #[test]
    fn common_point_identical() {
        let f = TermHistory::find_highest_common_point;
        let h = th(&[(1, 0x10), (2, 0x20)]);
        // Same last term: the common term is open-ended on their side, so my end wins.
        assert_eq!(f(&h, &h, Lsn(0x30)), tl(2, 0x30));
        assert_eq!(f(&h, &h, Lsn(0x20)), tl(2, 0x20));
        // The leader's own term appended: I end where it starts, or earlier.
        let theirs = th(&[(1, 0x10), (2, 0x20), (3, 0x30)]);
        assert_eq!(f(&h, &theirs, Lsn(0x30)), tl(2, 0x30));
        assert_eq!(f(&h, &theirs, Lsn(0x28)), tl(2, 0x28));
    }

    #[test]
    fn common_point_diverged_in_the_middle() {
        let f = TermHistory::find_highest_common_point;
        // I wrote term 2 up to 0x50; the leader's history says term 2 ended at 0x30 and
        // term 3 took over: my tail after 0x30 is divergent.
        let mine = th(&[(1, 0x10), (2, 0x20)]);
        let theirs = th(&[(1, 0x10), (2, 0x20), (3, 0x30), (5, 0x60)]);
        assert_eq!(f(&mine, &theirs, Lsn(0x50)), tl(2, 0x30));
        // I have a term the leader never saw (4): common term is 2, it ended for me at 0x40
        // and for the leader at 0x30.
        let mine = th(&[(1, 0x10), (2, 0x20), (4, 0x40)]);
        assert_eq!(f(&mine, &theirs, Lsn(0x70)), tl(2, 0x30));
        // Terms differ at the very first entry: nothing in common.
        assert_eq!(
            f(&th(&[(2, 0x10)]), &th(&[(1, 0x10), (3, 0x20)]), Lsn(0x30)),
            None
        );
        // I diverged earlier than the leader: my next term starts first.
        let mine = th(&[(1, 0x10), (3, 0x18)]);
        let theirs = th(&[(1, 0x10), (2, 0x20)]);
        assert_eq!(f(&mine, &theirs, Lsn(0x40)), tl(1, 0x18));
    }

    #[test]
    fn common_point_prefix() {
        let f = TermHistory::find_highest_common_point;
        // Mine is a prefix of theirs: I lag in term 2, and the leader moved on at 0x40.
        let mine = th(&[(1, 0x10), (2, 0x20)]);
        let theirs = th(&[(1, 0x10), (2, 0x20), (3, 0x40)]);
        assert_eq!(f(&mine, &theirs, Lsn(0x28)), tl(2, 0x28));
        // ... but I have more of term 2 than the leader kept: cut at its term-3 start.
        assert_eq!(f(&mine, &theirs, Lsn(0x48)), tl(2, 0x40));
        // Theirs is a prefix of mine: I hold a later term the leader does not know, the
        // common term ends where my next term starts (their last term is open-ended).
        let mine = th(&[(1, 0x10), (2, 0x20), (3, 0x40)]);
        let theirs = th(&[(1, 0x10), (2, 0x20)]);
        assert_eq!(f(&mine, &theirs, Lsn(0x48)), tl(2, 0x40));
    }

    #[test]
    fn common_point_ignores_my_entries_beyond_flush() {
        let f = TermHistory::find_highest_common_point;
        // I adopted the leader's history [(1,0x10),(3,0x40)] but only hold WAL to 0x30.
        let mine = th(&[(1, 0x10), (3, 0x40)]);
        let theirs = th(&[(1, 0x10), (3, 0x40), (4, 0x50)]);
        assert_eq!(f(&mine, &theirs, Lsn(0x30)), tl(1, 0x30));
        // A term starting exactly at my flush LSN is present (with no bytes yet).
        assert_eq!(f(&mine, &theirs, Lsn(0x40)), tl(3, 0x40));
    }

    #[test]
    fn common_point_same_term_different_start_is_divergent() {
        let f = TermHistory::find_highest_common_point;
        let mine = th(&[(1, 0x10), (2, 0x28)]);
        let theirs = th(&[(1, 0x10), (2, 0x20)]);
        assert_eq!(f(&mine, &theirs, Lsn(0x40)), tl(1, 0x20));
    }

    #[test]
    fn common_point_never_beyond_either_end() {
        // Exhaustive over small histories: the point is ≤ my flush, ≥ the common term's
        // start, and both histories agree on every entry starting before it.
        let terms_sets: Vec<Vec<(Term, u64)>> = vec![
            vec![],
            vec![(1, 0)],
            vec![(1, 0), (2, 8)],
            vec![(1, 0), (3, 8)],
            vec![(1, 0), (2, 8), (3, 16)],
            vec![(1, 0), (2, 8), (4, 16)],
            vec![(1, 0), (3, 16)],
            vec![(2, 8)],
        ];
        for m in &terms_sets {
            for t in &terms_sets {
                for flush in 0..24u64 {
                    let (mine, theirs) = (th(m), th(t));
                    let Some(p) =
                        TermHistory::find_highest_common_point(&mine, &theirs, Lsn(flush))
                    else {
                        continue;
                    };
                    assert!(p.lsn <= Lsn(flush), "{mine} {theirs} {flush} {p}");
                    let start = mine.0.iter().find(|e| e.term == p.term).unwrap().lsn;
                    assert!(p.lsn >= start, "{mine} {theirs} {flush} {p}");
                    assert!(theirs.0.iter().any(|e| e.term == p.term));
                    // Safety: every byte kept was written in the same term in both logs.
                    let term_at = |h: &TermHistory, b: u64| {
                        h.0.iter()
                            .take_while(|e| e.lsn.0 <= b)
                            .last()
                            .map(|e| e.term)
                    };
                    for b in mine.0[0].lsn.0..p.lsn.0 {
                        assert_eq!(
                            term_at(&mine, b),
                            term_at(&theirs, b),
                            "{mine} {theirs} {flush} {p} byte {b}"
                        );
                    }
                    // Maximality: the next byte is missing in my log or differs in term.
                    if p.lsn.0 < flush {
                        assert_ne!(
                            term_at(&mine, p.lsn.0),
                            term_at(&theirs, p.lsn.0),
                            "{mine} {theirs} {flush} {p}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_last_byte_belongs_to_the_last_term_that_wrote() {
        let h = TermHistory(vec![
            TermLsn::new(3, Lsn(100)),
            TermLsn::new(5, Lsn(500)),
            TermLsn::new(6, Lsn(900)),
        ]);
        // Term 6 starts at the end: it wrote nothing.
        assert_eq!(h.last_log_term(Lsn(900)), 6);
        assert_eq!(h.last_byte_term(Lsn(900)), Some(5));
        assert_eq!(h.last_byte_term(Lsn(901)), Some(6));
        assert_eq!(h.last_byte_term(Lsn(500)), Some(3));
        assert_eq!(h.last_byte_term(Lsn(100)), None);
    }
}
