//! The REST API under `/api/v2.0`, in Harbor's shapes (paths, JSON, error bodies) for what
//! it covers, so that automation written for Harbor works against Berth unchanged. So far:
//! system info, users, projects, their members, repositories and artifacts, and robot
//! accounts. Callers authenticate with Basic
//! credentials (a user's password or a robot's secret), checked afresh by the built-in
//! access backend.

mod members;
pub mod openapi;
mod projects;
mod repositories;
mod robots;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// Where the API is mounted; the OpenAPI document names it as its server.
pub const BASE: &str = "/api/v2.0";

/// Every route of the API with its documentation: registering a handler here routes it and
/// documents it (from its `#[utoipa::path]`), so the two cannot drift apart. One `routes!`
/// per path.
fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(openapi::document_base())
        .routes(routes!(systeminfo))
        .routes(routes!(openapi::serve))
        .routes(routes!(current_user))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::delete))
        .routes(routes!(users::password))
        .routes(routes!(users::sysadmin))
        .routes(routes!(users::cli_secret))
        .routes(routes!(users::oidc_identity))
        .routes(routes!(projects::list, projects::exists, projects::create))
        .routes(routes!(projects::get, projects::update, projects::delete))
        .routes(routes!(members::list, members::add))
        .routes(routes!(members::get, members::update, members::remove))
        .routes(routes!(repositories::list))
        .routes(routes!(repositories::delete))
        .routes(routes!(repositories::artifacts))
        .routes(routes!(repositories::delete_artifact))
        .routes(routes!(repositories::delete_tag))
        .routes(routes!(robots::list, robots::create))
        .routes(routes!(
            robots::get,
            robots::update,
            robots::refresh,
            robots::delete
        ))
}

/// The OpenAPI document of the API, generated from the routes.
pub fn document() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

pub fn router(api: Api) -> Router {
    let (routes, _) = routes().split_for_parts();
    Router::new()
        .nest(BASE, routes.with_state(api))
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

/// Harbor's error body, `{"errors":[{"code","message"}]}`: what every refusal answers.
#[derive(Serialize, ToSchema)]
pub struct Errors {
    pub errors: Vec<ErrorEntry>,
}

/// One error of Harbor's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorEntry {
    /// A stable code, e.g. `NOT_FOUND`, `FORBIDDEN`, `UNAUTHORIZED`.
    pub code: String,
    pub message: String,
}

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
        let body = Errors {
            errors: vec![ErrorEntry {
                code: self.code.to_string(),
                message: self.message,
            }],
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
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
            e => {
                if matches!(e, MetaError::Database(_)) {
                    crate::ops::metrics::metrics().database_error();
                }
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_SERVER_ERROR",
                    format!("internal error: {e}"),
                )
            }
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
                Err(e @ (CredentialError::Wrong | CredentialError::SignInLapsed)) => Err(
                    ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string()),
                ),
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
        Credentials::Bearer(token) if api.state.oidc.is_some() => {
            id_token_caller(api, token).await.map(Some)
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the API takes Basic credentials (or an ID token from the identity provider)",
        )),
    }
}

/// A script's caller, by an ID token from the configured OpenID Connect provider.
async fn id_token_caller(api: &Api, token: &str) -> ApiResult<Arc<Resolved>> {
    let refused = |why: String| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", why);
    let Some(oidc) = api.state.oidc.as_ref() else {
        return Err(refused("no identity provider is configured".into()));
    };
    let (issuer, subject) = match oidc.verify_id_token(token).await {
        Ok(who) => who,
        Err(crate::auth::oidc::OidcError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(refused(format!("the ID token is not valid: {e}"))),
    };
    let meta = api.state.content.metadata();
    let user = meta
        .get_user_by_oidc(&issuer, &subject)
        .await?
        .ok_or_else(|| refused("no user has this identity: sign in to the web UI first".into()))?;
    Ok(api.tokens.resolve_user(user).await?)
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

/// Harbor's paging parameters, as the listings other than projects' read them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct Paging {
    /// Page number, from 1.
    #[param(minimum = 1)]
    page: Option<u64>,
    /// Items per page: 10 unless asked, at most 100.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u64>,
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

/// Harbor's `GeneralInfo`: what kind of server this is.
#[derive(Serialize, ToSchema)]
pub struct GeneralInfo {
    /// Always `db_auth`: local users and robots.
    pub auth_mode: &'static str,
    pub primary_auth_mode: bool,
    /// `everyone` or `adminonly` (`auth.project_creation`).
    pub project_creation_restriction: &'static str,
    pub self_registration: bool,
    pub has_ca_root: bool,
    /// `berth-<version>`.
    pub harbor_version: &'static str,
    pub registry_storage_provider_name: &'static str,
    pub read_only: bool,
    pub with_chartmuseum: bool,
    pub notification_enable: bool,
}

/// What kind of server this is; no credentials needed.
#[utoipa::path(
    get,
    path = "/systeminfo",
    operation_id = "getSystemInfo",
    tag = "systeminfo",
    security(()),
    responses((status = 200, description = "The server's general information", body = GeneralInfo)),
)]
async fn systeminfo(State(api): State<Api>) -> axum::Json<GeneralInfo> {
    axum::Json(GeneralInfo {
        auth_mode: "db_auth",
        primary_auth_mode: false,
        project_creation_restriction: api.project_creation.as_str(),
        self_registration: false,
        has_ca_root: false,
        harbor_version: concat!("berth-", env!("CARGO_PKG_VERSION")),
        registry_storage_provider_name: "berth",
        read_only: false,
        with_chartmuseum: false,
        notification_enable: false,
    })
}

/// The user whose credentials the request carries (a robot is not a user: 404).
#[utoipa::path(
    get,
    path = "/users/current",
    operation_id = "getCurrentUserInfo",
    tag = "user",
    responses(
        (status = 200, description = "The calling user", body = users::UserResp),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
    ),
)]
async fn current_user(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<users::UserResp>> {
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
    Ok(axum::Json(users::UserResp::from(&user)))
}
