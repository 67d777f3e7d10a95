//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with `Range` reads.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::{DOCKER_CONTENT_DIGEST, Req, Result, accepted, parse_digest};
use crate::content::BlobSource;
use crate::http::header_value;
use crate::oci::range::parse_range;
use crate::oci::{ErrorCode, RegistryError, RepoName};

pub async fn get(req: Req<'_>, name: RepoName, digest: &str, head: bool) -> Result<Response> {
    let digest = parse_digest(digest)?;
    let content = &req.state.content;
    let size = content.blob_size(&name, &digest).await?;
    let range = match req.header(header::RANGE).and_then(parse_range) {
        None => None,
        Some(r) => Some(r.resolve(size).ok_or_else(|| {
            RegistryError::new(
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
            )
        })?),
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
    if head {
        return Ok(builder.body(Body::empty())?);
    }
    let body = match content
        .open_blob(&digest, size, range, req.zero_copy.is_some())
        .await?
    {
        // The client fetches the bytes (and any Range) from the object store.
        BlobSource::Redirect(url) => {
            return Ok(Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(header::LOCATION, header_value(url))
                .header(DOCKER_CONTENT_DIGEST, header_value(digest.to_string()))
                .header(header::CONTENT_LENGTH, "0")
                .body(Body::empty())?);
        }
        BlobSource::File { file, offset, len } => match req.zero_copy {
            Some(zero_copy) => Body::new(zero_copy.body(file, offset, len)),
            None => return Err(RegistryError::internal("a blob file without zero copy")),
        },
        BlobSource::Stream(reader) => Body::from_stream(reader.body),
    };
    Ok(builder.body(body)?)
}

pub async fn delete(req: Req<'_>, name: RepoName, digest: &str) -> Result<Response> {
    let digest = parse_digest(digest)?;
    req.state.content.unlink_blob(&name, &digest).await?;
    Ok(accepted())
}
