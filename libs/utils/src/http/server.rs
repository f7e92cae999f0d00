//! Assembling a service's HTTP API: the endpoints every service has, and the middleware
//! every request goes through.
//!
//! A service builds its own routes as a `utoipa_axum` [`OpenApiRouter`] (so its OpenAPI
//! document is generated from the handlers and cannot go stale) and hands it to
//! [`build_router`], which adds:
//! - `GET /v1/status`, `GET /metrics`, `GET /v1/openapi.json`, and with the `testing`
//!   feature `PUT /v1/failpoints`;
//! - a request id (`x-request-id`, taken from the client or generated) on every request,
//!   its log line and its response;
//! - one log line and metrics per request;
//! - JWT authentication when configured: every path except the allow-list
//!   ([`AUTH_EXEMPT_PATHS`]) needs `Authorization: Bearer <token>`; handlers then check
//!   scopes and tenants through the [`AuthContext`] extractor;
//! - a panic in a handler becomes a 500 JSON error, and the process keeps serving;
//! - unknown routes get a 404 JSON error.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use prometheus::{HistogramVec, IntCounterVec};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use crate::auth::{Claims, JwtAuth, Scope, authorize};
use crate::id::{NodeId, TenantId};

/// Paths reachable without a token even when auth is on: liveness, scraping, API docs.
pub const AUTH_EXEMPT_PATHS: &[&str] = &["/v1/status", "/metrics", "/v1/openapi.json"];

/// What `GET /v1/status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusInfo {
    /// The kind of service: "pageserver", "safekeeper", ….
    pub service: String,
    /// The node's id, for services that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<NodeId>,
    /// The binary's version.
    pub version: String,
}

/// How [`build_router`] sets a service up.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Served by `/v1/status`; `service` also titles the OpenAPI document.
    pub status: StatusInfo,
    /// `Some` turns JWT authentication on.
    pub auth: Option<Arc<JwtAuth>>,
    /// Scopes allowed to use service-wide endpoints such as `/v1/failpoints`.
    pub admin_scopes: Vec<Scope>,
}

/// The authentication state of a request, extracted by handlers to check permissions.
#[derive(Debug, Clone)]
pub enum AuthContext {
    /// Auth is off for this service: everything is allowed.
    Disabled,
    /// The request carried this verified token.
    Token(Claims),
}

impl AuthContext {
    /// Fails with 403 unless the token allows one of `allowed` on `tenant`.
    pub fn check(&self, allowed: &[Scope], tenant: Option<TenantId>) -> Result<(), ApiError> {
        match self {
            AuthContext::Disabled => Ok(()),
            AuthContext::Token(claims) => Ok(authorize(claims, allowed, tenant)?),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Absent only if the router was not built by `build_router`: fail closed.
        parts
            .extensions
            .get::<AuthContext>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("authentication middleware not installed".into()))
    }
}

#[derive(Debug, Clone)]
struct AdminScopes(Arc<Vec<Scope>>);

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "http_requests_total",
        "HTTP requests served, by method, route and status",
        &["method", "route", "status"]
    )
    .unwrap_or_else(|e| panic!("registering http_requests_total: {e}"))
});

static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    prometheus::register_histogram_vec!(
        "http_request_duration_seconds",
        "HTTP request latency, by method and route",
        &["method", "route"],
        vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]
    )
    .unwrap_or_else(|e| panic!("registering http_request_duration_seconds: {e}"))
});

/// Wraps a service's routes with the common endpoints and middleware.
pub fn build_router(api: OpenApiRouter, options: HttpOptions) -> Router {
    let mut common = OpenApiRouter::new()
        .routes(routes!(status_handler))
        .routes(routes!(metrics_handler));
    if crate::failpoint::supported() {
        common = common.routes(routes!(failpoints_handler));
    }
    let (router, mut openapi) = api.merge(common).split_for_parts();
    openapi.info.title = format!("Strata {} API", options.status.service);
    openapi.info.version = options.status.version.clone();
    let openapi = Arc::new(openapi);

    let auth = options.auth.clone();
    router
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound("no such API route".into()) })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(log_and_measure))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(axum::Extension(Arc::new(options.status)))
                .layer(axum::Extension(AdminScopes(Arc::new(options.admin_scopes))))
                .layer(middleware::from_fn_with_state(auth, authenticate)),
        )
}

/// Serves `router` on `listener` until `cancel` fires, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

async fn log_and_measure(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let span = tracing::info_span!("http", id = %request_id, %method, %path);
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = start.elapsed();
    // Health checks and scrapes are frequent and dull: keep them out of INFO.
    let noisy = path == "/v1/status" || path == "/metrics";
    span.in_scope(|| {
        if noisy {
            tracing::debug!(status = status.as_u16(), ?elapsed, "request done");
        } else {
            tracing::info!(status = status.as_u16(), ?elapsed, "request done");
        }
    });
    REQUESTS
        .with_label_values(&[method.as_str(), &route, status.as_str()])
        .inc();
    LATENCY
        .with_label_values(&[method.as_str(), &route])
        .observe(elapsed.as_secs_f64());
    response
}

async fn authenticate(
    State(auth): State<Option<Arc<JwtAuth>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let context = match &auth {
        None => AuthContext::Disabled,
        Some(_) if AUTH_EXEMPT_PATHS.contains(&req.uri().path()) => AuthContext::Disabled,
        Some(auth) => {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(HeaderValue::to_str);
            let token = match header {
                None => {
                    return ApiError::Unauthorized("missing authorization header".into())
                        .into_response();
                }
                Some(Err(_)) => {
                    return ApiError::Unauthorized("authorization header is not text".into())
                        .into_response();
                }
                Some(Ok(v)) => match v.strip_prefix("Bearer ") {
                    Some(t) => t.trim().to_string(),
                    None => {
                        return ApiError::Unauthorized(
                            "authorization header must be 'Bearer <token>'".into(),
                        )
                        .into_response();
                    }
                },
            };
            match auth.decode(&token) {
                Ok(claims) => AuthContext::Token(claims),
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    };
    req.extensions_mut().insert(context);
    next.run(req).await
}

fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!("handler panicked: {detail}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(ErrorBody {
            msg: format!("internal error: handler panicked: {detail}"),
        }),
    )
        .into_response()
}

/// Liveness and identity.
#[utoipa::path(get, path = "/v1/status", tag = "common",
    responses((status = 200, description = "The service is up", body = StatusInfo)))]
async fn status_handler(
    axum::Extension(status): axum::Extension<Arc<StatusInfo>>,
) -> axum::Json<StatusInfo> {
    axum::Json(status.as_ref().clone())
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "common",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics_handler() -> Result<Response, ApiError> {
    let encoder = prometheus::TextEncoder::new();
    let text = encoder
        .encode_to_string(&prometheus::gather())
        .map_err(ApiError::internal)?;
    Ok((
        [(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        text,
    )
        .into_response())
}

/// Configures failpoints (builds with the `testing` feature only).
#[utoipa::path(put, path = "/v1/failpoints", tag = "testing",
    request_body = Vec<crate::failpoint::FailpointConfig>,
    responses(
        (status = 200, description = "All failpoints configured"),
        (status = 400, description = "An action did not parse; none after it was applied", body = ErrorBody),
    ))]
async fn failpoints_handler(
    auth: AuthContext,
    axum::Extension(admin): axum::Extension<AdminScopes>,
    super::error::Json(configs): super::error::Json<Vec<crate::failpoint::FailpointConfig>>,
) -> Result<StatusCode, ApiError> {
    auth.check(&admin.0, None)?;
    for fp in configs {
        crate::failpoint::configure(&fp.name, &fp.actions)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        tracing::info!("failpoint {} set to {}", fp.name, fp.actions);
    }
    Ok(StatusCode::OK)
}
