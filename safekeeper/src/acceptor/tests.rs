use std::time::SystemTime;

use bytes::Bytes;
use postgres_ffi::v15::{RM_XLOG_ID, XLOG_NOOP};
use postgres_ffi::wal_generate::{WalWriter, XLogRecordBuilder};
use safekeeper_api::membership::Member;
use safekeeper_api::proto::AppendRequestHeader;

use super::*;

/// The default peer-lag bound of WAL removal.
const LAG: u64 = crate::DEFAULT_MAX_PEER_LAG;
use crate::control_file;

const SEG: u32 = 1024 * 1024;
const SYSID: u64 = 77;
/// The timeline's first LSN: mid-page in segment 1.
const START: Lsn = Lsn(SEG as u64 + 8192 + 200);

struct Env {
    dir: tempfile::TempDir,
    ttid: TenantTimelineId,
}

impl Env {
    fn new() -> Env {
        Env::with_mconf(Configuration::empty())
    }

    fn with_mconf(mconf: Configuration) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let ttid = TenantTimelineId::generate();
        let state = TimelinePersistentState::new(ttid, mconf, server(), SystemTime::now());
        ControlFileStore::create(dir.path(), state, Sync::No).unwrap();
        Env { dir, ttid }
    }

    fn open(&self) -> Acceptor {
        Acceptor::open(self.dir.path(), NodeId(1), Sync::No).unwrap()
    }

    /// The control file as on disk right now.
    fn on_disk(&self) -> TimelinePersistentState {
        control_file::load(&self.dir.path().join(control_file::CONTROL_FILE_NAME)).unwrap()
    }
}

fn server() -> ServerInfo {
    ServerInfo {
        pg_version: 150007,
        system_id: SYSID,
        wal_seg_size: SEG,
    }
}

fn th(entries: &[(Term, Lsn)]) -> TermHistory {
    TermHistory(entries.iter().map(|&(t, l)| TermLsn::new(t, l)).collect())
}

fn vote(a: &mut Acceptor, term: Term) -> VoteResponse {
    a.handle_vote_request(&VoteRequest {
        generation: a.mconf().generation,
        term,
    })
    .unwrap()
}

fn elected(term: Term, start: Lsn, history: TermHistory) -> ProposerElected {
    ProposerElected {
        generation: Generation::NONE,
        term,
        start_streaming_at: start,
        term_history: history,
    }
}

fn append(term: Term, begin: Lsn, wal: &[u8], commit: Lsn) -> AppendRequest {
    AppendRequest {
        h: AppendRequestHeader {
            generation: Generation::NONE,
            term,
            begin_lsn: begin,
            end_lsn: Lsn(begin.0 + wal.len() as u64),
            commit_lsn: commit,
            truncate_lsn: Lsn::INVALID,
        },
        wal_data: Bytes::copy_from_slice(wal),
    }
}

/// A proposer's WAL from `start`: `n` records, returning the bytes and each record's end.
fn wal_from(start: Lsn, prev: Lsn, n: usize, size: usize) -> (Vec<u8>, Vec<(Lsn, Lsn)>) {
    let config = postgres_ffi::wal_generate::WalWriterConfig {
        version: PgMajorVersion::V15,
        seg_size: u64::from(SEG),
        system_id: SYSID,
        timeline: 1,
    };
    let mut w = WalWriter::new(config, start, prev);
    let pos: Vec<_> = (0..n)
        .map(|i| {
            w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&vec![i as u8; size]))
        })
        .collect();
    let end = pos.last().map_or(start, |p| p.1);
    w.zero_until(end);
    (w.into_bytes(), pos)
}

/// Elects term 1 on a fresh acceptor at START and appends `n` records, committing up to
/// record `commit_idx`'s end (if any). Returns the record positions.
fn bootstrap(a: &mut Acceptor, n: usize, commit_idx: Option<usize>) -> Vec<(Lsn, Lsn)> {
    assert!(vote(a, 1).vote_given);
    a.handle_elected(&elected(1, START, th(&[(1, START)])))
        .unwrap();
    let (wal, pos) = wal_from(START, Lsn::INVALID, n, 100);
    let commit = commit_idx.map_or(Lsn::INVALID, |i| pos[i].1);
    assert!(
        a.handle_append(&append(1, START, &wal, commit))
            .unwrap()
            .is_none()
    );
    a.flush().unwrap();
    pos
}

#[test]
fn vote_is_given_only_for_a_higher_term_and_persisted_before_the_reply() {
    let env = Env::new();
    let mut a = env.open();
    assert_eq!(a.term(), 0);
    let r = vote(&mut a, 5);
    assert!(r.vote_given);
    assert_eq!(r.term, 5);
    assert_eq!(
        env.on_disk().acceptor_state.term,
        5,
        "persisted before replying"
    );
    assert_eq!((r.flush_lsn, r.truncate_lsn), (Lsn::INVALID, Lsn::INVALID));
    assert!(r.term_history.is_empty());
    // The same term again, or a lower one: no vote, and the reply carries the higher term.
    for t in [5, 3, 0] {
        let r = vote(&mut a, t);
        assert!(!r.vote_given, "term {t}");
        assert_eq!(r.term, 5);
    }
    assert!(vote(&mut a, 6).vote_given);
    // A restart keeps the promise.
    drop(a);
    let mut a = env.open();
    assert_eq!(a.term(), 6);
    assert!(!vote(&mut a, 6).vote_given);
}

#[test]
fn vote_reply_reports_flush_truncate_lsn_and_history_up_to_flush() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 5, Some(2));
    // A history that runs ahead of the WAL (adopted from a proposer not yet streamed).
    let history = th(&[(1, START), (3, Lsn(pos[4].1.0 + 4096))]);
    a.persist_with(|s| s.acceptor_state.term_history = history.clone())
        .unwrap();
    a.handle_append(&AppendRequest {
        h: AppendRequestHeader {
            truncate_lsn: pos[1].1,
            ..append(1, pos[4].1, &[], pos[2].1).h
        },
        wal_data: Bytes::new(),
    })
    .unwrap();
    let r = vote(&mut a, 4);
    assert!(r.vote_given);
    assert_eq!(r.flush_lsn, pos[4].1);
    assert_eq!(r.truncate_lsn, pos[1].1, "truncate_lsn is the peer horizon");
    assert_eq!(r.term_history, th(&[(1, START)]), "history up to flush_lsn");
    assert_eq!(a.last_log_term(), 1);
}

#[test]
fn first_election_initializes_the_timeline() {
    let env = Env::new();
    let mut a = env.open();
    assert!(vote(&mut a, 1).vote_given);
    a.handle_elected(&elected(1, START, th(&[(1, START)])))
        .unwrap();
    let s = env.on_disk();
    assert_eq!(s.timeline_start_lsn, START);
    assert_eq!(s.local_start_lsn, START);
    assert_eq!(
        s.commit_lsn, START,
        "positions floored at the timeline start"
    );
    assert_eq!(s.acceptor_state.term_history, th(&[(1, START)]));
    assert_eq!(a.flush_lsn(), START);
    // The first segment serves valid headers before the start.
    let prefix = a
        .wal_reader(START.segment_start(u64::from(SEG)))
        .unwrap()
        .read_to_vec(START)
        .unwrap();
    let h = postgres_ffi::xlog_page::XLogPageHeader::decode(&prefix).unwrap();
    assert!(h.long.is_some());
    h.validate(
        PgMajorVersion::V15,
        Lsn(u64::from(SEG)),
        u64::from(SEG),
        Some(SYSID),
    )
    .unwrap();
}

#[test]
fn appends_need_the_elected_term() {
    let env = Env::new();
    let mut a = env.open();
    let (wal, _) = wal_from(START, Lsn::INVALID, 3, 100);
    // Voted but not elected: an error.
    assert!(vote(&mut a, 2).vote_given);
    let e = a
        .handle_append(&append(2, START, &wal, Lsn::INVALID))
        .unwrap_err();
    assert!(matches!(e, AcceptorError::NotElected { .. }), "{e}");
    assert!(e.to_string().contains("before ProposerElected"), "{e}");
    // A higher term than ours: an error too.
    let e = a
        .handle_append(&append(7, START, &wal, Lsn::INVALID))
        .unwrap_err();
    assert!(matches!(e, AcceptorError::NotElected { .. }), "{e}");
    // A lower term: a reply carrying our term, nothing written.
    let r = a
        .handle_append(&append(1, START, &wal, Lsn::INVALID))
        .unwrap()
        .unwrap();
    assert_eq!(r.term, 2);
    a.handle_elected(&elected(2, START, th(&[(2, START)])))
        .unwrap();
    a.handle_append(&append(2, START, &wal, Lsn::INVALID))
        .unwrap();
    // A newer vote deposes the elected proposer.
    assert!(vote(&mut a, 3).vote_given);
    let r = a
        .handle_append(&append(
            2,
            Lsn(START.0 + wal.len() as u64),
            &[],
            Lsn::INVALID,
        ))
        .unwrap()
        .unwrap();
    assert_eq!(r.term, 3, "stale-term append answered with the higher term");
    // After a restart, appends wait for a new ProposerElected.
    drop(a);
    let mut a = env.open();
    let e = a
        .handle_append(&append(3, START, &[], Lsn::INVALID))
        .unwrap_err();
    assert!(matches!(e, AcceptorError::NotElected { .. }), "{e}");
}

#[test]
fn appends_must_be_sequential() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 3, None);
    let end = pos[2].1;
    let (more, _) = wal_from(end, pos[2].0, 2, 100);
    let e = a
        .handle_append(&append(1, Lsn(end.0 + 8), &more, Lsn::INVALID))
        .unwrap_err();
    assert!(e.to_string().contains("gap"), "{e}");
    let e = a
        .handle_append(&append(1, pos[1].1, &more, Lsn::INVALID))
        .unwrap_err();
    assert!(e.to_string().contains("rewrite"), "{e}");
    let mut bad = append(1, end, &more, Lsn::INVALID);
    bad.h.end_lsn = Lsn(end.0 + 1);
    let e = a.handle_append(&bad).unwrap_err();
    assert!(matches!(e, AcceptorError::BadAppend { .. }), "{e}");
    a.handle_append(&append(1, end, &more, Lsn::INVALID))
        .unwrap();
}

#[test]
fn commit_lsn_is_min_of_proposer_commit_and_flush_and_never_decreases() {
    let env = Env::new();
    let mut a = env.open();
    assert!(vote(&mut a, 1).vote_given);
    a.handle_elected(&elected(1, START, th(&[(1, START)])))
        .unwrap();
    let (wal, pos) = wal_from(START, Lsn::INVALID, 10, 100);
    let split = (pos[5].1.0 - START.0) as usize;
    // The proposer claims commit far ahead: capped by our flush, which is nothing yet.
    a.handle_append(&append(1, START, &wal[..split], pos[9].1))
        .unwrap();
    assert_eq!(a.commit_lsn(), START, "not flushed, not committed here");
    let r = a.flush().unwrap();
    assert_eq!(r.flush_lsn, pos[5].1);
    assert_eq!(r.commit_lsn, pos[5].1, "capped at flush_lsn");
    assert!(r.commit_lsn <= r.flush_lsn);
    // A lower commit from the proposer does not move it back.
    a.handle_append(&append(1, pos[5].1, &wal[split..], pos[1].1))
        .unwrap();
    assert_eq!(a.commit_lsn(), pos[5].1);
    let r = a.flush().unwrap();
    assert_eq!(r.flush_lsn, pos[9].1);
    assert_eq!(
        r.commit_lsn, pos[9].1,
        "the earlier, higher commit now applies"
    );
    a.handle_append(&append(1, pos[9].1, &[], pos[3].1))
        .unwrap();
    assert_eq!(a.flush().unwrap().commit_lsn, pos[9].1);
    // Commit crossing the term start was persisted at once.
    assert!(env.on_disk().commit_lsn >= START);
}

#[test]
fn commit_crossing_the_term_start_is_persisted_immediately() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 4, None);
    // Term 2 starts at the end of our WAL.
    let t2 = pos[3].1;
    assert!(vote(&mut a, 2).vote_given);
    a.handle_elected(&elected(2, t2, th(&[(1, START), (2, t2)])))
        .unwrap();
    let (wal, p2) = wal_from(t2, pos[3].0, 2, 100);
    a.handle_append(&append(2, t2, &wal, pos[2].1)).unwrap();
    a.flush().unwrap();
    assert_eq!(a.commit_lsn(), pos[2].1);
    assert!(
        env.on_disk().commit_lsn < t2,
        "below the term start: kept in memory"
    );
    a.handle_append(&append(2, p2[1].1, &[], p2[0].1)).unwrap();
    assert_eq!(a.commit_lsn(), p2[0].1);
    assert_eq!(
        env.on_disk().commit_lsn,
        p2[0].1,
        "crossed the term start: persisted"
    );
}

#[test]
fn elected_truncates_the_divergent_tail_at_the_common_point() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 10, Some(3));
    // Term 2's proposer knew term 1's WAL only up to record 6.
    let t2 = pos[6].1;
    let history = th(&[(1, START), (2, t2)]);
    assert_eq!(
        TermHistory::find_highest_common_point(a.term_history(), &history, a.flush_lsn()),
        Some(TermLsn::new(1, t2))
    );
    assert!(vote(&mut a, 2).vote_given);
    // A start that is not the common point is refused, and nothing is truncated.
    let e = a
        .handle_elected(&elected(2, pos[7].1, history.clone()))
        .unwrap_err();
    assert!(
        matches!(e, AcceptorError::CommonPointMismatch { .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&t2.to_string()), "{e}");
    assert_eq!(a.flush_lsn(), pos[9].1);
    assert_eq!(a.term_history(), &th(&[(1, START)]));

    a.handle_elected(&elected(2, t2, history.clone())).unwrap();
    assert_eq!(a.flush_lsn(), t2);
    assert_eq!(a.write_lsn(), t2);
    assert_eq!(a.term_history(), &history);
    assert_eq!(env.on_disk().acceptor_state.term_history, history);
    // The new term's WAL continues from there.
    let (wal, p2) = wal_from(t2, pos[6].0, 3, 100);
    a.handle_append(&append(2, t2, &wal, Lsn::INVALID)).unwrap();
    assert_eq!(a.flush().unwrap().flush_lsn, p2[2].1);
    // And survives a restart.
    drop(a);
    let a = env.open();
    assert_eq!(a.flush_lsn(), p2[2].1);
    assert_eq!(a.last_log_term(), 2);
}

#[test]
fn elected_with_diverged_terms_cuts_at_the_end_of_the_common_term() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 6, Some(1));
    // We accepted term 2 from record 3 on; term 3's proposer never saw term 2.
    let t2 = pos[3].1;
    assert!(vote(&mut a, 2).vote_given);
    a.handle_elected(&elected(2, t2, th(&[(1, START), (2, t2)])))
        .unwrap();
    let (wal, p2) = wal_from(t2, pos[3].0, 4, 100);
    a.handle_append(&append(2, t2, &wal, Lsn::INVALID)).unwrap();
    a.flush().unwrap();
    assert_eq!(a.last_log_term(), 2);
    let t3 = pos[5].1; // term 3 started after term 1's record 5 on the other log
    let history = th(&[(1, START), (3, t3)]);
    // Common term 1 ends at t2 in our log and at t3 in theirs: the earlier wins.
    let start =
        TermHistory::find_highest_common_point(a.term_history(), &history, a.flush_lsn()).unwrap();
    assert_eq!(start, TermLsn::new(1, t2));
    assert!(vote(&mut a, 3).vote_given);
    a.handle_elected(&elected(3, t2, history.clone())).unwrap();
    assert_eq!(a.flush_lsn(), t2);
    assert!(a.flush_lsn() < p2[3].1);
    assert_eq!(a.last_log_term(), 1);
    assert_eq!(a.term_history(), &history);
}

#[test]
fn elected_never_truncates_committed_wal() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 6, None);
    let t2 = pos[2].1;
    assert!(vote(&mut a, 2).vote_given);
    a.handle_elected(&elected(2, t2, th(&[(1, START), (2, t2)])))
        .unwrap();
    let (wal, p2) = wal_from(t2, pos[2].0, 4, 100);
    // Term 2's WAL is committed up to its third record.
    a.handle_append(&append(2, t2, &wal, p2[2].1)).unwrap();
    a.flush().unwrap();
    assert_eq!(a.commit_lsn(), p2[2].1);
    // A proposer that never saw term 2 would cut back to t2, below commit_lsn: refused.
    assert!(vote(&mut a, 3).vote_given);
    let e = a
        .handle_elected(&elected(3, t2, th(&[(1, START), (3, pos[5].1)])))
        .unwrap_err();
    assert!(
        matches!(e, AcceptorError::WouldTruncateCommitted { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("never truncated"), "{e}");
    assert_eq!(a.flush_lsn(), p2[3].1, "WAL untouched");
    assert_eq!(a.last_log_term(), 2);
    // Appends in term 3 stay refused: it was never accepted as elected.
    let e = a
        .handle_append(&append(3, p2[3].1, &[], Lsn::INVALID))
        .unwrap_err();
    assert!(matches!(e, AcceptorError::NotElected { .. }), "{e}");
    // The storage refuses on its own as well.
    drop(a);
    let mut a = env.open();
    let e = a.wal.truncate(t2).unwrap_err();
    assert!(matches!(e, StorageError::TruncateBelowCommit { .. }), "{e}");
}

#[test]
fn elected_in_a_lower_term_is_ignored_and_a_higher_one_adopted() {
    let env = Env::new();
    let mut a = env.open();
    bootstrap(&mut a, 2, None);
    assert!(vote(&mut a, 4).vote_given);
    let flush = a.flush_lsn();
    let r = a
        .handle_elected(&elected(3, flush, th(&[(1, START), (3, flush)])))
        .unwrap()
        .unwrap();
    assert_eq!(r.term, 4, "the reply carries our higher term");
    assert_eq!(a.term_history(), &th(&[(1, START)]));
    // Elected in a term we never voted for (the vote came on another connection).
    a.handle_elected(&elected(6, flush, th(&[(1, START), (6, flush)])))
        .unwrap();
    assert_eq!(a.term(), 6);
    assert_eq!(env.on_disk().acceptor_state.term, 6);
    // Malformed histories are refused.
    for bad in [
        th(&[]),
        th(&[(1, START), (5, flush)]),
        th(&[(7, flush), (1, START)]),
    ] {
        let e = a.handle_elected(&elected(7, flush, bad)).unwrap_err();
        assert!(matches!(e, AcceptorError::InvalidHistory { .. }), "{e}");
    }
}

fn member(id: u64) -> Member {
    Member {
        node_id: NodeId(id),
        host: format!("sk{id}"),
        pg_port: 5454,
    }
}

#[test]
fn generation_checks() {
    // Generation 0: no checks.
    let env = Env::new();
    let mut a = env.open();
    let r = a
        .handle_vote_request(&VoteRequest {
            generation: Generation(9),
            term: 1,
        })
        .unwrap();
    assert!(r.vote_given);

    let env = Env::with_mconf(Configuration::new(Generation(2), vec![member(1)]));
    let mut a = env.open();
    let e = a
        .handle_vote_request(&VoteRequest {
            generation: Generation(1),
            term: 1,
        })
        .unwrap_err();
    assert!(matches!(e, AcceptorError::GenerationMismatch { .. }), "{e}");
    assert!(e.to_string().contains("generation 1"), "{e}");
    assert_eq!(env.on_disk().acceptor_state.term, 0, "nothing persisted");
    let mut el = elected(1, START, th(&[(1, START)]));
    el.generation = Generation(3);
    assert!(a.handle_elected(&el).is_err());
    let mut ap = append(1, START, &[], Lsn::INVALID);
    ap.h.generation = Generation(0);
    assert!(a.handle_append(&ap).is_err());
    // A greeting with a higher generation switches; a lower one does not.
    let mut g = greeting(&env);
    g.mconf = Configuration::new(Generation(3), vec![member(1), member(2)]);
    let r = a.handle_greeting(&g).unwrap();
    assert_eq!(r.mconf.generation, Generation(3));
    assert_eq!(env.on_disk().mconf.generation, Generation(3));
    g.mconf = Configuration::new(Generation(1), vec![member(5)]);
    assert_eq!(
        a.handle_greeting(&g).unwrap().mconf.generation,
        Generation(3)
    );
    assert!(
        !a.update_membership(&Configuration::new(Generation(2), vec![]))
            .unwrap()
    );
    assert!(
        a.update_membership(&Configuration::new(Generation(4), vec![member(1)]))
            .unwrap()
    );
    let r = a
        .handle_vote_request(&VoteRequest {
            generation: Generation(4),
            term: 1,
        })
        .unwrap();
    assert!(r.vote_given);
    assert_eq!(r.generation, Generation(4));
}

fn greeting(env: &Env) -> ProposerGreeting {
    ProposerGreeting {
        tenant_id: env.ttid.tenant_id,
        timeline_id: env.ttid.timeline_id,
        mconf: Configuration::empty(),
        pg_version: 150008,
        system_id: SYSID,
        wal_seg_size: SEG,
    }
}

#[test]
fn greeting_checks_the_timeline_and_server() {
    let env = Env::new();
    let mut a = env.open();
    vote(&mut a, 3);
    let r = a.handle_greeting(&greeting(&env)).unwrap();
    assert_eq!((r.node_id, r.term), (NodeId(1), 3));
    assert_eq!(
        env.on_disk().server.pg_version,
        150008,
        "minor version updated"
    );

    let mut g = greeting(&env);
    g.timeline_id = utils::TimelineId::generate();
    let e = a.handle_greeting(&g).unwrap_err();
    assert!(matches!(e, AcceptorError::WrongTimeline { .. }), "{e}");
    let mut g = greeting(&env);
    g.wal_seg_size = 16 * 1024 * 1024;
    assert!(
        a.handle_greeting(&g)
            .unwrap_err()
            .to_string()
            .contains("wal_seg_size")
    );
    let mut g = greeting(&env);
    g.system_id = SYSID + 1;
    assert!(
        a.handle_greeting(&g)
            .unwrap_err()
            .to_string()
            .contains("system_id")
    );
    let mut g = greeting(&env);
    g.pg_version = 160001;
    assert!(
        a.handle_greeting(&g)
            .unwrap_err()
            .to_string()
            .contains("major")
    );
    let mut g = greeting(&env);
    g.system_id = 0;
    a.handle_greeting(&g).unwrap();
}

#[test]
fn unknown_system_id_is_learned_from_the_greeting() {
    let dir = tempfile::tempdir().unwrap();
    let ttid = TenantTimelineId::generate();
    let mut srv = server();
    srv.system_id = 0;
    let state = TimelinePersistentState::new(ttid, Configuration::empty(), srv, SystemTime::now());
    ControlFileStore::create(dir.path(), state, Sync::No).unwrap();
    let mut a = Acceptor::open(dir.path(), NodeId(1), Sync::No).unwrap();
    a.handle_greeting(&ProposerGreeting {
        tenant_id: ttid.tenant_id,
        timeline_id: ttid.timeline_id,
        mconf: Configuration::empty(),
        pg_version: 150007,
        system_id: SYSID,
        wal_seg_size: SEG,
    })
    .unwrap();
    assert_eq!(a.persisted_state().server.system_id, SYSID);
    assert_eq!(a.wal().config().system_id, SYSID);
}

#[test]
fn process_msg_dispatches() {
    let env = Env::new();
    let mut a = env.open();
    let r = a
        .process_msg(&ProposerMessage::Greeting(greeting(&env)))
        .unwrap();
    assert!(matches!(r, Some(AcceptorMessage::Greeting(_))));
    let r = a
        .process_msg(&ProposerMessage::VoteRequest(VoteRequest {
            generation: Generation::NONE,
            term: 1,
        }))
        .unwrap();
    assert!(matches!(
        r,
        Some(AcceptorMessage::VoteResponse(VoteResponse {
            vote_given: true,
            ..
        }))
    ));
    let r = a
        .process_msg(&ProposerMessage::Elected(elected(
            1,
            START,
            th(&[(1, START)]),
        )))
        .unwrap();
    assert!(r.is_none());
    let (wal, pos) = wal_from(START, Lsn::INVALID, 2, 10);
    let r = a
        .process_msg(&ProposerMessage::AppendRequest(append(
            1, START, &wal, pos[0].1,
        )))
        .unwrap();
    assert!(r.is_none());
    assert!(a.flush_due(Instant::now() + crate::wal_storage::FLUSH_INTERVAL));
    let r = a.flush().unwrap();
    assert_eq!((r.flush_lsn, r.commit_lsn, r.term), (pos[1].1, pos[0].1, 1));
}

#[test]
fn positions_are_persisted_lazily_and_bound_wal_removal() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 4, Some(3));
    let commit = pos[3].1;
    assert_eq!(a.commit_lsn(), commit);
    a.update_remote_consistent_lsn(pos[1].1);
    a.update_backup_lsn(pos[0].1);
    a.update_backup_lsn(Lsn::INVALID); // monotonic
    assert_eq!(a.positions().backup_lsn, pos[0].1);
    // Small moves wait for the periodic save.
    assert!(!a.persist_positions_if_needed(false).unwrap());
    assert_eq!(
        a.wal_removal_horizon(false, LAG),
        START,
        "persisted values only"
    );
    assert!(a.persist_positions_if_needed(true).unwrap());
    assert!(
        !a.persist_positions_if_needed(true).unwrap(),
        "nothing changed"
    );
    let s = env.on_disk();
    assert_eq!(
        (s.commit_lsn, s.remote_consistent_lsn, s.backup_lsn),
        (commit, pos[1].1, pos[0].1)
    );
    assert_eq!(a.wal_removal_horizon(false, LAG), pos[1].1);
    assert_eq!(a.wal_removal_horizon(true, LAG), pos[0].1);
    // A position a segment ahead is saved without waiting.
    a.update_remote_consistent_lsn(Lsn(pos[1].1.0 + u64::from(SEG)));
    assert!(a.persist_positions_if_needed(false).unwrap());
    // Everything is in segment 1, which holds the horizon: nothing to remove.
    assert!(a.remove_old_wal(false, LAG).unwrap().is_empty());
}

/// Elects term 1 at START and writes about 3.5 segments of WAL, all committed and flushed;
/// returns the WAL and its end.
fn three_and_a_half_committed_segments(a: &mut Acceptor) -> (Vec<u8>, Lsn) {
    assert!(vote(a, 1).vote_given);
    a.handle_elected(&elected(1, START, th(&[(1, START)])))
        .unwrap();
    let (wal, pos) = wal_from(START, Lsn::INVALID, 120, 30_000);
    let end = pos.last().unwrap().1;
    for (i, chunk) in wal.chunks(128 * 1024).enumerate() {
        let begin = Lsn(START.0 + (i * 128 * 1024) as u64);
        a.handle_append(&append(1, begin, chunk, end)).unwrap();
    }
    assert_eq!(a.flush().unwrap().commit_lsn, end);
    (wal, end)
}

#[test]
fn wal_removal_deletes_segments_below_the_horizon() {
    let env = Env::new();
    let mut a = env.open();
    let (wal, end) = three_and_a_half_committed_segments(&mut a);
    assert_eq!(end.segment_number(u64::from(SEG)), 4);
    // No pageserver has reported: nothing may go.
    a.persist_positions_if_needed(true).unwrap();
    assert!(a.remove_old_wal(false, LAG).unwrap().is_empty());
    a.update_remote_consistent_lsn(Lsn(3 * u64::from(SEG) + 10));
    a.persist_positions_if_needed(true).unwrap();
    assert_eq!(a.remove_old_wal(false, LAG).unwrap(), vec![1, 2]);
    // The reader serves what is left, and says clearly what is gone.
    let from = Lsn(3 * u64::from(SEG));
    let back = a.wal_reader(from).unwrap().read_to_vec(end).unwrap();
    assert_eq!(back, wal[(from.0 - START.0) as usize..]);
    assert!(a.wal_reader(START).unwrap().read_to_vec(end).is_err());
    // And a restart works without the removed segments.
    drop(a);
    let a = env.open();
    assert_eq!(a.flush_lsn(), end);
}

#[test]
fn first_election_at_an_impossible_start_changes_nothing() {
    let env = Env::new();
    let mut a = env.open();
    assert!(vote(&mut a, 1).vote_given);
    let bad = Lsn(START.0 + 4);
    let e = a
        .handle_elected(&elected(1, bad, th(&[(1, bad)])))
        .unwrap_err();
    assert!(e.to_string().contains("not a possible record start"), "{e}");
    let s = env.on_disk();
    assert!(!s.local_start_lsn.is_valid());
    assert!(s.acceptor_state.term_history.is_empty());
    a.handle_elected(&elected(1, START, th(&[(1, START)])))
        .unwrap();
}

#[test]
fn elected_with_an_empty_history_is_an_error_not_a_panic() {
    let env = Env::new();
    let mut a = env.open();
    assert!(vote(&mut a, 1).vote_given);
    let e = a
        .handle_elected(&elected(1, START, TermHistory::empty()))
        .unwrap_err();
    assert!(matches!(e, AcceptorError::InvalidHistory { .. }), "{e}");
    assert!(e.to_string().contains("empty"), "{e}");
    // The acceptor still works afterwards.
    a.handle_elected(&elected(1, START, th(&[(1, START)])))
        .unwrap();
}

#[test]
fn term_bump_persists_and_deposes_the_elected_proposer() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 3, None);
    assert_eq!(a.bump_term(None).unwrap(), (1, 2));
    assert_eq!(env.on_disk().acceptor_state.term, 2);
    assert_eq!(
        a.bump_term(Some(2)).unwrap(),
        (2, 2),
        "not above: no change"
    );
    assert_eq!(a.bump_term(Some(7)).unwrap(), (2, 7));
    // The term-1 proposer now only learns the higher term.
    let end = pos[2].1;
    let r = a
        .handle_append(&append(1, end, &[], end))
        .unwrap()
        .expect("reply with the higher term");
    assert_eq!(r.term, 7);
}

#[test]
fn peer_commit_is_taken_only_with_the_same_last_log_term() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 5, None);
    assert_eq!(a.commit_lsn(), START);
    let peer = NodeId(2);
    // Another last log term: the peer's WAL may differ from ours.
    assert!(
        !a.record_peer_info(peer, 7, pos[4].1, pos[4].1, Lsn::INVALID)
            .unwrap()
    );
    assert_eq!(a.commit_lsn(), START);
    // The same one: commit moves, but never past our flush LSN.
    assert!(
        a.record_peer_info(peer, 1, pos[4].1, Lsn(pos[4].1.0 + 10_000), Lsn::INVALID)
            .unwrap()
    );
    assert_eq!(a.commit_lsn(), pos[4].1);
    // The peer horizon takes the maximum, and never goes back.
    a.record_peer_info(peer, 1, pos[4].1, Lsn::INVALID, pos[3].1)
        .unwrap();
    let p = a.positions();
    assert_eq!(p.peer_horizon_lsn, pos[3].1);
    a.record_peer_info(peer, 1, pos[4].1, Lsn::INVALID, START)
        .unwrap();
    assert_eq!(a.positions(), p, "never backwards");
}

/// Heartbeats are not authenticated: a peer's word never lets WAL go, it can only keep it.
#[test]
fn wal_removal_keeps_what_a_lagging_peer_lacks_and_ignores_peers_horizons() {
    let env = Env::new();
    let mut a = env.open();
    let (_, end) = three_and_a_half_committed_segments(&mut a);
    a.persist_positions_if_needed(true).unwrap();
    // Unlike before, a peer's published remote consistent or backup LSN is not taken.
    a.record_peer_info(NodeId(2), 1, end, end, Lsn::INVALID)
        .unwrap();
    assert_eq!(a.positions().remote_consistent_lsn, START);
    assert!(a.remove_old_wal(false, LAG).unwrap().is_empty());
    // Our own pageserver says it is all durable, but peer 3 was last seen at segment 1.
    let seg = u64::from(SEG);
    a.record_peer_info(NodeId(3), 1, Lsn(seg + 100), Lsn::INVALID, Lsn::INVALID)
        .unwrap();
    a.update_remote_consistent_lsn(end);
    a.persist_positions_if_needed(true).unwrap();
    assert_eq!(a.wal_removal_horizon(false, LAG), Lsn(seg + 100));
    assert!(
        a.remove_old_wal(false, LAG).unwrap().is_empty(),
        "peer 3 needs segment 1"
    );
    // Our own id in a heartbeat (NATS echoes it) is not a peer.
    a.record_peer_info(NodeId(1), 1, START, Lsn::INVALID, Lsn::INVALID)
        .unwrap();
    assert_eq!(a.wal_removal_horizon(false, LAG), Lsn(seg + 100));
    // Beyond the lag bound the lagging peer no longer holds WAL back.
    let small_lag = end.0 - (seg + 100) - 1;
    assert_eq!(a.wal_removal_horizon(false, small_lag), end);
    // It catches up to segment 3: segments 1 and 2 may go.
    a.record_peer_info(NodeId(3), 1, Lsn(3 * seg + 10), Lsn::INVALID, Lsn::INVALID)
        .unwrap();
    assert_eq!(a.remove_old_wal(false, LAG).unwrap(), vec![1, 2]);
}

#[test]
fn pipelined_flush_reports_only_what_its_ticket_covered() {
    let env = Env::new();
    let mut a = env.open();
    assert!(vote(&mut a, 1).vote_given);
    a.handle_elected(&elected(1, START, th(&[(1, START)])))
        .unwrap();
    let (wal, pos) = wal_from(START, Lsn::INVALID, 20, 100);
    let (mid, end) = (pos[9].1, pos[19].1);
    let cut = (mid.0 - START.0) as usize;
    a.handle_append(&append(1, START, &wal[..cut], Lsn::INVALID))
        .unwrap();
    let t1 = a.begin_flush().unwrap().expect("initialized");
    assert_eq!(t1.upto(), mid);
    // More WAL (and the proposer's commit) arrive while the first fdatasync runs.
    a.handle_append(&append(1, mid, &wal[cut..], end)).unwrap();
    let synced = t1.sync();
    let r = a.complete_flush(Some(t1), synced).unwrap();
    assert_eq!((r.flush_lsn, r.commit_lsn), (mid, mid));
    assert!(
        a.wal().has_unflushed(),
        "the second append is not durable yet"
    );
    let t2 = a.begin_flush().unwrap().unwrap();
    let synced = t2.sync();
    let r = a.complete_flush(Some(t2), synced).unwrap();
    assert_eq!((r.flush_lsn, r.commit_lsn), (end, end));
    assert!(!a.wal().has_unflushed());
}

#[test]
fn flush_ticket_from_before_a_truncation_is_ignored() {
    let env = Env::new();
    let mut a = env.open();
    let pos = bootstrap(&mut a, 20, None);
    let end = pos[19].1;
    // More WAL, a ticket for it, then a new term truncates back into the older WAL.
    let (more, more_pos) = wal_from(end, pos[19].0, 5, 100);
    a.handle_append(&append(
        1,
        end,
        &more[..(more_pos[4].1.0 - end.0) as usize],
        Lsn::INVALID,
    ))
    .unwrap();
    let stale = a.begin_flush().unwrap().unwrap();
    assert_eq!(stale.upto(), more_pos[4].1);
    assert!(vote(&mut a, 2).vote_given);
    let cut = pos[9].1;
    a.handle_elected(&elected(2, cut, th(&[(1, START), (2, cut)])))
        .unwrap();
    assert_eq!(a.flush_lsn(), cut);
    let synced = stale.sync();
    let r = a.complete_flush(Some(stale), synced).unwrap();
    assert_eq!(
        r.flush_lsn, cut,
        "a ticket from before the truncation moves nothing"
    );
}
