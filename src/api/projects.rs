//! `/api/v2.0/projects`: list, check, create, get, make public or private, delete — as
//! Harbor's API answers them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

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

/// A project as Harbor's API shows it.
fn project_json(p: &Project, who: Option<&Resolved>, repos: u64) -> serde_json::Value {
    let roles = who.map(|w| w.role_ids(&p.name)).unwrap_or_default();
    let mut v = serde_json::json!({
        "project_id": p.id,
        "name": p.name,
        "owner_id": p.owner_id.unwrap_or(0),
        "creation_time": timestamp(p.created_at),
        "update_time": timestamp(p.updated_at),
        "deleted": false,
        "metadata": { "public": if p.public { "true" } else { "false" } },
        "current_user_role_ids": roles,
        "repo_count": repos,
    });
    if let Some(first) = roles.first() {
        v["current_user_role_id"] = (*first).into();
    }
    v
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

/// `GET /api/v2.0/projects?page=&page_size=&name=&public=&q=name=~...`: the projects the
/// caller may see, with `X-Total-Count` and a `Link` to the next page.
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

fn listing(
    items: Vec<serde_json::Value>,
    total: u64,
    page: u64,
    size: u64,
    q: &Query<'_>,
) -> Response {
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

/// `HEAD /api/v2.0/projects?project_name=x`: 200 when the project exists, else 404.
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

/// Harbor's `ProjectReq`.
#[derive(Deserialize)]
pub struct ProjectReq {
    project_name: Option<String>,
    /// Deprecated in Harbor in favour of `metadata.public`; honoured when given.
    public: Option<bool>,
    metadata: Option<ProjectMetadata>,
}

#[derive(Deserialize)]
pub struct ProjectMetadata {
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

/// `POST /api/v2.0/projects`: by a system admin, or by any signed-in user when
/// `auth.project_creation = "everyone"` (who becomes its project admin).
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

/// `GET /api/v2.0/projects/{project_name_or_id}`.
pub async fn get(
    State(api): State<Api>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
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
    Ok(Json(project_json(&p, who.as_deref(), repos)).into_response())
}

/// `PUT /api/v2.0/projects/{project_name_or_id}`: makes it public or private.
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

/// `DELETE /api/v2.0/projects/{project_name_or_id}`: refused (412) while it holds
/// repositories.
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
