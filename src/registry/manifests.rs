//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT, Req, Result, header_value};
use crate::auth::Access;
use crate::metadata::{MetaError, NewManifest};
use crate::oci::name::valid_tag;
use crate::oci::{Algorithm, Digest, ErrorCode, Reference, RegistryError, RepoName, manifest};

pub async fn handle(req: Req<'_>, name: RepoName, reference: &str, body: Body) -> Result<Response> {
    match *req.method {
        Method::GET | Method::HEAD => get(req, name, reference).await,
        Method::PUT => put(req, name, reference, body).await,
        Method::DELETE => delete(req, name, reference).await,
        _ => Err(req.unsupported("GET, HEAD, PUT, DELETE")),
    }
}

fn parse_reference(s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| match e {
        crate::oci::name::ReferenceError::Digest(e) => {
            RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
        }
        e @ crate::oci::name::ReferenceError::Tag(_) => {
            RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
        }
    })
}

async fn get(req: Req<'_>, name: RepoName, reference: &str) -> Result<Response> {
    req.state
        .access
        .authorize(req.headers, &[Access::pull(name.as_str())])
        .await?;
    let reference = parse_reference(reference)?;
    let m = req
        .state
        .meta
        .get_manifest(&name, &reference)
        .await
        .map_err(RegistryError::internal)?
        .ok_or_else(|| RegistryError::manifest_unknown(&reference))?;
    let headers = [
        (header::CONTENT_TYPE, header_value(&m.media_type)),
        (header::CONTENT_LENGTH, HeaderValue::from(m.content.len())),
        (
            header::HeaderName::from_static(DOCKER_CONTENT_DIGEST),
            header_value(m.digest.to_string()),
        ),
        (header::ETAG, header_value(format!("\"{}\"", m.digest))),
    ];
    if *req.method == Method::HEAD {
        return Ok((headers, Body::empty()).into_response());
    }
    Ok((headers, m.content).into_response())
}

async fn put(req: Req<'_>, name: RepoName, reference: &str, body: Body) -> Result<Response> {
    req.state
        .access
        .authorize(req.headers, &[Access::push(name.as_str())])
        .await?;
    let reference = parse_reference(reference)?;
    let limit = req.state.limits.max_manifest_bytes;
    let too_big = |n: String| {
        RegistryError::new(
            ErrorCode::ManifestInvalid,
            format!("manifest is {n} bytes; this registry accepts manifests up to {limit} bytes (limits.max_manifest_bytes)"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    if let Some(cl) = req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok())
    {
        if cl > limit {
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
    let parsed = manifest::parse(&content, req.header(header::CONTENT_TYPE))
        .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()))?;

    let (digest, mut tags) = match &reference {
        Reference::Digest(d) => {
            let actual = Digest::compute(d.algorithm(), &content);
            if &actual != d {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest body has digest {actual}, not {d} as the URL says"),
                ));
            }
            (actual, Vec::new())
        }
        Reference::Tag(t) => (
            Digest::compute(Algorithm::Sha256, &content),
            vec![t.clone()],
        ),
    };
    for t in req.query_all("tag") {
        if !valid_tag(&t) {
            return Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                crate::oci::name::ReferenceError::Tag(t).to_string(),
            ));
        }
        if !tags.contains(&t) {
            tags.push(t);
        }
    }

    // Descriptors that embed their content (`data`) or live elsewhere (`urls`) need not
    // be in the repository; everything else must be.
    let needed = |ds: &[manifest::Descriptor]| -> Vec<Digest> {
        ds.iter()
            .filter(|d| d.data.is_none() && !d.is_external())
            .map(|d| d.digest.clone())
            .collect()
    };
    let new = NewManifest {
        repository: name.clone(),
        digest: digest.clone(),
        media_type: parsed.media_type.clone(),
        content: content.to_vec(),
        artifact_type: parsed.artifact_type.clone(),
        subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
        annotations: parsed
            .annotations
            .as_ref()
            .and_then(|a| serde_json::to_string(a).ok()),
        blobs: needed(&parsed.blobs),
        manifests: needed(&parsed.manifests),
        tags,
    };
    match req.state.meta.put_manifest(&new).await {
        Ok(()) => {}
        Err(MetaError::MissingReferences(missing)) => {
            let list: Vec<String> = missing.iter().map(|d| d.to_string()).collect();
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!(
                    "manifest references {} that {name} does not have; push them first: {}",
                    if list.len() == 1 {
                        "content"
                    } else {
                        "contents"
                    },
                    list.join(", ")
                ),
            )
            .with_detail(serde_json::json!({ "missing": list })));
        }
        Err(e) => return Err(RegistryError::internal(e)),
    }
    let mut resp = (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                header_value(format!("/v2/{name}/manifests/{digest}")),
            ),
            (
                header::HeaderName::from_static(DOCKER_CONTENT_DIGEST),
                header_value(digest.to_string()),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
        ],
    )
        .into_response();
    if let Some(subject) = &parsed.subject {
        resp.headers_mut()
            .insert(OCI_SUBJECT, header_value(subject.digest.to_string()));
    }
    Ok(resp)
}

async fn delete(req: Req<'_>, name: RepoName, reference: &str) -> Result<Response> {
    req.state
        .access
        .authorize(req.headers, &[Access::delete(name.as_str())])
        .await?;
    let reference = parse_reference(reference)?;
    let meta = &req.state.meta;
    let found = match &reference {
        Reference::Digest(d) => meta.delete_manifest(&name, d).await,
        Reference::Tag(t) => meta.delete_tag(&name, t).await,
    }
    .map_err(RegistryError::internal)?;
    if !found {
        return Err(RegistryError::manifest_unknown(&reference));
    }
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}
