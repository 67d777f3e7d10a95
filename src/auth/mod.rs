//! The access seam, in three parts that a backend implements separately:
//!
//! - **authentication**: the credentials a request carries ([`Credentials`]) become a
//!   [`Principal`] (anonymous, a user, a robot, the holder of a bearer token), or are
//!   refused;
//! - **authorization**: may this principal do this [`Action`] on this repository?
//! - **the challenge**: what a refused `/v2` client is told so that it can authenticate
//!   (`WWW-Authenticate`).
//!
//! [`check`] asks all three once per request, for everything the request needs; the `/v2`
//! dispatcher derives what that is from the route and method. Which backend answers (open,
//! tokens from an external issuer) is decided once, in `state.rs`. Every backend passes
//! the one suite in `tests/access_suite.rs`.

pub mod builtin;
pub mod endpoint;
pub mod jwt;
pub mod oidc;
pub mod roles;
pub mod secrets;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{HeaderMap, header};
use base64::Engine as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// Actions wanted on one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access<'a> {
    pub repository: &'a str,
    pub actions: &'static [Action],
}

impl<'a> Access<'a> {
    pub fn pull(repository: &'a str) -> Access<'a> {
        Access {
            repository,
            actions: &[Action::Pull],
        }
    }

    /// Pushing includes pulling: a client checks what is there before it uploads.
    pub fn push(repository: &'a str) -> Access<'a> {
        Access {
            repository,
            actions: &[Action::Pull, Action::Push],
        }
    }

    pub fn delete(repository: &'a str) -> Access<'a> {
        Access {
            repository,
            actions: &[Action::Delete],
        }
    }
}

/// Accesses as the token spec's scope: `repository:<name>:<action>,<action> ...`.
pub fn scope(wanted: &[Access<'_>]) -> String {
    wanted
        .iter()
        .map(|a| {
            let actions: Vec<&str> = a.actions.iter().map(|x| x.as_str()).collect();
            format!("repository:{}:{}", a.repository, actions.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a request presents to prove who it is, read from its `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer(&'a str),
    /// A scheme this registry does not speak, or a malformed header.
    Unsupported,
}

impl<'a> Credentials<'a> {
    pub fn from_headers(headers: &'a HeaderMap) -> Credentials<'a> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Credentials::None;
        };
        let Some((scheme, rest)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
            return Credentials::Unsupported;
        };
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Credentials::Bearer(rest);
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((username, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                return Credentials::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                };
            }
        }
        Credentials::Unsupported
    }
}

/// What a signed-in user or robot may do, resolved when its credentials were checked (its
/// roles and permissions, the public projects), so that asking needs no database.
pub trait Authority: Send + Sync + std::fmt::Debug {
    fn allows(&self, repository: &str, action: Action) -> bool;

    /// Whether the catalog shows `repository`.
    fn lists(&self, repository: &str) -> bool {
        self.allows(repository, Action::Pull)
    }
}

/// Who is calling, once authenticated.
#[derive(Clone, Debug)]
pub enum Principal {
    Anonymous,
    User {
        name: String,
        authority: Arc<dyn Authority>,
    },
    Robot {
        name: String,
        authority: Arc<dyn Authority>,
    },
    /// The holder of a bearer token: it may do what the token grants.
    Token {
        subject: String,
        grants: Arc<TokenGrants>,
    },
}

/// What a bearer token grants: actions per repository, whether it may list the whole
/// catalog (`registry:catalog:*`), and the projects whose repositories the catalog shows
/// it (entries of type `project` with action `pull`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenGrants {
    pub repositories: HashMap<String, Vec<Action>>,
    pub catalog: bool,
    pub listed_projects: std::collections::HashSet<String>,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

impl TokenGrants {
    pub fn allows(&self, repository: &str, action: Action) -> bool {
        self.repositories
            .get(repository)
            .is_some_and(|actions| actions.contains(&action))
    }

    /// Whether the catalog shows `repository` to the holder.
    pub fn lists(&self, repository: &str) -> bool {
        self.catalog
            || self.allows(repository, Action::Pull)
            || self.listed_projects.contains(project_of(repository))
    }
}

/// The project a repository belongs to: its first path segment.
pub fn project_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// Why a request was not let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials (or none this backend speaks), and anonymous callers may not do this.
    Missing,
    /// Credentials that are not valid, and why.
    Invalid(String),
    /// A known principal that may not do what the request needs.
    Insufficient,
    /// Too many failed logins lately (for the account or from the address): credentials
    /// are not checked for this many more seconds.
    Throttled(u64),
}

/// What a client throttled for `wait` seconds is told.
pub fn throttled(wait: u64) -> String {
    format!("too many failed logins for this account or from this address; retry in {wait} s")
}

/// How a refused client is told to authenticate: the value of `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge(pub String);

impl Challenge {
    /// The Docker token spec's challenge: where to get a token (`realm`), for which
    /// `service`, the `scope` wanted and, after a refused token, why (`error`).
    pub fn bearer(
        realm: &str,
        service: &str,
        wanted: &[Access<'_>],
        refusal: &Refusal,
    ) -> Challenge {
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            quote(realm),
            quote(service)
        );
        let scope = scope(wanted);
        if !scope.is_empty() {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        match refusal {
            Refusal::Missing => {}
            Refusal::Invalid(_) => value.push_str(",error=\"invalid_token\""),
            Refusal::Insufficient => value.push_str(",error=\"insufficient_scope\""),
            Refusal::Throttled(_) => {}
        }
        Challenge(value)
    }
}

#[async_trait]
pub trait AccessController: Send + Sync + 'static {
    /// Credentials to a principal: `Anonymous` when the request carries none this backend
    /// speaks, an error when it carries some that are not valid.
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Principal, Refusal>;

    /// Whether `principal` may use the registry at all (`GET /v2/`, the catalog).
    fn admits(&self, principal: &Principal) -> bool;

    /// Whether `principal` may do `action` on `repository`.
    fn allows(&self, principal: &Principal, repository: &str, action: Action) -> bool;

    /// Whether the catalog shows `repository` to `principal`.
    fn lists(&self, principal: &Principal, repository: &str) -> bool {
        self.allows(principal, repository, Action::Pull)
    }

    /// A refusal as a sentence for the client, in this backend's words (`scope` is what
    /// the request needed, empty when it only asked to come in).
    fn explain(&self, refusal: &Refusal, scope: &str) -> String {
        match refusal {
            Refusal::Missing => "authentication required".into(),
            Refusal::Invalid(why) => format!("invalid credentials: {why}"),
            Refusal::Insufficient if scope.is_empty() => "not allowed to use this registry".into(),
            Refusal::Insufficient => format!("not allowed: {scope}"),
            Refusal::Throttled(wait) => throttled(*wait),
        }
    }

    /// The challenge (`WWW-Authenticate`) a refused `/v2` client gets for `wanted`; `None`
    /// when this backend has no way in to offer. `host` is the request's `Host`, for a
    /// backend that sends clients back to itself.
    fn challenge(
        &self,
        wanted: &[Access<'_>],
        refusal: &Refusal,
        host: Option<&str>,
    ) -> Option<Challenge>;
}

/// A request that was let through: who it is, and what else it may do (a mount's source,
/// the repositories the catalog shows).
#[derive(Clone)]
pub struct Grant {
    principal: Principal,
    controller: Arc<dyn AccessController>,
}

impl Grant {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn allows(&self, repository: &str, action: Action) -> bool {
        self.controller.allows(&self.principal, repository, action)
    }

    pub fn lists(&self, repository: &str) -> bool {
        self.controller.lists(&self.principal, repository)
    }
}

/// A request that was not let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    pub refusal: Refusal,
    /// The scope the request needed (empty for `/v2/` and the catalog).
    pub scope: String,
    pub challenge: Option<Challenge>,
    /// The refusal as a sentence for the client, in the backend's words.
    pub message: String,
}

/// The one question, asked once per request: may the caller, given its credentials, do
/// everything in `wanted` (empty: only come in)?
pub async fn check(
    controller: &Arc<dyn AccessController>,
    headers: &HeaderMap,
    wanted: &[Access<'_>],
) -> Result<Grant, Denied> {
    let denied = |refusal: Refusal| {
        let scope = scope(wanted);
        Denied {
            challenge: controller.challenge(
                wanted,
                &refusal,
                headers.get(header::HOST).and_then(|h| h.to_str().ok()),
            ),
            message: controller.explain(&refusal, &scope),
            scope,
            refusal,
        }
    };
    let principal = controller
        .authenticate(&Credentials::from_headers(headers))
        .await
        .map_err(denied)?;
    let allowed = controller.admits(&principal)
        && wanted.iter().all(|a| {
            a.actions
                .iter()
                .all(|&x| controller.allows(&principal, a.repository, x))
        });
    if !allowed {
        return Err(denied(match principal {
            Principal::Anonymous => Refusal::Missing,
            _ => Refusal::Insufficient,
        }));
    }
    Ok(Grant {
        principal,
        controller: controller.clone(),
    })
}

/// Lets everyone do everything: `auth.mode = "none"`.
pub struct OpenAccess;

#[async_trait]
impl AccessController for OpenAccess {
    async fn authenticate(&self, _credentials: &Credentials<'_>) -> Result<Principal, Refusal> {
        Ok(Principal::Anonymous)
    }

    fn admits(&self, _principal: &Principal) -> bool {
        true
    }

    fn allows(&self, _principal: &Principal, _repository: &str, _action: Action) -> bool {
        true
    }

    fn challenge(
        &self,
        _wanted: &[Access<'_>],
        _refusal: &Refusal,
        _host: Option<&str>,
    ) -> Option<Challenge> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        h
    }

    #[test]
    fn credentials_are_read_from_the_authorization_header() {
        assert_eq!(
            Credentials::from_headers(&HeaderMap::new()),
            Credentials::None
        );
        let h = headers("Bearer abc.def");
        assert_eq!(
            Credentials::from_headers(&h),
            Credentials::Bearer("abc.def")
        );
        let h = headers("basic YWxpY2U6czNjcjN0OnRvbw==");
        assert_eq!(
            Credentials::from_headers(&h),
            Credentials::Basic {
                username: "alice".into(),
                password: "s3cr3t:too".into()
            }
        );
        for bad in ["Basic !!!", "Basic bm9jb2xvbg==", "Negotiate x", "Bearer"] {
            assert_eq!(
                Credentials::from_headers(&headers(bad)),
                Credentials::Unsupported,
                "{bad}"
            );
        }
    }

    #[test]
    fn scopes_name_each_repository_and_its_actions() {
        assert_eq!(
            scope(&[Access::push("a/b"), Access::pull("c")]),
            "repository:a/b:pull,push repository:c:pull"
        );
        assert_eq!(scope(&[]), "");
    }
}
