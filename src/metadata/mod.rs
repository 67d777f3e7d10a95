//! The metadata seam: repositories, manifests, tags, blob links and upload sessions.
//! One SQL implementation serves SQLite and PostgreSQL; both pass the one suite in
//! `tests/metadata_suite.rs`.

pub mod cache;
mod readers;
pub mod sql;

use async_trait::async_trait;

use crate::oci::{Digest, Reference, RepoName};

pub use sql::SqlMetadataStore;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("manifest references content this repository does not have: {}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))]
    MissingReferences(Vec<Digest>),
    #[error(
        "upload session changed underneath this request (another request moved it on); retry from the offset the status endpoint reports"
    )]
    UploadConflict,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A stored manifest, exactly as pushed.
#[derive(Clone, Debug)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub content: bytes::Bytes,
}

/// A manifest to store, with what the registry parsed out of it.
#[derive(Clone, Debug)]
pub struct NewManifest {
    pub repository: RepoName,
    pub digest: Digest,
    pub media_type: String,
    pub content: Vec<u8>,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// The manifest's annotations as a JSON object, for referrers responses.
    pub annotations: Option<String>,
    /// Blobs that must be linked to the repository (config, layers).
    pub blobs: Vec<Digest>,
    /// Manifests that must exist in the repository (an index's children).
    pub manifests: Vec<Digest>,
    /// Tags to point at this manifest in the same transaction.
    pub tags: Vec<String>,
}

/// A manifest that names a subject, as the referrers API lists it.
#[derive(Clone, Debug)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

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
pub trait MetadataStore: Send + Sync + 'static {
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, MetaError>;

    /// Repository names in lexical order after `last`, at most `n`.
    async fn list_repositories(&self, last: Option<&str>, n: i64)
    -> Result<Vec<String>, MetaError>;

    /// Records a committed blob and links it to `repo` (creating the repository).
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64)
    -> Result<(), MetaError>;

    /// The size of a blob linked to `repo`, or `None`.
    async fn linked_blob(&self, repo: &RepoName, digest: &Digest)
    -> Result<Option<u64>, MetaError>;

    /// Removes a blob's link from `repo`; `false` when there was none.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;

    /// Stores a manifest and its tags in one transaction, after checking that every blob
    /// and child manifest it references is in the repository.
    async fn put_manifest(&self, m: &NewManifest) -> Result<(), MetaError>;

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>, MetaError>;

    /// Deletes a manifest and every tag pointing at it; `false` when there was none.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;

    /// Deletes one tag (the manifest stays); `false` when there was none.
    async fn delete_tag(&self, repo: &RepoName, tag: &str) -> Result<bool, MetaError>;

    /// Tags in lexical order after `last`, at most `n`.
    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: i64,
    ) -> Result<Vec<String>, MetaError>;

    /// Manifests in `repo` whose subject is `subject`, optionally only those of `artifact_type`.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, MetaError>;

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

    /// Closes every connection, once the server has stopped serving: PostgreSQL sees its
    /// sessions end instead of sockets reset, and the last SQLite connection checkpoints
    /// the write-ahead log into the database file and removes it.
    async fn close(&self);
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
