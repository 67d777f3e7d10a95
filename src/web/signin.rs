//! Signing in and out: the sign-in page, local users' passwords (when allowed), the
//! OpenID Connect redirect and callback, onboarding (choosing a username) and sign-out.
//!
//! A person the provider vouches for is found by (issuer, subject). A new one is onboarded
//! under the username claim, or asked for a name when the claim is missing or taken. When
//! the same person comes back under a new subject (the provider was redeployed), their
//! account is linked by verified email if `auth.oidc.link_by_verified_email` allows it;
//! otherwise they are told what happened and that an administrator re-links the account
//! (`berth user link`, or the API), keeping memberships and CLI secret.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::session::{self, Viewer};
use super::{Web, WebError, WebResult, layout, local_path};
use crate::auth::builtin::CredentialError;
use crate::auth::oidc::{Identity, OidcError, PENDING_FOR_MS};
use crate::auth::secrets::generate_secret;
use crate::metadata::identity::GROUP_TYPE_OIDC;
use crate::metadata::signin::{OidcSession, PendingLogin};
use crate::metadata::{MetaError, NewUser, User, now_millis};

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    return_to: String,
    /// Sent here because the session had expired.
    #[serde(default)]
    lapsed: String,
}

/// The sign-in page: the provider's button and, when allowed, the local form.
pub async fn page(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> WebResult<Response> {
    let note =
        (!q.lapsed.is_empty()).then_some("Your session has expired: sign in again to go on.");
    sign_in_page(
        &web,
        &headers,
        &local_path(&q.return_to),
        note,
        StatusCode::OK,
    )
}

fn sign_in_page(
    web: &Web,
    headers: &HeaderMap,
    return_to: &str,
    error: Option<&str>,
    status: StatusCode,
) -> WebResult<Response> {
    let (csrf, set) = session::presession_csrf(web, headers)?;
    let body = layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p #error .error { (e) } }
            @if web.oidc.is_some() {
                p { a #oidc-login href={ "/c/oidc/login?return_to=" (super::encode(return_to)) } {
                    "Sign in with your identity provider" } }
            }
            @if web.local_sign_in {
                form #local-login method="post" action="/c/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="return_to" value=(return_to);
                    p { label { "Username " input #username name="username" autocomplete="username"; } }
                    p { label { "Password " input #password type="password" name="password" autocomplete="current-password"; } }
                    p { button #submit type="submit" { "Sign in" } }
                }
            }
            @if web.oidc.is_none() && !web.local_sign_in {
                p { "Signing in to the web UI is not enabled on this registry." }
            }
        },
    );
    let mut r = (status, body).into_response();
    if let Some(set) = set {
        r.headers_mut().append(header::SET_COOKIE, set);
    }
    Ok(r)
}

#[derive(Deserialize)]
pub struct LocalForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    return_to: String,
}

/// A local user signs in with their password (never a CLI secret or token: those are for
/// clients, and a narrowed token must not open a full session).
pub async fn local(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(f): Form<LocalForm>,
) -> WebResult<Response> {
    session::check_presession_csrf(&headers, &f.csrf)?;
    let return_to = local_path(&f.return_to);
    if !web.local_sign_in {
        return Err(WebError::Forbidden(
            "local users cannot sign in to the web UI here: use your identity provider".into(),
        ));
    }
    match web.tokens.password_sign_in(&f.username, &f.password).await {
        Ok(user) => signed_in(&web, user.id, &return_to).await,
        Err(e @ CredentialError::Throttled(_)) => sign_in_page(
            &web,
            &headers,
            &return_to,
            Some(&e.to_string()),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Err(CredentialError::Store(e)) => Err(e.into()),
        Err(e) => sign_in_page(
            &web,
            &headers,
            &return_to,
            Some(&e.to_string()),
            StatusCode::UNAUTHORIZED,
        ),
    }
}

/// A session for the user, and the browser sent on to `return_to`.
async fn signed_in(web: &Web, user_id: i64, return_to: &str) -> WebResult<Response> {
    let cookie = session::start(web, user_id).await?;
    let mut r = Redirect::to(return_to).into_response();
    r.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(r)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(web): State<Web>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    let cookie = session::end(&web, &headers).await?;
    let mut r = Redirect::to("/c/login").into_response();
    r.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(r)
}

fn oidc_of(web: &Web) -> WebResult<&crate::auth::oidc::Oidc> {
    web.oidc
        .as_deref()
        .ok_or_else(|| WebError::NotFound("OpenID Connect sign-in is not configured".into()))
}

/// This site's callback URL, as the browser reaches it.
fn callback_url(web: &Web, headers: &HeaderMap) -> String {
    let base = if web.external_url.is_empty() {
        let host = crate::http::header_str(headers, header::HOST).unwrap_or("localhost");
        let scheme = if web.secure_cookies { "https" } else { "http" };
        format!("{scheme}://{host}")
    } else {
        web.external_url.trim_end_matches('/').to_string()
    };
    format!("{base}{}", web.redirect_path)
}

/// Sends the browser to the provider.
pub async fn oidc_begin(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> WebResult<Response> {
    let oidc = oidc_of(&web)?;
    let url = oidc
        .begin(&callback_url(&web, &headers), &local_path(&q.return_to))
        .await
        .map_err(oidc_failure)?;
    Ok(Redirect::to(&url).into_response())
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn oidc_failure(e: OidcError) -> WebError {
    match e {
        OidcError::Store(e) => WebError::Store(e),
        OidcError::UnknownState => WebError::BadRequest(e.to_string()),
        OidcError::Unreachable(ref why) => {
            tracing::warn!(error = %e, "OpenID Connect provider unreachable");
            let lower = why.to_ascii_lowercase();
            let hint = if lower.contains("certificate") || lower.contains("unknownissuer") {
                " (its TLS certificate is not trusted: if it is signed by a private CA, set auth.oidc.ca_file to that CA's certificate)"
            } else {
                ""
            };
            WebError::Upstream(format!("Signing in failed: {e}{hint}"))
        }
        e => {
            tracing::warn!(error = %e, "OpenID Connect sign-in failed");
            WebError::BadRequest(format!("Signing in failed: {e}"))
        }
    }
}

/// The provider sends the browser back here.
pub async fn oidc_callback(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(c): Query<Callback>,
) -> WebResult<Response> {
    let oidc = oidc_of(&web)?;
    if let Some(error) = c.error {
        let why = c.error_description.unwrap_or(error);
        return Err(WebError::BadRequest(format!(
            "The identity provider did not sign you in: {why}"
        )));
    }
    let (Some(code), Some(state)) = (c.code, c.state) else {
        return Err(WebError::BadRequest(
            "the identity provider's answer has no code and state: start signing in again".into(),
        ));
    };
    let (identity, return_to) = oidc
        .finish(&callback_url(&web, &headers), &state, &code)
        .await
        .map_err(oidc_failure)?;
    admit(&web, &headers, identity, &return_to).await
}

/// Signs in the person the provider vouched for: their account, a link by verified email,
/// a new account, or the onboarding form.
async fn admit(
    web: &Web,
    headers: &HeaderMap,
    identity: Identity,
    return_to: &str,
) -> WebResult<Response> {
    let meta = web.meta();
    if let Some(user) = meta
        .get_user_by_oidc(&identity.issuer, &identity.subject)
        .await?
    {
        return welcome(web, user, &identity, return_to).await;
    }
    let config = &oidc_of(web)?.config;
    // The same person under a new subject, vouched for by a verified email address.
    if let Some(email) = identity
        .email
        .as_deref()
        .filter(|_| identity.email_verified)
    {
        if let Some(user) = meta.get_user_by_email(email).await? {
            if config.link_by_verified_email {
                meta.set_user_oidc(user.id, Some((&identity.issuer, &identity.subject)))
                    .await?;
                tracing::info!(user = %user.username, "linked to a new identity by verified email");
                return welcome(web, user, &identity, return_to).await;
            }
            return Err(relink_needed(&user.username, &identity));
        }
    }
    let Some(name) = identity.username.clone() else {
        return onboarding(web, headers, identity, return_to, None).await;
    };
    match create(web, &identity, &name).await {
        Ok(user) => welcome(web, user, &identity, return_to).await,
        Err(MetaError::Conflict(_)) => {
            let why = format!(
                "The username {name:?} is taken by another account. If that account is yours \
                 (your identity provider was changed), ask an administrator to re-link it to \
                 your new identity (subject {:?}); otherwise choose another username.",
                identity.subject
            );
            onboarding(web, headers, identity, return_to, Some(why)).await
        }
        Err(e) => Err(e.into()),
    }
}

fn relink_needed(username: &str, identity: &Identity) -> WebError {
    WebError::Forbidden(format!(
        "The account {username:?} has your email address but is linked to another identity at \
         your identity provider (the provider may have been redeployed). Ask an administrator \
         to re-link it to your new identity: `berth user link {username} --subject {}` (or \
         PUT /api/v2.0/users/ID/oidc_identity). You keep your memberships and CLI secret.",
        identity.subject
    ))
}

async fn create(web: &Web, identity: &Identity, name: &str) -> Result<User, MetaError> {
    if let Err(why) = crate::admin::check_username(name, &web.state.robot_prefix) {
        return Err(MetaError::Conflict(why));
    }
    // An address another account has (unverified, or that account is not this person's)
    // is left off rather than refusing the sign-in.
    let email = match identity.email.as_deref() {
        Some(e) if web.meta().get_user_by_email(e).await?.is_none() => Some(e.to_string()),
        _ => None,
    };
    web.meta()
        .create_user(&NewUser {
            username: name.to_string(),
            email,
            realname: identity.name.clone().unwrap_or_default(),
            oidc_issuer: Some(identity.issuer.clone()),
            oidc_subject: Some(identity.subject.clone()),
            ..NewUser::default()
        })
        .await
}

/// Brings the account up to date with what the provider says (groups, admin group), keeps
/// the provider's tokens for refreshing, and starts the session.
async fn welcome(
    web: &Web,
    user: User,
    identity: &Identity,
    return_to: &str,
) -> WebResult<Response> {
    let meta = web.meta();
    let config = &oidc_of(web)?.config;
    if !config.groups_claim.is_empty() {
        meta.set_user_groups(user.id, GROUP_TYPE_OIDC, &identity.groups)
            .await?;
    }
    if !config.admin_group.is_empty() {
        let admin = identity.groups.contains(&config.admin_group);
        if admin != user.sysadmin {
            meta.set_sysadmin(user.id, admin).await?;
        }
    }
    meta.put_oidc_session(&OidcSession {
        user_id: user.id,
        refresh_token: identity.refresh_token.clone(),
        expires_at: identity.expires_at,
        refreshed_at: now_millis(),
        failure: None,
    })
    .await?;
    signed_in(web, user.id, return_to).await
}

/// Onboarding: the verified identity waits in the database under a one-time ticket (kept
/// in a cookie too) while the person chooses a username.
async fn onboarding(
    web: &Web,
    headers: &HeaderMap,
    identity: Identity,
    return_to: &str,
    why: Option<String>,
) -> WebResult<Response> {
    let ticket = generate_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    web.meta()
        .put_pending_login(&PendingLogin {
            state: format!("onboard:{ticket}"),
            nonce: serde_json::to_string(&PendingIdentity::from(&identity))
                .map_err(|e| WebError::Internal(e.to_string()))?,
            pkce_verifier: String::new(),
            return_to: return_to.to_string(),
            created_at: now_millis(),
        })
        .await?;
    let (csrf, set) = session::presession_csrf(web, headers)?;
    let body = layout(
        "Choose a username",
        None,
        html! {
            h1 { "Welcome" }
            @if let Some(why) = &why { p #error .error { (why) } }
            @else { p { "Your identity provider did not name a username for you. Choose one." } }
            form #onboard method="post" action="/c/oidc/onboard" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="ticket" value=(ticket);
                p { label { "Username " input #username name="username" value=[identity.username.as_deref()]; } }
                p { button #submit type="submit" { "Continue" } }
            }
        },
    );
    let status = if why.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    let mut r = (status, body).into_response();
    if let Some(set) = set {
        r.headers_mut().append(header::SET_COOKIE, set);
    }
    Ok(r)
}

/// The part of an identity kept while onboarding.
#[derive(serde::Serialize, Deserialize)]
struct PendingIdentity {
    issuer: String,
    subject: String,
    username: Option<String>,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
    groups: Vec<String>,
    refresh_token: Option<String>,
    expires_at: i64,
}

impl From<&Identity> for PendingIdentity {
    fn from(i: &Identity) -> Self {
        PendingIdentity {
            issuer: i.issuer.clone(),
            subject: i.subject.clone(),
            username: i.username.clone(),
            email: i.email.clone(),
            email_verified: i.email_verified,
            name: i.name.clone(),
            groups: i.groups.clone(),
            refresh_token: i.refresh_token.clone(),
            expires_at: i.expires_at,
        }
    }
}

impl From<PendingIdentity> for Identity {
    fn from(p: PendingIdentity) -> Self {
        Identity {
            issuer: p.issuer,
            subject: p.subject,
            username: p.username,
            email: p.email,
            email_verified: p.email_verified,
            name: p.name,
            groups: p.groups,
            refresh_token: p.refresh_token,
            expires_at: p.expires_at,
        }
    }
}

#[derive(Deserialize)]
pub struct OnboardForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    username: String,
}

pub async fn onboard(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(f): Form<OnboardForm>,
) -> WebResult<Response> {
    session::check_presession_csrf(&headers, &f.csrf)?;
    let pending = web
        .meta()
        .take_pending_login(&format!("onboard:{}", f.ticket))
        .await?
        .filter(|p| now_millis() - p.created_at < PENDING_FOR_MS)
        .ok_or_else(|| WebError::BadRequest(OidcError::UnknownState.to_string()))?;
    let identity: Identity = serde_json::from_str::<PendingIdentity>(&pending.nonce)
        .map_err(|e| WebError::Internal(format!("onboarding ticket: {e}")))?
        .into();
    let name = f.username.trim();
    match create(&web, &identity, name).await {
        Ok(user) => welcome(&web, user, &identity, &pending.return_to).await,
        Err(MetaError::Conflict(why)) => {
            let why = if why.contains("already exists") || why.is_empty() {
                format!("The username {name:?} is taken: choose another.")
            } else {
                why
            };
            onboarding(&web, &headers, identity, &pending.return_to, Some(why)).await
        }
        Err(e) => Err(e.into()),
    }
}
