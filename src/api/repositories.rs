//! `/api/v2.0/projects/{project}/repositories` and their artifacts, as Harbor's API shows
//! them: listings for people and automation, and deletes of artifacts and tags through the
//! same content layer `/v2` uses.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::projects::lookup;
use super::{Api, ApiError, ApiResult, caller, paging, signed_in, timestamp};
use crate::auth::builtin::Resolved;
use crate::auth::roles;
use crate::content::ContentError;
use crate::http::Query;
use crate::metadata::identity::Project;
use crate::oci::{Reference, RepoName};

impl From<ContentError> for ApiError {
    fn from(e: ContentError) -> ApiError {
        match e {
            ContentError::ManifestUnknown(_) | ContentError::NameUnknown(_) => {
                ApiError::not_found(e.to_string())
            }
            ContentError::Metadata(m) => m.into(),
            e => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                e.to_string(),
            ),
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

/// The repository a path names: `{project}` and `{repository}` (without the project, its
/// slashes URL-encoded once or, as Harbor's clients send them, twice).
fn repository(p: &Project, name: &str) -> ApiResult<RepoName> {
    let once = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let full = format!("{}/{once}", p.name);
    RepoName::parse(&full).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `GET /api/v2.0/projects/{project}/repositories?q=name=~x&page=&page_size=`.
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
    let items: Vec<_> = result
        .items
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "project_id": p.id,
                "artifact_count": r.artifacts,
                "pull_count": 0,
                "description": "",
                "creation_time": timestamp(r.created_at),
                "update_time": timestamp(r.created_at),
            })
        })
        .collect();
    let mut resp = Json(items).into_response();
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(result.total));
    Ok(resp)
}

/// `GET .../repositories/{repository}/artifacts?page=&page_size=`: newest first, with
/// tags, size (manifest, config and layers), push time, media and artifact type.
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
        .artifacts(&repo, page, size)
        .await?;
    let items: Vec<_> = result
        .items
        .iter()
        .map(|a| {
            let tags: Vec<_> = a
                .tags
                .iter()
                .map(|(t, at)| {
                    serde_json::json!({
                        "name": t,
                        "repository_id": 0,
                        "push_time": timestamp(*at),
                        "immutable": false,
                    })
                })
                .collect();
            serde_json::json!({
                "digest": a.digest.to_string(),
                "media_type": a.media_type,
                "manifest_media_type": a.media_type,
                "artifact_type": a.artifact_type,
                "size": a.size,
                "push_time": timestamp(a.pushed_at),
                "project_id": p.id,
                "repository_name": repo.as_str(),
                "type": artifact_kind(a.artifact_type.as_deref()),
                "tags": tags,
            })
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

/// `DELETE .../repositories/{repository}/artifacts/{reference}`: the manifest and its tags.
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

/// `DELETE .../repositories/{repository}/artifacts/{reference}/tags/{tag}`: one tag.
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
