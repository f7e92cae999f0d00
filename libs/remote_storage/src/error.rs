//! The one error type of every remote storage operation.
//!
//! Invariant: every error says whether retrying can help ([`Error::is_transient`]). The
//! retrying wrapper and the callers' own retry loops rely on it: transient errors (network,
//! timeouts, throttling, 5xx) are retried, permanent ones (bad input, missing objects or
//! containers, authorization) are not, and [`Error::Cancelled`] stops everything.

use std::time::Duration;

use crate::remote_path::RemotePathError;

/// Whether an error is worth retrying; see [`Error::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A retry may succeed (network error, timeout, throttling, server error).
    Transient,
    /// A retry gives the same answer (bad input, not found, forbidden).
    Permanent,
    /// The caller cancelled: stop, do not retry.
    Cancelled,
}

/// What went wrong in a remote storage operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path is not valid; detected before any request is sent.
    #[error(transparent)]
    InvalidPath(#[from] RemotePathError),
    /// Other input the backend cannot accept (range, metadata, size mismatch, a key that
    /// collides with a prefix on LocalFs); detected before or instead of a request.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The object does not exist (HTTP 404).
    #[error("object not found: {0}")]
    NotFound(String),
    /// `if_none_match` matched: the caller's copy is current (HTTP 304).
    #[error("object not modified since the given etag")]
    Unmodified,
    /// The requested byte range starts at or past the end of the object (HTTP 416).
    #[error("requested range is not satisfiable: {0}")]
    RangeNotSatisfiable(String),
    /// The bucket or container itself is missing: a configuration error, never retried.
    #[error("{0} does not exist")]
    ContainerNotFound(String),
    /// A request, or a wait for a body's or an upload source's next chunk, took longer than
    /// its timeout (small or data-transfer).
    #[error("remote storage operation timed out after {0:?}")]
    Timeout(Duration),
    /// The cancellation token fired.
    #[error("remote storage operation cancelled")]
    Cancelled,
    /// The retrying wrapper gave up after its bound; `last` is the final attempt's error.
    #[error("{op}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// The operation, with its path.
        op: String,
        /// How many times it was attempted.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// A failure a retry may fix: network, 5xx, throttling, injected failures.
    #[error("transient remote storage error: {0:#}")]
    Transient(anyhow::Error),
    /// A failure a retry will not fix: authorization, malformed requests, unexpected responses.
    #[error("remote storage error: {0:#}")]
    Permanent(anyhow::Error),
}

impl Error {
    /// Classifies the error for retry decisions.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Timeout(_) | Error::Transient(_) => ErrorKind::Transient,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::GaveUp { .. }
            | Error::InvalidPath(_)
            | Error::BadInput(_)
            | Error::NotFound(_)
            | Error::Unmodified
            | Error::RangeNotSatisfiable(_)
            | Error::ContainerNotFound(_)
            | Error::Permanent(_) => ErrorKind::Permanent,
        }
    }

    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// Whether the error is a cancellation, possibly reported through the retrying wrapper.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }

    /// Whether the object was missing (possibly after retries).
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound(_) => true,
            Error::GaveUp { last, .. } => last.is_not_found(),
            _ => false,
        }
    }

    /// A short label for metrics.
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidPath(_) | Error::BadInput(_) => "bad_input",
            Error::NotFound(_) => "not_found",
            Error::Unmodified => "unmodified",
            Error::RangeNotSatisfiable(_) => "bad_range",
            Error::ContainerNotFound(_) => "no_container",
            Error::Timeout(_) => "timeout",
            Error::Cancelled => "cancelled",
            Error::GaveUp { .. } => "gave_up",
            Error::Transient(_) => "transient",
            Error::Permanent(_) => "permanent",
        }
    }
}

impl From<Error> for std::io::Error {
    /// Lets download streams feed `tokio_util::io::StreamReader` and friends.
    fn from(e: Error) -> std::io::Error {
        let kind = match &e {
            Error::NotFound(_) => std::io::ErrorKind::NotFound,
            Error::Timeout(_) => std::io::ErrorKind::TimedOut,
            Error::Cancelled => std::io::ErrorKind::Interrupted,
            Error::InvalidPath(_) | Error::BadInput(_) => std::io::ErrorKind::InvalidInput,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert!(Error::Timeout(Duration::from_secs(1)).is_transient());
        assert!(Error::Transient(anyhow::anyhow!("x")).is_transient());
        assert!(!Error::NotFound("a".into()).is_transient());
        assert_eq!(Error::Cancelled.kind(), ErrorKind::Cancelled);
        let gave_up = Error::GaveUp {
            op: "download a".into(),
            attempts: 2,
            last: Box::new(Error::Transient(anyhow::anyhow!("boom"))),
        };
        assert!(!gave_up.is_transient(), "the bound is final");
        assert_eq!(
            gave_up.to_string(),
            "download a: gave up after 2 attempts: transient remote storage error: boom"
        );
    }
}
