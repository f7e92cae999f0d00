//! The consensus rules of the proposer, as pure functions over what the acceptors reported.
//!
//! They are separate from the state machine ([`crate::proposer`]) so that each rule can be
//! read, and tested, on its own:
//!
//! * [`quorum`]: a majority of the configured safekeepers.
//! * [`choose_donor`]: the voter with the most advanced log, compared by
//!   `(last_log_term, flush_lsn)`; its flush LSN is where the new term starts.
//! * [`start_streaming_at`]: where a voter's log diverges from the proposer's; the same
//!   function the acceptor uses to double-check it
//!   ([`TermHistory::find_highest_common_point`]), so both sides agree by construction.
//! * [`quorum_commit`]: the quorum-th highest flush LSN, counting only acknowledgements at
//!   or after the term's start (Raft's rule that a leader never commits by counting replicas
//!   of older terms' entries).

use safekeeper_api::term::{Term, TermHistory, TermLsn};
use utils::Lsn;

/// The number of agreeing safekeepers an election or a commit needs: a majority of `n`, so
/// that any two quorums share at least one safekeeper.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// What one acceptor reported in its vote for the proposer's term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteInfo {
    /// End of its WAL (durable: an acceptor flushes before it votes).
    pub flush_lsn: Lsn,
    /// Its peer horizon: WAL below it is on every safekeeper.
    pub truncate_lsn: Lsn,
    /// Its term history up to `flush_lsn`.
    pub history: TermHistory,
}

impl VoteInfo {
    /// The term of the last WAL it holds.
    pub fn last_log_term(&self) -> Term {
        self.history.last_log_term(self.flush_lsn)
    }

    /// The key elections compare: a longer log of an older term loses to a shorter log of a
    /// newer one.
    pub fn position(&self) -> (Term, Lsn) {
        (self.last_log_term(), self.flush_lsn)
    }
}

/// Picks the donor among `votes` (index, vote): the highest `(last_log_term, flush_lsn)`;
/// ties go to the lowest index, so the choice is deterministic. `None` for no votes.
pub fn choose_donor<'a, I>(votes: I) -> Option<(usize, &'a VoteInfo)>
where
    I: IntoIterator<Item = (usize, &'a VoteInfo)>,
{
    let mut best: Option<(usize, &VoteInfo)> = None;
    for (i, v) in votes {
        if best.is_none_or(|(_, b)| v.position() > b.position()) {
            best = Some((i, v));
        }
    }
    best
}

/// The elected proposer's term history and term start LSN, from the donor's vote.
///
/// The term starts at the donor's flush LSN; when no voter has any WAL (a new timeline),
/// at `bootstrap_lsn`. The history is the donor's plus `(term, start)`.
pub fn elected_history(donor: &VoteInfo, term: Term, bootstrap_lsn: Lsn) -> (TermHistory, Lsn) {
    let start = if donor.flush_lsn.is_valid() {
        donor.flush_lsn
    } else {
        bootstrap_lsn
    };
    let mut history = donor.history.clone();
    history.0.push(TermLsn::new(term, start));
    (history, start)
}

/// Where a voter whose log ends at `voter_flush` with history `voter_history` must start
/// receiving the proposer's WAL (it truncates its log there): the highest common point of
/// the two histories, or the start of the proposer's history if they share no term.
///
/// The acceptor computes the same value itself and refuses a different one.
pub fn start_streaming_at(
    voter_history: &TermHistory,
    voter_flush: Lsn,
    proposer_history: &TermHistory,
) -> Lsn {
    TermHistory::find_highest_common_point(voter_history, proposer_history, voter_flush)
        .map(|p| p.lsn)
        .or_else(|| proposer_history.0.first().map(|e| e.lsn))
        .unwrap_or(Lsn::INVALID)
}

/// The LSN that `quorum` acceptors have durably flushed in the proposer's term: the
/// quorum-th highest of `acked` (one entry per configured safekeeper; `None` when it has
/// not acknowledged anything in this term), where an acknowledgement below `term_start`
/// counts as nothing. Returns `None` when fewer than `quorum` acceptors have reached
/// `term_start`: nothing can be committed yet.
///
/// With `count_before_term_start` (a deliberately unsafe rule, for the simulation's
/// negative control only) acknowledgements below the term start count too.
pub fn quorum_commit(
    acked: &[Option<Lsn>],
    quorum: usize,
    term_start: Lsn,
    count_before_term_start: bool,
) -> Option<Lsn> {
    let mut counted: Vec<Lsn> = acked
        .iter()
        .filter_map(|a| *a)
        .filter(|&f| count_before_term_start || f >= term_start)
        .collect();
    if quorum == 0 || counted.len() < quorum {
        return None;
    }
    counted.sort_unstable_by(|a, b| b.cmp(a));
    Some(counted[quorum - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(entries: &[(Term, u64)]) -> TermHistory {
        TermHistory(
            entries
                .iter()
                .map(|&(t, l)| TermLsn::new(t, Lsn(l)))
                .collect(),
        )
    }

    fn vote(history: &[(Term, u64)], flush: u64) -> VoteInfo {
        VoteInfo {
            flush_lsn: Lsn(flush),
            truncate_lsn: Lsn::INVALID,
            history: th(history),
        }
    }

    #[test]
    fn quorum_is_a_majority() {
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7].map(quorum),
            [1, 2, 2, 3, 3, 4, 4],
            "any two quorums intersect"
        );
    }

    #[test]
    fn donor_has_the_highest_last_log_term_then_flush_lsn() {
        let votes = [
            vote(&[(1, 0x10)], 0x90),             // longest log, old term
            vote(&[(1, 0x10), (3, 0x30)], 0x40),  // newest term
            vote(&[(1, 0x10), (3, 0x30)], 0x50),  // newest term, longer: the donor
            vote(&[(1, 0x10), (2, 0x20)], 0x100), // middle term
        ];
        let (i, d) = choose_donor(votes.iter().enumerate()).unwrap();
        assert_eq!(i, 2);
        assert_eq!(d.position(), (3, Lsn(0x50)));
        // A history running past the flush LSN does not count (the vote's history is cut at
        // flush, but the rule must not depend on it).
        let ahead = vote(&[(1, 0x10), (9, 0x80)], 0x60);
        assert_eq!(ahead.last_log_term(), 1);
        // Ties go to the lowest index.
        let tied = [vote(&[(2, 0x10)], 0x40), vote(&[(2, 0x10)], 0x40)];
        assert_eq!(choose_donor(tied.iter().enumerate()).unwrap().0, 0);
        assert!(choose_donor(std::iter::empty()).is_none());
    }

    #[test]
    fn elected_history_extends_the_donors_and_starts_at_its_flush() {
        let d = vote(&[(1, 0x10), (3, 0x30)], 0x50);
        let (h, start) = elected_history(&d, 7, Lsn(0x10));
        assert_eq!(h, th(&[(1, 0x10), (3, 0x30), (7, 0x50)]));
        assert_eq!(start, Lsn(0x50));
        // A new timeline: nobody has WAL, the term starts at the bootstrap LSN.
        let empty = vote(&[], 0);
        let (h, start) = elected_history(&empty, 1, Lsn(0x1028));
        assert_eq!(h, th(&[(1, 0x1028)]));
        assert_eq!(start, Lsn(0x1028));
    }

    #[test]
    fn start_points_follow_the_common_term() {
        let prop = th(&[(1, 0x10), (2, 0x20), (3, 0x30)]);
        // (voter history, voter flush, expected start)
        type Case = (&'static [(Term, u64)], u64, u64);
        let cases: &[Case] = &[
            // Empty log: the start of the proposer's history.
            (&[], 0, 0x10),
            // Caught up to the donor's term: its own flush.
            (&[(1, 0x10), (2, 0x20)], 0x30, 0x30),
            // Longer in term 2 than the proposer's term 2: cut at the proposer's term 3 start.
            (&[(1, 0x10), (2, 0x20)], 0x50, 0x30),
            // Diverged in a term the proposer never saw: cut where the proposer's term 3
            // begins (the end of the common term 2 in the proposer's log).
            (&[(1, 0x10), (2, 0x20), (4, 0x40)], 0x70, 0x30),
            // A term 3 the proposer's history names with another start: diverges at 0x18,
            // where the voter's own term 3 began.
            (&[(1, 0x10), (3, 0x18)], 0x40, 0x18),
            // Shorter than the proposer in a common term: its flush.
            (&[(1, 0x10)], 0x15, 0x15),
        ];
        for &(vh, vf, want) in cases {
            assert_eq!(
                start_streaming_at(&th(vh), Lsn(vf), &prop),
                Lsn(want),
                "voter {vh:?} flush {vf:#x}"
            );
        }
        // The donor itself starts at its flush: the term start.
        let d = vote(&[(1, 0x10), (2, 0x20)], 0x28);
        let (h, start) = elected_history(&d, 5, Lsn::INVALID);
        assert_eq!(start_streaming_at(&d.history, d.flush_lsn, &h), start);
    }

    #[test]
    fn commit_is_the_quorum_th_highest_ack_at_or_after_term_start() {
        let start = Lsn(0x100);
        let a = |v: &[Option<u64>]| v.iter().map(|x| x.map(Lsn)).collect::<Vec<_>>();
        // 3 safekeepers, quorum 2.
        assert_eq!(
            quorum_commit(&a(&[Some(0x180), Some(0x140), None]), 2, start, false),
            Some(Lsn(0x140))
        );
        // One below the term start counts as nothing: no quorum at or after the start.
        assert_eq!(
            quorum_commit(&a(&[Some(0x180), Some(0xF0), None]), 2, start, false),
            None
        );
        // ... unless the unsafe negative-control rule counts it.
        assert_eq!(
            quorum_commit(&a(&[Some(0x180), Some(0xF0), None]), 2, start, true),
            Some(Lsn(0xF0))
        );
        // Exactly at the term start counts (the term's first record is not yet there, but
        // the log up to it is now the proposer's on a quorum).
        assert_eq!(
            quorum_commit(&a(&[Some(0x100), Some(0x100), Some(0x90)]), 2, start, false),
            Some(Lsn(0x100))
        );
        // 5 safekeepers, quorum 3: the third highest.
        assert_eq!(
            quorum_commit(
                &a(&[Some(0x500), Some(0x200), Some(0x400), Some(0x300), None]),
                3,
                start,
                false
            ),
            Some(Lsn(0x300))
        );
        assert_eq!(
            quorum_commit(&a(&[None, None, None]), 2, start, false),
            None
        );
    }
}
