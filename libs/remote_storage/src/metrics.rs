//! Prometheus metrics: requests, failures and latency per backend and operation.
//!
//! Recorded once per API call of a real backend (LocalFs, S3, Azure), not per HTTP request:
//! a paginated listing or a multipart upload counts as one call. Wrappers are not counted
//! separately, so a call retried three times shows as three calls of the backend. Download
//! latency is the time to the first byte (the stream is consumed by the caller).

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{HistogramVec, IntCounterVec};

use crate::Error;

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "remote_storage_requests_total",
        "Remote storage operations started, by backend and operation",
        &["backend", "op"]
    )
    .unwrap_or_else(|e| panic!("registering remote_storage_requests_total: {e}"))
});

static FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "remote_storage_request_failures_total",
        "Remote storage operations that failed, by backend, operation and error kind",
        &["backend", "op", "error"]
    )
    .unwrap_or_else(|e| panic!("registering remote_storage_request_failures_total: {e}"))
});

static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    prometheus::register_histogram_vec!(
        "remote_storage_request_duration_seconds",
        "Remote storage operation latency, by backend and operation",
        &["backend", "op"],
        vec![
            0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0
        ]
    )
    .unwrap_or_else(|e| panic!("registering remote_storage_request_duration_seconds: {e}"))
});

/// Runs `fut` as operation `op` of `backend`, recording the call, its latency and failure.
pub(crate) async fn metered<T>(
    backend: &'static str,
    op: &'static str,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    REQUESTS.with_label_values(&[backend, op]).inc();
    let started = Instant::now();
    let result = fut.await;
    LATENCY
        .with_label_values(&[backend, op])
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        FAILURES
            .with_label_values(&[backend, op, e.metric_label()])
            .inc();
    }
    result
}

/// Operations started so far for `backend`/`op` (tests use it to prove no request was sent).
pub fn requests_started(backend: &str, op: &str) -> u64 {
    REQUESTS.with_label_values(&[backend, op]).get()
}
