//! Tagged libpq messages after startup: what a server reads ([`FeMessage`]) and writes
//! ([`BeMessage`]).
//!
//! Every message is `tag u8, length i32 (including itself, not the tag), body`. The
//! `postgres-protocol` crate implements the *client's* half (encoding frontend messages,
//! parsing backend ones); the client side of this crate uses it directly. A server needs
//! the opposite half, which that crate does not have, so it is written here, and the tests
//! check each direction against `postgres-protocol`'s encoder or parser.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, SqlState};

/// OIDs of the column types our result sets use.
pub mod oid {
    /// `int8`.
    pub const INT8: u32 = 20;
    /// `int4`.
    pub const INT4: u32 = 23;
    /// `text`.
    pub const TEXT: u32 = 25;
}

/// A message from client to server after startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeMessage {
    /// `'Q'`: a simple query.
    Query(String),
    /// `'p'`: a password (also SASL responses, which we do not use).
    Password(Bytes),
    /// `'d'`: CopyData.
    CopyData(Bytes),
    /// `'c'`: CopyDone.
    CopyDone,
    /// `'f'`: CopyFail with the client's reason.
    CopyFail(String),
    /// `'S'`: Sync (extended protocol).
    Sync,
    /// `'H'`: Flush (extended protocol).
    Flush,
    /// `'X'`: Terminate.
    Terminate,
    /// Any other tag (the extended query protocol: Parse, Bind, …), which we do not serve.
    Unsupported {
        /// The tag.
        tag: u8,
    },
}

impl FeMessage {
    /// Parses a message from its tag and body (without the length word).
    pub fn parse(tag: u8, body: Bytes) -> Result<Self, ProtocolError> {
        let no_body = |msg: FeMessage, name: &'static str| {
            if body.is_empty() {
                Ok(msg)
            } else {
                Err(ProtocolError::malformed(
                    name,
                    format!("unexpected {}-byte body", body.len()),
                ))
            }
        };
        match tag {
            b'Q' => Ok(FeMessage::Query(body_cstr(&body, "Query")?)),
            b'p' => Ok(FeMessage::Password(body)),
            b'd' => Ok(FeMessage::CopyData(body)),
            b'c' => no_body(FeMessage::CopyDone, "CopyDone"),
            b'f' => Ok(FeMessage::CopyFail(body_cstr(&body, "CopyFail")?)),
            b'S' => no_body(FeMessage::Sync, "Sync"),
            b'H' => no_body(FeMessage::Flush, "Flush"),
            b'X' => no_body(FeMessage::Terminate, "Terminate"),
            tag => Ok(FeMessage::Unsupported { tag }),
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> String {
        match self {
            FeMessage::Query(_) => "Query".into(),
            FeMessage::Password(_) => "PasswordMessage".into(),
            FeMessage::CopyData(_) => "CopyData".into(),
            FeMessage::CopyDone => "CopyDone".into(),
            FeMessage::CopyFail(_) => "CopyFail".into(),
            FeMessage::Sync => "Sync".into(),
            FeMessage::Flush => "Flush".into(),
            FeMessage::Terminate => "Terminate".into(),
            FeMessage::Unsupported { tag } => format!("message with tag {:?}", *tag as char),
        }
    }

    /// The password of a PasswordMessage, without its NUL.
    pub fn password_str(body: &[u8]) -> Result<&str, ProtocolError> {
        let s = body
            .strip_suffix(&[0])
            .ok_or_else(|| ProtocolError::malformed("PasswordMessage", "missing NUL terminator"))?;
        std::str::from_utf8(s)
            .map_err(|e| ProtocolError::malformed("PasswordMessage", e.to_string()))
    }
}

/// The body as one NUL-terminated UTF-8 string with nothing after it.
fn body_cstr(body: &[u8], what: &'static str) -> Result<String, ProtocolError> {
    match body.iter().position(|&b| b == 0) {
        Some(nul) if nul + 1 == body.len() => std::str::from_utf8(&body[..nul])
            .map(str::to_string)
            .map_err(|e| ProtocolError::malformed(what, format!("not UTF-8: {e}"))),
        Some(nul) => Err(ProtocolError::malformed(
            what,
            format!("{} bytes after the string's NUL", body.len() - nul - 1),
        )),
        None => Err(ProtocolError::malformed(what, "missing NUL terminator")),
    }
}

/// One column of a RowDescription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDescription<'a> {
    /// Column name.
    pub name: &'a str,
    /// Type OID (see [`oid`]).
    pub type_oid: u32,
    /// Type size (`-1` for variable length).
    pub type_size: i16,
}

impl<'a> FieldDescription<'a> {
    /// A `text` column.
    pub const fn text(name: &'a str) -> Self {
        FieldDescription {
            name,
            type_oid: oid::TEXT,
            type_size: -1,
        }
    }

    /// An `int4` column (values are still sent as text).
    pub const fn int4(name: &'a str) -> Self {
        FieldDescription {
            name,
            type_oid: oid::INT4,
            type_size: 4,
        }
    }

    /// An `int8` column (values are still sent as text).
    pub const fn int8(name: &'a str) -> Self {
        FieldDescription {
            name,
            type_oid: oid::INT8,
            type_size: 8,
        }
    }
}

/// Transaction status in ReadyForQuery; we never run transactions, so always idle.
pub const READY_IDLE: u8 = b'I';

/// A message from server to client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeMessage<'a> {
    /// `'R'` 0.
    AuthenticationOk,
    /// `'R'` 3: asks for a cleartext password (how a JWT arrives).
    AuthenticationCleartextPassword,
    /// `'S'`: a run-time parameter's value.
    ParameterStatus {
        /// Parameter name.
        name: &'a str,
        /// Its value.
        value: &'a str,
    },
    /// `'K'`: what a CancelRequest must quote.
    BackendKeyData {
        /// Process id (any number identifying the connection).
        process_id: i32,
        /// Secret.
        secret_key: i32,
    },
    /// `'Z'` with a transaction status.
    ReadyForQuery,
    /// `'T'`: the columns of the rows that follow (all in text format).
    RowDescription(&'a [FieldDescription<'a>]),
    /// `'D'`: one row; `None` is SQL NULL. Values are text.
    DataRow(&'a [Option<&'a [u8]>]),
    /// `'C'`: the command tag, e.g. `SELECT 1` or `IDENTIFY_SYSTEM`.
    CommandComplete(&'a str),
    /// `'I'`: the query string was empty.
    EmptyQueryResponse,
    /// `'E'`: an error; the connection continues unless the caller closes it.
    ErrorResponse {
        /// SQLSTATE.
        code: SqlState,
        /// The message.
        message: &'a str,
        /// `ERROR` or `FATAL` (FATAL when the server will close the connection).
        fatal: bool,
    },
    /// `'N'`: a notice (severity NOTICE).
    NoticeResponse(&'a str),
    /// `'W'`: the switch into CopyBoth mode (START_WAL_PUSH, START_REPLICATION).
    CopyBothResponse,
    /// `'H'`: the switch into CopyOut mode (binary, no columns), e.g. a basebackup.
    CopyOutResponse,
    /// `'d'`: CopyData.
    CopyData(&'a [u8]),
    /// `'c'`: CopyDone.
    CopyDone,
    /// The single-byte answer to SSLRequest / GSSENCRequest: `'N'` (no) or `'S'` (yes).
    EncryptionResponse(bool),
}

/// Writes a tagged message: tag, length placeholder, body, then patches the length.
fn write_tagged(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let len_at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would truncate the string for the client; replace rather than corrupt
    // the framing (these strings are our own messages and names).
    buf.extend(s.bytes().map(|b| if b == 0 { b' ' } else { b }));
    buf.put_u8(0);
}

impl BeMessage<'_> {
    /// Appends the message to `buf`.
    pub fn write(&self, buf: &mut BytesMut) {
        match *self {
            BeMessage::AuthenticationOk => write_tagged(buf, b'R', |b| b.put_i32(0)),
            BeMessage::AuthenticationCleartextPassword => write_tagged(buf, b'R', |b| b.put_i32(3)),
            BeMessage::ParameterStatus { name, value } => write_tagged(buf, b'S', |b| {
                put_cstr(b, name);
                put_cstr(b, value);
            }),
            BeMessage::BackendKeyData {
                process_id,
                secret_key,
            } => write_tagged(buf, b'K', |b| {
                b.put_i32(process_id);
                b.put_i32(secret_key);
            }),
            BeMessage::ReadyForQuery => write_tagged(buf, b'Z', |b| b.put_u8(READY_IDLE)),
            BeMessage::RowDescription(fields) => write_tagged(buf, b'T', |b| {
                b.put_i16(fields.len() as i16);
                for f in fields {
                    put_cstr(b, f.name);
                    b.put_u32(0); // table oid
                    b.put_i16(0); // column number
                    b.put_u32(f.type_oid);
                    b.put_i16(f.type_size);
                    b.put_i32(-1); // type modifier
                    b.put_i16(0); // text format
                }
            }),
            BeMessage::DataRow(values) => write_tagged(buf, b'D', |b| {
                b.put_i16(values.len() as i16);
                for v in values {
                    match v {
                        Some(v) => {
                            b.put_i32(v.len() as i32);
                            b.put_slice(v);
                        }
                        None => b.put_i32(-1),
                    }
                }
            }),
            BeMessage::CommandComplete(tag) => write_tagged(buf, b'C', |b| put_cstr(b, tag)),
            BeMessage::EmptyQueryResponse => write_tagged(buf, b'I', |_| {}),
            BeMessage::ErrorResponse {
                code,
                message,
                fatal,
            } => write_tagged(buf, b'E', |b| {
                let severity = if fatal { "FATAL" } else { "ERROR" };
                b.put_u8(b'S');
                put_cstr(b, severity);
                b.put_u8(b'V');
                put_cstr(b, severity);
                b.put_u8(b'C');
                put_cstr(b, code.0);
                b.put_u8(b'M');
                put_cstr(b, message);
                b.put_u8(0);
            }),
            BeMessage::NoticeResponse(message) => write_tagged(buf, b'N', |b| {
                b.put_u8(b'S');
                put_cstr(b, "NOTICE");
                b.put_u8(b'V');
                put_cstr(b, "NOTICE");
                b.put_u8(b'C');
                put_cstr(b, "00000");
                b.put_u8(b'M');
                put_cstr(b, message);
                b.put_u8(0);
            }),
            BeMessage::CopyBothResponse => write_tagged(buf, b'W', |b| {
                b.put_u8(0); // overall format: text/binary stream
                b.put_i16(0); // no columns
            }),
            BeMessage::CopyOutResponse => write_tagged(buf, b'H', |b| {
                b.put_i8(1);
                b.put_i16(0);
            }),
            BeMessage::CopyData(data) => write_tagged(buf, b'd', |b| b.put_slice(data)),
            BeMessage::CopyDone => write_tagged(buf, b'c', |_| {}),
            BeMessage::EncryptionResponse(yes) => buf.put_u8(if yes { b'S' } else { b'N' }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::backend::Message;
    use postgres_protocol::message::frontend;

    fn parse_be(m: BeMessage<'_>) -> Message {
        let mut buf = BytesMut::new();
        m.write(&mut buf);
        let parsed = Message::parse(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "message length mismatch");
        parsed
    }

    #[test]
    fn backend_messages_parse_with_postgres_protocol() {
        assert!(matches!(
            parse_be(BeMessage::AuthenticationOk),
            Message::AuthenticationOk
        ));
        assert!(matches!(
            parse_be(BeMessage::AuthenticationCleartextPassword),
            Message::AuthenticationCleartextPassword
        ));
        let Message::ParameterStatus(p) = parse_be(BeMessage::ParameterStatus {
            name: "server_version",
            value: "15.0",
        }) else {
            panic!()
        };
        assert_eq!(
            (p.name().unwrap(), p.value().unwrap()),
            ("server_version", "15.0")
        );
        let Message::BackendKeyData(k) = parse_be(BeMessage::BackendKeyData {
            process_id: 5,
            secret_key: -6,
        }) else {
            panic!()
        };
        assert_eq!((k.process_id(), k.secret_key()), (5, -6));
        let Message::ReadyForQuery(r) = parse_be(BeMessage::ReadyForQuery) else {
            panic!()
        };
        assert_eq!(r.status(), b'I');

        let fields = [
            FieldDescription::text("systemid"),
            FieldDescription::int4("timeline"),
        ];
        let Message::RowDescription(rd) = parse_be(BeMessage::RowDescription(&fields)) else {
            panic!()
        };
        use postgres_protocol::message::backend::Field;
        let mut it = rd.fields();
        let mut got = Vec::new();
        while let Some(f) = fallible_next(&mut it) {
            got.push((
                f.name().to_string(),
                f.type_oid(),
                f.type_size(),
                f.format(),
            ));
        }
        fn fallible_next<'a>(
            it: &mut postgres_protocol::message::backend::Fields<'a>,
        ) -> Option<Field<'a>> {
            use fallible_iterator::FallibleIterator;
            it.next().unwrap()
        }
        assert_eq!(
            got,
            vec![
                ("systemid".into(), 25, -1, 0),
                ("timeline".into(), 23, 4, 0)
            ]
        );

        let Message::DataRow(row) = parse_be(BeMessage::DataRow(&[Some(b"abc"), None, Some(b"")]))
        else {
            panic!()
        };
        let ranges: Vec<_> = {
            use fallible_iterator::FallibleIterator;
            row.ranges().collect().unwrap()
        };
        // Ranges index the row buffer, which includes each value's length word.
        assert_eq!(ranges, vec![Some(4..7), None, Some(15..15)]);
        assert_eq!(&row.buffer()[4..7], b"abc");

        let Message::CommandComplete(c) = parse_be(BeMessage::CommandComplete("SELECT 1")) else {
            panic!()
        };
        assert_eq!(c.tag().unwrap(), "SELECT 1");
        assert!(matches!(
            parse_be(BeMessage::EmptyQueryResponse),
            Message::EmptyQueryResponse
        ));

        let Message::ErrorResponse(e) = parse_be(BeMessage::ErrorResponse {
            code: SqlState::SYNTAX_ERROR,
            message: "bad",
            fatal: false,
        }) else {
            panic!()
        };
        let fields: Vec<(u8, String)> = {
            use fallible_iterator::FallibleIterator;
            e.fields()
                .map(|f| {
                    Ok((
                        f.type_(),
                        String::from_utf8_lossy(f.value_bytes()).into_owned(),
                    ))
                })
                .collect()
                .unwrap()
        };
        assert!(fields.contains(&(b'C', "42601".into())));
        assert!(fields.contains(&(b'M', "bad".into())));
        assert!(fields.contains(&(b'S', "ERROR".into())));
        assert!(matches!(
            parse_be(BeMessage::NoticeResponse("hi")),
            Message::NoticeResponse(_)
        ));
        let Message::CopyData(d) = parse_be(BeMessage::CopyData(b"xyz")) else {
            panic!()
        };
        assert_eq!(d.data(), b"xyz");
        assert!(matches!(parse_be(BeMessage::CopyDone), Message::CopyDone));

        // postgres-protocol has no CopyBothResponse: check the bytes by hand.
        let mut buf = BytesMut::new();
        BeMessage::CopyBothResponse.write(&mut buf);
        assert_eq!(&buf[..], b"W\0\0\0\x07\0\0\0");
        let mut buf = BytesMut::new();
        BeMessage::EncryptionResponse(false).write(&mut buf);
        assert_eq!(&buf[..], b"N");
    }

    /// Encodes with postgres-protocol's frontend encoder and parses with ours.
    fn parse_fe(encode: impl FnOnce(&mut BytesMut)) -> Result<FeMessage, ProtocolError> {
        let mut buf = BytesMut::new();
        encode(&mut buf);
        let tag = buf[0];
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        assert_eq!(len + 1, buf.len());
        FeMessage::parse(tag, buf.split_off(5).freeze())
    }

    #[test]
    fn frontend_messages_from_postgres_protocol() {
        assert_eq!(
            parse_fe(|b| frontend::query("IDENTIFY_SYSTEM", b).unwrap()).unwrap(),
            FeMessage::Query("IDENTIFY_SYSTEM".into())
        );
        let FeMessage::Password(p) =
            parse_fe(|b| frontend::password_message(b"tok", b).unwrap()).unwrap()
        else {
            panic!()
        };
        assert_eq!(FeMessage::password_str(&p).unwrap(), "tok");
        let data = frontend::CopyData::new(&b"abc"[..]).unwrap();
        assert_eq!(
            parse_fe(|b| data.write(b)).unwrap(),
            FeMessage::CopyData(Bytes::from_static(b"abc"))
        );
        assert_eq!(parse_fe(frontend::copy_done).unwrap(), FeMessage::CopyDone);
        assert_eq!(
            parse_fe(|b| frontend::copy_fail("oops", b).unwrap()).unwrap(),
            FeMessage::CopyFail("oops".into())
        );
        assert_eq!(parse_fe(frontend::sync).unwrap(), FeMessage::Sync);
        assert_eq!(parse_fe(frontend::flush).unwrap(), FeMessage::Flush);
        assert_eq!(parse_fe(frontend::terminate).unwrap(), FeMessage::Terminate);
        assert_eq!(
            parse_fe(|b| frontend::parse("", "select 1", std::iter::empty(), b).unwrap()).unwrap(),
            FeMessage::Unsupported { tag: b'P' }
        );
    }

    #[test]
    fn malformed_frontend_messages() {
        let e = FeMessage::parse(b'Q', Bytes::from_static(b"select")).unwrap_err();
        assert_eq!(e.to_string(), "malformed Query: missing NUL terminator");
        let e = FeMessage::parse(b'Q', Bytes::from_static(b"a\0b\0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed Query: 2 bytes after the string's NUL"
        );
        let e = FeMessage::parse(b'X', Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(e.to_string(), "malformed Terminate: unexpected 1-byte body");
        assert!(FeMessage::parse(b'Q', Bytes::from_static(b"\xff\0")).is_err());
        assert!(FeMessage::password_str(b"abc").is_err());
    }
}
