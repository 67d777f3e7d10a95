//! How the errors of the layers below reach a `/v2` client: each converts into the one
//! [`RegistryError`] (code, status, message, headers), so handlers use `?`.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};

use super::DOCKER_UPLOAD_UUID;
use crate::auth::{Denied, Refusal};
use crate::content::ContentError;
use crate::http::header_value;
use crate::metadata::MetaError;
use crate::oci::digest::DigestError;
use crate::oci::name::{NameError, ReferenceError};
use crate::oci::{ErrorCode, RegistryError};
use crate::storage::StorageError;

/// A failure of the database as the client sees it: a database that cannot be reached
/// (stopped, restarting, connection lost, out of connections) is 503 with `Retry-After`, a
/// full disk 507, anything else 500; all are logged with the driver's words, which the
/// client is not shown.
impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> RegistryError {
        if matches!(e, MetaError::Database(_)) {
            crate::ops::metrics::metrics().database_error();
        }
        if e.is_unavailable() {
            tracing::error!(error = %e, "database unavailable");
            return unavailable("the registry's database is unavailable; retry shortly");
        }
        if e.is_out_of_space() {
            tracing::error!(error = %e, "database out of space");
            return out_of_space();
        }
        if let MetaError::BlobCollecting(_) = e {
            return unavailable(e.to_string());
        }
        RegistryError::internal(e)
    }
}

/// 503 `UNAVAILABLE` with `Retry-After`: clients retry.
fn unavailable(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::Unavailable, message)
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
}

/// 507 `INSUFFICIENT_STORAGE`: the disk (blob store or database) is full. What the failed
/// request wrote is gone already; pushes work again once space is freed.
fn out_of_space() -> RegistryError {
    RegistryError::new(
        ErrorCode::InsufficientStorage,
        "the registry is out of storage space; nothing of this request was kept (an upload \
         resumes from the offset its status reports); retry once an administrator has freed space",
    )
}

/// A blob-store failure as the client sees it: an unreachable or refusing object store is
/// 503 (retry later), a full filesystem 507, anything else 500; all are logged with the
/// store's own words.
impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> RegistryError {
        tracing::error!(error = %e, "blob store failed");
        if matches!(e, StorageError::Backend(_) | StorageError::Io(_)) {
            crate::ops::metrics::metrics().storage_error();
        }
        if e.is_out_of_space() {
            return out_of_space();
        }
        match e {
            StorageError::Backend(msg) => {
                unavailable(format!("blob storage is unavailable: {msg}"))
            }
            StorageError::BlobNotFound(d) => RegistryError::blob_unknown(d),
            other => RegistryError::internal(other),
        }
    }
}

/// A response that could not be built (a header the server itself set is invalid): 500.
impl From<axum::http::Error> for RegistryError {
    fn from(e: axum::http::Error) -> RegistryError {
        RegistryError::internal(e)
    }
}

impl From<DigestError> for RegistryError {
    fn from(e: DigestError) -> RegistryError {
        RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> RegistryError {
        RegistryError::new(ErrorCode::NameInvalid, e.to_string())
    }
}

/// A reference in a manifest URL: a bad digest is `DIGEST_INVALID`, a bad tag
/// `MANIFEST_INVALID`.
impl From<ReferenceError> for RegistryError {
    fn from(e: ReferenceError) -> RegistryError {
        match e {
            ReferenceError::Digest(e) => e.into(),
            e @ ReferenceError::Tag(_) => {
                RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
            }
        }
    }
}

/// A refused request: 401 with the backend's challenge.
impl From<Denied> for RegistryError {
    fn from(d: Denied) -> RegistryError {
        if let Refusal::Throttled(wait) = d.refusal {
            return RegistryError::new(ErrorCode::TooManyRequests, d.message)
                .with_header(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        let mut err = RegistryError::new(ErrorCode::Unauthorized, d.message)
            .with_status(StatusCode::UNAUTHORIZED);
        if let Some(v) = d.challenge.and_then(|c| HeaderValue::from_str(&c.0).ok()) {
            err = err.with_header(header::WWW_AUTHENTICATE, v);
        }
        err
    }
}

impl From<ContentError> for RegistryError {
    fn from(e: ContentError) -> RegistryError {
        let message = e.to_string();
        match e {
            ContentError::BlobUnknown(_) => RegistryError::new(ErrorCode::BlobUnknown, message),
            ContentError::ManifestUnknown(_) => {
                RegistryError::new(ErrorCode::ManifestUnknown, message)
            }
            ContentError::NameUnknown(_) => RegistryError::new(ErrorCode::NameUnknown, message),
            ContentError::UploadUnknown(_) => {
                RegistryError::new(ErrorCode::BlobUploadUnknown, message)
            }
            // 416 with the session's `Range` and `Location`, so the client can resume.
            ContentError::OutOfOrder {
                repository,
                id,
                committed,
                ..
            } => RegistryError::new(ErrorCode::BlobUploadInvalid, message)
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                .with_header(header::RANGE, upload_range(committed))
                .with_header(
                    header::LOCATION,
                    header_value(format!("/v2/{repository}/blobs/uploads/{id}")),
                )
                .with_header(
                    HeaderName::from_static(DOCKER_UPLOAD_UUID),
                    header_value(&id),
                ),
            ContentError::UploadLost | ContentError::BodyEnded(_) => {
                RegistryError::new(ErrorCode::BlobUploadInvalid, message)
            }
            ContentError::SizeMismatch { .. } => {
                RegistryError::new(ErrorCode::SizeInvalid, message)
            }
            ContentError::DigestMismatch {
                expected,
                actual,
                size,
            } => RegistryError::new(ErrorCode::DigestInvalid, message).with_detail(
                serde_json::json!({
                    "expected": expected.to_string(),
                    "actual": actual.to_string(),
                    "size": size,
                }),
            ),
            ContentError::DigestInvalid(_) => RegistryError::new(ErrorCode::DigestInvalid, message),
            ContentError::ManifestInvalid(_) => {
                RegistryError::new(ErrorCode::ManifestInvalid, message)
            }
            ContentError::ManifestTooLarge { .. } => {
                RegistryError::new(ErrorCode::ManifestInvalid, message)
                    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            ContentError::MissingReferences { missing, .. } => {
                let list: Vec<String> = missing.iter().map(|d| d.to_string()).collect();
                RegistryError::new(ErrorCode::ManifestBlobUnknown, message)
                    .with_detail(serde_json::json!({ "missing": list }))
            }
            ContentError::DescriptorSize {
                digest,
                declared,
                stored,
                ..
            } => RegistryError::new(ErrorCode::ManifestInvalid, message).with_detail(
                serde_json::json!({
                    "digest": digest.to_string(),
                    "declared": declared,
                    "stored": stored,
                }),
            ),
            ContentError::Metadata(e) => e.into(),
            ContentError::Storage(e) => e.into(),
            ContentError::Corrupt(what) => RegistryError::internal(what),
            ContentError::ProjectUnknown(_) => RegistryError::new(ErrorCode::NameUnknown, message),
        }
    }
}

/// The `Range` an upload reports: `0-<last byte>`, or `0-0` when it is empty (as
/// distribution does, since clients parse it as two numbers).
pub fn upload_range(committed: u64) -> HeaderValue {
    header_value(format!("0-{}", committed.saturating_sub(1)))
}
