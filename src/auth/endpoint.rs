//! The token endpoint, `GET /service/token` (the Docker registry token authentication
//! spec): Basic credentials or none in, a signed token for what was asked and may be done
//! out. Wrong credentials are a 401 here, so `docker login` fails loudly instead of going
//! on with an anonymous token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Credentials;
use super::builtin::{BuiltinAccess, CredentialError};
use super::jwt::AccessEntry;
use crate::http::Query;

/// Scopes one request may ask for at most.
const MAX_SCOPES: usize = 64;

pub async fn token(
    State(service): State<Arc<BuiltinAccess>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let query = Query(uri.query().unwrap_or(""));
    let mut scopes = Vec::new();
    for s in query.all("scope") {
        for one in s.split(' ').filter(|s| !s.is_empty()) {
            match parse_scope(one) {
                Some(entry) => scopes.push(entry),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_SCOPE",
                        &format!(
                            "scope {one:?} is not of the form <type>:<name>:<action>[,<action>...]"
                        ),
                    );
                }
            }
        }
    }
    if scopes.len() > MAX_SCOPES {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_SCOPE",
            &format!("at most {MAX_SCOPES} scopes may be asked for at once"),
        );
    }
    let who = match Credentials::from_headers(&headers) {
        Credentials::Basic { username, password } => {
            match service.sign_in(&username, &password, false).await {
                Ok(who) => who,
                Err(CredentialError::Wrong) => {
                    return error(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "unknown user or wrong password",
                    );
                }
                Err(e @ CredentialError::SignInLapsed) => {
                    return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &e.to_string());
                }
                Err(e @ CredentialError::Throttled(wait)) => {
                    let mut r = error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TOOMANYREQUESTS",
                        &e.to_string(),
                    );
                    if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
                        r.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                    return r;
                }
                Err(CredentialError::Store(e)) => {
                    tracing::error!(error = %e, "checking credentials failed");
                    return unavailable();
                }
            }
        }
        Credentials::None => match service.anonymous().await {
            Ok(who) => who,
            Err(e) => {
                tracing::error!(error = %e, "reading public projects failed");
                return unavailable();
            }
        },
        Credentials::Bearer(_) | Credentials::Unsupported => {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "the token endpoint takes Basic credentials (a user's password or a robot's secret), or none",
            );
        }
    };
    match service.issue(&who, &scopes) {
        Ok(t) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({
                "token": t.token,
                "access_token": t.token,
                "expires_in": t.expires_in,
                "issued_at": t.issued_at,
            })
            .to_string(),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "signing a token failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "the token could not be signed",
            )
        }
    }
}

/// `type[(class)]:name:actions`; a name may hold `:` (a registry host with a port).
fn parse_scope(s: &str) -> Option<AccessEntry> {
    let (kind, rest) = s.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let kind = kind.split('(').next().unwrap_or(kind);
    if kind.is_empty() || name.is_empty() {
        return None;
    }
    Some(AccessEntry {
        kind: kind.to_string(),
        name: name.to_string(),
        actions: actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unavailable() -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "the token service cannot reach its database; retry later",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_with_classes_and_colons_in_names() {
        let s = parse_scope("repository:team/app:pull,push").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository", "team/app")
        );
        assert_eq!(s.actions, vec!["pull", "push"]);
        let s = parse_scope("repository(plugin):host:5000/a:pull").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str()),
            ("repository", "host:5000/a")
        );
        let s = parse_scope("registry:catalog:*").unwrap();
        assert_eq!(s.actions, vec!["*"]);
        for bad in ["repository", "repository:a", ":a:pull", "repository::pull"] {
            assert!(parse_scope(bad).is_none(), "{bad}");
        }
    }
}
