//! [`AzureBlobStorage`]: the Azure Blob backend on `azure_storage_blobs`, for Azure and
//! Azurite.
//!
//! Invariants and choices:
//! - Blob names are `<prefix_in_container>/<remote path>`; listings strip the prefix again.
//! - Objects up to [`UPLOAD_BLOCK_SIZE`] go up in one `Put Blob`; larger ones as blocks
//!   committed by one `Put Block List`. Block ids carry a per-upload random part, so
//!   concurrent uploads of one blob never mix each other's blocks: the commit makes exactly
//!   one upload's blocks visible, atomically.
//! - The SDK has no batch delete: `delete_objects` keeps Azure's batch size (256) and
//!   deletes each batch with bounded concurrent single deletes.
//! - `copy` is the server-side Copy Blob; a pending copy is polled until it finishes.
//! - The SDK's own retries are off (see the S3 module); deadlines are ours.
//! - Listings ask for pages of [`crate::MAX_KEYS_PER_LIST_PAGE`] like every backend.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::error::ErrorKind as AzureErrorKind;
use azure_core::request_options::{IfMatchCondition, MaxResults, Metadata, NextMarker};
use azure_core::{RetryOptions, StatusCode};
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::blob::{BlobBlockType, BlockList, CopyStatus};
use azure_storage_blobs::prelude::{BlobClient, ClientBuilder, ContainerClient};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::remote_path::KeyPrefix;
use crate::support::{ChunkReader, cancellable, guard_stream, timed, upload_parts, within};
use crate::{
    AzureConfig, Download, DownloadOpts, Error, Etag, Listing, ListingMode, ListingObject,
    MAX_KEYS_PER_DELETE_AZURE, MAX_KEYS_PER_LIST_PAGE, ObjectMeta, RemotePath, RemoteStorage,
    StorageMetadata, UploadSource, apply_max_keys,
};

/// Block size of large uploads, and the largest object sent in one `Put Blob`.
pub const UPLOAD_BLOCK_SIZE: usize = 8 << 20;
/// Blocks of one upload in flight at once.
const BLOCKS_IN_FLIGHT: usize = 4;
/// Single deletes of one batch in flight at once.
const DELETES_IN_FLIGHT: usize = 16;

/// An Azure blob container (or a prefix in one).
#[derive(Debug)]
pub struct AzureBlobStorage {
    container: ContainerClient,
    container_name: String,
    prefix: KeyPrefix,
    concurrency: Arc<Semaphore>,
    timeout: Duration,
    small_timeout: Duration,
}

/// Maps an SDK error to ours; see `s3::classify`.
fn classify(err: azure_core::Error, what: &str, key: &str, container: &str) -> Error {
    let context = format!("Azure {what} {key} in container {container}");
    match err.kind() {
        AzureErrorKind::HttpResponse { status, error_code } => {
            let code = error_code.as_deref();
            match (*status, code) {
                (_, Some("ContainerNotFound")) => {
                    Error::ContainerNotFound(format!("Azure container {container:?}"))
                }
                (StatusCode::NotModified, _) | (_, Some("ConditionNotMet")) => Error::Unmodified,
                (StatusCode::NotFound, _) => Error::NotFound(key.to_owned()),
                (StatusCode::RequestedRangeNotSatisfiable, _) | (_, Some("InvalidRange")) => {
                    Error::RangeNotSatisfiable(format!("{key}: {err}"))
                }
                (s, _)
                    if (s as u16) >= 500
                        || s == StatusCode::TooManyRequests
                        || s == StatusCode::RequestTimeout =>
                {
                    Error::Transient(anyhow::Error::new(err).context(context))
                }
                _ => Error::Permanent(anyhow::Error::new(err).context(context)),
            }
        }
        AzureErrorKind::Io => Error::Transient(anyhow::Error::new(err).context(context)),
        _ => Error::Permanent(anyhow::Error::new(err).context(context)),
    }
}

fn credentials(config: &AzureConfig) -> Result<StorageCredentials, Error> {
    let account = config.storage_account.clone();
    if let Some(key) = &config.storage_account_key {
        return Ok(StorageCredentials::access_key(account, key.clone()));
    }
    if let Ok(key) = std::env::var("AZURE_STORAGE_ACCESS_KEY") {
        return Ok(StorageCredentials::access_key(account, key));
    }
    if let Ok(token) = std::env::var("AZURE_STORAGE_SAS_TOKEN") {
        return StorageCredentials::sas_token(token)
            .map_err(|e| Error::BadInput(format!("AZURE_STORAGE_SAS_TOKEN: {e}")));
    }
    Err(Error::BadInput(format!(
        "no credentials for Azure storage account {:?}: set `storage_account_key`, \
         AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_SAS_TOKEN",
        config.storage_account
    )))
}

impl AzureBlobStorage {
    /// Builds the client; nothing is contacted until the first request.
    pub fn new(
        config: &AzureConfig,
        timeout: Duration,
        small_timeout: Duration,
    ) -> Result<AzureBlobStorage, Error> {
        let location = match &config.endpoint {
            Some(uri) => CloudLocation::Custom {
                account: config.storage_account.clone(),
                uri: uri.clone(),
            },
            None => CloudLocation::Public {
                account: config.storage_account.clone(),
            },
        };
        let container = ClientBuilder::with_location(location, credentials(config)?)
            .retry(RetryOptions::none())
            .container_client(config.container_name.clone());
        Ok(AzureBlobStorage {
            container,
            container_name: config.container_name.clone(),
            prefix: KeyPrefix::new(config.prefix_in_container.clone()),
            concurrency: Arc::new(Semaphore::new(config.concurrency_limit.get())),
            timeout,
            small_timeout,
        })
    }

    /// The underlying container client (tests create and delete containers with it).
    pub fn container_client(&self) -> &ContainerClient {
        &self.container
    }

    fn name(&self, path: &RemotePath) -> String {
        self.prefix.key(path)
    }

    fn blob(&self, path: &RemotePath) -> (BlobClient, String) {
        let name = self.name(path);
        (self.container.blob_client(name.clone()), name)
    }

    fn relative(&self, name: &str) -> Option<RemotePath> {
        self.prefix.relative(name)
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, Error> {
        Arc::clone(&self.concurrency)
            .acquire_owned()
            .await
            .map_err(|_| Error::Cancelled)
    }

    fn err(&self, what: &str, key: &str) -> impl Fn(azure_core::Error) -> Error + '_ {
        let (what, key) = (what.to_owned(), key.to_owned());
        move |e| classify(e, &what, &key, &self.container_name)
    }

    async fn put_block(
        &self,
        blob: &BlobClient,
        name: &str,
        id: String,
        data: Bytes,
    ) -> Result<String, Error> {
        let _permit = self.permit().await?;
        blob.put_block(id.clone(), data)
            .await
            .map_err(self.err("Put Block", name))?;
        Ok(id)
    }

    /// A block upload of `reader` committed by one Put Block List: each request gets the data
    /// timeout; the caller handles cancellation around the whole.
    async fn put_blocks(
        &self,
        blob: &BlobClient,
        name: &str,
        reader: &mut ChunkReader,
        metadata: Option<Metadata>,
    ) -> Result<(), Error> {
        let upload = uuid::Uuid::new_v4().simple().to_string();
        let put = |index: u32, data: Bytes| {
            let id = format!("{upload}-{index:06}");
            within(self.timeout, self.put_block(blob, name, id, data))
        };
        let ids = upload_parts(reader, UPLOAD_BLOCK_SIZE, BLOCKS_IN_FLIGHT, put).await?;
        let list = BlockList {
            blocks: ids
                .into_iter()
                .map(BlobBlockType::new_uncommitted)
                .collect(),
        };
        within(self.timeout, async {
            let _permit = self.permit().await?;
            let mut req = blob.put_block_list(list);
            if let Some(m) = metadata {
                req = req.metadata(m);
            }
            req.await.map_err(self.err("Put Block List", name))?;
            Ok(())
        })
        .await
    }

    async fn properties(&self, blob: &BlobClient, name: &str) -> Result<ObjectMeta, Error> {
        let _permit = self.permit().await?;
        let props = blob
            .get_properties()
            .await
            .map_err(self.err("Get Blob Properties", name))?;
        Ok(ObjectMeta {
            size: props.blob.properties.content_length,
            last_modified: SystemTime::from(props.blob.properties.last_modified),
            etag: Etag::new(props.blob.properties.etag.to_string()),
            metadata: StorageMetadata::from_backend(props.blob.metadata.unwrap_or_default()),
        })
    }

    async fn delete_one(&self, path: &RemotePath) -> Result<(), Error> {
        let (blob, name) = self.blob(path);
        let _permit = self.permit().await?;
        match blob.delete().await {
            Ok(_) => Ok(()),
            Err(e) => match classify(e, "Delete Blob", &name, &self.container_name) {
                Error::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }
}

fn to_metadata(m: Option<StorageMetadata>) -> Option<Metadata> {
    let m = m.filter(|m| !m.is_empty())?;
    let mut md = Metadata::new();
    for (k, v) in m.iter() {
        md.insert(k.to_owned(), v.to_owned());
    }
    Some(md)
}

impl RemoteStorage for AzureBlobStorage {
    fn list_streaming(
        &self,
        prefix: Option<&RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &CancellationToken,
    ) -> impl Stream<Item = Result<Listing, Error>> + Send {
        let list_prefix = self.prefix.list_prefix(prefix);
        let cancel = cancel.clone();
        async_stream::stream! {
            let mut remaining = max_keys.map(NonZeroU32::get);
            let mut marker: Option<NextMarker> = None;
            loop {
                let page_size = remaining.map_or(MAX_KEYS_PER_LIST_PAGE, |r| r.min(MAX_KEYS_PER_LIST_PAGE));
                let page = timed(self.small_timeout, &cancel, async {
                    let _permit = self.permit().await?;
                    let mut req = self
                        .container
                        .list_blobs()
                        .max_results(MaxResults::new(NonZeroU32::new(page_size).unwrap_or(NonZeroU32::MIN)));
                    if let Some(p) = &list_prefix {
                        req = req.prefix(p.clone());
                    }
                    if mode == ListingMode::WithDelimiter {
                        req = req.delimiter("/");
                    }
                    if let Some(m) = marker.take() {
                        req = req.marker(m);
                    }
                    let err = self.err("List Blobs", list_prefix.as_deref().unwrap_or(""));
                    match req.into_stream().next().await {
                        Some(r) => r.map_err(err),
                        None => Err(Error::Permanent(anyhow::anyhow!("List Blobs returned no page"))),
                    }
                })
                .await;
                let response = match page {
                    Ok(r) => r,
                    Err(e) => {
                        yield Err(e);
                        break;
                    }
                };
                let mut page = Listing::default();
                for blob in response.blobs.blobs() {
                    let Some(key) = self.relative(&blob.name) else { continue };
                    page.keys.push(ListingObject {
                        key,
                        last_modified: SystemTime::from(blob.properties.last_modified),
                        size: blob.properties.content_length,
                    });
                }
                for p in response.blobs.prefixes() {
                    if let Some(prefix) = self.relative(&p.name) {
                        page.prefixes.push(prefix);
                    }
                }
                apply_max_keys(&mut page, &mut remaining);
                yield Ok(page);
                match response.next_marker {
                    Some(m) if remaining != Some(0) => marker = Some(m),
                    _ => break,
                }
            }
        }
    }

    async fn head(
        &self,
        path: &RemotePath,
        cancel: &CancellationToken,
    ) -> Result<ObjectMeta, Error> {
        let (blob, name) = self.blob(path);
        timed(self.small_timeout, cancel, self.properties(&blob, &name)).await
    }

    async fn upload(
        &self,
        source: UploadSource,
        size: u64,
        to: &RemotePath,
        metadata: Option<StorageMetadata>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let (blob, name) = self.blob(to);
        let mut reader = ChunkReader::new(source.open()?, size, self.timeout);
        let metadata = to_metadata(metadata);
        if size <= UPLOAD_BLOCK_SIZE as u64 {
            let data = cancellable(cancel, reader.read_all()).await?;
            timed(self.timeout, cancel, async {
                let _permit = self.permit().await?;
                let mut req = blob.put_block_blob(data);
                if let Some(m) = metadata {
                    req = req.metadata(m);
                }
                req.await.map_err(self.err("Put Blob", &name))?;
                Ok(())
            })
            .await
        } else {
            cancellable(cancel, self.put_blocks(&blob, &name, &mut reader, metadata)).await
        }
    }

    async fn download(
        &self,
        from: &RemotePath,
        opts: &DownloadOpts,
        cancel: &CancellationToken,
    ) -> Result<Download, Error> {
        let (blob, name) = self.blob(from);
        let mut req = blob.get();
        match opts.byte_end {
            Some(end) => req = req.range(opts.byte_start..end),
            None if opts.byte_start > 0 => req = req.range(opts.byte_start..),
            None => {}
        }
        if let Some(etag) = &opts.if_none_match {
            req = req.if_match(IfMatchCondition::NotMatch(etag.as_str().to_owned()));
        }
        let mut pages = req.into_stream();
        let first = timed(self.timeout, cancel, async {
            let permit = self.permit().await?;
            match pages.next().await {
                Some(r) => r.map(|r| (r, permit)).map_err(self.err("Get Blob", &name)),
                None => Err(Error::Permanent(anyhow::anyhow!(
                    "Get Blob {name}: no response"
                ))),
            }
        })
        .await;
        let (first, permit) = match first {
            Ok(r) => r,
            // The SDK always asks for a range, which Azure refuses for an empty blob.
            Err(Error::RangeNotSatisfiable(_)) if !opts.is_ranged() => {
                let meta = timed(self.small_timeout, cancel, self.properties(&blob, &name)).await?;
                if meta.size == 0 {
                    if opts.if_none_match.as_ref() == Some(&meta.etag) {
                        return Err(Error::Unmodified);
                    }
                    return Ok(Download {
                        stream: Box::pin(futures::stream::empty()),
                        etag: meta.etag,
                        last_modified: meta.last_modified,
                        metadata: meta.metadata,
                    });
                }
                return Err(Error::Transient(anyhow::anyhow!(
                    "Get Blob {name}: range refused for a non-empty blob"
                )));
            }
            Err(e) => return Err(e),
        };
        let etag = Etag::new(first.blob.properties.etag.to_string());
        let last_modified = SystemTime::from(first.blob.properties.last_modified);
        let metadata =
            StorageMetadata::from_backend(first.blob.metadata.clone().unwrap_or_default());
        let container = self.container_name.clone();
        let name_for_errors = name.clone();
        let map_err =
            move |e: azure_core::Error| classify(e, "Get Blob", &name_for_errors, &container);
        let first_body = first.data.map_err(map_err.clone());
        // The SDK fetches a large blob in ranges, one request each, and only the caller's
        // condition goes with them: a blob overwritten meanwhile would hand back old bytes
        // followed by new ones. Every range must come from the version the first did.
        let pinned = first.blob.properties.etag.to_string();
        let name_for_etag = name.clone();
        let rest = pages
            .map_err(map_err.clone())
            .and_then(move |page| {
                let now = page.blob.properties.etag.to_string();
                futures::future::ready(if now == pinned {
                    Ok(page.data.map_err(map_err.clone()))
                } else {
                    Err(Error::Transient(anyhow::anyhow!(
                        "Get Blob {name_for_etag}: the blob changed during the download (etag {pinned}, then {now}); download it again"
                    )))
                })
            })
            .try_flatten();
        let mut body: crate::DownloadStream = Box::pin(first_body.chain(rest));
        if opts.is_ranged() {
            // Azurite answers a range past the end with an empty body where Azure says 416;
            // a valid range is never empty, so an empty body means the range was past the end.
            let first_chunk = timed(self.timeout, cancel, async {
                loop {
                    match body.next().await {
                        None => return Ok(None),
                        Some(Ok(c)) if c.is_empty() => continue,
                        Some(Ok(c)) => return Ok(Some(c)),
                        Some(Err(e)) => return Err(e),
                    }
                }
            })
            .await?;
            match first_chunk {
                None => {
                    return Err(Error::RangeNotSatisfiable(format!(
                        "{from}: range starts at {} past the end of the object",
                        opts.byte_start
                    )));
                }
                Some(c) => body = Box::pin(futures::stream::once(async { Ok(c) }).chain(body)),
            }
        }
        Ok(Download {
            stream: guard_stream(body, self.timeout, cancel.clone(), Some(permit)),
            etag,
            last_modified,
            metadata,
        })
    }

    async fn delete(&self, path: &RemotePath, cancel: &CancellationToken) -> Result<(), Error> {
        timed(self.small_timeout, cancel, self.delete_one(path)).await
    }

    async fn delete_objects(
        &self,
        paths: &[RemotePath],
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        for batch in paths.chunks(MAX_KEYS_PER_DELETE_AZURE) {
            timed(self.timeout, cancel, async {
                let deletes: Vec<_> = batch.iter().map(|p| self.delete_one(p)).collect();
                futures::stream::iter(deletes)
                    .buffer_unordered(DELETES_IN_FLIGHT)
                    .try_collect::<Vec<()>>()
                    .await
                    .map(|_| ())
            })
            .await?;
        }
        Ok(())
    }

    fn max_keys_per_delete(&self) -> usize {
        MAX_KEYS_PER_DELETE_AZURE
    }

    async fn copy(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let (src, src_name) = self.blob(from);
        let (dst, dst_name) = self.blob(to);
        timed(self.timeout, cancel, async {
            let source_url = src
                .url()
                .map_err(|e| Error::Permanent(anyhow::Error::new(e).context("source blob URL")))?;
            let status = {
                let _permit = self.permit().await?;
                dst.copy(source_url)
                    .await
                    .map_err(self.err("Copy Blob", &src_name))?
                    .copy_status
            };
            let mut status = Some(status);
            loop {
                match status {
                    Some(CopyStatus::Success) | None => return Ok(()),
                    Some(CopyStatus::Pending) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _permit = self.permit().await?;
                        status = dst
                            .get_properties()
                            .await
                            .map_err(self.err("Get Blob Properties", &dst_name))?
                            .blob
                            .properties
                            .copy_status;
                    }
                    Some(other) => {
                        return Err(Error::Permanent(anyhow::anyhow!(
                            "Azure copy of {src_name} to {dst_name} ended as {other:?}"
                        )));
                    }
                }
            }
        })
        .await
    }
}
