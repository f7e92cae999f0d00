//! The controller's HTTP API.
//!
//! - `/upcall/v1/re-attach`, `/upcall/v1/validate`: the pageservers' calls
//!   ([`pageserver_api::upcall`]), scope `generations_api`;
//! - `/control/v1/attach-hook`, `/control/v1/tenant/{tenant_id}`: the operator's (or the
//!   test harness's) calls, scope `admin`: attach a tenant to a node in a new generation,
//!   detach it, and read where it is.
//!
//! Every change is persisted before it is answered (see [`super::state`]).

use std::sync::Arc;

use axum::extract::State;
use pageserver_api::Generation;
use pageserver_api::upcall::{
    ReAttachRequest, ReAttachResponse, ReAttachTenant, ValidateRequest, ValidateResponse,
    ValidateResult,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::info;
use utils::auth::Scope;
use utils::http::{ApiError, AuthContext, ErrorBody, Json, JsonObject, Path};
use utils::{NodeId, TenantId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::{ControllerState, StateError};

/// Scopes allowed on the pageservers' upcalls.
const UPCALL_SCOPES: &[Scope] = &[Scope::GenerationsApi, Scope::Admin];
/// Scopes allowed on the control routes and service-wide endpoints.
pub const ADMIN_SCOPES: &[Scope] = &[Scope::Admin];

/// Shared by the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The durable state; one lock orders every change.
    pub state: Arc<Mutex<ControllerState>>,
}

/// `POST /control/v1/attach-hook` body.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachHookRequest {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The pageserver to attach it to in a new generation; absent or null detaches it.
    #[serde(default)]
    pub node_id: Option<NodeId>,
}

/// `POST /control/v1/attach-hook` response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachHookResponse {
    /// The new generation (to pass to the pageserver's `location_config`); null on detach.
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 4294967295_u64)]
    pub generation: Option<Generation>,
}

/// `GET /control/v1/tenant/{tenant_id}` response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantPlacementInfo {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its current generation.
    #[schema(value_type = u64, minimum = 0, maximum = 4294967295_u64)]
    pub generation: Generation,
    /// The pageserver holding it, if attached.
    pub node_id: Option<NodeId>,
}

fn state_err(e: StateError) -> ApiError {
    match e {
        StateError::Exhausted(_) => ApiError::Conflict(e.to_string()),
        _ => ApiError::Internal(e.to_string()),
    }
}

/// Runs a change to the state (a file write) off the runtime, under the lock.
async fn change<T: Send + 'static>(
    st: &ApiState,
    f: impl FnOnce(&mut ControllerState) -> Result<T, StateError> + Send + 'static,
) -> Result<T, ApiError> {
    let mut guard = Arc::clone(&st.state).lock_owned().await;
    tokio::task::spawn_blocking(move || f(&mut guard))
        .await
        .map_err(|e| ApiError::Internal(format!("state change task failed: {e}")))?
        .map_err(state_err)
}

/// The API routes, to be handed to [`utils::http::build_router`].
pub fn routes(state: ApiState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(re_attach))
        .routes(routes!(validate))
        .routes(routes!(attach_hook))
        .routes(routes!(tenant_get))
        .with_state(state)
}

/// A pageserver starting up: every tenant attached to it, each in a new generation.
#[utoipa::path(post, path = "/upcall/v1/re-attach", tag = "upcall",
    request_body = ReAttachRequest,
    responses(
        (status = 200, description = "The node's tenants in their new generations", body = ReAttachResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token does not allow this", body = ErrorBody),
    ))]
async fn re_attach(
    State(st): State<ApiState>,
    auth: AuthContext,
    JsonObject(req): JsonObject<ReAttachRequest>,
) -> Result<Json<ReAttachResponse>, ApiError> {
    auth.check(UPCALL_SCOPES, None)?;
    let node = req.node_id;
    let tenants = change(&st, move |s| s.re_attach(node)).await?;
    info!(
        node = node.0,
        tenants = tenants.len(),
        "re-attach: new generations issued"
    );
    Ok(Json(ReAttachResponse {
        tenants: tenants
            .into_iter()
            .map(|(id, generation)| ReAttachTenant { id, generation })
            .collect(),
    }))
}

/// Whether each (tenant, generation) is the tenant's current one.
#[utoipa::path(post, path = "/upcall/v1/validate", tag = "upcall",
    request_body = ValidateRequest,
    responses(
        (status = 200, description = "One answer per tenant asked about", body = ValidateResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token does not allow this", body = ErrorBody),
    ))]
async fn validate(
    State(st): State<ApiState>,
    auth: AuthContext,
    JsonObject(req): JsonObject<ValidateRequest>,
) -> Result<Json<ValidateResponse>, ApiError> {
    auth.check(UPCALL_SCOPES, None)?;
    let s = st.state.lock().await;
    Ok(Json(ValidateResponse {
        tenants: req
            .tenants
            .into_iter()
            .map(|t| ValidateResult {
                valid: s.validate(t.id, t.generation, req.node_id),
                id: t.id,
                generation: t.generation,
            })
            .collect(),
    }))
}

/// Attaches a tenant to a node in a new generation (every earlier one becomes stale), or
/// detaches it (`node_id` null). The caller then configures the pageserver with
/// `location_config` in that generation.
#[utoipa::path(post, path = "/control/v1/attach-hook", tag = "control",
    request_body = AttachHookRequest,
    responses(
        (status = 200, description = "The new generation (null on detach)", body = AttachHookResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token does not allow this", body = ErrorBody),
        (status = 404, description = "Detaching a tenant the controller does not know", body = ErrorBody),
        (status = 409, description = "The tenant's generations are exhausted", body = ErrorBody),
    ))]
async fn attach_hook(
    State(st): State<ApiState>,
    auth: AuthContext,
    JsonObject(req): JsonObject<AttachHookRequest>,
) -> Result<Json<AttachHookResponse>, ApiError> {
    auth.check(ADMIN_SCOPES, Some(req.tenant_id))?;
    let tenant = req.tenant_id;
    match req.node_id {
        Some(node) => {
            let g = change(&st, move |s| s.attach(tenant, node)).await?;
            info!(%tenant, node = node.0, generation = g.0, "attached");
            Ok(Json(AttachHookResponse {
                generation: Some(g),
            }))
        }
        None => {
            if !change(&st, move |s| s.detach(tenant)).await? {
                return Err(ApiError::NotFound(format!("tenant {tenant} is not known")));
            }
            info!(%tenant, "detached");
            Ok(Json(AttachHookResponse { generation: None }))
        }
    }
}

/// Where a tenant is attached and in which generation.
#[utoipa::path(get, path = "/control/v1/tenant/{tenant_id}", tag = "control",
    params(("tenant_id" = inline(pageserver_api::openapi::HexId), Path)),
    responses(
        (status = 200, description = "The tenant's placement", body = TenantPlacementInfo),
        (status = 400, description = "Malformed tenant id", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token does not allow this", body = ErrorBody),
        (status = 404, description = "The controller does not know the tenant", body = ErrorBody),
    ))]
async fn tenant_get(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
) -> Result<Json<TenantPlacementInfo>, ApiError> {
    auth.check(ADMIN_SCOPES, Some(tenant_id))?;
    let s = st.state.lock().await;
    let p = s
        .get(tenant_id)
        .ok_or_else(|| ApiError::NotFound(format!("tenant {tenant_id} is not known")))?;
    Ok(Json(TenantPlacementInfo {
        tenant_id,
        generation: p.generation,
        node_id: p.node_id,
    }))
}
