//! HTTP server helpers shared by every service's management API (axum + utoipa).

pub mod error;
pub mod server;

pub use error::{ApiError, ErrorBody, Json, JsonObject, Path, Query, object_body};
pub use server::{AuthContext, HttpOptions, StatusInfo, build_router, serve};

#[cfg(test)]
mod tests;
