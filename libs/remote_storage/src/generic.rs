//! [`GenericRemoteStorage`]: what callers hold. Dispatches to a backend or a wrapper, checks
//! object keys and ranges before anything is sent, and meters every backend call.
//!
//! The wrappers hold a `GenericRemoteStorage` themselves and return boxed futures, which is
//! what lets the enum contain them without an infinitely sized future type.

use std::num::NonZeroU32;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;
use utils::backoff::RetryPolicy;

use crate::metrics::metered;
use crate::{
    AzureBlobStorage, Download, DownloadOpts, Error, Listing, ListingMode, LocalFs, ObjectMeta,
    RemotePath, RemoteStorage, RemoteStorageConfig, RemoteStorageKind, RetryingWrapper, S3Bucket,
    SimulatedFailures, StorageMetadata, UnreliableWrapper, UploadSource,
};

/// A remote storage of any backend, possibly wrapped. Cheap to clone.
#[derive(Clone, Debug)]
pub enum GenericRemoteStorage {
    /// A local directory.
    LocalFs(LocalFs),
    /// S3 or an S3-compatible server.
    AwsS3(Arc<S3Bucket>),
    /// Azure Blob Storage or Azurite.
    AzureBlob(Arc<AzureBlobStorage>),
    /// Failure injection for tests.
    Unreliable(Arc<UnreliableWrapper>),
    /// Retries transient errors with backoff.
    Retrying(Arc<RetryingWrapper>),
}

/// Each backend's future is boxed: inline, the S3 and Azure SDK futures would make every
/// caller's future (and, in debug builds, every poll frame up the chain) as large as all of
/// them together, enough to overflow a 2 MiB thread stack through the wrappers; one
/// allocation per remote call is nothing next to the request.
macro_rules! dispatch {
    ($self:ident, $op:literal, $s:ident => $call:expr) => {
        match $self {
            GenericRemoteStorage::LocalFs($s) => metered("local_fs", $op, Box::pin($call)).await,
            GenericRemoteStorage::AwsS3($s) => metered("s3", $op, Box::pin($call)).await,
            GenericRemoteStorage::AzureBlob($s) => metered("azure", $op, Box::pin($call)).await,
            GenericRemoteStorage::Unreliable($s) => $call.await,
            GenericRemoteStorage::Retrying($s) => $call.await,
        }
    };
}

impl GenericRemoteStorage {
    /// Builds the backend a config names. Creates the LocalFs root directory if needed;
    /// does not contact S3 or Azure (a missing bucket shows on first use, naming it).
    pub async fn from_config(config: &RemoteStorageConfig) -> Result<GenericRemoteStorage, Error> {
        Ok(match &config.storage {
            RemoteStorageKind::LocalFs { local_path } => GenericRemoteStorage::LocalFs(
                LocalFs::new(local_path.clone(), config.timeout, config.small_timeout)?,
            ),
            RemoteStorageKind::AwsS3(s3) => GenericRemoteStorage::AwsS3(Arc::new(
                S3Bucket::new(s3, config.timeout, config.small_timeout).await?,
            )),
            RemoteStorageKind::AzureContainer(az) => GenericRemoteStorage::AzureBlob(Arc::new(
                AzureBlobStorage::new(az, config.timeout, config.small_timeout)?,
            )),
        })
    }

    /// Wraps in [`UnreliableWrapper`] when `failures` asks for it (service config
    /// `test_remote_failures`), else returns `self` unchanged.
    pub fn with_simulated_failures(self, failures: &SimulatedFailures) -> GenericRemoteStorage {
        if failures.test_remote_failures == 0 && failures.test_remote_failures_probability.is_none()
        {
            return self;
        }
        GenericRemoteStorage::Unreliable(Arc::new(UnreliableWrapper::new(
            self,
            failures.test_remote_failures,
            failures.test_remote_failures_probability,
        )))
    }

    /// Wraps in [`RetryingWrapper`] with `policy`.
    pub fn with_retries(self, policy: RetryPolicy) -> GenericRemoteStorage {
        GenericRemoteStorage::Retrying(Arc::new(RetryingWrapper::new(self, policy)))
    }

    /// The backend's name as metrics and logs use it, looking through wrappers.
    pub fn backend_name(&self) -> &'static str {
        match self {
            GenericRemoteStorage::LocalFs(_) => "local_fs",
            GenericRemoteStorage::AwsS3(_) => "s3",
            GenericRemoteStorage::AzureBlob(_) => "azure",
            GenericRemoteStorage::Unreliable(s) => s.inner().backend_name(),
            GenericRemoteStorage::Retrying(s) => s.inner().backend_name(),
        }
    }

    /// Lists under `prefix`, one item per page (see [`RemoteStorage::list_streaming`]).
    pub fn list_streaming<'a>(
        &'a self,
        prefix: Option<&'a RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &'a CancellationToken,
    ) -> BoxStream<'a, Result<Listing, Error>> {
        match self {
            GenericRemoteStorage::LocalFs(s) => {
                s.list_streaming(prefix, mode, max_keys, cancel).boxed()
            }
            GenericRemoteStorage::AwsS3(s) => {
                s.list_streaming(prefix, mode, max_keys, cancel).boxed()
            }
            GenericRemoteStorage::AzureBlob(s) => {
                s.list_streaming(prefix, mode, max_keys, cancel).boxed()
            }
            GenericRemoteStorage::Unreliable(s) => s.list_streaming(prefix, mode, max_keys, cancel),
            GenericRemoteStorage::Retrying(s) => s.list_streaming(prefix, mode, max_keys, cancel),
        }
    }

    /// Lists under `prefix`, all pages collected.
    pub async fn list(
        &self,
        prefix: Option<&RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &CancellationToken,
    ) -> Result<Listing, Error> {
        if let GenericRemoteStorage::Retrying(s) = self {
            return s.list(prefix, mode, max_keys, cancel).await;
        }
        let list = async {
            let mut all = Listing::default();
            let mut pages = self.list_streaming(prefix, mode, max_keys, cancel);
            while let Some(page) = pages.next().await {
                let page = page?;
                all.keys.extend(page.keys);
                all.prefixes.extend(page.prefixes);
            }
            Ok(all)
        };
        match self {
            GenericRemoteStorage::LocalFs(_) => metered("local_fs", "list", list).await,
            GenericRemoteStorage::AwsS3(_) => metered("s3", "list", list).await,
            GenericRemoteStorage::AzureBlob(_) => metered("azure", "list", list).await,
            _ => list.await,
        }
    }

    /// Size, modification time, etag and metadata of one object.
    pub async fn head(
        &self,
        path: &RemotePath,
        cancel: &CancellationToken,
    ) -> Result<ObjectMeta, Error> {
        path.ensure_object_key()?;
        dispatch!(self, "head", s => s.head(path, cancel))
    }

    /// Stores `size` bytes from `source` at `to`, atomically; see [`UploadSource`].
    pub async fn upload(
        &self,
        source: UploadSource,
        size: u64,
        to: &RemotePath,
        metadata: Option<StorageMetadata>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        to.ensure_object_key()?;
        dispatch!(self, "upload", s => s.upload(source, size, to, metadata, cancel))
    }

    /// Starts reading an object or a range of it.
    pub async fn download(
        &self,
        from: &RemotePath,
        opts: &DownloadOpts,
        cancel: &CancellationToken,
    ) -> Result<Download, Error> {
        from.ensure_object_key()?;
        opts.validate()?;
        dispatch!(self, "download", s => s.download(from, opts, cancel))
    }

    /// Deletes one object; a missing one is success.
    pub async fn delete(&self, path: &RemotePath, cancel: &CancellationToken) -> Result<(), Error> {
        path.ensure_object_key()?;
        dispatch!(self, "delete", s => s.delete(path, cancel))
    }

    /// Deletes many objects, batched by the backend's limit. Missing ones are success.
    pub async fn delete_objects(
        &self,
        paths: &[RemotePath],
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        for p in paths {
            p.ensure_object_key()?;
        }
        if paths.is_empty() {
            return Ok(());
        }
        dispatch!(self, "delete_objects", s => s.delete_objects(paths, cancel))
    }

    /// The backend's batch-delete limit (S3 1000, Azure 256).
    pub fn max_keys_per_delete(&self) -> usize {
        match self {
            GenericRemoteStorage::LocalFs(s) => s.max_keys_per_delete(),
            GenericRemoteStorage::AwsS3(s) => s.max_keys_per_delete(),
            GenericRemoteStorage::AzureBlob(s) => s.max_keys_per_delete(),
            GenericRemoteStorage::Unreliable(s) => s.inner().max_keys_per_delete(),
            GenericRemoteStorage::Retrying(s) => s.inner().max_keys_per_delete(),
        }
    }

    /// Deletes every object whose key starts with `prefix` (a string prefix, as in listings:
    /// pass `a/` to spare `ab`). Page by page, so memory stays bounded.
    pub async fn delete_prefix(
        &self,
        prefix: &RemotePath,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let mut pages = self.list_streaming(Some(prefix), ListingMode::NoDelimiter, None, cancel);
        while let Some(page) = pages.next().await {
            let keys: Vec<RemotePath> = page?.keys.into_iter().map(|o| o.key).collect();
            for batch in keys.chunks(self.max_keys_per_delete().max(1)) {
                self.delete_objects(batch, cancel).await?;
            }
        }
        Ok(())
    }

    /// Copies an object with its metadata, server-side where the backend can.
    pub async fn copy(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        from.ensure_object_key()?;
        to.ensure_object_key()?;
        dispatch!(self, "copy", s => s.copy(from, to, cancel))
    }
}
