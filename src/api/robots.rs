//! `/api/v2.0/robots`: create, list, get, update, refresh the secret, delete — Harbor's
//! robot accounts API (v2: `level` project or system, permissions per namespace).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Api, ApiError, ApiResult, json_body, signed_in, timestamp};
use crate::admin::{self, AccountError, RobotSpec};
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

/// Harbor's `RobotCreate` (and, for `PUT`, `Robot`).
#[derive(Deserialize)]
pub struct RobotReq {
    name: Option<String>,
    #[serde(default)]
    description: String,
    level: Option<String>,
    /// Days; -1: never.
    duration: Option<i64>,
    #[serde(default)]
    disable: bool,
    #[serde(default)]
    permissions: Vec<RobotPermission>,
}

/// A robot as Harbor's API shows it (never its secret).
fn robot_json(api: &Api, r: &Robot) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "name": admin::robot_full_name(&api.robot_prefix, &r.name),
        "description": r.description,
        "level": r.level.as_str(),
        "duration": r.duration_days,
        "editable": true,
        "disable": r.disabled,
        "expires_at": if r.expires_at < 0 { -1 } else { r.expires_at / 1000 },
        "permissions": grouped(&r.permissions),
        "creation_time": timestamp(r.created_at),
        "update_time": timestamp(r.updated_at),
    })
}

/// May `who` manage (create, change, refresh, delete) a robot with `perms` at `level`?
/// A system admin may; a project admin may manage its project's robots; a robot may only
/// within its own permissions, and never wider than itself.
fn may_manage(who: &Resolved, level: RobotLevel, perms: &[RobotPermission]) -> bool {
    if who.is_sysadmin() {
        return true;
    }
    if let Some(mine) = who.robot_permissions() {
        return roles::may_create_robot(mine, perms);
    }
    level == RobotLevel::Project
        && perms.iter().all(|p| {
            who.may_in_project(&p.namespace, roles::Resource::Robot, roles::Action::Create)
        })
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

/// The robot, when `who` may manage it; a robot `who` may not see is not found.
async fn managed(api: &Api, who: &Resolved, id: &str) -> ApiResult<Robot> {
    let r = robot_by_id(api, id).await?;
    if !may_manage(who, r.level, &grouped(&r.permissions)) {
        return Err(ApiError::not_found(format!("robot {id} not found")));
    }
    Ok(r)
}

/// `POST /api/v2.0/robots`: `201` with the robot's full name and its secret (shown once).
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
        Json(serde_json::json!({
            "id": robot.id,
            "name": full,
            "secret": secret,
            "creation_time": timestamp(robot.created_at),
            "expires_at": if robot.expires_at < 0 { -1 } else { robot.expires_at / 1000 },
        })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        header_value(format!("/api/v2.0/robots/{}", robot.id)),
    );
    Ok(resp)
}

/// `GET /api/v2.0/robots?q=Level=project,ProjectID=N&page=&page_size=`: the robots the
/// caller may manage.
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
    let mut visible = Vec::new();
    let mut p = 1;
    loop {
        let batch = meta.list_robots(project_id, p, 500).await?;
        let n = batch.items.len();
        visible.extend(batch.items.into_iter().filter(|r| {
            level.is_none_or(|l| r.level == l)
                && may_manage(&who, r.level, &grouped(&r.permissions))
        }));
        if n < 500 {
            break;
        }
        p += 1;
    }
    let total = visible.len() as u64;
    let items: Vec<serde_json::Value> = visible
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

/// `GET /api/v2.0/robots/{id}`.
pub async fn get(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    let r = managed(&api, &who, &id).await?;
    Ok(Json(robot_json(&api, &r)).into_response())
}

/// `PUT /api/v2.0/robots/{id}`: description, disable, duration, permissions.
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

#[derive(Deserialize, Default)]
pub struct SecretReq {
    #[serde(default)]
    secret: String,
}

/// `PATCH /api/v2.0/robots/{id}`: a new secret (the given one, or a generated one); the
/// old one stops working at once.
pub async fn refresh(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    let r = managed(&api, &who, &id).await?;
    let req: SecretReq = if body.is_empty() {
        SecretReq::default()
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
    Ok(Json(serde_json::json!({ "secret": secret })).into_response())
}

/// `DELETE /api/v2.0/robots/{id}`.
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
