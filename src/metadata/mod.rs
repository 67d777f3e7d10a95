//! The metadata seam, one trait per domain: [`RepositoryStore`] (repositories, blob links,
//! manifests, tags, referrers), [`UploadStore`] (upload sessions and their claims) and
//! [`IdentityStore`] (projects, users, groups, members, robot accounts, signing keys) and
//! [`SignInStore`] (web sessions, OpenID Connect sign-ins, CLI secrets, personal tokens) and
//! [`GcStore`] (garbage collection: leases, unreferenced blobs, marks, runs).
//! [`MetadataStore`] is all of them at once, the one name the server holds
//! (`Arc<dyn MetadataStore>`); a new domain (policy, audit) is one more trait in
//! a file of its own, one more supertrait here and one more file under `sql/`.
//!
//! Callers holding `dyn MetadataStore` (or a generic bound by it) call every domain's
//! methods without importing the domain traits; code calling them on a concrete
//! `SqlMetadataStore` imports [`prelude`]. `Arc<dyn MetadataStore>` coerces to
//! `Arc<dyn UploadStore>` etc. for code that needs one domain only.
//!
//! One SQL implementation serves SQLite and PostgreSQL; both pass the one suite in
//! `tests/metadata_suite.rs`, grouped by the same domains.

pub mod cache;
pub mod gc;
pub mod identity;
mod readers;
pub mod repositories;
pub mod signin;
pub mod sql;
pub mod uploads;

use async_trait::async_trait;

use crate::oci::Digest;

pub use gc::GcStore;
pub use identity::{
    Group, IdentityStore, Member, MemberEntity, NewProject, NewRobot, NewUser, Page, Project,
    ProjectQuery, ProjectRoles, Robot, RobotLevel, RobotPermission, RobotUpdate, SigningKey, User,
};
pub use repositories::{
    ArtifactSummary, ManifestRecord, NewManifest, Referrer, RepositoryStore, RepositorySummary,
};
pub use signin::SignInStore;
pub use sql::SqlMetadataStore;
pub use uploads::{UploadSession, UploadStore};

/// The domain traits, for calling their methods on a concrete store.
pub mod prelude {
    pub use super::{
        GcStore, IdentityStore, MetadataStore, RepositoryStore, SignInStore, UploadStore,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("manifest references content this repository does not have: {}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))]
    MissingReferences(Vec<Digest>),
    #[error(
        "upload session changed underneath this request (another request moved it on); retry from the offset the status endpoint reports"
    )]
    UploadConflict,
    /// A name (or membership) that must be unique is taken; the message names it.
    #[error("{0}")]
    Conflict(String),
    /// Something the operation refers to does not exist; the message names it.
    #[error("{0}")]
    NotFound(String),
    #[error(
        "project {project} still holds {repositories} repositories: delete them first, or delete the project with them"
    )]
    ProjectNotEmpty { project: String, repositories: u64 },
    /// A garbage collection (run `.0`) is deleting the blob: wait for it, or push it again.
    #[error("the blob is being garbage-collected (run {0}); push it again in a moment")]
    BlobCollecting(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl MetaError {
    /// The database cannot serve now: unreachable, restarting, the connection lost, out of
    /// connections. A request that meets this is answered 503 (retry later), and readiness
    /// reports the database down.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, MetaError::Database(e) if sql::retry::unavailable(e))
    }

    /// The database's disk is full (SQLite's "database or disk is full", PostgreSQL's
    /// disk_full): answered like a full blob store.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, MetaError::Database(e) if sql::retry::out_of_space(e))
    }
}

#[async_trait]
pub trait MetadataStore:
    RepositoryStore + UploadStore + IdentityStore + SignInStore + GcStore
{
    /// Closes every connection, once the server has stopped serving: PostgreSQL sees its
    /// sessions end instead of sockets reset, and the last SQLite connection checkpoints
    /// the write-ahead log into the database file and removes it.
    async fn close(&self);

    /// Whether the database answers a trivial query, for the readiness probe (callers bound
    /// the wait).
    async fn ping(&self) -> Result<(), MetaError>;

    /// The connection pools' use, for the metrics.
    fn pool_usage(&self) -> Vec<PoolUsage>;
}

/// One connection pool's use at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// `read` or `write`.
    pub pool: &'static str,
    /// Connections open.
    pub open: u32,
    /// Open and not lent out.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
