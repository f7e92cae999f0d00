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
//! - A streaming listing is delivered page by page (memory stays one page, also for
//!   `delete_prefix` of a huge prefix). A transient error mid-listing restarts it and skips
//!   what was already delivered: listings are in key order, so everything up to the last
//!   key or prefix delivered is known. The bound counts failures without a new page.

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
        retry(&op, self.policy, cancel, |e: &Error| !e.is_transient(), f)
            .await
            .map_err(|e| stopped(op, e))
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

    /// Retried listing, page by page (see the module docs).
    pub fn list_streaming<'a>(
        &'a self,
        prefix: Option<&'a RemotePath>,
        mode: ListingMode,
        max_keys: Option<NonZeroU32>,
        cancel: &'a CancellationToken,
    ) -> BoxStream<'a, Result<Listing, Error>> {
        let what = format!("list {}", prefix.map_or("", RemotePath::as_str));
        resuming_listing(what, self.policy, cancel, move || {
            self.inner.list_streaming(prefix, mode, max_keys, cancel)
        })
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

/// The error a retry loop that stopped without success returns.
fn stopped(op: String, e: RetryError<Error>) -> Error {
    match e {
        RetryError::Permanent(e) => e,
        RetryError::Exhausted { attempts, last } => Error::GaveUp {
            op,
            attempts,
            last: Box::new(last),
        },
        RetryError::Cancelled => Error::Cancelled,
    }
}

/// The pages of the listings `open` starts, restarting after a transient error and
/// skipping every key and prefix up to the last one delivered.
fn resuming_listing<'a>(
    what: String,
    policy: RetryPolicy,
    cancel: &'a CancellationToken,
    mut open: impl FnMut() -> BoxStream<'a, Result<Listing, Error>> + Send + 'a,
) -> BoxStream<'a, Result<Listing, Error>> {
    async_stream::stream! {
        // The last key or prefix delivered; listings order both by bytes.
        let mut delivered: Option<String> = None;
        let mut failures: u32 = 0;
        'listing: loop {
            let mut pages = open();
            while let Some(page) = pages.next().await {
                let mut page = match page {
                    Ok(page) => page,
                    Err(e) if e.is_transient() && !cancel.is_cancelled() => {
                        failures += 1;
                        match policy.wait_after_failure(&what, failures, e, cancel).await {
                            Ok(()) => continue 'listing,
                            Err(stop) => {
                                yield Err(stopped(what, stop));
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                };
                if let Some(after) = delivered.as_deref() {
                    page.keys.retain(|o| o.key.as_str() > after);
                    page.prefixes.retain(|p| p.as_str() > after);
                }
                let last_key = page.keys.last().map(|o| o.key.as_str());
                let last_prefix = page.prefixes.last().map(RemotePath::as_str);
                let Some(last) = last_key.max(last_prefix).map(str::to_owned) else {
                    // Nothing new (a page already delivered before a restart).
                    continue;
                };
                delivered = Some(last);
                failures = 0;
                yield Ok(page);
            }
            return;
        }
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ListingObject;
    use utils::backoff::Backoff;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff {
                initial: Duration::from_millis(1),
                cap: Duration::from_millis(2),
                factor: 2.0,
            },
            max_attempts: Some(max_attempts),
            warn_after: 100,
        }
    }

    /// Page `i` of a listing of 5 pages of 3 keys (`k00`..`k14`), with a prefix `k05/` in
    /// page 1 (as a delimiter listing would have it).
    fn page(i: u32) -> Listing {
        let keys = (i * 3..i * 3 + 3)
            .map(|n| ListingObject {
                key: RemotePath::new(&format!("k{n:02}")).unwrap(),
                last_modified: SystemTime::UNIX_EPOCH,
                size: 1,
            })
            .collect();
        let prefixes = if i == 1 {
            vec![RemotePath::new("k05/").unwrap()]
        } else {
            Vec::new()
        };
        Listing { prefixes, keys }
    }

    /// Listings that fail (transiently) at page `fail_at[attempt]` of attempt `attempt`.
    fn flaky_listings<'a>(
        fail_at: &'a [u32],
        opened: &'a AtomicU32,
    ) -> impl FnMut() -> BoxStream<'a, Result<Listing, Error>> + Send + 'a {
        move || {
            let attempt = opened.fetch_add(1, Ordering::SeqCst) as usize;
            let fail = fail_at.get(attempt).copied();
            futures::stream::iter((0..5).map(move |i| {
                if Some(i) == fail {
                    Err(Error::Transient(anyhow::anyhow!("page {i} lost")))
                } else {
                    Ok(page(i))
                }
            }))
            .take_while({
                let mut failed = false;
                move |r| {
                    let go = !failed;
                    failed |= r.is_err();
                    futures::future::ready(go)
                }
            })
            .boxed()
        }
    }

    fn names(pages: &[Listing]) -> Vec<String> {
        let mut out = Vec::new();
        for p in pages {
            out.extend(p.prefixes.iter().map(|p| p.as_str().to_owned()));
            out.extend(p.keys.iter().map(|o| o.key.as_str().to_owned()));
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn a_listing_resumes_after_mid_listing_errors_without_repeats_or_gaps() {
        let cancel = CancellationToken::new();
        let opened = AtomicU32::new(0);
        // Fails at page 2, then (restarted) at page 4, then at page 1 again: each restart
        // skips what was delivered.
        let fail_at = [2, 4, 1];
        let pages: Vec<Listing> = resuming_listing(
            "list".into(),
            policy(3),
            &cancel,
            flaky_listings(&fail_at, &opened),
        )
        .map(Result::unwrap)
        .collect()
        .await;
        let mut want: Vec<String> = (0..15).map(|n| format!("k{n:02}")).collect();
        want.push("k05/".into());
        want.sort();
        assert_eq!(names(&pages), want);
        assert!(pages.len() >= 5, "delivered page by page, not collected");
        assert_eq!(opened.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn failures_without_progress_give_up_and_permanent_errors_stop() {
        let cancel = CancellationToken::new();
        let opened = AtomicU32::new(0);
        let fail_at = [0, 0, 0, 0];
        let results: Vec<_> = resuming_listing(
            "list".into(),
            policy(3),
            &cancel,
            flaky_listings(&fail_at, &opened),
        )
        .collect()
        .await;
        assert_eq!(results.len(), 1);
        assert!(
            matches!(&results[0], Err(Error::GaveUp { attempts: 3, .. })),
            "{results:?}"
        );

        let permanent =
            || futures::stream::iter([Ok(page(0)), Err(Error::NotFound("x".into()))]).boxed();
        let results: Vec<_> = resuming_listing("list".into(), policy(3), &cancel, permanent)
            .collect()
            .await;
        assert_eq!(results.len(), 2);
        assert!(matches!(results[1], Err(Error::NotFound(_))));
    }
}
