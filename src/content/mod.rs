//! The content layer: what each change does to the two stores, and in which order.
//!
//! Upload sessions (start, append, finish, cancel), mounts, manifest puts with their
//! reference checks, tag moves and deletes all live here, behind [`Content`], so that every
//! entry point — the `/v2` API today, the REST API, the web UI and background jobs to come —
//! applies the same rules. It knows nothing of HTTP: callers hand it parsed names, digests
//! and byte streams, and turn its [`ContentError`] into their own protocol's error.
//!
//! Every change passes through [`Content::before`] (where policies such as tag immutability
//! or quotas will refuse it) and, once both stores hold it, [`Content::after`] (where
//! events for the audit log and webhooks will be emitted).

mod blobs;
mod manifests;
mod uploads;

use std::sync::Arc;

use crate::metadata::{MetaError, MetadataStore};
use crate::oci::{Digest, Reference, RepoName};
use crate::storage::{BlobStore, StorageError};

pub use blobs::BlobSource;
pub use manifests::{ManifestPush, PushedManifest};
pub use uploads::{Chunk, Purged};

/// The rules content changes follow that a configuration may set.
#[derive(Clone, Copy, Debug)]
pub struct ContentRules {
    /// The largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Accept image indexes whose child manifests are not all in the repository.
    pub sparse_indexes: bool,
    /// A repository's first path segment must name an existing project before anything is
    /// pushed into it (registries with built-in accounts).
    pub projects_required: bool,
}

impl Default for ContentRules {
    fn default() -> Self {
        ContentRules {
            max_manifest_bytes: 4 * 1024 * 1024,
            sparse_indexes: false,
            projects_required: false,
        }
    }
}

/// The registry's content: both stores and the rules that keep them consistent.
pub struct Content {
    blobs: Arc<dyn BlobStore>,
    meta: Arc<dyn MetadataStore>,
    rules: ContentRules,
}

/// A change to the registry's content, as policies see it before and events after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A blob was uploaded (or an existing one re-uploaded) into a repository.
    BlobPushed {
        repository: RepoName,
        digest: Digest,
        size: u64,
    },
    /// A blob another repository has was linked into this one without an upload.
    BlobMounted {
        repository: RepoName,
        digest: Digest,
        from: RepoName,
    },
    /// A blob's link was removed from a repository (its bytes wait for collection).
    BlobUnlinked {
        repository: RepoName,
        digest: Digest,
    },
    /// A manifest was stored, and `tags` now point at it.
    ManifestPushed {
        repository: RepoName,
        digest: Digest,
        tags: Vec<String>,
    },
    /// A manifest and every tag pointing at it were deleted.
    ManifestDeleted {
        repository: RepoName,
        digest: Digest,
    },
    /// One tag was deleted; its manifest stays.
    TagDeleted { repository: RepoName, tag: String },
    /// A repository was deleted with every manifest, tag and blob link in it.
    RepositoryDeleted { repository: RepoName },
}

/// Why a content operation did not happen. Nothing was changed when one is returned,
/// except where a variant says so.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {0} is not in this repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is not in this repository")]
    ManifestUnknown(Reference),
    #[error("repository {0} does not exist")]
    NameUnknown(RepoName),
    #[error(
        "upload {0:?} is not in progress in this repository (finished, cancelled or never started)"
    )]
    UploadUnknown(String),
    /// A chunk that does not start where the session ends (or another request is writing
    /// it); the session is unchanged and the client resumes from `committed`.
    #[error("{message}")]
    OutOfOrder {
        repository: RepoName,
        id: String,
        committed: u64,
        message: String,
    },
    #[error("the upload was cancelled or taken over while this request was writing")]
    UploadLost,
    #[error("request body ended early ({0}); resume from the offset the upload status reports")]
    BodyEnded(std::io::Error),
    #[error("request promised {expected} bytes but sent {sent}")]
    SizeMismatch { expected: u64, sent: u64 },
    /// The uploaded bytes are not the digest the client named; the upload was discarded.
    #[error(
        "the {size} uploaded bytes have digest {actual}, not {expected}; the upload was discarded"
    )]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error(
        "manifest is {size} bytes; this registry accepts manifests up to {limit} bytes (limits.max_manifest_bytes)"
    )]
    ManifestTooLarge { size: String, limit: usize },
    /// Blobs or child manifests a manifest references that the repository lacks.
    #[error(
        "manifest references {} that {repository} does not have; push them first: {}",
        if .missing.len() == 1 { "content" } else { "contents" },
        .missing.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingReferences {
        repository: RepoName,
        missing: Vec<Digest>,
    },
    /// A descriptor whose size is not the stored blob's: clients pulling the manifest would
    /// fail on the mismatch.
    #[error(
        "descriptor {digest} declares {declared} bytes but the blob in {repository} is {stored} bytes"
    )]
    DescriptorSize {
        repository: RepoName,
        digest: Digest,
        declared: u64,
        stored: u64,
    },
    #[error("{0}")]
    Metadata(#[from] MetaError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Corrupt(String),
    #[error(
        "project {0} does not exist: an administrator creates it first (berth project create {0}, or the API)"
    )]
    ProjectUnknown(String),
}

pub type Result<T> = std::result::Result<T, ContentError>;

impl Content {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        meta: Arc<dyn MetadataStore>,
        rules: ContentRules,
    ) -> Content {
        Content { blobs, meta, rules }
    }

    pub fn rules(&self) -> ContentRules {
        self.rules
    }

    /// The metadata store, for maintenance commands and tests.
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.meta
    }

    /// The blob store, for maintenance commands and tests.
    pub fn blob_store(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// Runs before every change: the place where policies refuse one. Today: content goes
    /// only into existing projects (when projects are required); tag immutability, quotas
    /// and retention holds come here next.
    async fn before(&self, change: &Change) -> Result<()> {
        let into = match change {
            Change::BlobPushed { repository, .. }
            | Change::BlobMounted { repository, .. }
            | Change::ManifestPushed { repository, .. } => Some(repository),
            _ => None,
        };
        if let (true, Some(repository)) = (self.rules.projects_required, into) {
            let project = crate::auth::project_of(repository.as_str());
            if self.meta.get_project(project).await?.is_none() {
                return Err(ContentError::ProjectUnknown(project.to_string()));
            }
        }
        Ok(())
    }

    /// Runs after every change both stores hold: the place where events (audit log,
    /// webhooks, metrics) are emitted. Today they go to the log at debug level.
    fn after(&self, change: Change) {
        tracing::debug!(target: "berth::events", ?change, "content changed");
    }

    /// Closes the metadata store's connections (the server has stopped serving).
    pub async fn close(&self) {
        self.meta.close().await;
    }
}
