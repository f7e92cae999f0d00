//! The one error type every HTTP handler returns, and extractors that produce it.
//!
//! Every failure reaches the client as JSON `{"msg": …}` with a status code that says whose
//! fault it is: 4xx for the caller (bad input, unknown ids, auth), 503 for "try again"
//! (shutting down, not ready), 500 for our bugs. axum's own extractor rejections are plain
//! text, so handlers take [`Json`], [`Path`] and [`Query`] from here instead of axum's.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::auth::AuthError;

/// An HTTP API failure; its `Display` is the `msg` the client sees.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed body, path or query.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or a token that does not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token without the right to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown tenant, timeline, route…
    #[error("{0}")]
    NotFound(String),
    /// 409: conflicts with existing state (already exists, wrong state).
    #[error("{0}")]
    Conflict(String),
    /// 412: a precondition of the request does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 503: temporarily unable (not ready, overloaded); the client should retry.
    #[error("{0}")]
    Unavailable(String),
    /// 503: the service is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// 408: the operation did not finish within the time the request allowed; the service
    /// is healthy and the request may be repeated. Not a 5xx: nothing failed on the server.
    /// (The pageserver's `wait_lsn` answers a timeout with 409 instead: the timeline has not
    /// reached the LSN.)
    #[error("{0}")]
    Timeout(String),
    /// 500: a bug or an unexpected failure.
    #[error("{0}")]
    Internal(String),
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub msg: String,
}

impl ApiError {
    /// An internal error from anything printable (keeps the whole cause chain when given
    /// an `anyhow::Error` formatted with `{:#}` by the caller).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    /// The HTTP status this error is sent with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Unavailable(_) | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let msg = self.to_string();
        match &self {
            ApiError::Internal(_) => tracing::error!(%status, "request failed: {msg}"),
            ApiError::Timeout(_) => tracing::warn!(%status, "request failed: {msg}"),
            _ => tracing::info!(%status, "request failed: {msg}"),
        }
        (status, axum::Json(ErrorBody { msg })).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::MissingToken | AuthError::InvalidToken(_) | AuthError::Expired => {
                ApiError::Unauthorized(e.to_string())
            }
            AuthError::WrongScope { .. } | AuthError::TenantMismatch { .. } => {
                ApiError::Forbidden(e.to_string())
            }
            AuthError::KeyLoad { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

/// A JSON body; a malformed one is a 400 with a JSON error naming the problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "invalid request body: {}",
                rejection.body_text()
            ))),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A JSON object body as `T`: anything but an object is refused (serde would otherwise
/// build a struct from an array, which no schema allows), a number with a zero fraction
/// counts as the integer it is (`5.0` is an `integer` in JSON Schema, as clients generated
/// from the OpenAPI document may send it), and a field that does not fit is named in the 400.
pub fn object_body<T: serde::de::DeserializeOwned>(
    mut v: serde_json::Value,
) -> Result<T, ApiError> {
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "invalid request body: expected a JSON object".into(),
        ));
    }
    integral_floats_to_integers(&mut v);
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::BadRequest(format!("invalid request body: {}", e.inner()))
        } else {
            ApiError::BadRequest(format!("invalid request body: {path}: {}", e.inner()))
        }
    })
}

/// Rewrites every number with a zero fraction that an integer type can hold exactly (below
/// 2^64 in magnitude) as that integer; other numbers are left alone, so a float field still
/// gets its float.
fn integral_floats_to_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            if f.fract() != 0.0 {
                return;
            }
            // The casts are exact: `f` is integral and within the target's range.
            if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                *v = serde_json::Value::from(f as u64);
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                *v = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// A JSON body that must be an object, parsed by [`object_body`]: the extractor for
/// request bodies described by a struct schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonObject<T>(pub T);

impl<T, S> FromRequest<S> for JsonObject<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(v) = Json::<serde_json::Value>::from_request(req, state).await?;
        Ok(JsonObject(object_body(v)?))
    }
}

/// Path parameters; an unparsable one (e.g. a bad tenant id) is a 400 JSON error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    axum::extract::Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Query parameters; a malformed query is a 400 JSON error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    axum::extract::Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}
