//! The repositories domain: repositories, the blobs linked into them, manifests, tags and
//! referrers.

use async_trait::async_trait;

use super::MetaError;
use super::identity::Page;
use crate::oci::{Digest, Reference, RepoName};

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

/// A repository as listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositorySummary {
    pub name: String,
    pub created_at: i64,
    /// How many manifests it holds.
    pub artifacts: u64,
}

/// A manifest as listings show it: with the bytes it and its blobs take, and its tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactSummary {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// The manifest's own size plus its config's and layers'.
    pub size: u64,
    pub pushed_at: i64,
    /// Its first tags with when each last moved, in byte order (as many as asked for).
    pub tags: Vec<(String, i64)>,
    /// How many tags it has in all.
    pub tag_count: u64,
    /// How many manifests in the repository name it as their subject (signatures, SBOMs).
    pub referrers: u64,
}

#[async_trait]
pub trait RepositoryStore: Send + Sync + 'static {
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, MetaError>;

    /// Repository names in lexical order after `last`, at most `n`.
    async fn list_repositories(&self, last: Option<&str>, n: i64)
    -> Result<Vec<String>, MetaError>;

    /// Records a committed blob and links it to `repo` (creating the repository).
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64)
    -> Result<(), MetaError>;

    /// The size of a blob linked to `repo`, or `None`, also while a collection has it
    /// marked (its bytes may be gone already): a client that asks then uploads the blob,
    /// which waits for the collection, instead of naming it in a manifest that is refused.
    async fn linked_blob(&self, repo: &RepoName, digest: &Digest)
    -> Result<Option<u64>, MetaError>;

    /// The sizes of those of `digests` that are linked to `repo` (the others are left out).
    async fn linked_blobs(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<(Digest, u64)>, MetaError>;

    /// Repositories that `digest` is linked to, in lexical order after `last`, at most `n`.
    async fn repositories_with_blob(
        &self,
        digest: &Digest,
        last: Option<&str>,
        n: i64,
    ) -> Result<Vec<String>, MetaError>;

    /// The repositories of a project (`<project>/...`), optionally only those whose name
    /// contains `name_contains`, in byte order: page `page` (from 1), and the total.
    async fn project_repositories(
        &self,
        project: &str,
        name_contains: Option<&str>,
        page: u64,
        page_size: u64,
    ) -> Result<Page<RepositorySummary>, MetaError>;

    /// The artifacts of a repository, most recently pushed first: page `page` (from 1),
    /// and the total. A referrer whose subject is in the repository is not one of them (it
    /// is counted in its subject's `referrers`); each carries at most `tags_each` tags.
    async fn artifacts(
        &self,
        repo: &RepoName,
        page: u64,
        page_size: u64,
        tags_each: u64,
    ) -> Result<Page<ArtifactSummary>, MetaError>;

    /// The tags of manifest `digest` in byte order with when each last moved: page `page`
    /// (from 1), and the total.
    async fn manifest_tags(
        &self,
        repo: &RepoName,
        digest: &Digest,
        page: u64,
        page_size: u64,
    ) -> Result<Page<(String, i64)>, MetaError>;

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

    /// Deletes a repository with its manifests, tags and blob links (the blobs stay for
    /// garbage collection); `false` when there was none.
    async fn delete_repository(&self, repo: &RepoName) -> Result<bool, MetaError>;

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
}
