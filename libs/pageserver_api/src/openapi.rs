//! Schema-only types for the OpenAPI documents of the pageserver and the storage
//! controller: what a path or query string holds, stated once so both documents agree.

use serde::{Deserialize, Serialize};

/// A tenant or timeline id: 32 lower-case hex digits.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^[0-9a-f]{32}$", example = "3aa8fcc61f6d357410b7de754b1d9001")]
pub struct HexId(pub String);

/// An LSN, `X/Y` in hex.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$", example = "0/16B5A50")]
pub struct LsnString(pub String);
