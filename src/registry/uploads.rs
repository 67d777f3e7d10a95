//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic with `?digest=`,
//! cross-repository mount) and `PATCH`/`PUT`/`GET`/`DELETE /v2/<name>/blobs/uploads/<id>`.
//!
//! The session's durable length and hasher state live in the metadata store, so any
//! process can take the next request of an upload another started.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};

use super::blobs::parse_digest;
use super::{DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, Req, Result, header_value, storage_error};
use crate::auth::Access;
use crate::metadata::{MetaError, MetadataStore, UploadSession, now_millis};
use crate::oci::{Algorithm, Digest, ErrorCode, Hasher, RegistryError, RepoName};
use crate::storage::{ByteStream, StorageError, Verify};

pub async fn start(req: Req<'_>, name: RepoName, body: Body) -> Result<Response> {
    if *req.method != Method::POST {
        return Err(req.unsupported("POST"));
    }
    let mount = req.query_one("mount");
    let from = req.query_one("from");
    req.state
        .access
        .authorize(req.headers, &[Access::push(name.as_str())])
        .await?;

    if let (Some(mount), Some(from)) = (&mount, &from) {
        if let Some(resp) = try_mount(req, &name, mount, from).await? {
            return Ok(resp);
        }
    }

    let digest = req
        .query_one("digest")
        .map(|d| parse_digest(&d))
        .transpose()?;
    let session = new_session(req, &name).await?;
    if let Some(digest) = digest {
        // Monolithic upload in a single POST. The client never learns of this session, so
        // a refused upload must not leave it behind (nor point the client at it).
        let id = session.id.clone();
        let store_state = session.store_state.clone();
        return match finish(req, &name, session, digest, body).await {
            Ok(resp) => Ok(resp),
            Err(mut e) => {
                discard(req, &id, &store_state).await?;
                e.headers.clear();
                Err(e)
            }
        };
    }
    Ok(upload_status(StatusCode::ACCEPTED, &name, &session.id, 0))
}

/// Mounts `digest` from `from` into `name` when the caller may pull `from` and it has the
/// blob; `None` means "not mountable", and the caller opens an ordinary upload instead.
async fn try_mount(
    req: Req<'_>,
    name: &RepoName,
    mount: &str,
    from: &str,
) -> Result<Option<Response>> {
    let (Ok(digest), Ok(from)) = (mount.parse::<Digest>(), RepoName::parse(from)) else {
        return Ok(None);
    };
    if req
        .state
        .access
        .authorize(req.headers, &[Access::pull(from.as_str())])
        .await
        .is_err()
    {
        return Ok(None);
    }
    let meta = &req.state.meta;
    let Some(size) = meta
        .linked_blob(&from, &digest)
        .await
        .map_err(RegistryError::internal)?
    else {
        return Ok(None);
    };
    if req
        .state
        .blobs
        .stat(&digest)
        .await
        .map_err(RegistryError::internal)?
        .is_none()
    {
        return Ok(None);
    }
    meta.link_blob(name, &digest, size)
        .await
        .map_err(RegistryError::internal)?;
    Ok(Some(created(name, &digest)))
}

async fn new_session(req: Req<'_>, name: &RepoName) -> Result<UploadSession> {
    let id = uuid::Uuid::new_v4().to_string();
    let store_state = req
        .state
        .blobs
        .upload_start(&id)
        .await
        .map_err(storage_error)?;
    let session = UploadSession {
        id,
        repository: name.clone(),
        committed: 0,
        hash_state: Hasher::new(Algorithm::Sha256).save(),
        store_state,
        started_at: now_millis(),
    };
    req.state
        .meta
        .create_upload(&session)
        .await
        .map_err(RegistryError::internal)?;
    Ok(session)
}

pub async fn handle(req: Req<'_>, name: RepoName, id: &str, body: Body) -> Result<Response> {
    let access = match *req.method {
        Method::GET => Access::pull(name.as_str()),
        Method::PATCH | Method::PUT | Method::DELETE => Access::push(name.as_str()),
        _ => return Err(req.unsupported("GET, PATCH, PUT, DELETE")),
    };
    req.state.access.authorize(req.headers, &[access]).await?;
    let session = req
        .state
        .meta
        .get_upload(&name, id)
        .await
        .map_err(RegistryError::internal)?
        .ok_or_else(|| RegistryError::upload_unknown(id))?;
    match *req.method {
        Method::GET => Ok(upload_status(
            StatusCode::NO_CONTENT,
            &name,
            id,
            session.committed,
        )),
        Method::DELETE => {
            discard(req, id, &session.store_state).await?;
            Ok((StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response())
        }
        Method::PATCH => {
            let expected = check_chunk(req, &name, &session)?;
            if expected == Some(0) {
                return Ok(upload_status(
                    StatusCode::ACCEPTED,
                    &name,
                    id,
                    session.committed,
                ));
            }
            let mut claim = Claim::take(req, &name, &session).await?;
            let (to, hasher, store_state) =
                write_chunk(req, &session, &claim, expected, body).await?;
            claim
                .advance(session.committed, to, &hasher, &store_state)
                .await?;
            Ok(upload_status(StatusCode::ACCEPTED, &name, id, to))
        }
        _ => {
            let digest = req.query_one("digest").ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::DigestInvalid,
                    "PUT that completes an upload needs ?digest=<algorithm:hex>",
                )
            })?;
            let digest = parse_digest(&digest)?;
            finish(req, &name, session, digest, body).await
        }
    }
}

/// The `Range` an upload reports: `0-<last byte>`, or `0-0` when it is empty (as
/// distribution does, since clients parse it as two numbers).
fn upload_status(status: StatusCode, name: &RepoName, id: &str, committed: u64) -> Response {
    let range = format!("0-{}", committed.saturating_sub(1));
    (
        status,
        [
            (
                header::LOCATION,
                header_value(format!("/v2/{name}/blobs/uploads/{id}")),
            ),
            (header::RANGE, header_value(range)),
            (
                header::HeaderName::from_static(DOCKER_UPLOAD_UUID),
                header_value(id),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
        ],
    )
        .into_response()
}

fn created(name: &RepoName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                header_value(format!("/v2/{name}/blobs/{digest}")),
            ),
            (
                header::HeaderName::from_static(DOCKER_CONTENT_DIGEST),
                header_value(digest.to_string()),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
        ],
    )
        .into_response()
}

/// Parses an upload `Content-Range` (`<start>-<end>`, inclusive; a `bytes ` or `bytes=`
/// prefix is tolerated).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes")
        .map(|r| r.trim_start_matches([' ', '=']))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b >= a).then_some((a, b))
}

/// Checks a request's `Content-Range` against the session; returns the byte count the
/// request promises, if it says.
fn check_chunk(req: Req<'_>, name: &RepoName, session: &UploadSession) -> Result<Option<u64>> {
    let content_length = req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    let Some(raw) = req.header(header::CONTENT_RANGE) else {
        return Ok(content_length);
    };
    let out_of_order = |message: String| out_of_order(name, session, message);
    let Some((start, end)) = parse_content_range(raw) else {
        return Err(out_of_order(format!(
            "Content-Range {raw:?} is not of the form <start>-<end>"
        )));
    };
    if start != session.committed {
        return Err(out_of_order(format!(
            "chunk starts at byte {start} but the upload holds {} bytes; send the chunk that starts there",
            session.committed
        )));
    }
    let len = end - start + 1;
    if content_length.is_some_and(|cl| cl != len) {
        return Err(RegistryError::new(
            ErrorCode::SizeInvalid,
            format!(
                "Content-Range {raw:?} covers {len} bytes but Content-Length is {}",
                content_length.unwrap_or(0)
            ),
        ));
    }
    Ok(Some(len))
}

/// 416 with the session's current `Range` and `Location`, so the client can resume.
fn out_of_order(name: &RepoName, session: &UploadSession, message: String) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUploadInvalid, message)
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .with_header(
            header::RANGE,
            header_value(format!("0-{}", session.committed.saturating_sub(1))),
        )
        .with_header(
            header::LOCATION,
            header_value(format!("/v2/{name}/blobs/uploads/{}", session.id)),
        )
        .with_header(
            header::HeaderName::from_static(DOCKER_UPLOAD_UUID),
            header_value(&session.id),
        )
}

/// How long a writing request holds an upload session without renewing its claim, and how
/// often it renews while it writes. A writer that dies (crash, lost database) stops
/// renewing, and the session is free again once the lease runs out.
const UPLOAD_LEASE_MS: i64 = 60_000;
const UPLOAD_RENEW_EVERY: Duration = Duration::from_secs(15);
/// How long a request waits for another writer of the same session to finish before it
/// is refused with 416.
const CLAIM_WAIT: Duration = Duration::from_secs(3);

/// One request's exclusive hold on an upload session, in whichever process it runs: two
/// requests writing the same session at once would interleave their bytes. Released when
/// dropped (a failed write, a client that hung up) unless the session was advanced or
/// finished.
struct Claim {
    meta: Arc<dyn MetadataStore>,
    id: String,
    writer: String,
    held: bool,
}

impl Claim {
    async fn take(req: Req<'_>, name: &RepoName, session: &UploadSession) -> Result<Claim> {
        let writer = uuid::Uuid::new_v4().to_string();
        let started = tokio::time::Instant::now();
        loop {
            let now = now_millis();
            match req
                .state
                .meta
                .claim_upload(
                    &session.id,
                    session.committed,
                    &writer,
                    now,
                    now + UPLOAD_LEASE_MS,
                )
                .await
            {
                Ok(()) => {
                    return Ok(Claim {
                        meta: req.state.meta.clone(),
                        id: session.id.clone(),
                        writer,
                        held: true,
                    });
                }
                Err(MetaError::UploadConflict) => {}
                Err(e) => return Err(RegistryError::internal(e)),
            }
            // Gone, moved on, or busy? A request that is still writing from the same offset
            // (often the first attempt of this very retry, whose connection dropped and
            // whose server has not noticed yet) gets a moment to finish or give up.
            let current = req
                .state
                .meta
                .get_upload(name, &session.id)
                .await
                .map_err(RegistryError::internal)?
                .ok_or_else(|| RegistryError::upload_unknown(&session.id))?;
            if current.committed != session.committed {
                return Err(out_of_order(
                    name,
                    &current,
                    format!(
                        "the upload moved on to {} bytes while this request waited; resume from there",
                        current.committed
                    ),
                ));
            }
            if started.elapsed() >= CLAIM_WAIT {
                return Err(out_of_order(
                    name,
                    &current,
                    "another request is writing to this upload; check the upload status and resume from the offset it reports".to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Renews the lease until it fails; returns why (runs beside the write it guards).
    async fn keep(&self) -> RegistryError {
        loop {
            tokio::time::sleep(UPLOAD_RENEW_EVERY).await;
            match self
                .meta
                .renew_upload_claim(&self.id, &self.writer, now_millis() + UPLOAD_LEASE_MS)
                .await
            {
                Ok(true) => continue,
                Ok(false) => {
                    return lost_session();
                }
                Err(e) => return RegistryError::internal(e),
            }
        }
    }

    /// Records `to` durable bytes and the hasher after them, and lets the session go.
    async fn advance(
        &mut self,
        from: u64,
        to: u64,
        hasher: &Hasher,
        store_state: &[u8],
    ) -> Result<()> {
        let done = self
            .meta
            .advance_upload(
                &self.id,
                &self.writer,
                from,
                to,
                &hasher.save(),
                store_state,
            )
            .await;
        self.held = false;
        match done {
            Ok(()) => Ok(()),
            Err(MetaError::UploadConflict) => Err(lost_session()),
            Err(e) => Err(RegistryError::internal(e)),
        }
    }

    /// The session is gone (finished or discarded): nothing to release.
    fn forget(&mut self) {
        self.held = false;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let (meta, id, writer) = (self.meta.clone(), self.id.clone(), self.writer.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = meta.release_upload_claim(&id, &writer).await {
                    tracing::warn!(upload = %id, error = %e, "could not release an upload claim; it expires with its lease");
                }
            });
        }
    }
}

fn lost_session() -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadInvalid,
        "the upload was cancelled or taken over while this request was writing",
    )
}

fn restore_hasher(session: &UploadSession) -> Result<Hasher> {
    Hasher::restore(&session.hash_state).ok_or_else(|| {
        RegistryError::internal(format!(
            "upload {} has an unreadable hash state",
            session.id
        ))
    })
}

/// Forgets a session, then drops its data (in that order, as the purge does: no request can
/// continue a session whose data is going; a crash in between leaves data that the orphan
/// sweep of `berth gc` removes).
async fn discard(req: Req<'_>, id: &str, store_state: &[u8]) -> Result<()> {
    req.state
        .meta
        .delete_upload(id)
        .await
        .map_err(RegistryError::internal)?;
    req.state
        .blobs
        .upload_abort(id, store_state)
        .await
        .map_err(storage_error)
}

fn body_stream(body: Body) -> ByteStream {
    body.into_data_stream()
        .map_err(std::io::Error::other)
        .boxed()
}

/// Writes the request body after the session's durable bytes while `claim` holds the
/// session; returns the new length, the hasher after it and the store's new state (the
/// caller records them).
async fn write_chunk(
    req: Req<'_>,
    session: &UploadSession,
    claim: &Claim,
    expected: Option<u64>,
    body: Body,
) -> Result<(u64, Hasher, Vec<u8>)> {
    let mut hasher = restore_hasher(session)?;
    let mut store_state = session.store_state.clone();
    let write = req.state.blobs.upload_append(
        &session.id,
        &mut store_state,
        session.committed,
        body_stream(body),
        &mut hasher,
    );
    let written = tokio::select! {
        biased;
        r = write => r,
        lost = claim.keep() => return Err(lost),
    };
    let written = match written {
        Ok(n) => n,
        Err(StorageError::UploadNotFound(_)) => {
            return Err(RegistryError::upload_unknown(&session.id));
        }
        Err(StorageError::Body(e)) => {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!(
                    "request body ended early ({e}); resume from the offset the upload status reports"
                ),
            ));
        }
        Err(e) => return Err(storage_error(e)),
    };
    if let Some(expected) = expected {
        if written != expected {
            // Not acknowledged: the session keeps its old length and the extra bytes are
            // dropped by the next append.
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("request promised {expected} bytes but sent {written}"),
            ));
        }
    }
    Ok((session.committed + written, hasher, store_state))
}

/// Appends the final chunk (if any), verifies the digest and commits the blob.
async fn finish(
    req: Req<'_>,
    name: &RepoName,
    session: UploadSession,
    digest: Digest,
    body: Body,
) -> Result<Response> {
    let state = req.state;
    let has_body = req.header(header::CONTENT_LENGTH) != Some("0")
        && (req.header(header::CONTENT_LENGTH).is_some()
            || req.header(header::TRANSFER_ENCODING).is_some());
    let expected = if has_body {
        check_chunk(req, name, &session)?
    } else {
        Some(0)
    };
    // Held until the session is gone, so no PATCH can write while the blob is committed.
    let mut claim = Claim::take(req, name, &session).await?;
    let (size, hasher, store_state) = if expected == Some(0) {
        let hasher = restore_hasher(&session)?;
        (session.committed, hasher, session.store_state.clone())
    } else {
        write_chunk(req, &session, &claim, expected, body).await?
    };
    let mismatch = |actual: &Digest| {
        RegistryError::new(
            ErrorCode::DigestInvalid,
            format!("the {size} uploaded bytes have digest {actual}, not {digest}; the upload was discarded"),
        )
        .with_detail(serde_json::json!({ "expected": digest.to_string(), "actual": actual.to_string(), "size": size }))
    };
    // The stream was hashed with sha256; a digest in another algorithm is checked by the
    // store while it commits, with one more pass over the bytes.
    let verify = if hasher.algorithm() == digest.algorithm() {
        let actual = hasher.finish();
        if actual != digest {
            claim.forget();
            // A wrong digest leaves nothing behind.
            discard(req, &session.id, &store_state).await?;
            return Err(mismatch(&actual));
        }
        Verify::Done
    } else {
        Verify::Rehash
    };
    // Bytes first, then the link that makes them visible, then forget the session: a
    // crash in between leaves at worst an unreferenced blob for garbage collection.
    match state
        .blobs
        .upload_commit(&session.id, &store_state, size, &digest, verify)
        .await
    {
        Ok(()) => {}
        Err(StorageError::DigestMismatch { actual, .. }) => {
            claim.forget();
            // A wrong digest leaves nothing behind.
            discard(req, &session.id, &store_state).await?;
            return Err(mismatch(&actual));
        }
        Err(StorageError::UploadNotFound(_)) => {
            return Err(RegistryError::upload_unknown(&session.id));
        }
        Err(e) => return Err(storage_error(e)),
    }
    state
        .meta
        .link_blob(name, &digest, size)
        .await
        .map_err(RegistryError::internal)?;
    state
        .meta
        .delete_upload(&session.id)
        .await
        .map_err(RegistryError::internal)?;
    claim.forget();
    Ok(created(name, &digest))
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-9"), Some((0, 9)));
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10, 19)));
        assert_eq!(parse_content_range("bytes=10-19"), Some((10, 19)));
        assert_eq!(parse_content_range("9-0"), None);
        assert_eq!(parse_content_range("x"), None);
    }
}
