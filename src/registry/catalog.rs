//! `GET /v2/_catalog`: repositories the caller may pull, paginated.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{Req, Result, pagination};
use crate::http::next_link;

/// Page size when the client gives no `n`, and the largest it may ask for.
const DEFAULT_PAGE: i64 = 1000;
const MAX_PAGE: i64 = 10_000;

pub async fn list(req: Req<'_>) -> Result<Response> {
    let (n, last) = pagination(&req, DEFAULT_PAGE)?;
    let n = n.min(MAX_PAGE);
    let (page, more) = req
        .state
        .content
        .repositories(last, n, |r| req.grant.lists(r))
        .await?;
    let body = serde_json::json!({ "repositories": page }).to_string();
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let (true, Some(last)) = (more, page.last()) {
        resp.headers_mut()
            .insert(header::LINK, next_link("/v2/_catalog", n, last));
    }
    Ok(resp)
}
