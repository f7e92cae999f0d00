//! `PUT /v1/tenant/{tenant_id}/location_config`: how this pageserver holds a tenant, as the
//! control plane decides it — attached in a generation, or detached.

use axum::extract::State;
use pageserver_api::Generation;
use serde::{Deserialize, Serialize};
use utils::TenantId;
use utils::http::{ApiError, AuthContext, ErrorBody, Json, Path, object_body};

use super::models::TenantInfo;
use super::{ADMIN_SCOPES, ApiState, HexId, tenant_info};
use crate::config::TenantConfigOverrides;

/// The modes of a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub enum LocationMode {
    /// Attached, the only attachment: uploads and deletes.
    AttachedSingle,
    /// Attached while another node takes over: serves and uploads; deletions and
    /// `remote_consistent_lsn` wait.
    AttachedStale,
    /// Not held here: local state removed (the bucket keeps everything).
    Detached,
}

/// The request body, by `mode`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", deny_unknown_fields)]
pub enum LocationConfigRequest {
    /// Attached, the only attachment: uploads and deletes.
    AttachedSingle {
        /// The attachment generation.
        #[schema(minimum = 1, maximum = 4294967295_u64)]
        generation: u32,
        /// Config overrides (keys of `[tenant_config]`); without them, a tenant attached
        /// from object storage takes its manifest's, and a held one keeps its own.
        #[serde(default)]
        tenant_conf: Option<TenantConfigOverrides>,
    },
    /// Held here in `generation`, while another node takes the tenant over: reads,
    /// ingest and uploads go on; deletions and `remote_consistent_lsn` wait (until
    /// AttachedSingle again) or are dropped (on detach).
    AttachedStale {
        /// The generation held (a different one is refused).
        #[schema(minimum = 1, maximum = 4294967295_u64)]
        generation: u32,
    },
    /// Not held here: local state removed (the bucket keeps everything).
    Detached {},
}

/// The answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LocationConfigResponse {
    /// The mode now in force.
    pub mode: LocationMode,
    /// Whether the tenant was rebuilt from object storage by this call.
    pub attached_from_remote: bool,
    /// The tenant, when attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantInfo>,
}

/// Attaches (from object storage when not held here; in a newer generation by loading it
/// again) or detaches a tenant. An older generation than the one held is refused.
#[utoipa::path(put, path = "/v1/tenant/{tenant_id}/location_config", tag = "tenant",
    params(("tenant_id" = HexId, Path)),
    request_body = LocationConfigRequest,
    responses(
        (status = 200, description = "Done", body = LocationConfigResponse),
        (status = 400, description = "Malformed id, body or config, or nothing to attach from", body = ErrorBody),
        (status = 409, description = "The generation is older than the one held", body = ErrorBody),
        (status = 500, description = "The attach failed (the bucket, a corrupt index, a layer that does not match it)", body = ErrorBody),
    ))]
pub(super) async fn tenant_location_config(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<LocationConfigResponse>, ApiError> {
    auth.check(ADMIN_SCOPES, None)?;
    let req: LocationConfigRequest = object_body(body)?;
    match req {
        LocationConfigRequest::Detached {} => {
            st.tenants.detach(tenant_id).await?;
            Ok(Json(LocationConfigResponse {
                mode: LocationMode::Detached,
                attached_from_remote: false,
                tenant: None,
            }))
        }
        LocationConfigRequest::AttachedStale { generation } => {
            let t = st
                .tenants
                .set_stale(tenant_id, Generation(generation))
                .await?;
            Ok(Json(LocationConfigResponse {
                mode: LocationMode::AttachedStale,
                attached_from_remote: false,
                tenant: Some(tenant_info(&t)),
            }))
        }
        LocationConfigRequest::AttachedSingle {
            generation,
            tenant_conf,
        } => {
            if generation == 0 {
                return Err(ApiError::BadRequest("generation must be at least 1".into()));
            }
            let (t, fresh) = st
                .tenants
                .attach(tenant_id, Generation(generation), tenant_conf)
                .await?;
            Ok(Json(LocationConfigResponse {
                mode: LocationMode::AttachedSingle,
                attached_from_remote: fresh,
                tenant: Some(tenant_info(&t)),
            }))
        }
    }
}
