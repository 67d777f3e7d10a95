//! `GET /v2/_catalog`: repositories the caller may pull, paginated.

use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};

use super::{Req, Result, next_link, pagination};
use crate::oci::RegistryError;

/// Page size when the client gives no `n`, and the largest it may ask for.
const DEFAULT_PAGE: i64 = 1000;
const MAX_PAGE: i64 = 10_000;

pub async fn handle(req: Req<'_>) -> Result<Response> {
    if req.method != Method::GET {
        return Err(req.unsupported("GET"));
    }
    let grant = req.state.access.authorize(req.headers, &[]).await?;
    let (n, last) = pagination(&req, DEFAULT_PAGE)?;
    let n = n.min(MAX_PAGE);
    // Read in batches until a page of visible repositories (plus one, to know whether
    // there is a next page) is filled.
    let mut visible = Vec::new();
    let mut cursor = last;
    while (visible.len() as i64) <= n {
        let batch = req
            .state
            .meta
            .list_repositories(cursor.as_deref(), (n + 1).max(100))
            .await
            .map_err(RegistryError::internal)?;
        let done = (batch.len() as i64) < (n + 1).max(100);
        cursor = batch.last().cloned();
        visible.extend(batch.into_iter().filter(|r| grant.may_pull(r)));
        if done {
            break;
        }
    }
    let more = visible.len() as i64 > n;
    visible.truncate(n as usize);
    let body = serde_json::json!({ "repositories": visible }).to_string();
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if more {
        if let Some(last) = visible.last() {
            resp.headers_mut()
                .insert(header::LINK, next_link("/v2/_catalog", n, last));
        }
    }
    Ok(resp)
}
