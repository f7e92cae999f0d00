//! [`UnreliableWrapper`]: injects transient failures, for tests of the code that must
//! survive them (the retrying wrapper, the pageserver's upload queue, safekeeper backup).
//!
//! Each distinct operation (kind and paths) fails its first `attempts_to_fail` attempts and
//! then succeeds once; the count starts over after that success, so every later repetition
//! fails again the same way. Optionally each attempt also fails with a given probability.
//! Failures are [`Error::Transient`] and happen before the inner storage is called, so
//! they never leave partial effects. Services enable it with `test_remote_failures = N`
//! ([`crate::SimulatedFailures`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::num::NonZeroU32;
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::{
    Download, DownloadOpts, Error, GenericRemoteStorage, Listing, ListingMode, ObjectMeta,
    RemotePath, StorageMetadata, UploadSource,
};

/// One distinct operation, as the failure counter sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemoteOp {
    /// A listing of a prefix (`None`: everything) in a mode.
    List(Option<RemotePath>, ListingMode),
    /// A head of one object.
    Head(RemotePath),
    /// An upload to one key.
    Upload(RemotePath),
    /// A download of one object.
    Download(RemotePath),
    /// A delete of one object.
    Delete(RemotePath),
    /// A batch delete.
    DeleteObjects(Vec<RemotePath>),
    /// A copy.
    Copy(RemotePath, RemotePath),
}

/// Fails operations on purpose; see the module docs.
#[derive(Debug)]
pub struct UnreliableWrapper {
    inner: GenericRemoteStorage,
    attempts_to_fail: u64,
    failure_probability: Option<f64>,
    attempts: Mutex<HashMap<RemoteOp, u64>>,
}

impl UnreliableWrapper {
    /// Fails the first `attempts_to_fail` attempts of each operation, and each attempt with
    /// `failure_probability` (0.0–1.0) when given.
    pub fn new(
        inner: GenericRemoteStorage,
        attempts_to_fail: u64,
        failure_probability: Option<f64>,
    ) -> UnreliableWrapper {
        UnreliableWrapper {
            inner,
            attempts_to_fail,
            failure_probability: failure_probability.map(|p| p.clamp(0.0, 1.0)),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &GenericRemoteStorage {
        &self.inner
    }

    /// Decides whether this attempt of `op` fails.
    fn attempt(&self, op: RemoteOp) -> Result<(), Error> {
        if let Some(p) = self.failure_probability
            && rand::random::<f64>() < p
        {
            return Err(Error::Transient(anyhow::anyhow!(
                "simulated failure of {op:?} (probability {p})"
            )));
        }
        if self.attempts_to_fail == 0 {
            return Ok(());
        }
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = match attempts.entry(op.clone()) {
            Entry::Occupied(mut e) => {
                *e.get_mut() += 1;
                if *e.get() > self.attempts_to_fail {
                    e.remove();
                    return Ok(());
                }
                *e.get()
            }
            Entry::Vacant(e) => *e.insert(1),
        };
        Err(Error::Transient(anyhow::anyhow!(
            "simulated failure of {op:?} (attempt {n} of the {} that fail)",
            self.attempts_to_fail
        )))
    }

    /// Possibly failing listing.
    pub fn list_streaming<'a>(
        &'a self,
        prefix: Option<&'a RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &'a CancellationToken,
    ) -> BoxStream<'a, Result<Listing, Error>> {
        match self.attempt(RemoteOp::List(prefix.cloned(), mode)) {
            Err(e) => futures::stream::once(async { Err(e) }).boxed(),
            Ok(()) => self.inner.list_streaming(prefix, mode, max_keys, cancel),
        }
    }

    /// Possibly failing head.
    pub fn head<'a>(
        &'a self,
        path: &'a RemotePath,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<ObjectMeta, Error>> {
        async move {
            self.attempt(RemoteOp::Head(path.clone()))?;
            self.inner.head(path, cancel).await
        }
        .boxed()
    }

    /// Possibly failing upload.
    pub fn upload<'a>(
        &'a self,
        source: UploadSource,
        size: u64,
        to: &'a RemotePath,
        metadata: Option<StorageMetadata>,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            self.attempt(RemoteOp::Upload(to.clone()))?;
            self.inner.upload(source, size, to, metadata, cancel).await
        }
        .boxed()
    }

    /// Possibly failing download.
    pub fn download<'a>(
        &'a self,
        from: &'a RemotePath,
        opts: &'a DownloadOpts,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Download, Error>> {
        async move {
            self.attempt(RemoteOp::Download(from.clone()))?;
            self.inner.download(from, opts, cancel).await
        }
        .boxed()
    }

    /// Possibly failing delete.
    pub fn delete<'a>(
        &'a self,
        path: &'a RemotePath,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            self.attempt(RemoteOp::Delete(path.clone()))?;
            self.inner.delete(path, cancel).await
        }
        .boxed()
    }

    /// Possibly failing batch delete.
    pub fn delete_objects<'a>(
        &'a self,
        paths: &'a [RemotePath],
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            self.attempt(RemoteOp::DeleteObjects(paths.to_vec()))?;
            self.inner.delete_objects(paths, cancel).await
        }
        .boxed()
    }

    /// Possibly failing copy.
    pub fn copy<'a>(
        &'a self,
        from: &'a RemotePath,
        to: &'a RemotePath,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            self.attempt(RemoteOp::Copy(from.clone(), to.clone()))?;
            self.inner.copy(from, to, cancel).await
        }
        .boxed()
    }
}
