//! The blob store seam: content-addressed bytes and the upload sessions that produce them.
//! Every backend passes the one suite in `tests/blobstore_suite.rs`.

pub mod fs;

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
    #[error("the request body failed while streaming: {0}")]
    Body(std::io::Error),
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
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

    /// Removes a committed blob's bytes (garbage collection; repositories only unlink).
    async fn delete(&self, digest: &Digest) -> Result<(), StorageError>;

    /// Creates the storage for a new upload session.
    async fn upload_start(&self, id: &str) -> Result<(), StorageError>;

    /// Appends `data` to the upload after its first `offset` bytes (anything the store
    /// holds past `offset` is from a request that was never acknowledged, and is dropped),
    /// feeding every byte to `hasher`. Durable when it returns. Returns the bytes appended.
    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
        hasher: &mut Hasher,
    ) -> Result<u64, StorageError>;

    /// Streams the first `len` bytes of an upload (to hash it again under another algorithm).
    async fn upload_read(&self, id: &str, len: u64) -> Result<ByteStream, StorageError>;

    /// Makes the first `size` bytes of the upload visible as `digest`, atomically, and
    /// removes the upload. The caller has verified the digest.
    async fn upload_commit(&self, id: &str, size: u64, digest: &Digest)
    -> Result<(), StorageError>;

    /// Discards an upload's bytes. Not an error if there are none.
    async fn upload_abort(&self, id: &str) -> Result<(), StorageError>;
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
