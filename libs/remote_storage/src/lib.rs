//! One object-storage API over local disk, S3 and Azure Blob.
//!
//! The pageserver (layers, `index_part.json`) and the safekeepers (WAL segments, partial
//! segments) keep everything durable through this crate, and both treat object storage as
//! the source of truth. Callers hold a [`GenericRemoteStorage`]: an enum over the backends
//! ([`LocalFs`], [`S3Bucket`], [`AzureBlobStorage`]) and the wrappers ([`RetryingWrapper`],
//! [`UnreliableWrapper`]).
//!
//! Guarantees every backend gives (the conformance suite checks them on all three):
//! - an upload is atomic: readers see the whole old object or the whole new one, never a
//!   mix or a prefix, also under concurrent uploads of the same key (last writer wins);
//! - an upload whose stream does not hold exactly the declared size fails and changes nothing;
//! - listings are in key order, with S3 delimiter semantics: with [`ListingMode::WithDelimiter`]
//!   keys below the next `/` after the prefix fold into common prefixes ending in `/`;
//!   prefixes are string prefixes (`a/b` matches `a/b/c` and `a/bc`);
//! - deleting a missing object succeeds; `delete_objects` batches by the backend's limit;
//! - `download` of a missing object is [`Error::NotFound`], and an etag match with
//!   `if_none_match` is [`Error::Unmodified`];
//! - every call honours its cancellation token and a timeout: `small_timeout` for small
//!   requests, and for data transfers `timeout` bounds *progress* (each request, each part
//!   of a multipart upload, each wait for a body's or a source's next chunk), never the
//!   whole transfer; every error says whether it is transient ([`Error::is_transient`]);
//! - invalid paths and inputs are rejected before any request is sent.

pub mod azure;
pub mod config;
pub mod error;
mod generic;
pub mod local_fs;
pub mod metrics;
pub mod remote_path;
pub mod retrying;
pub mod s3;
mod support;
pub mod unreliable;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use camino::Utf8PathBuf;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

pub use azure::AzureBlobStorage;
pub use config::{
    AzureConfig, ConfigError, RemoteStorageConfig, RemoteStorageKind, S3Config, SimulatedFailures,
};
pub use error::{Error, ErrorKind};
pub use generic::GenericRemoteStorage;
pub use local_fs::LocalFs;
pub use remote_path::{RemotePath, RemotePathError};
pub use retrying::RetryingWrapper;
pub use s3::S3Bucket;
pub use unreliable::UnreliableWrapper;

/// Keys per listing page on every backend (S3's maximum; Azure is asked for the same).
pub const MAX_KEYS_PER_LIST_PAGE: u32 = 1000;
/// S3's limit on keys per `DeleteObjects` request.
pub const MAX_KEYS_PER_DELETE_S3: usize = 1000;
/// Azure's limit on sub-requests per blob batch; we keep batches this size even though the
/// SDK has no batch call and we issue bounded concurrent single deletes.
pub const MAX_KEYS_PER_DELETE_AZURE: usize = 256;

/// Bytes to upload. Boxed because the enum dispatch and the wrappers need one type.
pub type UploadStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;
/// A download's body. Errors are typed, so a caller can tell cancellation or a timeout from
/// a broken connection; `io::Error: From<Error>` feeds `StreamReader`.
pub type DownloadStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// Whether a listing folds keys below the next `/` into common prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListingMode {
    /// One level: keys directly under the prefix, deeper ones as common prefixes.
    WithDelimiter,
    /// Every key under the prefix, recursively.
    NoDelimiter,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingObject {
    /// The key, relative to the storage root.
    pub key: RemotePath,
    /// When it was last written.
    pub last_modified: SystemTime,
    /// Its size in bytes.
    pub size: u64,
}

/// A listing result: the objects and, with a delimiter, the common prefixes (ending in `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Common prefixes, each ending in `/`, in order.
    pub prefixes: Vec<RemotePath>,
    /// Objects, in key order.
    pub keys: Vec<ListingObject>,
}

/// An opaque entity tag: changes whenever the object's content is replaced. Compared only
/// for equality (`if_none_match`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Etag(String);

impl Etag {
    /// Wraps a backend's etag string.
    pub fn new(s: impl Into<String>) -> Etag {
        Etag(s.into())
    }
    /// The etag as the backend spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// User metadata of an object: small string pairs stored with it.
///
/// Keys are restricted to `[a-z_][a-z0-9_]*` and values to printable ASCII without
/// surrounding spaces, the intersection of what S3 (lower-cases names, HTTP headers) and
/// Azure (C# identifiers) round-trip unchanged; anything else is refused before upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageMetadata(BTreeMap<String, String>);

impl StorageMetadata {
    /// An empty map.
    pub fn new() -> StorageMetadata {
        StorageMetadata::default()
    }

    /// Adds a pair, refusing names or values that would not round-trip on every backend.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), Error> {
        let mut chars = key.chars();
        let valid_key = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_key {
            return Err(Error::BadInput(format!(
                "metadata key {key:?} must match [a-z_][a-z0-9_]*"
            )));
        }
        let valid_value =
            value.chars().all(|c| c.is_ascii_graphic() || c == ' ') && value.trim() == value;
        if !valid_value {
            return Err(Error::BadInput(format!(
                "metadata value {value:?} for {key:?} must be printable ASCII without surrounding spaces"
            )));
        }
        self.0.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    /// Builds a map from pairs, validating each.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<StorageMetadata, Error> {
        let mut m = StorageMetadata::new();
        for (k, v) in pairs {
            m.insert(k, v)?;
        }
        Ok(m)
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Takes metadata as a backend returned it, without validation (it may have been written
    /// by another tool) but with names lower-cased as S3 and HTTP treat them.
    pub(crate) fn from_backend(map: impl IntoIterator<Item = (String, String)>) -> StorageMetadata {
        StorageMetadata(
            map.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        )
    }

    pub(crate) fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

/// What `head` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: SystemTime,
    /// Changes whenever the content is replaced.
    pub etag: Etag,
    /// User metadata given at upload (empty when none).
    pub metadata: StorageMetadata,
}

/// Options of a download: a byte range and a conditional etag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadOpts {
    /// First byte to return.
    pub byte_start: u64,
    /// One past the last byte to return; `None` reads to the end. An end past the object's
    /// end is clipped; a start at or past the end of a ranged read is
    /// [`Error::RangeNotSatisfiable`].
    pub byte_end: Option<u64>,
    /// Return [`Error::Unmodified`] instead of the body if the object's etag is this one.
    pub if_none_match: Option<Etag>,
}

impl DownloadOpts {
    /// The bytes `start..end` (`end` exclusive).
    pub fn range(start: u64, end: Option<u64>) -> DownloadOpts {
        DownloadOpts {
            byte_start: start,
            byte_end: end,
            if_none_match: None,
        }
    }

    /// Whether a range was requested (not the whole object).
    pub fn is_ranged(&self) -> bool {
        self.byte_start > 0 || self.byte_end.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self.byte_end {
            Some(end) if end <= self.byte_start => Err(Error::BadInput(format!(
                "empty or inverted byte range {}..{end}",
                self.byte_start
            ))),
            _ => Ok(()),
        }
    }
}

/// A download in progress: the body and what the backend said about the object.
pub struct Download {
    /// The body (the requested range). Each wait for its next chunk is bounded by the data
    /// timeout (time the reader spends between reads does not count), and it ends with
    /// [`Error::Cancelled`] when the token fires.
    pub stream: DownloadStream,
    /// The object's etag.
    pub etag: Etag,
    /// When the object was last written.
    pub last_modified: SystemTime,
    /// User metadata (empty when none).
    pub metadata: StorageMetadata,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("etag", &self.etag)
            .field("last_modified", &self.last_modified)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl Download {
    /// Reads the whole body into memory (small objects, tests).
    pub async fn read_all(self) -> Result<Bytes, Error> {
        let mut buf = BytesMut::new();
        let mut stream = self.stream;
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }
}

type OpenFn = dyn Fn() -> Result<UploadStream, Error> + Send + Sync;

/// Where an upload's bytes come from.
///
/// An upload may have to start over (a retry, a new multipart attempt), so a source can be
/// opened again from the beginning: from memory, from a file, or from a function that makes
/// a fresh stream. [`UploadSource::once`] wraps a plain stream that cannot be replayed; a
/// second open is a permanent error, so the retrying wrapper stops instead of uploading a
/// truncated object.
#[derive(Clone)]
pub struct UploadSource {
    open: Arc<OpenFn>,
    /// Set for [`UploadSource::from_file`]: LocalFs copies the file in the kernel instead.
    file: Option<Utf8PathBuf>,
}

impl fmt::Debug for UploadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UploadSource")
    }
}

impl UploadSource {
    /// Bytes in memory.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> UploadSource {
        let bytes: Bytes = bytes.into();
        UploadSource::new(move || {
            let b = bytes.clone();
            Ok(Box::pin(futures::stream::once(async move { Ok(b) })) as UploadStream)
        })
    }

    /// A file, opened afresh (and read in 1 MiB chunks) each time the upload starts.
    pub fn from_file(path: impl Into<Utf8PathBuf>) -> UploadSource {
        let path: Utf8PathBuf = path.into();
        let file = Some(path.clone());
        let mut source = UploadSource::new(move || {
            let p = path.clone();
            let stream = futures::stream::once(async move {
                tokio::fs::File::open(&p)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("open {p}: {e}")))
            })
            .map_ok(|f| tokio_util::io::ReaderStream::with_capacity(f, 1 << 20))
            .try_flatten();
            Ok(Box::pin(stream) as UploadStream)
        });
        source.file = file;
        source
    }

    /// A function that returns a fresh stream of the same bytes on every call.
    pub fn from_fn(open: impl Fn() -> UploadStream + Send + Sync + 'static) -> UploadSource {
        UploadSource::new(move || Ok(open()))
    }

    /// A one-shot stream: the upload cannot be retried (see the type docs).
    pub fn once(stream: impl Stream<Item = io::Result<Bytes>> + Send + 'static) -> UploadSource {
        let slot: Mutex<Option<UploadStream>> = Mutex::new(Some(Box::pin(stream)));
        UploadSource::new(move || {
            slot.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take()
                .ok_or_else(|| {
                    Error::Permanent(anyhow::anyhow!(
                        "a one-shot upload stream cannot be replayed; retry with a replayable UploadSource"
                    ))
                })
        })
    }

    fn new(open: impl Fn() -> Result<UploadStream, Error> + Send + Sync + 'static) -> UploadSource {
        UploadSource {
            open: Arc::new(open),
            file: None,
        }
    }

    /// Starts reading from the beginning.
    pub fn open(&self) -> Result<UploadStream, Error> {
        (self.open)()
    }

    /// The file behind a [`UploadSource::from_file`] source.
    pub(crate) fn local_file(&self) -> Option<&camino::Utf8Path> {
        self.file.as_deref()
    }
}

/// The operations every backend implements. Callers use [`GenericRemoteStorage`], which adds
/// validation, metrics, and `list`/`delete_prefix` on top.
pub trait RemoteStorage: Send + Sync + 'static {
    /// Lists keys under `prefix` (the whole storage when `None`), one page per item. At most
    /// `max_keys` keys and prefixes in total when given.
    fn list_streaming(
        &self,
        prefix: Option<&RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &CancellationToken,
    ) -> impl Stream<Item = Result<Listing, Error>> + Send;

    /// Size, modification time, etag and metadata of one object.
    fn head(
        &self,
        path: &RemotePath,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<ObjectMeta, Error>> + Send;

    /// Stores `size` bytes from `source` at `to`, atomically replacing any previous object.
    fn upload(
        &self,
        source: UploadSource,
        size: u64,
        to: &RemotePath,
        metadata: Option<StorageMetadata>,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Starts reading an object (or a range of it).
    fn download(
        &self,
        from: &RemotePath,
        opts: &DownloadOpts,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<Download, Error>> + Send;

    /// Deletes one object; a missing object is success.
    fn delete(
        &self,
        path: &RemotePath,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Deletes many objects, in batches of [`RemoteStorage::max_keys_per_delete`].
    fn delete_objects(
        &self,
        paths: &[RemotePath],
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The backend's batch-delete limit.
    fn max_keys_per_delete(&self) -> usize;

    /// Copies an object (server-side on S3 and Azure), with its metadata.
    fn copy(
        &self,
        from: &RemotePath,
        to: &RemotePath,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Applies `max_keys` to one page: keeps the first entries in byte order of keys and common
/// prefixes together (S3's `MaxKeys` counts both, in that one order), and says how many may
/// still follow.
pub(crate) fn apply_max_keys(page: &mut Listing, remaining: &mut Option<u32>) {
    let Some(left) = remaining.as_mut() else {
        return;
    };
    let (mut k, mut p) = (0, 0);
    while k + p < *left as usize && (k < page.keys.len() || p < page.prefixes.len()) {
        let key_first = match (page.keys.get(k), page.prefixes.get(p)) {
            (Some(key), Some(prefix)) => key.key.as_str() < prefix.as_str(),
            (Some(_), None) => true,
            _ => false,
        };
        if key_first {
            k += 1;
        } else {
            p += 1;
        }
    }
    page.keys.truncate(k);
    page.prefixes.truncate(p);
    *left -= (k + p) as u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(keys: &[&str], prefixes: &[&str]) -> Listing {
        Listing {
            prefixes: prefixes
                .iter()
                .map(|p| RemotePath::new(p).unwrap())
                .collect(),
            keys: keys
                .iter()
                .map(|k| ListingObject {
                    key: RemotePath::new(k).unwrap(),
                    last_modified: SystemTime::UNIX_EPOCH,
                    size: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn max_keys_counts_keys_and_prefixes_in_one_byte_order() {
        let mut page = listing(&["a", "c", "e"], &["b/", "d/"]);
        let mut left = Some(3);
        apply_max_keys(&mut page, &mut left);
        assert_eq!(page, listing(&["a", "c"], &["b/"]));
        assert_eq!(left, Some(0));
        let mut page = listing(&["x"], &["a/", "b/"]);
        let mut left = Some(2);
        apply_max_keys(&mut page, &mut left);
        assert_eq!(page, listing(&[], &["a/", "b/"]));
        let mut page = listing(&["a"], &["b/"]);
        let mut left = Some(5);
        apply_max_keys(&mut page, &mut left);
        assert_eq!(page, listing(&["a"], &["b/"]));
        assert_eq!(left, Some(3));
        let mut page = listing(&["a"], &["b/"]);
        let mut none = None;
        apply_max_keys(&mut page, &mut none);
        assert_eq!(page, listing(&["a"], &["b/"]));
    }
}
