//! Prometheus metrics of the safekeeper's durable core.
//!
//! Per-timeline gauges carry `tenant_id` and `timeline_id` labels and are removed when the
//! timeline is deleted ([`remove_timeline_metrics`]); latency histograms and byte counters are
//! process-wide so their cardinality never grows with the number of timelines.

use std::sync::LazyLock;

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use utils::TenantTimelineId;

/// Buckets for disk operations: from 50 µs (page-cache writes) to 10 s (a stalled disk).
const DISK_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

fn must<T>(r: prometheus::Result<T>, name: &str) -> T {
    r.unwrap_or_else(|e| panic!("registering metric {name}: {e}"))
}

/// Time to write one batch of WAL bytes into segment files (without fsync).
pub static WRITE_WAL_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(
        prometheus::register_histogram!(
            "safekeeper_write_wal_seconds",
            "Seconds spent writing one batch of received WAL to segment files (no fsync)",
            DISK_BUCKETS.to_vec()
        ),
        "safekeeper_write_wal_seconds",
    )
});

/// Time of one fdatasync of a WAL segment.
pub static FLUSH_WAL_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(
        prometheus::register_histogram!(
            "safekeeper_flush_wal_seconds",
            "Seconds spent in fdatasync of WAL segment files",
            DISK_BUCKETS.to_vec()
        ),
        "safekeeper_flush_wal_seconds",
    )
});

/// Time to durably replace a control file.
pub static PERSIST_CONTROL_FILE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(
        prometheus::register_histogram!(
            "safekeeper_persist_control_file_seconds",
            "Seconds spent durably writing a timeline's control file",
            DISK_BUCKETS.to_vec()
        ),
        "safekeeper_persist_control_file_seconds",
    )
});

/// WAL bytes received from proposers and written to disk.
pub static WAL_RECEIVED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "safekeeper_wal_received_bytes_total",
            "WAL bytes received from proposers and written to segment files"
        ),
        "safekeeper_wal_received_bytes_total",
    )
});

/// Walproposers connected (`START_WAL_PUSH` sessions), over all timelines.
pub static WAL_PROPOSERS: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge!(
            "safekeeper_wal_proposers",
            "Connected walproposers (START_WAL_PUSH sessions) over all timelines"
        ),
        "safekeeper_wal_proposers",
    )
});

/// Walsenders streaming WAL (`START_REPLICATION` sessions), over all timelines.
pub static WAL_SENDERS: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge!(
            "safekeeper_wal_senders",
            "Connected WAL readers (START_REPLICATION sessions) over all timelines"
        ),
        "safekeeper_wal_senders",
    )
});

/// Timelines loaded and served.
pub static TIMELINES: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge!("safekeeper_timelines", "Timelines served"),
        "safekeeper_timelines",
    )
});

/// Timelines that failed to load and are not served.
pub static BROKEN_TIMELINES: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge!(
            "safekeeper_broken_timelines",
            "Timelines that failed to load and are not served"
        ),
        "safekeeper_broken_timelines",
    )
});

/// WAL segments removed because they fell below the removal horizon.
pub static WAL_SEGMENTS_REMOVED: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "safekeeper_wal_segments_removed_total",
            "WAL segments deleted below the removal horizon"
        ),
        "safekeeper_wal_segments_removed_total",
    )
});

/// libpq connections accepted, and queries received on them.
pub static PG_QUERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter_vec!(
            "safekeeper_pg_queries_received_total",
            "Commands received on the libpq port, by command",
            &["command"]
        ),
        "safekeeper_pg_queries_received_total",
    )
});

/// Broker heartbeats published and received, by result.
pub static BROKER_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter_vec!(
            "safekeeper_broker_messages_total",
            "Broker heartbeats, by direction and result",
            &["direction", "result"]
        ),
        "safekeeper_broker_messages_total",
    )
});

static FLUSH_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge_vec!(
            "safekeeper_flush_lsn",
            "End of the last complete WAL record fsynced on this safekeeper",
            &["tenant_id", "timeline_id"]
        ),
        "safekeeper_flush_lsn",
    )
});

static COMMIT_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge_vec!(
            "safekeeper_commit_lsn",
            "WAL position known to be committed (acknowledged by a quorum and held locally)",
            &["tenant_id", "timeline_id"]
        ),
        "safekeeper_commit_lsn",
    )
});

static ACCEPTOR_TERM: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge_vec!(
            "safekeeper_acceptor_term",
            "The highest term this safekeeper has voted for",
            &["tenant_id", "timeline_id"]
        ),
        "safekeeper_acceptor_term",
    )
});

fn labels(ttid: &TenantTimelineId) -> [String; 2] {
    [ttid.tenant_id.to_string(), ttid.timeline_id.to_string()]
}

/// The per-timeline flush LSN gauge.
pub fn flush_lsn_gauge(ttid: &TenantTimelineId) -> IntGauge {
    FLUSH_LSN.with_label_values(&labels(ttid))
}

/// The per-timeline commit LSN gauge.
pub fn commit_lsn_gauge(ttid: &TenantTimelineId) -> IntGauge {
    COMMIT_LSN.with_label_values(&labels(ttid))
}

/// The per-timeline acceptor term gauge.
pub fn term_gauge(ttid: &TenantTimelineId) -> IntGauge {
    ACCEPTOR_TERM.with_label_values(&labels(ttid))
}

/// Sets an LSN gauge; LSNs above `i64::MAX` (never reached in practice) saturate.
pub fn set_lsn(gauge: &IntGauge, lsn: utils::Lsn) {
    gauge.set(i64::try_from(lsn.0).unwrap_or(i64::MAX));
}

/// Drops a deleted timeline's gauges so they stop being exported.
pub fn remove_timeline_metrics(ttid: &TenantTimelineId) {
    let l = labels(ttid);
    let l = [l[0].as_str(), l[1].as_str()];
    for vec in [&*FLUSH_LSN, &*COMMIT_LSN, &*ACCEPTOR_TERM] {
        // Absent labels are fine: the timeline may never have reported.
        let _ = vec.remove_label_values(&l);
    }
}

/// Registers every process-wide metric now, so `/metrics` lists them (at zero) from the
/// start rather than from their first use.
pub fn register_all() {
    LazyLock::force(&WRITE_WAL_SECONDS);
    LazyLock::force(&FLUSH_WAL_SECONDS);
    LazyLock::force(&PERSIST_CONTROL_FILE_SECONDS);
    LazyLock::force(&WAL_RECEIVED_BYTES);
    LazyLock::force(&WAL_PROPOSERS);
    LazyLock::force(&WAL_SENDERS);
    LazyLock::force(&TIMELINES);
    LazyLock::force(&BROKEN_TIMELINES);
    LazyLock::force(&WAL_SEGMENTS_REMOVED);
    LazyLock::force(&PG_QUERIES);
    LazyLock::force(&BROKER_MESSAGES);
}
