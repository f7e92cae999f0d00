//! Crash tests of the safekeeper's durable core.
//!
//! * `kill_9_during_appends_keeps_a_valid_prefix`: a child process (this test binary,
//!   re-executed with an environment variable) plays proposer against one timeline: it wins
//!   an election, streams a fixed WAL stream in random-sized appends, flushes now and then,
//!   and prints every flush LSN it was told. The parent SIGKILLs it at random moments,
//!   several times, and after each kill reopens the timeline and checks: it loads; its WAL
//!   is exactly a prefix of the stream (synthesized first-segment prefix included); the
//!   flush LSN is a record boundary of the stream and not below any flush LSN the child
//!   reported (acknowledged WAL is never lost); commit_lsn ≤ flush_lsn.
//! * `corrupt_control_file_breaks_only_its_timeline`: damaged control files make their
//!   timelines fail to load with clear errors, while the others load and keep working.
//!
//! The child writes at most [`STREAM_LEN`] bytes of WAL in total and stops by itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use postgres_ffi::decoder::WalDecoderConfig;
use postgres_ffi::v15::{RM_XLOG_ID, XLOG_NOOP};
use postgres_ffi::wal_generate::{WalWriter, WalWriterConfig, XLogRecordBuilder};
use postgres_ffi::{PgMajorVersion, WalStreamDecoder};
use rand::{Rng, SeedableRng};
use safekeeper::SafeKeeperConf;
use safekeeper::acceptor::Acceptor;
use safekeeper::control_file::{CONTROL_FILE_NAME, TimelinePersistentState};
use safekeeper::timeline::{Timeline, TimelineError, create_timeline, load_all_timelines};
use safekeeper::wal_storage::synthesize_prefix;
use safekeeper_api::ServerInfo;
use safekeeper_api::membership::{Configuration, Generation};
use safekeeper_api::proto::{AppendRequest, AppendRequestHeader, ProposerElected, VoteRequest};
use safekeeper_api::term::{TermHistory, TermLsn};
use utils::{Lsn, NodeId, TenantTimelineId};

const SEG: u64 = 1024 * 1024;
const SYSID: u64 = 0xC0FFEE;
/// The timeline starts mid-page in segment 3.
const START: Lsn = Lsn(3 * SEG + 5 * 8192 + 312);
/// The child never writes more WAL than this in total.
const STREAM_LEN: usize = 40 * 1024 * 1024;
const CHILD_ENV: &str = "STRATA_SK_CRASH_CHILD";

fn writer_config() -> WalWriterConfig {
    WalWriterConfig {
        version: PgMajorVersion::V15,
        seg_size: SEG,
        system_id: SYSID,
        timeline: 1,
    }
}

/// The fixed WAL stream from START, the same in parent and child.
struct Stream {
    /// The bytes from START.
    bytes: Vec<u8>,
    /// Every record's end LSN.
    ends: Vec<Lsn>,
    /// `[from, to)`: whole pages after an XLOG_SWITCH record, up to the segment end. They
    /// carry no WAL; after a crash they may hold zeros instead of the empty pages sent (the
    /// decoder, like PostgreSQL, never reads them).
    switch_tails: Vec<(Lsn, Lsn)>,
}

/// Records of varied sizes, some crossing pages and segments, and an occasional
/// XLOG_SWITCH.
fn stream() -> Stream {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5AFE);
    let mut w = WalWriter::new(writer_config(), START, Lsn::INVALID);
    let mut ends = Vec::new();
    let mut switch_tails = Vec::new();
    loop {
        let end = if rng.random_range(0..4000) == 0 {
            let (start, end) = w.switch();
            // The 24-byte record, and a page header if it crosses a page, end before this.
            switch_tails.push((Lsn((start.0 + 48).next_multiple_of(8192)), end));
            end
        } else {
            let size = if rng.random_range(0..50) == 0 {
                rng.random_range(20_000..300_000)
            } else {
                rng.random_range(0..3000)
            };
            let fill = rng.random::<u8>();
            w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&vec![fill; size]))
                .1
        };
        if (end.0 - START.0) as usize > STREAM_LEN {
            break;
        }
        ends.push(end);
    }
    let last = *ends.last().expect("records");
    let mut bytes = w.into_bytes();
    bytes.truncate((last.0 - START.0) as usize);
    assert!(
        !switch_tails.is_empty(),
        "the stream should exercise XLOG_SWITCH"
    );
    Stream {
        bytes,
        ends,
        switch_tails,
    }
}

/// Checks that `back` (the WAL from START) equals the stream's first bytes, page by page,
/// except that a page of a switch tail may also be all zeros.
fn assert_stream_prefix(back: &[u8], s: &Stream) {
    let mut pos = START;
    let end = Lsn(START.0 + back.len() as u64);
    while pos < end {
        let next = Lsn((pos.0 + 1).next_multiple_of(8192)).min(end);
        let (from, to) = ((pos.0 - START.0) as usize, (next.0 - START.0) as usize);
        if back[from..to] != s.bytes[from..to] {
            let in_tail = s.switch_tails.iter().any(|&(a, b)| a <= pos && next <= b);
            assert!(
                in_tail && back[from..to].iter().all(|&b| b == 0),
                "WAL is not a prefix of the stream: page at {pos} differs (WAL read up to {end})"
            );
        }
        pos = next;
    }
}

fn conf(datadir: &Path, no_sync: bool) -> SafeKeeperConf {
    SafeKeeperConf {
        datadir: datadir.to_path_buf(),
        my_id: NodeId(1),
        no_sync,
        max_peer_lag: safekeeper::DEFAULT_MAX_PEER_LAG,
    }
}

fn new_state(ttid: TenantTimelineId) -> TimelinePersistentState {
    TimelinePersistentState::new(
        ttid,
        Configuration::empty(),
        ServerInfo {
            pg_version: 150007,
            system_id: SYSID,
            wal_seg_size: SEG as u32,
        },
        SystemTime::now(),
    )
}

/// Wins an election in the next term on `a`, continuing from its flush LSN (or START).
fn elect(a: &mut Acceptor) -> u64 {
    let term = a.term() + 1;
    let r = a
        .handle_vote_request(&VoteRequest {
            generation: Generation::NONE,
            term,
        })
        .expect("vote");
    assert!(r.vote_given);
    let start = if r.flush_lsn.is_valid() {
        r.flush_lsn
    } else {
        START
    };
    let mut history = r.term_history.0.clone();
    history.push(TermLsn::new(term, start));
    let out = a
        .handle_elected(&ProposerElected {
            generation: Generation::NONE,
            term,
            start_streaming_at: start,
            term_history: TermHistory(history),
        })
        .expect("elected");
    assert!(out.is_none());
    term
}

fn append(term: u64, begin: Lsn, data: &[u8], commit: Lsn) -> AppendRequest {
    AppendRequest {
        h: AppendRequestHeader {
            generation: Generation::NONE,
            term,
            begin_lsn: begin,
            end_lsn: Lsn(begin.0 + data.len() as u64),
            commit_lsn: commit,
            truncate_lsn: Lsn::INVALID,
        },
        wal_data: Bytes::copy_from_slice(data),
    }
}

/// Child side of [`kill_9_during_appends_keeps_a_valid_prefix`]: a no-op that passes
/// unless the environment variable names a data directory and timeline.
#[test]
fn crash_child_proposer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split(';');
    let (Some(datadir), Some(ttid), Some(no_sync)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let conf = conf(Path::new(datadir), no_sync == "1");
    let ttid: TenantTimelineId = ttid.parse().expect("ttid");
    let wal = stream().bytes;
    let end = Lsn(START.0 + wal.len() as u64);
    let mut t = Timeline::load(&conf, ttid).expect("load");
    let a = &mut t.acceptor;
    let term = elect(a);
    let mut pos = a.write_lsn();
    let mut commit = a.flush_lsn();
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(std::process::id()));
    println!("READY {pos}");
    // Pace the stream (about 16 MiB/s) so that kills land all along it.
    let started = Instant::now();
    let mut sent = 0u64;
    while pos < end {
        let budget = started.elapsed().as_secs_f64() * 16.0 * 1024.0 * 1024.0;
        if sent as f64 > budget {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let n = rng
            .random_range(1..=128 * 1024)
            .min((end.0 - pos.0) as usize);
        let off = (pos.0 - START.0) as usize;
        a.handle_append(&append(term, pos, &wal[off..off + n], commit))
            .expect("append");
        pos = Lsn(pos.0 + n as u64);
        sent += n as u64;
        if rng.random_range(0..4) == 0 || a.flush_due(Instant::now()) {
            let r = a.flush().expect("flush");
            // A quorum of one: what is flushed is committed.
            commit = r.flush_lsn;
            println!("FLUSHED {}", r.flush_lsn);
            a.persist_positions_if_needed(false).expect("persist");
        }
    }
    let r = a.flush().expect("flush");
    println!("FLUSHED {}", r.flush_lsn);
    println!("DONE");
}

/// Reads the timeline's WAL from its first segment's start to its flush LSN and checks it
/// against the stream; returns the flush LSN.
fn check_timeline(conf: &SafeKeeperConf, ttid: TenantTimelineId, s: &Stream) -> Lsn {
    let ends = &s.ends;
    let t = Timeline::load(conf, ttid).unwrap_or_else(|e| panic!("timeline must load: {e}"));
    let a = &t.acceptor;
    let flush = a.flush_lsn();
    assert_eq!(a.write_lsn(), flush, "no torn tail after opening");
    assert!(
        flush == START || ends.binary_search(&flush).is_ok(),
        "flush_lsn {flush} is not a record boundary"
    );
    assert!(
        a.commit_lsn() <= flush,
        "commit_lsn {} above flush_lsn {flush}",
        a.commit_lsn()
    );
    let seg_start = START.segment_start(SEG);
    let back = a
        .wal_reader(seg_start)
        .expect("reader")
        .read_to_vec(flush)
        .expect("read WAL");
    let prefix_len = (START.0 - seg_start.0) as usize;
    assert_eq!(
        back[..prefix_len],
        synthesize_prefix(writer_config(), START)
    );
    assert_stream_prefix(&back[prefix_len..], s);
    // And it decodes, record by record, to exactly the stream's boundaries.
    let mut decoder = WalStreamDecoder::new(
        START,
        WalDecoderConfig {
            version: PgMajorVersion::V15,
            seg_size: SEG,
            system_id: Some(SYSID),
        },
    );
    decoder.feed_bytes(&back[prefix_len..]);
    let mut n = 0;
    while let Some((_, end, _)) = decoder.poll_decode().expect("valid WAL") {
        assert_eq!(end, ends[n]);
        n += 1;
    }
    assert_eq!(n, ends.partition_point(|&e| e <= flush));
    flush
}

#[test]
fn kill_9_during_appends_keeps_a_valid_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let datadir = dir.path().to_path_buf();
    let ttid = TenantTimelineId::generate();
    create_timeline(&conf(&datadir, false), new_state(ttid)).expect("create");
    let s = stream();
    let ends = &s.ends;
    let exe = std::env::current_exe().expect("exe");
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(std::process::id()));
    let mut acked = Lsn::INVALID;
    let mut kills = 0;
    let mut finished = false;
    for round in 0..8 {
        let no_sync = round % 2 == 1;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_proposer", "--nocapture"])
            .env(
                CHILD_ENV,
                format!("{};{ttid};{}", datadir.display(), u8::from(no_sync)),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let seen = Arc::new(Mutex::new((false, Lsn::INVALID, false)));
        let reader = {
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut s = seen.lock().expect("lock");
                    if line.starts_with("READY") {
                        s.0 = true;
                    } else if let Some(lsn) = line.strip_prefix("FLUSHED ") {
                        s.1 = s.1.max(lsn.parse().expect("lsn"));
                    } else if line == "DONE" {
                        s.2 = true;
                    }
                }
            })
        };
        // Wait until the child streams, then kill it at a random moment.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !seen.lock().expect("lock").0 {
            assert!(Instant::now() < deadline, "child never got ready");
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(5..300)));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let status = child.wait().expect("wait");
        reader.join().expect("reader");
        let (_, reported, done) = *seen.lock().expect("lock");
        acked = acked.max(reported);
        let flush = check_timeline(&conf(&datadir, true), ttid, &s);
        assert!(
            flush >= acked,
            "round {round}: flush_lsn {flush} after restart is below the acknowledged {acked}"
        );
        eprintln!(
            "round {round}: killed={} flush_lsn={flush}",
            status.code().is_none()
        );
        if done {
            assert!(status.success(), "child failed: {status}");
            finished = true;
            break;
        }
    }
    assert!(
        kills >= 5,
        "only {kills} kills landed: the test proved little"
    );
    assert!(acked > START, "the child never flushed anything");
    if finished {
        let end = *ends.last().expect("ends");
        assert_eq!(check_timeline(&conf(&datadir, true), ttid, &s), end);
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x5A;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn corrupt_control_file_breaks_only_its_timeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = conf(dir.path(), true);
    let ttids: Vec<TenantTimelineId> = (0..4).map(|_| TenantTimelineId::generate()).collect();
    let Stream {
        bytes: wal, ends, ..
    } = stream();
    let some_wal_end = ends[20];
    let mut dirs: Vec<PathBuf> = Vec::new();
    for &ttid in &ttids {
        let mut t = create_timeline(&conf, new_state(ttid)).expect("create");
        let term = elect(&mut t.acceptor);
        let len = (some_wal_end.0 - START.0) as usize;
        t.acceptor
            .handle_append(&append(term, START, &wal[..len], some_wal_end))
            .expect("append");
        t.acceptor.flush().expect("flush");
        t.acceptor
            .persist_positions_if_needed(true)
            .expect("persist");
        dirs.push(t.dir.clone());
    }
    // Damage three of them in different ways; leave one intact.
    let cf = |i: usize| dirs[i].join(CONTROL_FILE_NAME);
    flip_byte(&cf(0), 40); // inside the body: checksum mismatch
    flip_byte(&cf(1), 0); // magic
    let len = std::fs::metadata(cf(2)).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(cf(2))
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");

    let mut loaded = load_all_timelines(&conf).expect("load all");
    assert_eq!(
        loaded.timelines.keys().copied().collect::<Vec<_>>(),
        vec![ttids[3]]
    );
    assert_eq!(loaded.broken.len(), 3);
    for (i, want) in [(0, "checksum mismatch"), (1, "bad magic"), (2, "truncated")] {
        let e: &TimelineError = &loaded.broken[&ttids[i]];
        let msg = e.to_string();
        assert!(msg.contains(want), "timeline {i}: {msg}");
        assert!(
            msg.contains(&cf(i).display().to_string()),
            "names the file: {msg}"
        );
        assert!(
            msg.contains(&ttids[i].to_string()),
            "names the timeline: {msg}"
        );
    }
    // The intact timeline keeps serving: it has its WAL and accepts a new term's appends.
    let t = loaded.timelines.get_mut(&ttids[3]).expect("loaded");
    assert_eq!(t.acceptor.flush_lsn(), some_wal_end);
    let term = elect(&mut t.acceptor);
    let from = (some_wal_end.0 - START.0) as usize;
    let to = (ends[40].0 - START.0) as usize;
    t.acceptor
        .handle_append(&append(term, some_wal_end, &wal[from..to], Lsn::INVALID))
        .expect("append");
    assert_eq!(t.acceptor.flush().expect("flush").flush_lsn, ends[40]);
}
