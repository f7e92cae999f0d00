//! Layer residence over HTTP: evict a layer (or all of a timeline's uploaded layers) from
//! the local disk, download one back. Reads download evicted layers by themselves; these
//! are for operators (free disk now, warm a timeline before a load) and tests.

use axum::extract::State;
use serde::Serialize;
use utils::http::{ApiError, AuthContext, ErrorBody, Json, Path};
use utils::{TenantId, TimelineId};

use super::{ApiState, HexId, readable};
use crate::timeline::eviction::EvictionError;

/// What an eviction or download did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResidenceChange {
    /// Layers whose residence changed (0 when there was nothing to do).
    pub changed: usize,
}

fn eviction_error(e: EvictionError) -> ApiError {
    match e {
        EvictionError::NotFound(_) => ApiError::NotFound(e.to_string()),
        EvictionError::NotUploaded(_) => ApiError::Conflict(e.to_string()),
        EvictionError::NoRemoteStorage => ApiError::Conflict(e.to_string()),
        EvictionError::Residence(_) => ApiError::Internal(e.to_string()),
    }
}

/// Evicts one layer: its object stays in the bucket, a read downloads it again.
#[utoipa::path(put, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/layer/{layer_name}/evict", tag = "timeline",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path),
        ("layer_name" = String, Path, description = "The layer's file name")),
    responses(
        (status = 200, description = "Evicted (changed 0: it was already)", body = ResidenceChange),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant, timeline or layer", body = ErrorBody),
        (status = 409, description = "Not uploaded yet, no remote storage, or the timeline is broken", body = ErrorBody),
        (status = 500, description = "The stub or the file could not be written or removed", body = ErrorBody),
        (status = 503, description = "The timeline is not active", body = ErrorBody),
    ))]
pub(super) async fn layer_evict(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id, layer_name)): Path<(TenantId, TimelineId, String)>,
) -> Result<Json<ResidenceChange>, ApiError> {
    let tl = readable(&st, &auth, tenant_id, timeline_id)?;
    let evicted = tokio::task::spawn_blocking(move || tl.evict_layer(&layer_name))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(eviction_error)?;
    Ok(Json(ResidenceChange {
        changed: usize::from(evicted),
    }))
}

/// Downloads one evicted layer now (a read would do it on demand).
#[utoipa::path(put, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/layer/{layer_name}/download", tag = "timeline",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path),
        ("layer_name" = String, Path, description = "The layer's file name")),
    responses(
        (status = 200, description = "Resident (changed 0: it was already)", body = ResidenceChange),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant, timeline or layer", body = ErrorBody),
        (status = 409, description = "The timeline is broken", body = ErrorBody),
        (status = 500, description = "The download failed", body = ErrorBody),
        (status = 503, description = "The timeline is not active", body = ErrorBody),
    ))]
pub(super) async fn layer_download(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id, layer_name)): Path<(TenantId, TimelineId, String)>,
) -> Result<Json<ResidenceChange>, ApiError> {
    let tl = readable(&st, &auth, tenant_id, timeline_id)?;
    let downloaded = tl
        .download_layer(&layer_name)
        .await
        .map_err(eviction_error)?;
    Ok(Json(ResidenceChange {
        changed: usize::from(downloaded),
    }))
}

/// Evicts every layer of the timeline that the uploaded index names.
#[utoipa::path(put, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/evict", tag = "timeline",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path)),
    responses(
        (status = 200, description = "How many were evicted", body = ResidenceChange),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant or timeline", body = ErrorBody),
        (status = 409, description = "No remote storage, or the timeline is broken", body = ErrorBody),
        (status = 500, description = "A stub or a file could not be written or removed", body = ErrorBody),
        (status = 503, description = "The timeline is not active", body = ErrorBody),
    ))]
pub(super) async fn timeline_evict(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
) -> Result<Json<ResidenceChange>, ApiError> {
    let tl = readable(&st, &auth, tenant_id, timeline_id)?;
    let changed = tokio::task::spawn_blocking(move || tl.evict_all_layers())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(eviction_error)?;
    Ok(Json(ResidenceChange { changed }))
}
