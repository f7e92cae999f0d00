//! The client side of a libpq connection, as the walproposer (to safekeepers) and the
//! pageserver's WAL receiver (from safekeepers) need it: start up as a replication
//! client, authenticate with a cleartext password (a JWT), run simple queries, and switch
//! to CopyBoth.
//!
//! Messages are encoded with `postgres_protocol::message::frontend` and parsed with
//! `postgres_protocol::message::backend`; the one backend message that crate lacks,
//! CopyBothResponse (`'W'`), is recognised here. Only cleartext-password and trust
//! authentication are supported (that is what Strata's servers use).

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ProtocolError, ServerError};
use crate::framed::{MessageReader, MessageWriter};
use crate::startup::StartupParams;

/// Longest non-CopyData message a client accepts (rows, errors, parameters).
pub const MAX_CONTROL_MESSAGE: usize = 1024 * 1024;

/// A message from the server, as the client sees it.
pub enum BackendMessage {
    /// A message `postgres_protocol` parses.
    Message(Message),
    /// `'W'`: the server switched to CopyBoth mode.
    CopyBothResponse,
}

impl std::fmt::Debug for BackendMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendMessage::Message(m) => f.write_str(&describe(m)),
            BackendMessage::CopyBothResponse => f.write_str("CopyBothResponse"),
        }
    }
}

/// The result of a simple query that returned rows (or just a command tag).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Column names of the last result set.
    pub columns: Vec<String>,
    /// Its rows, values in text format; `None` is NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// The last command tag.
    pub command_tag: Option<String>,
    /// Notices received while the query ran.
    pub notices: Vec<String>,
}

/// What the server reported during startup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerParams {
    /// ParameterStatus values.
    pub parameters: Vec<(String, String)>,
    /// BackendKeyData, if sent.
    pub backend_key: Option<(i32, i32)>,
}

impl ServerParams {
    /// A reported parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Turns ErrorResponse / NoticeResponse fields into a [`ServerError`].
pub fn server_error(mut fields: ErrorFields<'_>) -> ServerError {
    let mut e = ServerError::default();
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'S' if e.severity.is_empty() => e.severity = v,
            b'V' => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            _ => {}
        }
    }
    e
}

/// Reads backend messages (client side).
#[derive(Debug)]
pub struct BackendReader<R> {
    inner: MessageReader<R>,
}

impl<R: AsyncRead + Unpin> BackendReader<R> {
    /// Wraps a stream (or its read half).
    pub fn new(stream: R) -> Self {
        BackendReader {
            inner: MessageReader::new(stream),
        }
    }

    /// Reads the next backend message with a body of at most `max_len` bytes.
    pub async fn read_message(
        &mut self,
        max_len: usize,
    ) -> Result<Option<BackendMessage>, ProtocolError> {
        let Some((tag, mut frame)) = self.inner.read_frame(max_len).await? else {
            return Ok(None);
        };
        if tag == b'W' {
            return Ok(Some(BackendMessage::CopyBothResponse));
        }
        match Message::parse(&mut frame) {
            Ok(Some(m)) => Ok(Some(BackendMessage::Message(m))),
            Ok(None) => Err(ProtocolError::malformed(
                "backend message",
                "incomplete frame",
            )),
            Err(e) => Err(ProtocolError::malformed("backend message", e.to_string())),
        }
    }

    /// Reads the next CopyData payload in CopyBoth/CopyOut mode; `None` when the server
    /// ends the copy (CopyDone) or closes the connection. An ErrorResponse is returned as
    /// [`ProtocolError::Server`].
    pub async fn read_copy_data(&mut self, max_len: usize) -> Result<Option<Bytes>, ProtocolError> {
        loop {
            match self.read_message(max_len).await? {
                None => return Ok(None),
                Some(BackendMessage::Message(Message::CopyData(d))) => {
                    return Ok(Some(d.into_bytes()));
                }
                Some(BackendMessage::Message(Message::CopyDone)) => return Ok(None),
                Some(BackendMessage::Message(Message::ErrorResponse(e))) => {
                    return Err(ProtocolError::Server(server_error(e.fields())));
                }
                // Notices and parameter changes may arrive at any time.
                Some(BackendMessage::Message(
                    Message::NoticeResponse(_) | Message::ParameterStatus(_),
                )) => {}
                Some(other) => {
                    return Err(ProtocolError::Unexpected {
                        got: format!("{other:?}"),
                        expected: "CopyData",
                    });
                }
            }
        }
    }
}

/// Writes frontend messages (client side).
#[derive(Debug)]
pub struct FrontendWriter<W> {
    inner: MessageWriter<W>,
}

impl<W: AsyncWrite + Unpin> FrontendWriter<W> {
    /// Wraps a stream (or its write half).
    pub fn new(stream: W) -> Self {
        FrontendWriter {
            inner: MessageWriter::new(stream),
        }
    }

    /// Buffers one CopyData whose payload `fill` encodes in place.
    pub fn write_copy_data_with<E>(
        &mut self,
        fill: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        self.inner.write_copy_data_with(fill)
    }

    /// Bytes buffered and not yet flushed (to bound a batch of encoded messages).
    pub fn buffered(&self) -> usize {
        self.inner.buffered()
    }

    /// Buffers one CopyData.
    pub fn write_copy_data(&mut self, payload: &[u8]) {
        self.inner.write_copy_data(payload);
    }

    /// Buffers CopyDone.
    pub fn write_copy_done(&mut self) {
        frontend::copy_done(self.inner.buffer_mut());
    }

    /// Buffers a simple Query.
    pub fn write_query(&mut self, query: &str) -> Result<(), ProtocolError> {
        frontend::query(query, self.inner.buffer_mut())
            .map_err(|e| ProtocolError::malformed("query", e.to_string()))
    }

    /// Buffers Terminate.
    pub fn write_terminate(&mut self) {
        frontend::terminate(self.inner.buffer_mut());
    }

    /// Sends everything buffered.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        self.inner.flush().await
    }
}

/// A client connection to a libpq server.
#[derive(Debug)]
pub struct ClientConnection<R, W> {
    reader: BackendReader<R>,
    writer: FrontendWriter<W>,
}

impl ClientConnection<tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf> {
    /// Opens a TCP connection (Nagle off: protocol messages are small and latency-bound);
    /// call [`startup`](Self::startup) next.
    pub async fn connect_tcp(addr: &str) -> Result<Self, ProtocolError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(ClientConnection::new(r, w))
    }
}

impl<S: AsyncRead + AsyncWrite> ClientConnection<tokio::io::ReadHalf<S>, tokio::io::WriteHalf<S>> {
    /// Wraps a bidirectional stream.
    pub fn from_stream(stream: S) -> Self {
        let (r, w) = tokio::io::split(stream);
        ClientConnection::new(r, w)
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> ClientConnection<R, W> {
    /// Wraps the two halves of a connection.
    pub fn new(reader: R, writer: W) -> Self {
        ClientConnection {
            reader: BackendReader::new(reader),
            writer: FrontendWriter::new(writer),
        }
    }

    /// Separates the directions (after entering CopyBoth).
    pub fn into_split(self) -> (BackendReader<R>, FrontendWriter<W>) {
        (self.reader, self.writer)
    }

    /// The reading half.
    pub fn reader(&mut self) -> &mut BackendReader<R> {
        &mut self.reader
    }

    /// The writing half.
    pub fn writer(&mut self) -> &mut FrontendWriter<W> {
        &mut self.writer
    }

    async fn next_control(
        &mut self,
        expected: &'static str,
    ) -> Result<BackendMessage, ProtocolError> {
        self.reader
            .read_message(MAX_CONTROL_MESSAGE)
            .await?
            .ok_or(ProtocolError::UnexpectedEof(expected))
    }

    /// Sends the StartupMessage, answers a cleartext password request with `password`, and
    /// waits for ReadyForQuery.
    pub async fn startup(
        &mut self,
        params: &StartupParams,
        password: Option<&str>,
    ) -> Result<ServerParams, ProtocolError> {
        params.encode(self.writer.inner.buffer_mut())?;
        self.writer.flush().await?;
        let mut server = ServerParams::default();
        loop {
            let msg = self.next_control("startup").await?;
            let BackendMessage::Message(msg) = msg else {
                return Err(ProtocolError::Unexpected {
                    got: "CopyBothResponse".into(),
                    expected: "authentication",
                });
            };
            match msg {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let password = password.ok_or_else(|| {
                        ProtocolError::Auth(
                            "the server asks for a password and none was given".into(),
                        )
                    })?;
                    frontend::password_message(password.as_bytes(), self.writer.inner.buffer_mut())
                        .map_err(|e| ProtocolError::malformed("password", e.to_string()))?;
                    self.writer.flush().await?;
                }
                Message::ParameterStatus(p) => {
                    let name = p
                        .name()
                        .map_err(|e| ProtocolError::malformed("ParameterStatus", e.to_string()))?;
                    let value = p
                        .value()
                        .map_err(|e| ProtocolError::malformed("ParameterStatus", e.to_string()))?;
                    server
                        .parameters
                        .push((name.to_string(), value.to_string()));
                }
                Message::BackendKeyData(k) => {
                    server.backend_key = Some((k.process_id(), k.secret_key()))
                }
                Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(server),
                Message::ErrorResponse(e) => {
                    return Err(ProtocolError::Server(server_error(e.fields())));
                }
                other => {
                    return Err(ProtocolError::Auth(format!(
                        "unsupported authentication request or message during startup: {}",
                        describe(&other)
                    )));
                }
            }
        }
    }

    /// Runs a simple query that returns rows or a command tag (not a COPY), and waits for
    /// ReadyForQuery. An ErrorResponse becomes [`ProtocolError::Server`] after the server is
    /// ready again, so the connection stays usable.
    pub async fn simple_query(&mut self, query: &str) -> Result<QueryResult, ProtocolError> {
        self.writer.write_query(query)?;
        self.writer.flush().await?;
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            let msg = match self.next_control("query result").await? {
                BackendMessage::Message(m) => m,
                BackendMessage::CopyBothResponse => {
                    return Err(ProtocolError::Unexpected {
                        got: "CopyBothResponse".into(),
                        expected: "query result (use start_copy_both for streaming commands)",
                    });
                }
            };
            match msg {
                Message::RowDescription(rd) => {
                    result.columns = rd
                        .fields()
                        .map(|f| Ok(f.name().to_string()))
                        .collect()
                        .map_err(|e| ProtocolError::malformed("RowDescription", e.to_string()))?;
                    result.rows.clear();
                }
                Message::DataRow(row) => {
                    let buf = row.buffer();
                    let values = row
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
                        .collect()
                        .map_err(|e| ProtocolError::malformed("DataRow", e.to_string()))?;
                    result.rows.push(values);
                }
                Message::CommandComplete(c) => {
                    let tag = c
                        .tag()
                        .map_err(|e| ProtocolError::malformed("CommandComplete", e.to_string()))?;
                    result.command_tag = Some(tag.to_string());
                }
                Message::EmptyQueryResponse | Message::ParameterStatus(_) => {}
                Message::NoticeResponse(n) => result.notices.push(server_error(n.fields()).message),
                Message::ErrorResponse(e) => error = Some(server_error(e.fields())),
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(ProtocolError::Server(e)),
                        None => Ok(result),
                    };
                }
                other => {
                    return Err(ProtocolError::Unexpected {
                        got: describe(&other),
                        expected: "query result",
                    });
                }
            }
        }
    }

    /// Sends a streaming command (`START_WAL_PUSH …`, `START_REPLICATION …`) and waits for
    /// CopyBothResponse; after it, exchange CopyData through the halves.
    pub async fn start_copy_both(&mut self, query: &str) -> Result<(), ProtocolError> {
        self.writer.write_query(query)?;
        self.writer.flush().await?;
        loop {
            match self.next_control("CopyBothResponse").await? {
                BackendMessage::CopyBothResponse => return Ok(()),
                BackendMessage::Message(
                    Message::NoticeResponse(_) | Message::ParameterStatus(_),
                ) => {}
                BackendMessage::Message(Message::ErrorResponse(e)) => {
                    return Err(ProtocolError::Server(server_error(e.fields())));
                }
                BackendMessage::Message(other) => {
                    return Err(ProtocolError::Unexpected {
                        got: describe(&other),
                        expected: "CopyBothResponse",
                    });
                }
            }
        }
    }
}

/// A short name of a backend message for errors.
fn describe(m: &Message) -> String {
    let name = match m {
        Message::AuthenticationCleartextPassword => "AuthenticationCleartextPassword",
        Message::AuthenticationMd5Password(_) => "AuthenticationMD5Password",
        Message::AuthenticationSasl(_) => "AuthenticationSASL",
        Message::AuthenticationOk => "AuthenticationOk",
        Message::RowDescription(_) => "RowDescription",
        Message::DataRow(_) => "DataRow",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        _ => "another backend message",
    };
    name.to_string()
}
