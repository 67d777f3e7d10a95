//! The web UI, rendered by this binary on the server (maud templates: every interpolated
//! value is HTML-escaped) and usable without JavaScript. Sign-in (OpenID Connect, and local
//! users when allowed), browsing what the viewer may see, the user's profile (CLI secret,
//! personal access tokens). Every action is checked by the same access rules as `/v2` and
//! `/api/v2.0`, and content changes go through the same content layer.
//!
//! - `session.rs`: cookies, the [`session::Viewer`] of a page, CSRF tokens.
//! - `signin.rs`: the sign-in page, local sign-in, the OpenID Connect redirect, callback
//!   and onboarding, sign-out.
//! - `profile.rs`: the CLI secret and personal access tokens.
//! - `browse.rs`: projects, repositories, artifacts (with pull commands), deletes.
//! - `markdown.rs`, `chart.rs`: a Helm chart's README (sanitised) and Chart.yaml.

pub mod admin;
pub mod browse;
pub mod chart;
pub mod markdown;
pub mod profile;
pub mod robots;
pub mod session;
pub mod signin;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use crate::auth::builtin::BuiltinAccess;
use crate::auth::oidc::Oidc;
use crate::metadata::{MetaError, MetadataStore};
use crate::state::{AppState, WebSettings};

/// What every page handler holds.
#[derive(Clone)]
pub struct Web {
    pub state: AppState,
    pub tokens: Arc<BuiltinAccess>,
    /// OpenID Connect sign-in, when `auth.oidc.issuer` is set.
    pub oidc: Option<Arc<Oidc>>,
    pub settings: WebSettings,
}

impl Web {
    pub fn meta(&self) -> &Arc<dyn MetadataStore> {
        self.state.content.metadata()
    }
}

impl std::ops::Deref for Web {
    type Target = WebSettings;
    fn deref(&self) -> &WebSettings {
        &self.settings
    }
}

pub fn router(web: Web) -> Router {
    let callback = web.redirect_path.clone();
    Router::new()
        .route("/", get(|| async { Redirect::to("/c/projects") }))
        .route("/c/login", get(signin::page).post(signin::local))
        .route("/c/logout", post(signin::logout))
        .route("/c/oidc/login", get(signin::oidc_begin))
        .route(&callback, get(signin::oidc_callback))
        .route("/c/oidc/onboard", post(signin::onboard))
        .route(
            "/c/projects/{project}/robots/new",
            get(robots::new_form).post(robots::create),
        )
        .route("/c/admin/users", get(admin::users))
        .route(
            "/c/admin/robots",
            get(robots::system_list).post(robots::system_create),
        )
        .route("/c/admin/users/{id}/link", post(admin::link))
        .route("/c/robots/{id}/refresh", post(robots::refresh))
        .route("/c/robots/{id}/toggle", post(robots::toggle))
        .route("/c/robots/{id}/delete", post(robots::delete))
        .route("/c/profile", get(profile::page))
        .route("/c/profile/cli-secret", post(profile::new_cli_secret))
        .route("/c/profile/tokens", post(profile::new_token))
        .route("/c/profile/tokens/{id}/revoke", post(profile::revoke_token))
        .route("/c/projects", get(browse::projects))
        .route("/c/projects/{project}", get(browse::project))
        .route(
            "/c/projects/{project}/settings",
            post(browse::project_settings),
        )
        .route(
            "/c/repositories/{*path}",
            get(browse::repository_get).post(browse::repository_post),
        )
        .with_state(web)
}

/// Why a page could not be shown, as a page.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "the form was stale or did not come from this site (its security token did not match); go back, reload the page and try again"
    )]
    Csrf,
    #[error(
        "your session has expired or was ended, so nothing was changed; sign in again and repeat what you did"
    )]
    SessionLapsed,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A service Berth relies on (the identity provider) failed; try again later.
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] MetaError),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::Csrf | WebError::SessionLapsed | WebError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Upstream(_) => StatusCode::BAD_GATEWAY,
            WebError::Internal(_) | WebError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "web page failed");
        }
        let message = match &self {
            WebError::Store(_) | WebError::Internal(_) => {
                "something went wrong on the server; try again, and tell the administrators if it persists".to_string()
            }
            other => other.to_string(),
        };
        let body = layout(
            "Error",
            None,
            html! {
                h1 { "Something is not right" }
                p #error .error { (message) }
                @if matches!(self, WebError::SessionLapsed) {
                    p { a #sign-in-again href="/c/login" { "Sign in again" } }
                }
                p { a href="/" { "Back to the start" } }
            },
        );
        (status, body).into_response()
    }
}

pub type WebResult<T> = Result<T, WebError>;

/// A full page: header with the signed-in user (and a sign-out button), then `body`.
pub fn layout(title: &str, user: Option<(&str, &str)>, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Berth" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    a .brand href="/" { "Berth" }
                    nav {
                        a href="/c/projects" { "Projects" }
                        @if let Some((name, csrf)) = user {
                            a href="/c/profile" #user { (name) }
                            form method="post" action="/c/logout" .inline {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" #logout { "Sign out" }
                            }
                        } @else {
                            a href="/c/login" { "Sign in" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(page.into_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{display:flex;justify-content:space-between;align-items:center;padding:.6em 1.2em;background:#123;color:#fff}\
header a{color:#fff;margin-right:1em}.brand{font-weight:bold;text-decoration:none}\
main{padding:1em 1.5em;max-width:70em}.inline{display:inline}\
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}\
code,pre{background:#f4f4f4;padding:.1em .3em}.error{color:#a00}.notice{background:#ffe;padding:.6em;border:1px solid #cc9}\
.secret{font-size:1.1em;word-break:break-all}";

/// The registry's host as the browser reaches it, for the commands pages show.
pub fn registry_host(web: &Web, headers: &axum::http::HeaderMap) -> String {
    if !web.external_url.is_empty() {
        let u = web.external_url.trim_end_matches('/');
        return u.split_once("://").map_or(u, |(_, h)| h).to_string();
    }
    crate::http::header_str(headers, axum::http::header::HOST)
        .unwrap_or("localhost")
        .to_string()
}

/// A button that copies an element's text (the page works without it).
pub fn copy_button(id: &str) -> Markup {
    html! {
        button type="button" .copy data-copy=(id)
            onclick="navigator.clipboard.writeText(document.getElementById(this.dataset.copy).textContent)" { "Copy" }
    }
}

/// Percent-encodes a value for a query string.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A path of this site to go to after signing in; anything else (another site, a
/// scheme-relative `//host`) becomes `/`.
pub fn local_path(s: &str) -> String {
    if s.starts_with('/') && !s.starts_with("//") && !s.contains('\\') {
        s.to_string()
    } else {
        "/".to_string()
    }
}
