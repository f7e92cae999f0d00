//! Crash tests of the real `safekeeper` binary.
//!
//! * `kill_9_during_appends_leaves_a_valid_prefix`: a proposer streams WAL in appends of
//!   random sizes while the safekeeper (with fsync on) is SIGKILLed at random moments,
//!   several times. After
//!   each restart a new term is elected, and the timeline's WAL, read back over
//!   `START_REPLICATION`, must be exactly a prefix of what was sent, ending at a record
//!   boundary not below any flush LSN the safekeeper acknowledged before the kill.
//! * `corrupt_control_file_breaks_only_that_timeline`: a damaged control file makes its
//!   timeline fail to load with an error naming the file, visible in the HTTP API and on the
//!   libpq port, while another timeline keeps serving WAL.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use safekeeper_api::proto::MAX_WAL_PAYLOAD;
use utils::{Lsn, TenantTimelineId};

const START: Lsn = Lsn(SEG + 3 * 8192 + 200);
/// Total WAL sent over the whole test.
const STREAM_RECORDS: usize = 24_000;
const KILLS: usize = 4;

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_appends_leaves_a_valid_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut sk = Sk::start(&dir.path().join("sk"), &[]);
    let ttid = TenantTimelineId::generate();
    let (wal, ends) = generate_wal(START, STREAM_RECORDS, 400);
    let stream_end = *ends.last().unwrap();
    let prefix = safekeeper::wal_storage::synthesize_prefix(writer_config(), START);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC4A5);

    let mut history: Vec<(u64, Lsn)> = Vec::new();
    let mut acked = Lsn::INVALID;
    for round in 0..=KILLS {
        let addr = sk.pg_addr();
        let mut p = Proposer::connect(&addr, ttid).await.unwrap();
        let g = p.greet().await;
        let term = g.term + 1;
        let vote = p.vote(term).await;
        assert!(vote.vote_given);
        let flush = vote.flush_lsn;
        if round > 0 {
            // What survived the kill: at least everything acknowledged, a record boundary,
            // and exactly the bytes sent.
            assert!(
                flush >= acked,
                "round {round}: flush {flush} below acknowledged {acked}"
            );
            assert!(
                ends.contains(&flush),
                "round {round}: flush {flush} not a record boundary"
            );
            let back = read_wal_term(&addr, ttid, START.segment_start(SEG), flush, term).await;
            let n = (flush.0 - START.0) as usize;
            assert_eq!(back.len(), prefix.len() + n);
            assert!(
                back[..prefix.len()] == prefix[..],
                "round {round}: prefix differs"
            );
            assert!(
                back[prefix.len()..] == wal[..n],
                "round {round}: WAL differs from what was sent"
            );
        }
        let start = if flush.is_valid() { flush } else { START };
        history.push((term, start));
        p.send(&Proposer::elected(term, start, &history))
            .await
            .unwrap();
        if round == KILLS {
            // The last round finishes the stream.
            let off = (start.0 - START.0) as usize;
            let r = p
                .stream(term, start, &wal[off..], Lsn::INVALID, stream_end)
                .await;
            assert_eq!(r.last().unwrap().flush_lsn, stream_end);
            break;
        }

        // Stream in random-sized appends; kill the safekeeper at a random moment.
        let pid = sk.child.id();
        let delay = Duration::from_millis(rng.random_range(1..60));
        let killer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            kill9(pid);
        });
        let mut pos = start;
        let mut alive = true;
        while alive && pos < stream_end {
            let off = (pos.0 - START.0) as usize;
            let len = rng.random_range(1..=MAX_WAL_PAYLOAD).min(wal.len() - off);
            let msg = Proposer::append(term, pos, &wal[off..off + len], Lsn::INVALID);
            if p.send(&msg).await.is_err() {
                break;
            }
            pos = Lsn(pos.0 + len as u64);
            // Collect whatever acknowledgements are ready, without waiting long.
            loop {
                match tokio::time::timeout(Duration::from_millis(1), p.recv()).await {
                    Err(_) => break,
                    Ok(Ok(safekeeper_api::AcceptorMessage::AppendResponse(r))) => {
                        acked = acked.max(r.flush_lsn)
                    }
                    Ok(Ok(other)) => panic!("unexpected {other:?}"),
                    Ok(Err(_)) => {
                        alive = false;
                        break;
                    }
                }
            }
        }
        killer.await.unwrap();
        // Drain acknowledgements that arrived before the connection died.
        while let Ok(Ok(safekeeper_api::AcceptorMessage::AppendResponse(r))) =
            tokio::time::timeout(Duration::from_millis(200), p.recv()).await
        {
            acked = acked.max(r.flush_lsn);
        }
        drop(p);
        sk.restart();
    }
    assert!(sk.is_running());
}

/// Reads `[start, end)` with a term-bound stream (up to flush, not commit).
async fn read_wal_term(
    addr: &str,
    ttid: TenantTimelineId,
    start: Lsn,
    end: Lsn,
    term: u64,
) -> Vec<u8> {
    use pq_proto::replication::ReplicationMessage;
    let mut c = connect(addr, ttid, None).await.unwrap();
    c.start_copy_both(&format!(
        "START_REPLICATION PHYSICAL {start} (term='{term}')"
    ))
    .await
    .unwrap();
    let (mut r, _w) = c.into_split();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = tokio::time::timeout(Duration::from_secs(30), r.read_copy_data(1 << 20))
            .await
            .expect("WAL within 30 s")
            .unwrap()
            .expect("stream open");
        if let ReplicationMessage::XLogData(x) = ReplicationMessage::decode(&data).unwrap() {
            assert_eq!(x.wal_start, pos);
            pos = Lsn(pos.0 + x.data.len() as u64);
            out.extend_from_slice(&x.data);
        }
    }
    assert_eq!(pos, end);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_control_file_breaks_only_that_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let mut sk = Sk::start(&dir.path().join("sk"), &["--no-sync"]);
    let addr = sk.pg_addr();
    let (all, all_ends) = generate_wal(START, 400, 500);
    let end = all_ends[299];
    let wal = &all[..(end.0 - START.0) as usize];
    let good = TenantTimelineId::generate();
    let bad = TenantTimelineId::generate();
    for ttid in [good, bad] {
        let mut p = Proposer::connect(&addr, ttid).await.unwrap();
        p.greet().await;
        assert!(p.vote(1).await.vote_given);
        p.send(&Proposer::elected(1, START, &[(1, START)]))
            .await
            .unwrap();
        p.stream(1, START, wal, Lsn::INVALID, end).await;
    }
    let control = sk
        .datadir
        .join(bad.tenant_id.to_string())
        .join(bad.timeline_id.to_string())
        .join("safekeeper.control");
    let mut bytes = std::fs::read(&control).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    sk.kill9();
    std::fs::write(&control, &bytes).unwrap();
    sk.restart();

    // The HTTP API lists it as broken, with the error, and refuses its status.
    let (code, body) = sk.http("GET", "/v1/tenant/timeline", None);
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["timelines"].as_array().unwrap().len(), 1);
    assert_eq!(
        list["timelines"][0]["timeline_id"],
        good.timeline_id.to_string()
    );
    let broken = &list["broken"][0];
    assert_eq!(broken["timeline_id"], bad.timeline_id.to_string());
    let error = broken["error"].as_str().unwrap();
    assert!(error.contains("safekeeper.control"), "{error}");
    let (code, body) = sk.http(
        "GET",
        &format!("/v1/tenant/{}/timeline/{}", bad.tenant_id, bad.timeline_id),
        None,
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("broken"), "{body}");
    assert!(
        sk.log_text().contains("will not be served"),
        "logged at start"
    );

    // On the libpq port: an error for the broken one, service for the other.
    let mut c = connect(&addr, bad, None).await.unwrap();
    match c.simple_query("TIMELINE_STATUS").await {
        Err(pq_proto::ProtocolError::Server(e)) => assert!(e.message.contains("broken"), "{e}"),
        other => panic!("{other:?}"),
    }
    let mut p = Proposer::connect(&addr, bad).await.unwrap();
    p.send(&p.greeting()).await.unwrap();
    match p.recv().await {
        Err(pq_proto::ProtocolError::Server(e)) => assert!(e.message.contains("broken"), "{e}"),
        other => panic!("{other:?}"),
    }

    let mut p = Proposer::connect(&addr, good).await.unwrap();
    p.greet().await;
    let v = p.vote(2).await;
    assert_eq!(v.flush_lsn, end);
    let more = &all[wal.len()..];
    let more_end = *all_ends.last().unwrap();
    p.send(&Proposer::elected(2, end, &[(1, START), (2, end)]))
        .await
        .unwrap();
    let r = p.stream(2, end, more, more_end, more_end).await;
    assert_eq!(r.last().unwrap().flush_lsn, more_end);

    // Deleting the broken timeline removes it.
    let (code, body) = sk.http(
        "DELETE",
        &format!("/v1/tenant/{}/timeline/{}", bad.tenant_id, bad.timeline_id),
        None,
    );
    assert_eq!((code, body.as_str()), (200, "{\"existed\":true}"));
    assert!(!control.exists());
}
