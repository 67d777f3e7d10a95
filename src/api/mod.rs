//! The REST API under `/api/v2.0`, in Harbor's shapes (paths, JSON, error bodies) for what
//! it covers, so that automation written for Harbor works against Berth unchanged. So far:
//! system info, users, projects, their members, repositories and artifacts, and robot
//! accounts. Callers authenticate with Basic
//! credentials (a user's password or a robot's secret), checked afresh by the built-in
//! access backend.

mod members;
mod projects;
mod repositories;
mod robots;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::Credentials;
use crate::auth::builtin::{BuiltinAccess, CredentialError, Resolved};
use crate::config::ProjectCreation;
use crate::metadata::MetaError;
use crate::state::AppState;

/// What every API handler holds.
#[derive(Clone)]
pub struct Api {
    pub state: AppState,
    pub tokens: Arc<BuiltinAccess>,
    pub project_creation: ProjectCreation,
    /// What robot account names start with (`auth.robot_prefix`).
    pub robot_prefix: String,
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/v2.0/systeminfo", get(systeminfo))
        .route("/api/v2.0/users/current", get(current_user))
        .route("/api/v2.0/users", get(users::list).post(users::create))
        .route(
            "/api/v2.0/users/{user_id}",
            get(users::get).delete(users::delete),
        )
        .route(
            "/api/v2.0/users/{user_id}/password",
            axum::routing::put(users::password),
        )
        .route(
            "/api/v2.0/users/{user_id}/sysadmin",
            axum::routing::put(users::sysadmin),
        )
        .route(
            "/api/v2.0/projects",
            get(projects::list)
                .head(projects::exists)
                .post(projects::create),
        )
        .route(
            "/api/v2.0/projects/{project}",
            get(projects::get)
                .put(projects::update)
                .delete(projects::delete),
        )
        .route(
            "/api/v2.0/projects/{project}/members",
            get(members::list).post(members::add),
        )
        .route(
            "/api/v2.0/projects/{project}/members/{mid}",
            get(members::get)
                .put(members::update)
                .delete(members::remove),
        )
        .route(
            "/api/v2.0/projects/{project}/repositories",
            get(repositories::list),
        )
        .route(
            "/api/v2.0/projects/{project}/repositories/{repository}/artifacts",
            get(repositories::artifacts),
        )
        .route(
            "/api/v2.0/projects/{project}/repositories/{repository}/artifacts/{reference}",
            axum::routing::delete(repositories::delete_artifact),
        )
        .route(
            "/api/v2.0/projects/{project}/repositories/{repository}/artifacts/{reference}/tags/{tag}",
            axum::routing::delete(repositories::delete_tag),
        )
        .route("/api/v2.0/robots", get(robots::list).post(robots::create))
        .route(
            "/api/v2.0/robots/{robot_id}",
            get(robots::get)
                .put(robots::update)
                .patch(robots::refresh)
                .delete(robots::delete),
        )
        .with_state(api)
        // The API's bodies are small JSON documents.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(harbor_shaped))
}

/// Refusals axum answers itself (a body over the limit, an unknown method) in Harbor's
/// error shape too.
async fn harbor_shaped(resp: Response) -> Response {
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    match resp.status() {
        StatusCode::PAYLOAD_TOO_LARGE if !json => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is over the API's limit of {MAX_BODY} bytes"),
        )
        .into_response(),
        StatusCode::METHOD_NOT_ALLOWED if !json => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "this method is not supported here",
        )
        .into_response(),
        _ => resp,
    }
}

/// The largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// An error in Harbor's shape: `{"errors":[{"code","message"}]}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait before retrying (`Retry-After`), for a throttled caller.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required: send Basic credentials (a user's password or a robot's secret)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "API request failed");
        }
        let body =
            serde_json::json!({ "errors": [{ "code": self.code, "message": self.message }] });
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"berth\""),
            );
        }
        resp
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> ApiError {
        match e {
            MetaError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "CONFLICT", m),
            MetaError::NotFound(m) => ApiError::not_found(m),
            e @ MetaError::ProjectNotEmpty { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "PRECONDITION",
                e.to_string(),
            ),
            e => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                format!("internal error: {e}"),
            ),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Who calls: `None` for a request without credentials; wrong credentials are an error.
pub async fn caller(api: &Api, headers: &HeaderMap) -> ApiResult<Option<Arc<Resolved>>> {
    match Credentials::from_headers(headers) {
        Credentials::None => Ok(None),
        Credentials::Basic { username, password } => {
            // Checked afresh: a role given or taken away applies to the next API call.
            match api.tokens.sign_in(&username, &password, false).await {
                Ok(r) => Ok(Some(r)),
                Err(e @ (CredentialError::Wrong | CredentialError::SignInLapsed)) => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    e.to_string(),
                )),
                Err(e @ CredentialError::Throttled(wait)) => Err(ApiError {
                    retry_after: Some(wait),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TOO_MANY_REQUESTS",
                        e.to_string(),
                    )
                }),
                Err(CredentialError::Store(e)) => Err(e.into()),
            }
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the API takes Basic credentials",
        )),
    }
}

/// The caller, who must have sent credentials.
pub async fn signed_in(api: &Api, headers: &HeaderMap) -> ApiResult<Arc<Resolved>> {
    caller(api, headers)
        .await?
        .ok_or_else(ApiError::unauthorized)
}

/// A JSON request body; `what` it should have been goes into the error.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not {what}: {e}")))
}

/// Harbor's `page` (from 1) and `page_size` (10 unless asked, at most 100).
pub fn paging(q: &crate::http::Query<'_>) -> (u64, u64) {
    let page = q
        .one("page")
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    let size = q
        .one("page_size")
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    (page, size)
}

/// Milliseconds since the epoch as Harbor's timestamps (RFC 3339, UTC).
pub fn timestamp(ms: i64) -> String {
    crate::auth::builtin::rfc3339((ms.max(0) / 1000) as u64)
}

async fn systeminfo(State(api): State<Api>) -> Response {
    axum::Json(serde_json::json!({
        "auth_mode": "db_auth",
        "primary_auth_mode": false,
        "project_creation_restriction": api.project_creation.as_str(),
        "self_registration": false,
        "has_ca_root": false,
        "harbor_version": concat!("berth-", env!("CARGO_PKG_VERSION")),
        "registry_storage_provider_name": "berth",
        "read_only": false,
        "with_chartmuseum": false,
        "notification_enable": false,
    }))
    .into_response()
}

async fn current_user(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    let Some(id) = who.user_id else {
        return Err(ApiError::not_found("robot accounts are not users"));
    };
    let user = api
        .state
        .content
        .metadata()
        .get_user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("the user no longer exists"))?;
    Ok(axum::Json(users::user_json(&user)).into_response())
}
