//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT, OCI_TAG, Req, Result, accepted, created};
use crate::content::{ContentError, ManifestPush};
use crate::http::{content_length, header_value};
use crate::oci::digest::DigestError;
use crate::oci::{Algorithm, Digest, ErrorCode, Reference, RegistryError, RepoName};

pub async fn get(req: Req<'_>, name: RepoName, reference: &str, head: bool) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    let m = req.state.content.manifest(&name, &reference).await?;
    let headers = [
        (header::CONTENT_TYPE, header_value(&m.media_type)),
        (header::CONTENT_LENGTH, HeaderValue::from(m.content.len())),
        (
            header::HeaderName::from_static(DOCKER_CONTENT_DIGEST),
            header_value(m.digest.to_string()),
        ),
        (header::ETAG, header_value(format!("\"{}\"", m.digest))),
    ];
    if head {
        return Ok((headers, Body::empty()).into_response());
    }
    Ok((headers, m.content).into_response())
}

pub async fn put(req: Req<'_>, name: RepoName, reference: &str, body: Body) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    let wanted = req.query.one("digest");
    let algorithm = wanted.as_deref().map(digest_algorithm).transpose()?;
    let limit = req.state.content.rules().max_manifest_bytes;
    let too_big =
        |size: String| RegistryError::from(ContentError::ManifestTooLarge { size, limit });
    if let Some(cl) = content_length(req.headers) {
        if cl > limit as u64 {
            return Err(too_big(cl.to_string()));
        }
    }
    let content = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            use std::error::Error as _;
            let over = e
                .source()
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if over {
                too_big(format!("more than {limit}"))
            } else {
                RegistryError::new(
                    ErrorCode::ManifestInvalid,
                    format!("manifest body could not be read: {e}"),
                )
            });
        }
    };
    // A whole digest in `?digest=` must be the body's.
    if let Some(expected) = wanted.filter(|d| d.contains(':')) {
        let expected: Digest = expected.parse()?;
        let actual = Digest::compute(expected.algorithm(), &content);
        if actual != expected {
            return Err(ContentError::DigestInvalid(format!(
                "manifest body has digest {actual}, not {expected} as the digest parameter says"
            ))
            .into());
        }
    }
    let pushed = req
        .state
        .content
        .put_manifest(ManifestPush {
            repository: &name,
            reference: &reference,
            content,
            content_type: req.header(header::CONTENT_TYPE),
            tags: req.query.all("tag"),
            algorithm,
        })
        .await?;
    let mut resp = created(
        format!("/v2/{name}/manifests/{}", pushed.digest),
        &pushed.digest,
    );
    if let Some(subject) = &pushed.subject {
        resp.headers_mut()
            .insert(OCI_SUBJECT, header_value(subject.to_string()));
    }
    // One `OCI-Tag` per tag the `tag` parameters applied (a push by digest with tags).
    if matches!(reference, Reference::Digest(_)) {
        for tag in &pushed.tags {
            resp.headers_mut().append(OCI_TAG, header_value(tag));
        }
    }
    Ok(resp)
}

/// The digest algorithm a push by tag asks for with `?digest=`: an algorithm's name
/// (`sha512`) or a whole digest in it.
fn digest_algorithm(value: &str) -> Result<Algorithm> {
    let name = value.split(':').next().unwrap_or(value);
    match name {
        "sha256" => Ok(Algorithm::Sha256),
        "sha512" => Ok(Algorithm::Sha512),
        _ => Err(DigestError::UnsupportedAlgorithm(name.to_string()).into()),
    }
}

pub async fn delete(req: Req<'_>, name: RepoName, reference: &str) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    req.state.content.delete_manifest(&name, &reference).await?;
    Ok(accepted())
}
