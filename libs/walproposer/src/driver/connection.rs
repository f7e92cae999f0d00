//! One `START_WAL_PUSH` connection to a safekeeper, as two tasks: a reader that decodes the
//! acceptor's messages into driver events, and a writer that encodes what the proposer
//! sends. They are separate so that a large write never stops us reading replies (the
//! safekeeper's replies could otherwise fill its queues while ours fill, and both sides
//! wait forever).
//!
//! Every connection has an id; the driver ignores events of connections it has dropped, so a
//! late message from an old connection can never be mistaken for the current one's.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pq_proto::client::ClientConnection;
use pq_proto::{ProtocolError, StartupParams};
use safekeeper_api::{AcceptorMessage, ProposerMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::{Event, SafekeepersConf};
use crate::SkId;

/// Most encoded bytes buffered per connection before they are flushed.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Largest acceptor message accepted (they are small; this is generous).
const MAX_ACCEPTOR_MESSAGE: usize = 1024 * 1024;

/// Why a connection ended, as the driver needs to tell the cases apart.
#[derive(Debug, Clone)]
pub struct ConnFailure {
    /// For logs and the final error message.
    pub message: String,
    /// The safekeeper refused in a way retrying will not fix (bad token, no such
    /// timeline, a different cluster): counts against reaching a quorum at all.
    pub permanent: bool,
}

impl ConnFailure {
    fn from_protocol(what: &str, e: &ProtocolError) -> ConnFailure {
        let permanent = match e {
            ProtocolError::Server(s) => {
                s.code.starts_with("28") // invalid authorization / password
                    || s.code == "42704" // undefined object: no such timeline
                    || s.code == "22023" // invalid parameter: mismatched cluster or options
            }
            ProtocolError::Auth(_) => true,
            _ => false,
        };
        ConnFailure {
            message: format!("{what}: {e}"),
            permanent,
        }
    }
}

/// The driver's handle on one connection; dropping it ends the connection.
#[derive(Debug)]
pub struct ConnHandle {
    /// The connection's id.
    pub id: u64,
    tx: mpsc::UnboundedSender<ProposerMessage>,
    task: JoinHandle<()>,
}

impl ConnHandle {
    /// Queues a message; a closed connection drops it (its end is reported separately).
    pub fn send(&self, msg: ProposerMessage) {
        let _ = self.tx.send(msg);
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a connection to safekeeper `sk` in the background; its progress arrives as
/// [`Event::Connected`], [`Event::Message`] and finally [`Event::Closed`].
pub fn spawn(
    sk: SkId,
    id: u64,
    conf: Arc<SafekeepersConf>,
    events: mpsc::UnboundedSender<Event>,
) -> ConnHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let result = run(sk, id, &conf, rx, &events).await;
        let failure = match result {
            Ok(()) => ConnFailure {
                message: "connection closed".to_string(),
                permanent: false,
            },
            Err(f) => f,
        };
        let _ = events.send(Event::Closed { sk, id, failure });
    });
    ConnHandle { id, tx, task }
}

async fn run(
    sk: SkId,
    id: u64,
    conf: &SafekeepersConf,
    mut rx: mpsc::UnboundedReceiver<ProposerMessage>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), ConnFailure> {
    let addr = &conf.addrs[sk.0];
    let mut conn = tokio::time::timeout(conf.connect_timeout, open(conf, addr, "walproposer"))
        .await
        .map_err(|_| ConnFailure {
            message: format!(
                "connecting to {addr}: timed out after {:?}",
                conf.connect_timeout
            ),
            permanent: false,
        })??;
    let query = format!(
        "START_WAL_PUSH (proto_version '3', allow_timeline_creation '{}')",
        conf.allow_timeline_creation
    );
    conn.start_copy_both(&query)
        .await
        .map_err(|e| ConnFailure::from_protocol("START_WAL_PUSH", &e))?;
    let _ = events.send(Event::Connected { sk, id });
    let (mut reader, mut writer) = conn.into_split();

    let mut writer_task = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let mut next = Some(msg);
            // Encode what is queued, up to a batch, then one flush: a whole window of WAL
            // queued for a slow safekeeper must not be copied into the write buffer at once
            // (it would stay allocated, a window per connection).
            while let Some(m) = next {
                writer
                    .write_copy_data_with(|buf: &mut BytesMut| m.encode(buf))
                    .map_err(|e| format!("encoding {}: {e}", m.name()))?;
                next = if writer.buffered() < WRITE_BATCH_BYTES {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            writer
                .flush()
                .await
                .map_err(|e| format!("sending to the safekeeper: {e}"))?;
        }
        Ok::<(), String>(())
    });
    let _abort_writer = AbortOnDrop(writer_task.abort_handle());

    loop {
        tokio::select! {
            data = reader.read_copy_data(MAX_ACCEPTOR_MESSAGE) => {
                let data = data
                    .map_err(|e| ConnFailure::from_protocol("reading from the safekeeper", &e))?
                    .ok_or_else(|| ConnFailure {
                        message: "the safekeeper closed the connection".to_string(),
                        permanent: false,
                    })?;
                let msg = AcceptorMessage::decode(&data).map_err(|e| ConnFailure {
                    message: format!("malformed message from the safekeeper: {e}"),
                    permanent: false,
                })?;
                if events.send(Event::Message { sk, id, msg }).is_err() {
                    return Ok(()); // the driver is gone
                }
            }
            w = &mut writer_task => {
                let message = match w {
                    Ok(Ok(())) => return Ok(()), // the driver dropped us
                    Ok(Err(e)) => e,
                    Err(e) => format!("the connection's writer failed: {e}"),
                };
                debug!(%sk, "writer ended: {message}");
                return Err(ConnFailure { message, permanent: false });
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects and authenticates to a safekeeper for this timeline (the token, if any, is
/// the password).
pub async fn open(
    conf: &SafekeepersConf,
    addr: &str,
    application_name: &str,
) -> Result<
    ClientConnection<tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf>,
    ConnFailure,
> {
    let mut conn = ClientConnection::connect_tcp(addr)
        .await
        .map_err(|e| ConnFailure::from_protocol(&format!("connecting to {addr}"), &e))?;
    let params =
        StartupParams::for_timeline(conf.ttid.tenant_id, conf.ttid.timeline_id, application_name);
    conn.startup(&params, conf.auth_token.as_deref())
        .await
        .map_err(|e| ConnFailure::from_protocol(&format!("logging in to {addr}"), &e))?;
    Ok(conn)
}

/// How long a connection attempt may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
