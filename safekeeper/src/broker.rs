//! Broker heartbeats over NATS (publish and subscribe). Placeholder until the NATS client
//! is wired in: with `--broker-endpoint` the task only logs that heartbeats are off.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::background::BackgroundConf;
use crate::global_timelines::GlobalTimelines;

/// Runs until cancelled.
pub async fn run(
    _timelines: Arc<GlobalTimelines>,
    _conf: BackgroundConf,
    endpoint: String,
    cancel: CancellationToken,
) {
    info!(%endpoint, "broker heartbeats are not implemented yet");
    cancel.cancelled().await;
}
