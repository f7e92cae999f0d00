//! Prometheus metrics of the engine (the redo pool has its own, `walredo::metrics`).

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, register_histogram,
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec,
};

fn must<T>(r: prometheus::Result<T>, name: &str) -> T {
    r.unwrap_or_else(|e| panic!("registering metric {name}: {e}"))
}

const LATENCY_BUCKETS: &[f64] = &[
    0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1.0, 10.0,
];

/// `pageserver_last_record_lsn{tenant_id, timeline_id}`.
pub static LAST_RECORD_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        register_int_gauge_vec!(
            "pageserver_last_record_lsn",
            "End of the last ingested WAL record",
            &["tenant_id", "timeline_id"]
        ),
        "pageserver_last_record_lsn",
    )
});

/// `pageserver_disk_consistent_lsn{tenant_id, timeline_id}`.
pub static DISK_CONSISTENT_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        register_int_gauge_vec!(
            "pageserver_disk_consistent_lsn",
            "Everything at or below this LSN is in fsynced layer files",
            &["tenant_id", "timeline_id"]
        ),
        "pageserver_disk_consistent_lsn",
    )
});

/// `pageserver_wal_ingest_records_total`.
pub static INGEST_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_wal_ingest_records_total",
            "WAL records ingested"
        ),
        "pageserver_wal_ingest_records_total",
    )
});

/// `pageserver_wal_ingest_bytes_total`.
pub static INGEST_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_wal_ingest_bytes_total",
            "WAL bytes received by walreceivers"
        ),
        "pageserver_wal_ingest_bytes_total",
    )
});

/// `pageserver_wait_lsn_seconds`.
pub static WAIT_LSN_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(
        register_histogram!(
            "pageserver_wait_lsn_seconds",
            "Time reads waited for WAL to arrive",
            LATENCY_BUCKETS.to_vec()
        ),
        "pageserver_wait_lsn_seconds",
    )
});

/// `pageserver_getpage_seconds{outcome}`.
pub static GETPAGE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    must(
        register_histogram_vec!(
            "pageserver_getpage_seconds",
            "GetPage@LSN latency, by outcome (ok, not_found, error)",
            &["outcome"],
            LATENCY_BUCKETS.to_vec()
        ),
        "pageserver_getpage_seconds",
    )
});

/// `pageserver_layers{kind}`: layers added since start (loaded or written).
pub static LAYERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        register_int_gauge_vec!(
            "pageserver_layers",
            "Layer files held, by kind (delta, image)",
            &["kind"]
        ),
        "pageserver_layers",
    )
});

/// `pageserver_layer_bytes{kind}`.
pub static LAYER_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        register_int_gauge_vec!(
            "pageserver_layer_bytes",
            "Bytes of layer files held, by kind",
            &["kind"]
        ),
        "pageserver_layer_bytes",
    )
});

/// `pageserver_flush_seconds`.
pub static FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(
        register_histogram!(
            "pageserver_flush_seconds",
            "Time to write a frozen layer out and persist the metadata",
            vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0]
        ),
        "pageserver_flush_seconds",
    )
});

/// `pageserver_walreceiver_switches_total`.
pub static WALRECEIVER_SWITCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_walreceiver_switches_total",
            "Times a walreceiver connected to a different safekeeper"
        ),
        "pageserver_walreceiver_switches_total",
    )
});

/// `pageserver_page_service_requests_total{kind, outcome}`.
pub static PAGE_SERVICE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "pageserver_page_service_requests_total",
            "Page service requests, by kind and outcome",
            &["kind", "outcome"]
        ),
        "pageserver_page_service_requests_total",
    )
});

/// `pageserver_basebackups_total{result}`: basebackups streamed, by outcome.
pub static BASEBACKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "pageserver_basebackups_total",
            "Basebackups streamed, by result (ok, error)",
            &["result"]
        ),
        "pageserver_basebackups_total",
    )
});

/// `pageserver_basebackup_bytes_total`: tar bytes of completed basebackups.
pub static BASEBACKUP_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_basebackup_bytes_total",
            "Tar bytes (before compression) of completed basebackups"
        ),
        "pageserver_basebackup_bytes_total",
    )
});

/// `pageserver_basebackup_seconds`: time to stream a completed basebackup.
pub static BASEBACKUP_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(
        register_histogram!(
            "pageserver_basebackup_seconds",
            "Time to stream a completed basebackup",
            vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0
            ]
        ),
        "pageserver_basebackup_seconds",
    )
});

/// `pageserver_tenant_synthetic_size_bytes{tenant_id}`: the last calculated synthetic size.
pub static TENANT_SYNTHETIC_SIZE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        register_int_gauge_vec!(
            "pageserver_tenant_synthetic_size_bytes",
            "The tenant's synthetic size at its last calculation",
            &["tenant_id"]
        ),
        "pageserver_tenant_synthetic_size_bytes",
    )
});

/// Records a tenant's synthetic size (nothing for `None`, an inputs-only answer).
pub fn set_synthetic_size(tenant_id: utils::TenantId, size: Option<u64>) {
    if let Some(size) = size {
        TENANT_SYNTHETIC_SIZE
            .with_label_values(&[&tenant_id.to_string()])
            .set(i64::try_from(size).unwrap_or(i64::MAX));
    }
}

/// Forgets a deleted tenant's synthetic size.
pub fn remove_synthetic_size(tenant_id: utils::TenantId) {
    let _ = TENANT_SYNTHETIC_SIZE.remove_label_values(&[&tenant_id.to_string()]);
}

/// `pageserver_remote_operations_queued{kind}`: remote operations queued or running, over
/// every timeline's upload queue.
pub static REMOTE_QUEUE_DEPTH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        register_int_gauge_vec!(
            "pageserver_remote_operations_queued",
            "Remote operations queued or running in the upload queues",
            &["kind"]
        ),
        "pageserver_remote_operations_queued",
    )
});

/// `pageserver_remote_operation_seconds{kind}`: one operation, retries included.
pub static REMOTE_OP_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    must(
        register_histogram_vec!(
            "pageserver_remote_operation_seconds",
            "Time of one remote operation of the upload queue, retries included",
            &["kind"],
            vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0]
        ),
        "pageserver_remote_operation_seconds",
    )
});

/// `pageserver_remote_operation_failures_total{kind}`: failed attempts (each is retried).
pub static REMOTE_OP_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "pageserver_remote_operation_failures_total",
            "Failed attempts of remote operations (each is retried)",
            &["kind"]
        ),
        "pageserver_remote_operation_failures_total",
    )
});

/// `pageserver_remote_upload_bytes_total`: layer and index bytes uploaded.
pub static REMOTE_UPLOAD_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_remote_upload_bytes_total",
            "Bytes of layers and indexes uploaded to remote storage"
        ),
        "pageserver_remote_upload_bytes_total",
    )
});

/// `pageserver_remote_consistent_lsn{tenant_id, timeline_id}`: the uploaded index's
/// `disk_consistent_lsn` (what object storage holds).
pub static REMOTE_CONSISTENT_LSN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        register_int_gauge_vec!(
            "pageserver_remote_consistent_lsn",
            "Everything at or below this LSN is in object storage",
            &["tenant_id", "timeline_id"]
        ),
        "pageserver_remote_consistent_lsn",
    )
});

/// `pageserver_deletion_queue_lists`: durable deletion lists not yet executed or dropped.
pub static DELETION_QUEUE_LISTS: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        register_int_gauge!(
            "pageserver_deletion_queue_lists",
            "Deletion lists waiting for validation or execution"
        ),
        "pageserver_deletion_queue_lists",
    )
});

/// `pageserver_deletion_queue_validation_failures_total`: validate upcalls that failed
/// (the lists wait for the next round).
pub static DELETION_QUEUE_VALIDATION_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_deletion_queue_validation_failures_total",
            "Generation validations of the deletion queue that failed"
        ),
        "pageserver_deletion_queue_validation_failures_total",
    )
});

/// `pageserver_deletion_queue_dropped_lists_total`: lists dropped because their
/// generation was stale.
pub static DELETION_QUEUE_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_deletion_queue_dropped_lists_total",
            "Deletion lists dropped because their generation was no longer current"
        ),
        "pageserver_deletion_queue_dropped_lists_total",
    )
});

/// `pageserver_deletion_queue_deleted_objects_total`: objects the deletion queue deleted.
pub static DELETION_QUEUE_DELETED_OBJECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_deletion_queue_deleted_objects_total",
            "Remote objects deleted by the deletion queue"
        ),
        "pageserver_deletion_queue_deleted_objects_total",
    )
});

/// `pageserver_layer_evictions_total`: layers evicted from the local disk (kept in object
/// storage).
pub static LAYER_EVICTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_layer_evictions_total",
            "Layers evicted from the local disk"
        ),
        "pageserver_layer_evictions_total",
    )
});

/// `pageserver_layer_downloads_total{outcome}`: on-demand layer downloads.
pub static LAYER_DOWNLOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "pageserver_layer_downloads_total",
            "On-demand layer downloads, by outcome",
            &["outcome"]
        ),
        "pageserver_layer_downloads_total",
    )
});

/// `pageserver_layer_download_bytes_total`.
pub static LAYER_DOWNLOAD_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_layer_download_bytes_total",
            "Bytes of layers downloaded on demand"
        ),
        "pageserver_layer_download_bytes_total",
    )
});

/// `pageserver_layer_download_seconds`: one on-demand download, verified and in place.
pub static LAYER_DOWNLOAD_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    must(
        register_histogram!(
            "pageserver_layer_download_seconds",
            "Time of an on-demand layer download",
            LATENCY_BUCKETS.to_vec()
        ),
        "pageserver_layer_download_seconds",
    )
});

/// `pageserver_disk_usage_evicted_bytes_total`: bytes of layers evicted because the disk
/// was too full.
pub static DISK_USAGE_EVICTED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "pageserver_disk_usage_evicted_bytes_total",
            "Bytes of layers evicted under disk pressure"
        ),
        "pageserver_disk_usage_evicted_bytes_total",
    )
});
