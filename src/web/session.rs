//! Web sessions: a random cookie value (`berth_session`, HttpOnly, SameSite=Lax, Secure
//! when Berth is reached over HTTPS) whose SHA-256 digest keys a row every replica reads;
//! the row holds the user and the session's CSRF token, which every form posts back.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::{Web, WebError};
use crate::auth::builtin::Resolved;
use crate::auth::secrets::{generate_secret, secret_digest};
use crate::metadata::signin::WebSession;
use crate::metadata::{User, now_millis};

pub const SESSION_COOKIE: &str = "berth_session";
/// The CSRF token of forms shown before a session exists (sign-in, onboarding), sent
/// back both as this cookie and as the form's `csrf` field.
pub const PRESESSION_COOKIE: &str = "berth_csrf";

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for this site: HttpOnly, SameSite=Lax, Secure over HTTPS; an
/// empty value with `max_age` 0 removes the cookie.
pub fn set_cookie(web: &Web, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if web.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or(HeaderValue::from_static(""))
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The person looking at a page: a signed-in user, with what they may do, or nobody.
pub struct Viewer {
    pub user: Option<User>,
    pub access: Arc<Resolved>,
    /// The session's CSRF token (empty without a session).
    pub csrf: String,
    /// The request carried a session cookie that no longer names a session (expired,
    /// signed out elsewhere, or its user removed).
    pub lapsed: bool,
}

impl Viewer {
    pub fn signed_in(&self) -> bool {
        self.user.is_some()
    }

    /// Checks a posted form's CSRF token against the session's.
    pub fn check_csrf(&self, posted: &str) -> Result<(), WebError> {
        if self.lapsed {
            return Err(WebError::SessionLapsed);
        }
        if self.user.is_some() && !self.csrf.is_empty() && same_secret(&self.csrf, posted) {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }
}

/// A signed-in user; anyone else is sent to the sign-in page and brought back after.
pub struct SignedIn(pub Viewer, pub User);

impl FromRequestParts<Web> for Viewer {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Viewer, WebError> {
        if let Some(value) = cookie(&parts.headers, SESSION_COOKIE) {
            let digest = secret_digest(value);
            if let Some(session) = web.meta().get_session(&digest, now_millis()).await? {
                if let Some(user) = web.meta().get_user_by_id(session.user_id).await? {
                    let access = web.tokens.resolve_user(user.clone()).await?;
                    return Ok(Viewer {
                        user: Some(user),
                        access,
                        csrf: session.csrf,
                        lapsed: false,
                    });
                }
            }
            return Ok(Viewer {
                user: None,
                access: web.tokens.anonymous().await?,
                csrf: String::new(),
                lapsed: !value.is_empty(),
            });
        }
        Ok(Viewer {
            user: None,
            access: web.tokens.anonymous().await?,
            csrf: String::new(),
            lapsed: false,
        })
    }
}

impl FromRequestParts<Web> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<SignedIn, Response> {
        let viewer = Viewer::from_request_parts(parts, web)
            .await
            .map_err(IntoResponse::into_response)?;
        match viewer.user.clone() {
            Some(user) => Ok(SignedIn(viewer, user)),
            // A form posted without a live session: refused as a page (a redirect would
            // lose the form and come back to a POST-only address).
            None if !matches!(parts.method, Method::GET | Method::HEAD) => Err(if viewer.lapsed {
                WebError::SessionLapsed.into_response()
            } else {
                WebError::Forbidden("sign in first".into()).into_response()
            }),
            None => {
                let back = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let mut to = format!("/c/login?return_to={}", super::encode(back));
                if viewer.lapsed {
                    to.push_str("&lapsed=1");
                }
                let mut response = Redirect::to(&to).into_response();
                if viewer.lapsed {
                    response
                        .headers_mut()
                        .append(header::SET_COOKIE, set_cookie(web, SESSION_COOKIE, "", 0));
                }
                Err(response)
            }
        }
    }
}

/// Starts a session for `user_id`; the `Set-Cookie` header value to send.
pub async fn start(web: &Web, user_id: i64) -> Result<HeaderValue, WebError> {
    let value = generate_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    let csrf = generate_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    let now = now_millis();
    let max_age = web.session_seconds;
    web.meta()
        .create_session(
            &secret_digest(&value),
            &WebSession {
                user_id,
                csrf,
                created_at: now,
                expires_at: now + max_age * 1000,
            },
        )
        .await?;
    Ok(set_cookie(web, SESSION_COOKIE, &value, max_age))
}

/// Ends the request's session, if any; the `Set-Cookie` value that removes the cookie.
pub async fn end(web: &Web, headers: &HeaderMap) -> Result<HeaderValue, WebError> {
    if let Some(value) = cookie(headers, SESSION_COOKIE) {
        web.meta().delete_session(&secret_digest(value)).await?;
    }
    Ok(set_cookie(web, SESSION_COOKIE, "", 0))
}

/// A CSRF token for a form shown before sign-in: the request's `berth_csrf` cookie, or a
/// new one (with the `Set-Cookie` to send).
pub fn presession_csrf(
    web: &Web,
    headers: &HeaderMap,
) -> Result<(String, Option<HeaderValue>), WebError> {
    if let Some(v) = cookie(headers, PRESESSION_COOKIE).filter(|v| v.len() >= 20) {
        return Ok((v.to_string(), None));
    }
    let v = generate_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    let set = set_cookie(web, PRESESSION_COOKIE, &v, 3600);
    Ok((v, Some(set)))
}

/// Checks a pre-session form's `csrf` field against the `berth_csrf` cookie.
pub fn check_presession_csrf(headers: &HeaderMap, posted: &str) -> Result<(), WebError> {
    match cookie(headers, PRESESSION_COOKIE) {
        Some(v) if !v.is_empty() && same_secret(v, posted) => Ok(()),
        _ => Err(WebError::Csrf),
    }
}
