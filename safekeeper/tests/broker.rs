//! Broker heartbeats with a real nats-server: a safekeeper publishes its active timelines'
//! state, a peer holding the same timeline takes its commit LSN (same last log term), and
//! WAL service goes on with the broker down or never reachable.
//!
//! Skipped (with a message) when no `nats-server` binary is found (`STRATA_NATS_SERVER`,
//! `PATH`, `/usr/sbin`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use safekeeper_api::broker::SafekeeperTimelineInfo;
use utils::{Lsn, TenantTimelineId};

const START: Lsn = Lsn(SEG + 8192 + 64);

fn nats_server_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("STRATA_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .map(|d| PathBuf::from(d).join("nats-server"))
        .find(|p| p.is_file())
}

struct Nats(Child, u16);

impl Nats {
    fn start(bin: &PathBuf) -> Nats {
        let port = free_port();
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats(child, port)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.1)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn commit_lsn(sk: &Sk, ttid: TenantTimelineId) -> Lsn {
    let (code, body) = sk.http(
        "GET",
        &format!(
            "/v1/tenant/{}/timeline/{}",
            ttid.tenant_id, ttid.timeline_id
        ),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["commit_lsn"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_carry_commit_to_peers_and_nats_down_does_not_stop_wal() {
    let Some(bin) = nats_server_binary() else {
        eprintln!("skipped: no nats-server binary");
        return;
    };
    let nats = Nats::start(&bin);
    let dir = tempfile::tempdir().unwrap();
    let broker = [
        "--no-sync",
        "--broker-endpoint",
        &nats.url(),
        "--broker-publish-interval",
        "100ms",
    ];
    let sk1 = Sk::start_id(&dir.path().join("sk1"), 1, &broker);
    let sk2 = Sk::start_id(&dir.path().join("sk2"), 2, &broker);
    let ttid = TenantTimelineId::generate();

    // Watch the heartbeats as a pageserver would.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client
        .subscribe(safekeeper_api::broker::subject(
            ttid.tenant_id,
            ttid.timeline_id,
        ))
        .await
        .unwrap();
    client.flush().await.unwrap();

    // The same WAL on both, in term 1; only sk1 hears the commit LSN from the proposer.
    let (wal, ends) = generate_wal(START, 200, 300);
    let end = *ends.last().unwrap();
    let mut proposers = Vec::new();
    for sk in [&sk1, &sk2] {
        let mut p = Proposer::connect(&sk.pg_addr(), ttid).await.unwrap();
        p.greet().await;
        assert!(p.vote(1).await.vote_given);
        p.send(&Proposer::elected(1, START, &[(1, START)]))
            .await
            .unwrap();
        p.stream(1, START, &wal, Lsn::INVALID, end).await;
        proposers.push(p);
    }
    proposers[0]
        .send(&Proposer::append(1, end, &[], end))
        .await
        .unwrap();
    proposers[0].wait_flush(end).await;
    assert_eq!(commit_lsn(&sk1, ttid), end);

    // sk1's heartbeat, as published.
    let info = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a heartbeat within 10 s")
            .unwrap();
        let info = SafekeeperTimelineInfo::from_json(&msg.payload).unwrap();
        if info.safekeeper_id.0 == 1 && info.commit_lsn == end {
            break info;
        }
    };
    assert_eq!((info.term, info.last_log_term, info.flush_lsn), (1, 1, end));
    assert_eq!(info.safekeeper_connstr, sk1.pg_addr());

    // sk2 takes sk1's commit LSN through the broker.
    let deadline = Instant::now() + Duration::from_secs(15);
    while commit_lsn(&sk2, ttid) != end {
        assert!(
            Instant::now() < deadline,
            "sk2 never took the peer's commit LSN"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // With the broker gone, WAL service goes on.
    drop(sub);
    drop(client);
    drop(nats);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (more, more_ends) = generate_more(&wal, end);
    let more_end = *more_ends.last().unwrap();
    let r = proposers[0].stream(1, end, &more, more_end, more_end).await;
    assert_eq!(r.last().unwrap().flush_lsn, more_end);
    assert_eq!(commit_lsn(&sk1, ttid), more_end);
    assert!(sk1.log_text().contains("disconnected from the broker"));

    // A safekeeper whose broker was never there serves as well.
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let sk3 = Sk::start_id(
        &dir.path().join("sk3"),
        3,
        &["--no-sync", "--broker-endpoint", &dead],
    );
    let mut p = Proposer::connect(&sk3.pg_addr(), ttid).await.unwrap();
    p.greet().await;
    assert!(p.vote(1).await.vote_given);
    p.send(&Proposer::elected(1, START, &[(1, START)]))
        .await
        .unwrap();
    let r = p.stream(1, START, &wal, end, end).await;
    assert_eq!(r.last().unwrap().flush_lsn, end);
}

/// WAL continuing a `generate_wal(START, …)` stream that ends at `end`.
fn generate_more(wal: &[u8], end: Lsn) -> (Vec<u8>, Vec<Lsn>) {
    // Regenerate a longer stream from START and take the part after `end`.
    let (all, ends) = generate_wal(START, 300, 300);
    assert_eq!(&all[..wal.len()], wal);
    let off = (end.0 - START.0) as usize;
    (
        all[off..].to_vec(),
        ends.into_iter().filter(|e| *e > end).collect(),
    )
}
