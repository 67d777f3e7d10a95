//! `GET /v2/`: the API version check (the dispatcher has already let the caller in).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Result;

pub fn check() -> Result<Response> {
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response())
}
