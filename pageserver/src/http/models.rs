//! Request and response bodies of the pageserver's HTTP API.

use serde::{Deserialize, Serialize};
use utils::{Lsn, TenantId, TimelineId};

use crate::config::{TenantConfig, TenantConfigOverrides};
use crate::timeline::WalReceiverStatus;

pub use pageserver_api::openapi::{HexId, LsnString};

/// `POST /v1/tenant`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCreateRequest {
    /// The id (a new random one when absent).
    #[schema(value_type = Option<HexId>)]
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// Config overrides (keys of `[tenant_config]`).
    #[serde(default)]
    pub config: Option<TenantConfigOverrides>,
}

/// A tenant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantInfo {
    /// Its id.
    #[schema(value_type = HexId)]
    pub id: TenantId,
    /// `Loading`, `Active`, `Stopping` or `Broken`.
    pub state: String,
    /// Why it is broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_reason: Option<String>,
    /// Number of timelines.
    pub timelines: usize,
    /// The attachment generation its remote objects carry.
    pub generation: u32,
}

/// `GET /v1/tenant/{tenant_id}/config`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantConfigResponse {
    /// The tenant's own settings.
    pub overrides: TenantConfigOverrides,
    /// What is in force (defaults with the overrides applied).
    pub effective: TenantConfig,
}

/// `POST /v1/tenant/{tenant_id}/timeline`: bootstrap (no ancestor, no import), branch
/// (`ancestor_timeline_id`) or import (`import_pgdata`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimelineCreateRequest {
    /// The new timeline's id.
    #[schema(value_type = HexId)]
    pub new_timeline_id: TimelineId,
    /// Branch from this timeline.
    #[serde(default)]
    #[schema(value_type = Option<HexId>)]
    pub ancestor_timeline_id: Option<TimelineId>,
    /// The branch point (default: the ancestor's last record LSN).
    #[serde(default)]
    #[schema(value_type = Option<LsnString>)]
    pub ancestor_start_lsn: Option<Lsn>,
    /// PostgreSQL major version; only 15.
    #[serde(default, deserialize_with = "crate::config::opt_int")]
    #[schema(minimum = 15, maximum = 15)]
    pub pg_version: Option<u32>,
    /// Import this cleanly stopped PostgreSQL 15 data directory (an absolute path on
    /// the pageserver's machine).
    #[serde(default)]
    pub import_pgdata: Option<String>,
}

/// `POST …/timeline` as the OpenAPI document describes it: exactly one of the three forms.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TimelineCreateSchema {
    /// Run initdb and import the result.
    Bootstrap(BootstrapRequest),
    /// Branch from an ancestor.
    Branch(BranchRequest),
    /// Import a stopped data directory.
    Import(ImportRequest),
}

/// Bootstrap form.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapRequest {
    /// The new timeline's id.
    pub new_timeline_id: HexId,
    /// PostgreSQL major version; only 15.
    #[schema(minimum = 15, maximum = 15)]
    pub pg_version: Option<u32>,
}

/// Branch form.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchRequest {
    /// The new timeline's id.
    pub new_timeline_id: HexId,
    /// Branch from this timeline.
    pub ancestor_timeline_id: HexId,
    /// The branch point (default: the ancestor's last record LSN).
    pub ancestor_start_lsn: Option<LsnString>,
    /// PostgreSQL major version; only 15.
    #[schema(minimum = 15, maximum = 15)]
    pub pg_version: Option<u32>,
}

/// Import form.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The new timeline's id.
    pub new_timeline_id: HexId,
    /// An absolute path, on the pageserver's machine, to a cleanly stopped PostgreSQL 15
    /// data directory.
    #[schema(pattern = "^/")]
    pub import_pgdata: String,
    /// PostgreSQL major version; only 15.
    #[schema(minimum = 15, maximum = 15)]
    pub pg_version: Option<u32>,
}

/// A timeline's state and positions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineInfo {
    /// The tenant.
    #[schema(value_type = HexId)]
    pub tenant_id: TenantId,
    /// The timeline.
    #[schema(value_type = HexId)]
    pub timeline_id: TimelineId,
    /// `Loading`, `Active`, `Stopping` or `Broken`.
    pub state: String,
    /// Why it is broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_reason: Option<String>,
    /// End of the last ingested record: readable up to here.
    #[schema(value_type = LsnString)]
    pub last_record_lsn: Lsn,
    /// Start of that record.
    #[schema(value_type = Option<LsnString>)]
    pub prev_record_lsn: Option<Lsn>,
    /// Everything at or below is in fsynced layer files.
    #[schema(value_type = LsnString)]
    pub disk_consistent_lsn: Lsn,
    /// Everything at or below is in object storage (equal to disk_consistent_lsn until
    /// object storage is configured).
    #[schema(value_type = LsnString)]
    pub remote_consistent_lsn: Lsn,
    /// The parent timeline.
    #[schema(value_type = Option<HexId>)]
    pub ancestor_timeline_id: Option<TimelineId>,
    /// The branch point.
    #[schema(value_type = Option<LsnString>)]
    pub ancestor_lsn: Option<Lsn>,
    /// Where the timeline's own history starts.
    #[schema(value_type = LsnString)]
    pub initdb_lsn: Lsn,
    /// PostgreSQL major version.
    pub pg_version: u32,
    /// Σ relation sizes at last_record_lsn, in bytes (none when not active, or when it
    /// would need evicted layers downloaded).
    pub current_logical_size: Option<u64>,
    /// The walreceiver's view.
    pub walreceiver: WalReceiverStatus,
}

/// One layer in `GET …/layer`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LayerInfo {
    /// The file name (empty for in-memory layers).
    pub name: String,
    /// `delta`, `image` or `in_memory`.
    pub kind: String,
    /// First key (36 hex digits).
    pub key_start: String,
    /// End key (exclusive).
    pub key_end: String,
    /// First LSN.
    #[schema(value_type = LsnString)]
    pub lsn_start: Lsn,
    /// End LSN (exclusive; open in-memory layers: none).
    #[schema(value_type = Option<LsnString>)]
    pub lsn_end: Option<Lsn>,
    /// Bytes.
    pub size: u64,
    /// Whether its file is on the local disk (false: evicted, in object storage only,
    /// downloaded on the first read). None for in-memory layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resident: Option<bool>,
}

/// `GET …/layer`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LayerList {
    /// Newest first.
    pub layers: Vec<LayerInfo>,
}

/// `?lsn=` of the debug reads.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AtLsn {
    /// Read at this LSN (default: the last record LSN).
    #[param(value_type = Option<String>, pattern = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")]
    pub lsn: Option<Lsn>,
}

/// `GET …/getpage`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GetPageQuery {
    /// Tablespace OID.
    pub spcnode: u32,
    /// Database OID.
    pub dbnode: u32,
    /// Relation file node.
    pub relnode: u32,
    /// Fork: 0 main, 1 fsm, 2 vm, 3 init.
    #[param(maximum = 3)]
    pub forknum: u8,
    /// Block number.
    pub blkno: u32,
    /// Read at this LSN (default: the last record LSN).
    #[param(value_type = Option<String>, pattern = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")]
    pub lsn: Option<Lsn>,
}

/// `GET …/basebackup`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BasebackupQuery {
    /// The data directory's LSN (default: the last record LSN); waited for up to the
    /// configured wait_lsn_timeout. A record boundary: 8-byte aligned, so the last hex
    /// digit is 0 or 8.
    #[param(value_type = Option<String>, pattern = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{0,7}[08]$")]
    pub lsn: Option<Lsn>,
    /// gzip the tar stream.
    pub gzip: Option<bool>,
}

/// `GET …/slru_segment`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SlruQuery {
    /// `clog`, `multixact_offsets` or `multixact_members`.
    #[param(pattern = "^(clog|multixact_offsets|multixact_members)$")]
    pub kind: String,
    /// Segment number.
    pub segno: u32,
    /// Read at this LSN (default: the last record LSN).
    #[param(value_type = Option<String>, pattern = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")]
    pub lsn: Option<Lsn>,
}

/// `GET …/wait_lsn`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitLsnQuery {
    /// Wait until the last record LSN reaches this.
    #[param(value_type = String, pattern = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")]
    pub lsn: Lsn,
    /// How long to wait (`10s`, `2m`; default: the configured wait_lsn_timeout; at most the
    /// configured wait_lsn_max_timeout).
    #[param(pattern = "^[0-9]+(ms|s|m)$")]
    pub timeout: Option<String>,
}

/// A database directory.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DbEntry {
    /// Tablespace OID.
    pub spcnode: u32,
    /// Database OID (0: the shared catalogs).
    pub dbnode: u32,
}

/// A relation fork.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RelEntry {
    /// Tablespace OID.
    pub spcnode: u32,
    /// Database OID.
    pub dbnode: u32,
    /// Relation file node.
    pub relnode: u32,
    /// Fork.
    pub forknum: u8,
    /// Size in blocks.
    pub nblocks: u32,
}

/// `GET …/relations`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RelationList {
    /// The LSN read at.
    #[schema(value_type = LsnString)]
    pub lsn: Lsn,
    /// Database directories.
    pub databases: Vec<DbEntry>,
    /// Relation forks.
    pub relations: Vec<RelEntry>,
}

/// `GET /v1/tenant/{tenant_id}/synthetic_size`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSizeQuery {
    /// Gather the inputs (logical sizes included) without calculating.
    pub inputs_only: Option<bool>,
    /// Calculate as if the PITR interval were this, when shorter than the tenant's (`0s`,
    /// `10m`, `1h`, `7d`: a number and one unit of ms, s, m, h, d).
    #[param(pattern = "^[0-9]{1,9}(ms|s|m|h|d)$")]
    pub retention_period: Option<String>,
}

/// The synthetic size and everything it follows from (`tenant::size::SyntheticSize`):
/// `{id, size, segment_sizes: [{method, accum_size}], inputs: {model, points, timelines}}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyntheticSizeBody {
    /// The tenant.
    #[schema(value_type = HexId)]
    pub id: TenantId,
    /// Bytes (absent with `inputs_only=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Per segment of the model: `{method: "Wal"|"SnapshotHere"|"Skipped", accum_size}`.
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_sizes: Option<serde_json::Value>,
    /// `{model: {branches, segments}, points: [{timeline_id, kind}], timelines: [...]}`.
    #[schema(value_type = Object)]
    pub inputs: serde_json::Value,
}
