//! The API's OpenAPI 3 document: generated from the handlers' `#[utoipa::path]`
//! attributes and the JSON types they read and write, as `api::routes` registers them;
//! served at `GET /api/v2.0/openapi.json`, printed by `berth openapi`, and kept in the
//! repository as `docs/openapi.json` (a test fails when the three differ).
//!
//! Schema names are Harbor's where Berth mirrors a Harbor model, since Harbor clients are
//! generated from those names.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

use super::Errors;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth REST API",
        description = "Berth's `/api/v2.0`: Harbor's v2.0 API (paths, JSON, error bodies) for \
                       what Berth covers: system info, users, projects and their members, \
                       repositories and artifacts, robot accounts. Callers authenticate with \
                       HTTP Basic credentials: a user's password or a robot's secret.",
    ),
    servers((url = "/api/v2.0")),
    modifiers(&BasicAuth),
    security(("basic" = [])),
    tags(
        (name = "systeminfo", description = "What kind of server this is"),
        (name = "user", description = "Local users"),
        (name = "project", description = "Projects: the first path segment of repository names"),
        (name = "member", description = "Who holds which role in a project"),
        (name = "repository", description = "The repositories of a project"),
        (name = "artifact", description = "The manifests of a repository, with their tags"),
        (name = "robot", description = "Robot accounts, at project or system level"),
    ),
    components(
        schemas(Errors),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PreconditionFailed)
    ),
)]
struct ApiDoc;

/// The document before the routes add their paths and schemas.
pub(super) fn document_base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// HTTP Basic, named `basic` as in Harbor's document.
struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "basic",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
            );
    }
}

/// The request is malformed (a body that is not the expected JSON, a bad parameter).
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct BadRequest(Errors);

/// Credentials are missing or wrong (`WWW-Authenticate: Basic`).
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Unauthorized(Errors);

/// The caller may not do this.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Forbidden(Errors);

/// Not found, or not visible to the caller.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct NotFound(Errors);

/// It exists already.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Conflict(Errors);

/// The project still holds repositories.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct PreconditionFailed(Errors);

/// The document as `docs/openapi.json` holds it: pretty-printed, with a final newline.
pub fn text() -> String {
    let mut s = serde_json::to_string_pretty(&super::document())
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenAPI",
    tag = "systeminfo",
    security(()),
    responses((status = 200, description = "This OpenAPI document", body = Object)),
)]
pub(super) async fn serve() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        TEXT.get_or_init(text).as_str(),
    )
        .into_response()
}
