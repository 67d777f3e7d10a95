//! What garbage collection needs of the metadata store: leases (one collection at a time
//! across replicas), the blobs no manifest references, the mark that tells pushes and
//! mounts a blob is being deleted, untagged manifests, and the record of runs. The
//! protocol is in docs/architecture.md, "Garbage collection".

use async_trait::async_trait;

use super::MetaError;
use crate::oci::{Digest, RepoName};

/// The lease a collection holds while it runs (one at a time, across replicas); its
/// holder is the run's id, which is also the mark it puts on blobs.
pub const GC_LEASE: &str = "gc";

/// What a push or mount learns when it says it is about to use a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobTouch {
    /// The blob may be used: no collection will delete it within its grace period (or the
    /// store has no row for it yet, which no collection can delete either).
    Ready,
    /// A live collection (run `run`) is deleting it: wait for the run to forget it.
    Collecting { run: String },
}

/// An unreferenced blob a collection may delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageBlob {
    pub digest: Digest,
    pub size: u64,
}

/// A manifest with what decides whether an untagged collection keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestNode {
    pub digest: Digest,
    pub tagged: bool,
    /// The manifest it refers to (a signature's image), if any.
    pub subject: Option<Digest>,
    /// The manifests it lists (an index's).
    pub children: Vec<Digest>,
}

/// One collection, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcRun {
    pub id: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// `cli`, `schedule` or `api`.
    pub started_by: String,
    pub dry_run: bool,
    pub untagged: bool,
    /// `running`, `done`, `failed` (or `running` forever for a run that was killed: the
    /// next run finishes its job).
    pub status: String,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub manifests_deleted: u64,
    /// Blobs whose bytes the store refused to delete (kept for the next run).
    pub failed: u64,
    pub error: Option<String>,
}

#[async_trait]
pub trait GcStore: Send + Sync + 'static {
    /// Takes lease `name` for `holder` until `now + ttl_ms` if nobody else holds it
    /// unexpired (renews it when `holder` already does). `Err(holder, expires_at)` names
    /// the other holder.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Result<(), (String, i64)>, MetaError>;

    /// Extends lease `name` to `now + ttl_ms` if `holder` holds it and it runs for at
    /// least `ttl_ms / 2` more; `false` otherwise, also when it lapsed and nobody took it
    /// since (in between, pushes may have cleared the holder's marks, so the holder must
    /// not go on as if it had held it throughout). The half term makes a renewal answered
    /// within `ttl_ms / 2` of being sent proof that the lease was held when it ran, however
    /// late the statement ran.
    async fn renew_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, MetaError>;

    /// Gives lease `name` up, if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError>;

    /// Says a push or mount is about to use `digest` (before its bytes are committed or a
    /// link made): the blob's row, if any, is touched so no collection decides to delete it
    /// within its grace period. A mark left by a run whose lease (`lease`) has lapsed is
    /// cleared on the way.
    async fn touch_blob(&self, digest: &Digest, lease: &str) -> Result<BlobTouch, MetaError>;

    /// Blobs that no manifest in any repository references, untouched and uncreated since
    /// `cutoff` (Unix ms), in digest order after `after`, at most `limit`: a page of the
    /// candidates (nothing is locked or marked; [`GcStore::mark_garbage`] decides).
    async fn garbage_blobs(
        &self,
        cutoff: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GarbageBlob>, MetaError>;

    /// Of `digests`, marks for run `run` those still garbage (checked again under lock, in
    /// one transaction: unreferenced, untouched since `cutoff`) and returns them. From
    /// here until [`GcStore::forget_blobs`], pushes and mounts of them wait.
    async fn mark_garbage(
        &self,
        run: &str,
        digests: &[Digest],
        cutoff: i64,
    ) -> Result<Vec<GarbageBlob>, MetaError>;

    /// Removes the rows (and repository links) of `digests` marked by `run`, once their
    /// bytes are gone. Returns how many rows went.
    async fn forget_blobs(&self, run: &str, digests: &[Digest]) -> Result<u64, MetaError>;

    /// Clears `run`'s mark from `digests` whose bytes could not be deleted: they stay
    /// for the next run.
    async fn unmark_blobs(&self, run: &str, digests: &[Digest]) -> Result<(), MetaError>;

    /// Every manifest of `repo`, with its tags, subject and children.
    async fn manifest_nodes(&self, repo: &RepoName) -> Result<Vec<ManifestNode>, MetaError>;

    /// Deletes those of `digests` in `repo` that are still untagged and that no manifest
    /// outside `digests` lists as a child or names as its subject (checked again under
    /// lock, in one transaction). Returns the deleted ones.
    async fn delete_untagged(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, MetaError>;

    /// Records a run as it starts, and again as it goes and ends (by id).
    async fn record_gc_run(&self, run: &GcRun) -> Result<(), MetaError>;

    /// The last `limit` runs, newest first.
    async fn gc_runs(&self, limit: i64) -> Result<Vec<GcRun>, MetaError>;
}
