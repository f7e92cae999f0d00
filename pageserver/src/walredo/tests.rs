//! Tests of the redo manager against real `postgres --single` redo processes.

use std::time::Duration;

use bytes::Bytes;
use pageserver_api::reltag::{BufferTag, RelTag};
use utils::Lsn;

use super::synthetic::{self, empty_heap_page, max_offset_number, page_lsn};
use super::*;
use crate::walrecord::{ClogStatus, WalRecord};

fn tag(relnode: u32, blkno: u32) -> BufferTag {
    BufferTag {
        rel: RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode,
            forknum: 0,
        },
        blkno,
    }
}

fn manager(conf: WalRedoConfig) -> WalRedoManager {
    WalRedoManager::new(conf)
        .expect("walredo manager (run ./scripts/setup if PostgreSQL 15 is missing)")
}

fn pg(start: u64, will_init: bool, rec: Bytes) -> WalRecord {
    WalRecord::Postgres {
        start_lsn: Lsn(start),
        will_init,
        rec,
    }
}

/// A chain of heap inserts at items 1..=n, each record 0x100 bytes of LSN apart.
fn insert_chain(t: BufferTag, n: u16) -> Vec<(Lsn, WalRecord)> {
    (1..=n)
        .map(|i| {
            let start = 0x1000 + u64::from(i) * 0x100;
            (
                Lsn(start + 0x40),
                pg(
                    start,
                    false,
                    synthetic::heap_insert(t, 700 + u32::from(i), i, i32::from(i)),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn fpi_and_heap_inserts_are_replayed_by_postgres() {
    let m = manager(WalRedoConfig::default());
    let t = tag(16384, 3);

    // A full-page image alone: the page is the image, stamped with the record's end LSN.
    let mut img = empty_heap_page(0x10);
    img[100] = 0xAB;
    let page = m
        .request_redo(
            t,
            None,
            &[(Lsn(0x2000), pg(0x1F00, true, synthetic::fpi(t, &img)))],
        )
        .await
        .unwrap();
    assert_eq!(page_lsn(&page), 0x2000);
    assert_eq!(&page[8..], &img[8..]);

    // Heap inserts on top of a base image.
    let base = empty_heap_page(0x1000);
    let chain = insert_chain(t, 5);
    let page = m
        .request_redo(t, Some((Lsn(0x1000), &base[..])), &chain)
        .await
        .unwrap();
    assert_eq!(max_offset_number(&page), 5);
    assert_eq!(page_lsn(&page), chain[4].0.0);

    // Splitting the chain and feeding the middle page back gives the same page.
    let mid = m
        .request_redo(t, Some((Lsn(0x1000), &base[..])), &chain[..2])
        .await
        .unwrap();
    let rest = m
        .request_redo(t, Some((chain[1].0, &mid[..])), &chain[2..])
        .await
        .unwrap();
    assert_eq!(rest, page);
    m.shutdown().await;
}

#[tokio::test]
async fn other_blocks_of_a_record_do_not_leak_into_the_target() {
    let m = manager(WalRedoConfig::default());
    let a = tag(16384, 0);
    let b = tag(16384, 1);
    let mut a_img = empty_heap_page(0);
    a_img[200] = 1;
    let mut b_img = empty_heap_page(0);
    b_img[200] = 2;
    let rec = synthetic::fpi_two_blocks(a, &a_img, b, &b_img);
    let pa = m
        .request_redo(a, None, &[(Lsn(0x500), pg(0x400, true, rec.clone()))])
        .await
        .unwrap();
    let pb = m
        .request_redo(b, None, &[(Lsn(0x500), pg(0x400, true, rec))])
        .await
        .unwrap();
    assert_eq!(pa[200], 1);
    assert_eq!(pb[200], 2);
    m.shutdown().await;
}

#[tokio::test]
async fn a_record_not_newer_than_the_page_is_an_error() {
    let m = manager(WalRedoConfig::default());
    let t = tag(16385, 0);
    // The caller claims an old base LSN, but the page itself is stamped later: the C side
    // catches what PostgreSQL would silently skip.
    let base = empty_heap_page(0x9000);
    let chain = insert_chain(t, 1);
    let e = m
        .request_redo(t, Some((Lsn(0x100), &base[..])), &chain)
        .await
        .unwrap_err();
    assert!(
        matches!(e, WalRedoError::Redo(ref m) if m.contains("not newer than the page LSN")),
        "{e}"
    );
    // The Rust side rejects what it can see without a round trip.
    let e = m
        .request_redo(t, Some((Lsn(0x9000), &base[..])), &chain)
        .await
        .unwrap_err();
    assert!(matches!(e, WalRedoError::InvalidHistory(_)), "{e}");
    // And the pool keeps working.
    let base = empty_heap_page(0x100);
    m.request_redo(t, Some((Lsn(0x100), &base[..])), &chain)
        .await
        .unwrap();
    m.shutdown().await;
}

#[tokio::test]
async fn error_replies_keep_the_service_alive() {
    let m = manager(WalRedoConfig {
        processes: 1,
        ..Default::default()
    });
    let t = tag(16386, 0);
    let base = empty_heap_page(0x100);
    // Unknown resource manager 200.
    let mut bad = synthetic::heap_insert(t, 700, 1, 1).to_vec();
    bad[17] = 200;
    let e = m
        .request_redo(
            t,
            Some((Lsn(0x100), &base[..])),
            &[(Lsn(0x300), pg(0x200, false, Bytes::from(bad)))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, WalRedoError::Redo(ref m) if m.contains("200")),
        "{e}"
    );
    // A truncated record.
    let rec = synthetic::heap_insert(t, 700, 1, 1);
    let e = m
        .request_redo(
            t,
            Some((Lsn(0x100), &base[..])),
            &[(Lsn(0x300), pg(0x200, false, rec.slice(..20)))],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, WalRedoError::Redo(_)), "{e}");
    // A record for another block than the target.
    let e = m
        .request_redo(
            tag(16386, 9),
            Some((Lsn(0x100), &base[..])),
            &[(Lsn(0x300), pg(0x200, false, rec.clone()))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, WalRedoError::Redo(ref m) if m.contains("does not reference the target")),
        "{e}"
    );
    let page = m
        .request_redo(
            t,
            Some((Lsn(0x100), &base[..])),
            &[(Lsn(0x300), pg(0x200, false, rec))],
        )
        .await
        .unwrap();
    assert_eq!(max_offset_number(&page), 1);
    m.shutdown().await;
}

#[tokio::test]
async fn a_panicking_request_fails_and_the_process_is_replaced() {
    let m = manager(WalRedoConfig {
        processes: 1,
        ..Default::default()
    });
    let t = tag(16387, 0);
    let base = empty_heap_page(0x100);
    // Item 100 on an empty page: heap redo PANICs ("invalid max offset number").
    let poison = synthetic::heap_insert(t, 700, 100, 1);
    let good = insert_chain(t, 3);
    let poison = [(Lsn(0x300), pg(0x200, false, poison))];
    let (bad, ok) = tokio::join!(
        m.request_redo(t, Some((Lsn(0x100), &base[..])), &poison),
        // In flight at the same time on the same process, behind the poison: retried.
        m.request_redo(t, Some((Lsn(0x100), &base[..])), &good)
    );
    let e = bad.unwrap_err();
    assert!(
        matches!(e, WalRedoError::ProcessDied(ref d) if d.contains("invalid max offset number")),
        "{e}"
    );
    assert_eq!(max_offset_number(&ok.unwrap()), 3);
    let page = m
        .request_redo(t, Some((Lsn(0x100), &base[..])), &good)
        .await
        .unwrap();
    assert_eq!(max_offset_number(&page), 3);
    m.shutdown().await;
}

#[tokio::test]
async fn a_timeout_kills_the_process_and_the_next_request_works() {
    let m = manager(WalRedoConfig {
        processes: 1,
        request_timeout: Duration::from_millis(500),
        ..Default::default()
    });
    let t = tag(16388, 0);
    let base = empty_heap_page(0x100);
    let chain = insert_chain(t, 1);
    m.ping().await.unwrap();
    let pids = m.process_ids().await;
    // A stopped process never answers: the request must time out, not hang.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let e = m
        .request_redo(t, Some((Lsn(0x100), &base[..])), &chain)
        .await
        .unwrap_err();
    assert!(matches!(e, WalRedoError::Timeout(_)), "{e}");
    let page = m
        .request_redo(t, Some((Lsn(0x100), &base[..])), &chain)
        .await
        .unwrap();
    assert_eq!(max_offset_number(&page), 1);
    assert_ne!(
        m.process_ids().await,
        pids,
        "the stuck process was replaced"
    );
    m.shutdown().await;
    assert!(
        !std::path::Path::new(&format!("/proc/{}", pids[0])).exists(),
        "stuck process reaped"
    );
}

#[tokio::test]
async fn pipelined_requests_all_come_back_right() {
    let m = manager(WalRedoConfig {
        processes: 2,
        max_requests_per_process: 50,
        ..Default::default()
    });
    let base = empty_heap_page(0x100);
    let futures = (0..300u32).map(|i| {
        let t = tag(17000 + i % 7, i);
        let chain = insert_chain(t, (i % 5 + 1) as u16);
        let m = &m;
        let base = &base;
        async move {
            let page = m
                .request_redo(t, Some((Lsn(0x100), &base[..])), &chain)
                .await
                .unwrap();
            assert_eq!(max_offset_number(&page), (i % 5 + 1) as u16, "request {i}");
        }
    });
    futures::future::join_all(futures).await;
    m.shutdown().await;
}

#[tokio::test]
async fn strata_records_and_images_need_no_process() {
    let m = manager(WalRedoConfig {
        pg_bin_dir: "/usr/lib/postgresql/15/bin".into(),
        ..Default::default()
    });
    let clog = BufferTag {
        rel: RelTag {
            spcnode: 0,
            dbnode: 0,
            relnode: 0,
            forknum: 0,
        },
        blkno: 0,
    };
    let recs = [
        (
            Lsn(0x10),
            WalRecord::ClogSetStatus {
                xids: vec![3],
                status: ClogStatus::Committed,
                timestamp: 1,
            },
        ),
        (
            Lsn(0x20),
            WalRecord::ClogSetStatus {
                xids: vec![4],
                status: ClogStatus::Aborted,
                timestamp: 2,
            },
        ),
    ];
    let page = m.request_redo(clog, None, &recs).await.unwrap();
    assert_eq!(page[0], 0b0100_0000);
    assert_eq!(page[1], 0b0000_0010);
    let img = [9u8; BLCKSZ];
    assert_eq!(
        &m.request_redo(clog, Some((Lsn(5), &img)), &[])
            .await
            .unwrap()[..],
        &img[..]
    );
    assert!(m.request_redo(clog, None, &[]).await.is_err());
}

#[test]
fn histories_are_checked() {
    let t = tag(1, 0);
    let img = [0u8; BLCKSZ];
    let rec = |s: u64| pg(s, false, Bytes::from_static(b"x"));
    // Out of order.
    assert!(
        check_history(
            t,
            Some((Lsn(10), &img)),
            &[(Lsn(30), rec(20)), (Lsn(30), rec(25))]
        )
        .is_err()
    );
    // Not after the base.
    assert!(check_history(t, Some((Lsn(40), &img)), &[(Lsn(30), rec(20))]).is_err());
    // Ends before it starts.
    assert!(check_history(t, None, &[(Lsn(30), pg(40, true, Bytes::new()))]).is_err());
    // No base and no initializing record.
    assert!(check_history(t, None, &[(Lsn(30), rec(20))]).is_err());
    // Wrong image size.
    assert!(check_history(t, Some((Lsn(1), &img[..10])), &[]).is_err());
    check_history(
        t,
        None,
        &[(Lsn(30), pg(20, true, Bytes::new())), (Lsn(40), rec(35))],
    )
    .unwrap();
}

#[tokio::test]
async fn shutdown_leaves_no_process_behind() {
    let m = manager(WalRedoConfig {
        processes: 2,
        ..Default::default()
    });
    m.ping().await.unwrap();
    m.ping().await.unwrap();
    let pids = m.process_ids().await;
    assert_eq!(pids.len(), 2);
    m.shutdown().await;
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists"
        );
    }
    assert!(matches!(m.ping().await, Err(WalRedoError::ShuttingDown)));
}

#[tokio::test]
async fn processes_are_recycled_after_max_requests() {
    let m = manager(WalRedoConfig {
        processes: 1,
        max_requests_per_process: 3,
        ..Default::default()
    });
    m.ping().await.unwrap();
    let first = m.process_ids().await;
    for _ in 0..4 {
        m.ping().await.unwrap();
    }
    let later = m.process_ids().await;
    assert_ne!(first, later, "the process was replaced");
    m.shutdown().await;
}

#[tokio::test]
async fn one_poisoned_request_among_100_pipelined_fails_alone() {
    let m = manager(WalRedoConfig {
        processes: 1,
        ..Default::default()
    });
    let base = empty_heap_page(0x100);
    const POISONED: u32 = 50;
    let futures = (0..100u32).map(|i| {
        let t = tag(18000, i);
        let history = if i == POISONED {
            // Item 100 on an empty page: heap redo PANICs.
            vec![(
                Lsn(0x300),
                pg(0x200, false, synthetic::heap_insert(t, 700, 100, 1)),
            )]
        } else {
            insert_chain(t, (i % 5 + 1) as u16)
        };
        let m = &m;
        let base = &base;
        async move {
            (
                i,
                m.request_redo(t, Some((Lsn(0x100), &base[..])), &history)
                    .await,
            )
        }
    });
    for (i, result) in futures::future::join_all(futures).await {
        match result {
            Ok(page) if i != POISONED => {
                assert_eq!(max_offset_number(&page), (i % 5 + 1) as u16, "request {i}")
            }
            Err(WalRedoError::ProcessDied(d)) if i == POISONED => {
                assert!(d.contains("invalid max offset number"), "{d}")
            }
            Ok(_) => panic!("the poisoned request {i} succeeded"),
            Err(e) => panic!("request {i} failed with its poisoned neighbour: {e}"),
        }
    }
    m.shutdown().await;
}

#[tokio::test]
async fn a_long_queue_on_a_healthy_process_is_not_a_timeout() {
    let timeout = Duration::from_millis(200);
    let m = manager(WalRedoConfig {
        processes: 1,
        request_timeout: timeout,
        ..Default::default()
    });
    m.ping().await.unwrap();
    let pids = m.process_ids().await;
    let base = empty_heap_page(0x100);
    // Thousands of requests at once: the last ones wait far longer than the timeout
    // behind the others, while the process answers steadily.
    let started = std::time::Instant::now();
    let futures = (0..8000u32).map(|i| {
        let t = tag(18100 + i % 3, i);
        let chain = insert_chain(t, 20);
        let m = &m;
        let base = &base;
        async move {
            m.request_redo(t, Some((Lsn(0x100), &base[..])), &chain)
                .await
                .map_err(|e| format!("request {i}: {e}"))
        }
    });
    for r in futures::future::join_all(futures).await {
        assert_eq!(max_offset_number(&r.unwrap()), 20);
    }
    let queued = started.elapsed();
    eprintln!("8000 queued requests took {queued:?} (timeout {timeout:?})");
    assert_eq!(
        m.process_ids().await,
        pids,
        "the busy process was not replaced"
    );
    m.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_gives_up_leaves_the_process_usable() {
    let m = manager(WalRedoConfig {
        processes: 1,
        ..Default::default()
    });
    m.ping().await.unwrap();
    let pids = m.process_ids().await;
    let base = empty_heap_page(0x100);
    for n in [1u16, 50, 120] {
        let t = tag(18200, u32::from(n));
        let chain = insert_chain(t, n);
        // Polled until the request is on its way, then dropped.
        let dropped = m.request_redo(t, Some((Lsn(0x100), &base[..])), &chain);
        let _ = tokio::time::timeout(Duration::from_micros(50), dropped).await;
        let page = m
            .request_redo(t, Some((Lsn(0x100), &base[..])), &chain)
            .await
            .unwrap();
        assert_eq!(max_offset_number(&page), n);
    }
    assert_eq!(m.process_ids().await, pids);
    m.shutdown().await;
}

/// Mounts a `noexec` tmpfs (as root; otherwise the test says so and checks nothing).
struct NoexecMount(tempfile::TempDir);

impl NoexecMount {
    fn new() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "noexec,size=4m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(NoexecMount(dir))
    }
}

impl Drop for NoexecMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_noexec_scratch_parent_falls_back_to_the_private_directory() {
    let Some(noexec) = NoexecMount::new() else {
        eprintln!("cannot mount a noexec tmpfs here (not root?): nothing checked");
        return;
    };
    let fallback = tempfile::tempdir().unwrap();
    // The fallback must be traversable by the unprivileged user PostgreSQL runs as.
    std::fs::set_permissions(
        fallback.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let m = manager(WalRedoConfig {
        processes: 1,
        scratch_parent: noexec.0.path().to_path_buf(),
        fallback_scratch_parent: fallback.path().to_path_buf(),
        ..Default::default()
    });
    assert!(
        m.scratch_path().starts_with(fallback.path()),
        "{}",
        m.scratch_path().display()
    );
    let t = tag(18300, 0);
    let base = empty_heap_page(0x100);
    let page = m
        .request_redo(t, Some((Lsn(0x100), &base[..])), &insert_chain(t, 2))
        .await
        .unwrap();
    assert_eq!(max_offset_number(&page), 2);
    m.shutdown().await;
    drop(m);
    assert_eq!(
        std::fs::read_dir(fallback.path()).unwrap().count(),
        0,
        "scratch removed"
    );
}
