//! The blob store seam: content-addressed bytes and the upload sessions that produce them.
//! Every backend passes the one suite in `tests/blobstore_suite.rs`.

pub mod fs;
pub mod s3;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::oci::{Digest, Hasher};

pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error("upload {0} has no data in the store")]
    UploadNotFound(String),
    #[error(
        "upload {id} holds {actual} bytes but the session expects at least {expected}; the upload must be restarted"
    )]
    UploadShort {
        id: String,
        expected: u64,
        actual: u64,
    },
    #[error("range {start}-{end} is outside a blob of {size} bytes")]
    RangeNotSatisfiable { start: u64, end: u64, size: u64 },
    #[error("the uploaded bytes have digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("object store: {0}")]
    Backend(String),
    #[error("the request body failed while streaming: {0}")]
    Body(std::io::Error),
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// A new upload refused because free space is below the low-water mark.
    #[error(
        "{free} bytes free in the blob store, below storage.min_free_bytes ({min}); new uploads are refused"
    )]
    LowSpace { free: u64, min: u64 },
}

impl StorageError {
    /// The store is out of space: its filesystem said so (`ENOSPC`, or `EDQUOT` for a
    /// quota), or a new upload met the low-water mark.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StorageError::LowSpace { .. } => true,
            StorageError::Io(e) => is_out_of_space(e),
            _ => false,
        }
    }
}

/// Whether an I/O error is the filesystem's "no space left" or "quota exceeded".
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Room left in a store that keeps its bytes on a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still use (`statvfs`'s `f_bavail`).
    pub free_bytes: u64,
    /// The low-water mark (`storage.min_free_bytes`): below it new uploads are refused.
    pub min_free_bytes: u64,
}

impl Space {
    /// Below the low-water mark (or full, with no mark set): new uploads are refused, and
    /// readiness should report it.
    pub fn low(&self) -> bool {
        self.free_bytes < self.min_free_bytes || self.free_bytes == 0
    }
}

/// A committed blob, or part of one, ready to stream to a client.
pub struct BlobReader {
    pub body: ByteStream,
    /// Bytes `body` will yield.
    pub len: u64,
    /// The whole blob's size.
    pub total: u64,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a committed blob, or `None` when the store does not hold it.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;

    /// Streams a committed blob, or the half-open byte `range` of it.
    async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobReader, StorageError>;

    /// A committed blob as an open local file, for responses the kernel sends straight from
    /// the file; `None` from stores that do not keep blobs in local files.
    async fn open_file(&self, digest: &Digest) -> Result<Option<std::fs::File>, StorageError> {
        let _ = digest;
        Ok(None)
    }

    /// The room left, for stores that can run out of it (a filesystem), as last measured
    /// (at most a second old); `None` for stores that cannot say (S3). Cheap: no I/O on
    /// most calls.
    fn space(&self) -> Option<Space> {
        None
    }

    /// Removes a committed blob's bytes (garbage collection; repositories only unlink).
    async fn delete(&self, digest: &Digest) -> Result<(), StorageError>;

    /// Removes many blobs' bytes (garbage collection's sweep); a blob already gone counts
    /// as removed. Returns the ones the store refused, with why; the rest are gone.
    async fn delete_many(&self, digests: &[Digest]) -> Vec<(Digest, StorageError)> {
        use futures::StreamExt;
        futures::stream::iter(digests.iter().cloned())
            .map(|d| async move {
                match self.delete(&d).await {
                    Ok(()) | Err(StorageError::BlobNotFound(_)) => None,
                    Err(e) => Some((d, e)),
                }
            })
            .buffer_unordered(16)
            .filter_map(std::future::ready)
            .collect()
            .await
    }

    /// Creates the storage for a new upload session; returns the session's initial store
    /// state (opaque bytes the metadata store keeps with the session and hands back to every
    /// later call, so that any process can continue the upload).
    async fn upload_start(&self, id: &str) -> Result<Vec<u8>, StorageError>;

    /// Appends `data` to the upload after its first `offset` bytes (anything the store
    /// holds past `offset` is from a request that was never acknowledged, and is dropped),
    /// feeding every byte to `hasher`. Durable when it returns. Returns the bytes appended
    /// and updates `state`; on error `state` is left as it was.
    async fn upload_append(
        &self,
        id: &str,
        state: &mut Vec<u8>,
        offset: u64,
        data: ByteStream,
        hasher: &mut Hasher,
    ) -> Result<u64, StorageError>;

    /// Makes the first `size` bytes of the upload visible as `digest`, atomically, and
    /// removes the upload. With `Verify::Rehash` the store first hashes the bytes under
    /// `digest`'s algorithm and fails with `DigestMismatch` (publishing nothing) if they
    /// differ; with `Verify::Done` the caller has verified the digest while streaming.
    async fn upload_commit(
        &self,
        id: &str,
        state: &[u8],
        size: u64,
        digest: &Digest,
        verify: Verify,
    ) -> Result<(), StorageError>;

    /// Discards an upload's bytes. Not an error if there are none.
    async fn upload_abort(&self, id: &str, state: &[u8]) -> Result<(), StorageError>;

    /// A URL the client may fetch the blob from directly (a presigned object-store URL),
    /// when the store is configured to redirect pulls; `None` serves it through Berth.
    async fn redirect_url(&self, _digest: &Digest) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    /// Whether the store can be used now: for the readiness probe, so cheap (one metadata
    /// call) and without side effects. `Err` says what is wrong. Callers bound the wait.
    async fn reachable(&self) -> Result<(), StorageError>;

    /// Removes upload data that no session in `live` owns and that was begun before
    /// `before` (Unix ms): what a crash between steps can leave behind. Returns how many
    /// uploads were removed.
    async fn purge_orphan_uploads(
        &self,
        _before: i64,
        _live: &std::collections::HashSet<String>,
    ) -> Result<u64, StorageError> {
        Ok(0)
    }
}

/// Whether `upload_commit` must check the digest itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// The caller hashed every byte as it streamed in, with the digest's algorithm.
    Done,
    /// The bytes were hashed under another algorithm: hash them again before publishing.
    Rehash,
}

/// Resolves an HTTP-style inclusive range request against a blob size into a half-open range.
pub fn check_range(range: &Range<u64>, size: u64) -> Result<(), StorageError> {
    if range.start >= range.end || range.end > size {
        return Err(StorageError::RangeNotSatisfiable {
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(())
}
