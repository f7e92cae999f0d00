//! WAL removal driven by pageserver feedback: a pageserver-like client streams WAL and
//! reports a remote consistent LSN in `'z'` messages; the safekeeper folds it into the
//! timeline, persists it, and deletes the segments wholly below the horizon
//! (min(remote_consistent_lsn, commit_lsn, flush_lsn)).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use postgres_ffi::PgMajorVersion;
use postgres_ffi::v15::{RM_XLOG_ID, XLOG_NOOP};
use postgres_ffi::wal_generate::{WalWriter, WalWriterConfig, XLogRecordBuilder};
use pq_proto::StartupParams;
use pq_proto::client::ClientConnection;
use pq_proto::replication::{ReplicationFeedback, ReplicationMessage};
use safekeeper_api::PageserverFeedback;
use safekeeper_api::membership::Configuration;
use safekeeper_api::proto::ProposerGreeting;
use safekeeper_api::{AcceptorMessage, ProposerMessage};
use utils::{Lsn, TenantTimelineId};

const SMALL_SEG: u64 = 1024 * 1024;
const START: Lsn = Lsn(SMALL_SEG + 8192 + 64);

fn segments(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("0000"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pageserver_feedback_lets_old_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let sk = Sk::start(
        &dir.path().join("sk"),
        &["--no-sync", "--wal-removal-interval", "100ms"],
    );
    let addr = sk.pg_addr();
    let ttid = TenantTimelineId::generate();

    // ~4.5 segments of WAL in a timeline with 1 MiB segments, all committed.
    let config = WalWriterConfig {
        version: PgMajorVersion::V15,
        seg_size: SMALL_SEG,
        system_id: SYSID,
        timeline: 1,
    };
    let mut w = WalWriter::new(config, START, Lsn::INVALID);
    let ends: Vec<Lsn> = (0..4500)
        .map(|i| {
            w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&[i as u8; 1000]))
                .1
        })
        .collect();
    let end = *ends.last().unwrap();
    w.zero_until(end);
    let wal = w.into_bytes();

    let mut p = Proposer::connect(&addr, ttid).await.unwrap();
    p.send(&ProposerMessage::Greeting(ProposerGreeting {
        tenant_id: ttid.tenant_id,
        timeline_id: ttid.timeline_id,
        mconf: Configuration::empty(),
        pg_version: PG_VERSION,
        system_id: SYSID,
        wal_seg_size: SMALL_SEG as u32,
    }))
    .await
    .unwrap();
    assert!(matches!(
        p.recv().await.unwrap(),
        AcceptorMessage::Greeting(_)
    ));
    assert!(p.vote(1).await.vote_given);
    p.send(&Proposer::elected(1, START, &[(1, START)]))
        .await
        .unwrap();
    p.stream(1, START, &wal, Lsn::INVALID, end).await;
    p.send(&Proposer::append(1, end, &[], end)).await.unwrap();
    p.wait_flush(end).await;

    let tl_dir = sk
        .datadir
        .join(ttid.tenant_id.to_string())
        .join(ttid.timeline_id.to_string());
    let before = segments(&tl_dir);
    assert_eq!(before.len(), 5, "{before:?}");

    // Nothing is removed while no pageserver has made anything durable remotely.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(segments(&tl_dir), before);

    // A pageserver streams and reports a remote consistent LSN in the fourth segment.
    let mut c = ClientConnection::connect_tcp(&addr).await.unwrap();
    c.startup(
        &StartupParams::for_timeline(ttid.tenant_id, ttid.timeline_id, "pageserver"),
        None,
    )
    .await
    .unwrap();
    c.start_copy_both(&format!("START_REPLICATION PHYSICAL {START}"))
        .await
        .unwrap();
    let (mut r, mut wr) = c.into_split();
    let data = r.read_copy_data(1 << 20).await.unwrap().unwrap();
    assert!(matches!(
        ReplicationMessage::decode(&data).unwrap(),
        ReplicationMessage::XLogData(_)
    ));
    let remote = ends
        .iter()
        .copied()
        .find(|e| e.0 > 4 * SMALL_SEG + 1000)
        .unwrap();
    let mut block = BytesMut::new();
    PageserverFeedback {
        last_received_lsn: end,
        disk_consistent_lsn: end,
        remote_consistent_lsn: remote,
        ..PageserverFeedback::empty()
    }
    .encode(&mut block);
    let mut buf = BytesMut::new();
    ReplicationFeedback::Pageserver(block.freeze()).encode(&mut buf);
    wr.write_copy_data(&buf);
    wr.flush().await.unwrap();

    // Segments 1..=3 (wholly below the fourth) go; the fourth and the open one stay.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = segments(&tl_dir);
        if now == before[3..] {
            break;
        }
        assert!(Instant::now() < deadline, "segments left: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = sk.http(
        "GET",
        &format!(
            "/v1/tenant/{}/timeline/{}",
            ttid.tenant_id, ttid.timeline_id
        ),
        None,
    );
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["remote_consistent_lsn"], remote.to_string());
    assert_eq!(status["walsenders"][0]["kind"], "pageserver");
    assert_eq!(
        status["walsenders"][0]["remote_consistent_lsn"],
        remote.to_string()
    );
    let (_, metrics) = sk.http("GET", "/metrics", None);
    assert!(
        metrics.contains("safekeeper_wal_segments_removed_total 3"),
        "{metrics}"
    );

    // WAL that is gone cannot be streamed; the error says why.
    let mut c = connect(&addr, ttid, None).await.unwrap();
    c.start_copy_both(&format!("START_REPLICATION PHYSICAL {START}"))
        .await
        .unwrap();
    let (mut r2, _w2) = c.into_split();
    match r2.read_copy_data(1 << 20).await {
        Err(pq_proto::ProtocolError::Server(e)) => assert!(e.message.contains("missing"), "{e}"),
        other => panic!("{other:?}"),
    }
}
