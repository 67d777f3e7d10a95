//! `/api/v2.0/projects/{project}/repositories` and their artifacts, as Harbor's API shows
//! them: listings for people and automation, and deletes of repositories, artifacts and
//! tags through the same content layer `/v2` uses.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi::{BadRequest, Forbidden, NotFound, Unauthorized};
use super::projects::{ProjectRef, ResourceName, lookup};
use super::{Api, ApiError, ApiResult, Paging, caller, paging, signed_in, timestamp};
use crate::auth::builtin::Resolved;
use crate::auth::roles;
use crate::content::ContentError;
use crate::http::Query;
use crate::metadata::identity::Project;
use crate::oci::{Reference, RepoName};
use crate::storage::StorageError;

impl From<ContentError> for ApiError {
    fn from(e: ContentError) -> ApiError {
        match e {
            ContentError::ManifestUnknown(_) | ContentError::NameUnknown(_) => {
                ApiError::not_found(e.to_string())
            }
            ContentError::Metadata(m) => m.into(),
            e => {
                if matches!(
                    e,
                    ContentError::Storage(StorageError::Backend(_) | StorageError::Io(_))
                ) {
                    crate::ops::metrics::metrics().storage_error();
                }
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_SERVER_ERROR",
                    e.to_string(),
                )
            }
        }
    }
}

/// May `who` (or an anonymous caller) do `action` on `resource` in `p`?
fn may(
    p: &Project,
    who: Option<&Resolved>,
    resource: roles::Resource,
    action: roles::Action,
) -> bool {
    (p.public && roles::public_allows(resource, action))
        || who.is_some_and(|w| w.may_in_project(&p.name, resource, action))
}

fn refuse(who: Option<&Resolved>, p: &Project) -> ApiError {
    match who {
        None => super::ApiError::unauthorized(),
        Some(_) => ApiError::forbidden(format!("not allowed in project {}", p.name)),
    }
}

/// The path parameter that names a repository within its project.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct RepositoryRef {
    /// The repository's name without the project; its slashes URL-encoded once, or twice
    /// (`a%252Fb`) as Harbor's clients send them.
    repository_name: String,
}

/// The repository a path names: `{project}` and `{repository}` (without the project, its
/// slashes URL-encoded once or, as Harbor's clients send them, twice).
fn repository(p: &Project, name: &str) -> ApiResult<RepoName> {
    let once = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let full = format!("{}/{once}", p.name);
    RepoName::parse(&full).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Harbor's `Repository`.
#[derive(Serialize, ToSchema)]
pub struct Repository {
    /// The full name, with the project: `<project>/<path>`.
    name: String,
    project_id: i64,
    artifact_count: u64,
    pull_count: u64,
    description: String,
    /// RFC 3339, UTC.
    creation_time: String,
    update_time: String,
}

/// Harbor's `Artifact`: a manifest with its tags.
#[derive(Serialize, ToSchema)]
pub struct Artifact {
    digest: String,
    media_type: String,
    manifest_media_type: String,
    artifact_type: Option<String>,
    /// The manifest's own size plus its config's and layers'.
    size: u64,
    push_time: String,
    project_id: i64,
    repository_name: String,
    /// `IMAGE`, `CHART` or `UNKNOWN`.
    #[serde(rename = "type")]
    kind: &'static str,
    tags: Vec<Tag>,
}

/// Harbor's `Tag`.
#[derive(Serialize, ToSchema)]
pub struct Tag {
    name: String,
    repository_id: i64,
    /// When the tag last moved.
    push_time: String,
    immutable: bool,
}

/// The repositories of a project, in name order.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/repositories",
    operation_id = "listRepositories",
    tag = "repository",
    security((), ("basic" = [])),
    params(
        ProjectRef,
        Paging,
        ("q" = Option<String>, Query, description = "`name=~<part>`: only repositories whose name contains it"),
        ResourceName,
    ),
    responses(
        (status = 200, description = "A page of repositories", body = [Repository],
            headers(("X-Total-Count" = u64, description = "How many repositories match"))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn list(
    State(api): State<Api>,
    Path(project): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = caller(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    if !may(
        &p,
        who.as_deref(),
        roles::Resource::Repository,
        roles::Action::List,
    ) {
        return Err(refuse(who.as_deref(), &p));
    }
    let q = Query(uri.query().unwrap_or(""));
    let (page, size) = paging(&q);
    let contains = q.one("q").and_then(|t| {
        t.strip_prefix("name=")
            .map(|v| v.trim_start_matches('~').to_string())
    });
    let result = api
        .state
        .content
        .metadata()
        .project_repositories(&p.name, contains.as_deref(), page, size)
        .await?;
    let items: Vec<Repository> = result
        .items
        .iter()
        .map(|r| Repository {
            name: r.name.clone(),
            project_id: p.id,
            artifact_count: r.artifacts,
            pull_count: 0,
            description: String::new(),
            creation_time: timestamp(r.created_at),
            update_time: timestamp(r.created_at),
        })
        .collect();
    let mut resp = Json(items).into_response();
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(result.total));
    Ok(resp)
}

/// The artifacts of a repository, newest first.
///
/// With tags, size (manifest, config and layers), push time, media and artifact type.
#[utoipa::path(
    get,
    path = "/projects/{project_name_or_id}/repositories/{repository_name}/artifacts",
    operation_id = "listArtifacts",
    tag = "artifact",
    security((), ("basic" = [])),
    params(ProjectRef, RepositoryRef, Paging, ResourceName),
    responses(
        (status = 200, description = "A page of artifacts", body = [Artifact],
            headers(("X-Total-Count" = u64, description = "How many artifacts the repository holds"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn artifacts(
    State(api): State<Api>,
    Path((project, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = caller(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    if !may(
        &p,
        who.as_deref(),
        roles::Resource::Artifact,
        roles::Action::List,
    ) {
        return Err(refuse(who.as_deref(), &p));
    }
    let repo = repository(&p, &name)?;
    let (page, size) = paging(&Query(uri.query().unwrap_or("")));
    let result = api
        .state
        .content
        .metadata()
        .artifacts(&repo, page, size, u64::MAX)
        .await?;
    let items: Vec<Artifact> = result
        .items
        .iter()
        .map(|a| Artifact {
            digest: a.digest.to_string(),
            media_type: a.media_type.clone(),
            manifest_media_type: a.media_type.clone(),
            artifact_type: a.artifact_type.clone(),
            size: a.size,
            push_time: timestamp(a.pushed_at),
            project_id: p.id,
            repository_name: repo.as_str().to_string(),
            kind: artifact_kind(a.artifact_type.as_deref()),
            tags: a
                .tags
                .iter()
                .map(|(t, at)| Tag {
                    name: t.clone(),
                    repository_id: 0,
                    push_time: timestamp(*at),
                    immutable: false,
                })
                .collect(),
        })
        .collect();
    let mut resp = Json(items).into_response();
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(result.total));
    Ok(resp)
}

/// Harbor's coarse `type` of an artifact.
fn artifact_kind(artifact_type: Option<&str>) -> &'static str {
    match artifact_type {
        Some(t) if t.contains("helm") => "CHART",
        Some(t) if t.contains("image.config") || t.contains("container.image") => "IMAGE",
        None => "IMAGE",
        _ => "UNKNOWN",
    }
}

/// Deletes an artifact with all its tags.
///
/// By digest, or by a tag pointing at it; those who may delete artifacts in the project.
#[utoipa::path(
    delete,
    path = "/projects/{project_name_or_id}/repositories/{repository_name}/artifacts/{reference}",
    operation_id = "deleteArtifact",
    tag = "artifact",
    params(
        ProjectRef,
        RepositoryRef,
        ("reference" = String, Path, description = "A digest, or a tag"),
        ResourceName,
    ),
    responses(
        (status = 200, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn delete_artifact(
    State(api): State<Api>,
    Path((project, name, reference)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    if !who.may_in_project(&p.name, roles::Resource::Artifact, roles::Action::Delete) {
        return Err(refuse(Some(&who), &p));
    }
    let repo = repository(&p, &name)?;
    let reference =
        Reference::parse(&reference).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let digest = match reference {
        Reference::Digest(d) => d,
        // Harbor resolves a tag to its artifact and deletes the artifact.
        tag @ Reference::Tag(_) => api.state.content.manifest(&repo, &tag).await?.digest,
    };
    api.state
        .content
        .delete_manifest(&repo, &Reference::Digest(digest))
        .await?;
    Ok(StatusCode::OK)
}

/// Deletes one tag (the artifact stays): those who may delete tags in the project.
#[utoipa::path(
    delete,
    path = "/projects/{project_name_or_id}/repositories/{repository_name}/artifacts/{reference}/tags/{tag_name}",
    operation_id = "deleteTag",
    tag = "artifact",
    params(
        ProjectRef,
        RepositoryRef,
        ("reference" = String, Path, description = "A digest, or a tag (not checked: the tag is what is deleted)"),
        ("tag_name" = String, Path, description = "The tag to delete"),
        ResourceName,
    ),
    responses(
        (status = 200, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn delete_tag(
    State(api): State<Api>,
    Path((project, name, _reference, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    if !who.may_in_project(&p.name, roles::Resource::Tag, roles::Action::Delete) {
        return Err(refuse(Some(&who), &p));
    }
    let repo = repository(&p, &name)?;
    let tag = match Reference::parse(&tag) {
        Ok(t @ Reference::Tag(_)) => t,
        _ => return Err(ApiError::bad_request(format!("{tag:?} is not a tag"))),
    };
    api.state.content.delete_manifest(&repo, &tag).await?;
    Ok(StatusCode::OK)
}

/// Deletes a repository with every artifact and tag in it.
///
/// Nothing of it is listed any more (`/v2` answers `NAME_UNKNOWN`). Those who may delete
/// repositories in the project may (Harbor: project admins, maintainers, robots holding
/// `repository:delete`).
#[utoipa::path(
    delete,
    path = "/projects/{project_name_or_id}/repositories/{repository_name}",
    operation_id = "deleteRepository",
    tag = "repository",
    params(ProjectRef, RepositoryRef, ResourceName),
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
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let p = lookup(&api, &headers, &project).await?;
    if !who.may_in_project(&p.name, roles::Resource::Repository, roles::Action::Delete) {
        return Err(refuse(Some(&who), &p));
    }
    let repo = repository(&p, &name)?;
    api.state.content.delete_repository(&repo).await?;
    Ok(StatusCode::OK)
}
