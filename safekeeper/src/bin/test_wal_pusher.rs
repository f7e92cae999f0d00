//! **Test-only** proposer: streams a stock PostgreSQL primary's WAL into one safekeeper.
//!
//! Built only with the `testing` feature; the real proposer is the walproposer sidecar
//! (`libs/walproposer`). This one exists so the safekeeper's server can be tested against
//! real PostgreSQL WAL before that sidecar exists, and is deliberately minimal: one
//! safekeeper (a quorum of one, so commit = the safekeeper's flush), no reconnects (any
//! error ends the process with a message), no recovery of WAL the safekeeper lacks.
//!
//! What it does:
//! 1. `START_WAL_PUSH` to the safekeeper: greeting, a vote for (its term + 1), and
//!    ProposerElected starting at the safekeeper's flush LSN (or `--start-lsn` for a
//!    timeline without WAL), with the safekeeper's history plus the new term.
//! 2. `START_REPLICATION SLOT <slot> PHYSICAL <start>` to the primary, as a replication
//!    client.
//! 3. Every XLogData from the primary becomes AppendRequests of at most 128 KiB; each
//!    AppendResponse's flush LSN becomes the commit LSN (sent in the next append, or in an
//!    empty heartbeat append) and the flush position reported to the primary.
//!
//! ```sh
//! test_wal_pusher --primary 127.0.0.1:15001 --slot sk --safekeeper 127.0.0.1:15002 \
//!     --tenant-id <hex> --timeline-id <hex> --system-id N --pg-version 150007
//! ```

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use pq_proto::StartupParams;
use pq_proto::client::ClientConnection;
use pq_proto::replication::{ReplicationFeedback, ReplicationMessage, StandbyStatusUpdate};
use safekeeper_api::membership::{Configuration, Generation};
use safekeeper_api::proto::{
    AppendRequest, AppendRequestHeader, MAX_WAL_PAYLOAD, ProposerElected, ProposerGreeting,
    VoteRequest,
};
use safekeeper_api::term::{TermHistory, TermLsn};
use safekeeper_api::{AcceptorMessage, ProposerMessage};
use tracing::info;
use utils::pg_time::now_pg_timestamp;
use utils::{Lsn, TenantId, TimelineId};

/// Streams a primary's WAL into one safekeeper (test-only).
#[derive(Debug, Parser)]
struct Args {
    /// The primary's `host:port` (replication connection as user `postgres`).
    #[arg(long)]
    primary: String,
    /// The physical replication slot on the primary that keeps its WAL.
    #[arg(long)]
    slot: String,
    /// The safekeeper's libpq `host:port`.
    #[arg(long)]
    safekeeper: String,
    /// The tenant.
    #[arg(long)]
    tenant_id: TenantId,
    /// The timeline.
    #[arg(long)]
    timeline_id: TimelineId,
    /// The primary's system identifier.
    #[arg(long)]
    system_id: u64,
    /// The primary's `server_version_num`.
    #[arg(long, default_value_t = 150000)]
    pg_version: u32,
    /// Where to start when the timeline has no WAL yet.
    #[arg(long)]
    start_lsn: Option<Lsn>,
}

type Error = String;

fn err(what: &str) -> impl FnOnce(pq_proto::ProtocolError) -> Error + '_ {
    move |e| format!("{what}: {e}")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    if let Err(e) = utils::logging::init(utils::logging::LogFormat::Plain) {
        eprintln!("test_wal_pusher: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("test_wal_pusher failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    // The safekeeper side: greeting, vote, election.
    let mut sk = ClientConnection::connect_tcp(&args.safekeeper)
        .await
        .map_err(err("connecting to the safekeeper"))?;
    sk.startup(
        &StartupParams::for_timeline(args.tenant_id, args.timeline_id, "test_wal_pusher"),
        None,
    )
    .await
    .map_err(err("safekeeper startup"))?;
    sk.start_copy_both("START_WAL_PUSH (proto_version '3')")
        .await
        .map_err(err("START_WAL_PUSH"))?;
    let (mut sk_r, mut sk_w) = sk.into_split();
    let send = |msg: ProposerMessage, w: &mut pq_proto::client::FrontendWriter<_>| {
        w.write_copy_data_with(|buf| msg.encode(buf))
            .map_err(|e| format!("encoding {}: {e}", msg.name()))
    };
    send(
        ProposerMessage::Greeting(ProposerGreeting {
            tenant_id: args.tenant_id,
            timeline_id: args.timeline_id,
            mconf: Configuration::empty(),
            pg_version: args.pg_version,
            system_id: args.system_id,
            wal_seg_size: 16 * 1024 * 1024,
        }),
        &mut sk_w,
    )?;
    sk_w.flush().await.map_err(err("sending the greeting"))?;
    let term = match recv(&mut sk_r).await? {
        AcceptorMessage::Greeting(g) => g.term + 1,
        other => return Err(format!("expected AcceptorGreeting, got {}", other.name())),
    };
    send(
        ProposerMessage::VoteRequest(VoteRequest {
            generation: Generation::NONE,
            term,
        }),
        &mut sk_w,
    )?;
    sk_w.flush()
        .await
        .map_err(err("sending the vote request"))?;
    let vote = match recv(&mut sk_r).await? {
        AcceptorMessage::VoteResponse(v) if v.vote_given => v,
        other => return Err(format!("vote not given: {other:?}")),
    };
    let (start, mut history) = if vote.flush_lsn.is_valid() {
        (vote.flush_lsn, vote.term_history.0)
    } else {
        let start = args
            .start_lsn
            .ok_or("the timeline has no WAL yet: give --start-lsn")?;
        (start, Vec::new())
    };
    history.push(TermLsn::new(term, start));
    send(
        ProposerMessage::Elected(ProposerElected {
            generation: Generation::NONE,
            term,
            start_streaming_at: start,
            term_history: TermHistory(history),
        }),
        &mut sk_w,
    )?;
    sk_w.flush().await.map_err(err("sending ProposerElected"))?;
    info!(term, %start, "elected");

    // The primary side.
    let mut pg = ClientConnection::connect_tcp(&args.primary)
        .await
        .map_err(err("connecting to the primary"))?;
    pg.startup(
        &StartupParams::new()
            .with("user", "postgres")
            .with("replication", "true")
            .with("application_name", "test_wal_pusher"),
        None,
    )
    .await
    .map_err(err("primary startup"))?;
    pg.start_copy_both(&format!(
        "START_REPLICATION SLOT {} PHYSICAL {start}",
        args.slot
    ))
    .await
    .map_err(err("START_REPLICATION on the primary"))?;
    let (mut pg_r, mut pg_w) = pg.into_split();

    let mut next = start;
    let mut flush = Lsn::INVALID;
    let mut commit_sent = Lsn::INVALID;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            data = pg_r.read_copy_data(1 << 24) => {
                let data = data.map_err(err("reading from the primary"))?
                    .ok_or("the primary ended streaming")?;
                match ReplicationMessage::decode(&data).map_err(err("primary message"))? {
                    ReplicationMessage::XLogData(x) => {
                        if x.wal_start != next {
                            return Err(format!("the primary sent WAL at {}, expected {next}", x.wal_start));
                        }
                        for chunk in x.data.chunks(MAX_WAL_PAYLOAD) {
                            let end = Lsn(next.0 + chunk.len() as u64);
                            send(append(term, next, end, flush, Bytes::copy_from_slice(chunk)), &mut sk_w)?;
                            next = end;
                        }
                        commit_sent = flush;
                        sk_w.flush().await.map_err(err("sending WAL"))?;
                    }
                    ReplicationMessage::Keepalive(k) => {
                        if k.reply_requested {
                            status_update(&mut pg_w, flush).await?;
                        }
                    }
                }
            }
            reply = recv(&mut sk_r) => {
                match reply? {
                    AcceptorMessage::AppendResponse(r) => {
                        if r.term > term {
                            return Err(format!("deposed: the safekeeper is in term {}", r.term));
                        }
                        if r.flush_lsn > flush {
                            flush = r.flush_lsn;
                            status_update(&mut pg_w, flush).await?;
                        }
                        if flush > commit_sent {
                            // Tell the safekeeper its WAL is committed (quorum of one).
                            send(append(term, next, next, flush, Bytes::new()), &mut sk_w)?;
                            sk_w.flush().await.map_err(err("sending a heartbeat"))?;
                            commit_sent = flush;
                        }
                    }
                    other => return Err(format!("unexpected {}", other.name())),
                }
            }
            _ = tick.tick() => {
                info!(received = %next, flushed = %flush, "progress");
                status_update(&mut pg_w, flush).await?;
            }
        }
    }
}

fn append(term: u64, begin: Lsn, end: Lsn, commit: Lsn, wal: Bytes) -> ProposerMessage {
    ProposerMessage::AppendRequest(AppendRequest {
        h: AppendRequestHeader {
            generation: Generation::NONE,
            term,
            begin_lsn: begin,
            end_lsn: end,
            commit_lsn: commit,
            truncate_lsn: commit,
        },
        wal_data: wal,
    })
}

async fn recv(
    r: &mut pq_proto::client::BackendReader<tokio::net::tcp::OwnedReadHalf>,
) -> Result<AcceptorMessage, Error> {
    let data = r
        .read_copy_data(1 << 20)
        .await
        .map_err(err("reading from the safekeeper"))?
        .ok_or("the safekeeper closed the connection")?;
    AcceptorMessage::decode(&data).map_err(|e| format!("safekeeper message: {e}"))
}

async fn status_update(
    w: &mut pq_proto::client::FrontendWriter<tokio::net::tcp::OwnedWriteHalf>,
    flush: Lsn,
) -> Result<(), Error> {
    let msg = ReplicationFeedback::StandbyStatus(StandbyStatusUpdate {
        write_lsn: flush,
        flush_lsn: flush,
        apply_lsn: flush,
        reply_time: now_pg_timestamp(),
        reply_requested: false,
    });
    let mut buf = BytesMut::new();
    msg.encode(&mut buf);
    w.write_copy_data(&buf);
    w.flush().await.map_err(err("sending a status update"))
}
