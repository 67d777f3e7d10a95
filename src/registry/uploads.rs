//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (a session, a monolithic upload with
//! `?digest=`, or a cross-repository mount) and `GET`/`PATCH`/`PUT`/`DELETE
//! /v2/<name>/blobs/uploads/<id>`. The content layer owns the sessions; these handlers
//! read the request's headers and write the protocol's.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};

use super::error::upload_range;
use super::{DOCKER_UPLOAD_UUID, Req, Result, created, parse_digest};
use crate::auth::Action;
use crate::content::{Chunk, ContentError};
use crate::http::{content_length, has_body, header_value};
use crate::metadata::UploadSession;
use crate::oci::range::parse_content_range;
use crate::oci::{Digest, ErrorCode, RegistryError, RepoName};

pub async fn start(req: Req<'_>, name: RepoName, body: Body) -> Result<Response> {
    let content = &req.state.content;
    if let Some(mount) = req.query.one("mount") {
        if let Some(resp) = try_mount(req, &name, &mount).await? {
            return Ok(resp);
        }
    }
    let digest = req
        .query
        .one("digest")
        .map(|d| parse_digest(&d))
        .transpose()?;
    if let Some(digest) = digest {
        let chunk = chunk_of(req, body, None)?;
        // The client never learns of the session the upload used: an error must not point
        // at it (a `Retry-After` stays).
        content
            .upload_whole(&name, &digest, chunk)
            .await
            .map_err(|e| {
                let mut e = RegistryError::from(e);
                e.headers.retain(|(name, _)| name == header::RETRY_AFTER);
                e
            })?;
        return Ok(blob_created(&name, &digest));
    }
    let session = content.start_upload(&name).await?;
    Ok(upload_status(StatusCode::ACCEPTED, &name, &session.id, 0))
}

/// Mounts `mount` into `name` from the repository `from` names, or without `from` from any
/// repository that has it, when the caller may pull there; `None` means "not mountable", and
/// the caller opens an ordinary upload instead.
async fn try_mount(req: Req<'_>, name: &RepoName, mount: &str) -> Result<Option<Response>> {
    let Ok(digest) = mount.parse::<Digest>() else {
        return Ok(None);
    };
    let content = &req.state.content;
    let readable = |repo: &str| req.grant.allows(repo, Action::Pull);
    let mounted = match req.query.one("from") {
        Some(from) => match RepoName::parse(&from) {
            Ok(from) if readable(from.as_str()) => content.mount(name, &digest, &from).await?,
            _ => false,
        },
        None => content
            .mount_from_any(name, &digest, readable)
            .await?
            .is_some(),
    };
    Ok(mounted.then(|| blob_created(name, &digest)))
}

pub async fn status(req: Req<'_>, name: RepoName, id: &str) -> Result<Response> {
    let session = req.state.content.upload(&name, id).await?;
    Ok(upload_status(
        StatusCode::NO_CONTENT,
        &name,
        id,
        session.committed,
    ))
}

pub async fn cancel(req: Req<'_>, name: RepoName, id: &str) -> Result<Response> {
    let content = &req.state.content;
    let session = content.upload(&name, id).await?;
    content.cancel_upload(&session).await?;
    Ok(no_content())
}

pub async fn patch(req: Req<'_>, name: RepoName, id: &str, body: Body) -> Result<Response> {
    let content = &req.state.content;
    let session = content.upload(&name, id).await?;
    let chunk = chunk_of(req, body, Some(&session))?;
    let committed = content.append(&session, chunk).await?;
    Ok(upload_status(StatusCode::ACCEPTED, &name, id, committed))
}

pub async fn finish(req: Req<'_>, name: RepoName, id: &str, body: Body) -> Result<Response> {
    let content = &req.state.content;
    let session = content.upload(&name, id).await?;
    let digest = req.query.one("digest").ok_or_else(|| {
        RegistryError::new(
            ErrorCode::DigestInvalid,
            "PUT that completes an upload needs ?digest=<algorithm:hex>",
        )
    })?;
    let digest = parse_digest(&digest)?;
    let last = if has_body(req.headers) {
        Some(chunk_of(req, body, Some(&session))?)
    } else {
        None
    };
    content.finish_upload(session, &digest, last).await?;
    Ok(blob_created(&name, &digest))
}

/// The request body as a chunk, with what its `Content-Range` and `Content-Length` say
/// about it, checked against `session` (when there is one) before any byte is read.
fn chunk_of(req: Req<'_>, body: Body, session: Option<&UploadSession>) -> Result<Chunk> {
    let data = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    let length = content_length(req.headers);
    let Some(raw) = req.header(header::CONTENT_RANGE) else {
        return Ok(Chunk {
            data,
            start: None,
            len: length,
        });
    };
    let Some((start, end)) = parse_content_range(raw) else {
        let message = format!("Content-Range {raw:?} is not of the form <start>-<end>");
        return Err(match session {
            Some(s) => ContentError::OutOfOrder {
                repository: s.repository.clone(),
                id: s.id.clone(),
                committed: s.committed,
                message,
            }
            .into(),
            None => RegistryError::new(ErrorCode::BlobUploadInvalid, message)
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE),
        });
    };
    let len = end - start + 1;
    let chunk = Chunk {
        data,
        start: Some(start),
        len: Some(len),
    };
    if let Some(s) = session {
        req.state.content.check_chunk(s, &chunk)?;
    }
    if let Some(cl) = length.filter(|&cl| cl != len) {
        return Err(RegistryError::new(
            ErrorCode::SizeInvalid,
            format!("Content-Range {raw:?} covers {len} bytes but Content-Length is {cl}"),
        ));
    }
    Ok(chunk)
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    created(format!("/v2/{name}/blobs/{digest}"), digest)
}

fn no_content() -> Response {
    (StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response()
}

/// A session's state: where to continue it, how much it holds.
fn upload_status(status: StatusCode, name: &RepoName, id: &str, committed: u64) -> Response {
    (
        status,
        [
            (
                header::LOCATION,
                header_value(format!("/v2/{name}/blobs/uploads/{id}")),
            ),
            (header::RANGE, upload_range(committed)),
            (
                HeaderName::from_static(DOCKER_UPLOAD_UUID),
                header_value(id),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
        ],
    )
        .into_response()
}
