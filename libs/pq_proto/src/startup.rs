//! The startup phase: the untagged first packet of a connection and its parameters.
//!
//! Before the regular tagged messages, a client sends one *startup packet*:
//! `length i32 (including itself), code i32, body`. The code selects:
//! - `80877103` SSLRequest, `80877104` GSSENCRequest: the server answers one byte, `'N'`
//!   (not supported) or `'S'`, and the client sends another startup packet;
//! - `80877102` CancelRequest: `pid i32, secret i32`, then the connection closes;
//! - `196608` (protocol 3.0) StartupMessage: NUL-terminated name/value pairs ending with an
//!   empty name. Other protocol versions are rejected.
//!
//! The `options` parameter carries command-line-style settings. The server splits it as
//! PostgreSQL's `pg_split_opts` does (whitespace separates words; a backslash makes the
//! next character literal, so `\ ` is a space inside a value), then reads `-c name=value`,
//! `-cname=value`, `--name=value` and, for the form the reference walproposer sends
//! (`-c tenant_id=… timeline_id=…`), bare `name=value` words. Dashes in names become
//! underscores, as in PostgreSQL.

use std::fmt;

use bytes::BytesMut;
use utils::{TenantId, TenantTimelineId, TimelineId};

use crate::error::ProtocolError;

/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_VERSION_3: i32 = 196608;
/// The SSLRequest code.
pub const SSL_REQUEST_CODE: i32 = 80877103;
/// The GSSENCRequest code.
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
/// The CancelRequest code.
pub const CANCEL_REQUEST_CODE: i32 = 80877102;

/// Startup packets longer than this are refused: PostgreSQL's own `MAX_STARTUP_PACKET_LENGTH`.
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10000;

/// The first packet of a connection, as a server reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeStartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// The client asks to cancel a query running on another connection.
    CancelRequest {
        /// The backend process id from BackendKeyData.
        process_id: i32,
        /// The secret from BackendKeyData.
        secret_key: i32,
    },
    /// A protocol 3.0 startup message.
    Startup(StartupParams),
}

impl FeStartupPacket {
    /// Parses the packet after its length word: `code i32`, then the body.
    pub fn parse(packet: &[u8]) -> Result<Self, ProtocolError> {
        let code_bytes: [u8; 4] = packet
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ProtocolError::malformed("startup packet", "shorter than its code"))?;
        let code = i32::from_be_bytes(code_bytes);
        let body = &packet[4..];
        match code {
            SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if !body.is_empty() => Err(
                ProtocolError::malformed("startup packet", "encryption request with a body"),
            ),
            SSL_REQUEST_CODE => Ok(FeStartupPacket::SslRequest),
            GSSENC_REQUEST_CODE => Ok(FeStartupPacket::GssEncRequest),
            CANCEL_REQUEST_CODE => {
                if body.len() != 8 {
                    return Err(ProtocolError::malformed(
                        "CancelRequest",
                        format!("body of {} bytes, expected 8", body.len()),
                    ));
                }
                Ok(FeStartupPacket::CancelRequest {
                    process_id: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    secret_key: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                })
            }
            PROTOCOL_VERSION_3 => StartupParams::parse(body).map(FeStartupPacket::Startup),
            other => Err(ProtocolError::Malformed {
                what: "startup packet",
                reason: format!(
                    "unsupported protocol version {}.{} (only 3.0 is spoken)",
                    other >> 16,
                    other & 0xffff
                ),
            }),
        }
    }
}

/// A bad `options` startup parameter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// `-c` as the last word.
    #[error("option {0:?} needs a name=value argument")]
    MissingArgument(String),
    /// A setting without `=`.
    #[error("setting {0:?} has no value (expected name=value)")]
    MissingValue(String),
    /// A switch other than `-c` / `--name=value`.
    #[error("unsupported option {0:?} (only -c name=value and --name=value are accepted)")]
    Unsupported(String),
}

/// The name/value parameters of a StartupMessage, in the order the client sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartupParams {
    params: Vec<(String, String)>,
}

impl StartupParams {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// What a replication client of a safekeeper sends (the walproposer, a pageserver's
    /// WAL receiver): `user`, `database=replication`, `application_name`, and the timeline
    /// in `options` as `-c tenant_id=… -c timeline_id=…`.
    pub fn for_timeline(
        tenant_id: TenantId,
        timeline_id: TimelineId,
        application_name: &str,
    ) -> Self {
        StartupParams::new()
            .with("user", "strata")
            .with("database", "replication")
            .with("application_name", application_name)
            .with_settings(&[
                ("tenant_id", &tenant_id.to_string()),
                ("timeline_id", &timeline_id.to_string()),
            ])
    }

    /// Adds (or replaces) a parameter; builder style for clients.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds or replaces a parameter.
    pub fn insert(&mut self, name: &str, value: &str) {
        match self.params.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value.to_string(),
            None => self.params.push((name.to_string(), value.to_string())),
        }
    }

    /// Sets `options` to `-c name=value` for each setting, escaping as `pg_split_opts`
    /// expects (backslash before whitespace and backslashes).
    pub fn with_settings(self, settings: &[(&str, &str)]) -> Self {
        let options = settings
            .iter()
            .map(|(n, v)| format!("-c {}={}", escape_option_word(n), escape_option_word(v)))
            .collect::<Vec<_>>()
            .join(" ");
        self.with("options", &options)
    }

    /// The value of `name`, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// `user`.
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }

    /// `database` (libpq's `dbname`).
    pub fn database(&self) -> Option<&str> {
        self.get("database")
    }

    /// `application_name`.
    pub fn application_name(&self) -> Option<&str> {
        self.get("application_name")
    }

    /// Whether the client asked for a walsender-mode connection (`replication=true|on|yes|1`
    /// or `database`; PostgreSQL's physical and logical forms).
    pub fn is_replication(&self) -> bool {
        matches!(
            self.get("replication")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("true" | "on" | "yes" | "1" | "database")
        )
    }

    /// The settings of the `options` parameter as `(name, value)` pairs (see module docs);
    /// empty if there is no `options`.
    pub fn settings(&self) -> Result<Vec<(String, String)>, OptionsError> {
        match self.get("options") {
            Some(o) => parse_options(o),
            None => Ok(Vec::new()),
        }
    }

    /// The last value of setting `name` in `options` (later settings override earlier ones,
    /// as on a command line).
    pub fn setting(&self, name: &str) -> Result<Option<String>, OptionsError> {
        Ok(self
            .settings()?
            .into_iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v))
    }

    /// The tenant and timeline named by the `tenant_id` and `timeline_id` settings, which
    /// every timeline-scoped connection to a safekeeper carries.
    pub fn tenant_timeline_id(&self) -> Result<TenantTimelineId, ProtocolError> {
        let settings = self
            .settings()
            .map_err(|e| ProtocolError::malformed("startup options", e.to_string()))?;
        let get = |name: &'static str| {
            settings
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| {
                    ProtocolError::malformed(
                        "startup options",
                        format!("no {name} setting (expected options '-c tenant_id=<hex> timeline_id=<hex>')"),
                    )
                })
        };
        let tenant_id: TenantId =
            get("tenant_id")?
                .parse()
                .map_err(|e: utils::id::IdParseError| {
                    ProtocolError::malformed("startup options", e.to_string())
                })?;
        let timeline_id: TimelineId =
            get("timeline_id")?
                .parse()
                .map_err(|e: utils::id::IdParseError| {
                    ProtocolError::malformed("startup options", e.to_string())
                })?;
        Ok(TenantTimelineId::new(tenant_id, timeline_id))
    }

    /// Parses the StartupMessage body after the version: name/value cstr pairs, then NUL.
    fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut params = StartupParams::new();
        let mut rest = body;
        loop {
            let name = take_cstr(&mut rest, "startup parameter name")?;
            if name.is_empty() {
                break;
            }
            let value = take_cstr(&mut rest, "startup parameter value")?;
            params.insert(name, value);
        }
        if !rest.is_empty() {
            return Err(ProtocolError::malformed(
                "startup packet",
                format!("{} bytes after the final terminator", rest.len()),
            ));
        }
        Ok(params)
    }

    /// Writes a complete StartupMessage (length, version, pairs) for a client.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        postgres_protocol::message::frontend::startup_message(self.iter(), buf)
            .map_err(|e| ProtocolError::malformed("startup parameter", e.to_string()))
    }
}

impl fmt::Display for StartupParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (n, v)) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        Ok(())
    }
}

fn take_cstr<'a>(rest: &mut &'a [u8], what: &'static str) -> Result<&'a str, ProtocolError> {
    let nul = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| ProtocolError::malformed(what, "missing NUL terminator"))?;
    let s = std::str::from_utf8(&rest[..nul])
        .map_err(|e| ProtocolError::malformed(what, format!("not UTF-8: {e}")))?;
    *rest = &rest[nul + 1..];
    Ok(s)
}

/// Splits an `options` string into words as PostgreSQL's `pg_split_opts`: ASCII whitespace
/// separates, a backslash makes the next character part of the word.
pub fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    word.push(escaped);
                }
            } else {
                word.push(c);
            }
        }
        words.push(word);
    }
}

/// Escapes one word so [`split_options`] returns it unchanged.
pub fn escape_option_word(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if c == '\\' || c.is_ascii_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parses an `options` string into settings (see module docs).
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, OptionsError> {
    let words = split_options(options);
    let mut settings = Vec::new();
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        let setting = if word == "-c" {
            iter.next()
                .ok_or_else(|| OptionsError::MissingArgument(word.clone()))?
        } else if let Some(s) = word.strip_prefix("--") {
            s.to_string()
        } else if let Some(s) = word.strip_prefix("-c") {
            s.to_string()
        } else if word.starts_with('-') {
            return Err(OptionsError::Unsupported(word));
        } else {
            word
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| OptionsError::MissingValue(setting.clone()))?;
        if name.is_empty() {
            return Err(OptionsError::MissingValue(setting.clone()));
        }
        settings.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn both_c_forms_and_long_options() {
        let want = pairs(&[("tenant_id", "ab"), ("timeline_id", "cd")]);
        assert_eq!(
            parse_options("-c tenant_id=ab timeline_id=cd").unwrap(),
            want
        );
        assert_eq!(
            parse_options("-c tenant_id=ab -c timeline_id=cd").unwrap(),
            want
        );
        assert_eq!(
            parse_options("  -ctenant_id=ab\t--timeline-id=cd ").unwrap(),
            want
        );
        assert_eq!(parse_options("").unwrap(), vec![]);
        assert_eq!(
            parse_options("-c a=x=y").unwrap(),
            pairs(&[("a", "x=y")]),
            "only the first = splits"
        );
    }

    #[test]
    fn backslash_escapes() {
        // A lone trailing backslash makes an empty word, as in PostgreSQL.
        assert_eq!(split_options(r"a\ b c\\d \"), vec!["a b", r"c\d", ""]);
        assert_eq!(
            parse_options(r"-c application_name=my\ app").unwrap(),
            pairs(&[("application_name", "my app")])
        );
        for w in ["plain", "with space", r"back\slash", "tab\there", ""] {
            let escaped = escape_option_word(w);
            let split = split_options(&format!("x {escaped} y"));
            if w.is_empty() {
                assert_eq!(split, vec!["x", "y"]);
            } else {
                assert_eq!(split, vec!["x", w, "y"]);
            }
        }
        let p = StartupParams::new().with_settings(&[("a", "1 2"), ("b", r"x\y")]);
        assert_eq!(p.settings().unwrap(), pairs(&[("a", "1 2"), ("b", r"x\y")]));
    }

    #[test]
    fn option_errors_name_the_word() {
        assert_eq!(
            parse_options("-c").unwrap_err().to_string(),
            "option \"-c\" needs a name=value argument"
        );
        assert_eq!(
            parse_options("-c tenant_id").unwrap_err(),
            OptionsError::MissingValue("tenant_id".into())
        );
        assert_eq!(
            parse_options("-B 100").unwrap_err(),
            OptionsError::Unsupported("-B".into())
        );
        assert!(parse_options("-c =x").is_err());
    }

    #[test]
    fn startup_packets() {
        // Build with postgres-protocol's encoder, parse with ours.
        let p = StartupParams::new()
            .with("user", "u")
            .with("database", "replication")
            .with_settings(&[("tenant_id", "t1")]);
        let mut buf = BytesMut::new();
        p.encode(&mut buf).unwrap();
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert_eq!(len, buf.len());
        let FeStartupPacket::Startup(parsed) = FeStartupPacket::parse(&buf[4..]).unwrap() else {
            panic!("not a startup message");
        };
        assert_eq!(parsed, p);
        assert_eq!(parsed.setting("tenant_id").unwrap().as_deref(), Some("t1"));
        assert_eq!(parsed.database(), Some("replication"));
        assert!(!parsed.is_replication());
        assert!(parsed.clone().with("replication", "true").is_replication());

        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut buf);
        assert_eq!(
            FeStartupPacket::parse(&buf[4..]).unwrap(),
            FeStartupPacket::SslRequest
        );
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(7, -9, &mut buf);
        assert_eq!(
            FeStartupPacket::parse(&buf[4..]).unwrap(),
            FeStartupPacket::CancelRequest {
                process_id: 7,
                secret_key: -9
            }
        );
        assert_eq!(
            FeStartupPacket::parse(&80877104i32.to_be_bytes()).unwrap(),
            FeStartupPacket::GssEncRequest
        );
    }

    #[test]
    fn tenant_timeline_from_options() {
        let ttid = TenantTimelineId::generate();
        let p = StartupParams::for_timeline(ttid.tenant_id, ttid.timeline_id, "wp");
        assert_eq!(p.tenant_timeline_id().unwrap(), ttid);
        let p = StartupParams::new().with(
            "options",
            &format!(
                "-c timeline_id={} tenant_id={}",
                ttid.timeline_id, ttid.tenant_id
            ),
        );
        assert_eq!(p.tenant_timeline_id().unwrap(), ttid);
        let e = StartupParams::new().tenant_timeline_id().unwrap_err();
        assert!(e.to_string().contains("no tenant_id setting"), "{e}");
        let p = StartupParams::new().with_settings(&[("tenant_id", "zz"), ("timeline_id", "00")]);
        let e = p.tenant_timeline_id().unwrap_err();
        assert!(e.to_string().contains("invalid tenant id \"zz\""), "{e}");
    }

    #[test]
    fn bad_startup_packets() {
        let e = FeStartupPacket::parse(&0x0002_0000i32.to_be_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("unsupported protocol version 2.0"),
            "{e}"
        );
        assert!(FeStartupPacket::parse(&[0, 3]).is_err());
        let mut b = PROTOCOL_VERSION_3.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0u\0");
        let e = FeStartupPacket::parse(&b).unwrap_err();
        assert!(e.to_string().contains("missing NUL"), "{e}");
        b.extend_from_slice(b"\0junk");
        let e = FeStartupPacket::parse(&b).unwrap_err();
        assert!(
            e.to_string().contains("4 bytes after the final terminator"),
            "{e}"
        );
        let mut b = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        b.extend_from_slice(&[0; 4]);
        assert!(FeStartupPacket::parse(&b).is_err());
    }
}
