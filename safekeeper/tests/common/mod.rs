//! Shared pieces of the tests that run the real `safekeeper` binary: starting and killing
//! it, a minimal proposer over TCP, a walsender client, and generated WAL.

#![allow(clippy::unwrap_used, dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use postgres_ffi::PgMajorVersion;
use postgres_ffi::v15::{RM_XLOG_ID, XLOG_NOOP};
use postgres_ffi::wal_generate::{WalWriter, WalWriterConfig, XLogRecordBuilder};
use pq_proto::ProtocolError;
use pq_proto::StartupParams;
use pq_proto::client::{BackendReader, ClientConnection, FrontendWriter};
use safekeeper_api::membership::{Configuration, Generation};
use safekeeper_api::proto::{
    AcceptorGreeting, AppendRequest, AppendRequestHeader, AppendResponse, MAX_WAL_PAYLOAD,
    ProposerElected, ProposerGreeting, VoteRequest, VoteResponse,
};
use safekeeper_api::term::{Term, TermHistory, TermLsn};
use safekeeper_api::{AcceptorMessage, ProposerMessage};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use utils::{Lsn, TenantTimelineId};

pub const SEG: u64 = 16 * 1024 * 1024;
pub const SYSID: u64 = 0x5AFE_C0DE;
pub const PG_VERSION: u32 = 150007;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running safekeeper binary.
pub struct Sk {
    pub child: Child,
    pub datadir: PathBuf,
    pub pg_port: u16,
    pub http_port: u16,
    pub log: PathBuf,
    pub extra: Vec<String>,
}

impl Sk {
    /// Starts `safekeeper --id 1 -D datadir` and waits until the libpq port accepts.
    pub fn start(datadir: &Path, extra: &[&str]) -> Sk {
        Self::start_id(datadir, 1, extra)
    }

    /// Starts `safekeeper --id <id> -D datadir`.
    pub fn start_id(datadir: &Path, id: u64, extra: &[&str]) -> Sk {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.extend(["--id".to_string(), id.to_string()]);
        let log = datadir.with_extension("log");
        for _ in 0..5 {
            let (pg_port, http_port) = (free_port(), free_port());
            let mut sk = Sk {
                child: Self::spawn(datadir, pg_port, http_port, &extra),
                datadir: datadir.to_path_buf(),
                pg_port,
                http_port,
                log: log.clone(),
                extra: extra.clone(),
            };
            match sk.try_wait_ready() {
                Ok(()) => return sk,
                // Another process took a port between our check and the bind: again.
                Err(text) if text.contains("binding the") => continue,
                Err(text) => panic!("{text}"),
            }
        }
        panic!("no free ports for the safekeeper after 5 tries");
    }

    fn spawn(datadir: &Path, pg_port: u16, http_port: u16, extra: &[String]) -> Child {
        std::fs::create_dir_all(datadir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(datadir.with_extension("log"))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_safekeeper"))
            .arg("-D")
            .arg(datadir)
            .arg("--listen-pg")
            .arg(format!("127.0.0.1:{pg_port}"))
            .arg("--listen-http")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn wait_ready(&mut self) {
        if let Err(text) = self.try_wait_ready() {
            panic!("{text}");
        }
    }

    fn try_wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "safekeeper exited with {status}:\n{}",
                    self.log_text()
                ));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.pg_port)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("safekeeper not ready:\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pg_addr(&self) -> String {
        format!("127.0.0.1:{}", self.pg_port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.child = Self::spawn(&self.datadir, self.pg_port, self.http_port, &self.extra);
        self.wait_ready();
    }

    /// A raw HTTP/1.0 request; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out.split(' ').nth(1).unwrap().parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }
}

impl Drop for Sk {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn writer_config() -> WalWriterConfig {
    WalWriterConfig {
        version: PgMajorVersion::V15,
        seg_size: SEG,
        system_id: SYSID,
        timeline: 1,
    }
}

/// `n` records of `size` bytes of payload from `start`; returns the bytes and record ends.
pub fn generate_wal(start: Lsn, n: usize, size: usize) -> (Vec<u8>, Vec<Lsn>) {
    let mut w = WalWriter::new(writer_config(), start, Lsn::INVALID);
    let ends: Vec<Lsn> = (0..n)
        .map(|i| {
            w.append(XLogRecordBuilder::new(RM_XLOG_ID, XLOG_NOOP).main_data(&vec![i as u8; size]))
                .1
        })
        .collect();
    let end = ends.last().copied().unwrap_or(start);
    w.zero_until(end);
    (w.into_bytes(), ends)
}

pub type Reader = BackendReader<OwnedReadHalf>;
pub type Writer = FrontendWriter<OwnedWriteHalf>;

/// Connects with the timeline in the startup options and an optional JWT.
pub async fn connect(
    addr: &str,
    ttid: TenantTimelineId,
    password: Option<&str>,
) -> Result<ClientConnection<OwnedReadHalf, OwnedWriteHalf>, ProtocolError> {
    let mut c = ClientConnection::connect_tcp(addr).await?;
    c.startup(
        &StartupParams::for_timeline(ttid.tenant_id, ttid.timeline_id, "test"),
        password,
    )
    .await?;
    Ok(c)
}

/// A proposer connection in CopyBoth mode.
pub struct Proposer {
    pub ttid: TenantTimelineId,
    pub r: Reader,
    pub w: Writer,
}

impl Proposer {
    pub async fn connect(addr: &str, ttid: TenantTimelineId) -> Result<Proposer, ProtocolError> {
        Self::connect_with(addr, ttid, None, "START_WAL_PUSH (proto_version '3')").await
    }

    pub async fn connect_with(
        addr: &str,
        ttid: TenantTimelineId,
        password: Option<&str>,
        command: &str,
    ) -> Result<Proposer, ProtocolError> {
        let mut c = connect(addr, ttid, password).await?;
        c.start_copy_both(command).await?;
        let (r, w) = c.into_split();
        Ok(Proposer { ttid, r, w })
    }

    pub async fn send(&mut self, msg: &ProposerMessage) -> Result<(), ProtocolError> {
        self.w
            .write_copy_data_with(|buf| msg.encode(buf))
            .map_err(|e| ProtocolError::malformed("encode", e.to_string()))?;
        self.w.flush().await
    }

    pub async fn send_raw(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        self.w.write_copy_data(payload);
        self.w.flush().await
    }

    pub async fn recv(&mut self) -> Result<AcceptorMessage, ProtocolError> {
        let bytes = tokio::time::timeout(Duration::from_secs(30), self.r.read_copy_data(1 << 20))
            .await
            .map_err(|_| ProtocolError::malformed("recv", "timed out"))??
            .ok_or(ProtocolError::UnexpectedEof("reply"))?;
        AcceptorMessage::decode(&bytes)
            .map_err(|e| ProtocolError::malformed("reply", e.to_string()))
    }

    pub fn greeting(&self) -> ProposerMessage {
        ProposerMessage::Greeting(ProposerGreeting {
            tenant_id: self.ttid.tenant_id,
            timeline_id: self.ttid.timeline_id,
            mconf: Configuration::empty(),
            pg_version: PG_VERSION,
            system_id: SYSID,
            wal_seg_size: SEG as u32,
        })
    }

    pub async fn greet(&mut self) -> AcceptorGreeting {
        self.send(&self.greeting()).await.unwrap();
        match self.recv().await.unwrap() {
            AcceptorMessage::Greeting(g) => g,
            other => panic!("expected a greeting, got {other:?}"),
        }
    }

    pub async fn vote(&mut self, term: Term) -> VoteResponse {
        self.send(&ProposerMessage::VoteRequest(VoteRequest {
            generation: Generation::NONE,
            term,
        }))
        .await
        .unwrap();
        match self.recv().await.unwrap() {
            AcceptorMessage::VoteResponse(v) => v,
            other => panic!("expected a vote, got {other:?}"),
        }
    }

    pub fn elected(term: Term, start: Lsn, history: &[(Term, Lsn)]) -> ProposerMessage {
        ProposerMessage::Elected(ProposerElected {
            generation: Generation::NONE,
            term,
            start_streaming_at: start,
            term_history: TermHistory(history.iter().map(|&(t, l)| TermLsn::new(t, l)).collect()),
        })
    }

    pub fn append(term: Term, begin: Lsn, wal: &[u8], commit: Lsn) -> ProposerMessage {
        ProposerMessage::AppendRequest(AppendRequest {
            h: AppendRequestHeader {
                generation: Generation::NONE,
                term,
                begin_lsn: begin,
                end_lsn: Lsn(begin.0 + wal.len() as u64),
                commit_lsn: commit,
                truncate_lsn: Lsn::INVALID,
            },
            wal_data: Bytes::copy_from_slice(wal),
        })
    }

    /// Sends `wal` from `begin` in appends of at most 128 KiB (all pipelined), and returns
    /// the AppendResponses received until one reports `flush_lsn >= wait_for`.
    pub async fn stream(
        &mut self,
        term: Term,
        begin: Lsn,
        wal: &[u8],
        commit: Lsn,
        wait_for: Lsn,
    ) -> Vec<AppendResponse> {
        let mut out = Vec::new();
        if wal.is_empty() {
            // Nothing to send: a heartbeat still gets a reply with the positions.
            self.send(&Self::append(term, begin, &[], commit))
                .await
                .unwrap();
        }
        for (i, chunk) in wal.chunks(MAX_WAL_PAYLOAD).enumerate() {
            let at = Lsn(begin.0 + (i * MAX_WAL_PAYLOAD) as u64);
            self.w
                .write_copy_data_with(|buf| Self::append(term, at, chunk, commit).encode(buf))
                .unwrap();
            if i % 8 == 7 {
                self.w.flush().await.unwrap();
                // Read replies as they come, as a real proposer does: a client that never
                // reads would stall the server's writer, and so its whole pipeline.
                out.extend(self.ready_responses().await);
            }
        }
        self.w.flush().await.unwrap();
        if out.last().is_some_and(|r| r.flush_lsn >= wait_for) {
            return out;
        }
        out.extend(self.wait_flush(wait_for).await);
        out
    }

    /// The AppendResponses already received (waits at most a millisecond).
    pub async fn ready_responses(&mut self) -> Vec<AppendResponse> {
        let mut out = Vec::new();
        while let Ok(r) =
            tokio::time::timeout(Duration::from_millis(1), self.r.read_copy_data(1 << 20)).await
        {
            let bytes = r.unwrap().expect("connection open");
            match AcceptorMessage::decode(&bytes).unwrap() {
                AcceptorMessage::AppendResponse(r) => out.push(r),
                other => panic!("expected AppendResponse, got {other:?}"),
            }
        }
        out
    }

    pub async fn wait_flush(&mut self, wait_for: Lsn) -> Vec<AppendResponse> {
        let mut out = Vec::new();
        loop {
            match self.recv().await.unwrap() {
                AcceptorMessage::AppendResponse(r) => {
                    let done = r.flush_lsn >= wait_for;
                    out.push(r);
                    if done {
                        return out;
                    }
                }
                other => panic!("expected AppendResponse, got {other:?}"),
            }
        }
    }
}

/// Reads WAL `[start, end)` from the safekeeper with START_REPLICATION.
pub async fn read_wal(addr: &str, ttid: TenantTimelineId, start: Lsn, end: Lsn) -> Vec<u8> {
    use pq_proto::replication::ReplicationMessage;
    let mut c = connect(addr, ttid, None).await.unwrap();
    c.start_copy_both(&format!("START_REPLICATION PHYSICAL {start}"))
        .await
        .unwrap();
    let (mut r, _w) = c.into_split();
    let mut out = BytesMut::new();
    let mut pos = start;
    while pos < end {
        let data = tokio::time::timeout(Duration::from_secs(30), r.read_copy_data(1 << 20))
            .await
            .expect("WAL within 30 s")
            .unwrap()
            .expect("stream open");
        match ReplicationMessage::decode(&data).unwrap() {
            ReplicationMessage::XLogData(x) => {
                assert_eq!(x.wal_start, pos, "XLogData in sequence");
                assert!(x.data.len() <= 128 * 1024);
                pos = Lsn(pos.0 + x.data.len() as u64);
                out.extend_from_slice(&x.data);
            }
            ReplicationMessage::Keepalive(_) => {}
        }
    }
    assert_eq!(pos, end, "no XLogData beyond the end asked for");
    out.to_vec()
}
