//! Prometheus metrics of the walproposer, served at `/metrics` when `--listen-http` is
//! given. LSNs are exported as byte positions (gauges), so lags are differences.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge};

fn must<T>(r: prometheus::Result<T>, name: &str) -> T {
    r.unwrap_or_else(|e| panic!("registering metric {name}: {e}"))
}

/// The term this proposer campaigns in or won.
pub static TERM: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge!("walproposer_term", "The term campaigned in or won"),
        "walproposer_term",
    )
});

/// The quorum commit LSN (what is reported to Postgres as flushed).
pub static COMMIT_LSN: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge!(
            "walproposer_commit_lsn",
            "The quorum commit LSN, as a byte position"
        ),
        "walproposer_commit_lsn",
    )
});

/// The end of the WAL received from Postgres.
pub static RECEIVED_LSN: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge!(
            "walproposer_received_lsn",
            "The end of the WAL received from Postgres, as a byte position"
        ),
        "walproposer_received_lsn",
    )
});

/// WAL bytes received from Postgres.
pub static WAL_RECEIVED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "walproposer_wal_received_bytes_total",
            "WAL bytes received from Postgres"
        ),
        "walproposer_wal_received_bytes_total",
    )
});

/// Safekeepers with an open connection.
pub static SAFEKEEPERS_CONNECTED: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge!(
            "walproposer_safekeepers_connected",
            "Safekeepers with an open START_WAL_PUSH connection"
        ),
        "walproposer_safekeepers_connected",
    )
});

/// Safekeeper connections that ended or failed.
pub static SAFEKEEPER_DISCONNECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "walproposer_safekeeper_disconnects_total",
            "Safekeeper connections that failed or ended"
        ),
        "walproposer_safekeeper_disconnects_total",
    )
});

/// Recovery reads, by result (`ok`, `error`).
pub static RECOVERY_FETCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter_vec!(
            "walproposer_recovery_fetches_total",
            "Reads of WAL for lagging safekeepers, by result",
            &["result"]
        ),
        "walproposer_recovery_fetches_total",
    )
});

/// An LSN as a gauge value.
pub fn lsn_value(lsn: utils::Lsn) -> i64 {
    i64::try_from(lsn.0).unwrap_or(i64::MAX)
}

/// Safekeepers whose log position could not be read before a campaign (they answered
/// `SHOW strata_timeline_position` with an error: not Strata safekeepers).
pub static POSITION_CHECK_SKIPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "walproposer_position_check_skipped_total",
            "Safekeepers left out of the pre-campaign no-fork check because SHOW strata_timeline_position failed"
        ),
        "walproposer_position_check_skipped_total",
    )
});
