//! Request and response bodies of the safekeeper's HTTP API.
//!
//! These are the single definition of the JSON the API speaks: the safekeeper's handlers,
//! the `strata` CLI and tests all use them, and utoipa's `ToSchema` turns them into the
//! OpenAPI document served at `/v1/openapi.json`, so the document cannot drift. LSNs are
//! `X/Y` strings and ids lower-case hex, as everywhere in Strata.

use serde::{Deserialize, Serialize};
use utils::{Lsn, NodeId, TenantId, TimelineId};

use crate::membership::Configuration;
use crate::proto::ServerInfo;
use crate::term::{Term, TermHistory};

/// PostgreSQL's default WAL segment size, used when a creation request omits it.
pub const DEFAULT_WAL_SEG_SIZE: u32 = 16 * 1024 * 1024;

fn default_wal_seg_size() -> u32 {
    DEFAULT_WAL_SEG_SIZE
}

/// `GET /v1/status`: who this safekeeper is (also the health check).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SafekeeperStatus {
    /// The node id.
    pub id: NodeId,
}

/// `POST /v1/tenant/timeline`: create a timeline explicitly (rather than on the first
/// proposer greeting), so it exists with a known start before any compute connects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineCreateRequest {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The timeline.
    pub timeline_id: TimelineId,
    /// `PG_VERSION_NUM` of the compute, e.g. 150007; only PostgreSQL 15 is supported.
    #[schema(minimum = 150000, maximum = 159999)]
    pub pg_version: u32,
    /// The cluster's system identifier; 0 (the default) = learn it from the first greeting.
    #[serde(default)]
    #[schema(schema_with = utils::schema::u64_schema)]
    pub system_id: u64,
    /// WAL segment size: a power of two from 1 MiB to 1 GiB; defaults to 16 MiB.
    #[serde(default = "default_wal_seg_size")]
    #[schema(schema_with = wal_seg_size_schema, default = 16777216)]
    pub wal_seg_size: u32,
    /// Where the timeline's WAL starts; its history starts as `[(0, start_lsn)]`. `0/0`
    /// leaves the start to the first elected proposer.
    #[schema(schema_with = start_lsn_schema)]
    pub start_lsn: Lsn,
    /// The membership configuration to create it with; absent = no membership management
    /// (generation 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mconf: Option<Configuration>,
}

/// The WAL segment sizes PostgreSQL allows (`initdb --wal-segsize`): powers of two from
/// 1 MiB to 1 GiB.
pub fn wal_seg_sizes() -> impl Iterator<Item = u32> {
    (20..=30).map(|bits| 1u32 << bits)
}

fn wal_seg_size_schema() -> utoipa::openapi::Object {
    utils::schema::unsigned(u64::from(u32::MAX))
        .description(Some("WAL segment size in bytes"))
        .enum_values(Some(wal_seg_sizes()))
        .build()
}

/// The OpenAPI pattern of a creation request's `start_lsn`: an `X/Y` LSN where a WAL
/// record could start whatever the segment size, i.e. 8-byte aligned and not inside a page
/// header (offsets 8 and 16 of any page; 24 and 32 of a page at a 1 MiB boundary, which is
/// a segment's first page, with its long header, when the segment starts there).
///
/// The server's own check (`is_possible_start_lsn`) knows the segment size, so it also
/// accepts offsets 24 and 32 of a 1 MiB-boundary page that does not start a segment; the
/// pattern cannot see the sibling field and leaves those out: every LSN it admits is
/// accepted. Regular expressions see hex digits, not bits, hence the case analysis:
/// the last three digits hold the page offset's low 12 bits and the fourth-last digit's
/// parity its 13th; the last five digits hold the offset within 1 MiB.
pub fn start_lsn_pattern() -> String {
    const HEX: &str = "[0-9a-fA-F]";
    const NONZERO: &str = "[1-9a-fA-F]";
    const ODD: &str = "[13579bdfBDF]";
    const ALIGNED: &str = "[08]";
    // Three last digits, aligned, that are neither a short header's inside (008, 010) nor
    // a long header's (018, 020): fine whatever comes before.
    let tail = format!("(?:{NONZERO}{HEX}{ALIGNED}|0[3-9a-fA-F]{ALIGNED}|000|028)");
    // Five last digits: a fine tail; 008/010 on an odd 4 KiB half (offset 4104+); 018/020
    // anywhere but the first page of a 1 MiB stretch.
    let five = format!(
        "(?:{HEX}{HEX}{tail}|{HEX}{ODD}(?:008|010)|(?:{NONZERO}{HEX}|0{NONZERO})(?:018|020))"
    );
    // The low part: five digits or more, or a shorter spelling of the same rules (the
    // missing leading digits are zeros).
    let low = format!(
        "(?:{HEX}{{0,3}}{five}|{HEX}{tail}|{ODD}(?:008|010)|{NONZERO}(?:018|020)|{tail}|[3-9a-fA-F]{ALIGNED}|00|28|0)"
    );
    format!("^{HEX}{{1,8}}/{low}$")
}

fn start_lsn_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(
            "PostgreSQL LSN in X/Y hex form where a WAL record can start: 8-byte aligned, \
             not inside a page header; 0/0 = decided by the first proposer",
        ))
        .pattern(Some(start_lsn_pattern()))
        .examples([serde_json::json!("0/169C3D8")])
        .build()
}

impl TimelineCreateRequest {
    /// The server facts the request carries.
    pub fn server_info(&self) -> ServerInfo {
        ServerInfo {
            pg_version: self.pg_version,
            system_id: self.system_id,
            wal_seg_size: self.wal_seg_size,
        }
    }
}

/// Where a connected walproposer is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProposerPhase {
    /// Greeted, not yet elected.
    Voting,
    /// Elected; streaming WAL.
    Streaming,
}

/// A walproposer connected to this safekeeper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WalProposerInfo {
    /// Connection number, unique within the process.
    pub conn_id: u64,
    /// The proposer's address.
    pub remote_addr: String,
    /// Where it is in the protocol.
    pub phase: ProposerPhase,
    /// The term it proposes in, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
}

/// What kind of client a walsender streams to (from its application name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WalSenderKind {
    /// A pageserver ingesting WAL (sends `'z'` feedback).
    Pageserver,
    /// A PostgreSQL standby (sends `'r'`/`'h'` replies).
    Standby,
    /// A walproposer or peer safekeeper reading WAL of a given term.
    Recovery,
}

/// A client streaming WAL from this safekeeper, with its last reported progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WalSenderInfo {
    /// Connection number, unique within the process.
    pub conn_id: u64,
    /// The client's address.
    pub remote_addr: String,
    /// Its `application_name`, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// Pageserver, standby or recovery.
    pub kind: WalSenderKind,
    /// Where streaming started.
    pub start_lsn: Lsn,
    /// How far WAL has been sent.
    pub sent_lsn: Lsn,
    /// The term the stream is pinned to (`START_REPLICATION … (term='N')`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    /// Last received LSN from pageserver feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_received_lsn: Option<Lsn>,
    /// Disk-consistent LSN from pageserver feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_consistent_lsn: Option<Lsn>,
    /// Remote-consistent LSN from pageserver feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_consistent_lsn: Option<Lsn>,
    /// Flush position from a standby's `'r'` reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_flush_lsn: Option<Lsn>,
    /// Apply position from a standby's `'r'` reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_apply_lsn: Option<Lsn>,
}

/// `GET /v1/tenant/{tenant_id}/timeline/{timeline_id}`: one timeline's consensus and WAL
/// positions, and who is connected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineStatus {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The timeline.
    pub timeline_id: TimelineId,
    /// Its membership configuration (generation 0 = none).
    pub mconf: Configuration,
    /// The server it belongs to.
    pub server: ServerInfo,
    /// Highest term voted in.
    pub term: Term,
    /// Term of the last WAL record.
    pub last_log_term: Term,
    /// The full stored term history (may run ahead of `flush_lsn`).
    pub term_history: TermHistory,
    /// End of flushed WAL (a record boundary).
    pub flush_lsn: Lsn,
    /// Quorum-committed WAL available locally.
    pub commit_lsn: Lsn,
    /// End of the last segment uploaded to object storage.
    pub backup_lsn: Lsn,
    /// What pageservers made durable in object storage.
    pub remote_consistent_lsn: Lsn,
    /// WAL below this is on every safekeeper.
    pub peer_horizon_lsn: Lsn,
    /// Where the timeline's WAL starts globally.
    pub timeline_start_lsn: Lsn,
    /// Where this safekeeper's WAL starts.
    pub local_start_lsn: Lsn,
    /// Connected walproposers.
    pub walproposers: Vec<WalProposerInfo>,
    /// Connected walsenders (pageservers, standbys, recovery).
    pub walsenders: Vec<WalSenderInfo>,
}

/// `POST …/term_bump`: raise the term so any current proposer is deposed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TermBumpRequest {
    /// Raise to at least this term; absent = current term + 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = utils::schema::optional_u64_schema)]
    pub term: Option<Term>,
}

/// Result of a term bump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TermBumpResponse {
    /// The term before.
    pub previous_term: Term,
    /// The term now.
    pub current_term: Term,
}

/// `PUT …/membership`: switch to a configuration if its generation is higher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MembershipSwitchRequest {
    /// The configuration to switch to.
    pub mconf: Configuration,
}

/// Result of a membership switch, with the position a migration driver syncs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MembershipSwitchResponse {
    /// The configuration before.
    pub previous_conf: Configuration,
    /// The configuration now (unchanged if the request's generation was not higher).
    pub current_conf: Configuration,
    /// Term of the last WAL record.
    pub last_log_term: Term,
    /// End of flushed WAL.
    pub flush_lsn: Lsn,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Generation;
    use crate::term::TermLsn;

    #[test]
    fn create_request_defaults() {
        let r: TimelineCreateRequest = serde_json::from_value(serde_json::json!({
            "tenant_id": "0123456789abcdef0123456789abcdef",
            "timeline_id": "fedcba9876543210fedcba9876543210",
            "pg_version": 150007,
            "start_lsn": "0/1000028",
        }))
        .unwrap();
        assert_eq!(r.system_id, 0);
        assert_eq!(r.wal_seg_size, DEFAULT_WAL_SEG_SIZE);
        assert_eq!(r.start_lsn, Lsn(0x0100_0028));
        assert_eq!(r.mconf, None);
        assert_eq!(r.server_info().pg_version, 150007);
    }

    #[test]
    fn status_json_shape() {
        let s = TimelineStatus {
            tenant_id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            timeline_id: "fedcba9876543210fedcba9876543210".parse().unwrap(),
            mconf: Configuration::new(Generation(1), vec![]),
            server: ServerInfo {
                pg_version: 150007,
                system_id: 7,
                wal_seg_size: DEFAULT_WAL_SEG_SIZE,
            },
            term: 3,
            last_log_term: 2,
            term_history: TermHistory(vec![TermLsn::new(2, Lsn(0x28))]),
            flush_lsn: Lsn(0x30),
            commit_lsn: Lsn(0x30),
            backup_lsn: Lsn(0),
            remote_consistent_lsn: Lsn(0),
            peer_horizon_lsn: Lsn(0),
            timeline_start_lsn: Lsn(0x28),
            local_start_lsn: Lsn(0x28),
            walproposers: vec![WalProposerInfo {
                conn_id: 1,
                remote_addr: "127.0.0.1:4000".into(),
                phase: ProposerPhase::Streaming,
                term: Some(3),
            }],
            walsenders: vec![],
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["term_history"],
            serde_json::json!([{"term": 2, "lsn": "0/00000028"}])
        );
        assert_eq!(v["walproposers"][0]["phase"], "streaming");
        let back: TimelineStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn schemas_are_generated() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(TimelineStatus::schema()).unwrap();
        let props = schema["properties"].as_object().unwrap();
        for field in ["term_history", "flush_lsn", "walsenders", "mconf"] {
            assert!(props.contains_key(field), "{field} missing from {schema}");
        }
    }
}
