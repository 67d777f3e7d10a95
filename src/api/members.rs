//! `/api/v2.0/projects/{project}/members`: who holds which of Harbor's roles in a project
//! (users and groups), as Harbor's API answers it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{BadRequest, Conflict, Forbidden, NotFound, Unauthorized};
use super::projects::{ProjectRef, ResourceName, lookup};
use super::{Api, ApiError, ApiResult, json_body, signed_in};
use crate::auth::builtin::Resolved;
use crate::auth::roles::{self, ProjectRole};
use crate::http::header_value;
use crate::metadata::identity::{GROUP_TYPE_OIDC, Member, MemberEntity, Project};

/// Harbor's `ProjectMemberEntity`: a user or group holding a role in a project.
#[derive(Serialize, ToSchema)]
pub struct ProjectMemberEntity {
    id: i64,
    project_id: i64,
    entity_id: i64,
    /// `u` (user) or `g` (group).
    entity_type: &'static str,
    entity_name: String,
    /// 1 projectAdmin, 2 developer, 3 guest, 4 maintainer, 5 limitedGuest.
    role_id: i64,
    role_name: &'static str,
}

fn member_json(m: &Member) -> ProjectMemberEntity {
    ProjectMemberEntity {
        id: m.id,
        project_id: m.project_id,
        entity_id: m.entity.id(),
        entity_type: m.entity.type_code(),
        entity_name: m.entity_name.clone(),
        role_id: m.role,
        role_name: ProjectRole::from_id(m.role)
            .map(|r| r.name())
            .unwrap_or("unknown"),
    }
}

fn require(who: &Resolved, p: &Project, action: roles::Action) -> ApiResult<()> {
    if who.may_in_project(&p.name, roles::Resource::Member, action) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "not allowed to {} the members of project {}",
        action.as_str(),
        p.name
    )))
}

fn role(id: i64) -> ApiResult<i64> {
    ProjectRole::from_id(id).map(ProjectRole::id).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role_id {id} is not a role: 1 projectAdmin, 2 developer, 3 guest, 4 maintainer, 5 limitedGuest"
        ))
    })
}

fn member_id(s: &str) -> ApiResult<i64> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("member id {s:?} is not a number")))
}

/// The members of a project: a guest or more of the project may see them.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/members",
    operation_id = "listProjectMembers",
    tag = "member",
    params(ProjectRef, ResourceName),
    responses(
        (status = 200, description = "Every member", body = [ProjectMemberEntity],
            headers(("X-Total-Count" = u64, description = "How many members"))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn list(
    State(api): State<Api>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    require(&who, &p, roles::Action::List)?;
    let members = api
        .state
        .content
        .metadata()
        .list_members(p.id, None)
        .await?;
    let json: Vec<_> = members.iter().map(member_json).collect();
    let mut resp = Json(json).into_response();
    resp.headers_mut()
        .insert("x-total-count", header::HeaderValue::from(members.len()));
    Ok(resp)
}

/// Harbor's `UserEntity`: a user by id or name.
#[derive(Deserialize, ToSchema)]
#[schema(as = UserEntity)]
pub struct MemberUser {
    user_id: Option<i64>,
    username: Option<String>,
}

/// Harbor's `UserGroup`: a group by id, or by name and type (created when missing).
#[derive(Deserialize, ToSchema)]
#[schema(as = UserGroup)]
pub struct MemberGroup {
    id: Option<i64>,
    group_name: Option<String>,
    group_type: Option<i64>,
}

/// Harbor's `ProjectMember`: who gets which role; exactly one of `member_user` and
/// `member_group`.
#[derive(Deserialize, ToSchema)]
#[schema(as = ProjectMember)]
pub struct MemberReq {
    role_id: i64,
    member_user: Option<MemberUser>,
    member_group: Option<MemberGroup>,
}

/// Gives a user or a group a role in a project.
///
/// A user by id or name; a group by id, or by name and type (created when missing).
/// Project admins and system admins may.
#[utoipa::path(
    post,
    path = "/projects/{project_name_or_id}/members",
    operation_id = "createProjectMember",
    tag = "member",
    params(ProjectRef, ResourceName),
    request_body = MemberReq,
    responses(
        (status = 201, description = "Added",
            headers(("Location" = String, description = "/api/v2.0/projects/{project_id}/members/{mid}"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn add(
    State(api): State<Api>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    require(&who, &p, roles::Action::Create)?;
    let req: MemberReq = json_body(&body, "a member")?;
    let role = role(req.role_id)?;
    let meta = api.state.content.metadata();
    let entity = match (req.member_user, req.member_group) {
        (Some(u), None) => {
            let user = match (u.user_id, u.username) {
                (Some(id), _) => meta.get_user_by_id(id).await?,
                (None, Some(name)) => meta.get_user(&name).await?,
                (None, None) => {
                    return Err(ApiError::bad_request(
                        "member_user needs user_id or username",
                    ));
                }
            };
            MemberEntity::User(
                user.ok_or_else(|| ApiError::not_found("the member_user does not exist"))?
                    .id,
            )
        }
        (None, Some(g)) => match (g.id, g.group_name) {
            (Some(id), _) => MemberEntity::Group(
                meta.get_group(id)
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("group {id} not found")))?
                    .id,
            ),
            (None, Some(name)) if !name.is_empty() => MemberEntity::Group(
                meta.ensure_group(&name, g.group_type.unwrap_or(GROUP_TYPE_OIDC))
                    .await?
                    .id,
            ),
            _ => return Err(ApiError::bad_request("member_group needs id or group_name")),
        },
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of member_user and member_group",
            ));
        }
    };
    let m = meta.add_member(p.id, entity, role).await?;
    let mut resp = StatusCode::CREATED.into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        header_value(format!("/api/v2.0/projects/{}/members/{}", p.id, m.id)),
    );
    Ok(resp)
}

/// One member of a project.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/members/{mid}",
    operation_id = "getProjectMember",
    tag = "member",
    params(ProjectRef, ("mid" = i64, Path, description = "The member's id"), ResourceName),
    responses(
        (status = 200, description = "The member", body = ProjectMemberEntity),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn get(
    State(api): State<Api>,
    Path((project, mid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<ProjectMemberEntity>> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    require(&who, &p, roles::Action::Read)?;
    let m = api
        .state
        .content
        .metadata()
        .get_member(p.id, member_id(&mid)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("member {mid} not found")))?;
    Ok(Json(member_json(&m)))
}

/// Harbor's `RoleRequest`.
#[derive(Deserialize, ToSchema)]
#[schema(as = RoleRequest)]
pub struct RoleReq {
    /// 1 projectAdmin, 2 developer, 3 guest, 4 maintainer, 5 limitedGuest.
    role_id: i64,
}

/// Changes a member's role: project admins and system admins.
#[utoipa::path(
    put,
    path = "/projects/{project_name_or_id}/members/{mid}",
    operation_id = "updateProjectMember",
    tag = "member",
    params(ProjectRef, ("mid" = i64, Path, description = "The member's id"), ResourceName),
    request_body = RoleReq,
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
    Path((project, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    require(&who, &p, roles::Action::Update)?;
    let req: RoleReq = json_body(&body, "a role")?;
    let role = role(req.role_id)?;
    if !api
        .state
        .content
        .metadata()
        .set_member_role(p.id, member_id(&mid)?, role)
        .await?
    {
        return Err(ApiError::not_found(format!("member {mid} not found")));
    }
    Ok(StatusCode::OK)
}

/// Removes a member: project admins and system admins.
#[utoipa::path(
    delete,
    path = "/projects/{project_name_or_id}/members/{mid}",
    operation_id = "deleteProjectMember",
    tag = "member",
    params(ProjectRef, ("mid" = i64, Path, description = "The member's id"), ResourceName),
    responses(
        (status = 200, description = "Removed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn remove(
    State(api): State<Api>,
    Path((project, mid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    require(&who, &p, roles::Action::Delete)?;
    if !api
        .state
        .content
        .metadata()
        .remove_member(p.id, member_id(&mid)?)
        .await?
    {
        return Err(ApiError::not_found(format!("member {mid} not found")));
    }
    Ok(StatusCode::OK)
}
