//! `GET /v2/`: the API version check.

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Req, Result};

pub async fn handle(req: Req<'_>) -> Result<Response> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(req.unsupported("GET, HEAD"));
    }
    req.state.access.authorize(req.headers, &[]).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response())
}
