//! `GET /v2/<name>/tags/list`, paginated.

use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};

use super::{Req, Result, next_link, pagination};
use crate::auth::Access;
use crate::oci::{RegistryError, RepoName};

const DEFAULT_PAGE: i64 = 10_000;
const MAX_PAGE: i64 = 10_000;

pub async fn handle(req: Req<'_>, name: RepoName) -> Result<Response> {
    if req.method != Method::GET {
        return Err(req.unsupported("GET"));
    }
    req.state
        .access
        .authorize(req.headers, &[Access::pull(name.as_str())])
        .await?;
    let (n, last) = pagination(&req, DEFAULT_PAGE)?;
    let n = n.min(MAX_PAGE);
    let meta = &req.state.meta;
    let mut tags = meta
        .list_tags(&name, last.as_deref(), n + 1)
        .await
        .map_err(RegistryError::internal)?;
    if tags.is_empty()
        && !meta
            .repository_exists(&name)
            .await
            .map_err(RegistryError::internal)?
    {
        return Err(RegistryError::name_unknown(&name));
    }
    let more = tags.len() as i64 > n;
    tags.truncate(n as usize);
    let body = serde_json::json!({ "name": name.as_str(), "tags": tags }).to_string();
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if more {
        if let Some(last) = tags.last() {
            resp.headers_mut().insert(
                header::LINK,
                next_link(&format!("/v2/{name}/tags/list"), n, last),
            );
        }
    }
    Ok(resp)
}
