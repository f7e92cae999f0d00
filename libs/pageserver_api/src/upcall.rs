//! The pageserver's calls to the control plane's generations API (`control_plane_api` in
//! pageserver.toml), shared by the pageserver (client) and `storage_controller` (server).
//!
//! - `POST <api>/re-attach` at start-up: which tenants this node holds, each in a **new**
//!   generation (the control plane bumps it, so whatever ran before the restart is stale).
//! - `POST <api>/validate`: is this generation still the tenant's current one? Asked before
//!   deletions run and before `remote_consistent_lsn` is advertised to safekeepers, so a
//!   stale attachment can neither delete what the new owner needs nor let WAL be trimmed
//!   that only its own (superseded) uploads cover.

use serde::{Deserialize, Serialize};
use utils::{NodeId, TenantId};

use crate::Generation;

/// `POST …/re-attach` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReAttachRequest {
    /// The pageserver asking.
    pub node_id: NodeId,
}

/// One tenant the node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReAttachTenant {
    /// The tenant.
    pub id: TenantId,
    /// Its new generation on this node.
    #[schema(value_type = u64, minimum = 0, maximum = 4294967295_u64)]
    pub generation: Generation,
}

/// `POST …/re-attach` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReAttachResponse {
    /// Every tenant attached to the node; a local tenant missing here is not the node's.
    pub tenants: Vec<ReAttachTenant>,
}

/// One generation to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateTenant {
    /// The tenant.
    pub id: TenantId,
    /// The generation the caller holds.
    #[schema(value_type = u64, minimum = 0, maximum = 4294967295_u64)]
    pub generation: Generation,
}

/// `POST …/validate` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The asking node: when given, a generation is valid only if the tenant is placed on
    /// this node (or on none: detached, its last holder may finish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    /// The generations to check.
    pub tenants: Vec<ValidateTenant>,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValidateResult {
    /// The tenant.
    pub id: TenantId,
    /// The generation asked about.
    #[schema(value_type = u64, minimum = 0, maximum = 4294967295_u64)]
    pub generation: Generation,
    /// True when the generation asked about is the tenant's current one.
    pub valid: bool,
}

/// `POST …/validate` response: one answer per tenant asked about (unknown tenants: false).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValidateResponse {
    /// The answers.
    pub tenants: Vec<ValidateResult>,
}
