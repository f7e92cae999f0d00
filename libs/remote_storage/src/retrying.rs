//! [`RetryingWrapper`]: retries transient errors with exponential backoff and jitter
//! (`utils::backoff`), up to a bound.
//!
//! Invariants:
//! - Only [`Error::is_transient`] errors are retried; a permanent error is returned as it
//!   is on the first occurrence, and cancellation stops at once (also during a backoff).
//! - When the bound is reached the error is [`Error::GaveUp`], naming the operation, the
//!   attempt count and the last error; it is permanent, so an outer retry loop stops too.
//! - Uploads restart from the beginning of their [`UploadSource`]; a one-shot source makes
//!   the second attempt fail permanently instead of uploading a truncated object.
//! - A download is retried until its response starts; errors while reading the body are
//!   the caller's to handle (it knows how much it has consumed).
//! - A streaming listing is retried as a whole and delivered as one page.

use std::num::NonZeroU32;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use utils::backoff::{RetryError, RetryPolicy, retry};

use crate::{
    Download, DownloadOpts, Error, GenericRemoteStorage, Listing, ListingMode, ObjectMeta,
    RemotePath, StorageMetadata, UploadSource,
};

/// Retries the wrapped storage's transient failures; see the module docs.
#[derive(Debug)]
pub struct RetryingWrapper {
    inner: GenericRemoteStorage,
    policy: RetryPolicy,
}

impl RetryingWrapper {
    /// Wraps `inner`; `policy.max_attempts` is the bound (`None`: until cancelled).
    pub fn new(inner: GenericRemoteStorage, policy: RetryPolicy) -> RetryingWrapper {
        RetryingWrapper { inner, policy }
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &GenericRemoteStorage {
        &self.inner
    }

    async fn run<T, Fut>(
        &self,
        op: String,
        cancel: &CancellationToken,
        f: impl FnMut() -> Fut,
    ) -> Result<T, Error>
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        match retry(&op, self.policy, cancel, |e: &Error| !e.is_transient(), f).await {
            Ok(v) => Ok(v),
            Err(RetryError::Permanent(e)) => Err(e),
            Err(RetryError::Exhausted { attempts, last }) => Err(Error::GaveUp {
                op,
                attempts,
                last: Box::new(last),
            }),
            Err(RetryError::Cancelled) => Err(Error::Cancelled),
        }
    }

    /// Retried [`GenericRemoteStorage::list`].
    pub fn list<'a>(
        &'a self,
        prefix: Option<&'a RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Listing, Error>> {
        let what = format!("list {}", prefix.map_or("", RemotePath::as_str));
        self.run(what, cancel, move || {
            self.inner.list(prefix, mode, max_keys, cancel)
        })
        .boxed()
    }

    /// Retried listing, delivered as one page.
    pub fn list_streaming<'a>(
        &'a self,
        prefix: Option<&'a RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &'a CancellationToken,
    ) -> BoxStream<'a, Result<Listing, Error>> {
        futures::stream::once(self.list(prefix, mode, max_keys, cancel)).boxed()
    }

    /// Retried [`GenericRemoteStorage::head`].
    pub fn head<'a>(
        &'a self,
        path: &'a RemotePath,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<ObjectMeta, Error>> {
        self.run(format!("head {path}"), cancel, move || {
            self.inner.head(path, cancel)
        })
        .boxed()
    }

    /// Retried [`GenericRemoteStorage::upload`]: each attempt reopens `source`.
    pub fn upload<'a>(
        &'a self,
        source: UploadSource,
        size: u64,
        to: &'a RemotePath,
        metadata: Option<StorageMetadata>,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.run(format!("upload {to}"), cancel, move || {
            self.inner
                .upload(source.clone(), size, to, metadata.clone(), cancel)
        })
        .boxed()
    }

    /// Retried [`GenericRemoteStorage::download`] (until the response starts).
    pub fn download<'a>(
        &'a self,
        from: &'a RemotePath,
        opts: &'a DownloadOpts,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Download, Error>> {
        self.run(format!("download {from}"), cancel, move || {
            self.inner.download(from, opts, cancel)
        })
        .boxed()
    }

    /// Retried [`GenericRemoteStorage::delete`].
    pub fn delete<'a>(
        &'a self,
        path: &'a RemotePath,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.run(format!("delete {path}"), cancel, move || {
            self.inner.delete(path, cancel)
        })
        .boxed()
    }

    /// Retried [`GenericRemoteStorage::delete_objects`] (deletes are idempotent).
    pub fn delete_objects<'a>(
        &'a self,
        paths: &'a [RemotePath],
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let what = format!("delete {} objects", paths.len());
        self.run(what, cancel, move || {
            self.inner.delete_objects(paths, cancel)
        })
        .boxed()
    }

    /// Retried [`GenericRemoteStorage::copy`].
    pub fn copy<'a>(
        &'a self,
        from: &'a RemotePath,
        to: &'a RemotePath,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.run(format!("copy {from} to {to}"), cancel, move || {
            self.inner.copy(from, to, cancel)
        })
        .boxed()
    }
}
