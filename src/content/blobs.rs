//! Reading blobs a repository holds, and removing a blob from a repository.

use std::ops::Range;

use super::{Change, Content, ContentError, Result};
use crate::oci::{Digest, RepoName};
use crate::storage::{BlobReader, StorageError};

/// Where a blob's bytes come from for one response.
pub enum BlobSource {
    /// The client fetches them from the object store at this URL (redirect mode).
    Redirect(String),
    /// A local file the kernel may send straight to the socket; `offset` and `len` select
    /// the bytes to send.
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
    /// A stream of the bytes.
    Stream(BlobReader),
}

impl Content {
    /// The size of a blob `repository` holds.
    pub async fn blob_size(&self, repository: &RepoName, digest: &Digest) -> Result<u64> {
        self.meta
            .linked_blob(repository, digest)
            .await?
            .ok_or_else(|| ContentError::BlobUnknown(digest.clone()))
    }

    /// Opens `range` (all of it when `None`) of a blob of `size` bytes for sending: a
    /// redirect when the store serves pulls itself, a file when `want_file` and the store
    /// keeps blobs in local files, else a stream. A store whose copy is not `size` bytes
    /// long is an error, not a short response.
    pub async fn open_blob(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<Range<u64>>,
        want_file: bool,
    ) -> Result<BlobSource> {
        if let Some(url) = self.blobs.redirect_url(digest).await? {
            return Ok(BlobSource::Redirect(url));
        }
        let not_found = |e: StorageError| match e {
            StorageError::BlobNotFound(d) => ContentError::BlobUnknown(d),
            e => e.into(),
        };
        if want_file {
            if let Some(file) = self.blobs.open_file(digest).await.map_err(not_found)? {
                let stored = file.metadata().map_err(StorageError::Io)?.len();
                check_size(digest, stored, size)?;
                let (offset, len) = range.map_or((0, size), |r| (r.start, r.end - r.start));
                return Ok(BlobSource::File { file, offset, len });
            }
        }
        let reader = self.blobs.read(digest, range).await.map_err(not_found)?;
        check_size(digest, reader.total, size)?;
        Ok(BlobSource::Stream(reader))
    }

    /// Removes a blob's link from `repository`; its bytes stay (other repositories may
    /// share them) until garbage collection.
    pub async fn unlink_blob(&self, repository: &RepoName, digest: &Digest) -> Result<()> {
        let change = Change::BlobUnlinked {
            repository: repository.clone(),
            digest: digest.clone(),
        };
        self.before(&change).await?;
        if !self.meta.unlink_blob(repository, digest).await? {
            return Err(ContentError::BlobUnknown(digest.clone()));
        }
        self.after(change);
        Ok(())
    }
}

fn check_size(digest: &Digest, stored: u64, size: u64) -> Result<()> {
    if stored != size {
        return Err(ContentError::Corrupt(format!(
            "blob {digest} is {stored} bytes in the store but {size} in the metadata"
        )));
    }
    Ok(())
}
