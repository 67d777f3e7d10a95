//! A project's robot accounts in the web UI: create one with permissions and an expiry
//! (the secret shown once), refresh its secret (shown once; the old one stops at once),
//! disable or enable it, delete it. The same rules as `/api/v2.0/robots`
//! (`admin::may_manage_robot`) and the same creation (`admin::create_robot`).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::browse::visible_project;
use super::session::SignedIn;
use super::{Web, WebError, WebResult, copy_button, layout, registry_host};
use crate::admin::{AccountError, RobotSpec, create_robot, may_manage_robot, robot_full_name};
use crate::auth::builtin::grouped;
use crate::auth::roles::{KIND_PROJECT, RobotAccess, RobotPermission};
use crate::auth::secrets::{generate_secret, secret_digest};
use crate::metadata::identity::{Robot, RobotLevel, RobotUpdate};

/// The permissions the form offers, as (resource, action, what it means).
const OFFERED: &[(&str, &str, &str)] = &[
    ("repository", "pull", "pull images and charts"),
    ("repository", "push", "push images and charts"),
    ("artifact", "delete", "delete artifacts"),
    ("tag", "delete", "delete tags"),
    ("tag", "create", "add tags"),
    ("repository", "list", "list repositories"),
    ("artifact", "list", "list artifacts"),
    ("artifact", "read", "read artifacts"),
];

/// The buttons of a robot's row on its project's page (for those who may manage it).
pub fn actions(id: i64, disabled: bool, csrf: &str) -> Markup {
    html! {
        @for (what, label) in [("refresh", "Refresh secret"), ("toggle", if disabled { "Enable" } else { "Disable" }), ("delete", "Delete")] {
            form method="post" action={ "/c/robots/" (id) "/" (what) } .inline {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" class={ "robot-" (what) } { (label) }
            }
        }
    }
}

fn form_page(web: &Web, csrf: &str, user: &str, project: &str, error: Option<&str>) -> Response {
    let body = html! {
        p .crumbs { a href="/c/projects" { "Projects" } " / " a href={ "/c/projects/" (project) } { (project) } " / " }
        h1 { "New robot account" }
        @if let Some(e) = error { p #error .error { (e) } }
        form #robot-form method="post" action={ "/c/projects/" (project) "/robots/new" } {
            input type="hidden" name="csrf" value=(csrf);
            p { label { "Name " input #robot-name-input name="name" required; }
                " (will be " code { (robot_full_name(&web.state.robot_prefix, &format!("{project}+NAME"))) } ")" }
            p { label { "Description " input name="description"; } }
            p { label { "Expires in days (-1: never) " input name="duration" type="number" value="30" min="-1"; } }
            fieldset {
                legend { "Permissions in " (project) }
                @for (resource, action, meaning) in OFFERED {
                    p { label { input type="checkbox" name="perm" value={ (resource) ":" (action) }; " " (meaning) } }
                }
            }
            p { button #create-robot type="submit" { "Create" } }
        }
    };
    layout("New robot account", Some((user, csrf)), body).into_response()
}

/// A posted field's value (trimmed; empty when absent).
fn form_field(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// The `resource:action` values of the ticked permission boxes.
fn ticked_permissions(fields: &[(String, String)]) -> Vec<String> {
    fields
        .iter()
        .filter(|(n, _)| n == "perm")
        .map(|(_, v)| v.clone())
        .collect()
}

/// The project's robot permission for what was ticked.
fn permission(project: &str, ticked: &[String]) -> RobotPermission {
    RobotPermission {
        kind: KIND_PROJECT.into(),
        namespace: project.into(),
        access: ticked
            .iter()
            .filter_map(|t| t.split_once(':'))
            .map(|(resource, action)| RobotAccess {
                resource: resource.into(),
                action: action.into(),
                effect: None,
            })
            .collect(),
    }
}

pub async fn new_form(
    State(web): State<Web>,
    SignedIn(viewer, user): SignedIn,
    Path(project): Path<String>,
) -> WebResult<Response> {
    let p = visible_project(&web, &viewer, &project).await?;
    if !may_manage_robot(
        &viewer.access,
        RobotLevel::Project,
        &[permission(&p.name, &[])],
    ) {
        return Err(WebError::Forbidden(format!(
            "you may not create robot accounts in {}",
            p.name
        )));
    }
    Ok(form_page(&web, &viewer.csrf, &user.username, &p.name, None))
}

pub async fn create(
    State(web): State<Web>,
    SignedIn(viewer, user): SignedIn,
    headers: HeaderMap,
    Path(project): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> WebResult<Response> {
    let field = |k: &str| form_field(&fields, k);
    viewer.check_csrf(&field("csrf"))?;
    let p = visible_project(&web, &viewer, &project).await?;
    let ticked = ticked_permissions(&fields);
    let perms = vec![permission(&p.name, &ticked)];
    if !may_manage_robot(&viewer.access, RobotLevel::Project, &perms) {
        return Err(WebError::Forbidden(format!(
            "you may not create robot accounts in {}",
            p.name
        )));
    }
    let refuse = |why: &str| {
        Ok(form_page(
            &web,
            &viewer.csrf,
            &user.username,
            &p.name,
            Some(why),
        ))
    };
    if ticked.is_empty() {
        return refuse("choose at least one permission");
    }
    let Ok(duration_days) = field("duration").parse::<i64>() else {
        return refuse("the expiry is a number of days, or -1 for never");
    };
    let made = create_robot(
        web.meta().as_ref(),
        &web.state.robot_prefix,
        RobotSpec {
            name: field("name"),
            description: field("description"),
            level: RobotLevel::Project,
            permissions: perms,
            duration_days,
            disabled: false,
        },
    )
    .await;
    match made {
        Ok((_, full, secret)) => Ok(secret_page(
            &web,
            &headers,
            &viewer.csrf,
            &user.username,
            &format!("/c/projects/{}", p.name),
            &full,
            &secret,
        )),
        Err(AccountError::Invalid(why))
        | Err(AccountError::Store(crate::metadata::MetaError::Conflict(why))) => refuse(&why),
        Err(e) => Err(WebError::Internal(e.to_string())),
    }
}

/// The page that shows a robot's secret, once.
fn secret_page(
    web: &Web,
    headers: &HeaderMap,
    csrf: &str,
    user: &str,
    back: &str,
    full: &str,
    secret: &str,
) -> Response {
    let host = registry_host(web, headers);
    let body = html! {
        h1 { "Robot account " code #robot-name { (full) } }
        div .notice {
            p { "Its secret (shown only now; copy it):" }
            p { code #robot-secret .secret { (secret) } " " (copy_button("robot-secret")) }
            pre { "docker login " (host) " -u '" (full) "'" }
        }
        p { a #back href=(back) { "Back" } }
    };
    layout("Robot account", Some((user, csrf)), body).into_response()
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The robot, when the viewer may manage it (a project robot of a project they see, or a
/// system robot for a system admin), and the page it is listed on; otherwise not found or
/// forbidden, as the API answers.
async fn managed(
    web: &Web,
    viewer: &super::session::Viewer,
    id: i64,
) -> WebResult<(Robot, String)> {
    let not_found = || WebError::NotFound(format!("robot account {id} not found"));
    let r = web
        .meta()
        .get_robot_by_id(id)
        .await?
        .ok_or_else(not_found)?;
    let project = match r.project_id {
        Some(pid) => web
            .meta()
            .get_project_by_id(pid)
            .await?
            .ok_or_else(not_found)?,
        None if viewer.access.is_sysadmin() => return Ok((r, "/c/admin/robots".into())),
        None => return Err(not_found()),
    };
    visible_project(web, viewer, &project.name)
        .await
        .map_err(|_| not_found())?;
    if !may_manage_robot(&viewer.access, r.level, &grouped(&r.permissions)) {
        return Err(WebError::Forbidden(format!(
            "you may not change robot accounts of {}",
            project.name
        )));
    }
    Ok((r, format!("/c/projects/{}", project.name)))
}

pub async fn refresh(
    State(web): State<Web>,
    SignedIn(viewer, user): SignedIn,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    let (r, back) = managed(&web, &viewer, id).await?;
    let secret = generate_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    web.meta()
        .set_robot_secret(r.id, &secret_digest(&secret))
        .await?;
    let full = robot_full_name(&web.state.robot_prefix, &r.name);
    Ok(secret_page(
        &web,
        &headers,
        &viewer.csrf,
        &user.username,
        &back,
        &full,
        &secret,
    ))
}

pub async fn toggle(
    State(web): State<Web>,
    SignedIn(viewer, _): SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    let (r, back) = managed(&web, &viewer, id).await?;
    web.meta()
        .update_robot(
            r.id,
            &RobotUpdate {
                description: r.description,
                disabled: !r.disabled,
                duration_days: r.duration_days,
                expires_at: r.expires_at,
                permissions: r.permissions,
            },
        )
        .await?;
    Ok(Redirect::to(&back).into_response())
}

pub async fn delete(
    State(web): State<Web>,
    SignedIn(viewer, _): SignedIn,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    let (r, back) = managed(&web, &viewer, id).await?;
    web.meta().delete_robot(r.id).await?;
    Ok(Redirect::to(&back).into_response())
}

/// `/c/admin/robots`: system robots (spanning projects, or all of them), for system admins.
pub async fn system_list(
    State(web): State<Web>,
    SignedIn(viewer, user): SignedIn,
) -> WebResult<Response> {
    if !viewer.access.is_sysadmin() {
        return Err(WebError::Forbidden(
            "only system administrators see this page".into(),
        ));
    }
    system_page(&web, &viewer.csrf, &user.username, None).await
}

async fn system_page(
    web: &Web,
    csrf: &str,
    user: &str,
    error: Option<&str>,
) -> WebResult<Response> {
    let all = web.meta().list_robots(None, 1, 500).await?;
    let system: Vec<&Robot> = all
        .items
        .iter()
        .filter(|r| r.level == RobotLevel::System)
        .collect();
    let body = html! {
        h1 { "System robot accounts" }
        @if let Some(e) = error { p #error .error { (e) } }
        @if system.is_empty() {
            p #no-robots { "No system robot accounts." }
        } @else {
            table #robots {
                tr { th { "Name" } th { "Description" } th { "Permissions" } th { "State" } th {} }
                @for r in &system {
                    tr .robot {
                        td .robot-name { (robot_full_name(&web.state.robot_prefix, &r.name)) }
                        td { (r.description) }
                        td { @for p in &r.permissions { (p.namespace) ": " (p.resource) " " (p.action) br; } }
                        td .robot-state { (if r.disabled { "disabled" } else { "enabled" }) }
                        td { (actions(r.id, r.disabled, csrf)) }
                    }
                }
            }
        }
        h2 { "New system robot account" }
        form #robot-form method="post" action="/c/admin/robots" {
            input type="hidden" name="csrf" value=(csrf);
            p { label { "Name " input name="name" required; } }
            p { label { "Description " input name="description"; } }
            p { label { "Expires in days (-1: never) " input name="duration" type="number" value="30" min="-1"; } }
            p { label { "Projects (comma-separated, or * for every project) " input name="projects" value="*"; } }
            fieldset {
                legend { "Permissions in those projects" }
                @for (resource, action, meaning) in OFFERED {
                    p { label { input type="checkbox" name="perm" value={ (resource) ":" (action) }; " " (meaning) } }
                }
            }
            p { button #create-robot type="submit" { "Create" } }
        }
    };
    Ok(layout("System robot accounts", Some((user, csrf)), body).into_response())
}

pub async fn system_create(
    State(web): State<Web>,
    SignedIn(viewer, user): SignedIn,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> WebResult<Response> {
    let field = |k: &str| form_field(&fields, k);
    viewer.check_csrf(&field("csrf"))?;
    if !viewer.access.is_sysadmin() {
        return Err(WebError::Forbidden(
            "only system administrators create system robot accounts".into(),
        ));
    }
    let ticked = ticked_permissions(&fields);
    let projects: Vec<String> = field("projects")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if ticked.is_empty() || projects.is_empty() {
        return system_page(
            &web,
            &viewer.csrf,
            &user.username,
            Some("choose at least one permission and one project (or *)"),
        )
        .await;
    }
    let Ok(duration_days) = field("duration").parse::<i64>() else {
        return system_page(
            &web,
            &viewer.csrf,
            &user.username,
            Some("the expiry is a number of days, or -1 for never"),
        )
        .await;
    };
    let made = create_robot(
        web.meta().as_ref(),
        &web.state.robot_prefix,
        RobotSpec {
            name: field("name"),
            description: field("description"),
            level: RobotLevel::System,
            permissions: projects.iter().map(|p| permission(p, &ticked)).collect(),
            duration_days,
            disabled: false,
        },
    )
    .await;
    match made {
        Ok((_, full, secret)) => Ok(secret_page(
            &web,
            &headers,
            &viewer.csrf,
            &user.username,
            "/c/admin/robots",
            &full,
            &secret,
        )),
        Err(AccountError::Invalid(why))
        | Err(AccountError::Store(crate::metadata::MetaError::Conflict(why)))
        | Err(AccountError::Store(crate::metadata::MetaError::NotFound(why))) => {
            system_page(&web, &viewer.csrf, &user.username, Some(&why)).await
        }
        Err(e) => Err(WebError::Internal(e.to_string())),
    }
}
