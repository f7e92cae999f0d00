//! Prometheus metrics of the redo path.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Histogram, IntCounter, IntCounterVec, register_histogram, register_int_counter,
    register_int_counter_vec,
};

fn must<T>(r: prometheus::Result<T>, name: &str) -> T {
    r.unwrap_or_else(|e| panic!("registering metric {name}: {e}"))
}

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "pageserver_wal_redo_requests_total",
            "Page reconstructions, by outcome",
            &["outcome"]
        ),
        "pageserver_wal_redo_requests_total",
    )
});

static SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(
        register_histogram!(
            "pageserver_wal_redo_seconds",
            "Time to rebuild one page (all paths)",
            vec![
                0.00001, 0.00002, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 1.0, 10.0
            ]
        ),
        "pageserver_wal_redo_seconds",
    )
});

static RECORDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(
        register_histogram!(
            "pageserver_wal_redo_records",
            "Records applied per page reconstruction",
            vec![0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0]
        ),
        "pageserver_wal_redo_records",
    )
});

static FAST_PATH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "pageserver_wal_redo_fast_path_total",
            "Reconstructions done in Rust without a redo process, by kind",
            &["kind"]
        ),
        "pageserver_wal_redo_fast_path_total",
    )
});

static RESTARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "pageserver_wal_redo_process_restarts_total",
            "Redo processes replaced, by reason",
            &["reason"]
        ),
        "pageserver_wal_redo_process_restarts_total",
    )
});

static STARTS: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_wal_redo_process_starts_total",
            "Redo processes started"
        ),
        "pageserver_wal_redo_process_starts_total",
    )
});

pub(super) fn observe(elapsed: Duration, records: usize, ok: bool) {
    REQUESTS
        .with_label_values(&[if ok { "ok" } else { "error" }])
        .inc();
    SECONDS.observe(elapsed.as_secs_f64());
    RECORDS.observe(records as f64);
}

pub(super) fn fast_path(kind: &str) {
    FAST_PATH.with_label_values(&[kind]).inc();
}

pub(super) fn restart(reason: &str) {
    RESTARTS.with_label_values(&[reason]).inc();
}

pub(super) fn process_started() {
    STARTS.inc();
}

static RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_wal_redo_retries_total",
            "Requests retried because their process died under another request"
        ),
        "pageserver_wal_redo_retries_total",
    )
});

pub(super) fn retry() {
    RETRIES.inc();
}
