//! Parser for the simple-query commands a safekeeper serves on its libpq port.
//!
//! ```text
//! IDENTIFY_SYSTEM
//! TIMELINE_STATUS
//! START_WAL_PUSH (proto_version '3' [, allow_timeline_creation 'true'|'false'])
//! START_REPLICATION [SLOT name] [PHYSICAL] X/X [TIMELINE n] [(term 'N')]
//! SET [SESSION|LOCAL] name {= | TO} value
//! SHOW name
//! ```
//!
//! Keywords and option names are case-insensitive; a trailing `;` is allowed (psql sends
//! it). Option lists are `(name value, …)` where the value is a quoted string or a bare
//! word, and `name = value` is accepted too. `START_WAL_PUSH` without options means the
//! reference system's protocol version 2, which Strata does not speak: it is rejected
//! with an error that says so. PostgreSQL 15's walreceiver sends
//! `START_REPLICATION [SLOT "name"] X/X TIMELINE 1` (no `PHYSICAL`), which parses.
//! Errors name the command and the offending token.

use std::fmt;

use crate::proto::PROTOCOL_VERSION;
use crate::term::Term;
use utils::Lsn;

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationCommand {
    /// `IDENTIFY_SYSTEM`: system id, timeline, WAL position, database.
    IdentifySystem,
    /// `TIMELINE_STATUS`: flush and commit LSNs.
    TimelineStatus,
    /// `START_WAL_PUSH (…)`: a walproposer starts the proposer protocol.
    StartWalPush {
        /// Always [`PROTOCOL_VERSION`] (others are rejected by the parser).
        proto_version: u32,
        /// Whether the greeting may create the timeline (default true).
        allow_timeline_creation: bool,
    },
    /// `START_REPLICATION …`: stream WAL to a pageserver, standby or recovering peer.
    StartReplication(StartReplication),
    /// `SET name = value`: accepted and ignored (clients send session settings).
    Set {
        /// Lower-cased parameter name.
        name: String,
        /// The value as written (string quotes removed).
        value: String,
    },
    /// `SHOW name`.
    Show {
        /// Lower-cased parameter name.
        name: String,
    },
}

/// The arguments of `START_REPLICATION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartReplication {
    /// `SLOT name` (ignored by safekeepers, which have no slots, but reported).
    pub slot: Option<String>,
    /// Where streaming starts.
    pub start_lsn: Lsn,
    /// `TIMELINE n` (PostgreSQL timeline id; safekeepers only serve 1).
    pub timeline: Option<u32>,
    /// `(term 'N')`: stream only WAL of this term, up to flush_lsn rather than commit_lsn.
    pub term: Option<Term>,
}

/// A command that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {reason}")]
pub struct CommandParseError {
    /// The command (or "query" if not even that was recognised).
    pub command: String,
    /// What is wrong, naming the token.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Str(String),
    Ident(String),
    LParen,
    RParen,
    Comma,
    Eq,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Str(s) => write!(f, "'{s}'"),
            Token::Ident(s) => write!(f, "\"{s}\""),
            Token::LParen => f.write_str("\"(\""),
            Token::RParen => f.write_str("\")\""),
            Token::Comma => f.write_str("\",\""),
            Token::Eq => f.write_str("\"=\""),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '/' | '.' | '-' | '+' | ':' | '$')
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' | '=' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::LParen,
                    ')' => Token::RParen,
                    ',' => Token::Comma,
                    _ => Token::Eq,
                });
            }
            ';' => {
                chars.next();
                if chars.any(|c| !c.is_whitespace() && c != ';') {
                    return Err("only one command per query is accepted".into());
                }
            }
            '\'' | '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated quoted text {c}{s}")),
                        Some(q) if q == c => {
                            if chars.peek() == Some(&c) {
                                chars.next();
                                s.push(c);
                            } else {
                                break;
                            }
                        }
                        Some(other) => s.push(other),
                    }
                }
                tokens.push(if c == '\'' {
                    Token::Str(s)
                } else {
                    Token::Ident(s)
                });
            }
            c if is_word_char(c) => {
                let mut w = String::new();
                while let Some(c) = chars.next_if(|&c| is_word_char(c)) {
                    w.push(c);
                }
                tokens.push(Token::Word(w));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(tokens)
}

struct Parser {
    command: &'static str,
    tokens: std::vec::IntoIter<Token>,
    peeked: Option<Token>,
}

impl Parser {
    fn err(&self, reason: impl Into<String>) -> CommandParseError {
        CommandParseError {
            command: self.command.to_string(),
            reason: reason.into(),
        }
    }

    fn peek(&mut self) -> Option<&Token> {
        if self.peeked.is_none() {
            self.peeked = self.tokens.next();
        }
        self.peeked.as_ref()
    }

    fn next(&mut self) -> Option<Token> {
        self.peeked.take().or_else(|| self.tokens.next())
    }

    /// Consumes the keyword if it is next.
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.next();
            true
        } else {
            false
        }
    }

    fn end(&mut self) -> Result<(), CommandParseError> {
        match self.next() {
            None => Ok(()),
            Some(t) => Err(self.err(format!("unexpected {t} after the end of the command"))),
        }
    }

    /// A name: a bare word or a double-quoted identifier.
    fn name(&mut self, what: &str) -> Result<String, CommandParseError> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            Some(Token::Ident(s)) => Ok(s),
            Some(t) => Err(self.err(format!("expected {what}, got {t}"))),
            None => Err(self.err(format!("expected {what}, got the end of the command"))),
        }
    }

    /// `(name value, …)` or `(name = value, …)`, names lower-cased.
    fn options(&mut self) -> Result<Vec<(String, String)>, CommandParseError> {
        let mut opts = Vec::new();
        if self.peek() != Some(&Token::LParen) {
            return Ok(opts);
        }
        self.next();
        loop {
            let name = self.name("an option name")?.to_ascii_lowercase();
            if self.peek() == Some(&Token::Eq) {
                self.next();
            }
            let value = match self.next() {
                Some(Token::Str(s) | Token::Word(s) | Token::Ident(s)) => s,
                Some(t) => {
                    return Err(self.err(format!("expected a value for option {name}, got {t}")));
                }
                None => return Err(self.err(format!("option {name} has no value"))),
            };
            opts.push((name, value));
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::RParen) => return Ok(opts),
                Some(t) => {
                    return Err(self.err(format!(
                        "expected \",\" or \")\" in the option list, got {t}"
                    )));
                }
                None => return Err(self.err("unterminated option list: missing \")\"")),
            }
        }
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

impl ReplicationCommand {
    /// Parses one query string.
    pub fn parse(query: &str) -> Result<Self, CommandParseError> {
        let tokens = tokenize(query).map_err(|reason| CommandParseError {
            command: "query".into(),
            reason,
        })?;
        let mut tokens = tokens.into_iter();
        let first = match tokens.next() {
            Some(Token::Word(w)) => w.to_ascii_uppercase(),
            Some(t) => {
                return Err(CommandParseError {
                    command: "query".into(),
                    reason: format!("expected a command, got {t}"),
                });
            }
            None => {
                return Err(CommandParseError {
                    command: "query".into(),
                    reason: "empty query".into(),
                });
            }
        };
        let command: &'static str = match first.as_str() {
            "IDENTIFY_SYSTEM" => "IDENTIFY_SYSTEM",
            "TIMELINE_STATUS" => "TIMELINE_STATUS",
            "START_WAL_PUSH" => "START_WAL_PUSH",
            "START_REPLICATION" => "START_REPLICATION",
            "SET" => "SET",
            "SHOW" => "SHOW",
            _ => {
                return Err(CommandParseError {
                    command: "query".into(),
                    reason: format!(
                        "unsupported command {first:?} (supported: IDENTIFY_SYSTEM, TIMELINE_STATUS, \
                         START_WAL_PUSH, START_REPLICATION, SET, SHOW)"
                    ),
                });
            }
        };
        let mut p = Parser {
            command,
            tokens,
            peeked: None,
        };
        let cmd = match command {
            "IDENTIFY_SYSTEM" => ReplicationCommand::IdentifySystem,
            "TIMELINE_STATUS" => ReplicationCommand::TimelineStatus,
            "START_WAL_PUSH" => Self::start_wal_push(&mut p)?,
            "START_REPLICATION" => Self::start_replication(&mut p)?,
            "SET" => Self::set(&mut p)?,
            _ => ReplicationCommand::Show {
                name: p.name("a parameter name")?.to_ascii_lowercase(),
            },
        };
        p.end()?;
        Ok(cmd)
    }

    fn start_wal_push(p: &mut Parser) -> Result<Self, CommandParseError> {
        let mut proto_version = None;
        let mut allow_timeline_creation = true;
        for (name, value) in p.options()? {
            match name.as_str() {
                "proto_version" => {
                    let v: u32 = value
                        .parse()
                        .map_err(|_| p.err(format!("proto_version {value:?} is not a number")))?;
                    proto_version = Some(v);
                }
                "allow_timeline_creation" => {
                    allow_timeline_creation = parse_bool(&value).ok_or_else(|| {
                        p.err(format!(
                            "allow_timeline_creation {value:?} is not a boolean"
                        ))
                    })?;
                }
                other => return Err(p.err(format!("unknown option {other:?}"))),
            }
        }
        match proto_version {
            None => Err(p.err(format!(
                "no proto_version given, which means protocol version 2; Strata speaks only \
                 version {PROTOCOL_VERSION}: send START_WAL_PUSH (proto_version '{PROTOCOL_VERSION}')"
            ))),
            Some(v) if v != PROTOCOL_VERSION => Err(p.err(format!(
                "protocol version {v} is not supported (only {PROTOCOL_VERSION})"
            ))),
            Some(v) => Ok(ReplicationCommand::StartWalPush {
                proto_version: v,
                allow_timeline_creation,
            }),
        }
    }

    fn start_replication(p: &mut Parser) -> Result<Self, CommandParseError> {
        let slot = if p.keyword("SLOT") {
            Some(p.name("a slot name")?)
        } else {
            None
        };
        if p.keyword("LOGICAL") {
            return Err(p.err("logical replication is not supported"));
        }
        p.keyword("PHYSICAL");
        let start_lsn = match p.next() {
            Some(Token::Word(w)) => w
                .parse::<Lsn>()
                .map_err(|_| p.err(format!("expected a start LSN (X/X), got {w:?}")))?,
            Some(t) => return Err(p.err(format!("expected a start LSN (X/X), got {t}"))),
            None => return Err(p.err("expected a start LSN (X/X), got the end of the command")),
        };
        let timeline = if p.keyword("TIMELINE") {
            let tli = p.name("a timeline number")?;
            Some(
                tli.parse::<u32>()
                    .map_err(|_| p.err(format!("timeline {tli:?} is not a number")))?,
            )
        } else {
            None
        };
        let mut term = None;
        for (name, value) in p.options()? {
            match name.as_str() {
                "term" => {
                    term = Some(
                        value
                            .parse::<Term>()
                            .map_err(|_| p.err(format!("term {value:?} is not a number")))?,
                    );
                }
                other => return Err(p.err(format!("unknown option {other:?}"))),
            }
        }
        Ok(ReplicationCommand::StartReplication(StartReplication {
            slot,
            start_lsn,
            timeline,
            term,
        }))
    }

    fn set(p: &mut Parser) -> Result<Self, CommandParseError> {
        if !p.keyword("SESSION") {
            p.keyword("LOCAL");
        }
        let name = p.name("a parameter name")?.to_ascii_lowercase();
        if !(p.keyword("TO") || p.peek() == Some(&Token::Eq)) {
            return Err(p.err(format!("expected \"=\" or TO after {name}")));
        }
        if p.peek() == Some(&Token::Eq) {
            p.next();
        }
        let mut parts = Vec::new();
        while let Some(t) = p.next() {
            parts.push(match t {
                Token::Word(s) | Token::Str(s) | Token::Ident(s) => s,
                Token::Comma => ",".into(),
                other => return Err(p.err(format!("unexpected {other} in the value of {name}"))),
            });
        }
        if parts.is_empty() {
            return Err(p.err(format!("no value for {name}")));
        }
        Ok(ReplicationCommand::Set {
            name,
            value: parts.join(" ").replace(" ,", ","),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> ReplicationCommand {
        ReplicationCommand::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    fn err(q: &str) -> String {
        ReplicationCommand::parse(q).unwrap_err().to_string()
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse("IDENTIFY_SYSTEM"), ReplicationCommand::IdentifySystem);
        assert_eq!(
            parse("  identify_system ; "),
            ReplicationCommand::IdentifySystem
        );
        assert_eq!(parse("Timeline_Status"), ReplicationCommand::TimelineStatus);
        assert_eq!(
            parse("SHOW wal_segment_size"),
            ReplicationCommand::Show {
                name: "wal_segment_size".into()
            }
        );
        assert_eq!(
            parse("SET datestyle TO 'ISO'"),
            ReplicationCommand::Set {
                name: "datestyle".into(),
                value: "ISO".into()
            }
        );
        assert_eq!(
            parse("set session DateStyle = ISO, YMD;"),
            ReplicationCommand::Set {
                name: "datestyle".into(),
                value: "ISO, YMD".into()
            }
        );
        assert_eq!(
            parse("SET statement_timeout = 0"),
            ReplicationCommand::Set {
                name: "statement_timeout".into(),
                value: "0".into()
            }
        );
    }

    #[test]
    fn start_wal_push() {
        assert_eq!(
            parse("START_WAL_PUSH (proto_version '3', allow_timeline_creation 'false')"),
            ReplicationCommand::StartWalPush {
                proto_version: 3,
                allow_timeline_creation: false
            }
        );
        assert_eq!(
            parse("start_wal_push (PROTO_VERSION = 3)"),
            ReplicationCommand::StartWalPush {
                proto_version: 3,
                allow_timeline_creation: true
            }
        );
        let e = err("START_WAL_PUSH");
        assert!(
            e.starts_with("START_WAL_PUSH: no proto_version given, which means protocol version 2"),
            "{e}"
        );
        let e = err("START_WAL_PUSH (allow_timeline_creation 'true')");
        assert!(e.contains("protocol version 2"), "{e}");
        assert_eq!(
            err("START_WAL_PUSH (proto_version '2')"),
            "START_WAL_PUSH: protocol version 2 is not supported (only 3)"
        );
        assert_eq!(
            err("START_WAL_PUSH (proto_version 'x')"),
            "START_WAL_PUSH: proto_version \"x\" is not a number"
        );
        assert_eq!(
            err("START_WAL_PUSH (proto_version '3', allow_timeline_creation 'maybe')"),
            "START_WAL_PUSH: allow_timeline_creation \"maybe\" is not a boolean"
        );
        assert_eq!(
            err("START_WAL_PUSH (proto_version '3', colour 'red')"),
            "START_WAL_PUSH: unknown option \"colour\""
        );
        assert_eq!(
            err("START_WAL_PUSH (proto_version '3'"),
            "START_WAL_PUSH: unterminated option list: missing \")\""
        );
    }

    #[test]
    fn start_replication_forms() {
        let sr = |slot: Option<&str>, lsn: u64, timeline: Option<u32>, term: Option<u64>| {
            ReplicationCommand::StartReplication(StartReplication {
                slot: slot.map(str::to_string),
                start_lsn: Lsn(lsn),
                timeline,
                term,
            })
        };
        // PostgreSQL 15's walreceiver.
        assert_eq!(
            parse("START_REPLICATION 0/3000000 TIMELINE 1"),
            sr(None, 0x0300_0000, Some(1), None)
        );
        assert_eq!(
            parse("START_REPLICATION SLOT \"my slot\" 0/3000000 TIMELINE 1"),
            sr(Some("my slot"), 0x0300_0000, Some(1), None)
        );
        // The reference system's pageserver and proposer.
        assert_eq!(
            parse("START_REPLICATION PHYSICAL 1/ABCDEF00"),
            sr(None, 0x1_ABCD_EF00, None, None)
        );
        assert_eq!(
            parse("START_REPLICATION PHYSICAL 0/10 (term='7')"),
            sr(None, 0x10, None, Some(7))
        );
        assert_eq!(
            parse("start_replication slot s physical 0/10 timeline 1 (term 7);"),
            sr(Some("s"), 0x10, Some(1), Some(7))
        );
    }

    #[test]
    fn start_replication_errors_name_the_token() {
        assert_eq!(
            err("START_REPLICATION PHYSICAL 0/XYZ"),
            "START_REPLICATION: expected a start LSN (X/X), got \"0/XYZ\""
        );
        assert_eq!(
            err("START_REPLICATION"),
            "START_REPLICATION: expected a start LSN (X/X), got the end of the command"
        );
        assert_eq!(
            err("START_REPLICATION 0/10 TIMELINE one"),
            "START_REPLICATION: timeline \"one\" is not a number"
        );
        assert_eq!(
            err("START_REPLICATION 0/10 (term 'x')"),
            "START_REPLICATION: term \"x\" is not a number"
        );
        assert_eq!(
            err("START_REPLICATION 0/10 (since '1')"),
            "START_REPLICATION: unknown option \"since\""
        );
        assert_eq!(
            err("START_REPLICATION SLOT s LOGICAL 0/10"),
            "START_REPLICATION: logical replication is not supported"
        );
        assert_eq!(
            err("START_REPLICATION 0/10 extra"),
            "START_REPLICATION: unexpected \"extra\" after the end of the command"
        );
    }

    #[test]
    fn general_errors() {
        assert_eq!(err(""), "query: empty query");
        assert_eq!(err(" ; "), "query: empty query");
        assert!(err("SELECT 1").starts_with("query: unsupported command \"SELECT\""));
        assert_eq!(err("'x'"), "query: expected a command, got 'x'");
        assert_eq!(err("SHOW 'x"), "query: unterminated quoted text 'x");
        assert_eq!(
            err("IDENTIFY_SYSTEM; IDENTIFY_SYSTEM"),
            "query: only one command per query is accepted"
        );
        assert_eq!(
            err("IDENTIFY_SYSTEM x"),
            "IDENTIFY_SYSTEM: unexpected \"x\" after the end of the command"
        );
        assert_eq!(err("SET x"), "SET: expected \"=\" or TO after x");
        assert_eq!(err("SET x ="), "SET: no value for x");
        assert_eq!(
            err("SHOW"),
            "SHOW: expected a parameter name, got the end of the command"
        );
        assert_eq!(err("SHOW *"), "query: unexpected character '*'");
    }
}
