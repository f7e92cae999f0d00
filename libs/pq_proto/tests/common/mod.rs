//! A tiny safekeeper-like server for the tests: serves the replication commands with
//! canned answers, and in START_WAL_PUSH mode answers each proposer greeting.

#![allow(dead_code)]

use bytes::BytesMut;
use pq_proto::messages::FieldDescription;
use pq_proto::{
    BeMessage, FeMessage, Handshake, HandshakeConfig, ProtocolError, ServerConnection, SqlState,
};
use safekeeper_api::membership::Configuration;
use safekeeper_api::proto::{AcceptorGreeting, MAX_APPEND_REQUEST_SIZE};
use safekeeper_api::{AcceptorMessage, ProposerMessage, ReplicationCommand};
use tokio::io::{AsyncRead, AsyncWrite};
use utils::NodeId;

/// What the server saw, for assertions.
#[derive(Debug, Default)]
pub struct Seen {
    pub handshake: Option<Handshake>,
    pub queries: Vec<String>,
    pub proposer_messages: Vec<ProposerMessage>,
}

pub async fn serve<R, W>(
    mut conn: ServerConnection<R, W>,
    config: HandshakeConfig<'_>,
) -> (Seen, Result<(), ProtocolError>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut seen = Seen::default();
    let result = serve_inner(&mut conn, config, &mut seen).await;
    (seen, result)
}

async fn serve_inner<R, W>(
    conn: &mut ServerConnection<R, W>,
    config: HandshakeConfig<'_>,
    seen: &mut Seen,
) -> Result<(), ProtocolError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hs = conn.handshake(&config).await?;
    let ready = matches!(hs, Handshake::Ready { .. });
    seen.handshake = Some(hs);
    if !ready {
        return Ok(());
    }
    loop {
        let Some(msg) = conn.read_message(64 * 1024).await? else {
            return Ok(());
        };
        let query = match msg {
            FeMessage::Query(q) => q,
            FeMessage::Terminate => return Ok(()),
            other => {
                return Err(ProtocolError::Unexpected {
                    got: other.name(),
                    expected: "Query",
                });
            }
        };
        seen.queries.push(query.clone());
        match ReplicationCommand::parse(&query) {
            Ok(ReplicationCommand::IdentifySystem) => {
                conn.write_result_set(
                    &[
                        FieldDescription::text("systemid"),
                        FieldDescription::int4("timeline"),
                        FieldDescription::text("xlogpos"),
                        FieldDescription::text("dbname"),
                    ],
                    &[&[
                        Some(b"7000000000000001"),
                        Some(b"1"),
                        Some(b"0/1000028"),
                        None,
                    ]],
                    "IDENTIFY_SYSTEM",
                );
                conn.write_message(&BeMessage::ReadyForQuery);
            }
            Ok(ReplicationCommand::Show { name }) => {
                conn.write_result_set(
                    &[FieldDescription::text(&name)],
                    &[&[Some(b"16MB")]],
                    "SHOW",
                );
                conn.write_message(&BeMessage::ReadyForQuery);
            }
            Ok(ReplicationCommand::Set { .. }) => {
                conn.write_message(&BeMessage::CommandComplete("SET"));
                conn.write_message(&BeMessage::ReadyForQuery);
            }
            Ok(ReplicationCommand::StartWalPush { .. }) => {
                conn.write_message(&BeMessage::CopyBothResponse);
                conn.flush().await?;
                return wal_push(conn, seen).await;
            }
            Ok(other) => {
                conn.write_error_and_ready(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    &format!("not in this test: {other:?}"),
                );
            }
            Err(e) => conn.write_error_and_ready(SqlState::SYNTAX_ERROR, &e.to_string()),
        }
        conn.flush().await?;
    }
}

async fn wal_push<R, W>(
    conn: &mut ServerConnection<R, W>,
    seen: &mut Seen,
) -> Result<(), ProtocolError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let Some(msg) = conn.read_message(MAX_APPEND_REQUEST_SIZE).await? else {
            return Ok(());
        };
        let data = match msg {
            FeMessage::CopyData(d) => d,
            FeMessage::CopyDone | FeMessage::Terminate => return Ok(()),
            other => {
                return Err(ProtocolError::Unexpected {
                    got: other.name(),
                    expected: "CopyData",
                });
            }
        };
        let pm = match ProposerMessage::decode(&data) {
            Ok(m) => m,
            Err(e) => {
                conn.write_message(&BeMessage::ErrorResponse {
                    code: SqlState::PROTOCOL_VIOLATION,
                    message: &e.to_string(),
                    fatal: true,
                });
                conn.flush().await?;
                return Err(ProtocolError::malformed("proposer message", e.to_string()));
            }
        };
        if let ProposerMessage::Greeting(g) = &pm {
            let reply = AcceptorMessage::Greeting(AcceptorGreeting {
                node_id: NodeId(1),
                mconf: Configuration {
                    generation: g.mconf.generation,
                    ..Configuration::empty()
                },
                term: 42,
            });
            conn.write_copy_data_with(|b: &mut BytesMut| reply.encode(b))
                .map_err(|e| ProtocolError::malformed("reply", e.to_string()))?;
            conn.flush().await?;
        }
        seen.proposer_messages.push(pm);
    }
}
