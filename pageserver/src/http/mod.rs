//! The pageserver's HTTP management API (axum + utoipa; the OpenAPI document at
//! `/v1/openapi.json` is generated from these handlers, `docs/pageserver.md` lists them).
//!
//! Auth (when an HTTP public key is configured): `pageserverapi` tokens may do
//! everything; `tenant` tokens only the per-tenant routes of their own tenant.

mod basebackup;
mod deletion;
mod layers;
mod location;
pub mod models;
mod size;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use http::StatusCode;
use pageserver_api::reltag::RelTag;
use utils::auth::Scope;
use utils::http::{ApiError, AuthContext, ErrorBody, Json, Path, Query, object_body};
use utils::{Lsn, TenantId, TimelineId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::TenantConfigOverrides;
use crate::keyspace;
use crate::layers::LayerKind;
use crate::tenant::create::CreateTimeline;
use crate::tenant::{Tenant, TenantError};
use crate::tenant_manager::{ManagerError, TenantManager};
use crate::timeline::read::ReadError;
use crate::timeline::{Timeline, TimelineState};
use crate::walingest::SlruKind;
use models::*;

/// Scopes allowed on cluster-wide routes.
pub const ADMIN_SCOPES: &[Scope] = &[Scope::PageServerApi];
/// Scopes allowed on per-tenant routes (a tenant token only for its tenant).
pub const TENANT_SCOPES: &[Scope] = &[Scope::PageServerApi, Scope::Tenant];

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The tenants.
    pub tenants: Arc<TenantManager>,
    /// The default wait for `wait_lsn`.
    pub wait_lsn_timeout: Duration,
    /// The longest `timeout` a `wait_lsn` call may ask for.
    pub wait_lsn_max_timeout: Duration,
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ManagerError::Exists(_) | ManagerError::StaleGeneration { .. } => {
                ApiError::Conflict(e.to_string())
            }
            ManagerError::Tenant(t) => t.into(),
        }
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        match &e {
            TenantError::TimelineNotFound(_) => ApiError::NotFound(e.to_string()),
            TenantError::TimelineExists(_) | TenantError::Conflict(_) => {
                ApiError::Conflict(e.to_string())
            }
            TenantError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            // 409, not 404: the tenant exists; what the request names on disk cannot be
            // imported as it is.
            TenantError::NoSuchDirectory(_) | TenantError::Unimportable(_) => {
                ApiError::Conflict(e.to_string())
            }
            TenantError::NotActive(_) => ApiError::Conflict(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

fn read_error(e: ReadError) -> ApiError {
    match &e {
        ReadError::NotFound(_) | ReadError::LsnOutOfRange(_) => ApiError::NotFound(e.to_string()),
        ReadError::BadRequest(_) => ApiError::BadRequest(e.to_string()),
        // The timeline is fine and may get there: a 4xx a client can retry, not a 5xx, and
        // not 408 (which is about the client's request taking too long).
        ReadError::WaitLsnTimeout { .. } => ApiError::Conflict(e.to_string()),
        ReadError::Cancelled => ApiError::ShuttingDown,
        // Object storage did not give an evicted layer back (after retries): retry later.
        ReadError::Residence(_) => ApiError::Unavailable(e.to_string()),
        _ => ApiError::Internal(e.to_string()),
    }
}

/// The API routes, to be handed to [`utils::http::build_router`].
pub fn routes(state: ApiState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(tenant_create, tenant_list))
        .routes(routes!(tenant_get, tenant_delete))
        .routes(routes!(tenant_config_get, tenant_config_put))
        .routes(routes!(location::tenant_location_config))
        .routes(routes!(timeline_create, timeline_list))
        .routes(routes!(timeline_get, timeline_delete))
        .routes(routes!(timeline_checkpoint))
        .routes(routes!(timeline_wait_lsn))
        .routes(routes!(timeline_layers))
        .routes(routes!(layers::layer_evict))
        .routes(routes!(layers::layer_download))
        .routes(routes!(layers::timeline_evict))
        .routes(routes!(timeline_getpage))
        .routes(routes!(timeline_slru_segment))
        .routes(routes!(timeline_relations))
        .routes(routes!(basebackup::timeline_basebackup))
        .routes(routes!(size::tenant_synthetic_size))
        .routes(routes!(deletion::deletion_queue_flush))
        .with_state(state)
}

pub(crate) fn tenant_info(t: &Tenant) -> TenantInfo {
    let state = t.state();
    TenantInfo {
        id: t.tenant_id,
        state: state.name().to_string(),
        broken_reason: match state {
            crate::tenant::TenantState::Broken(r) => Some(r),
            _ => None,
        },
        timelines: t.timelines().len(),
        generation: t.generation().0,
    }
}

fn timeline_info(tl: &Timeline) -> TimelineInfo {
    let state = tl.state();
    let last = tl.last_record();
    let size = match state {
        TimelineState::Active => tl.logical_size_if_resident(last.last),
        _ => None,
    };
    TimelineInfo {
        tenant_id: tl.tenant_id,
        timeline_id: tl.timeline_id,
        state: state.name().to_string(),
        broken_reason: match state {
            TimelineState::Broken(r) => Some(r),
            _ => None,
        },
        last_record_lsn: last.last,
        prev_record_lsn: last.prev,
        disk_consistent_lsn: tl.disk_consistent_lsn(),
        remote_consistent_lsn: tl.remote_consistent_lsn(),
        ancestor_timeline_id: tl.ancestor.as_ref().map(|a| a.timeline_id),
        ancestor_lsn: tl.ancestor.as_ref().map(|_| tl.ancestor_lsn),
        initdb_lsn: tl.initdb_lsn,
        pg_version: tl.pg_version,
        current_logical_size: size,
        walreceiver: tl.walreceiver_status.lock().clone(),
    }
}

fn tenant(st: &ApiState, auth: &AuthContext, id: TenantId) -> Result<Arc<Tenant>, ApiError> {
    auth.check(TENANT_SCOPES, Some(id))?;
    Ok(st.tenants.get(id)?)
}

/// A timeline that can serve reads (not Broken or Stopping).
fn readable(
    st: &ApiState,
    auth: &AuthContext,
    t: TenantId,
    tl: TimelineId,
) -> Result<Arc<Timeline>, ApiError> {
    let tl = tenant(st, auth, t)?.timeline(tl)?;
    match tl.state() {
        TimelineState::Active => Ok(tl),
        TimelineState::Broken(r) => Err(ApiError::Conflict(format!("timeline is broken: {r}"))),
        s => Err(ApiError::Unavailable(format!("timeline is {}", s.name()))),
    }
}

/// Creates a tenant (no timelines yet).
#[utoipa::path(post, path = "/v1/tenant", tag = "tenant",
    request_body = TenantCreateRequest,
    responses(
        (status = 201, description = "Created", body = TenantInfo),
        (status = 400, description = "Invalid request or config", body = ErrorBody),
        (status = 409, description = "Already exists", body = ErrorBody),
    ))]
async fn tenant_create(
    State(st): State<ApiState>,
    auth: AuthContext,
    Json(body): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<TenantInfo>), ApiError> {
    auth.check(ADMIN_SCOPES, None)?;
    if body
        .get("config")
        .is_some_and(|c| !c.is_object() && !c.is_null())
    {
        return Err(ApiError::BadRequest(
            "invalid request body: config: expected a JSON object".into(),
        ));
    }
    let req: TenantCreateRequest = object_body(body)?;
    let overrides = req.config.unwrap_or_default();
    let id = req.tenant_id.unwrap_or_else(TenantId::generate);
    let t = st.tenants.create(id, overrides).await?;
    Ok((StatusCode::CREATED, Json(tenant_info(&t))))
}

/// Lists the tenants.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    responses((status = 200, description = "The tenants", body = Vec<TenantInfo>)))]
async fn tenant_list(
    State(st): State<ApiState>,
    auth: AuthContext,
) -> Result<Json<Vec<TenantInfo>>, ApiError> {
    auth.check(ADMIN_SCOPES, None)?;
    Ok(Json(
        st.tenants.list().iter().map(|t| tenant_info(t)).collect(),
    ))
}

/// A tenant's state.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}", tag = "tenant",
    params(("tenant_id" = HexId, Path)),
    responses(
        (status = 200, description = "The tenant", body = TenantInfo),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ))]
async fn tenant_get(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
) -> Result<Json<TenantInfo>, ApiError> {
    let t = tenant(&st, &auth, tenant_id)?;
    Ok(Json(tenant_info(&t)))
}

/// Deletes a tenant and all its timelines.
#[utoipa::path(delete, path = "/v1/tenant/{tenant_id}", tag = "tenant",
    params(("tenant_id" = HexId, Path)),
    responses(
        (status = 200, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ))]
async fn tenant_delete(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.check(TENANT_SCOPES, Some(tenant_id))?;
    st.tenants.delete(tenant_id).await?;
    Ok(Json(serde_json::json!({})))
}

fn config_response(t: &Tenant) -> TenantConfigResponse {
    TenantConfigResponse {
        overrides: t.overrides(),
        effective: t.conf.read().clone(),
    }
}

/// A tenant's config: its overrides and what is in force.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/config", tag = "tenant",
    params(("tenant_id" = HexId, Path)),
    responses(
        (status = 200, description = "The config", body = TenantConfigResponse),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ))]
async fn tenant_config_get(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
) -> Result<Json<TenantConfigResponse>, ApiError> {
    let t = tenant(&st, &auth, tenant_id)?;
    Ok(Json(config_response(&t)))
}

/// Replaces a tenant's config overrides (persisted before it takes effect).
#[utoipa::path(put, path = "/v1/tenant/{tenant_id}/config", tag = "tenant",
    params(("tenant_id" = HexId, Path)),
    request_body = TenantConfigOverrides,
    responses(
        (status = 200, description = "The new config", body = TenantConfigResponse),
        (status = 400, description = "Malformed id or config", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ))]
async fn tenant_config_put(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<TenantConfigResponse>, ApiError> {
    let t = tenant(&st, &auth, tenant_id)?;
    let overrides: TenantConfigOverrides = object_body(body)?;
    t.set_overrides(overrides)?;
    t.schedule_manifest_upload();
    Ok(Json(config_response(&t)))
}

/// Creates a timeline: bootstrap with initdb, a branch, or an import.
#[utoipa::path(post, path = "/v1/tenant/{tenant_id}/timeline", tag = "timeline",
    params(("tenant_id" = HexId, Path)),
    request_body = TimelineCreateSchema,
    responses(
        (status = 201, description = "Created", body = TimelineInfo),
        (status = 400, description = "Invalid request or branch point", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 409, description = "Already exists, the ancestor does not exist or is not active, or import_pgdata is not an importable data directory (missing, running, another version)", body = ErrorBody),
        (status = 500, description = "initdb or import failed", body = ErrorBody),
    ))]
async fn timeline_create(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<TimelineInfo>), ApiError> {
    for key in ["ancestor_timeline_id", "import_pgdata"] {
        if body.get(key).is_some_and(|v| v.is_null()) {
            return Err(ApiError::BadRequest(format!(
                "invalid request body: {key}: null is not allowed (leave the key out)"
            )));
        }
    }
    if body.get("ancestor_start_lsn").is_some() && body.get("ancestor_timeline_id").is_none() {
        return Err(ApiError::BadRequest(
            "invalid request body: ancestor_start_lsn needs ancestor_timeline_id".into(),
        ));
    }
    let req: TimelineCreateRequest = object_body(body)?;
    let t = tenant(&st, &auth, tenant_id)?;
    if let Some(v) = req.pg_version
        && v != 15
    {
        return Err(ApiError::BadRequest(format!(
            "pg_version: {v} is not supported (only 15)"
        )));
    }
    let how = match (req.ancestor_timeline_id, req.import_pgdata) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "ancestor_timeline_id and import_pgdata exclude each other".into(),
            ));
        }
        (Some(ancestor), None) => CreateTimeline::Branch {
            ancestor,
            lsn: req.ancestor_start_lsn,
        },
        (None, Some(path)) => {
            if req.ancestor_start_lsn.is_some() {
                return Err(ApiError::BadRequest(
                    "ancestor_start_lsn needs ancestor_timeline_id".into(),
                ));
            }
            CreateTimeline::Import(path.into())
        }
        (None, None) => {
            if req.ancestor_start_lsn.is_some() {
                return Err(ApiError::BadRequest(
                    "ancestor_start_lsn needs ancestor_timeline_id".into(),
                ));
            }
            CreateTimeline::Bootstrap
        }
    };
    let tl = match t.create_timeline(req.new_timeline_id, how).await {
        // 409, not 404: the path's tenant exists; the body names a timeline that does not.
        Err(TenantError::TimelineNotFound(id)) => {
            return Err(ApiError::Conflict(format!(
                "ancestor timeline {id} does not exist in tenant {tenant_id}"
            )));
        }
        r => r?,
    };
    Ok((StatusCode::CREATED, Json(timeline_info(&tl))))
}

/// Lists a tenant's timelines.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/timeline", tag = "timeline",
    params(("tenant_id" = HexId, Path)),
    responses(
        (status = 200, description = "The timelines", body = Vec<TimelineInfo>),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ))]
async fn timeline_list(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
) -> Result<Json<Vec<TimelineInfo>>, ApiError> {
    let t = tenant(&st, &auth, tenant_id)?;
    Ok(Json(
        t.timelines().iter().map(|tl| timeline_info(tl)).collect(),
    ))
}

/// A timeline's state and LSNs.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}", tag = "timeline",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path)),
    responses(
        (status = 200, description = "The timeline", body = TimelineInfo),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant or timeline", body = ErrorBody),
    ))]
async fn timeline_get(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
) -> Result<Json<TimelineInfo>, ApiError> {
    let tl = tenant(&st, &auth, tenant_id)?.timeline(timeline_id)?;
    Ok(Json(timeline_info(&tl)))
}

/// Deletes a timeline that has no children.
#[utoipa::path(delete, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}", tag = "timeline",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path)),
    responses(
        (status = 200, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant or timeline", body = ErrorBody),
        (status = 409, description = "The timeline has children", body = ErrorBody),
    ))]
async fn timeline_delete(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    tenant(&st, &auth, tenant_id)?
        .delete_timeline(timeline_id)
        .await?;
    Ok(Json(serde_json::json!({})))
}

/// Freezes the open layer and waits until everything ingested is in layer files.
#[utoipa::path(put, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/checkpoint", tag = "timeline",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path)),
    responses(
        (status = 200, description = "Flushed", body = TimelineInfo),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant or timeline", body = ErrorBody),
        (status = 409, description = "The timeline is broken", body = ErrorBody),
        (status = 500, description = "The flush failed", body = ErrorBody),
        (status = 503, description = "The timeline is not active", body = ErrorBody),
    ))]
async fn timeline_checkpoint(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
) -> Result<Json<TimelineInfo>, ApiError> {
    let tl = readable(&st, &auth, tenant_id, timeline_id)?;
    tl.checkpoint()
        .await
        .map_err(|e| ApiError::Internal(format!("checkpoint: {e}")))?;
    Ok(Json(timeline_info(&tl)))
}

/// Waits until the timeline has ingested WAL up to an LSN.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/wait_lsn", tag = "timeline",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path), WaitLsnQuery),
    responses(
        (status = 200, description = "Reached", body = TimelineInfo),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such tenant or timeline", body = ErrorBody),
        (status = 409, description = "The timeline is broken, or did not reach the LSN within the timeout", body = ErrorBody),
        (status = 503, description = "The timeline is not active", body = ErrorBody),
    ))]
async fn timeline_wait_lsn(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
    Query(q): Query<WaitLsnQuery>,
) -> Result<Json<TimelineInfo>, ApiError> {
    let tl = readable(&st, &auth, tenant_id, timeline_id)?;
    let timeout = match q.timeout {
        Some(t) => humantime::parse_duration(&t)
            .map_err(|e| ApiError::BadRequest(format!("timeout: {t:?}: {e}")))?,
        None => st.wait_lsn_timeout,
    }
    .min(st.wait_lsn_max_timeout);
    tl.wait_lsn(q.lsn, timeout).await.map_err(read_error)?;
    Ok(Json(timeline_info(&tl)))
}

/// The timeline's layers, newest first.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/layer", tag = "timeline",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path)),
    responses(
        (status = 200, description = "The layers", body = LayerList),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such tenant or timeline", body = ErrorBody),
    ))]
async fn timeline_layers(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
) -> Result<Json<LayerList>, ApiError> {
    let tl = tenant(&st, &auth, tenant_id)?.timeline(timeline_id)?;
    let (mem, map) = tl.layer_snapshot();
    let mut layers: Vec<LayerInfo> = mem
        .iter()
        .map(|l| LayerInfo {
            name: String::new(),
            kind: "in_memory".into(),
            key_start: keyspace::Key::MIN.to_string(),
            key_end: keyspace::Key::MAX.to_string(),
            lsn_start: l.start_lsn,
            lsn_end: l.end_lsn(),
            size: l.size(),
            resident: None,
        })
        .collect();
    for (name, layer) in map.iter() {
        layers.push(LayerInfo {
            name: name.to_string(),
            kind: match name.kind {
                LayerKind::Delta => "delta",
                LayerKind::Image => "image",
            }
            .into(),
            key_start: name.key_range.start.to_string(),
            key_end: name.key_range.end.to_string(),
            lsn_start: name.lsn_range.start,
            lsn_end: Some(name.lsn_range.end),
            size: layer.file_size(),
            resident: Some(layer.is_resident()),
        });
    }
    Ok(Json(LayerList { layers }))
}

/// The LSN of a debug read. These do not wait for WAL (use `wait_lsn` first): an LSN
/// above the last ingested record is "no data there yet", 404.
fn read_lsn(tl: &Timeline, lsn: Option<Lsn>) -> Result<Lsn, ApiError> {
    let last = tl.last_record_lsn();
    let lsn = lsn.unwrap_or(last);
    tl.check_read_lsn(lsn).map_err(read_error)?;
    if lsn > last {
        return Err(ApiError::NotFound(format!(
            "LSN {lsn} is not ingested yet (last record LSN {last}); wait for it with wait_lsn first"
        )));
    }
    Ok(lsn)
}

fn octets(b: bytes::Bytes) -> axum::response::Response {
    (
        [(http::header::CONTENT_TYPE, "application/octet-stream")],
        b,
    )
        .into_response()
}

/// A relation block at an LSN, for debugging and tests (8192 bytes).
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/getpage", tag = "debug",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path), GetPageQuery),
    responses(
        (status = 200, description = "The page", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such tenant, timeline, relation or block, or no data at the LSN", body = ErrorBody),
        (status = 409, description = "The timeline is broken", body = ErrorBody),
        (status = 500, description = "The page could not be rebuilt", body = ErrorBody),
        (status = 503, description = "The timeline is not active", body = ErrorBody),
    ))]
async fn timeline_getpage(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
    Query(q): Query<GetPageQuery>,
) -> Result<axum::response::Response, ApiError> {
    if q.forknum > pageserver_api::reltag::MAX_FORKNUM {
        return Err(ApiError::BadRequest(format!(
            "forknum: {} is not a fork",
            q.forknum
        )));
    }
    let tl = readable(&st, &auth, tenant_id, timeline_id)?;
    let lsn = read_lsn(&tl, q.lsn)?;
    let rel = RelTag {
        spcnode: q.spcnode,
        dbnode: q.dbnode,
        relnode: q.relnode,
        forknum: q.forknum,
    };
    let page = tl
        .get_rel_page(rel, q.blkno, lsn)
        .await
        .map_err(read_error)?;
    Ok(octets(page))
}

/// A whole SLRU segment at an LSN.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/slru_segment", tag = "debug",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path), SlruQuery),
    responses(
        (status = 200, description = "The segment", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such tenant, timeline or segment, or no data at the LSN", body = ErrorBody),
        (status = 409, description = "The timeline is broken", body = ErrorBody),
        (status = 500, description = "A page could not be rebuilt", body = ErrorBody),
        (status = 503, description = "The timeline is not active", body = ErrorBody),
    ))]
async fn timeline_slru_segment(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
    Query(q): Query<SlruQuery>,
) -> Result<axum::response::Response, ApiError> {
    let kind = match q.kind.as_str() {
        "clog" => SlruKind::Clog,
        "multixact_offsets" => SlruKind::MultiXactOffsets,
        "multixact_members" => SlruKind::MultiXactMembers,
        k => return Err(ApiError::BadRequest(format!("kind: unknown SLRU {k:?}"))),
    };
    let tl = readable(&st, &auth, tenant_id, timeline_id)?;
    let lsn = read_lsn(&tl, q.lsn)?;
    let seg = tl
        .get_slru_segment(kind, q.segno, lsn)
        .await
        .map_err(read_error)?;
    Ok(octets(seg))
}

/// Every database directory and relation fork (with its size) at an LSN.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/relations", tag = "debug",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path), AtLsn),
    responses(
        (status = 200, description = "The relations", body = RelationList),
        (status = 400, description = "Malformed id or LSN", body = ErrorBody),
        (status = 404, description = "No such tenant or timeline, or no data at the LSN", body = ErrorBody),
        (status = 409, description = "The timeline is broken", body = ErrorBody),
        (status = 500, description = "A layer could not be read", body = ErrorBody),
        (status = 503, description = "The timeline is not active", body = ErrorBody),
    ))]
async fn timeline_relations(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
    Query(q): Query<AtLsn>,
) -> Result<Json<RelationList>, ApiError> {
    let tl = readable(&st, &auth, tenant_id, timeline_id)?;
    let lsn = read_lsn(&tl, q.lsn)?;
    let dbs = tl.list_dbs(lsn).map_err(read_error)?;
    let rels = tl.list_all_rels(lsn).map_err(read_error)?;
    Ok(Json(RelationList {
        lsn,
        databases: dbs
            .into_iter()
            .map(|(spcnode, dbnode)| DbEntry { spcnode, dbnode })
            .collect(),
        relations: rels
            .into_iter()
            .map(|(r, nblocks)| RelEntry {
                spcnode: r.spcnode,
                dbnode: r.dbnode,
                relnode: r.relnode,
                forknum: r.forknum,
                nblocks,
            })
            .collect(),
    }))
}
