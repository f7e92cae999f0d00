//! `PUT /v1/deletion_queue/flush`: wait until every deletion queued so far was validated
//! and executed, or dropped as stale (operators before a migration; tests).

use axum::extract::State;
use utils::http::{ApiError, AuthContext, ErrorBody, Json};

use super::{ADMIN_SCOPES, ApiState};

/// Waits for the deletion queue to handle everything queued before the call (bounded by
/// the request: a control plane that cannot be reached keeps it waiting).
#[utoipa::path(put, path = "/v1/deletion_queue/flush", tag = "pageserver",
    responses(
        (status = 200, description = "Every earlier deletion was executed or dropped", body = ()),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The token does not allow this", body = ErrorBody),
        (status = 409, description = "No remote storage, so no deletion queue", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
    ))]
pub(crate) async fn deletion_queue_flush(
    State(st): State<ApiState>,
    auth: AuthContext,
) -> Result<Json<()>, ApiError> {
    auth.check(ADMIN_SCOPES, None)?;
    let Some(q) = st.tenants.deletions() else {
        return Err(ApiError::Conflict(
            "no remote_storage is configured: there is no deletion queue".into(),
        ));
    };
    q.flush().await.map_err(|_| ApiError::ShuttingDown)?;
    Ok(Json(()))
}
