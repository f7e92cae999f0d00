//! The safekeeper's HTTP management API (axum + utoipa; the OpenAPI document at
//! `/v1/openapi.json` is generated from these handlers).
//!
//! `GET /v1/status`, `GET /metrics`, `GET /v1/openapi.json` and, with the `testing`
//! feature, `PUT /v1/failpoints` come from [`utils::http::build_router`]. The routes here:
//!
//! | Method | Path | |
//! | --- | --- | --- |
//! | POST | `/v1/tenant/timeline` | create a timeline |
//! | GET | `/v1/tenant/timeline` | list timelines (served and broken) |
//! | GET | `/v1/tenant/{tenant_id}/timeline/{timeline_id}` | a timeline's status |
//! | DELETE | `/v1/tenant/{tenant_id}/timeline/{timeline_id}` | delete a timeline |
//! | DELETE | `/v1/tenant/{tenant_id}` | delete a tenant's timelines |
//! | POST | `/v1/tenant/{tenant_id}/timeline/{timeline_id}/checkpoint` | persist the control file now |
//! | POST | `/v1/tenant/{tenant_id}/timeline/{timeline_id}/term_bump` | raise the term |
//! | GET | `/v1/debug_dump` | everything, for debugging |
//!
//! Auth (when an HTTP public key is configured): `safekeeperdata` tokens may do everything;
//! `tenant` tokens only the per-tenant routes of their own tenant.
//!
//! Every handler that touches an acceptor runs it on a blocking thread: the acceptor does
//! file I/O and its lock may be held across an fsync.

use std::sync::Arc;

use axum::extract::State;
use http::StatusCode;
use safekeeper_api::models::{
    TermBumpRequest, TermBumpResponse, TimelineCreateRequest, TimelineStatus,
};
use serde::{Deserialize, Serialize};
use utils::auth::Scope;
use utils::http::{ApiError, AuthContext, ErrorBody, Json, JsonObject, Path};
use utils::{NodeId, TenantId, TenantTimelineId, TimelineId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::global_timelines::{GlobalTimelines, GlobalTimelinesError, initial_state};
use crate::shared_timeline::TimelineGone;

/// Scopes allowed on cluster-wide routes.
pub const ADMIN_SCOPES: &[Scope] = &[Scope::SafekeeperData];
/// Scopes allowed on per-tenant routes (a tenant token only for its tenant).
pub const TENANT_SCOPES: &[Scope] = &[Scope::SafekeeperData, Scope::Tenant];

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The timelines.
    pub timelines: Arc<GlobalTimelines>,
    /// This safekeeper's id.
    pub node_id: NodeId,
}

/// One timeline in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineListEntry {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The timeline.
    pub timeline_id: TimelineId,
}

/// A timeline that failed to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrokenTimeline {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The timeline.
    pub timeline_id: TimelineId,
    /// Why it is not served.
    pub error: String,
}

/// `GET /v1/tenant/timeline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineList {
    /// Served timelines.
    pub timelines: Vec<TimelineListEntry>,
    /// Timelines that failed to load (not served until fixed or deleted).
    pub broken: Vec<BrokenTimeline>,
}

/// `DELETE …/timeline/{timeline_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineDeleteResponse {
    /// Whether there was anything to delete.
    pub existed: bool,
}

/// `DELETE /v1/tenant/{tenant_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantDeleteResponse {
    /// The timelines deleted.
    pub deleted: Vec<TimelineId>,
}

/// `GET /v1/debug_dump`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DebugDump {
    /// This safekeeper.
    pub id: NodeId,
    /// The data directory.
    pub datadir: String,
    /// Every served timeline's status.
    pub timelines: Vec<TimelineStatus>,
    /// Timelines that failed to load.
    pub broken: Vec<BrokenTimeline>,
}

impl From<GlobalTimelinesError> for ApiError {
    fn from(e: GlobalTimelinesError) -> Self {
        match &e {
            GlobalTimelinesError::NotFound(_) => ApiError::NotFound(e.to_string()),
            GlobalTimelinesError::Broken { .. } | GlobalTimelinesError::AlreadyExists(_) => {
                ApiError::Conflict(e.to_string())
            }
            GlobalTimelinesError::InvalidRequest { .. } => ApiError::BadRequest(e.to_string()),
            GlobalTimelinesError::Timeline(crate::timeline::TimelineError::InvalidState {
                ..
            }) => ApiError::BadRequest(e.to_string()),
            GlobalTimelinesError::Timeline(_) => ApiError::Internal(e.to_string()),
        }
    }
}

fn gone(e: TimelineGone) -> ApiError {
    match e {
        TimelineGone::Deleted(_) => ApiError::NotFound(e.to_string()),
        TimelineGone::Broken(_) => ApiError::Conflict(e.to_string()),
    }
}

/// Runs blocking work off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// The API routes, to be handed to [`utils::http::build_router`].
pub fn routes(state: ApiState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(timeline_create, timeline_list))
        .routes(routes!(timeline_status, timeline_delete))
        .routes(routes!(tenant_delete))
        .routes(routes!(timeline_checkpoint))
        .routes(routes!(timeline_term_bump))
        .routes(routes!(debug_dump))
        .with_state(state)
}

/// Creates a timeline, before any proposer connects, with a known WAL start: its term
/// history starts as `[(0, start_lsn)]`. `start_lsn` 0 leaves the start to the first
/// elected proposer.
#[utoipa::path(post, path = "/v1/tenant/timeline", tag = "timeline",
    request_body = TimelineCreateRequest,
    responses(
        (status = 201, description = "Created", body = TimelineStatus),
        (status = 400, description = "Malformed body, or values no timeline can have", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify (auth on)", body = ErrorBody),
        (status = 403, description = "The token may not do this (auth on)", body = ErrorBody),
        (status = 409, description = "Already exists (or exists broken)", body = ErrorBody),
    ))]
async fn timeline_create(
    State(st): State<ApiState>,
    auth: AuthContext,
    JsonObject(req): JsonObject<TimelineCreateRequest>,
) -> Result<(StatusCode, Json<TimelineStatus>), ApiError> {
    auth.check(TENANT_SCOPES, Some(req.tenant_id))?;
    let ttid = TenantTimelineId::new(req.tenant_id, req.timeline_id);
    let status = blocking(move || {
        let state = initial_state(
            ttid,
            req.mconf.clone().unwrap_or_else(Default::default),
            req.server_info(),
            req.start_lsn,
        )?;
        let tl = st.timelines.create(state)?;
        tl.status().map_err(gone)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(status)))
}

/// Lists the served and the broken timelines.
#[utoipa::path(get, path = "/v1/tenant/timeline", tag = "timeline",
    responses(
        (status = 200, description = "The timelines", body = TimelineList),
        (status = 401, description = "No token, or one that does not verify (auth on)", body = ErrorBody),
        (status = 403, description = "The token may not do this (auth on)", body = ErrorBody),
    ))]
async fn timeline_list(
    State(st): State<ApiState>,
    auth: AuthContext,
) -> Result<Json<TimelineList>, ApiError> {
    auth.check(ADMIN_SCOPES, None)?;
    Ok(Json(TimelineList {
        timelines: st
            .timelines
            .list()
            .into_iter()
            .map(|t| TimelineListEntry {
                tenant_id: t.tenant_id,
                timeline_id: t.timeline_id,
            })
            .collect(),
        broken: broken_list(&st.timelines),
    }))
}

fn broken_list(timelines: &GlobalTimelines) -> Vec<BrokenTimeline> {
    timelines
        .broken()
        .into_iter()
        .map(|(t, error)| BrokenTimeline {
            tenant_id: t.tenant_id,
            timeline_id: t.timeline_id,
            error,
        })
        .collect()
}

/// A timeline's consensus state, WAL positions and connections. A timeline that failed to
/// load answers 409 with its load error.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}", tag = "timeline",
    params(("tenant_id" = TenantId, Path), ("timeline_id" = TimelineId, Path)),
    responses(
        (status = 200, description = "The status", body = TimelineStatus),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify (auth on)", body = ErrorBody),
        (status = 403, description = "The token may not do this (auth on)", body = ErrorBody),
        (status = 404, description = "No such timeline", body = ErrorBody),
        (status = 409, description = "The timeline is broken", body = ErrorBody),
    ))]
async fn timeline_status(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
) -> Result<Json<TimelineStatus>, ApiError> {
    auth.check(TENANT_SCOPES, Some(tenant_id))?;
    let tl = st
        .timelines
        .get(&TenantTimelineId::new(tenant_id, timeline_id))?;
    let status = blocking(move || tl.status().map_err(gone)).await?;
    Ok(Json(status))
}

/// Deletes a timeline (served or broken): its connections end and its directory is
/// removed. Deleting a timeline that does not exist succeeds with `existed: false`.
#[utoipa::path(delete, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}", tag = "timeline",
    params(("tenant_id" = TenantId, Path), ("timeline_id" = TimelineId, Path)),
    responses(
        (status = 200, description = "Deleted, or there was nothing to delete", body = TimelineDeleteResponse),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify (auth on)", body = ErrorBody),
        (status = 403, description = "The token may not do this (auth on)", body = ErrorBody),
        (status = 500, description = "Removing its files failed; the timeline is broken until deleted again", body = ErrorBody),
    ))]
async fn timeline_delete(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
) -> Result<Json<TimelineDeleteResponse>, ApiError> {
    auth.check(TENANT_SCOPES, Some(tenant_id))?;
    let ttid = TenantTimelineId::new(tenant_id, timeline_id);
    let existed = blocking(move || Ok(st.timelines.delete(&ttid)?)).await?;
    Ok(Json(TimelineDeleteResponse { existed }))
}

/// Deletes every timeline of a tenant.
#[utoipa::path(delete, path = "/v1/tenant/{tenant_id}", tag = "timeline",
    params(("tenant_id" = TenantId, Path)),
    responses(
        (status = 200, description = "Deleted (possibly none)", body = TenantDeleteResponse),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify (auth on)", body = ErrorBody),
        (status = 403, description = "The token may not do this (auth on)", body = ErrorBody),
        (status = 500, description = "Removing some timeline's files failed", body = ErrorBody),
    ))]
async fn tenant_delete(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
) -> Result<Json<TenantDeleteResponse>, ApiError> {
    auth.check(TENANT_SCOPES, Some(tenant_id))?;
    let deleted = blocking(move || Ok(st.timelines.delete_tenant(tenant_id)?)).await?;
    Ok(Json(TenantDeleteResponse {
        deleted: deleted.into_iter().map(|t| t.timeline_id).collect(),
    }))
}

/// Persists the timeline's in-memory positions to its control file now.
#[utoipa::path(post, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/checkpoint", tag = "timeline",
    params(("tenant_id" = TenantId, Path), ("timeline_id" = TimelineId, Path)),
    responses(
        (status = 200, description = "Persisted; the status after", body = TimelineStatus),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify (auth on)", body = ErrorBody),
        (status = 403, description = "The token may not do this (auth on)", body = ErrorBody),
        (status = 404, description = "No such timeline", body = ErrorBody),
        (status = 409, description = "The timeline is broken", body = ErrorBody),
        (status = 500, description = "Writing the control file failed", body = ErrorBody),
    ))]
async fn timeline_checkpoint(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
) -> Result<Json<TimelineStatus>, ApiError> {
    auth.check(TENANT_SCOPES, Some(tenant_id))?;
    let tl = st
        .timelines
        .get(&TenantTimelineId::new(tenant_id, timeline_id))?;
    let status = blocking(move || {
        tl.with_acceptor(|a| a.persist_positions_if_needed(true))
            .map_err(gone)?
            .map_err(ApiError::internal)?;
        tl.status().map_err(gone)
    })
    .await?;
    Ok(Json(status))
}

/// Raises the timeline's term (durably) to `term`, or by one: the current proposer is
/// deposed and must be elected again.
#[utoipa::path(post, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/term_bump", tag = "timeline",
    params(("tenant_id" = TenantId, Path), ("timeline_id" = TimelineId, Path)),
    request_body = TermBumpRequest,
    responses(
        (status = 200, description = "The terms before and after", body = TermBumpResponse),
        (status = 400, description = "Malformed id or body", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify (auth on)", body = ErrorBody),
        (status = 403, description = "The token may not do this (auth on)", body = ErrorBody),
        (status = 404, description = "No such timeline", body = ErrorBody),
        (status = 409, description = "The timeline is broken", body = ErrorBody),
        (status = 500, description = "Persisting the term failed", body = ErrorBody),
    ))]
async fn timeline_term_bump(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
    JsonObject(req): JsonObject<TermBumpRequest>,
) -> Result<Json<TermBumpResponse>, ApiError> {
    auth.check(TENANT_SCOPES, Some(tenant_id))?;
    let tl = st
        .timelines
        .get(&TenantTimelineId::new(tenant_id, timeline_id))?;
    let (previous_term, current_term) = blocking(move || {
        tl.with_acceptor(|a| a.bump_term(req.term))
            .map_err(gone)?
            .map_err(ApiError::internal)
    })
    .await?;
    Ok(Json(TermBumpResponse {
        previous_term,
        current_term,
    }))
}

/// Every timeline's status and the broken timelines.
#[utoipa::path(get, path = "/v1/debug_dump", tag = "debug",
    responses(
        (status = 200, description = "The dump", body = DebugDump),
        (status = 401, description = "No token, or one that does not verify (auth on)", body = ErrorBody),
        (status = 403, description = "The token may not do this (auth on)", body = ErrorBody),
    ))]
async fn debug_dump(
    State(st): State<ApiState>,
    auth: AuthContext,
) -> Result<Json<DebugDump>, ApiError> {
    auth.check(ADMIN_SCOPES, None)?;
    let dump = blocking(move || {
        let timelines = st
            .timelines
            .all()
            .into_iter()
            .filter_map(|t| t.status().ok())
            .collect();
        Ok(DebugDump {
            id: st.node_id,
            datadir: st.timelines.conf().datadir.display().to_string(),
            timelines,
            broken: broken_list(&st.timelines),
        })
    })
    .await?;
    Ok(Json(dump))
}
