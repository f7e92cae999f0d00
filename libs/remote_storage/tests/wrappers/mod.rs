//! The unreliable wrapper under the retrying wrapper, on LocalFs.

use std::time::Duration;

use remote_storage::{
    DownloadOpts, Error, GenericRemoteStorage, ListingMode, SimulatedFailures, StorageMetadata,
    UploadSource,
};
use tokio_util::sync::CancellationToken;
use utils::backoff::{Backoff, RetryPolicy};

use crate::suite::{path, put};

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        backoff: Backoff {
            initial: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            factor: 2.0,
        },
        max_attempts: Some(max_attempts),
        warn_after: 100,
    }
}

async fn flaky(
    failures: u64,
    max_attempts: u32,
) -> (
    GenericRemoteStorage,
    GenericRemoteStorage,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let root = camino::Utf8PathBuf::from_path_buf(dir.path().join("remote")).unwrap();
    let plain =
        GenericRemoteStorage::from_config(&remote_storage::RemoteStorageConfig::local_fs(root))
            .await
            .unwrap();
    let wrapped = plain
        .clone()
        .with_simulated_failures(&SimulatedFailures {
            test_remote_failures: failures,
            test_remote_failures_probability: None,
        })
        .with_retries(policy(max_attempts));
    (plain, wrapped, dir)
}

/// Through the retrying wrapper a listing still comes page by page (1000 keys each), so
/// `delete_prefix` of a large prefix holds one page at a time, and deletes all of it.
#[tokio::test]
async fn retried_listings_and_delete_prefix_go_page_by_page() {
    use futures::StreamExt;
    let (plain, s, _dir) = flaky(1, 4).await;
    let cancel = CancellationToken::new();
    let keys: Vec<String> = (0..2100).map(|i| format!("many/{i:05}")).collect();
    futures::stream::iter(&keys)
        .for_each_concurrent(16, |k| put(&plain, k, "x"))
        .await;
    put(&plain, "manyother", "kept").await;
    let prefix = path("many/");
    let pages: Vec<usize> = s
        .list_streaming(Some(&prefix), ListingMode::NoDelimiter, None, &cancel)
        .map(|p| p.unwrap().keys.len())
        .collect()
        .await;
    assert_eq!(pages, vec![1000, 1000, 100]);
    s.delete_prefix(&prefix, &cancel).await.unwrap();
    let left = plain
        .list(None, ListingMode::NoDelimiter, None, &cancel)
        .await
        .unwrap();
    let left: Vec<&str> = left.keys.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(left, ["manyother"]);
}

#[tokio::test]
async fn every_operation_succeeds_through_three_failures() {
    let (plain, s, _dir) = flaky(3, 4).await;
    assert!(matches!(s, GenericRemoteStorage::Retrying(_)));
    assert_eq!(s.backend_name(), "local_fs");
    let cancel = CancellationToken::new();
    let meta = StorageMetadata::from_pairs([("gen", "1")]).unwrap();
    s.upload(
        UploadSource::from_bytes("hello"),
        5,
        &path("w/a"),
        Some(meta.clone()),
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(s.head(&path("w/a"), &cancel).await.unwrap().metadata, meta);
    let d = s
        .download(&path("w/a"), &DownloadOpts::default(), &cancel)
        .await
        .unwrap();
    assert_eq!(d.read_all().await.unwrap(), "hello");
    s.copy(&path("w/a"), &path("w/b"), &cancel).await.unwrap();
    let listing = s
        .list(Some(&path("w/")), ListingMode::NoDelimiter, None, &cancel)
        .await
        .unwrap();
    assert_eq!(listing.keys.len(), 2);
    s.delete(&path("w/a"), &cancel).await.unwrap();
    s.delete_objects(&[path("w/b"), path("w/c")], &cancel)
        .await
        .unwrap();
    put(&plain, "w/d/1", "1").await;
    s.delete_prefix(&path("w/"), &cancel).await.unwrap();
    assert!(
        plain
            .list(None, ListingMode::NoDelimiter, None, &cancel)
            .await
            .unwrap()
            .keys
            .is_empty()
    );
    // The same operation again fails three more times and still succeeds.
    s.upload(
        UploadSource::from_bytes("again"),
        5,
        &path("w/a"),
        None,
        &cancel,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn gives_up_with_a_clear_error_when_the_bound_is_below_the_failures() {
    let (_plain, s, _dir) = flaky(3, 2).await;
    let cancel = CancellationToken::new();
    let e = s
        .upload(
            UploadSource::from_bytes("x"),
            1,
            &path("g/a"),
            None,
            &cancel,
        )
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::GaveUp { attempts: 2, .. }), "{e:?}");
    assert!(
        msg.contains("upload g/a: gave up after 2 attempts"),
        "{msg}"
    );
    assert!(msg.contains("simulated failure"), "{msg}");
    assert!(!e.is_transient(), "giving up is final");
    let e = s.head(&path("g/a"), &cancel).await.unwrap_err();
    assert!(matches!(e, Error::GaveUp { attempts: 2, .. }), "{e:?}");
    let e = s
        .list(None, ListingMode::WithDelimiter, None, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::GaveUp { .. }), "{e:?}");
}

#[tokio::test]
async fn permanent_errors_and_cancellation_are_not_retried() {
    let (_plain, s, _dir) = flaky(0, 5).await;
    let cancel = CancellationToken::new();
    let e = s.head(&path("missing"), &cancel).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    // A one-shot stream cannot be replayed: the second use fails permanently.
    let once = UploadSource::once(futures::stream::iter([Ok(bytes::Bytes::from_static(b"x"))]));
    s.upload(once.clone(), 1, &path("o"), None, &cancel)
        .await
        .unwrap();
    let e = s
        .upload(once, 1, &path("o"), None, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Permanent(_)), "{e:?}");
    cancel.cancel();
    let (_plain, s, _dir) = flaky(3, 100).await;
    let e = s.head(&path("missing"), &cancel).await.unwrap_err();
    assert!(e.is_cancelled(), "{e:?}");
}

#[tokio::test]
async fn probability_one_always_fails() {
    let dir = tempfile::tempdir().unwrap();
    let root = camino::Utf8PathBuf::from_path_buf(dir.path().join("remote")).unwrap();
    let s = GenericRemoteStorage::from_config(&remote_storage::RemoteStorageConfig::local_fs(root))
        .await
        .unwrap()
        .with_simulated_failures(&SimulatedFailures {
            test_remote_failures: 0,
            test_remote_failures_probability: Some(1.0),
        })
        .with_retries(policy(3));
    let e = s
        .head(&path("x"), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::GaveUp { attempts: 3, .. }), "{e:?}");
}
