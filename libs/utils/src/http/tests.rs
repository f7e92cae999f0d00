//! Tests of the common HTTP layer, through the router as a client would use it.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::*;
use crate::auth::{self, Claims, JwtAuth, Scope};
use crate::id::{NodeId, TenantId};

#[derive(serde::Deserialize, utoipa::ToSchema)]
struct Thing {
    #[allow(dead_code)]
    size: u32,
}

/// A tenant-scoped test endpoint.
#[utoipa::path(post, path = "/v1/tenant/{tenant_id}/thing",
    params(("tenant_id" = String, Path)),
    request_body = Thing,
    responses((status = 200, body = String)))]
async fn thing(
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
    Json(_body): Json<Thing>,
) -> Result<String, ApiError> {
    auth.check(&[Scope::PageServerApi, Scope::Tenant], Some(tenant_id))?;
    Ok(tenant_id.to_string())
}

/// Always panics.
#[utoipa::path(get, path = "/v1/panic", responses((status = 500)))]
async fn panicking() -> &'static str {
    panic!("deliberate test panic")
}

fn router(auth: Option<Arc<JwtAuth>>) -> axum::Router {
    let api = OpenApiRouter::new()
        .routes(routes!(thing))
        .routes(routes!(panicking));
    build_router(
        api,
        HttpOptions {
            status: StatusInfo {
                service: "testservice".into(),
                id: Some(NodeId(7)),
                version: "1.2.3".into(),
            },
            auth,
            admin_scopes: vec![Scope::PageServerApi],
        },
    )
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String, http::HeaderMap) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        headers,
    )
}

fn msg(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON: {body}: {e}"));
    v["msg"].as_str().expect("msg field").to_string()
}

#[tokio::test]
async fn status_metrics_and_request_id() {
    let r = router(None);
    let (status, body, headers) = call(&r, "GET", "/v1/status", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"service": "testservice", "id": 7, "version": "1.2.3"})
    );
    assert!(
        headers.contains_key("x-request-id"),
        "request id propagated"
    );
    let (status, body, headers) = call(&r, "GET", "/metrics", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(body.contains("http_requests_total"), "{body}");
}

#[tokio::test]
async fn errors_are_json_with_right_status() {
    let r = router(None);
    let t = TenantId::generate();
    let (status, body, _) = call(
        &r,
        "POST",
        &format!("/v1/tenant/{t}/thing"),
        None,
        "{not json",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg(&body).starts_with("invalid request body"), "{body}");

    let (status, body, _) = call(
        &r,
        "POST",
        &format!("/v1/tenant/{t}/thing"),
        None,
        r#"{"size": "big"}"#,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a wrongly typed field is a 400"
    );
    assert!(msg(&body).contains("size"), "{body}");

    let (status, body, _) = call(
        &r,
        "POST",
        "/v1/tenant/not-an-id/thing",
        None,
        r#"{"size":1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg(&body).contains("not-an-id"), "{body}");

    let (status, body, _) = call(&r, "GET", "/v1/nowhere", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(msg(&body), "no such API route");

    let (status, body, _) = call(
        &r,
        "POST",
        &format!("/v1/tenant/{t}/thing"),
        None,
        r#"{"size":1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, t.to_string());
}

#[test]
fn error_statuses() {
    use ApiError::*;
    let cases = [
        (BadRequest("x".into()), 400),
        (Unauthorized("x".into()), 401),
        (Forbidden("x".into()), 403),
        (NotFound("x".into()), 404),
        (Conflict("x".into()), 409),
        (PreconditionFailed("x".into()), 412),
        (Unavailable("x".into()), 503),
        (ShuttingDown, 503),
        (Timeout("x".into()), 408),
        (Internal("x".into()), 500),
    ];
    for (e, code) in cases {
        assert_eq!(e.status().as_u16(), code, "{e:?}");
    }
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_server_lives_on() {
    let r = router(None);
    let (status, body, _) = call(&r, "GET", "/v1/panic", None, "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(msg(&body).contains("deliberate test panic"), "{body}");
    let (status, _, _) = call(&r, "GET", "/v1/status", None, "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn jwt_middleware() {
    let pair = auth::generate_keypair().unwrap();
    let jwt = Arc::new(JwtAuth::from_pems(&[pair.public_pem.as_bytes()]).unwrap());
    let r = router(Some(jwt));
    let mint = |c: Claims| auth::encode(pair.private_pem.as_bytes(), &c).unwrap();
    let t = TenantId::generate();
    let uri = format!("/v1/tenant/{t}/thing");
    let body = r#"{"size":1}"#;

    // The allow-list needs no token.
    for path in ["/v1/status", "/metrics", "/v1/openapi.json"] {
        let (status, _, _) = call(&r, "GET", path, None, "").await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (status, body_text, _) = call(&r, "POST", &uri, None, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(msg(&body_text), "missing authorization header");

    let (status, _, _) = call(&r, "POST", &uri, Some("garbage"), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let other = auth::generate_keypair().unwrap();
    let wrong_key = auth::encode(
        other.private_pem.as_bytes(),
        &Claims::new(Scope::PageServerApi),
    )
    .unwrap();
    let (status, _, _) = call(&r, "POST", &uri, Some(&wrong_key), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _, _) = call(
        &r,
        "POST",
        &uri,
        Some(&mint(Claims::new(Scope::PageServerApi))),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&r, "POST", &uri, Some(&mint(Claims::tenant(t))), body).await;
    assert_eq!(status, StatusCode::OK);
    let (status, b, _) = call(
        &r,
        "POST",
        &uri,
        Some(&mint(Claims::tenant(TenantId::generate()))),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{b}");
    let (status, b, _) = call(
        &r,
        "POST",
        &uri,
        Some(&mint(Claims::new(Scope::SafekeeperData))),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(msg(&b).contains("safekeeperdata"), "{b}");
}

#[tokio::test]
async fn openapi_document_lists_routes() {
    let r = router(None);
    let (status, body, _) = call(&r, "GET", "/v1/openapi.json", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["info"]["title"], "Strata testservice API");
    let paths = v["paths"].as_object().unwrap();
    for p in ["/v1/status", "/metrics", "/v1/tenant/{tenant_id}/thing"] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
    assert_eq!(
        paths.contains_key("/v1/failpoints"),
        crate::failpoint::supported(),
        "failpoints documented exactly when compiled in"
    );
}

#[cfg(feature = "testing")]
#[tokio::test]
async fn failpoints_endpoint() {
    let r = router(None);
    let (status, _, _) = call(
        &r,
        "PUT",
        "/v1/failpoints",
        None,
        r#"[{"name": "utils-http-fp", "actions": "return(5)"}]"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        crate::failpoint::eval("utils-http-fp"),
        Some(Some("5".into()))
    );
    let (status, body, _) = call(
        &r,
        "PUT",
        "/v1/failpoints",
        None,
        r#"[{"name": "utils-http-fp", "actions": "blow up"}]"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg(&body).contains("utils-http-fp"), "{body}");
    let (status, _, _) = call(&r, "PUT", "/v1/failpoints", None, r#"{"name": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(
        &r,
        "PUT",
        "/v1/failpoints",
        None,
        r#"[{"name": "utils-http-fp", "actions": "off"}]"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(crate::failpoint::eval("utils-http-fp"), None);
}

#[cfg(feature = "testing")]
#[tokio::test]
async fn failpoints_endpoint_requires_admin_scope_when_auth_is_on() {
    let pair = auth::generate_keypair().unwrap();
    let jwt = Arc::new(JwtAuth::from_pems(&[pair.public_pem.as_bytes()]).unwrap());
    let r = router(Some(jwt));
    let body = r#"[{"name": "utils-http-fp-auth", "actions": "off"}]"#;
    let tenant = auth::encode(
        pair.private_pem.as_bytes(),
        &Claims::tenant(TenantId::generate()),
    )
    .unwrap();
    let (status, _, _) = call(&r, "PUT", "/v1/failpoints", Some(&tenant), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let admin = auth::encode(
        pair.private_pem.as_bytes(),
        &Claims::new(Scope::PageServerApi),
    )
    .unwrap();
    let (status, _, _) = call(&r, "PUT", "/v1/failpoints", Some(&admin), body).await;
    assert_eq!(status, StatusCode::OK);
}

#[cfg(not(feature = "testing"))]
#[tokio::test]
async fn no_failpoints_endpoint_without_testing_feature() {
    let r = router(None);
    let (status, _, _) = call(&r, "PUT", "/v1/failpoints", None, "[]").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn object_body_takes_objects_and_integral_floats() {
    use serde::Deserialize;
    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        port: u16,
        ids: Vec<u64>,
        ratio: f64,
    }
    let ok: Body = super::object_body(serde_json::json!({
        "port": 5454.0, "ids": [1.0, 18446744073709549568.0], "ratio": 2.0
    }))
    .unwrap();
    assert_eq!(
        ok,
        Body {
            port: 5454,
            ids: vec![1, 18446744073709549568],
            ratio: 2.0
        }
    );
    let e = super::object_body::<Body>(serde_json::json!([5454, [], 1.0])).unwrap_err();
    assert!(e.to_string().contains("expected a JSON object"), "{e}");
    let e = super::object_body::<Body>(serde_json::json!({"port": 1.5, "ids": [], "ratio": 1}))
        .unwrap_err();
    assert!(e.to_string().contains("port"), "{e}");
    let e = super::object_body::<Body>(serde_json::json!({"port": 70000, "ids": [], "ratio": 1}))
        .unwrap_err();
    assert!(e.to_string().contains("port"), "{e}");
}
