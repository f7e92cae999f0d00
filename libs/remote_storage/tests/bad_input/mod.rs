//! Bad input and bad configuration: rejected before any request, named in errors, bounded
//! by the timeouts.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use remote_storage::{
    DownloadOpts, Error, GenericRemoteStorage, ListingMode, RemoteStorageConfig, UploadSource,
};
use tokio_util::sync::CancellationToken;

use crate::common::{self, azure_config, s3_config};
use crate::suite::path;

/// A port that accepts TCP connections (kernel backlog) but never answers.
fn silent_listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    (l, addr)
}

fn short_timeouts(mut c: RemoteStorageConfig) -> RemoteStorageConfig {
    c.small_timeout = Duration::from_secs(1);
    c.timeout = Duration::from_secs(2);
    c
}

async fn all_backends_at(endpoint: &str) -> Vec<GenericRemoteStorage> {
    let s3 = short_timeouts(s3_config(endpoint, "no-such-bucket", None));
    let az = short_timeouts(azure_config(
        &format!("{endpoint}/devstoreaccount1"),
        "nocontainer",
        None,
    ));
    vec![
        GenericRemoteStorage::from_config(&s3).await.unwrap(),
        GenericRemoteStorage::from_config(&az).await.unwrap(),
    ]
}

#[tokio::test]
async fn invalid_paths_are_rejected_before_any_request() {
    let (listener, endpoint) = silent_listener();
    let cancel = CancellationToken::new();
    for s in all_backends_at(&endpoint).await {
        let backend = s.backend_name();
        let before = remote_storage::metrics::requests_started(backend, "upload");
        let e = s
            .upload(
                UploadSource::from_bytes("x"),
                1,
                &path("prefix/"),
                None,
                &cancel,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidPath(_)), "{backend}: {e:?}");
        assert!(matches!(
            s.head(&path("p/"), &cancel).await,
            Err(Error::InvalidPath(_))
        ));
        assert!(matches!(
            s.delete_objects(&[path("ok"), path("p/")], &cancel).await,
            Err(Error::InvalidPath(_))
        ));
        let e = s
            .download(&path("k"), &DownloadOpts::range(5, Some(5)), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::BadInput(_)), "{backend}: {e:?}");
        assert_eq!(
            remote_storage::metrics::requests_started(backend, "upload"),
            before
        );
    }
    // Nothing ever connected.
    assert!(
        listener.accept().is_err(),
        "a request was sent for invalid input"
    );
}

#[tokio::test]
async fn wrong_endpoint_fails_within_the_timeout() {
    let cancel = CancellationToken::new();
    // A server that never answers: the small timeout bounds the call.
    let (_listener, silent) = silent_listener();
    for s in all_backends_at(&silent).await {
        let started = Instant::now();
        let e = s.head(&path("k"), &cancel).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(e, Error::Timeout(_)),
            "{}: {e:?}",
            s.backend_name()
        );
        assert!(e.is_transient());
        assert!(
            took < Duration::from_secs(3),
            "{}: took {took:?}",
            s.backend_name()
        );
        let started = Instant::now();
        let e = s
            .list(None, ListingMode::NoDelimiter, None, &cancel)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Timeout(_)),
            "{}: {e:?}",
            s.backend_name()
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // Nothing listening: a prompt transient error.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    for s in all_backends_at(&closed).await {
        let started = Instant::now();
        let e = s.head(&path("k"), &cancel).await.unwrap_err();
        assert!(e.is_transient(), "{}: {e:?}", s.backend_name());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_named() {
    if common::skip_remote_servers() {
        return;
    }
    let server = tokio::task::spawn_blocking(common::moto).await.unwrap();
    let bucket = common::unique_name("missing");
    let s = GenericRemoteStorage::from_config(&s3_config(&server.endpoint, &bucket, None))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let e = s
        .list(None, ListingMode::NoDelimiter, None, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ContainerNotFound(_)), "{e:?}");
    assert!(e.to_string().contains(&bucket), "{e}");
    assert!(!e.is_transient());
    let e = s
        .upload(UploadSource::from_bytes("x"), 1, &path("k"), None, &cancel)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&bucket), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_container_is_named() {
    if common::skip_remote_servers() {
        return;
    }
    let server = tokio::task::spawn_blocking(common::azurite).await.unwrap();
    let container = common::unique_name("missing");
    let s = GenericRemoteStorage::from_config(&azure_config(&server.endpoint, &container, None))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let e = s
        .list(None, ListingMode::NoDelimiter, None, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ContainerNotFound(_)), "{e:?}");
    assert!(e.to_string().contains(&container), "{e}");
    let e = s
        .upload(UploadSource::from_bytes("x"), 1, &path("k"), None, &cancel)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&container), "{e}");
}

#[tokio::test]
async fn config_errors_name_the_field() {
    let e = RemoteStorageConfig::from_toml("bucket_name = \"b\"\nprefix_in_bucket = \"a/../b\"")
        .unwrap_err();
    assert!(e.to_string().contains("bucket_region"), "{e}");
    let e = RemoteStorageConfig::from_toml(
        "container_name = \"c\"\nstorage_account = \"a\"\nprefix_in_container = \"a/../b\"",
    )
    .unwrap_err();
    assert!(e.to_string().contains("prefix_in_container"), "{e}");
}
