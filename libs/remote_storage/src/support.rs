//! Shared plumbing of the backends: deadlines with cancellation, guarded download streams,
//! upload stream length checks and chunking, and the one multipart upload loop.
//!
//! Timeouts bound *progress*, not whole transfers: a request gets `timeout` to complete, a
//! body stream gets `timeout` between chunks, a multipart upload gets it per part. So an
//! object of any size goes through a slow but live link, and a dead one is noticed within
//! `timeout` whatever the object's size.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::{DownloadStream, Error, UploadStream};

/// Runs `fut` until it finishes, `timeout` passes ([`Error::Timeout`]) or `cancel` fires
/// ([`Error::Cancelled`]). Dropping the future on timeout or cancel aborts the request.
pub(crate) async fn timed<T>(
    timeout: Duration,
    cancel: &CancellationToken,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::Cancelled),
        r = tokio::time::timeout(timeout, fut) => r.unwrap_or(Err(Error::Timeout(timeout))),
    }
}

/// Runs `fut` for at most `timeout` ([`Error::Timeout`]): one step of an operation whose
/// cancellation is handled around the whole (see [`cancellable`]).
pub(crate) async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(Error::Timeout(timeout)))
}

/// Runs `fut` until it finishes or `cancel` fires: for operations whose steps carry their
/// own progress timeouts (a multipart upload).
pub(crate) async fn cancellable<T>(
    cancel: &CancellationToken,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::Cancelled),
        r = fut => r,
    }
}

/// Wraps a backend's body stream so that reading it honours the cancellation token and an
/// idle timeout (`timeout` while waiting for the next chunk; time the consumer spends
/// between reads does not count), and keeps the concurrency permit until the body is
/// consumed or dropped. After an error the stream ends.
pub(crate) fn guard_stream(
    inner: impl Stream<Item = Result<Bytes, Error>> + Send + 'static,
    timeout: Duration,
    cancel: CancellationToken,
    permit: Option<OwnedSemaphorePermit>,
) -> DownloadStream {
    Box::pin(async_stream::stream! {
        let _permit = permit;
        let mut inner = std::pin::pin!(inner);
        loop {
            let item = tokio::select! {
                biased;
                _ = cancel.cancelled() => Some(Err(Error::Cancelled)),
                _ = tokio::time::sleep(timeout) => Some(Err(Error::Timeout(timeout))),
                item = inner.next() => item,
            };
            match item {
                None => break,
                Some(Ok(chunk)) => yield Ok(chunk),
                Some(Err(e)) => {
                    yield Err(e);
                    break;
                }
            }
        }
    })
}

/// Uploads the parts of one multipart (S3) or block (Azure) upload: every chunk of
/// `part_size` from `reader`, at most `max_in_flight` at once, each with `put(index, data)`
/// (index from 0, in stream order). Returns the parts' results in index order.
///
/// Finished parts are collected *while* the next chunk is read, so a failed part ends the
/// upload at once (not when the caller's stream yields its next chunk, which may be never)
/// and a finished part frees its slot and its memory right away.
pub(crate) async fn upload_parts<T, F, Fut>(
    reader: &mut ChunkReader,
    part_size: usize,
    max_in_flight: usize,
    mut put: F,
) -> Result<Vec<T>, Error>
where
    F: FnMut(u32, Bytes) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut in_flight = FuturesUnordered::new();
    let mut done: Vec<(u32, T)> = Vec::new();
    let tagged = |index: u32, fut: Fut| async move { fut.await.map(|t| (index, t)) };
    let mut next_index = 0u32;
    let mut reading = true;
    while reading || !in_flight.is_empty() {
        if reading && in_flight.len() < max_in_flight.max(1) {
            let chunk = {
                let read = reader.next_chunk(part_size);
                let mut read = std::pin::pin!(read);
                loop {
                    tokio::select! {
                        chunk = &mut read => break chunk?,
                        Some(part) = in_flight.next(), if !in_flight.is_empty() => {
                            done.push(part?);
                        }
                    }
                }
            };
            match chunk {
                Some(data) => {
                    in_flight.push(tagged(next_index, put(next_index, data)));
                    next_index += 1;
                }
                None => reading = false,
            }
        } else if let Some(part) = in_flight.next().await {
            done.push(part?);
        }
    }
    done.sort_by_key(|(index, _)| *index);
    Ok(done.into_iter().map(|(_, t)| t).collect())
}

/// Reads an upload stream in fixed-size chunks and checks that it holds exactly the size
/// the caller declared: a short or long stream is [`Error::BadInput`], never a truncated or
/// overlong object.
pub(crate) struct ChunkReader {
    stream: futures::stream::Fuse<UploadStream>,
    leftover: Bytes,
    expected: u64,
    read: u64,
    idle_timeout: Duration,
}

impl ChunkReader {
    /// Reads `stream`, which must hold exactly `expected` bytes; a wait of more than
    /// `idle_timeout` for its next piece is [`Error::Timeout`] (a stalled caller must not
    /// hold an upload, and its concurrency permits, forever).
    pub(crate) fn new(stream: UploadStream, expected: u64, idle_timeout: Duration) -> ChunkReader {
        ChunkReader {
            stream: stream.fuse(),
            leftover: Bytes::new(),
            expected,
            read: 0,
            idle_timeout,
        }
    }

    /// The next piece of at most `max` bytes as the stream delivers it (no copying), or
    /// `None` at a correct end.
    pub(crate) async fn next_piece(&mut self, max: usize) -> Result<Option<Bytes>, Error> {
        let mut piece = if self.leftover.is_empty() {
            loop {
                let next = tokio::time::timeout(self.idle_timeout, self.stream.next())
                    .await
                    .map_err(|_| Error::Timeout(self.idle_timeout))?;
                match next {
                    None => {
                        return if self.read == self.expected {
                            Ok(None)
                        } else {
                            Err(self.size_mismatch())
                        };
                    }
                    Some(Err(e)) => return Err(read_error(e)),
                    Some(Ok(b)) if b.is_empty() => continue,
                    Some(Ok(b)) => break b,
                }
            }
        } else {
            std::mem::take(&mut self.leftover)
        };
        if piece.len() > max {
            self.leftover = piece.split_off(max);
        }
        self.read += piece.len() as u64;
        if self.read > self.expected {
            return Err(self.size_mismatch());
        }
        Ok(Some(piece))
    }

    /// Exactly `size` bytes (fewer only at the end of the stream), or `None` at the end.
    pub(crate) async fn next_chunk(&mut self, size: usize) -> Result<Option<Bytes>, Error> {
        let mut buf = BytesMut::new();
        while buf.len() < size {
            match self.next_piece(size - buf.len()).await? {
                None => break,
                Some(piece) if buf.is_empty() && piece.len() == size => return Ok(Some(piece)),
                Some(piece) => buf.extend_from_slice(&piece),
            }
        }
        if buf.is_empty() {
            // Confirms the length check at the end.
            return match self.next_piece(1).await? {
                None => Ok(None),
                Some(_) => Err(self.size_mismatch()),
            };
        }
        Ok(Some(buf.freeze()))
    }

    /// The whole stream as one buffer (small uploads), checked against the declared size.
    pub(crate) async fn read_all(&mut self) -> Result<Bytes, Error> {
        let size = usize::try_from(self.expected)
            .map_err(|_| Error::BadInput(format!("size {} too large", self.expected)))?;
        let data = self.next_chunk(size).await?.unwrap_or_default();
        match self.next_piece(1).await? {
            None => Ok(data),
            Some(_) => Err(self.size_mismatch()),
        }
    }

    fn size_mismatch(&self) -> Error {
        Error::BadInput(format!(
            "upload stream length does not match the declared size {} (read {} bytes so far)",
            self.expected, self.read
        ))
    }
}

/// An error reading the caller's upload stream: its own failure, not the storage's.
fn read_error(e: io::Error) -> Error {
    Error::Permanent(anyhow::Error::new(e).context("reading the upload stream"))
}

/// Converts an S3/Azure byte range to an HTTP `Range` header value (`end` exclusive).
pub(crate) fn http_range(start: u64, end: Option<u64>) -> Option<String> {
    match (start, end) {
        (0, None) => None,
        (s, None) => Some(format!("bytes={s}-")),
        (s, Some(e)) => Some(format!("bytes={s}-{}", e.saturating_sub(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn source(pieces: &[&'static [u8]]) -> UploadStream {
        Box::pin(stream::iter(
            pieces
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        ))
    }

    const LONG: Duration = Duration::from_secs(60);
    const SHORT: Duration = Duration::from_millis(300);

    /// `first`, then a stream that never yields again (a stalled caller or server).
    fn stalls_after(first: &'static [u8]) -> UploadStream {
        Box::pin(stream::iter([Ok(Bytes::from_static(first))]).chain(stream::pending()))
    }

    /// Chunks arriving every `gap`, `n` of them.
    fn trickle(n: usize, gap: Duration) -> impl Stream<Item = Result<Bytes, Error>> + Send {
        stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(gap).await;
            Ok(Bytes::from_static(b"chunk"))
        })
    }

    #[tokio::test]
    async fn a_body_may_take_longer_than_the_timeout_while_it_makes_progress() {
        // Ten chunks 100 ms apart: a second in all, three times the timeout.
        let body = guard_stream(
            trickle(10, SHORT / 3),
            SHORT,
            CancellationToken::new(),
            None,
        );
        let chunks: Vec<_> = body.collect().await;
        assert_eq!(chunks.len(), 10);
        assert!(chunks.iter().all(Result::is_ok));

        // A slow consumer is not the backend stalling.
        let mut body = guard_stream(
            trickle(3, Duration::ZERO),
            SHORT,
            CancellationToken::new(),
            None,
        );
        for _ in 0..3 {
            tokio::time::sleep(SHORT * 2).await;
            assert!(body.next().await.unwrap().is_ok());
        }
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stalled_body_or_upload_stream_times_out() {
        let inner = stalls_after(b"first").map(|r| r.map_err(|e| Error::Permanent(e.into())));
        let mut body = guard_stream(inner, SHORT, CancellationToken::new(), None);
        assert!(body.next().await.unwrap().is_ok());
        assert!(matches!(body.next().await, Some(Err(Error::Timeout(_)))));
        assert!(
            body.next().await.is_none(),
            "the stream ends after an error"
        );

        let mut reader = ChunkReader::new(stalls_after(b"abc"), 10, SHORT);
        assert!(matches!(reader.next_chunk(8).await, Err(Error::Timeout(t)) if t == SHORT));
    }

    #[tokio::test]
    async fn a_failed_part_ends_the_upload_while_the_next_chunk_is_still_being_read() {
        // The caller's stream stalls after the first part; the part fails. The upload must
        // report that failure now, not when the stream next yields (here: after a minute).
        let mut reader = ChunkReader::new(stalls_after(b"abcd"), 100, LONG);
        let put = |index: u32, _data: Bytes| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err::<(), _>(Error::Permanent(anyhow::anyhow!("part {index} refused")))
        };
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            upload_parts(&mut reader, 4, 4, put),
        )
        .await
        .expect("the failed part must end the upload without waiting for the stream");
        assert!(matches!(r, Err(Error::Permanent(e)) if e.to_string() == "part 0 refused"));
    }

    #[tokio::test]
    async fn parts_come_back_in_order_with_bounded_concurrency() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let data: &'static [u8] = b"0123456789abcdefghij";
        let mut reader = ChunkReader::new(source(&[data]), data.len() as u64, LONG);
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let put = |index: u32, data: Bytes| {
            let (now, peak) = (&now, &peak);
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                // Later parts finish first.
                tokio::time::sleep(Duration::from_millis(u64::from(30 - 3 * index))).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok((index, data))
            }
        };
        let parts = upload_parts(&mut reader, 2, 3, put).await.unwrap();
        let indexes: Vec<u32> = parts.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, (0..10).collect::<Vec<_>>());
        let joined: Vec<u8> = parts.iter().flat_map(|(_, d)| d.to_vec()).collect();
        assert_eq!(joined, data);
        assert_eq!(
            peak.load(Ordering::SeqCst),
            3,
            "at most 3 parts in flight, and 3 used"
        );
    }

    #[tokio::test]
    async fn chunks_and_length_checks() {
        let mut r = ChunkReader::new(source(&[b"abc", b"defg", b"h"]), 8, LONG);
        assert_eq!(r.next_chunk(3).await.unwrap().unwrap(), "abc");
        assert_eq!(r.next_chunk(3).await.unwrap().unwrap(), "def");
        assert_eq!(r.next_chunk(3).await.unwrap().unwrap(), "gh");
        assert!(r.next_chunk(3).await.unwrap().is_none());

        let mut short = ChunkReader::new(source(&[b"abc"]), 4, LONG);
        assert!(matches!(short.next_chunk(8).await, Err(Error::BadInput(_))));

        let mut long = ChunkReader::new(source(&[b"abc", b"de"]), 4, LONG);
        assert!(matches!(long.next_chunk(8).await, Err(Error::BadInput(_))));
    }

    #[test]
    fn ranges() {
        assert_eq!(http_range(0, None), None);
        assert_eq!(http_range(5, None).as_deref(), Some("bytes=5-"));
        assert_eq!(http_range(0, Some(1)).as_deref(), Some("bytes=0-0"));
    }
}
