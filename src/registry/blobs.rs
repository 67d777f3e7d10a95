//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with `Range` reads.

use std::ops::Range;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{DOCKER_CONTENT_DIGEST, Req, Result, header_value, storage_error};
use crate::auth::Access;
use crate::oci::{Digest, ErrorCode, RegistryError, RepoName};
use crate::storage::StorageError;

pub fn parse_digest(s: &str) -> Result<Digest> {
    s.parse().map_err(|e: crate::oci::digest::DigestError| {
        RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
    })
}

pub async fn handle(req: Req<'_>, name: RepoName, digest: &str) -> Result<Response> {
    match *req.method {
        Method::GET | Method::HEAD => get(req, name, digest).await,
        Method::DELETE => delete(req, name, digest).await,
        _ => Err(req.unsupported("GET, HEAD, DELETE")),
    }
}

/// A parsed `Range: bytes=...` request header.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=a-b` or `bytes=a-`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// Parses a single-range `Range` header. `None` for anything else: per RFC 9110 a server
/// may ignore a Range it does not understand and send the whole blob.
pub fn parse_range(value: &str) -> Option<RangeRequest> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return Some(RangeRequest::Suffix(b.parse().ok()?));
    }
    let start = a.parse().ok()?;
    let end = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(RangeRequest::From { start, end })
}

/// Resolves a range request against a size: `Ok(half-open range)` or `Err(())` when
/// it cannot be satisfied.
pub fn resolve_range(r: &RangeRequest, size: u64) -> std::result::Result<Range<u64>, ()> {
    match *r {
        RangeRequest::From { start, end } => {
            if start >= size {
                return Err(());
            }
            let end = end.map_or(size, |e| (e + 1).min(size));
            Ok(start..end)
        }
        RangeRequest::Suffix(n) => {
            if n == 0 || size == 0 {
                return Err(());
            }
            Ok(size.saturating_sub(n)..size)
        }
    }
}

async fn get(req: Req<'_>, name: RepoName, digest: &str) -> Result<Response> {
    req.state
        .access
        .authorize(req.headers, &[Access::pull(name.as_str())])
        .await?;
    let digest = parse_digest(digest)?;
    let size = req
        .state
        .meta
        .linked_blob(&name, &digest)
        .await
        .map_err(RegistryError::internal)?
        .ok_or_else(|| RegistryError::blob_unknown(&digest))?;
    let range = req.header(header::RANGE).and_then(parse_range);
    let range = match range {
        None => None,
        Some(r) => match resolve_range(&r, size) {
            Ok(r) => Some(r),
            Err(()) => {
                return Err(RegistryError::new(
                    ErrorCode::BlobUnknown,
                    format!(
                        "range {:?} cannot be satisfied by a blob of {size} bytes",
                        req.header(header::RANGE).unwrap_or("")
                    ),
                )
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                .with_header(
                    header::CONTENT_RANGE,
                    header_value(format!("bytes */{size}")),
                ));
            }
        },
    };
    let mut builder = Response::builder()
        .header(DOCKER_CONTENT_DIGEST, header_value(digest.to_string()))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, header_value(format!("\"{digest}\"")))
        .header(header::CACHE_CONTROL, "max-age=31536000");
    if let Some(r) = &range {
        builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            header_value(format!("bytes {}-{}/{size}", r.start, r.end - 1)),
        );
    }
    let len = range.as_ref().map_or(size, |r| r.end - r.start);
    builder = builder.header(header::CONTENT_LENGTH, HeaderValue::from(len));
    if *req.method == Method::HEAD {
        return builder.body(Body::empty()).map_err(RegistryError::internal);
    }
    // Redirect mode: the client fetches the bytes (and any Range) from the object store.
    if let Some(url) = req
        .state
        .blobs
        .redirect_url(&digest)
        .await
        .map_err(storage_error)?
    {
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, header_value(url))
            .header(DOCKER_CONTENT_DIGEST, header_value(digest.to_string()))
            .header(header::CONTENT_LENGTH, "0")
            .body(Body::empty())
            .map_err(RegistryError::internal);
    }
    if let Some(zero_copy) = req.zero_copy {
        match req.state.blobs.open_file(&digest).await {
            Ok(Some(file)) => {
                let total = file.metadata().map_err(RegistryError::internal)?.len();
                if total != size {
                    return Err(size_mismatch(&digest, total, size));
                }
                let offset = range.as_ref().map_or(0, |r| r.start);
                return builder
                    .body(Body::new(zero_copy.body(file, offset, len)))
                    .map_err(RegistryError::internal);
            }
            Ok(None) => {}
            Err(StorageError::BlobNotFound(_)) => return Err(RegistryError::blob_unknown(&digest)),
            Err(e) => return Err(storage_error(e)),
        }
    }
    let reader = match req.state.blobs.read(&digest, range).await {
        Ok(r) => r,
        Err(StorageError::BlobNotFound(_)) => return Err(RegistryError::blob_unknown(&digest)),
        Err(e) => return Err(storage_error(e)),
    };
    if reader.total != size {
        return Err(size_mismatch(&digest, reader.total, size));
    }
    builder
        .body(Body::from_stream(reader.body))
        .map_err(RegistryError::internal)
}

fn size_mismatch(digest: &Digest, stored: u64, size: u64) -> RegistryError {
    RegistryError::internal(format!(
        "blob {digest} is {stored} bytes in the store but {size} in the metadata"
    ))
}

async fn delete(req: Req<'_>, name: RepoName, digest: &str) -> Result<Response> {
    req.state
        .access
        .authorize(req.headers, &[Access::delete(name.as_str())])
        .await?;
    let digest = parse_digest(digest)?;
    // Unlink only: other repositories may share the bytes; garbage collection frees them.
    if !req
        .state
        .meta
        .unlink_blob(&name, &digest)
        .await
        .map_err(RegistryError::internal)?
    {
        return Err(RegistryError::blob_unknown(&digest));
    }
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-9"),
            Some(RangeRequest::From {
                start: 0,
                end: Some(9)
            })
        );
        assert_eq!(
            parse_range("bytes=5-"),
            Some(RangeRequest::From {
                start: 5,
                end: None
            })
        );
        assert_eq!(parse_range("bytes=-3"), Some(RangeRequest::Suffix(3)));
        assert_eq!(parse_range("bytes=9-0"), None);
        assert_eq!(parse_range("bytes=0-1,3-4"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(
            resolve_range(
                &RangeRequest::From {
                    start: 0,
                    end: Some(99)
                },
                10
            ),
            Ok(0..10)
        );
        assert_eq!(
            resolve_range(
                &RangeRequest::From {
                    start: 10,
                    end: None
                },
                10
            ),
            Err(())
        );
        assert_eq!(resolve_range(&RangeRequest::Suffix(3), 10), Ok(7..10));
        assert_eq!(resolve_range(&RangeRequest::Suffix(30), 10), Ok(0..10));
    }
}
