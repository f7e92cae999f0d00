use std::sync::atomic::AtomicBool;

use axum::routing::post;
use camino::Utf8PathBuf;
use pageserver_api::upcall::{ValidateRequest, ValidateResponse, ValidateResult};
use remote_storage::{LocalFs, UploadSource};

use super::*;

struct Setup {
    dir: tempfile::TempDir,
    storage: GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().join("bucket")).unwrap();
    let fs = LocalFs::new(root, Duration::from_secs(30), Duration::from_secs(10)).unwrap();
    Setup {
        dir,
        storage: GenericRemoteStorage::LocalFs(fs),
        tenant: TenantId::generate(),
        timeline: TimelineId::generate(),
    }
}

impl Setup {
    fn workdir(&self) -> PathBuf {
        self.dir.path().join("ps")
    }

    async fn put(&self, name: &str) -> RemotePath {
        let p = RemotePath::new(&format!("tenants/{}/{name}", self.tenant)).unwrap();
        self.storage
            .upload(
                UploadSource::from_bytes(b"x".to_vec()),
                1,
                &p,
                None,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        p
    }

    async fn exists(&self, p: &RemotePath) -> bool {
        self.storage
            .head(p, &CancellationToken::new())
            .await
            .is_ok()
    }

    fn start(&self, validator: Option<ControlPlaneClient>) -> (DeletionQueue, CancellationToken) {
        let cancel = CancellationToken::new();
        let q = DeletionQueue::start(
            &self.workdir(),
            self.storage.clone(),
            validator,
            Sync::No,
            cancel.clone(),
        )
        .unwrap();
        (q, cancel)
    }

    fn list_files(&self, ext: &str) -> usize {
        std::fs::read_dir(self.workdir().join(DELETION_DIR))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(ext)
            })
            .count()
    }
}

/// A control plane whose current generation for every tenant is `current`; answers 503
/// while `down` is set.
async fn fake_control_plane(
    current: u32,
    down: Arc<AtomicBool>,
) -> (ControlPlaneClient, CancellationToken) {
    let app = axum::Router::new().route(
        "/upcall/v1/validate",
        post(move |axum::Json(req): axum::Json<ValidateRequest>| {
            let down = Arc::clone(&down);
            async move {
                if down.load(Ordering::SeqCst) {
                    return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                }
                Ok(axum::Json(ValidateResponse {
                    tenants: req
                        .tenants
                        .into_iter()
                        .map(|t| ValidateResult {
                            id: t.id,
                            generation: t.generation,
                            valid: t.generation == Generation(current),
                        })
                        .collect(),
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    let client = ControlPlaneClient::new(&format!("http://{addr}/upcall/v1/"), None).unwrap();
    (client, cancel)
}

#[tokio::test]
async fn without_a_control_plane_deletions_run_and_their_lists_go() {
    let s = setup();
    let (q, cancel) = s.start(None);
    let a = s.put("a").await;
    let b = s.put("b").await;
    q.push(s.tenant, s.timeline, Generation(1), &[a.clone(), b.clone()])
        .unwrap();
    q.flush().await.unwrap();
    assert!(!s.exists(&a).await && !s.exists(&b).await);
    assert_eq!(q.pending(), 0);
    assert_eq!(s.list_files(".list"), 0);
    cancel.cancel();
}

#[tokio::test]
async fn lists_left_by_a_crash_are_resumed_and_corrupt_ones_set_aside() {
    let s = setup();
    let a = s.put("a").await;
    let keep = s.put("keep").await;
    let dir = s.workdir().join(DELETION_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    // A list written before the crash, one torn by it, and one from a future version.
    let list = DeletionList {
        version: LIST_VERSION,
        sequence: 7,
        tenant_id: s.tenant,
        timeline_id: s.timeline,
        generation: Generation(1),
        objects: vec![a.as_str().to_string()],
    };
    std::fs::write(list_path(&dir, 7), serde_json::to_vec(&list).unwrap()).unwrap();
    std::fs::write(list_path(&dir, 8), b"{\"version\":1,\"seq").unwrap();
    let future = DeletionList {
        version: LIST_VERSION + 1,
        sequence: 9,
        objects: vec![keep.as_str().to_string()],
        ..list.clone()
    };
    std::fs::write(list_path(&dir, 9), serde_json::to_vec(&future).unwrap()).unwrap();

    let (q, cancel) = s.start(None);
    q.flush().await.unwrap();
    assert!(!s.exists(&a).await, "the resumed list ran");
    assert!(
        s.exists(&keep).await,
        "a list it cannot read deletes nothing"
    );
    assert_eq!(s.list_files(".list"), 0);
    assert_eq!(s.list_files(".list.corrupt"), 2);
    // New lists continue after the highest sequence seen, corrupt ones included, so a
    // set-aside file is never overwritten.
    let b = s.put("b").await;
    q.push(
        s.tenant,
        s.timeline,
        Generation(1),
        std::slice::from_ref(&b),
    )
    .unwrap();
    assert_eq!(q.inner.state.lock().next_sequence, 11);
    q.flush().await.unwrap();
    assert!(!s.exists(&b).await);
    cancel.cancel();
}

#[tokio::test]
async fn a_stale_generation_s_lists_are_dropped_and_its_lsn_not_published() {
    let s = setup();
    let down = Arc::new(AtomicBool::new(false));
    let (cp, cp_stop) = fake_control_plane(2, down).await;
    let (q, cancel) = s.start(Some(cp));
    let stale = s.put("stale").await;
    let current = s.put("current").await;
    q.push(
        s.tenant,
        s.timeline,
        Generation(1),
        std::slice::from_ref(&stale),
    )
    .unwrap();
    q.push(
        s.tenant,
        s.timeline,
        Generation(2),
        std::slice::from_ref(&current),
    )
    .unwrap();
    let old_visible = Arc::new(AtomicU64::new(0));
    let new_visible = Arc::new(AtomicU64::new(0));
    q.publish_lsn(
        s.tenant,
        Generation(1),
        Lsn(0x500),
        Arc::clone(&old_visible),
    );
    q.publish_lsn(
        s.tenant,
        Generation(2),
        Lsn(0x600),
        Arc::clone(&new_visible),
    );
    q.flush().await.unwrap();
    assert!(s.exists(&stale).await, "a stale generation deletes nothing");
    assert!(!s.exists(&current).await);
    assert_eq!(
        s.list_files(".list"),
        0,
        "the stale list is dropped, not kept"
    );
    // The LSNs went through the same round.
    assert_eq!(old_visible.load(Ordering::Acquire), 0);
    assert_eq!(new_visible.load(Ordering::Acquire), 0x600);
    assert!(!q.validate_now(s.tenant, Generation(1)).await.unwrap());
    assert!(q.validate_now(s.tenant, Generation(2)).await.unwrap());
    cancel.cancel();
    cp_stop.cancel();
}

#[tokio::test]
async fn deletions_wait_while_the_control_plane_is_unreachable() {
    let s = setup();
    let down = Arc::new(AtomicBool::new(true));
    let (cp, cp_stop) = fake_control_plane(1, Arc::clone(&down)).await;
    let (q, cancel) = s.start(Some(cp));
    let a = s.put("a").await;
    q.push(
        s.tenant,
        s.timeline,
        Generation(1),
        std::slice::from_ref(&a),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.exists(&a).await, "nothing deleted without a validation");
    assert_eq!(q.pending(), 1);
    assert_eq!(s.list_files(".list"), 1);
    down.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), q.flush())
        .await
        .expect("the queue retries validation")
        .unwrap();
    assert!(!s.exists(&a).await);
    cancel.cancel();
    cp_stop.cancel();
}

#[tokio::test]
async fn a_stopped_queue_refuses_pushes() {
    let s = setup();
    let (q, cancel) = s.start(None);
    cancel.cancel();
    let a = s.put("a").await;
    let e = q
        .push(
            s.tenant,
            s.timeline,
            Generation(1),
            std::slice::from_ref(&a),
        )
        .unwrap_err();
    assert!(matches!(e, DeletionError::Stopped), "{e}");
    assert!(matches!(
        q.flush().await,
        Ok(()) | Err(DeletionError::Stopped)
    ));
}

#[tokio::test]
async fn a_held_tenant_s_deletions_and_lsns_wait_and_a_forgotten_one_s_are_dropped() {
    let s = setup();
    let (q, cancel) = s.start(None);
    let other = TenantId::generate();
    let a = s.put("a").await;
    let b = s.put("b").await;
    let c = s.put("c").await;
    q.hold(s.tenant, true);
    q.push(
        s.tenant,
        s.timeline,
        Generation(1),
        std::slice::from_ref(&a),
    )
    .unwrap();
    let visible = Arc::new(AtomicU64::new(0));
    q.publish_lsn(s.tenant, Generation(1), Lsn(0x700), Arc::clone(&visible));
    // Another tenant's deletions are not blocked by it, and flush does not wait for it.
    q.push(other, s.timeline, Generation(1), std::slice::from_ref(&b))
        .unwrap();
    q.flush().await.unwrap();
    assert!(!s.exists(&b).await);
    tokio::time::sleep(BATCH_DELAY * 4).await;
    assert!(s.exists(&a).await, "held: nothing of the tenant runs");
    assert_eq!(visible.load(Ordering::Acquire), 0);
    assert_eq!(q.pending(), 1);

    q.hold(s.tenant, false);
    q.flush().await.unwrap();
    assert!(!s.exists(&a).await, "released: it runs");
    // The LSN goes in the same round as the list, before it.
    assert_eq!(visible.load(Ordering::Acquire), 0x700);

    q.hold(s.tenant, true);
    q.push(
        s.tenant,
        s.timeline,
        Generation(1),
        std::slice::from_ref(&c),
    )
    .unwrap();
    q.forget_tenant(s.tenant);
    assert!(!q.is_held(s.tenant));
    assert_eq!(q.pending(), 0);
    assert_eq!(s.list_files(".list"), 0);
    q.flush().await.unwrap();
    assert!(s.exists(&c).await, "a forgotten tenant's list never runs");
    cancel.cancel();
}
