//! `/api/v2.0/robots`: create, list, get, update, refresh the secret, delete — Harbor's
//! robot accounts API (v2: `level` project or system, permissions per namespace).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{BadRequest, Conflict, Forbidden, NotFound, Unauthorized};
use super::{Api, ApiError, ApiResult, Paging, json_body, signed_in, timestamp};
use crate::admin::{
    self, AccountError, RobotSpec, may_manage_robot as may_manage, may_see_robot as may_see,
};
use crate::auth::builtin::{Resolved, flatten, grouped};
use crate::auth::roles::{self, RobotPermission};
use crate::auth::secrets;
use crate::http::{Query, header_value};
use crate::metadata::identity::{Robot, RobotLevel, RobotUpdate};

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> ApiError {
        match e {
            AccountError::Invalid(m) => ApiError::bad_request(m),
            AccountError::Store(e) => e.into(),
            AccountError::Secret(e) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                e.to_string(),
            ),
        }
    }
}

/// Harbor's `RobotCreate` (and, for `PUT`, the fields of `Robot` that may change).
#[derive(Deserialize, ToSchema)]
#[schema(as = RobotCreate)]
pub struct RobotReq {
    /// Without the prefix: for a project robot `robot$<project>+<name>` is made of it.
    name: Option<String>,
    #[serde(default)]
    description: String,
    /// `system` or `project`.
    level: Option<String>,
    /// Days until it expires; -1: never.
    duration: Option<i64>,
    #[serde(default)]
    disable: bool,
    #[serde(default)]
    permissions: Vec<RobotPermission>,
}

/// Harbor's `Robot`: a robot account as the API shows it (never its secret).
#[derive(Serialize, ToSchema)]
#[schema(as = Robot)]
pub struct RobotJson {
    id: i64,
    /// The full name, with the prefix.
    name: String,
    description: String,
    /// `system` or `project`.
    level: &'static str,
    /// Days; -1: never expires.
    duration: i64,
    editable: bool,
    disable: bool,
    /// Unix seconds; -1: never.
    expires_at: i64,
    permissions: Vec<RobotPermission>,
    /// RFC 3339, UTC.
    creation_time: String,
    update_time: String,
}

/// Unix seconds, or -1 for never.
fn expiry(ms: i64) -> i64 {
    if ms < 0 { -1 } else { ms / 1000 }
}

fn robot_json(api: &Api, r: &Robot) -> RobotJson {
    RobotJson {
        id: r.id,
        name: admin::robot_full_name(&api.robot_prefix, &r.name),
        description: r.description.clone(),
        level: r.level.as_str(),
        duration: r.duration_days,
        editable: true,
        disable: r.disabled,
        expires_at: expiry(r.expires_at),
        permissions: grouped(&r.permissions),
        creation_time: timestamp(r.created_at),
        update_time: timestamp(r.updated_at),
    }
}

/// Harbor's `RobotCreated`: the new robot's name and its secret, shown only now.
#[derive(Serialize, ToSchema)]
pub struct RobotCreated {
    id: i64,
    name: String,
    secret: String,
    creation_time: String,
    /// Unix seconds; -1: never.
    expires_at: i64,
}

/// Harbor's `RobotSec`: a robot's secret (asked for, or generated and shown once).
#[derive(Serialize, Deserialize, ToSchema, Default)]
pub struct RobotSec {
    /// When refreshing: empty to have one generated, or at least 8 characters with upper-
    /// and lower-case letters and digits.
    #[serde(default)]
    secret: String,
}

async fn robot_by_id(api: &Api, id: &str) -> ApiResult<Robot> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("robot id {id:?} is not a number")))?;
    api.state
        .content
        .metadata()
        .get_robot_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("robot {id} not found")))
}

/// The robot, when `who` may see it; one `who` may not see is not found.
async fn seen(api: &Api, who: &Resolved, id: &str) -> ApiResult<Robot> {
    let r = robot_by_id(api, id).await?;
    if !may_see(who, r.level, &grouped(&r.permissions)) {
        return Err(ApiError::not_found(format!("robot {id} not found")));
    }
    Ok(r)
}

/// The robot, when `who` may manage it; one `who` may see but not manage is forbidden,
/// one `who` may not see is not found.
async fn managed(api: &Api, who: &Resolved, id: &str) -> ApiResult<Robot> {
    let r = seen(api, who, id).await?;
    if !may_manage(who, r.level, &grouped(&r.permissions)) {
        return Err(ApiError::forbidden(format!(
            "not allowed to change robot {id}"
        )));
    }
    Ok(r)
}

/// Creates a robot account; its secret is shown only now.
///
/// A project robot needs robot creation rights in its project; a robot may not create one
/// wider than itself.
#[utoipa::path(
    post,
    path = "/robots",
    operation_id = "CreateRobot",
    tag = "robot",
    request_body = RobotReq,
    responses(
        (status = 201, description = "Created", body = RobotCreated,
            headers(("Location" = String, description = "/api/v2.0/robots/{robot_id}"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ),
)]
pub async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    let req: RobotReq = json_body(&body, "a robot")?;
    let level = match req.level.as_deref() {
        Some(l) => RobotLevel::parse(l).ok_or_else(|| {
            ApiError::bad_request(format!("level {l:?} is invalid; valid: system, project"))
        })?,
        None => {
            return Err(ApiError::bad_request(
                "level is required: system or project",
            ));
        }
    };
    if !may_manage(&who, level, &req.permissions) {
        return Err(ApiError::forbidden(
            "not allowed to create this robot: it needs robot creation rights in every project it \
             names, and a robot may not create one wider than itself",
        ));
    }
    let (robot, full, secret) = admin::create_robot(
        api.state.content.metadata().as_ref(),
        &api.robot_prefix,
        RobotSpec {
            name: req
                .name
                .ok_or_else(|| ApiError::bad_request("name is required"))?,
            description: req.description,
            level,
            permissions: req.permissions,
            duration_days: req.duration.unwrap_or(-1),
            disabled: req.disable,
        },
    )
    .await?;
    let mut resp = (
        StatusCode::CREATED,
        Json(RobotCreated {
            id: robot.id,
            name: full,
            secret,
            creation_time: timestamp(robot.created_at),
            expires_at: expiry(robot.expires_at),
        }),
    )
        .into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        header_value(format!("/api/v2.0/robots/{}", robot.id)),
    );
    Ok(resp)
}

/// Robot accounts.
///
/// Those of a project (`q=Level=project,ProjectID=N`) to those who may list a project's
/// robots (Harbor: guests and up; others get 403), else those the caller may manage.
#[utoipa::path(
    get,
    path = "/robots",
    operation_id = "ListRobot",
    tag = "robot",
    params(
        Paging,
        ("q" = Option<String>, Query, description = "Comma-separated `Level=<system|project>` and `ProjectID=<id>` terms"),
    ),
    responses(
        (status = 200, description = "A page of robots", body = [RobotJson],
            headers(("X-Total-Count" = u64, description = "How many robots match"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn list(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    let q = Query(uri.query().unwrap_or(""));
    let mut project_id = None;
    let mut level = None;
    if let Some(terms) = q.one("q") {
        for term in terms.split(',').filter(|t| !t.is_empty()) {
            let (key, value) = term
                .split_once('=')
                .ok_or_else(|| ApiError::bad_request(format!("query term {term:?} has no '='")))?;
            match key {
                "ProjectID" | "project_id" => {
                    project_id = Some(value.parse::<i64>().map_err(|_| {
                        ApiError::bad_request(format!("ProjectID {value:?} is not a number"))
                    })?)
                }
                "Level" | "level" => level = RobotLevel::parse(value),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "query key {key:?} is not supported here; supported: Level, ProjectID"
                    )));
                }
            }
        }
    }
    let (page, size) = super::paging(&q);
    let meta = api.state.content.metadata();
    // A project's robots are listed to those who may list them there (Harbor's matrix:
    // guests and up); others are refused rather than shown an empty list.
    let project_listing = match project_id {
        Some(id) => {
            let p = meta
                .get_project_by_id(id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("project {id} not found")))?;
            if !who.may_in_project(&p.name, roles::Resource::Robot, roles::Action::List) {
                return Err(ApiError::forbidden(format!(
                    "not allowed to list the robot accounts of project {}",
                    p.name
                )));
            }
            true
        }
        None => false,
    };
    let mut visible = Vec::new();
    let mut p = 1;
    loop {
        let batch = meta.list_robots(project_id, p, 500).await?;
        let n = batch.items.len();
        visible.extend(batch.items.into_iter().filter(|r| {
            level.is_none_or(|l| r.level == l)
                && (project_listing || may_manage(&who, r.level, &grouped(&r.permissions)))
        }));
        if n < 500 {
            break;
        }
        p += 1;
    }
    let total = visible.len() as u64;
    let items: Vec<RobotJson> = visible
        .iter()
        .skip(((page - 1) * size) as usize)
        .take(size as usize)
        .map(|r| robot_json(&api, r))
        .collect();
    let mut resp = Json(items).into_response();
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    Ok(resp)
}

/// A robot account (never its secret).
#[utoipa::path(
    get,
    path = "/robots/{robot_id}",
    operation_id = "GetRobotByID",
    tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    responses(
        (status = 200, description = "The robot", body = RobotJson),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ),
)]
pub async fn get(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<RobotJson>> {
    let who = signed_in(&api, &headers).await?;
    let r = seen(&api, &who, &id).await?;
    Ok(Json(robot_json(&api, &r)))
}

/// Changes a robot's description, disable flag, duration and permissions.
#[utoipa::path(
    put,
    path = "/robots/{robot_id}",
    operation_id = "UpdateRobot",
    tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    request_body = RobotJson,
    responses(
        (status = 200, description = "Changed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn update(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let r = managed(&api, &who, &id).await?;
    let req: RobotReq = json_body(&body, "a robot")?;
    let permissions = if req.permissions.is_empty() {
        grouped(&r.permissions)
    } else {
        roles::validate_permissions(&req.permissions)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if r.level == RobotLevel::Project
            && (req.permissions.len() != 1
                || r.name.split_once('+').map(|(p, _)| p) != Some(&req.permissions[0].namespace))
        {
            return Err(ApiError::bad_request(
                "a project robot keeps one permission, on its own project",
            ));
        }
        if !may_manage(&who, r.level, &req.permissions) {
            return Err(ApiError::forbidden(
                "not allowed to give this robot these permissions",
            ));
        }
        req.permissions
    };
    let duration = req.duration.unwrap_or(r.duration_days);
    if duration < -1 {
        return Err(ApiError::bad_request(
            "duration is a number of days, or -1 for never",
        ));
    }
    let expires_at = if duration == r.duration_days {
        r.expires_at
    } else if duration < 0 {
        -1
    } else {
        r.created_at + duration * 86_400_000
    };
    api.state
        .content
        .metadata()
        .update_robot(
            r.id,
            &RobotUpdate {
                description: req.description,
                disabled: req.disable,
                duration_days: duration,
                expires_at,
                permissions: flatten(&permissions),
            },
        )
        .await?;
    Ok(StatusCode::OK)
}

/// Gives a robot a new secret; the old one stops working at once.
///
/// The given one, or a generated one.
#[utoipa::path(
    patch,
    path = "/robots/{robot_id}",
    operation_id = "RefreshSec",
    tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    request_body(content = RobotSec, description = "Optional: the secret to set"),
    responses(
        (status = 200, description = "The new secret", body = RobotSec),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn refresh(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    let r = managed(&api, &who, &id).await?;
    let req: RobotSec = if body.is_empty() {
        RobotSec::default()
    } else {
        json_body(&body, "a secret")?
    };
    let secret = if req.secret.is_empty() {
        secrets::generate_secret().map_err(AccountError::from)?
    } else {
        let strong = req.secret.len() >= 8
            && req.secret.chars().any(|c| c.is_ascii_uppercase())
            && req.secret.chars().any(|c| c.is_ascii_lowercase())
            && req.secret.chars().any(|c| c.is_ascii_digit());
        if !strong {
            return Err(ApiError::bad_request(
                "a robot secret needs at least 8 characters with upper- and lower-case letters and digits",
            ));
        }
        req.secret
    };
    api.state
        .content
        .metadata()
        .set_robot_secret(r.id, &secrets::secret_digest(&secret))
        .await?;
    Ok(Json(RobotSec { secret }).into_response())
}

/// Deletes a robot account.
#[utoipa::path(
    delete,
    path = "/robots/{robot_id}",
    operation_id = "DeleteRobot",
    tag = "robot",
    params(("robot_id" = i64, Path, description = "The robot's id")),
    responses(
        (status = 200, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn delete(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let r = managed(&api, &who, &id).await?;
    api.state.content.metadata().delete_robot(r.id).await?;
    Ok(StatusCode::OK)
}
