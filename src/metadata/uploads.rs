//! The uploads domain: upload sessions, the claim a writing request takes on one and its
//! lease, and the listings the cleanup of abandoned sessions reads.

use async_trait::async_trait;

use super::MetaError;
use crate::oci::RepoName;

#[derive(Clone, Debug)]
pub struct UploadSession {
    pub id: String,
    pub repository: RepoName,
    /// Bytes durably received so far.
    pub committed: u64,
    /// The hasher's saved state after `committed` bytes (see `oci::Hasher::save`).
    pub hash_state: Vec<u8>,
    /// The blob store's state for the session (see `storage::BlobStore::upload_start`).
    pub store_state: Vec<u8>,
    pub started_at: i64,
}

#[async_trait]
pub trait UploadStore: Send + Sync + 'static {
    async fn create_upload(&self, session: &UploadSession) -> Result<(), MetaError>;

    async fn get_upload(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<Option<UploadSession>, MetaError>;

    /// Takes the session for one writing request: succeeds only while the session holds
    /// exactly `from` bytes and no other writer's lease is live at `now`. Fails with
    /// `UploadConflict` otherwise (or when the session is gone).
    async fn claim_upload(
        &self,
        id: &str,
        from: u64,
        writer: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<(), MetaError>;

    /// Extends `writer`'s lease; `false` when `writer` no longer holds the session.
    async fn renew_upload_claim(
        &self,
        id: &str,
        writer: &str,
        lease_until: i64,
    ) -> Result<bool, MetaError>;

    /// Gives the session up without moving it (the write failed).
    async fn release_upload_claim(&self, id: &str, writer: &str) -> Result<(), MetaError>;

    /// Moves an upload `writer` holds from `from` bytes to `to` bytes with a new hasher
    /// state, and releases it; fails with `UploadConflict` if `writer` lost the session.
    async fn advance_upload(
        &self,
        id: &str,
        writer: &str,
        from: u64,
        to: u64,
        hash_state: &[u8],
        store_state: &[u8],
    ) -> Result<(), MetaError>;

    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError>;

    /// Sessions nobody has written to since `before` (Unix ms), oldest first, at most `n`.
    async fn stale_uploads(&self, before: i64, n: i64) -> Result<Vec<UploadSession>, MetaError>;

    /// The ids of every upload session.
    async fn upload_ids(&self) -> Result<Vec<String>, MetaError>;

    /// How many upload sessions exist (the `berth_uploads_open` gauge).
    async fn count_uploads(&self) -> Result<u64, MetaError>;
}
