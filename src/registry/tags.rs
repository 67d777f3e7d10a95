//! `GET /v2/<name>/tags/list`, paginated.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{Req, Result, pagination};
use crate::http::next_link;
use crate::oci::RepoName;

const DEFAULT_PAGE: i64 = 10_000;
const MAX_PAGE: i64 = 10_000;

pub async fn list(req: Req<'_>, name: RepoName) -> Result<Response> {
    let (n, last) = pagination(&req, DEFAULT_PAGE)?;
    let n = n.min(MAX_PAGE);
    let mut tags = req
        .state
        .content
        .tags(&name, last.as_deref(), n + 1)
        .await?;
    let more = tags.len() as i64 > n;
    tags.truncate(n as usize);
    let body = serde_json::json!({ "name": name.as_str(), "tags": tags }).to_string();
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let (true, Some(last)) = (more, tags.last()) {
        resp.headers_mut().insert(
            header::LINK,
            next_link(&format!("/v2/{name}/tags/list"), n, last),
        );
    }
    Ok(resp)
}
