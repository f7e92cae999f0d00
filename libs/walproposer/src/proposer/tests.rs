//! Scripted conversations with the state machine: each test plays the safekeepers' side by
//! hand and checks the actions.

use safekeeper_api::proto::HotStandbyFeedback;
use safekeeper_api::term::TermLsn;
use utils::TenantTimelineId;

use super::*;

const BOOT: Lsn = Lsn(0x0100_0028);

fn th(entries: &[(Term, u64)]) -> TermHistory {
    TermHistory(
        entries
            .iter()
            .map(|&(t, l)| TermLsn::new(t, Lsn(l)))
            .collect(),
    )
}

struct Harness {
    p: Proposer,
    now: Instant,
}

impl Harness {
    fn new(n: usize) -> Harness {
        Harness::with_config(n, |_| {})
    }

    fn with_config(n: usize, f: impl FnOnce(&mut ProposerConfig)) -> Harness {
        let server = ServerInfo {
            pg_version: 150007,
            system_id: 7,
            wal_seg_size: 16 << 20,
        };
        let mut config = ProposerConfig::new(TenantTimelineId::generate(), n, server, BOOT);
        config.max_append_bytes = 100;
        config.max_inflight_bytes = 1000;
        f(&mut config);
        let now = Instant::now();
        let mut h = Harness {
            p: Proposer::new(config, now).unwrap(),
            now,
        };
        let connects = h.actions();
        assert_eq!(
            connects,
            (0..n).map(|i| Action::Connect(SkId(i))).collect::<Vec<_>>()
        );
        for i in 0..n {
            h.p.connected(SkId(i));
        }
        for (i, (sk, msg)) in h.sent().into_iter().enumerate() {
            assert_eq!(sk, SkId(i));
            assert!(matches!(msg, ProposerMessage::Greeting(_)));
        }
        h
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.p.poll_action()).collect()
    }

    /// The actions, all of which must be sends.
    fn sent(&mut self) -> Vec<(SkId, ProposerMessage)> {
        self.actions()
            .into_iter()
            .map(|a| match a {
                Action::Send { sk, msg } => (sk, msg),
                other => panic!("expected only sends, got {other:?}"),
            })
            .collect()
    }

    fn greet(&mut self, sk: usize, term: Term) {
        self.p.message_from(
            SkId(sk),
            AcceptorMessage::Greeting(AcceptorGreeting {
                node_id: utils::NodeId(sk as u64 + 1),
                mconf: Configuration::empty(),
                term,
            }),
        );
    }

    fn vote(&mut self, sk: usize, given: bool, term: Term, flush: u64, history: &[(Term, u64)]) {
        self.p.message_from(
            SkId(sk),
            AcceptorMessage::VoteResponse(VoteResponse {
                generation: Generation::NONE,
                term,
                vote_given: given,
                flush_lsn: Lsn(flush),
                truncate_lsn: Lsn::INVALID,
                term_history: th(history),
            }),
        );
    }

    fn ack(&mut self, sk: usize, term: Term, flush: u64) {
        self.p.message_from(
            SkId(sk),
            AcceptorMessage::AppendResponse(AppendResponse {
                generation: Generation::NONE,
                term,
                flush_lsn: Lsn(flush),
                commit_lsn: Lsn::INVALID,
                hs_feedback: HotStandbyFeedback::default(),
                pageserver_feedback: None,
            }),
        );
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.p.tick(self.now);
    }

    /// Greets all `n` safekeepers with term 0 and elects with votes from those in `voters`
    /// (empty logs); returns the term.
    fn elect_fresh(&mut self, n: usize, voters: &[usize]) -> Term {
        for i in 0..n {
            self.greet(i, 0);
        }
        self.actions();
        for &i in voters {
            self.vote(i, true, 1, 0, &[]);
        }
        1
    }
}

fn appends(sent: &[(SkId, ProposerMessage)], sk: usize) -> Vec<&AppendRequest> {
    sent.iter()
        .filter_map(|(s, m)| match m {
            ProposerMessage::AppendRequest(a) if s.0 == sk => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn campaigns_above_the_highest_term_once_a_quorum_greeted() {
    let mut h = Harness::new(3);
    h.greet(0, 2);
    assert!(h.actions().is_empty(), "one greeting is not a quorum");
    assert_eq!(h.p.state(), ProposerState::CollectingTerms);
    h.greet(1, 5);
    let sent = h.sent();
    assert_eq!(h.p.state(), ProposerState::Campaign);
    assert_eq!(h.p.term(), 6);
    let want = |sk| {
        (
            SkId(sk),
            ProposerMessage::VoteRequest(VoteRequest {
                generation: Generation::NONE,
                term: 6,
            }),
        )
    };
    assert_eq!(sent, vec![want(0), want(1)]);
    // A late greeter with a lower term is asked for its vote in the same term.
    h.greet(2, 3);
    assert_eq!(h.sent(), vec![want(2)]);
}

#[test]
fn a_late_greeter_with_a_higher_term_is_fatal() {
    let mut h = Harness::new(3);
    h.greet(0, 2);
    h.greet(1, 2);
    h.actions();
    h.greet(2, 9);
    let a = h.actions();
    assert!(
        matches!(
            &a[..],
            [Action::Fatal(ProposerError::HigherTerm {
                their_term: 9,
                our_term: 3,
                ..
            })]
        ),
        "{a:?}"
    );
    assert_eq!(h.p.state(), ProposerState::Stopped);
}

#[test]
fn elected_from_the_donor_with_start_points_and_recovery() {
    let mut h = Harness::new(3);
    for i in 0..3 {
        h.greet(i, 2);
    }
    h.actions();
    // sk1: newest last_log_term 2, flush 0x1300: the donor.
    // sk0: term 1 only, but longer (0x1400): diverges at 0x1200 where term 2 began.
    h.vote(0, true, 3, 0x1400, &[(1, 0x1000)]);
    assert!(h.actions().is_empty(), "one vote is not a quorum");
    h.vote(1, true, 3, 0x1300, &[(1, 0x1000), (2, 0x1200)]);
    let a = h.actions();
    let history = th(&[(1, 0x1000), (2, 0x1200), (3, 0x1300)]);
    assert_eq!(
        a[0],
        Action::Elected(Election {
            term: 3,
            term_start_lsn: Lsn(0x1300),
            history: history.clone(),
            donor: SkId(1),
        })
    );
    let elected = |sk: usize, start: u64| Action::Send {
        sk: SkId(sk),
        msg: ProposerMessage::Elected(ProposerElected {
            generation: Generation::NONE,
            term: 3,
            start_streaming_at: Lsn(start),
            term_history: history.clone(),
        }),
    };
    assert_eq!(a[1], elected(0, 0x1200));
    assert_eq!(a[2], elected(1, 0x1300));
    // The donor has everything: an empty append at once gets its flush LSN back.
    match &a[3] {
        Action::Send {
            sk: SkId(1),
            msg: ProposerMessage::AppendRequest(r),
        } => {
            assert_eq!((r.h.begin_lsn, r.h.end_lsn), (Lsn(0x1300), Lsn(0x1300)));
            assert!(r.wal_data.is_empty());
        }
        other => panic!("expected a heartbeat to sk1, got {other:?}"),
    }
    // sk0 lacks the donor's [0x1200, 0x1300).
    assert_eq!(
        a[4],
        Action::FetchFromDonor(FetchRequest {
            donor: SkId(1),
            start: Lsn(0x1200),
            end: Lsn(0x1300),
            history: history.clone(),
        })
    );
    assert_eq!(a.len(), 5);
    assert_eq!(h.p.state(), ProposerState::Elected);

    // The compute's WAL goes to the donor at once; sk0 waits for the recovered WAL.
    h.p.wal_available(Lsn(0x1380), &[3u8; 0x80]).unwrap();
    let sent = h.sent();
    let to1 = appends(&sent, 1);
    assert_eq!(
        to1.iter()
            .map(|a| (a.h.begin_lsn.0, a.h.end_lsn.0))
            .collect::<Vec<_>>(),
        [(0x1300, 0x1364), (0x1364, 0x1380)],
        "split at max_append_bytes"
    );
    assert!(appends(&sent, 0).is_empty());
    // Recovered WAL must be exactly what was asked for.
    assert!(h.p.donor_wal(Lsn(0x1210), vec![2u8; 0xF0].into()).is_err());
    h.p.donor_wal(Lsn(0x1200), vec![2u8; 0x100].into()).unwrap();
    let sent = h.sent();
    let to0 = appends(&sent, 0);
    assert_eq!(to0[0].h.begin_lsn, Lsn(0x1200));
    assert_eq!(to0[0].wal_data.as_ref(), &[2u8; 100][..]);
    let mut at = 0x1200;
    for a in &to0 {
        assert_eq!(a.h.begin_lsn.0, at, "contiguous");
        at = a.h.end_lsn.0;
    }
    assert_eq!(at, 0x1380, "recovered WAL then the compute's");
    // The third safekeeper votes late: it is brought in with its own start point.
    h.vote(2, true, 3, 0x1300, &[(1, 0x1000), (2, 0x1200)]);
    let sent = h.sent();
    assert!(
        matches!(&sent[0], (SkId(2), ProposerMessage::Elected(e)) if e.start_streaming_at == Lsn(0x1300))
    );
    assert_eq!(appends(&sent, 2)[0].h.begin_lsn, Lsn(0x1300));
}

#[test]
fn commit_counts_only_acknowledgements_at_or_after_the_term_start() {
    let mut h = Harness::new(3);
    for i in 0..3 {
        h.greet(i, 1);
    }
    h.actions();
    h.vote(0, true, 2, 0x1300, &[(1, 0x1000)]);
    h.vote(1, true, 2, 0x1100, &[(1, 0x1000)]);
    h.actions();
    h.p.donor_wal(Lsn(0x1100), vec![1u8; 0x200].into()).unwrap();
    h.p.wal_available(Lsn(0x1400), &[2u8; 0x100]).unwrap();
    h.actions();
    // sk1 has caught up to 0x1200 only: below the term start, it does not count.
    h.ack(1, 2, 0x1200);
    h.ack(0, 2, 0x1380);
    assert!(h.actions().is_empty());
    assert_eq!(h.p.commit_lsn(), Lsn::INVALID);
    // Now both are past the start: commit = the 2nd highest.
    h.ack(1, 2, 0x1340);
    let a = h.actions();
    assert_eq!(a[0], Action::CommitAdvanced(Lsn(0x1340)));
    // The new commit LSN is broadcast at once (as heartbeats: nothing else to send).
    let sent: Vec<_> = a[1..]
        .iter()
        .map(|a| match a {
            Action::Send {
                sk,
                msg: ProposerMessage::AppendRequest(r),
            } => (sk.0, r.h.commit_lsn, r.wal_data.len()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sent, [(0, Lsn(0x1340), 0), (1, Lsn(0x1340), 0)]);
    // Commit never goes back.
    h.ack(1, 2, 0x1340);
    h.ack(0, 2, 0x1390);
    assert!(h.actions().is_empty());
    assert_eq!(h.p.commit_lsn(), Lsn(0x1340));
    h.ack(2, 2, 0x1400);
    assert_eq!(h.actions(), []);
    assert_eq!(
        h.p.commit_lsn(),
        Lsn(0x1340),
        "sk2 never got ProposerElected"
    );
}

#[test]
fn a_new_timeline_starts_at_the_bootstrap_lsn() {
    let mut h = Harness::new(3);
    let term = h.elect_fresh(3, &[0, 1, 2]);
    assert_eq!(h.p.term_start_lsn(), Some(BOOT));
    assert_eq!(h.p.history(), Some(&th(&[(term, BOOT.0)])));
    let a = h.actions();
    assert!(
        a.iter().all(|a| !matches!(a, Action::FetchFromDonor(_))),
        "{a:?}"
    );
    // The compute's WAL must continue from the term start.
    assert_eq!(
        h.p.wal_available(Lsn(BOOT.0 + 20), &[0; 10]),
        Err(InputError::NotContiguous {
            up_to: Lsn(BOOT.0 + 20),
            len: 10,
            end: BOOT
        })
    );
    h.p.wal_available(Lsn(BOOT.0 + 10), &[0; 10]).unwrap();
    assert_eq!(h.p.wal_end(), Some(Lsn(BOOT.0 + 10)));
}

#[test]
fn wal_before_election_is_refused() {
    let mut h = Harness::new(1);
    assert_eq!(
        h.p.wal_available(Lsn(BOOT.0 + 1), &[0]),
        Err(InputError::NotElected)
    );
}

#[test]
fn a_higher_term_in_an_append_response_is_fatal_and_final() {
    let mut h = Harness::new(3);
    h.elect_fresh(3, &[0, 1]);
    h.actions();
    h.ack(1, 4, 0);
    let a = h.actions();
    assert!(
        matches!(
            &a[..],
            [Action::Fatal(ProposerError::HigherTerm {
                sk: SkId(1),
                their_term: 4,
                our_term: 1,
                ..
            })]
        ),
        "{a:?}"
    );
    let msg = format!(
        "{}",
        ProposerError::HigherTerm {
            sk: SkId(1),
            their_term: 4,
            our_term: 1,
            msg: "append response",
        }
    );
    assert!(msg.contains("another proposer has taken over"), "{msg}");
    // Nothing happens after the end.
    h.ack(0, 1, BOOT.0);
    h.advance(Duration::from_secs(60));
    assert_eq!(h.actions(), []);
    assert!(h.p.wal_available(Lsn(BOOT.0 + 1), &[0]).is_err());
}

#[test]
fn a_refused_vote_before_election_is_fatal() {
    let mut h = Harness::new(3);
    h.greet(0, 0);
    h.greet(1, 0);
    h.actions();
    // Someone else took term 1 on sk1 first.
    h.vote(1, false, 1, 0, &[]);
    assert!(matches!(
        &h.actions()[..],
        [Action::Fatal(ProposerError::VoteRefused { term: 1, .. })]
    ));
}

#[test]
fn a_vote_survives_its_connection() {
    let mut h = Harness::new(3);
    h.greet(0, 0);
    h.greet(1, 0);
    h.actions();
    h.vote(0, true, 1, 0, &[]);
    // sk0 reconnects before the election: its re-vote is refused (already in term 1), which
    // confirms the vote it gave us.
    h.p.disconnected(SkId(0));
    h.advance(Duration::from_millis(100));
    assert_eq!(h.actions(), [Action::Connect(SkId(0))]);
    h.p.connected(SkId(0));
    h.actions();
    h.greet(0, 1);
    assert!(matches!(
        &h.sent()[..],
        [(SkId(0), ProposerMessage::VoteRequest(_))]
    ));
    h.vote(0, false, 1, 0, &[]);
    assert!(h.actions().is_empty());
    h.vote(1, true, 1, 0, &[]);
    assert!(matches!(h.actions()[0], Action::Elected(_)));
}

#[test]
fn after_election_a_refused_vote_in_our_term_is_ours() {
    let mut h = Harness::new(3);
    h.greet(0, 0);
    h.greet(1, 0);
    h.vote(0, true, 1, 0, &[]);
    h.vote(1, true, 1, 0, &[]);
    h.actions();
    h.greet(2, 1);
    assert!(matches!(
        &h.sent()[..],
        [(SkId(2), ProposerMessage::VoteRequest(_))]
    ));
    // sk2 voted in term 1 for someone who lost: it follows the elected proposer.
    h.vote(2, false, 1, 0, &[]);
    let sent = h.sent();
    assert!(
        matches!(&sent[0], (SkId(2), ProposerMessage::Elected(e)) if e.start_streaming_at == BOOT)
    );
}

#[test]
fn reconnects_with_backoff_and_drops_silent_safekeepers() {
    let mut h = Harness::with_config(3, |c| {
        c.timeouts.reconnect_min = Duration::from_millis(100);
        c.timeouts.reconnect_max = Duration::from_millis(300);
        c.timeouts.keepalive_timeout = Duration::from_secs(2);
        c.timeouts.heartbeat_interval = Duration::from_secs(10);
    });
    h.elect_fresh(3, &[0, 1, 2]);
    h.actions();
    // sk2 disconnects twice: 100 ms, then 200 ms before the retry.
    h.p.disconnected(SkId(2));
    h.advance(Duration::from_millis(99));
    assert_eq!(h.actions(), []);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.actions(), [Action::Connect(SkId(2))]);
    h.p.disconnected(SkId(2));
    h.advance(Duration::from_millis(150));
    assert_eq!(h.actions(), []);
    h.advance(Duration::from_millis(50));
    assert_eq!(h.actions(), [Action::Connect(SkId(2))]);
    // A reconnected safekeeper goes through greeting and vote again.
    h.p.connected(SkId(2));
    assert!(matches!(
        &h.sent()[..],
        [(SkId(2), ProposerMessage::Greeting(_))]
    ));
    h.greet(2, 1);
    h.actions();
    h.vote(2, false, 1, BOOT.0, &[(1, BOOT.0)]);
    assert!(matches!(
        &h.sent()[0],
        (SkId(2), ProposerMessage::Elected(_))
    ));
    // sk0 and sk1 stay silent past the keepalive timeout (sk2 answers in time).
    h.advance(Duration::from_millis(1500));
    h.ack(2, 1, BOOT.0);
    h.advance(Duration::from_millis(600));
    let a = h.actions();
    let dropped: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            Action::Disconnect { sk, .. } => Some(sk.0),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, [0, 1]);
}

#[test]
fn heartbeats_when_idle() {
    let mut h = Harness::with_config(3, |c| {
        c.timeouts.heartbeat_interval = Duration::from_millis(500);
    });
    h.elect_fresh(3, &[0, 1]);
    h.actions();
    h.advance(Duration::from_millis(499));
    assert_eq!(h.actions(), []);
    h.advance(Duration::from_millis(1));
    let sent = h.sent();
    assert_eq!(sent.len(), 2);
    for (_, m) in &sent {
        let ProposerMessage::AppendRequest(a) = m else {
            panic!("{m:?}")
        };
        assert!(a.wal_data.is_empty());
        assert_eq!((a.h.begin_lsn, a.h.end_lsn, a.h.term), (BOOT, BOOT, 1));
    }
}

#[test]
fn the_inflight_window_waits_for_acknowledgements() {
    let mut h = Harness::new(1);
    h.greet(0, 0);
    h.actions();
    h.vote(0, true, 1, 0, &[]);
    h.actions();
    h.p.wal_available(Lsn(BOOT.0 + 2500), &[9u8; 2500]).unwrap();
    let sent = h.sent();
    let end = appends(&sent, 0).last().unwrap().h.end_lsn;
    assert_eq!(end, Lsn(BOOT.0 + 1000), "window of 1000 bytes");
    h.ack(0, 1, BOOT.0 + 600);
    assert_eq!(h.p.commit_lsn(), Lsn(BOOT.0 + 600), "a quorum of one");
    let mut actions = h.actions();
    assert_eq!(actions.remove(0), Action::CommitAdvanced(Lsn(BOOT.0 + 600)));
    let sent: Vec<_> = actions
        .into_iter()
        .map(|a| match a {
            Action::Send { sk, msg } => (sk, msg),
            other => panic!("{other:?}"),
        })
        .collect();
    let a = appends(&sent, 0);
    assert_eq!(a.first().unwrap().h.begin_lsn, Lsn(BOOT.0 + 1000));
    assert_eq!(a.last().unwrap().h.end_lsn, Lsn(BOOT.0 + 1600));
}

#[test]
fn failed_fetches_are_retried() {
    let mut h = Harness::with_config(3, |c| c.timeouts.fetch_retry = Duration::from_millis(50));
    for i in 0..3 {
        h.greet(i, 1);
    }
    h.actions();
    h.vote(0, true, 2, 0x1300, &[(1, 0x1000)]);
    h.vote(1, true, 2, 0x1100, &[(1, 0x1000)]);
    let fetches = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::FetchFromDonor(_)))
            .count()
    };
    assert_eq!(fetches(&h.actions()), 1);
    h.p.donor_fetch_failed("donor is down");
    h.advance(Duration::from_millis(49));
    assert_eq!(fetches(&h.actions()), 0);
    h.advance(Duration::from_millis(1));
    assert_eq!(fetches(&h.actions()), 1);
}

#[test]
fn invalid_configurations_are_refused() {
    let server = ServerInfo::default();
    let ttid = TenantTimelineId::generate();
    let now = Instant::now();
    let err = |c: ProposerConfig| Proposer::new(c, now).unwrap_err();
    assert_eq!(
        err(ProposerConfig::new(ttid, 0, server, BOOT)),
        ConfigError::SafekeeperCount(0)
    );
    let mut c = ProposerConfig::new(ttid, 3, server, BOOT);
    c.max_append_bytes = MAX_WAL_PAYLOAD + 1;
    assert_eq!(err(c), ConfigError::AppendSize(MAX_WAL_PAYLOAD + 1));
}

#[cfg(feature = "testing")]
#[test]
fn unsafe_rules_break_the_quorum_and_the_commit_rule() {
    let mut h = Harness::with_config(3, |c| {
        *c = c.clone().with_unsafe_rules(UnsafeRules {
            quorum: Some(1),
            count_acks_before_term_start: true,
            least_advanced_donor: false,
        });
    });
    assert_eq!(h.p.quorum(), 1);
    h.greet(0, 4);
    assert_eq!(
        h.p.state(),
        ProposerState::Campaign,
        "one greeting suffices"
    );
    h.actions();
    h.vote(0, true, 5, 0x1300, &[(1, 0x1000)]);
    assert_eq!(h.p.state(), ProposerState::Elected, "one vote suffices");
}

#[test]
fn a_connect_that_never_completes_is_abandoned_and_retried() {
    let server = ServerInfo::default();
    let mut config = ProposerConfig::new(TenantTimelineId::generate(), 1, server, BOOT);
    config.timeouts.keepalive_timeout = Duration::from_secs(1);
    config.timeouts.reconnect_min = Duration::from_millis(10);
    let mut now = Instant::now();
    let mut p = Proposer::new(config, now).unwrap();
    assert_eq!(p.poll_action(), Some(Action::Connect(SkId(0))));
    now += Duration::from_secs(1);
    p.tick(now);
    assert!(matches!(
        p.poll_action(),
        Some(Action::Disconnect { sk: SkId(0), .. })
    ));
    now += Duration::from_millis(10);
    p.tick(now);
    assert_eq!(p.poll_action(), Some(Action::Connect(SkId(0))));
}

#[test]
fn over_the_buffer_limit_committed_wal_is_dropped_and_recovered_from_a_safekeeper_that_has_it() {
    let mut h = Harness::with_config(3, |c| c.max_buffer_bytes = 2000);
    h.elect_fresh(3, &[0, 1]);
    let donor = h
        .actions()
        .into_iter()
        .find_map(|a| match a {
            Action::Elected(e) => Some(e.donor),
            _ => None,
        })
        .unwrap();
    let other = SkId(1 - donor.0);
    h.p.disconnected(SkId(2));
    // 5000 bytes, acknowledged by the two voters: committed, but sk2 never got them.
    let mut end = BOOT.0;
    for _ in 0..10 {
        end += 500;
        h.p.wal_available(Lsn(end), &[7u8; 500]).unwrap();
        h.ack(0, 1, end);
        h.ack(1, 1, end);
    }
    h.actions();
    assert_eq!(h.p.commit_lsn(), Lsn(end));
    let start = h.p.leader.as_ref().unwrap().wal.start();
    assert!(
        start > BOOT && h.p.leader.as_ref().unwrap().wal.len() <= 2000,
        "the buffer is bounded: starts at {start}"
    );
    // The election's donor goes away; sk2 comes back and needs [BOOT, start): it is read
    // from the voter that acknowledged it in our term.
    h.p.disconnected(donor);
    h.advance(Duration::from_secs(1));
    assert!(h.actions().contains(&Action::Connect(SkId(2))));
    h.p.connected(SkId(2));
    h.greet(2, 1);
    h.actions();
    h.vote(2, false, 1, 0, &[]);
    let fetch = h
        .actions()
        .into_iter()
        .find_map(|a| match a {
            Action::FetchFromDonor(f) => Some(f),
            _ => None,
        })
        .expect("a recovery read");
    // It is read back chunk by chunk, each from where sk2 has got to, and sk2 is streamed
    // from each chunk: recovery holds one chunk, never all of [BOOT, start).
    let chunk = h.p.config.fetch_chunk_bytes();
    assert_eq!(chunk, 250, "an eighth of the 2000-byte buffer limit");
    let (mut fetch, mut sent2, mut fetches) = (fetch, BOOT, 0);
    loop {
        assert_eq!((fetch.donor, fetch.start), (other, sent2), "the next chunk");
        assert_eq!(fetch.end, Lsn((sent2.0 + chunk).min(start.0)));
        let len = (fetch.end.0 - fetch.start.0) as usize;
        h.p.donor_wal(fetch.start, vec![7u8; len].into()).unwrap();
        fetches += 1;
        let mut next_fetch = None;
        loop {
            let mut progressed = false;
            for a in h.actions() {
                match a {
                    Action::Send {
                        sk: SkId(2),
                        msg: ProposerMessage::AppendRequest(r),
                    } if !r.wal_data.is_empty() => {
                        assert_eq!(r.h.begin_lsn, sent2, "contiguous");
                        sent2 = r.h.end_lsn;
                        progressed = true;
                    }
                    Action::FetchFromDonor(f) => next_fetch = Some(f),
                    _ => {}
                }
            }
            if !progressed {
                break;
            }
            h.ack(2, 1, sent2.0);
        }
        let leader = h.p.leader.as_ref().unwrap();
        let held = leader
            .recovered
            .as_ref()
            .map_or(0, |r| r.end().0 - r.start().0);
        assert!(
            held <= chunk && leader.wal.len() <= 2000,
            "recovery memory is bounded"
        );
        match next_fetch {
            Some(f) => fetch = f,
            None => break,
        }
    }
    assert_eq!(
        sent2,
        Lsn(end),
        "sk2 has everything: recovered WAL, then the buffer's"
    );
    assert_eq!(fetches, (start.0 - BOOT.0).div_ceil(chunk));
    h.ack(2, 1, end);
    h.actions();
    assert!(
        h.p.leader.as_ref().unwrap().recovered.is_none(),
        "the last chunk is dropped once no one needs it"
    );
}

#[test]
fn a_window_stuck_inside_a_long_record_is_widened() {
    // The acceptors acknowledge only at record boundaries: a record longer than the
    // window (or a segment switch's padding) must not stall the stream forever.
    let mut h = Harness::new(3);
    h.elect_fresh(3, &[0, 1]);
    h.actions();
    h.p.wal_available(Lsn(BOOT.0 + 3000), &[1u8; 3000]).unwrap();
    let sent_to0 = |h: &mut Harness| {
        appends(&h.sent(), 0)
            .iter()
            .map(|a| a.wal_data.len())
            .sum::<usize>()
    };
    assert_eq!(sent_to0(&mut h), 1000, "the window");
    // Acknowledgements that do not move (the record is not complete yet).
    h.ack(0, 1, BOOT.0);
    h.advance(Duration::from_millis(999));
    assert_eq!(sent_to0(&mut h), 0);
    h.advance(Duration::from_millis(1));
    assert_eq!(
        sent_to0(&mut h),
        1000,
        "widened to 2000 after a heartbeat interval"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(sent_to0(&mut h), 1000, "and to 4000");
    // Caught up: back to the configured window for what follows.
    h.ack(0, 1, BOOT.0 + 3000);
    h.p.wal_available(Lsn(BOOT.0 + 6000), &[1u8; 3000]).unwrap();
    assert_eq!(sent_to0(&mut h), 1000);
}

#[test]
fn without_a_bootstrap_lsn_a_timeline_without_wal_is_not_started() {
    let mut h = Harness::with_config(3, |c| c.bootstrap_lsn = Lsn::INVALID);
    h.elect_fresh(3, &[0, 1]);
    let a = h.actions();
    assert!(
        a.iter().all(|a| !matches!(
            a,
            Action::Send {
                msg: ProposerMessage::Elected(_),
                ..
            } | Action::Elected(_)
        )),
        "nothing may be proposed: {a:?}"
    );
    assert!(a.contains(&Action::Fatal(ProposerError::NoWal)), "{a:?}");
    assert_eq!(h.p.state(), ProposerState::Stopped);
}

#[test]
fn one_node_under_two_addresses_is_fatal_before_it_can_count_twice() {
    let mut h = Harness::new(3);
    // sk0 and sk1 are one safekeeper (say 127.0.0.1 and localhost); sk2 is down.
    for sk in [0, 1] {
        h.p.message_from(
            SkId(sk),
            AcceptorMessage::Greeting(AcceptorGreeting {
                node_id: utils::NodeId(7),
                mconf: Configuration::empty(),
                term: 0,
            }),
        );
    }
    let actions = h.actions();
    assert!(
        matches!(
            actions.as_slice(),
            [Action::Fatal(ProposerError::DuplicateNodeId {
                node_id: utils::NodeId(7),
                first: SkId(0),
                second: SkId(1),
            })]
        ),
        "{actions:?}"
    );
    assert_eq!(h.p.state(), ProposerState::Stopped);
    // Nothing it hears afterwards elects it or commits anything.
    h.vote(0, true, 1, 0, &[]);
    h.vote(1, true, 1, 0, &[]);
    assert!(h.actions().is_empty());
    assert_eq!(h.p.commit_lsn(), Lsn::INVALID);
}

#[test]
fn an_acknowledgement_beyond_what_was_sent_drops_the_connection_and_commits_nothing() {
    let mut h = Harness::new(3);
    h.elect_fresh(3, &[0, 1]);
    h.actions();
    h.p.wal_available(Lsn(BOOT.0 + 50), &[3u8; 50]).unwrap();
    h.actions();
    // sk0 claims far more than it was sent; sk1 acknowledges honestly, only part of it.
    h.ack(0, 1, BOOT.0 + 10_000);
    let actions = h.actions();
    assert!(
        matches!(actions.as_slice(), [Action::Disconnect { sk: SkId(0), reason }] if reason.contains("beyond")),
        "{actions:?}"
    );
    h.ack(1, 1, BOOT.0 + 20);
    assert_eq!(
        h.p.commit_lsn(),
        Lsn::INVALID,
        "a quorum needs sk0's real ack"
    );
    assert_eq!(h.p.acked_flush(SkId(0)), None);
}
