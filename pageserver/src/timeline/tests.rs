//! Timeline write/read/flush/restart/branch without a walreceiver: values go in through
//! `put_batch`, reads come out through `get`, with Strata records applied in Rust.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use utils::crashsafe::Sync;
use utils::{Lsn, TenantId, TimelineId};

use super::load::{install_timeline_dir, load_timeline, temp_timeline_dir};
use super::metadata::TimelineMetadata;
use super::{LastRecord, Timeline, TimelineResources};
use crate::config::TenantConfig;
use crate::keyspace::{self, Key};
use crate::page_cache::PageCache;
use crate::walingest::{SlruKind, Value};
use crate::walrecord::{ClogStatus, WalRecord};
use crate::walredo::{WalRedoConfig, WalRedoManager};

fn resources(checkpoint_distance: u64) -> TimelineResources {
    TimelineResources {
        remote: None,
        walredo: Arc::new(
            WalRedoManager::new(WalRedoConfig::default())
                .expect("walredo (run ./scripts/setup if PostgreSQL 15 is missing)"),
        ),
        cache: Arc::new(PageCache::new(256)),
        tenant_conf: Arc::new(RwLock::new(TenantConfig {
            checkpoint_distance,
            ..TenantConfig::default()
        })),
        sync: Sync::No,
    }
}

fn meta(at: Lsn, ancestor: Option<(TimelineId, Lsn)>) -> TimelineMetadata {
    TimelineMetadata {
        disk_consistent_lsn: at,
        prev_record_lsn: None,
        ancestor_timeline: ancestor.map(|a| a.0),
        ancestor_lsn: ancestor.map_or(Lsn(0), |a| a.1),
        latest_gc_cutoff_lsn: Lsn(0),
        initdb_lsn: at,
        pg_version: 15,
    }
}

fn create(
    root: &std::path::Path,
    tenant: TenantId,
    id: TimelineId,
    m: &TimelineMetadata,
    ancestor: Option<Arc<Timeline>>,
    res: &TimelineResources,
) -> Arc<Timeline> {
    let dir = root.join(id.to_string());
    let tmp = temp_timeline_dir(&dir);
    std::fs::create_dir_all(&tmp).unwrap();
    install_timeline_dir(&tmp, &dir, m, Sync::No).unwrap();
    load_timeline(tenant, id, dir, ancestor, res.clone()).unwrap()
}

fn page(b: u8) -> Value {
    Value::Image(Bytes::from(vec![b; 8192]))
}

fn clog(xid: u32, status: ClogStatus) -> Value {
    Value::Record(WalRecord::ClogSetStatus {
        xids: vec![xid],
        status,
        timestamp: 1,
    })
}

fn rec(l: u64) -> LastRecord {
    LastRecord {
        last: Lsn(l),
        prev: Some(Lsn(l - 8)),
    }
}

/// The two status bits of `xid` on its CLOG page.
fn status_bits(p: &[u8], xid: u32) -> u8 {
    let byte = (xid % 32768) / 4;
    (p[byte as usize] >> ((xid % 4) * 2)) & 3
}

async fn get(tl: &Timeline, k: Key, l: u64) -> Option<Bytes> {
    tl.get(k, Lsn(l)).await.unwrap()
}

#[tokio::test]
async fn history_flush_restart_and_branch() {
    let root = tempfile::tempdir().unwrap();
    let res = resources(1 << 30);
    let tenant = TenantId::generate();
    let main_id = TimelineId::generate();
    let tl = create(
        root.path(),
        tenant,
        main_id,
        &meta(Lsn(0x100), None),
        None,
        &res,
    );
    let a = keyspace::rel_block_key(
        pageserver_api::reltag::RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
            forknum: 0,
        },
        0,
    );
    let c = keyspace::slru_block_key(SlruKind::Clog, 0);
    tl.put_batch(
        &[
            (a, Lsn(0x200), page(1)),
            (c, Lsn(0x200), Value::Image(Bytes::new())),
        ],
        rec(0x200),
    )
    .await
    .unwrap();
    tl.put_batch(
        &[(c, Lsn(0x300), clog(10, ClogStatus::Committed))],
        rec(0x300),
    )
    .await
    .unwrap();
    // Flush what there is: the first delta layer.
    assert_eq!(tl.checkpoint_for_test().await, Lsn(0x300));
    tl.put_batch(
        &[
            (a, Lsn(0x400), page(2)),
            (c, Lsn(0x400), clog(11, ClogStatus::Aborted)),
        ],
        rec(0x400),
    )
    .await
    .unwrap();

    let check = |tl: Arc<Timeline>| async move {
        assert!(
            get(&tl, a, 0x1FF).await.is_none(),
            "nothing before the first value"
        );
        assert_eq!(get(&tl, a, 0x200).await.unwrap()[0], 1);
        assert_eq!(get(&tl, a, 0x3FF).await.unwrap()[0], 1);
        assert_eq!(get(&tl, a, 0x400).await.unwrap()[0], 2);
        let p = get(&tl, c, 0x2FF).await.unwrap();
        assert_eq!((status_bits(&p, 10), status_bits(&p, 11)), (0, 0));
        let p = get(&tl, c, 0x300).await.unwrap();
        assert_eq!((status_bits(&p, 10), status_bits(&p, 11)), (1, 0));
        let p = get(&tl, c, 0x500).await.unwrap();
        assert_eq!((status_bits(&p, 10), status_bits(&p, 11)), (1, 2));
    };
    // Reads span the layer file and the open layer.
    check(tl.clone()).await;
    // A branch at 0x300 sees the parent's state there while the parent moves on.
    let br_id = TimelineId::generate();
    let br = create(
        root.path(),
        tenant,
        br_id,
        &meta(Lsn(0x300), Some((main_id, Lsn(0x300)))),
        Some(tl.clone()),
        &res,
    );
    br.put_batch(&[(a, Lsn(0x380), page(9))], rec(0x380))
        .await
        .unwrap();
    assert_eq!(get(&br, a, 0x300).await.unwrap()[0], 1);
    assert_eq!(get(&br, a, 0x500).await.unwrap()[0], 9);
    let p = get(&br, c, 0x500).await.unwrap();
    assert_eq!(
        (status_bits(&p, 10), status_bits(&p, 11)),
        (1, 0),
        "the parent's later abort is not visible"
    );

    // Flush everything, "restart" (load from disk), and read the same history.
    assert_eq!(tl.checkpoint_for_test().await, Lsn(0x400));
    let dir = tl.dir.clone();
    tl.shutdown();
    drop(br);
    let reloaded = load_timeline(tenant, main_id, dir.clone(), None, res.clone()).unwrap();
    assert_eq!(reloaded.disk_consistent_lsn(), Lsn(0x400));
    assert_eq!(reloaded.layers.read().historic.len(), 2);
    check(reloaded.clone()).await;

    // A layer file above disk_consistent_lsn (a flush that crashed before its metadata)
    // is removed on load.
    reloaded
        .put_batch(&[(a, Lsn(0x600), page(3))], rec(0x600))
        .await
        .unwrap();
    {
        let _g = reloaded.write_lock.lock().await;
        reloaded.maybe_freeze_locked(true);
    }
    let (layer, _) = reloaded.layers.read().frozen[0].clone();
    layer
        .write_delta(&reloaded.dir, tenant, main_id, Sync::No)
        .unwrap();
    reloaded.shutdown();
    let again = load_timeline(tenant, main_id, dir, None, res.clone()).unwrap();
    assert_eq!(
        again.layers.read().historic.len(),
        2,
        "the unfinished flush is gone"
    );
    assert_eq!(get(&again, a, 0x700).await.unwrap()[0], 2);
}

#[tokio::test]
async fn freeze_at_checkpoint_distance_keeps_values_readable() {
    let root = tempfile::tempdir().unwrap();
    let res = resources(64 * 1024);
    let tenant = TenantId::generate();
    let tl = create(
        root.path(),
        tenant,
        TimelineId::generate(),
        &meta(Lsn(0x100), None),
        None,
        &res,
    );
    let key = |n: u32| Key { f6: n, ..Key::MIN };
    for i in 0..100u64 {
        let l = 0x200 + i * 0x10;
        tl.put_batch(&[(key(i as u32 % 7), Lsn(l), page(i as u8))], rec(l))
            .await
            .unwrap();
    }
    let frozen = tl.layers.read().frozen.len();
    assert!(frozen >= 5, "{frozen} frozen layers");
    while tl.flush_one().await.unwrap() {}
    assert!(tl.layers.read().historic.len() >= 5);
    for i in 0..100u64 {
        let l = 0x200 + i * 0x10;
        assert_eq!(
            get(&tl, key(i as u32 % 7), l + 0x100).await.map(|p| p[0]),
            Some(
                // The newest value of this key at or below l + 0x100.
                (0..100u64)
                    .filter(|j| j % 7 == i % 7 && 0x200 + j * 0x10 <= l + 0x100)
                    .max()
                    .unwrap() as u8
            )
        );
    }
}
