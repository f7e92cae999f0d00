//! Errors of the libpq layer.
//!
//! [`ProtocolError`] separates what the *peer* did wrong (malformed or oversized messages,
//! unexpected messages, a closed connection) from I/O failures, so a server can reply with
//! an ErrorResponse and log the reason, and a client can report the server's SQLSTATE.

use std::io;

/// A SQLSTATE code, five ASCII characters (`"08P01"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SqlState(pub &'static str);

impl SqlState {
    /// `XX000` internal_error.
    pub const INTERNAL_ERROR: SqlState = SqlState("XX000");
    /// `08P01` protocol_violation.
    pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    /// `28000` invalid_authorization_specification.
    pub const INVALID_AUTHORIZATION: SqlState = SqlState("28000");
    /// `28P01` invalid_password.
    pub const INVALID_PASSWORD: SqlState = SqlState("28P01");
    /// `42601` syntax_error.
    pub const SYNTAX_ERROR: SqlState = SqlState("42601");
    /// `0A000` feature_not_supported.
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    /// `22023` invalid_parameter_value.
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState("22023");
    /// `42704` undefined_object (e.g. an unknown tenant or timeline).
    pub const UNDEFINED_OBJECT: SqlState = SqlState("42704");
    /// `57P01` admin_shutdown.
    pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
    /// `53000` insufficient_resources.
    pub const INSUFFICIENT_RESOURCES: SqlState = SqlState("53000");
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// An ErrorResponse (or NoticeResponse) as a client received it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServerError {
    /// Severity, e.g. `ERROR`, `FATAL`.
    pub severity: String,
    /// SQLSTATE.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// Why a libpq exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of {0}")]
    UnexpectedEof(&'static str),
    /// A message longer than the reader accepts; the connection cannot continue, since
    /// the rest of the message was not read.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Which message (tag or "startup packet").
        what: String,
        /// Its declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message whose contents do not follow the protocol.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message or field.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A well-formed message the current state does not allow.
    #[error("unexpected {got} while expecting {expected}")]
    Unexpected {
        /// What arrived.
        got: String,
        /// What was allowed.
        expected: &'static str,
    },
    /// The server answered with an ErrorResponse (client side).
    #[error("server error: {0}")]
    Server(ServerError),
    /// Authentication failed (server side: the reason is also sent to the client).
    #[error("authentication failed: {0}")]
    Auth(String),
}

impl ProtocolError {
    /// A [`ProtocolError::Malformed`]; handy for callers decoding payloads of their own.
    pub fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        ProtocolError::Malformed {
            what,
            reason: reason.into(),
        }
    }

    /// The SQLSTATE a server should report for this error.
    pub fn sql_state(&self) -> SqlState {
        match self {
            ProtocolError::Io(_) | ProtocolError::Server(_) => SqlState::INTERNAL_ERROR,
            ProtocolError::Auth(_) => SqlState::INVALID_AUTHORIZATION,
            ProtocolError::TooLarge { .. } => SqlState::INSUFFICIENT_RESOURCES,
            ProtocolError::UnexpectedEof(_)
            | ProtocolError::Malformed { .. }
            | ProtocolError::Unexpected { .. } => SqlState::PROTOCOL_VIOLATION,
        }
    }
}
