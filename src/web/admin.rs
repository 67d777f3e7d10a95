//! The administrators' area: users (with their identity at the OpenID Connect provider,
//! when their CLI secret was made and last used, how many tokens they hold) and re-linking
//! a user to a new subject after the provider was redeployed. System admins only.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::session::{SignedIn, Viewer};
use super::{Web, WebError, WebResult, encode, layout};
use crate::auth::builtin::rfc3339;
use crate::metadata::signin::SecretKind;

const PAGE_SIZE: u64 = 50;

fn admin_only(viewer: &Viewer) -> WebResult<()> {
    if viewer.access.is_sysadmin() {
        Ok(())
    } else {
        Err(WebError::Forbidden(
            "only system administrators see this page".into(),
        ))
    }
}

fn when(ms: Option<i64>) -> String {
    ms.map(|ms| rfc3339((ms / 1000).max(0) as u64))
        .unwrap_or_else(|| "never".into())
}

#[derive(Deserialize, Default)]
pub struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<u64>,
    #[serde(default)]
    done: String,
}

pub async fn users(
    State(web): State<Web>,
    SignedIn(viewer, me): SignedIn,
    Query(q): Query<UsersQuery>,
) -> WebResult<Response> {
    admin_only(&viewer)?;
    let page = q.page.unwrap_or(1).max(1);
    let search = Some(q.q.trim()).filter(|s| !s.is_empty());
    let found = web.meta().list_users(search, page, PAGE_SIZE).await?;
    let mut rows = Vec::with_capacity(found.items.len());
    for u in &found.items {
        let secrets = web.meta().list_user_secrets(u.id).await?;
        let cli = secrets.iter().find(|s| s.kind == SecretKind::Cli).cloned();
        let tokens = secrets
            .iter()
            .filter(|s| s.kind == SecretKind::Personal)
            .count();
        rows.push((u, cli, tokens));
    }
    let pages = found.total.div_ceil(PAGE_SIZE).max(1);
    let body = html! {
        h1 { "Users" }
        @if !q.done.is_empty() { p #done .notice { (q.done) } }
        form method="get" action="/c/admin/users" {
            input name="q" value=(q.q) placeholder="name contains";
            button type="submit" { "Search" }
        }
        table #users {
            tr { th { "Username" } th { "Email" } th { "Admin" } th { "Identity provider subject" }
                 th { "CLI secret made" } th { "CLI secret last used" } th { "Tokens" } th { "Re-link to a new subject" } }
            @for (u, cli, tokens) in &rows {
                tr .user {
                    td .user-name { (u.username) }
                    td { (u.email.as_deref().unwrap_or("")) }
                    td { (if u.sysadmin { "yes" } else { "" }) }
                    td .user-subject { (u.oidc_subject.as_deref().unwrap_or("")) }
                    td { (when(cli.as_ref().map(|c| c.created_at))) }
                    td { (when(cli.as_ref().and_then(|c| c.last_used_at))) }
                    td { (tokens) }
                    td {
                        form method="post" action={ "/c/admin/users/" (u.id) "/link" } .inline .relink {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            input name="subject" placeholder="new subject" required;
                            button type="submit" { "Re-link" }
                        }
                    }
                }
            }
        }
        p .pager { "Page " (page) " of " (pages)
            @if page > 1 { " " a href={ "/c/admin/users?q=" (encode(&q.q)) "&page=" (page - 1) } { "previous" } }
            @if page < pages { " " a href={ "/c/admin/users?q=" (encode(&q.q)) "&page=" (page + 1) } { "next" } }
        }
    };
    Ok(layout("Users", Some((&me.username, &viewer.csrf)), body).into_response())
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    subject: String,
}

pub async fn link(
    State(web): State<Web>,
    SignedIn(viewer, _): SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<LinkForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    admin_only(&viewer)?;
    let Some(oidc) = web.oidc.as_ref() else {
        return Err(WebError::BadRequest(
            "no identity provider is configured (auth.oidc.issuer)".into(),
        ));
    };
    let subject = f.subject.trim();
    if subject.is_empty() {
        return Err(WebError::BadRequest("a subject is needed".into()));
    }
    let user = web
        .meta()
        .get_user_by_id(id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("user {id} not found")))?;
    match web
        .meta()
        .set_user_oidc(id, Some((&oidc.config.issuer, subject)))
        .await
    {
        Ok(_) => {}
        Err(crate::metadata::MetaError::Conflict(why)) => return Err(WebError::BadRequest(why)),
        Err(e) => return Err(e.into()),
    }
    let done = format!("{} is now linked to subject {subject}", user.username);
    Ok(Redirect::to(&format!("/c/admin/users?done={}", encode(&done))).into_response())
}
