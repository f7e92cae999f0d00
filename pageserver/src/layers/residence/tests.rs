use std::time::Duration;

use camino::Utf8PathBuf;
use pageserver_api::Generation;
use remote_storage::{LocalFs, UploadSource};
use utils::Lsn;

use super::*;
use crate::keyspace::Key;
use crate::layers::file_format::LayerWriter;
use crate::remote_timeline_client::{file_checksum, layout};

struct Setup {
    _dir: tempfile::TempDir,
    home: Arc<LayerHome>,
    storage: GenericRemoteStorage,
}

fn key(n: u32) -> Key {
    Key { f6: n, ..Key::MIN }
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().join("bucket")).unwrap();
    let storage = GenericRemoteStorage::LocalFs(
        LocalFs::new(root, Duration::from_secs(30), Duration::from_secs(10)).unwrap(),
    );
    let tl_dir = dir.path().join("timeline");
    std::fs::create_dir_all(&tl_dir).unwrap();
    let home = Arc::new(LayerHome {
        tenant: TenantId::generate(),
        timeline: TimelineId::generate(),
        dir: tl_dir,
        storage: Some(storage.clone()),
        cache: Arc::new(PageCache::new(64)),
        sync: Sync::No,
    });
    Setup {
        _dir: dir,
        home,
        storage,
    }
}

impl Setup {
    /// A real layer file with 100 values, uploaded as the index would name it.
    async fn uploaded_layer(&self) -> (Arc<Layer>, LayerFileMeta) {
        let name = LayerName::delta(Key::MIN..Key::MAX, Lsn(1)..Lsn(0x1000));
        let mut w = LayerWriter::create(
            &self.home.dir,
            self.home.tenant,
            self.home.timeline,
            &name,
            false,
        )
        .unwrap();
        for i in 0..100u32 {
            w.put(key(i), Lsn(0x10), &i.to_be_bytes(), true, true)
                .unwrap();
        }
        let (path, _) = w.finish(Sync::No).unwrap();
        let (file_size, checksum) = file_checksum(&path).unwrap();
        let meta = LayerFileMeta {
            file_size,
            generation: Generation(1),
            checksum,
        };
        let remote =
            layout::layer_path(self.home.tenant, self.home.timeline, &name, meta.generation)
                .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        self.storage
            .upload(
                UploadSource::from_bytes(bytes),
                file_size,
                &remote,
                None,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        let file = LayerFile::open(&path, self.home.cache.clone()).unwrap();
        (
            Layer::resident(name, Arc::new(file), self.home.clone()),
            meta,
        )
    }
}

fn values(f: &LayerFile) -> usize {
    let mut refs = Vec::new();
    let mut n = 0;
    for i in 0..100u32 {
        refs.clear();
        f.refs_for_key(key(i), Lsn(1)..Lsn(0x1000), &mut refs)
            .unwrap();
        n += refs.len();
    }
    n
}

#[tokio::test]
async fn evict_leaves_a_stub_and_a_read_brings_the_file_back() {
    let s = setup();
    let (layer, meta) = s.uploaded_layer().await;
    let held = layer.file().unwrap();
    assert!(layer.evict(meta).unwrap());
    assert!(!layer.evict(meta).unwrap(), "a second eviction is a no-op");
    assert!(!layer.local_path().exists());
    let stub_path = EvictedStub::path(&s.home.dir, layer.name());
    assert_eq!(EvictedStub::load(&stub_path).unwrap().meta, meta);
    assert!(layer.file().is_none());
    // A reader that held the file keeps reading it.
    assert_eq!(values(&held), 100);

    let back = layer.get_or_download().await.unwrap();
    assert_eq!(values(&back), 100);
    assert!(layer.is_resident() && layer.local_path().exists());
    assert!(
        !stub_path.exists(),
        "the stub goes once the file is in place"
    );
    assert_eq!(layer.file_size(), meta.file_size);
}

#[tokio::test]
async fn concurrent_readers_of_an_evicted_layer_share_one_download() {
    let s = setup();
    let (layer, meta) = s.uploaded_layer().await;
    layer.evict(meta).unwrap();
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let l = layer.clone();
            tokio::spawn(async move { l.get_or_download().await.unwrap() })
        })
        .collect();
    let mut files = Vec::new();
    for r in reads {
        files.push(r.await.unwrap());
    }
    // One download opened one file: every reader got that same one.
    assert!(files.iter().all(|f| Arc::ptr_eq(f, &files[0])));
}

#[test]
fn a_synchronous_reader_downloads_too() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = setup();
    let (layer, meta) = rt.block_on(s.uploaded_layer());
    layer.evict(meta).unwrap();
    // From inside a current-thread runtime (a helper thread downloads) ...
    let f = rt.block_on(async { layer.get_or_download_blocking().unwrap() });
    assert_eq!(values(&f), 100);
    // ... and from outside any runtime.
    layer.evict(meta).unwrap();
    assert_eq!(values(&layer.get_or_download_blocking().unwrap()), 100);
}

#[tokio::test]
async fn without_remote_storage_an_evicted_layer_is_a_clear_error() {
    let s = setup();
    let (layer, meta) = s.uploaded_layer().await;
    layer.evict(meta).unwrap();
    let home = Arc::new(LayerHome {
        storage: None,
        tenant: s.home.tenant,
        timeline: s.home.timeline,
        dir: s.home.dir.clone(),
        cache: s.home.cache.clone(),
        sync: Sync::No,
    });
    let stub = EvictedStub::load(&EvictedStub::path(&s.home.dir, layer.name())).unwrap();
    let orphan = Layer::evicted(layer.name().clone(), stub, home);
    let e = orphan.get_or_download().await.unwrap_err();
    assert!(e.to_string().contains("no remote_storage"), "{e}");
}
