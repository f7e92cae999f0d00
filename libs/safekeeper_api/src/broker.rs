//! Broker heartbeats: what a safekeeper publishes about each active timeline, once a
//! second, on NATS.
//!
//! Subscribers are pageservers (choosing a safekeeper to stream from) and peer
//! safekeepers (commit LSN and horizons, choosing the WAL-backup uploader). The broker is
//! best-effort: a heartbeat may be lost or duplicated, so every field is a snapshot, never
//! a delta, and nothing durable depends on receiving one.
//!
//! The payload is JSON of [`SafekeeperTimelineInfo`] with an explicit `version`:
//! - additive changes (a new optional field) keep the version; decoders ignore unknown
//!   fields and default missing optional ones;
//! - incompatible changes bump it, and [`SafekeeperTimelineInfo::from_json`] refuses
//!   versions it does not know, so a mixed-version cluster fails loudly rather than
//!   misreading LSNs.
//!
//! Subjects: `strata.sk.<tenant_id>.<timeline_id>` ([`subject`]), ids in lower-case hex.

use serde::{Deserialize, Serialize};
use utils::{Lsn, NodeId, TenantId, TimelineId};

use crate::term::Term;

/// The heartbeat format version this crate writes and reads.
pub const HEARTBEAT_VERSION: u32 = 1;

/// Prefix of every safekeeper heartbeat subject.
pub const SUBJECT_PREFIX: &str = "strata.sk";

/// NATS wildcard subject matching every timeline's heartbeats.
pub const SUBJECT_ALL: &str = "strata.sk.>";

/// The subject a timeline's heartbeats are published on.
pub fn subject(tenant_id: TenantId, timeline_id: TimelineId) -> String {
    format!("{SUBJECT_PREFIX}.{tenant_id}.{timeline_id}")
}

/// NATS wildcard subject matching every timeline of one tenant.
pub fn tenant_subject(tenant_id: TenantId) -> String {
    format!("{SUBJECT_PREFIX}.{tenant_id}.*")
}

/// The tenant and timeline a heartbeat subject names, or `None` if it is not one.
pub fn parse_subject(subject: &str) -> Option<(TenantId, TimelineId)> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?.strip_prefix('.')?;
    let (tenant, timeline) = rest.split_once('.')?;
    Some((tenant.parse().ok()?, timeline.parse().ok()?))
}

/// A heartbeat payload that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// Not JSON of the expected shape.
    #[error("malformed safekeeper heartbeat: {0}")]
    Json(#[from] serde_json::Error),
    /// A version this build does not understand.
    #[error(
        "safekeeper heartbeat version {got} is not supported (this build reads {HEARTBEAT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version the payload declared.
        got: u32,
    },
}

/// One safekeeper's view of one timeline, as published to the broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SafekeeperTimelineInfo {
    /// Format version; [`HEARTBEAT_VERSION`] when written by this crate.
    pub version: u32,
    /// The publishing safekeeper.
    pub safekeeper_id: NodeId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The timeline.
    pub timeline_id: TimelineId,
    /// Highest term the safekeeper has voted in.
    pub term: Term,
    /// Term of its last WAL record; peers only adopt each other's commit LSN when equal.
    pub last_log_term: Term,
    /// End of its flushed WAL.
    pub flush_lsn: Lsn,
    /// Its commit LSN: pageservers stream up to here.
    pub commit_lsn: Lsn,
    /// End of the last WAL segment uploaded to object storage.
    pub backup_lsn: Lsn,
    /// What pageservers have made durable in object storage.
    pub remote_consistent_lsn: Lsn,
    /// WAL below this is on every safekeeper.
    pub peer_horizon_lsn: Lsn,
    /// Where this safekeeper's local WAL starts (older WAL only in object storage).
    pub local_start_lsn: Lsn,
    /// libpq address for WAL streaming, `host:port`.
    pub safekeeper_connstr: String,
    /// HTTP API address, `host:port`.
    pub http_connstr: String,
    /// Availability zone, if configured; pageservers prefer their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
}

impl SafekeeperTimelineInfo {
    /// The subject this heartbeat belongs on.
    pub fn subject(&self) -> String {
        subject(self.tenant_id, self.timeline_id)
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain fields with string/number leaves cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a payload, refusing versions other than [`HEARTBEAT_VERSION`].
    pub fn from_json(payload: &[u8]) -> Result<Self, HeartbeatError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly = serde_json::from_slice(payload)?;
        if v.version != HEARTBEAT_VERSION {
            return Err(HeartbeatError::UnsupportedVersion { got: v.version });
        }
        Ok(serde_json::from_slice(payload)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SafekeeperTimelineInfo {
        SafekeeperTimelineInfo {
            version: HEARTBEAT_VERSION,
            safekeeper_id: NodeId(2),
            tenant_id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            timeline_id: "fedcba9876543210fedcba9876543210".parse().unwrap(),
            term: 5,
            last_log_term: 4,
            flush_lsn: Lsn(0x0100_0100),
            commit_lsn: Lsn(0x0100_00f0),
            backup_lsn: Lsn(0x0100_0000),
            remote_consistent_lsn: Lsn(0x0100_0000),
            peer_horizon_lsn: Lsn(0x0100_0080),
            local_start_lsn: Lsn(0x0100_0028),
            safekeeper_connstr: "127.0.0.1:5454".into(),
            http_connstr: "127.0.0.1:7676".into(),
            availability_zone: None,
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "version": 1,
                "safekeeper_id": 2,
                "tenant_id": "0123456789abcdef0123456789abcdef",
                "timeline_id": "fedcba9876543210fedcba9876543210",
                "term": 5,
                "last_log_term": 4,
                "flush_lsn": "0/01000100",
                "commit_lsn": "0/010000F0",
                "backup_lsn": "0/01000000",
                "remote_consistent_lsn": "0/01000000",
                "peer_horizon_lsn": "0/01000080",
                "local_start_lsn": "0/01000028",
                "safekeeper_connstr": "127.0.0.1:5454",
                "http_connstr": "127.0.0.1:7676",
            })
        );
        assert_eq!(
            SafekeeperTimelineInfo::from_json(&sample().to_json()).unwrap(),
            sample()
        );
    }

    #[test]
    fn versions_and_additions() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["some_future_field"] = serde_json::json!(42);
        let parsed = SafekeeperTimelineInfo::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(parsed, sample());
        v["version"] = serde_json::json!(2);
        let e = SafekeeperTimelineInfo::from_json(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "safekeeper heartbeat version 2 is not supported (this build reads 1)"
        );
        assert!(matches!(
            SafekeeperTimelineInfo::from_json(b"{\"version\":1}"),
            Err(HeartbeatError::Json(_))
        ));
        assert!(SafekeeperTimelineInfo::from_json(b"garbage").is_err());
    }

    #[test]
    fn subjects() {
        let s = sample();
        assert_eq!(
            s.subject(),
            "strata.sk.0123456789abcdef0123456789abcdef.fedcba9876543210fedcba9876543210"
        );
        assert_eq!(
            parse_subject(&s.subject()),
            Some((s.tenant_id, s.timeline_id))
        );
        assert_eq!(parse_subject("strata.sk.xyz.abc"), None);
        assert_eq!(parse_subject("strata.skx.a.b"), None);
        assert_eq!(
            tenant_subject(s.tenant_id),
            "strata.sk.0123456789abcdef0123456789abcdef.*"
        );
    }
}
