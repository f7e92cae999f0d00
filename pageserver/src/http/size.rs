//! `GET /v1/tenant/{id}/synthetic_size`: the tenant's synthetic size as JSON, or as an HTML
//! page (the picture and the inputs as a table) for `Accept: text/html`.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use http::HeaderMap;
use tenant_size_model::{SizeResult, render_svg};
use utils::TenantId;
use utils::http::{ApiError, AuthContext, ErrorBody, Path, Query};

use super::models::{HexId, SyntheticSizeBody, SyntheticSizeQuery};
use super::{ApiState, read_error, tenant};
use crate::tenant::size::{SizeError, SizeOptions, SyntheticSize, synthetic_size};

fn api_error(e: SizeError) -> ApiError {
    match e {
        SizeError::NotActive(..) => ApiError::Unavailable(e.to_string()),
        SizeError::Broken(..) => ApiError::Conflict(e.to_string()),
        SizeError::Read { source, .. } => read_error(source),
        SizeError::Model(_) | SizeError::Internal(_) | SizeError::Task(_) => {
            ApiError::Internal(e.to_string())
        }
    }
}

/// The tenant's synthetic size: for every stretch of every branch, the cheaper of keeping its
/// WAL or a snapshot, so that everything the retention promises stays readable.
#[utoipa::path(get, path = "/v1/tenant/{tenant_id}/synthetic_size", tag = "tenant",
    params(("tenant_id" = HexId, Path), SyntheticSizeQuery),
    responses(
        (status = 200, description = "The size, the choice per segment and the inputs (an HTML page with the picture for Accept: text/html)", content(
            (SyntheticSizeBody = "application/json"),
            (String = "text/html"),
        )),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 409, description = "A timeline is broken", body = ErrorBody),
        (status = 500, description = "A logical size could not be read", body = ErrorBody),
        (status = 503, description = "A timeline is still loading", body = ErrorBody),
    ))]
pub(super) async fn tenant_synthetic_size(
    State(st): State<ApiState>,
    auth: AuthContext,
    Path(tenant_id): Path<TenantId>,
    Query(q): Query<SyntheticSizeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &auth, tenant_id)?;
    let retention_period = match &q.retention_period {
        Some(text) => Some(parse_period(text).map_err(ApiError::BadRequest)?),
        None => None,
    };
    let options = SizeOptions {
        retention_period,
        inputs_only: q.inputs_only.unwrap_or(false),
    };
    let size = synthetic_size(&tenant, options).await.map_err(api_error)?;
    if options.retention_period.is_none() && !options.inputs_only {
        crate::metrics::set_synthetic_size(tenant_id, size.size);
    }
    let wants_html = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        return Ok(Html(html_page(&size)).into_response());
    }
    let encode = |e: serde_json::Error| ApiError::Internal(format!("encoding: {e}"));
    let body = SyntheticSizeBody {
        id: size.id,
        size: size.size,
        segment_sizes: size
            .segment_sizes
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(encode)?,
        inputs: serde_json::to_value(&size.inputs).map_err(encode)?,
    };
    Ok(axum::Json(body).into_response())
}

/// `retention_period`: up to 9 digits and one unit of `ms`, `s`, `m`, `h`, `d` (what the
/// OpenAPI document says; anything else is refused rather than guessed at).
fn parse_period(text: &str) -> Result<std::time::Duration, String> {
    let refuse =
        || format!("retention_period: {text:?} is not a number and a unit (0s, 10m, 1h, 7d)");
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() || number.len() > 9 {
        return Err(refuse());
    }
    let n: u64 = number.parse().map_err(|_| refuse())?;
    let seconds = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(refuse()),
    };
    Ok(std::time::Duration::from_secs(n * seconds))
}

/// The page: the picture, then one table row per segment.
fn html_page(size: &SyntheticSize) -> String {
    let model = &size.inputs.model;
    let result = SizeResult {
        total_size: size.size.unwrap_or(0),
        segments: size.segment_sizes.clone().unwrap_or_default(),
    };
    let mut page = String::new();
    let title = format!("Synthetic size of tenant {}", size.id);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:16px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>\n\
         <h1>{title}</h1>\n<p>{}</p>\n{}\n<h2>Segments</h2>\n<table><tr><th>#</th><th>timeline</th>\
         <th>kind</th><th>parent</th><th>LSN</th><th>logical size</th><th>needed</th>\
         <th>method</th><th>subtree bytes</th></tr>\n",
        match size.size {
            Some(bytes) => format!("{bytes} bytes"),
            None => "inputs only".to_string(),
        },
        render_svg(model, &result),
    );
    for (index, segment) in model.segments.iter().enumerate() {
        let point = size.inputs.points.get(index);
        let chosen = result.segments.get(index);
        let _ = writeln!(
            page,
            "<tr><td>{index}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            point.map_or(String::new(), |p| p.timeline_id.to_string()),
            point.map_or(String::new(), |p| format!("{:?}", p.kind)),
            segment.parent.map_or(String::new(), |p| p.to_string()),
            utils::Lsn(segment.lsn),
            segment.size.map_or(String::new(), |s| s.to_string()),
            segment.needed,
            chosen.map_or(String::new(), |c| format!("{:?}", c.method)),
            chosen.map_or(String::new(), |c| c.accum_size.to_string()),
        );
    }
    page.push_str("</table>\n<h2>Timelines</h2>\n<pre>");
    let timelines = serde_json::to_string_pretty(&size.inputs.timelines).unwrap_or_default();
    page.push_str(&timelines.replace('&', "&amp;").replace('<', "&lt;"));
    page.push_str("</pre>\n</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_period;

    #[test]
    fn retention_periods_follow_the_documented_pattern() {
        assert_eq!(parse_period("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_period("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_period("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_period("250ms"), Ok(Duration::from_millis(250)));
        for bad in [
            "",
            "0",
            "h",
            "1 h",
            "1h30m",
            "1234567890s",
            "-1s",
            "1w",
            "soon",
        ] {
            let error = parse_period(bad).unwrap_err();
            assert!(error.contains("retention_period"), "{bad}: {error}");
        }
    }
}
