//! `GET …/basebackup`: the tar stream of `crate::basebackup` as a chunked HTTP body.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tracing::warn;
use utils::http::{ApiError, AuthContext, ErrorBody, Path, Query};
use utils::{TenantId, TimelineId};

use super::models::{BasebackupQuery, HexId};
use super::{ApiState, read_error, readable};
use crate::basebackup::{self, BasebackupError};

/// Bytes per body chunk.
const CHUNK: usize = 128 * 1024;

fn api_error(e: BasebackupError) -> ApiError {
    match e {
        BasebackupError::BadRequest(m) => ApiError::BadRequest(m),
        BasebackupError::Read(r) => read_error(r),
        BasebackupError::Unsupported(m) => ApiError::Internal(m),
        BasebackupError::Io(e) => ApiError::Internal(e.to_string()),
    }
}

/// A complete PostgreSQL 15 data directory at an LSN, as a tar stream (gzip with
/// `gzip=true`), from which the stock server starts and continues the WAL at that LSN.
/// Errors found before streaming are statuses; an error mid-stream ends the body early
/// (the archive then lacks its end marker).
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/timeline/{timeline_id}/basebackup", tag = "timeline",
    params(("tenant_id" = HexId, Path), ("timeline_id" = HexId, Path), BasebackupQuery),
    responses(
        (status = 200, description = "The tar stream (gzip-compressed with gzip=true)", content(
            (Vec<u8> = "application/x-tar"),
            (Vec<u8> = "application/gzip"),
        )),
        (status = 400, description = "Malformed id or query, or an LSN not on a record boundary", body = ErrorBody),
        (status = 404, description = "No such tenant or timeline, or the LSN is below the timeline's start or GC cutoff", body = ErrorBody),
        (status = 409, description = "The timeline is broken, or did not reach the LSN within wait_lsn_timeout", body = ErrorBody),
        (status = 500, description = "The stored state cannot make a data directory", body = ErrorBody),
        (status = 503, description = "The timeline is not active", body = ErrorBody),
    ))]
pub(super) async fn timeline_basebackup(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path((tenant_id, timeline_id)): Path<(TenantId, TimelineId)>,
    Query(q): Query<BasebackupQuery>,
) -> Result<Response, ApiError> {
    let tl = readable(&st, &auth, tenant_id, timeline_id)?;
    let gzip = q.gzip.unwrap_or(false);
    let prepared = basebackup::prepare(tl, q.lsn, st.wait_lsn_timeout)
        .await
        .map_err(api_error)?;
    let lsn = prepared.lsn;
    let (w, r) = tokio::io::duplex(CHUNK * 4);
    let producer = tokio::spawn(async move { basebackup::write(&prepared, w, gzip).await });
    // Body chunks from the pipe; at its end, the producer's result (an error becomes a
    // body error, which aborts the response instead of ending it cleanly).
    let body = futures::stream::unfold((r, Some(producer)), |(mut r, producer)| async move {
        let producer = producer?;
        let mut buf = vec![0u8; CHUNK];
        match r.read(&mut buf).await {
            Ok(0) => {}
            Ok(n) => {
                buf.truncate(n);
                return Some((Ok(Bytes::from(buf)), (r, Some(producer))));
            }
            Err(e) => return Some((Err(e), (r, None))),
        }
        let err = match producer.await {
            Ok(Ok(_)) => return None,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("basebackup task failed: {e}"),
        };
        warn!("basebackup failed mid-stream: {err}");
        Some((Err(std::io::Error::other(err)), (r, None)))
    });
    let content_type = if gzip {
        "application/gzip"
    } else {
        "application/x-tar"
    };
    Ok((
        [
            (http::header::CONTENT_TYPE, content_type.to_string()),
            (
                http::header::HeaderName::from_static("x-basebackup-lsn"),
                lsn.to_string(),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
