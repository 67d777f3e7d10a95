//! `/api/v2.0/projects`: list, check, create, get, make public or private, delete — as
//! Harbor's API answers them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed, Unauthorized};
use super::{Api, ApiError, ApiResult, caller, signed_in, timestamp};
use crate::auth::builtin::Resolved;
use crate::auth::roles::{self, ProjectRole};
use crate::config::ProjectCreation;
use crate::http::{Query, header_value};
use crate::metadata::identity::{NewProject, Project, ProjectQuery};

/// Harbor's page size when none is asked for, and the largest it allows.
const DEFAULT_PAGE_SIZE: u64 = 10;
const MAX_PAGE_SIZE: u64 = 100;

/// How many repositories a project holds.
async fn repo_count(api: &Api, p: &Project) -> ApiResult<u64> {
    Ok(api
        .state
        .content
        .metadata()
        .project_repositories(&p.name, None, 1, 1)
        .await?
        .total)
}

/// Harbor's `Project`: a project as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Project)]
pub struct ProjectJson {
    project_id: i64,
    name: String,
    /// The user who created it; 0 when created by the admin CLI or a robot.
    owner_id: i64,
    /// RFC 3339, UTC.
    creation_time: String,
    update_time: String,
    deleted: bool,
    metadata: ProjectMetadata,
    /// The caller's roles in it (Harbor's role ids: 1 projectAdmin, 2 developer, 3 guest,
    /// 4 maintainer, 5 limitedGuest).
    current_user_role_ids: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_user_role_id: Option<i64>,
    repo_count: u64,
}

fn project_json(p: &Project, who: Option<&Resolved>, repos: u64) -> ProjectJson {
    let roles = who.map(|w| w.role_ids(&p.name)).unwrap_or_default();
    ProjectJson {
        project_id: p.id,
        name: p.name.clone(),
        owner_id: p.owner_id.unwrap_or(0),
        creation_time: timestamp(p.created_at),
        update_time: timestamp(p.updated_at),
        deleted: false,
        metadata: ProjectMetadata {
            public: Some(if p.public { "true" } else { "false" }.to_string()),
        },
        current_user_role_id: roles.first().copied(),
        current_user_role_ids: roles,
        repo_count: repos,
    }
}

/// May `who` see `p` (a public project, a member of it, a system admin)?
fn visible(p: &Project, who: Option<&Resolved>) -> bool {
    p.public
        || who.is_some_and(|w| {
            w.may_in_project(&p.name, roles::Resource::Project, roles::Action::Read)
        })
}

/// A project by name, or by id when the reference is a number and the request does not
/// say `X-Is-Resource-Name: true` (Harbor's rule).
pub async fn lookup(api: &Api, headers: &HeaderMap, reference: &str) -> ApiResult<Project> {
    let by_name = headers
        .get("x-is-resource-name")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let meta = api.state.content.metadata();
    let found = match reference.parse::<i64>() {
        Ok(id) if !by_name => meta.get_project_by_id(id).await?,
        _ => meta.get_project(reference).await?,
    };
    found.ok_or_else(|| ApiError::not_found(format!("project {reference} not found")))
}

/// The path parameter that names a project.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ProjectRef {
    /// The project's name, or its id (a number) unless `X-Is-Resource-Name: true`.
    project_name_or_id: String,
}

/// The header that makes a numeric project reference a name.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ResourceName {
    /// `true`: the path names the project by name even when it is a number.
    #[param(rename = "X-Is-Resource-Name")]
    is_resource_name: Option<bool>,
}

fn page_args(q: &Query<'_>) -> ApiResult<(u64, u64)> {
    let num = |key: &str, default: u64| -> ApiResult<u64> {
        match q.one(key) {
            None => Ok(default),
            Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::bad_request(format!("{key}={v:?} is not a positive integer"))
            }),
        }
    };
    let page = num("page", 1)?;
    let size = num("page_size", DEFAULT_PAGE_SIZE)?;
    if size > MAX_PAGE_SIZE {
        return Err(ApiError::bad_request(format!(
            "page_size {size} is over the limit of {MAX_PAGE_SIZE}"
        )));
    }
    Ok((page, size))
}

/// The projects the caller may see.
///
/// Public ones, those it is a member of; all for a system admin. With `X-Total-Count`
/// and a `Link` to the next page.
#[utoipa::path(
    get,
    path = "/projects",
    operation_id = "listProjects",
    tag = "project",
    security((), ("basic" = [])),
    params(
        ("page" = Option<u64>, Query, description = "Page number, from 1", minimum = 1),
        ("page_size" = Option<u64>, Query, description = "Projects per page (10 unless asked, at most 100)", minimum = 1, maximum = 100),
        ("name" = Option<String>, Query, description = "Only projects whose name contains this"),
        ("public" = Option<bool>, Query, description = "Only public (true) or private (false) projects"),
        ("q" = Option<String>, Query, description = "Harbor's query: comma-separated `name=~<part>` and `public=<bool>` terms"),
    ),
    responses(
        (status = 200, description = "A page of projects", body = [ProjectJson],
            headers(("X-Total-Count" = u64, description = "How many projects match"),
                    ("Link" = String, description = "The next page, when there is one"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
    ),
)]
pub async fn list(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> ApiResult<Response> {
    let who = caller(&api, &headers).await?;
    let q = Query(uri.query().unwrap_or(""));
    let (page, size) = page_args(&q)?;
    let mut query = ProjectQuery {
        name_contains: q.one("name").filter(|n| !n.is_empty()),
        public: match q.one("public").as_deref() {
            None | Some("") => None,
            Some("true") | Some("1") => Some(true),
            Some("false") | Some("0") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "public={other:?} is not true or false"
                )));
            }
        },
        visible_to: None,
    };
    // Harbor's `q`: comma-separated `key=value` / `key=~fuzzy` terms; name and public here.
    if let Some(terms) = q.one("q") {
        for term in terms.split(',').filter(|t| !t.is_empty()) {
            let (key, value) = term
                .split_once('=')
                .ok_or_else(|| ApiError::bad_request(format!("query term {term:?} has no '='")))?;
            let value = value.trim_start_matches('~').to_string();
            match key {
                "name" => query.name_contains = Some(value),
                "public" => query.public = Some(value == "true"),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "query key {key:?} is not supported here; supported: name, public"
                    )));
                }
            }
        }
    }
    match &who {
        Some(w) if w.is_sysadmin() => {}
        Some(w) if w.user_id.is_some() => query.visible_to = w.user_id,
        // Anonymous callers and robots see public projects (robots their own too, below).
        _ => {
            if query.public == Some(false) && who.is_none() {
                return Ok(listing(Vec::new(), 0, page, size, &q));
            }
        }
    }
    let meta = api.state.content.metadata();
    let robot_or_anonymous = who
        .as_ref()
        .is_none_or(|w| w.user_id.is_none() && !w.is_sysadmin());
    let result = if robot_or_anonymous {
        // Filter in memory: public projects plus those a robot holds permissions in.
        let mut all = Vec::new();
        let mut p = 1;
        loop {
            let batch = meta.list_projects(&query, p, 500).await?;
            let n = batch.items.len();
            all.extend(
                batch
                    .items
                    .into_iter()
                    .filter(|proj| visible(proj, who.as_deref())),
            );
            if n < 500 {
                break;
            }
            p += 1;
        }
        let total = all.len() as u64;
        let start = ((page - 1) * size) as usize;
        let items: Vec<Project> = all.into_iter().skip(start).take(size as usize).collect();
        (items, total)
    } else {
        let r = meta.list_projects(&query, page, size).await?;
        (r.items, r.total)
    };
    let mut json = Vec::with_capacity(result.0.len());
    for p in &result.0 {
        json.push(project_json(p, who.as_deref(), repo_count(&api, p).await?));
    }
    Ok(listing(json, result.1, page, size, &q))
}

fn listing(items: Vec<ProjectJson>, total: u64, page: u64, size: u64, q: &Query<'_>) -> Response {
    let mut resp = Json(items).into_response();
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    if page * size < total {
        let mut next = format!("/api/v2.0/projects?page={}&page_size={size}", page + 1);
        for key in ["name", "public", "q"] {
            if let Some(v) = q.one(key) {
                next.push_str(&format!(
                    "&{key}={}",
                    percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
        }
        resp.headers_mut().insert(
            header::LINK,
            header_value(format!("<{next}>; rel=\"next\"")),
        );
    }
    resp
}

/// Whether a project of that name exists: 200, else 404.
#[utoipa::path(
    head,
    path = "/projects",
    operation_id = "headProject",
    tag = "project",
    security((), ("basic" = [])),
    params(("project_name" = String, Query, description = "The project's name")),
    responses(
        (status = 200, description = "The project exists"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
)]
pub async fn exists(State(api): State<Api>, uri: Uri) -> ApiResult<StatusCode> {
    let q = Query(uri.query().unwrap_or(""));
    let name = q
        .one("project_name")
        .ok_or_else(|| ApiError::bad_request("project_name is required"))?;
    match api.state.content.metadata().get_project(&name).await? {
        Some(_) => Ok(StatusCode::OK),
        None => Err(ApiError::not_found(format!("project {name} not found"))),
    }
}

/// Harbor's `ProjectReq`: a project to create, or what to change in one.
#[derive(Deserialize, ToSchema)]
pub struct ProjectReq {
    /// Required to create; ignored on update.
    project_name: Option<String>,
    /// Deprecated in Harbor in favour of `metadata.public`; honoured when given.
    public: Option<bool>,
    metadata: Option<ProjectMetadata>,
}

/// Harbor's `ProjectMetadata` (Berth keeps `public`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ProjectMetadata {
    /// `"true"` or `"false"` (a string, as in Harbor).
    #[serde(skip_serializing_if = "Option::is_none")]
    public: Option<String>,
}

impl ProjectReq {
    fn public(&self) -> ApiResult<Option<bool>> {
        if let Some(p) = self.metadata.as_ref().and_then(|m| m.public.as_deref()) {
            return match p {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                other => Err(ApiError::bad_request(format!(
                    "metadata.public must be \"true\" or \"false\", not {other:?}"
                ))),
            };
        }
        Ok(self.public)
    }
}

fn parse_body(body: &[u8]) -> ApiResult<ProjectReq> {
    super::json_body(body, "a project")
}

/// Creates a project.
///
/// A system admin may, or any signed-in user when `auth.project_creation = "everyone"`
/// (who becomes its project admin).
#[utoipa::path(
    post,
    path = "/projects",
    operation_id = "createProject",
    tag = "project",
    request_body = ProjectReq,
    responses(
        (status = 201, description = "Created",
            headers(("Location" = String, description = "/api/v2.0/projects/{project_id}"))),
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
    let req = parse_body(&body)?;
    let name = req
        .project_name
        .clone()
        .ok_or_else(|| ApiError::bad_request("project_name is required"))?;
    if !roles::is_valid_project_name(&name) {
        return Err(ApiError::bad_request(format!(
            "project name {name:?} is invalid: lowercase letters and digits, separated by '.', '_', '__' or dashes"
        )));
    }
    let allowed = who.is_sysadmin()
        || (api.project_creation == ProjectCreation::Everyone && who.user_id.is_some());
    if !allowed {
        return Err(ApiError::forbidden(
            "only system administrators may create projects (auth.project_creation = \"adminonly\")",
        ));
    }
    let owner = who.user_id;
    let created = api
        .state
        .content
        .metadata()
        .create_project(&NewProject {
            name,
            public: req.public()?.unwrap_or(false),
            owner_id: owner,
            owner_role: (owner.is_some() && !who.is_sysadmin())
                .then_some(ProjectRole::ProjectAdmin.id()),
        })
        .await?;
    let mut resp = StatusCode::CREATED.into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        header_value(format!("/api/v2.0/projects/{}", created.id)),
    );
    Ok(resp)
}

/// A project the caller may see.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}",
    operation_id = "getProject",
    tag = "project",
    security((), ("basic" = [])),
    params(ProjectRef, ResourceName),
    responses(
        (status = 200, description = "The project", body = ProjectJson),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ),
)]
pub async fn get(
    State(api): State<Api>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<ProjectJson>> {
    let who = caller(&api, &headers).await?;
    let p = lookup(&api, &headers, &reference).await?;
    if !visible(&p, who.as_deref()) {
        // Not revealing whether a private project exists.
        return Err(match who {
            None => ApiError::unauthorized(),
            Some(_) => ApiError::not_found(format!("project {reference} not found")),
        });
    }
    let repos = repo_count(&api, &p).await?;
    Ok(Json(project_json(&p, who.as_deref(), repos)))
}

/// Makes a project public or private: its project admins and system admins.
#[utoipa::path(
    put,
    path = "/projects/{project_name_or_id}",
    operation_id = "updateProject",
    tag = "project",
    params(ProjectRef, ResourceName),
    request_body = ProjectReq,
    responses(
        (status = 200, description = "Updated"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn update(
    State(api): State<Api>,
    Path(reference): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &reference).await?;
    if !who.may_in_project(&p.name, roles::Resource::Project, roles::Action::Update) {
        return Err(ApiError::forbidden(format!(
            "only a project admin of {} or a system admin may change it",
            p.name
        )));
    }
    if let Some(public) = parse_body(&body)?.public()? {
        api.state
            .content
            .metadata()
            .set_project_public(p.id, public)
            .await?;
    }
    Ok(StatusCode::OK)
}

/// Deletes a project.
///
/// Its project admins and system admins may; refused (412) while it holds repositories.
#[utoipa::path(
    delete,
    path = "/projects/{project_name_or_id}",
    operation_id = "deleteProject",
    tag = "project",
    params(ProjectRef, ResourceName),
    responses(
        (status = 200, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 412, response = PreconditionFailed),
    ),
)]
pub async fn delete(
    State(api): State<Api>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &reference).await?;
    if !who.may_in_project(&p.name, roles::Resource::Project, roles::Action::Delete) {
        return Err(ApiError::forbidden(format!(
            "only a project admin of {} or a system admin may delete it",
            p.name
        )));
    }
    match api
        .state
        .content
        .metadata()
        .delete_project(p.id, false)
        .await?
    {
        Some(_) => Ok(StatusCode::OK),
        None => Err(ApiError::not_found(format!(
            "project {reference} not found"
        ))),
    }
}
