//! The server side of a libpq connection: startup negotiation, optional JWT
//! authentication, then messages.
//!
//! Handshake ([`ServerConnection::handshake`]):
//! 1. SSLRequest / GSSENCRequest are answered `'N'` and the client may go on in cleartext
//!    (libpq's default `sslmode=prefer` does exactly that).
//! 2. A CancelRequest ends the handshake with [`Handshake::Cancel`]; we have no queries to
//!    cancel, so callers just close.
//! 3. The StartupMessage's parameters are kept; its `options` must parse.
//! 4. With auth configured, the server sends AuthenticationCleartextPassword and takes the
//!    password as a JWT. It must verify with one of the keys, and its scope must be one the
//!    port allows; a `tenant`-scoped token additionally must name the tenant given in the
//!    startup options (the `tenant_id` setting). Failures are answered with a FATAL
//!    ErrorResponse (SQLSTATE 28000) before the connection is closed.
//! 5. AuthenticationOk, the configured ParameterStatus values, BackendKeyData and
//!    ReadyForQuery: the client may send queries.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use utils::TenantId;
use utils::auth::{Claims, JwtAuth, Scope, authorize};

use crate::error::{ProtocolError, SqlState};
use crate::framed::{MessageReader, MessageWriter};
use crate::messages::{BeMessage, FeMessage, FieldDescription};
use crate::startup::{FeStartupPacket, StartupParams};

/// Longest password (JWT) accepted during authentication.
pub const MAX_PASSWORD_LENGTH: usize = 16 * 1024;

/// ParameterStatus values sent after authentication. `server_version` lets libpq clients
/// (psql) and PostgreSQL's own tools pick their dialect; `integer_datetimes=on` is
/// required by `pg_receivewal`/`pg_basebackup`.
pub const DEFAULT_SERVER_PARAMETERS: &[(&str, &str)] = &[
    ("server_version", "15.0"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
];

/// How a server authenticates connections.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeConfig<'a> {
    /// Keys to verify JWTs with; `None` = no authentication (trust).
    pub auth: Option<&'a JwtAuth>,
    /// Scopes this port accepts (e.g. `safekeeperdata` and `tenant`).
    pub allowed_scopes: &'a [Scope],
    /// The `options` setting that names the connection's tenant (`tenant_id`).
    pub tenant_setting: &'a str,
    /// ParameterStatus values to report.
    pub parameters: &'a [(&'a str, &'a str)],
}

impl Default for HandshakeConfig<'_> {
    fn default() -> Self {
        HandshakeConfig {
            auth: None,
            allowed_scopes: &[],
            tenant_setting: "tenant_id",
            parameters: DEFAULT_SERVER_PARAMETERS,
        }
    }
}

/// How a handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// The client is authenticated and ready to send queries.
    Ready {
        /// Its startup parameters.
        params: StartupParams,
        /// The verified token's claims, when auth is configured.
        claims: Option<Claims>,
    },
    /// The client sent a CancelRequest.
    Cancel {
        /// Process id it quoted.
        process_id: i32,
        /// Secret it quoted.
        secret_key: i32,
    },
    /// The client went away before starting up.
    Closed,
}

/// A server's view of one client connection.
#[derive(Debug)]
pub struct ServerConnection<R, W> {
    reader: MessageReader<R>,
    writer: MessageWriter<W>,
}

impl<S: AsyncRead + AsyncWrite> ServerConnection<tokio::io::ReadHalf<S>, tokio::io::WriteHalf<S>> {
    /// Wraps a bidirectional stream (split internally; for a `TcpStream` prefer
    /// [`ServerConnection::new`] with its `into_split` halves).
    pub fn from_stream(stream: S) -> Self {
        let (r, w) = tokio::io::split(stream);
        ServerConnection::new(r, w)
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> ServerConnection<R, W> {
    /// Wraps the two halves of a connection.
    pub fn new(reader: R, writer: W) -> Self {
        ServerConnection {
            reader: MessageReader::new(reader),
            writer: MessageWriter::new(writer),
        }
    }

    /// Separates the directions, e.g. after entering CopyBoth mode.
    pub fn into_split(self) -> (MessageReader<R>, MessageWriter<W>) {
        (self.reader, self.writer)
    }

    /// The reading half.
    pub fn reader(&mut self) -> &mut MessageReader<R> {
        &mut self.reader
    }

    /// The writing half.
    pub fn writer(&mut self) -> &mut MessageWriter<W> {
        &mut self.writer
    }

    /// Runs the startup phase (see module docs). Errors have already been reported to the
    /// client where the protocol allows it; the caller logs them and closes.
    pub async fn handshake(
        &mut self,
        config: &HandshakeConfig<'_>,
    ) -> Result<Handshake, ProtocolError> {
        let params = loop {
            match self.reader.read_startup_packet().await {
                Ok(None) => return Ok(Handshake::Closed),
                Ok(Some(FeStartupPacket::SslRequest | FeStartupPacket::GssEncRequest)) => {
                    self.writer.write_be(&BeMessage::EncryptionResponse(false));
                    self.writer.flush().await?;
                }
                Ok(Some(FeStartupPacket::CancelRequest {
                    process_id,
                    secret_key,
                })) => {
                    return Ok(Handshake::Cancel {
                        process_id,
                        secret_key,
                    });
                }
                Ok(Some(FeStartupPacket::Startup(params))) => break params,
                Err(e) => return Err(self.fail(SqlState::PROTOCOL_VIOLATION, e).await),
            }
        };
        let settings = match params.settings() {
            Ok(s) => s,
            Err(e) => {
                let e = ProtocolError::malformed("startup options", e.to_string());
                return Err(self.fail(SqlState::INVALID_PARAMETER_VALUE, e).await);
            }
        };
        let claims = match config.auth {
            None => None,
            Some(auth) => {
                let tenant = settings
                    .iter()
                    .rev()
                    .find(|(n, _)| n == config.tenant_setting)
                    .map(|(_, v)| v.parse::<TenantId>())
                    .transpose();
                let tenant = match tenant {
                    Ok(t) => t,
                    Err(e) => {
                        let e = ProtocolError::malformed("startup options", e.to_string());
                        return Err(self.fail(SqlState::INVALID_PARAMETER_VALUE, e).await);
                    }
                };
                match self.authenticate(auth, config.allowed_scopes, tenant).await {
                    Ok(c) => Some(c),
                    Err(e) => return Err(self.fail(SqlState::INVALID_AUTHORIZATION, e).await),
                }
            }
        };
        self.writer.write_be(&BeMessage::AuthenticationOk);
        for &(name, value) in config.parameters {
            self.writer
                .write_be(&BeMessage::ParameterStatus { name, value });
        }
        self.writer.write_be(&BeMessage::BackendKeyData {
            process_id: std::process::id() as i32,
            secret_key: 0,
        });
        self.writer.write_be(&BeMessage::ReadyForQuery);
        self.writer.flush().await?;
        Ok(Handshake::Ready { params, claims })
    }

    async fn authenticate(
        &mut self,
        auth: &JwtAuth,
        allowed: &[Scope],
        tenant: Option<TenantId>,
    ) -> Result<Claims, ProtocolError> {
        self.writer
            .write_be(&BeMessage::AuthenticationCleartextPassword);
        self.writer.flush().await?;
        let msg = self
            .reader
            .read_fe_message(MAX_PASSWORD_LENGTH)
            .await?
            .ok_or(ProtocolError::UnexpectedEof("authentication"))?;
        let FeMessage::Password(body) = msg else {
            return Err(ProtocolError::Unexpected {
                got: msg.name(),
                expected: "PasswordMessage",
            });
        };
        let token = FeMessage::password_str(&body)?;
        let claims = auth
            .decode(token)
            .map_err(|e| ProtocolError::Auth(e.to_string()))?;
        authorize(&claims, allowed, tenant).map_err(|e| ProtocolError::Auth(e.to_string()))?;
        Ok(claims)
    }

    /// Reports `err` to the client as FATAL (best effort) and returns it for logging.
    async fn fail(&mut self, code: SqlState, err: ProtocolError) -> ProtocolError {
        if !matches!(err, ProtocolError::Io(_)) {
            let message = err.to_string();
            self.writer.write_be(&BeMessage::ErrorResponse {
                code,
                message: &message,
                fatal: true,
            });
            // The connection is being dropped anyway; a failed write changes nothing.
            let _ = self.writer.flush().await;
        }
        err
    }

    /// Reads the next frontend message with a body of at most `max_len` bytes.
    pub async fn read_message(
        &mut self,
        max_len: usize,
    ) -> Result<Option<FeMessage>, ProtocolError> {
        self.reader.read_fe_message(max_len).await
    }

    /// Buffers a backend message.
    pub fn write_message(&mut self, msg: &BeMessage<'_>) {
        self.writer.write_be(msg);
    }

    /// Buffers a complete result set: RowDescription, the rows and CommandComplete.
    pub fn write_result_set(
        &mut self,
        fields: &[FieldDescription<'_>],
        rows: &[&[Option<&[u8]>]],
        command_tag: &str,
    ) {
        self.writer.write_be(&BeMessage::RowDescription(fields));
        for row in rows {
            self.writer.write_be(&BeMessage::DataRow(row));
        }
        self.writer
            .write_be(&BeMessage::CommandComplete(command_tag));
    }

    /// Buffers an ERROR (the session continues) and ReadyForQuery.
    pub fn write_error_and_ready(&mut self, code: SqlState, message: &str) {
        self.writer.write_be(&BeMessage::ErrorResponse {
            code,
            message,
            fatal: false,
        });
        self.writer.write_be(&BeMessage::ReadyForQuery);
    }

    /// Buffers one CopyData whose payload `fill` encodes in place.
    pub fn write_copy_data_with<E>(
        &mut self,
        fill: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        self.writer.write_copy_data_with(fill)
    }

    /// Sends everything buffered.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        self.writer.flush().await
    }
}
