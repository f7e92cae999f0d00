//! The sidecar's side of the local PostgreSQL: a physical replication client.
//!
//! The sidecar connects like a standby (`replication=true`, `application_name` matching
//! `synchronous_standby_names`), learns the cluster's facts (`IDENTIFY_SYSTEM`, the WAL
//! segment size, the version), makes sure its physical slot exists (so Postgres keeps every
//! segment the sidecar has not had acknowledged by a quorum), and streams from the term
//! start. The status updates it sends are the durability signal: write = flush = apply =
//! quorum commit LSN, so a COMMIT waiting for synchronous replication (`on`,
//! `remote_write` or `remote_apply`) is released only once a majority of safekeepers has
//! flushed it.

use pq_proto::client::{BackendReader, ClientConnection, FrontendWriter};
use pq_proto::replication::{ReplicationFeedback, StandbyStatusUpdate};
use pq_proto::{ProtocolError, StartupParams};
use tokio::io::{AsyncRead, AsyncWrite};
use utils::Lsn;
use utils::pg_time::now_pg_timestamp;

/// Reading half of a connection to Postgres (TCP or Unix socket).
pub type PgReader = BackendReader<Box<dyn AsyncRead + Unpin + Send>>;
/// Writing half of a connection to Postgres.
pub type PgWriter = FrontendWriter<Box<dyn AsyncWrite + Unpin + Send>>;
type PgConn =
    ClientConnection<Box<dyn AsyncRead + Unpin + Send>, Box<dyn AsyncWrite + Unpin + Send>>;

/// Errors talking to the local Postgres.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The `--pg` connection string is not understood.
    #[error("bad --pg connection string: {0}")]
    Conninfo(String),
    /// A protocol or server error, with what we were doing.
    #[error("{what}: {source}")]
    Protocol {
        /// What we were doing.
        what: String,
        /// The error.
        source: ProtocolError,
    },
    /// Postgres answered something we cannot use.
    #[error("{0}")]
    Unexpected(String),
}

impl ComputeError {
    /// Postgres is not accepting connections yet (refused, or `the database system is
    /// starting up`): worth retrying shortly.
    pub fn is_not_ready(&self) -> bool {
        match self {
            ComputeError::Protocol {
                source: ProtocolError::Io(e),
                ..
            } => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ),
            ComputeError::Protocol {
                source: ProtocolError::Server(s),
                ..
            } => s.code == "57P03",
            _ => false,
        }
    }
}

fn proto(what: impl Into<String>) -> impl FnOnce(ProtocolError) -> ComputeError {
    let what = what.into();
    move |source| ComputeError::Protocol { what, source }
}

/// A libpq-style `key=value` connection string (the keys the sidecar needs: `host` (a
/// name, an address, or a socket directory), `port`, `user`, `password`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conninfo {
    /// Host name/address, or a Unix socket directory (starts with `/`).
    pub host: String,
    /// Port (also names the Unix socket).
    pub port: u16,
    /// User to connect as.
    pub user: String,
    /// Password, if any.
    pub password: Option<String>,
}

impl std::str::FromStr for Conninfo {
    type Err = ComputeError;

    fn from_str(s: &str) -> Result<Conninfo, ComputeError> {
        let mut info = Conninfo {
            host: "127.0.0.1".to_string(),
            port: 5432,
            user: "postgres".to_string(),
            password: None,
        };
        let bad = |m: String| ComputeError::Conninfo(m);
        let mut rest = s.trim();
        while !rest.is_empty() {
            let eq = rest
                .find('=')
                .ok_or_else(|| bad(format!("expected key=value at {rest:?}")))?;
            let key = rest[..eq].trim();
            rest = rest[eq + 1..].trim_start();
            let value;
            if let Some(quoted) = rest.strip_prefix('\'') {
                let mut v = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                v.push(n);
                            }
                        }
                        '\'' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => v.push(c),
                    }
                }
                let end = end.ok_or_else(|| bad(format!("unterminated quote in {key}")))?;
                value = v;
                rest = quoted[end..].trim_start();
            } else {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                value = rest[..end].to_string();
                rest = rest[end..].trim_start();
            }
            match key {
                "host" | "hostaddr" => info.host = value,
                "port" => {
                    info.port = value
                        .parse()
                        .map_err(|_| bad(format!("port {value:?} is not a port number")))?
                }
                "user" => info.user = value,
                "password" => info.password = Some(value),
                // Harmless libpq keys the sidecar has no use for.
                "dbname" | "connect_timeout" | "sslmode" | "application_name" => {}
                other => return Err(bad(format!("unsupported key {other:?}"))),
            }
        }
        Ok(info)
    }
}

/// What the sidecar learns about its Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeInfo {
    /// `system_identifier` from pg_control.
    pub system_id: u64,
    /// The PostgreSQL timeline (always 1 for a compute).
    pub timeline: u32,
    /// Where Postgres has flushed WAL up to.
    pub flush_lsn: Lsn,
    /// `server_version_num`.
    pub pg_version: u32,
    /// `wal_segment_size` in bytes.
    pub wal_seg_size: u32,
}

/// A replication connection to the local Postgres, before streaming.
pub struct Compute {
    conn: PgConn,
    /// The facts learnt at connect time.
    pub info: ComputeInfo,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Compute {
    /// Connects as a physical replication client named `application_name` and learns the
    /// cluster's facts.
    pub async fn connect(
        conninfo: &Conninfo,
        application_name: &str,
    ) -> Result<Compute, ComputeError> {
        let target = if conninfo.host.starts_with('/') {
            format!("{}/.s.PGSQL.{}", conninfo.host, conninfo.port)
        } else {
            format!("{}:{}", conninfo.host, conninfo.port)
        };
        let what = format!("connecting to Postgres at {target}");
        let mut conn: PgConn = if conninfo.host.starts_with('/') {
            let s = tokio::net::UnixStream::connect(&target)
                .await
                .map_err(|e| proto(what.clone())(e.into()))?;
            let (r, w) = s.into_split();
            ClientConnection::new(Box::new(r), Box::new(w))
        } else {
            let s = tokio::net::TcpStream::connect(&target)
                .await
                .map_err(|e| proto(what.clone())(e.into()))?;
            s.set_nodelay(true)
                .map_err(|e| proto(what.clone())(e.into()))?;
            let (r, w) = s.into_split();
            ClientConnection::new(Box::new(r), Box::new(w))
        };
        let params = StartupParams::new()
            .with("user", &conninfo.user)
            .with("replication", "true")
            .with("application_name", application_name);
        conn.startup(&params, conninfo.password.as_deref())
            .await
            .map_err(proto(what))?;

        let ident = conn
            .simple_query("IDENTIFY_SYSTEM")
            .await
            .map_err(proto("IDENTIFY_SYSTEM"))?;
        let row = ident
            .rows
            .first()
            .ok_or_else(|| ComputeError::Unexpected("IDENTIFY_SYSTEM returned no row".into()))?;
        let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let system_id = col(0).parse().map_err(|_| {
            ComputeError::Unexpected(format!("IDENTIFY_SYSTEM systemid {:?}", col(0)))
        })?;
        let timeline = col(1).parse().map_err(|_| {
            ComputeError::Unexpected(format!("IDENTIFY_SYSTEM timeline {:?}", col(1)))
        })?;
        let flush_lsn: Lsn = col(2).parse().map_err(|_| {
            ComputeError::Unexpected(format!("IDENTIFY_SYSTEM xlogpos {:?}", col(2)))
        })?;
        let pg_version = show(&mut conn, "server_version_num")
            .await?
            .parse()
            .map_err(|_| ComputeError::Unexpected("server_version_num is not a number".into()))?;
        let wal_seg_size = parse_size(&show(&mut conn, "wal_segment_size").await?)?;
        Ok(Compute {
            conn,
            info: ComputeInfo {
                system_id,
                timeline,
                flush_lsn,
                pg_version,
                wal_seg_size,
            },
        })
    }

    /// Creates the physical slot (reserving WAL at once) unless it exists. Asks first with
    /// `READ_REPLICATION_SLOT`, so an existing slot does not put an ERROR in the server log.
    pub async fn ensure_slot(&mut self, slot: &str) -> Result<bool, ComputeError> {
        check_slot_name(slot)?;
        let existing = self
            .conn
            .simple_query(&format!("READ_REPLICATION_SLOT {slot}"))
            .await
            .map_err(proto(format!("READ_REPLICATION_SLOT {slot}")))?;
        match existing.rows.first().and_then(|r| r.first()) {
            Some(Some(kind)) if kind == "physical" => return Ok(false),
            Some(Some(kind)) => {
                return Err(ComputeError::Unexpected(format!(
                    "replication slot {slot} exists but is {kind}, not physical"
                )));
            }
            _ => {}
        }
        match self
            .conn
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {slot} PHYSICAL RESERVE_WAL"
            ))
            .await
        {
            Ok(_) => Ok(true),
            Err(ProtocolError::Server(e)) if e.code == "42710" => Ok(false),
            Err(e) => Err(proto(format!("creating replication slot {slot}"))(e)),
        }
    }

    /// Starts streaming from `start` through `slot`.
    pub async fn start_streaming(
        mut self,
        slot: &str,
        start: Lsn,
    ) -> Result<(PgReader, PgWriter), ComputeError> {
        check_slot_name(slot)?;
        self.conn
            .start_copy_both(&format!("START_REPLICATION SLOT {slot} PHYSICAL {start}"))
            .await
            .map_err(proto(format!("START_REPLICATION from {start}")))?;
        Ok(self.conn.into_split())
    }
}

async fn show(conn: &mut PgConn, name: &str) -> Result<String, ComputeError> {
    let r = conn
        .simple_query(&format!("SHOW {name}"))
        .await
        .map_err(proto(format!("SHOW {name}")))?;
    r.rows
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .ok_or_else(|| ComputeError::Unexpected(format!("SHOW {name} returned nothing")))
}

fn check_slot_name(slot: &str) -> Result<(), ComputeError> {
    if slot.is_empty()
        || slot.len() > 63
        || !slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ComputeError::Unexpected(format!(
            "slot name {slot:?}: use 1-63 of a-z, 0-9 and _"
        )));
    }
    Ok(())
}

/// Queues a standby status update (`'r'`): written up to `write`, flushed and applied up to
/// `flush`; the caller flushes the writer.
pub fn write_standby_status<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut FrontendWriter<W>,
    write: Lsn,
    flush: Lsn,
) {
    let mut buf = bytes::BytesMut::new();
    ReplicationFeedback::StandbyStatus(StandbyStatusUpdate {
        write_lsn: write,
        flush_lsn: flush,
        apply_lsn: flush,
        reply_time: now_pg_timestamp(),
        reply_requested: false,
    })
    .encode(&mut buf);
    w.write_copy_data(&buf);
}

/// `16MB` → 16777216 (Postgres's memory units as `SHOW` prints them).
fn parse_size(s: &str) -> Result<u32, ComputeError> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let num: u64 = num
        .parse()
        .map_err(|_| ComputeError::Unexpected(format!("size {s:?}")))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        other => {
            return Err(ComputeError::Unexpected(format!(
                "size unit {other:?} in {s:?}"
            )));
        }
    };
    u32::try_from(num * mult).map_err(|_| ComputeError::Unexpected(format!("size {s:?} too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_parses_libpq_style() {
        let c: Conninfo = "host=127.0.0.1 port=5433 user=postgres".parse().unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("127.0.0.1", 5433, "postgres")
        );
        let c: Conninfo = "host='/tmp/my sock' password='a\\'b' dbname=x"
            .parse()
            .unwrap();
        assert_eq!(c.host, "/tmp/my sock");
        assert_eq!(c.password.as_deref(), Some("a'b"));
        assert!("port=abc".parse::<Conninfo>().is_err());
        assert!("nonsense".parse::<Conninfo>().is_err());
        assert!("sslcert=x".parse::<Conninfo>().is_err());
        assert!("host='open".parse::<Conninfo>().is_err());
    }

    #[test]
    fn sizes_and_slot_names() {
        assert_eq!(parse_size("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert!(parse_size("16XB").is_err());
        assert!(check_slot_name("walproposer").is_ok());
        assert!(check_slot_name("bad name").is_err());
        assert!(check_slot_name("").is_err());
    }
}
