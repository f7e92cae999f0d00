//! [`S3Bucket`]: the S3 backend on `aws-sdk-s3`, for AWS and S3-compatible servers.
//!
//! Invariants and choices:
//! - Keys are `<prefix_in_bucket>/<remote path>`; listings strip the prefix again.
//! - With a custom endpoint, requests use path-style addressing (`http://host/bucket/key`),
//!   which S3-compatible servers expect.
//! - Request checksums are computed and response checksums validated only when an operation
//!   requires them: since 2025 the SDK defaults to CRC32 trailers and aws-chunked bodies,
//!   which S3-compatible servers handle badly.
//! - The SDK's own retries and stalled-stream detection are off: retries belong to the
//!   caller or [`crate::RetryingWrapper`], and deadlines to our timeouts, so both are
//!   predictable.
//! - Objects up to [`UPLOAD_PART_SIZE`] go up in one `PutObject` from memory; larger ones
//!   as a multipart upload of that part size with a few parts in flight. A failed or
//!   cancelled multipart upload is aborted, so it never becomes visible.
//! - At most `concurrency_limit` requests are in flight; a download holds its permit until
//!   its body is consumed or dropped.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::remote_path::KeyPrefix;
use crate::support::{
    ChunkReader, cancellable, guard_stream, http_range, timed, upload_parts, within,
};
use crate::{
    Download, DownloadOpts, Error, Etag, Listing, ListingMode, ListingObject,
    MAX_KEYS_PER_DELETE_S3, MAX_KEYS_PER_LIST_PAGE, ObjectMeta, RemotePath, RemoteStorage,
    S3Config, StorageMetadata, UploadSource, apply_max_keys,
};

/// Part size of multipart uploads, and the largest object sent in one `PutObject`.
pub const UPLOAD_PART_SIZE: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// An S3 bucket (or a prefix in one).
#[derive(Debug)]
pub struct S3Bucket {
    client: Client,
    bucket: String,
    prefix: KeyPrefix,
    concurrency: Arc<Semaphore>,
    timeout: Duration,
    small_timeout: Duration,
}

fn to_system_time(t: Option<&DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Maps an SDK error to ours: what failed, whether retrying helps, and the distinct cases
/// callers act on (not found, not modified, missing bucket, bad range).
fn classify<E, R>(err: SdkError<E, R>, what: &str, key: &str, bucket: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
    SdkError<E, R>: std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().and_then(status_of);
    let code = err.code().map(str::to_owned);
    let transient_io = matches!(
        err,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    let context = format!("S3 {what} {key} in bucket {bucket}");
    match (status, code.as_deref()) {
        (_, Some("NoSuchBucket")) => Error::ContainerNotFound(format!("S3 bucket {bucket:?}")),
        (Some(304), _) => Error::Unmodified,
        (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => Error::NotFound(key.to_owned()),
        (Some(416), _) | (_, Some("InvalidRange")) => {
            Error::RangeNotSatisfiable(format!("{key}: {}", err_text(&err)))
        }
        (Some(s), _) if s >= 500 || s == 429 || s == 408 => {
            Error::Transient(anyhow::Error::new(err).context(context))
        }
        (_, Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")) => {
            Error::Transient(anyhow::Error::new(err).context(context))
        }
        _ if transient_io => Error::Transient(anyhow::Error::new(err).context(context)),
        _ => Error::Permanent(anyhow::Error::new(err).context(context)),
    }
}

fn err_text<E: ProvideErrorMetadata>(e: &E) -> String {
    e.message().or(e.code()).unwrap_or("no details").to_owned()
}

/// The HTTP status of a raw response, when `R` is the SDK's HTTP response type.
fn status_of<R: 'static>(raw: &R) -> Option<u16> {
    let any: &dyn std::any::Any = raw;
    any.downcast_ref::<aws_sdk_s3::config::http::HttpResponse>()
        .map(|r| r.status().as_u16())
}

impl S3Bucket {
    /// Builds the client. Credentials come from the config when given, else from the
    /// standard AWS chain; nothing is contacted until the first request.
    pub async fn new(
        config: &S3Config,
        timeout: Duration,
        small_timeout: Duration,
    ) -> Result<S3Bucket, Error> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.bucket_region.clone()));
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                key,
                secret,
                None,
                None,
                "strata-config",
            ));
        }
        let sdk_config = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk_config)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(small_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(S3Bucket {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket_name.clone(),
            prefix: KeyPrefix::new(config.prefix_in_bucket.clone()),
            concurrency: Arc::new(Semaphore::new(config.concurrency_limit.get())),
            timeout,
            small_timeout,
        })
    }

    /// The underlying SDK client (tests create and remove buckets with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn key(&self, path: &RemotePath) -> String {
        self.prefix.key(path)
    }

    fn list_prefix(&self, prefix: Option<&RemotePath>) -> Option<String> {
        self.prefix.list_prefix(prefix)
    }

    fn relative(&self, key: &str) -> Option<RemotePath> {
        self.prefix.relative(key)
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, Error> {
        Arc::clone(&self.concurrency)
            .acquire_owned()
            .await
            .map_err(|_| Error::Cancelled)
    }

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<(), Error> {
        let _permit = self.permit().await?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(data.len() as i64)
            .set_metadata(metadata)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| classify(e, "PutObject", key, &self.bucket))?;
        Ok(())
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<CompletedPart, Error> {
        let _permit = self.permit().await?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| classify(e, "UploadPart", key, &self.bucket))?;
        Ok(CompletedPart::builder()
            .set_e_tag(out.e_tag().map(str::to_owned))
            .part_number(number)
            .build())
    }

    /// A multipart upload of `reader`: each request gets the data timeout (creating it, the
    /// small one); the caller handles cancellation around the whole.
    async fn put_multipart(
        &self,
        key: &str,
        reader: &mut ChunkReader,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<(), Error> {
        let upload_id = within(self.small_timeout, async {
            let _permit = self.permit().await?;
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .set_metadata(metadata)
                .send()
                .await
                .map_err(|e| classify(e, "CreateMultipartUpload", key, &self.bucket))?
                .upload_id()
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::Permanent(anyhow::anyhow!("CreateMultipartUpload {key}: no upload id"))
                })
        })
        .await?;
        // Aborts the upload unless it completed, also when this future is dropped.
        let mut abort = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: Some(upload_id.clone()),
        };
        let result = async {
            let put = |index: u32, data: Bytes| {
                let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                within(self.timeout, self.put_part(key, &upload_id, number, data))
            };
            let parts = upload_parts(reader, UPLOAD_PART_SIZE, PARTS_IN_FLIGHT, put).await?;
            within(self.timeout, async {
                let _permit = self.permit().await?;
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| classify(e, "CompleteMultipartUpload", key, &self.bucket))
            })
            .await?;
            Ok(())
        }
        .await;
        if result.is_ok() {
            abort.upload_id = None;
        }
        result
    }

    async fn list_page(
        &self,
        prefix: Option<&str>,
        mode: ListingMode,
        page_size: u32,
        token: Option<String>,
    ) -> Result<(Listing, Option<String>), Error> {
        let _permit = self.permit().await?;
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_prefix(prefix.map(str::to_owned))
            .max_keys(page_size as i32)
            .set_continuation_token(token);
        if mode == ListingMode::WithDelimiter {
            req = req.delimiter("/");
        }
        let out = req
            .send()
            .await
            .map_err(|e| classify(e, "ListObjectsV2", prefix.unwrap_or(""), &self.bucket))?;
        let mut page = Listing::default();
        for obj in out.contents() {
            let Some(key) = obj.key().and_then(|k| self.relative(k)) else {
                continue;
            };
            page.keys.push(ListingObject {
                key,
                last_modified: to_system_time(obj.last_modified()),
                size: obj.size().unwrap_or(0).max(0) as u64,
            });
        }
        for p in out.common_prefixes() {
            if let Some(prefix) = p.prefix().and_then(|p| self.relative(p)) {
                page.prefixes.push(prefix);
            }
        }
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok((page, next))
    }
}

/// Aborts a multipart upload that did not complete (error or cancellation), in the
/// background so that it also runs when the upload future is dropped.
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        handle.spawn(async move {
            let abort = client
                .abort_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send();
            match tokio::time::timeout(Duration::from_secs(30), abort).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("aborting multipart upload of {key}: {e}"),
                Err(_) => tracing::warn!("aborting multipart upload of {key}: timed out"),
            }
        });
    }
}

fn metadata_map(m: Option<StorageMetadata>) -> Option<HashMap<String, String>> {
    m.filter(|m| !m.is_empty())
        .map(|m| m.into_map().into_iter().collect())
}

fn metadata_from(m: Option<&HashMap<String, String>>) -> StorageMetadata {
    StorageMetadata::from_backend(m.cloned().unwrap_or_default())
}

impl RemoteStorage for S3Bucket {
    fn list_streaming(
        &self,
        prefix: Option<&RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &CancellationToken,
    ) -> impl Stream<Item = Result<Listing, Error>> + Send {
        let list_prefix = self.list_prefix(prefix);
        let cancel = cancel.clone();
        async_stream::stream! {
            let mut remaining = max_keys.map(NonZeroU32::get);
            let mut token = None;
            loop {
                let page_size = remaining.map_or(MAX_KEYS_PER_LIST_PAGE, |r| r.min(MAX_KEYS_PER_LIST_PAGE));
                let page = timed(
                    self.small_timeout,
                    &cancel,
                    self.list_page(list_prefix.as_deref(), mode, page_size, token.take()),
                )
                .await;
                match page {
                    Err(e) => {
                        yield Err(e);
                        break;
                    }
                    Ok((mut page, next)) => {
                        apply_max_keys(&mut page, &mut remaining);
                        yield Ok(page);
                        if next.is_none() || remaining == Some(0) {
                            break;
                        }
                        token = next;
                    }
                }
            }
        }
    }

    async fn head(
        &self,
        path: &RemotePath,
        cancel: &CancellationToken,
    ) -> Result<ObjectMeta, Error> {
        let key = self.key(path);
        timed(self.small_timeout, cancel, async {
            let _permit = self.permit().await?;
            let out = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| classify(e, "HeadObject", &key, &self.bucket))?;
            Ok(ObjectMeta {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: to_system_time(out.last_modified()),
                etag: Etag::new(out.e_tag().unwrap_or_default()),
                metadata: metadata_from(out.metadata()),
            })
        })
        .await
    }

    async fn upload(
        &self,
        source: UploadSource,
        size: u64,
        to: &RemotePath,
        metadata: Option<StorageMetadata>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let key = self.key(to);
        let mut reader = ChunkReader::new(source.open()?, size, self.timeout);
        let metadata = metadata_map(metadata);
        if size <= UPLOAD_PART_SIZE as u64 {
            let data = cancellable(cancel, reader.read_all()).await?;
            timed(self.timeout, cancel, self.put_single(&key, data, metadata)).await
        } else {
            cancellable(cancel, self.put_multipart(&key, &mut reader, metadata)).await
        }
    }

    async fn download(
        &self,
        from: &RemotePath,
        opts: &DownloadOpts,
        cancel: &CancellationToken,
    ) -> Result<Download, Error> {
        let key = self.key(from);
        let (out, permit) = timed(self.timeout, cancel, async {
            let permit = self.permit().await?;
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .set_range(http_range(opts.byte_start, opts.byte_end))
                .set_if_none_match(opts.if_none_match.as_ref().map(|e| e.as_str().to_owned()))
                .send()
                .await
                .map_err(|e| classify(e, "GetObject", &key, &self.bucket))?;
            Ok((out, permit))
        })
        .await?;
        let etag = Etag::new(out.e_tag().unwrap_or_default());
        let last_modified = to_system_time(out.last_modified());
        let metadata = metadata_from(out.metadata());
        let what = key.clone();
        let body = futures::stream::unfold(out.body, move |mut body| {
            let what = what.clone();
            async move {
                body.next().await.map(|r| {
                    let r = r.map_err(|e| {
                        Error::Transient(
                            anyhow::Error::new(e)
                                .context(format!("S3 GetObject {what}: reading body")),
                        )
                    });
                    (r, body)
                })
            }
        });
        Ok(Download {
            stream: guard_stream(body, self.timeout, cancel.clone(), Some(permit)),
            etag,
            last_modified,
            metadata,
        })
    }

    async fn delete(&self, path: &RemotePath, cancel: &CancellationToken) -> Result<(), Error> {
        let key = self.key(path);
        timed(self.small_timeout, cancel, async {
            let _permit = self.permit().await?;
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => match classify(e, "DeleteObject", &key, &self.bucket) {
                    Error::NotFound(_) => Ok(()),
                    other => Err(other),
                },
            }
        })
        .await
    }

    async fn delete_objects(
        &self,
        paths: &[RemotePath],
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        for batch in paths.chunks(MAX_KEYS_PER_DELETE_S3) {
            let mut ids = Vec::with_capacity(batch.len());
            for p in batch {
                let id = ObjectIdentifier::builder()
                    .key(self.key(p))
                    .build()
                    .map_err(|e| Error::BadInput(format!("delete {p}: {e}")))?;
                ids.push(id);
            }
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| Error::BadInput(format!("delete batch: {e}")))?;
            let first = batch.first().map(|p| p.to_string()).unwrap_or_default();
            timed(self.small_timeout, cancel, async {
                let _permit = self.permit().await?;
                let out = self
                    .client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| classify(e, "DeleteObjects", &first, &self.bucket))?;
                let errors: Vec<String> = out
                    .errors()
                    .iter()
                    .filter(|e| e.code() != Some("NoSuchKey"))
                    .take(5)
                    .map(|e| {
                        format!(
                            "{}: {} {}",
                            e.key().unwrap_or("?"),
                            e.code().unwrap_or("?"),
                            e.message().unwrap_or("")
                        )
                    })
                    .collect();
                if errors.is_empty() {
                    Ok(())
                } else {
                    // Per-key failures are throttling or internal errors in practice.
                    Err(Error::Transient(anyhow::anyhow!(
                        "S3 DeleteObjects in bucket {}: {} keys failed, first: {}",
                        self.bucket,
                        out.errors().len(),
                        errors.join("; ")
                    )))
                }
            })
            .await?;
        }
        Ok(())
    }

    fn max_keys_per_delete(&self) -> usize {
        MAX_KEYS_PER_DELETE_S3
    }

    async fn copy(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let src_key = self.key(from);
        let dst_key = self.key(to);
        // Copy sources are URL-encoded `bucket/key`; `/` stays literal.
        const KEY_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'/')
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let source = format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(&src_key, KEY_ENCODE)
        );
        timed(self.timeout, cancel, async {
            let _permit = self.permit().await?;
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .copy_source(source)
                .key(&dst_key)
                .send()
                .await
                .map_err(|e| classify(e, "CopyObject", &src_key, &self.bucket))?;
            Ok(())
        })
        .await
    }
}
