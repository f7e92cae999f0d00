//! The libpq port of the real `safekeeper` binary, driven by a minimal proposer over TCP:
//! the WAL push pipeline end to end (greeting, vote, election, pipelined appends, flush
//! and commit reported in AppendResponses, WAL read back with START_REPLICATION), and bad
//! input of every kind, each answered with an error while the process and the other
//! timelines carry on.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pq_proto::ProtocolError;
use pq_proto::replication::ReplicationMessage;
use safekeeper_api::proto::MAX_WAL_PAYLOAD;
use safekeeper_api::{AcceptorMessage, ProposerMessage};
use utils::auth::{Claims, Scope};
use utils::{Lsn, TenantTimelineId};

/// Mid-page in the second segment.
const START: Lsn = Lsn(SEG + 5 * 8192 + 312);

fn server_error(r: Result<impl std::fmt::Debug, ProtocolError>) -> String {
    match r {
        Err(ProtocolError::Server(e)) => e.message,
        other => panic!("expected an error from the server, got {other:?}"),
    }
}

/// Elects `term` on a fresh timeline at START.
async fn bootstrap(addr: &str, ttid: TenantTimelineId, term: u64) -> Proposer {
    let mut p = Proposer::connect(addr, ttid).await.unwrap();
    p.greet().await;
    assert!(p.vote(term).await.vote_given);
    p.send(&Proposer::elected(term, START, &[(term, START)]))
        .await
        .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_push_commit_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let sk = Sk::start(&dir.path().join("sk"), &["--no-sync"]);
    let addr = sk.pg_addr();
    let ttid = TenantTimelineId::generate();

    let mut p = Proposer::connect(&addr, ttid).await.unwrap();
    let g = p.greet().await;
    assert_eq!((g.node_id.0, g.term), (1, 0));
    let v = p.vote(1).await;
    assert!(v.vote_given);
    assert_eq!(v.flush_lsn, Lsn::INVALID);
    p.send(&Proposer::elected(1, START, &[(1, START)]))
        .await
        .unwrap();

    let (wal, ends) = generate_wal(START, 3000, 1000);
    let end = *ends.last().unwrap();
    let responses = p.stream(1, START, &wal, Lsn::INVALID, end).await;
    let mut last = Lsn::INVALID;
    for r in &responses {
        assert_eq!(r.term, 1);
        assert!(r.flush_lsn >= last, "flush LSN never goes back");
        assert!(
            ends.contains(&r.flush_lsn),
            "flush LSN {} is a record boundary",
            r.flush_lsn
        );
        last = r.flush_lsn;
    }
    assert!(
        responses.len() < wal.len() / MAX_WAL_PAYLOAD,
        "flushes are batched: {} responses for {} appends",
        responses.len(),
        wal.len().div_ceil(MAX_WAL_PAYLOAD)
    );
    // A heartbeat carries the commit LSN.
    p.send(&Proposer::append(1, end, &[], end)).await.unwrap();
    // A response to an earlier append may still be on its way (flush at `end`, the old
    // commit LSN): read on until the heartbeat's own answer (each read is bounded).
    let r = loop {
        let r = p.wait_flush(end).await.pop().unwrap();
        if r.commit_lsn == end {
            break r;
        }
    };
    assert_eq!((r.flush_lsn, r.commit_lsn), (end, end));

    // The HTTP status shows the proposer while it is connected.
    let (code, body) = sk.http(
        "GET",
        &format!(
            "/v1/tenant/{}/timeline/{}",
            ttid.tenant_id, ttid.timeline_id
        ),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["walproposers"][0]["phase"], "streaming");
    assert_eq!(status["commit_lsn"], end.to_string());

    // TIMELINE_STATUS and IDENTIFY_SYSTEM on another connection.
    let mut c = connect(&addr, ttid, None).await.unwrap();
    let st = c.simple_query("TIMELINE_STATUS").await.unwrap();
    assert_eq!(st.columns, ["flush_lsn", "commit_lsn"]);
    assert_eq!(st.rows, [[Some(end.to_string()), Some(end.to_string())]]);
    let id = c.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    assert_eq!(
        id.rows,
        [[
            Some(SYSID.to_string()),
            Some("1".to_string()),
            Some(end.to_string()),
            None
        ]]
    );
    c.simple_query("SET datestyle TO ISO").await.unwrap();
    let show = c.simple_query("SHOW wal_segment_size").await.unwrap();
    assert_eq!(show.rows, [[Some("16MB".to_string())]]);

    // The WAL reads back from the segment start: synthesized prefix, then the stream.
    let seg_start = START.segment_start(SEG);
    let back = read_wal(&addr, ttid, seg_start, end).await;
    let prefix = safekeeper::wal_storage::synthesize_prefix(writer_config(), START);
    assert_eq!(back.len(), prefix.len() + wal.len());
    assert_eq!(&back[..prefix.len()], &prefix[..]);
    assert!(
        back[prefix.len()..] == wal[..],
        "streamed WAL equals what was pushed"
    );

    // A term-bound stream ends when the term changes.
    let mut c = connect(&addr, ttid, None).await.unwrap();
    c.start_copy_both(&format!("START_REPLICATION PHYSICAL {START} (term='1')"))
        .await
        .unwrap();
    let (mut r, _w) = c.into_split();
    let first = r.read_copy_data(1 << 20).await.unwrap().unwrap();
    assert!(matches!(
        ReplicationMessage::decode(&first).unwrap(),
        ReplicationMessage::XLogData(_)
    ));
    let (code, body) = sk.http(
        "POST",
        &format!(
            "/v1/tenant/{}/timeline/{}/term_bump",
            ttid.tenant_id, ttid.timeline_id
        ),
        Some("{}"),
    );
    assert_eq!(code, 200, "{body}");
    let err = loop {
        match r.read_copy_data(1 << 20).await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(server_error(err).contains("term changed"));

    // The deposed proposer learns the higher term.
    p.send(&Proposer::append(1, end, &[], end)).await.unwrap();
    match p.recv().await.unwrap() {
        AcceptorMessage::AppendResponse(r) => assert_eq!(r.term, 2),
        other => panic!("{other:?}"),
    }
    drop(p);
    drop(sk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_and_other_timelines_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut sk = Sk::start(&dir.path().join("sk"), &["--no-sync"]);
    let addr = sk.pg_addr();

    // A healthy timeline that keeps streaming throughout.
    let good_ttid = TenantTimelineId::generate();
    let mut good = bootstrap(&addr, good_ttid, 1).await;
    let (wal, ends) = generate_wal(START, 400, 1000);
    let mid = ends.len() / 2;
    let half = (ends[mid].0 - START.0) as usize;
    good.stream(1, START, &wal[..half], Lsn::INVALID, ends[mid])
        .await;

    // Malformed proposer message.
    let ttid = TenantTimelineId::generate();
    let mut p = Proposer::connect(&addr, ttid).await.unwrap();
    p.send_raw(b"zzzz").await.unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains("proposer message"), "{e}");

    // Something other than a greeting first.
    let mut p = Proposer::connect(&addr, ttid).await.unwrap();
    p.send(&ProposerMessage::VoteRequest(
        safekeeper_api::proto::VoteRequest {
            generation: safekeeper_api::Generation::NONE,
            term: 1,
        },
    ))
    .await
    .unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains("expecting ProposerGreeting"), "{e}");

    // A greeting for another timeline than the connection's.
    let mut p = Proposer::connect(&addr, ttid).await.unwrap();
    p.ttid = TenantTimelineId::generate();
    p.send(&p.greeting()).await.unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains("connection was opened for"), "{e}");

    // An oversized message.
    let mut p = Proposer::connect(&addr, ttid).await.unwrap();
    p.send_raw(&vec![b'a'; 300 * 1024]).await.unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains("exceeds the limit"), "{e}");

    // Unknown timeline without creation.
    let mut p = Proposer::connect_with(
        &addr,
        ttid,
        None,
        "START_WAL_PUSH (proto_version '3', allow_timeline_creation 'false')",
    )
    .await
    .unwrap();
    p.send(&p.greeting()).await.unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains("not found"), "{e}");

    // Protocol version 2, unknown timeline for a command, a bad command: errors, the
    // session goes on.
    let mut c = connect(&addr, ttid, None).await.unwrap();
    let e = server_error(c.simple_query("START_WAL_PUSH").await);
    assert!(e.contains("version 2"), "{e}");
    let e = server_error(c.simple_query("IDENTIFY_SYSTEM").await);
    assert!(e.contains("not found"), "{e}");
    let e = server_error(c.simple_query("START_REPLICATION PHYSICAL 0/XYZ").await);
    assert!(e.contains("0/XYZ"), "{e}");
    c.simple_query("SET application_name = 'x'").await.unwrap();

    // Election with an empty history; out-of-order appends; appends before election.
    let mut p = Proposer::connect(&addr, ttid).await.unwrap();
    p.greet().await;
    assert!(p.vote(1).await.vote_given);
    p.send(&Proposer::elected(1, START, &[])).await.unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains("empty"), "{e}");

    let mut p = Proposer::connect(&addr, ttid).await.unwrap();
    p.greet().await;
    p.send(&Proposer::append(1, START, &wal[..8192], Lsn::INVALID))
        .await
        .unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains("before ProposerElected"), "{e}");

    let mut p = bootstrap(&addr, ttid, 2).await;
    p.send(&Proposer::append(
        2,
        Lsn(START.0 + 8),
        &wal[8..8192],
        Lsn::INVALID,
    ))
    .await
    .unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains(&START.to_string()), "the gap is named: {e}");

    // WAL that does not decode.
    let mut p = bootstrap(&addr, ttid, 3).await;
    p.send(&Proposer::append(3, START, &[0xAB; 4096], Lsn::INVALID))
        .await
        .unwrap();
    let e = server_error(p.recv().await);
    assert!(!e.is_empty(), "undecodable WAL is refused with a reason");

    // A proposer with a lower term is told the higher one.
    let mut p4 = bootstrap(&addr, ttid, 4).await;
    let mut old = Proposer::connect(&addr, ttid).await.unwrap();
    assert_eq!(old.greet().await.term, 4);
    assert!(!old.vote(3).await.vote_given);
    old.send(&Proposer::elected(3, START, &[(3, START)]))
        .await
        .unwrap();
    match old.recv().await.unwrap() {
        AcceptorMessage::AppendResponse(r) => assert_eq!(r.term, 4),
        other => panic!("{other:?}"),
    }
    old.send(&Proposer::append(3, START, &wal[..8192], Lsn::INVALID))
        .await
        .unwrap();
    match old.recv().await.unwrap() {
        AcceptorMessage::AppendResponse(r) => assert_eq!(r.term, 4),
        other => panic!("{other:?}"),
    }
    // ... and the term-4 proposer is unaffected.
    let r = p4
        .stream(4, START, &wal[..half], Lsn::INVALID, ends[mid])
        .await;
    assert_eq!(r.last().unwrap().flush_lsn, ends[mid]);

    // Through all of this the healthy timeline kept going, and so did the process.
    let end = *ends.last().unwrap();
    let r = good.stream(1, ends[mid], &wal[half..], end, end).await;
    assert_eq!(r.last().unwrap().flush_lsn, end);
    assert!(sk.is_running());
    assert!(!sk.log_text().contains("panicked"), "{}", sk.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_auth_on_the_libpq_port() {
    let dir = tempfile::tempdir().unwrap();
    let keys = utils::auth::generate_keypair().unwrap();
    let key_path = dir.path().join("pub.pem");
    std::fs::write(&key_path, &keys.public_pem).unwrap();
    let sk = Sk::start(
        &dir.path().join("sk"),
        &[
            "--no-sync",
            "--pg-auth-public-key-path",
            key_path.to_str().unwrap(),
        ],
    );
    let addr = sk.pg_addr();
    let ttid = TenantTimelineId::generate();
    let token = |claims: &Claims| utils::auth::encode(keys.private_pem.as_bytes(), claims).unwrap();

    match connect(&addr, ttid, None).await {
        Err(ProtocolError::Auth(e)) => assert!(e.contains("password"), "{e}"),
        other => panic!("expected an auth failure, got {other:?}"),
    }
    let e = server_error(connect(&addr, ttid, Some("not-a-jwt")).await.map(|_| ()));
    assert!(e.contains("invalid token"), "{e}");
    let other = token(&Claims::tenant(utils::TenantId::generate()));
    let e = server_error(connect(&addr, ttid, Some(&other)).await.map(|_| ()));
    assert!(e.contains("token is for tenant"), "{e}");
    let ps = token(&Claims::new(Scope::PageServerApi));
    let e = server_error(connect(&addr, ttid, Some(&ps)).await.map(|_| ()));
    assert!(e.contains("scope"), "{e}");

    let own = token(&Claims::tenant(ttid.tenant_id));
    let mut p = Proposer::connect_with(
        &addr,
        ttid,
        Some(&own),
        "START_WAL_PUSH (proto_version '3')",
    )
    .await
    .unwrap();
    assert_eq!(p.greet().await.term, 0);
    let all = token(&Claims::new(Scope::SafekeeperData));
    let mut c = connect(&addr, ttid, Some(&all)).await.unwrap();
    c.simple_query("TIMELINE_STATUS").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failpoint_fails_a_flush_and_the_timeline_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sk = Sk::start(&dir.path().join("sk"), &["--no-sync"]);
    let set = |actions: &str| {
        sk.http(
            "PUT",
            "/v1/failpoints",
            Some(&format!(
                r#"[{{"name": "wal-push-before-flush", "actions": "{actions}"}}]"#
            )),
        )
    };
    if set("return").0 == 404 {
        eprintln!("skipped: the binary was built without the testing feature");
        return;
    }
    let addr = sk.pg_addr();
    let ttid = TenantTimelineId::generate();
    let (wal, ends) = generate_wal(START, 100, 500);
    let end = *ends.last().unwrap();
    let mut p = bootstrap(&addr, ttid, 1).await;
    p.send(&Proposer::append(1, START, &wal, Lsn::INVALID))
        .await
        .unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains("failpoint wal-push-before-flush"), "{e}");

    // With the failpoint off, the next proposer gets everything, whatever was written
    // before is either there or cut at a record boundary.
    assert_eq!(set("off").0, 200);
    let mut p = Proposer::connect(&addr, ttid).await.unwrap();
    p.greet().await;
    let v = p.vote(2).await;
    let flush = v.flush_lsn;
    assert!(flush == START || ends.contains(&flush), "{flush}");
    p.send(&Proposer::elected(2, flush, &[(1, START), (2, flush)]))
        .await
        .unwrap();
    let off = (flush.0 - START.0) as usize;
    // An empty append (a heartbeat) when the vote already made everything durable.
    let r = p.stream(2, flush, &wal[off..], end, end).await;
    assert_eq!(r.last().unwrap().flush_lsn, end);
    let status = sk.http(
        "GET",
        &format!(
            "/v1/tenant/{}/timeline/{}",
            ttid.tenant_id, ttid.timeline_id
        ),
        None,
    );
    assert!(
        status.1.contains(&format!("\"commit_lsn\":\"{end}\"")),
        "{}",
        status.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_writing_wal_breaks_that_timeline_only() {
    let dir = tempfile::tempdir().unwrap();
    let sk = Sk::start(&dir.path().join("sk"), &["--no-sync"]);
    let (code, _) = sk.http(
        "PUT",
        "/v1/failpoints",
        Some(r#"[{"name": "wal-storage-write", "actions": "1*panic"}]"#),
    );
    if code == 404 {
        eprintln!("skipped: the binary was built without the testing feature");
        return;
    }
    assert_eq!(code, 200);
    let addr = sk.pg_addr();
    let ttid = TenantTimelineId::generate();
    let (wal, ends) = generate_wal(START, 20, 300);
    let end = *ends.last().unwrap();
    let mut p = bootstrap(&addr, ttid, 1).await;
    p.send(&Proposer::append(1, START, &wal, Lsn::INVALID))
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    // The connection ends at once (with or without an error message): no acknowledgement,
    // and no thread left waiting.
    let r = p.recv().await;
    assert!(
        !matches!(r, Ok(AcceptorMessage::AppendResponse(_))),
        "an append that panicked was acknowledged: {r:?}"
    );
    assert!(
        !matches!(&r, Err(ProtocolError::Malformed { reason, .. }) if reason.contains("timed out")),
        "the connection hung after the panic ({:?})",
        t0.elapsed()
    );
    let path = format!(
        "/v1/tenant/{}/timeline/{}",
        ttid.tenant_id, ttid.timeline_id
    );
    let (code, body) = sk.http("GET", &path, None);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("broken"), "{body}");
    let (_, list) = sk.http("GET", "/v1/tenant/timeline", None);
    assert!(list.contains("a panic interrupted"), "{list}");
    // A proposer cannot use it either.
    let e = match Proposer::connect(&addr, ttid).await {
        Err(ProtocolError::Server(e)) => e.message,
        Err(e) => panic!("{e}"),
        Ok(mut again) => {
            let greeting = again.greeting();
            let _ = again.send(&greeting).await;
            server_error(again.recv().await)
        }
    };
    assert!(e.contains("broken"), "{e}");
    // Another timeline is served as usual.
    let other = TenantTimelineId::generate();
    let mut p = bootstrap(&addr, other, 1).await;
    let r = p.stream(1, START, &wal, end, end).await;
    assert_eq!(r.last().unwrap().flush_lsn, end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_connections_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut sk = Sk::start(&dir.path().join("sk"), &["--no-sync"]);
    let addr = sk.pg_addr();
    let ttid = TenantTimelineId::generate();
    let (wal, ends) = generate_wal(START, 200, 500);
    let end = *ends.last().unwrap();
    let mut p = bootstrap(&addr, ttid, 1).await;
    p.stream(1, START, &wal, end, end).await;
    let mut reader = connect(&addr, ttid, None).await.unwrap();
    reader
        .start_copy_both(&format!("START_REPLICATION PHYSICAL {START}"))
        .await
        .unwrap();
    let (mut r, _w) = reader.into_split();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sk.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let e = server_error(p.recv().await);
    assert!(e.contains("shutting down"), "{e}");
    let e = loop {
        match r.read_copy_data(1 << 20).await {
            Ok(Some(_)) => continue,
            other => break server_error(other),
        }
    };
    assert!(e.contains("shutting down"), "{e}");
    let status = sk.child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", sk.log_text());

    sk.restart();
    let mut p = Proposer::connect(&sk.pg_addr(), ttid).await.unwrap();
    p.greet().await;
    assert_eq!(p.vote(2).await.flush_lsn, end);
}
