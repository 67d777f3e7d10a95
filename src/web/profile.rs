//! The user's profile: their CLI secret (how to use it, generate a new one: shown once,
//! the old one stops working at once) and personal access tokens (created with an expiry,
//! optionally narrowed to some projects and to pulls; listed without the token; revoked).
//! Secrets are kept as SHA-256 digests only.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::session::SignedIn;
use super::{Web, WebError, WebResult, copy_button, layout, registry_host};
use crate::auth::builtin::rfc3339;
use crate::auth::secrets::{generate_secret, secret_digest};
use crate::metadata::signin::{NewUserSecret, SecretKind, UserSecret};
use crate::metadata::{MetaError, now_millis};

/// Personal access tokens a user may hold at most.
const MAX_TOKENS: usize = 100;

fn when(ms: Option<i64>, none: &str) -> String {
    match ms {
        Some(ms) => rfc3339((ms / 1000).max(0) as u64),
        None => none.to_string(),
    }
}

/// What a secret just made looks like: shown once.
enum Fresh {
    None,
    CliSecret(String),
    Token(String, String),
}

pub async fn page(
    State(web): State<Web>,
    SignedIn(viewer, user): SignedIn,
    headers: HeaderMap,
) -> WebResult<Response> {
    render(&web, &viewer.csrf, &user, &headers, Fresh::None, None).await
}

async fn render(
    web: &Web,
    csrf: &str,
    user: &crate::metadata::User,
    headers: &HeaderMap,
    fresh: Fresh,
    error: Option<String>,
) -> WebResult<Response> {
    let secrets = web.meta().list_user_secrets(user.id).await?;
    let cli = secrets.iter().find(|s| s.kind == SecretKind::Cli);
    let tokens: Vec<&UserSecret> = secrets
        .iter()
        .filter(|s| s.kind == SecretKind::Personal)
        .collect();
    let host = registry_host(web, headers);
    let name = &user.username;
    let body = html! {
        h1 { "Profile" }
        table #account {
            tr { th { "Username" } td #username { (name) } }
            tr { th { "Email" } td { (user.email.as_deref().unwrap_or("")) } }
            tr { th { "System administrator" } td { (if user.sysadmin { "yes" } else { "no" }) } }
            @if let (Some(iss), Some(sub)) = (&user.oidc_issuer, &user.oidc_subject) {
                tr { th { "Identity provider" } td { (iss) " (subject " code { (sub) } ")" } }
            }
        }
        @if user.sysadmin { p { "Administration: " a #admin-users href="/c/admin/users" { "users" } ", "
            a #admin-robots href="/c/admin/robots" { "system robot accounts" } } }
        @if let Some(e) = &error { p #error .error { (e) } }
        h2 { "CLI secret" }
        p { "Use it as the password of " code { "docker login" } ", " code { "podman login" } ", "
            code { "helm registry login" } " and in image pull secrets. You have at most one; generating a new one replaces it at once." }
        @match &fresh {
            Fresh::CliSecret(secret) => {
                div .notice {
                    p { "Your new CLI secret (shown only now; copy it):" }
                    p { code #cli-secret .secret { (secret) } " " (copy_button("cli-secret")) }
                    pre { "docker login " (host) " -u " (name) "\nhelm registry login " (host) " -u " (name) }
                }
            }
            _ => {}
        }
        @if let Some(cli) = cli {
            p #cli-secret-info { "Created " (when(Some(cli.created_at), "")) "; last used " (when(cli.last_used_at, "never")) "." }
        } @else {
            p #cli-secret-info { "You have no CLI secret yet." }
        }
        form #generate-cli-secret method="post" action="/c/profile/cli-secret" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { "Generate a new CLI secret" }
        }
        h2 { "Personal access tokens" }
        p { "Named tokens with an expiry, each usable as a password like the CLI secret; optionally limited to some projects and to pulling." }
        @if let Fresh::Token(token_name, token) = &fresh {
            div .notice {
                p { "Your new token " strong { (token_name) } " (shown only now; copy it):" }
                p { code #new-token .secret { (token) } " " (copy_button("new-token")) }
            }
        }
        @if tokens.is_empty() {
            p #no-tokens { "No tokens." }
        } @else {
            table #tokens {
                tr { th { "Name" } th { "Created" } th { "Last used" } th { "Expires" } th { "Projects" } th { "Access" } th {} }
                @for t in &tokens {
                    tr {
                        td .token-name { (t.name) }
                        td { (when(Some(t.created_at), "")) }
                        td { (when(t.last_used_at, "never")) }
                        td { (when(t.expires_at, "never")) }
                        td { (t.projects.as_ref().map(|p| p.join(", ")).unwrap_or_else(|| "all".into())) }
                        td { (if t.pull_only { "pull only" } else { "as you" }) }
                        td {
                            form method="post" action={ "/c/profile/tokens/" (t.id) "/revoke" } .inline {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
        form #new-token-form method="post" action="/c/profile/tokens" {
            input type="hidden" name="csrf" value=(csrf);
            p { label { "Name " input name="name" required; } }
            p { label { "Expires in days (empty: never) " input name="expires_days" type="number" min="1"; } }
            p { label { "Only these projects (comma-separated; empty: all) " input name="projects"; } }
            p { label { input type="checkbox" name="pull_only" value="on"; " Pull only" } }
            p { button type="submit" { "Create token" } }
        }
    };
    Ok(layout("Profile", Some((name, csrf)), body).into_response())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn new_cli_secret(
    State(web): State<Web>,
    SignedIn(viewer, user): SignedIn,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    let secret = generate_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    web.meta()
        .replace_cli_secret(user.id, &secret_digest(&secret))
        .await?;
    render(
        &web,
        &viewer.csrf,
        &user,
        &headers,
        Fresh::CliSecret(secret),
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_days: String,
    #[serde(default)]
    projects: String,
    #[serde(default)]
    pull_only: Option<String>,
}

pub async fn new_token(
    State(web): State<Web>,
    SignedIn(viewer, user): SignedIn,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    let name = f.name.trim();
    let refuse = |why: String| render(&web, &viewer.csrf, &user, &headers, Fresh::None, Some(why));
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return refuse("a token's name is 1-100 characters".into()).await;
    }
    let expires_at = match f.expires_days.trim() {
        "" => None,
        d => match d.parse::<i64>() {
            Ok(days) if (1..=3650).contains(&days) => Some(now_millis() + days * 86_400_000),
            _ => {
                return refuse(format!(
                    "expiry {d:?} is not a number of days from 1 to 3650"
                ))
                .await;
            }
        },
    };
    let projects: Vec<String> = f
        .projects
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    for p in &projects {
        if web.meta().get_project(p).await?.is_none() {
            return refuse(format!("project {p:?} does not exist")).await;
        }
    }
    if web.meta().list_user_secrets(user.id).await?.len() > MAX_TOKENS {
        return refuse(format!(
            "you hold {MAX_TOKENS} tokens already: revoke some first"
        ))
        .await;
    }
    let token = generate_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    let made = web
        .meta()
        .create_personal_token(&NewUserSecret {
            user_id: user.id,
            name: name.to_string(),
            digest: secret_digest(&token),
            projects: (!projects.is_empty()).then_some(projects),
            pull_only: f.pull_only.is_some(),
            expires_at,
        })
        .await;
    match made {
        Ok(_) => {
            render(
                &web,
                &viewer.csrf,
                &user,
                &headers,
                Fresh::Token(name.to_string(), token),
                None,
            )
            .await
        }
        Err(MetaError::Conflict(why)) => refuse(why).await,
        Err(e) => Err(e.into()),
    }
}

pub async fn revoke_token(
    State(web): State<Web>,
    SignedIn(viewer, user): SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    if !web.meta().delete_user_secret(user.id, id).await? {
        return Err(WebError::NotFound("no such token".into()));
    }
    Ok(Redirect::to("/c/profile").into_response())
}
