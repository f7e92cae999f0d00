//! Shared plumbing of the backends: deadlines with cancellation, guarded download streams,
//! upload stream length checks and chunking.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
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

/// Wraps a backend's body stream so that reading it honours the operation's deadline and the
/// cancellation token, and keeps the concurrency permit until the body is consumed or
/// dropped. After an error the stream ends.
pub(crate) fn guard_stream(
    inner: impl Stream<Item = Result<Bytes, Error>> + Send + 'static,
    deadline: Instant,
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
                _ = tokio::time::sleep_until(deadline) => Some(Err(Error::Timeout(timeout))),
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

/// Reads an upload stream in fixed-size chunks and checks that it holds exactly the size
/// the caller declared: a short or long stream is [`Error::BadInput`], never a truncated or
/// overlong object.
pub(crate) struct ChunkReader {
    stream: futures::stream::Fuse<UploadStream>,
    leftover: Bytes,
    expected: u64,
    read: u64,
}

impl ChunkReader {
    pub(crate) fn new(stream: UploadStream, expected: u64) -> ChunkReader {
        ChunkReader {
            stream: stream.fuse(),
            leftover: Bytes::new(),
            expected,
            read: 0,
        }
    }

    /// The next piece of at most `max` bytes as the stream delivers it (no copying), or
    /// `None` at a correct end.
    pub(crate) async fn next_piece(&mut self, max: usize) -> Result<Option<Bytes>, Error> {
        let mut piece = if self.leftover.is_empty() {
            loop {
                match self.stream.next().await {
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

    #[tokio::test]
    async fn chunks_and_length_checks() {
        let mut r = ChunkReader::new(source(&[b"abc", b"defg", b"h"]), 8);
        assert_eq!(r.next_chunk(3).await.unwrap().unwrap(), "abc");
        assert_eq!(r.next_chunk(3).await.unwrap().unwrap(), "def");
        assert_eq!(r.next_chunk(3).await.unwrap().unwrap(), "gh");
        assert!(r.next_chunk(3).await.unwrap().is_none());

        let mut short = ChunkReader::new(source(&[b"abc"]), 4);
        assert!(matches!(short.next_chunk(8).await, Err(Error::BadInput(_))));

        let mut long = ChunkReader::new(source(&[b"abc", b"de"]), 4);
        assert!(matches!(long.next_chunk(8).await, Err(Error::BadInput(_))));
    }

    #[test]
    fn ranges() {
        assert_eq!(http_range(0, None), None);
        assert_eq!(http_range(5, None).as_deref(), Some("bytes=5-"));
        assert_eq!(http_range(0, Some(1)).as_deref(), Some("bytes=0-0"));
    }
}
