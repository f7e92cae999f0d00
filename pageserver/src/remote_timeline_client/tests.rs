use std::collections::BTreeSet;
use std::time::Duration;

use remote_storage::{LocalFs, SimulatedFailures};

use super::*;
use crate::keyspace::Key;

fn metadata(lsn: u64) -> TimelineMetadata {
    TimelineMetadata {
        disk_consistent_lsn: Lsn(lsn),
        prev_record_lsn: None,
        ancestor_timeline: None,
        ancestor_lsn: Lsn(0),
        latest_gc_cutoff_lsn: Lsn(0),
        initdb_lsn: Lsn(0x100),
        pg_version: 15,
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    local: PathBuf,
    plain: GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
    deletions: DeletionQueue,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().join("bucket")).unwrap();
    let fs = LocalFs::new(root, Duration::from_secs(30), Duration::from_secs(10)).unwrap();
    let local = dir.path().join("timeline");
    std::fs::create_dir_all(&local).unwrap();
    let plain = GenericRemoteStorage::LocalFs(fs);
    let deletions = DeletionQueue::start(
        &dir.path().join("ps"),
        plain.clone(),
        None,
        utils::crashsafe::Sync::No,
        CancellationToken::new(),
    )
    .unwrap();
    Setup {
        local,
        plain,
        deletions,
        _dir: dir,
        tenant: TenantId::generate(),
        timeline: TimelineId::generate(),
    }
}

fn layer(i: u64) -> LayerName {
    LayerName::delta(Key::MIN..Key::MAX, Lsn(0x100 * i)..Lsn(0x100 * i + 0x80))
}

impl Setup {
    fn write_layer(&self, i: u64) -> PathBuf {
        let p = self.local.join(layer(i).to_string());
        std::fs::write(&p, vec![i as u8; 1000 + i as usize]).unwrap();
        p
    }

    fn client(
        &self,
        storage: GenericRemoteStorage,
        remote: Option<IndexPart>,
    ) -> RemoteTimelineClient {
        RemoteTimelineClient::new(
            storage,
            self.deletions.clone(),
            utils::TenantTimelineId::new(self.tenant, self.timeline),
            Generation(1),
            remote,
            metadata(0x100),
            ClientOptions {
                concurrency: 4,
                retry: RetryPolicy {
                    backoff: utils::backoff::Backoff {
                        initial: Duration::from_millis(2),
                        cap: Duration::from_millis(20),
                        factor: 2.0,
                    },
                    max_attempts: None,
                    warn_after: 3,
                },
            },
            CancellationToken::new(),
        )
    }

    async fn index(&self) -> Option<IndexPart> {
        download_index_part(
            &self.plain,
            self.tenant,
            self.timeline,
            Generation(1),
            &CancellationToken::new(),
        )
        .await
        .unwrap()
        .map(|(i, _)| i)
    }

    /// Every object under the timeline's prefix, after checking the bucket invariant: the
    /// uploaded index names only objects that exist, of the size it says. The queue may be
    /// running: the check uses a listing taken while the index stayed the same.
    async fn check_bucket(&self) -> BTreeSet<String> {
        let cancel = CancellationToken::new();
        let prefix = layout::timeline_prefix(self.tenant, self.timeline).unwrap();
        loop {
            let before = self.index().await;
            let listing = self
                .plain
                .list(Some(&prefix), ListingMode::NoDelimiter, None, &cancel)
                .await
                .unwrap();
            if self.index().await != before {
                continue;
            }
            let sizes: std::collections::BTreeMap<String, u64> = listing
                .keys
                .iter()
                .map(|o| (o.key.object_name().to_string(), o.size))
                .collect();
            for (name, meta) in before.iter().flat_map(|i| i.layers()) {
                let obj = format!("{name}{}", meta.generation.suffix());
                assert_eq!(
                    sizes.get(&obj),
                    Some(&meta.file_size),
                    "the index names {obj}: {sizes:?}"
                );
            }
            return sizes.into_keys().collect();
        }
    }
}

#[tokio::test]
async fn uploads_then_index_then_deletes_and_restores_from_the_index() {
    let s = setup();
    let c = s.client(s.plain.clone(), None);
    for i in 1..=3 {
        let p = s.write_layer(i);
        c.schedule_layer_upload(&layer(i), &p).unwrap();
    }
    c.schedule_index_upload(metadata(0x400)).unwrap();
    c.wait_completion().await.unwrap();
    assert_eq!(c.remote_consistent_lsn(), Some(Lsn(0x400)));
    let objects = s.check_bucket().await;
    assert_eq!(objects.len(), 4, "{objects:?}");

    c.schedule_layer_deletions(&[layer(1), layer(2)]).unwrap();
    c.wait_completion().await.unwrap();
    s.deletions.flush().await.unwrap();
    let objects = s.check_bucket().await;
    assert_eq!(objects.len(), 2, "{objects:?}");

    let (index, generation) = download_index_part(
        &s.plain,
        s.tenant,
        s.timeline,
        Generation(1),
        &CancellationToken::new(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(generation, Generation(1));
    assert_eq!(index, c.projected_index());
    let names: Vec<LayerName> = index.layers().map(|(n, _)| n).collect();
    assert_eq!(names, vec![layer(3)]);
    let meta = index.layer_metadata[&layer(3).to_string()];
    let bytes = std::fs::read(s.local.join(layer(3).to_string())).unwrap();
    assert_eq!(meta.checksum, crc32c::crc32c(&bytes));

    c.shutdown().await.unwrap();
    assert!(matches!(
        c.schedule_index_upload(metadata(0x500)),
        Err(RemoteError::Stopped { .. })
    ));
}

#[tokio::test]
async fn an_index_that_goes_back_is_refused_when_queued() {
    let s = setup();
    let c = s.client(s.plain.clone(), None);
    c.schedule_index_upload(metadata(0x400)).unwrap();
    let e = c.schedule_index_upload(metadata(0x300)).unwrap_err();
    assert!(matches!(e, RemoteError::Monotonicity { .. }), "{e}");
    assert!(e.to_string().contains("0/00000300"), "{e}");
    c.wait_completion().await.unwrap();
    assert_eq!(c.remote_consistent_lsn(), Some(Lsn(0x400)));
}

/// With half the remote calls failing, everything still lands, in order, and the bucket
/// never holds an index naming a missing layer (checked while the queue runs).
#[tokio::test]
async fn a_flaky_bucket_delays_but_loses_nothing() {
    let s = setup();
    let flaky = s.plain.clone().with_simulated_failures(&SimulatedFailures {
        test_remote_failures: 1,
        test_remote_failures_probability: Some(0.5),
    });
    let c = s.client(flaky, None);
    let mut live: Vec<u64> = Vec::new();
    for i in 1..=12 {
        let p = s.write_layer(i);
        c.schedule_layer_upload(&layer(i), &p).unwrap();
        live.push(i);
        c.schedule_index_upload(metadata(0x100 * (i + 1))).unwrap();
        if i % 4 == 0 {
            let gone: Vec<LayerName> = live.drain(..2).map(layer).collect();
            c.schedule_layer_deletions(&gone).unwrap();
        }
        s.check_bucket().await;
    }
    tokio::time::timeout(Duration::from_secs(120), c.wait_completion())
        .await
        .expect("the queue drains")
        .unwrap();
    s.deletions.flush().await.unwrap();
    let objects = s.check_bucket().await;
    assert_eq!(objects.len(), live.len() + 1, "{objects:?}");
    assert_eq!(c.remote_consistent_lsn(), Some(Lsn(0x100 * 13)));
}

#[tokio::test]
async fn a_corrupt_or_newer_index_is_a_clear_error() {
    let s = setup();
    let cancel = CancellationToken::new();
    let path = layout::index_path(s.tenant, s.timeline, Generation(1)).unwrap();
    for (body, expect) in [
        (&b"{\"version\": 1, \"layer_meta"[..], "corrupt"),
        (br#"{"version": 7}"#, "version 7"),
    ] {
        s.plain
            .upload(
                UploadSource::from_bytes(Bytes::copy_from_slice(body)),
                body.len() as u64,
                &path,
                None,
                &cancel,
            )
            .await
            .unwrap();
        let e = download_index_part(&s.plain, s.tenant, s.timeline, Generation(1), &cancel)
            .await
            .unwrap_err();
        assert!(e.to_string().contains(expect), "{e}");
    }
    // A newer generation's index is not this attachment's to read.
    let newer = layout::index_path(s.tenant, s.timeline, Generation(2)).unwrap();
    let good = IndexPart::empty(metadata(0x100)).to_json().unwrap();
    s.plain
        .upload(
            UploadSource::from_bytes(good.clone()),
            good.len() as u64,
            &newer,
            None,
            &cancel,
        )
        .await
        .unwrap();
    let got = download_index_part(&s.plain, s.tenant, s.timeline, Generation(3), &cancel)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.1, Generation(2));
}
