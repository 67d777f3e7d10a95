//! Manifests and tags: put (with every reference check), get, delete, tag listings,
//! referrers and the catalog.

use std::collections::HashMap;

use bytes::Bytes;

use super::{Change, Content, ContentError, Result};
use crate::metadata::{ManifestRecord, MetaError, NewManifest, Referrer};
use crate::oci::name::{ReferenceError, valid_tag};
use crate::oci::{Algorithm, Digest, Reference, RepoName, manifest};

/// A manifest to store, as a client sent it.
pub struct ManifestPush<'a> {
    pub repository: &'a RepoName,
    /// Where it was pushed: a tag (which then points at it) or its digest.
    pub reference: &'a Reference,
    pub content: Bytes,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<&'a str>,
    /// More tags to point at it in the same change (the spec's `tag` parameters).
    pub tags: Vec<String>,
    /// The digest algorithm a push by tag asks for (the spec's `digest` parameter);
    /// sha256 when `None`. A push by digest uses its digest's algorithm.
    pub algorithm: Option<Algorithm>,
}

/// What a stored manifest is known by.
#[derive(Debug)]
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// Every tag that now points at it.
    pub tags: Vec<String>,
}

impl Content {
    /// Stores a manifest after checking it: it parses as a manifest, its digest matches a
    /// push by digest, the tags are valid, every blob it references is in the repository
    /// with the size its descriptor declares, and every child manifest is there too
    /// (unless sparse indexes are allowed). The manifest and its tags are stored in one
    /// transaction.
    pub async fn put_manifest(&self, push: ManifestPush<'_>) -> Result<PushedManifest> {
        let ManifestPush {
            repository,
            reference,
            content,
            content_type,
            tags: extra_tags,
            algorithm,
        } = push;
        let limit = self.rules.max_manifest_bytes;
        if content.len() > limit {
            return Err(ContentError::ManifestTooLarge {
                size: content.len().to_string(),
                limit,
            });
        }
        let parsed = manifest::parse(&content, content_type)
            .map_err(|e| ContentError::ManifestInvalid(e.to_string()))?;
        let (digest, mut tags) = match reference {
            Reference::Digest(d) => {
                let actual = Digest::compute(d.algorithm(), &content);
                if &actual != d {
                    return Err(ContentError::DigestInvalid(format!(
                        "manifest body has digest {actual}, not {d} as the URL says"
                    )));
                }
                (actual, Vec::new())
            }
            Reference::Tag(t) => (
                Digest::compute(algorithm.unwrap_or(Algorithm::Sha256), &content),
                vec![t.clone()],
            ),
        };
        for t in extra_tags {
            if !valid_tag(&t) {
                return Err(ContentError::ManifestInvalid(
                    ReferenceError::Tag(t).to_string(),
                ));
            }
            if !tags.contains(&t) {
                tags.push(t);
            }
        }

        // Descriptors that embed their content (`data`) or live elsewhere (`urls`) need
        // not be in the repository; everything else must be.
        let stored_here = |d: &&manifest::Descriptor| d.data.is_none() && !d.is_external();
        let blobs: Vec<&manifest::Descriptor> = parsed.blobs.iter().filter(stored_here).collect();
        self.check_blob_sizes(repository, &blobs).await?;
        let children = if self.rules.sparse_indexes {
            Vec::new()
        } else {
            parsed
                .manifests
                .iter()
                .filter(stored_here)
                .map(|d| d.digest.clone())
                .collect()
        };
        let change = Change::ManifestPushed {
            repository: repository.clone(),
            digest: digest.clone(),
            tags: tags.clone(),
        };
        self.before(&change).await?;
        let new = NewManifest {
            repository: repository.clone(),
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            content: content.to_vec(),
            artifact_type: parsed.artifact_type.clone(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            annotations: parsed
                .annotations
                .as_ref()
                .and_then(|a| serde_json::to_string(a).ok()),
            blobs: blobs.iter().map(|d| d.digest.clone()).collect(),
            manifests: children,
            tags: tags.clone(),
        };
        match self.meta.put_manifest(&new).await {
            Ok(()) => {}
            Err(MetaError::MissingReferences(missing)) => {
                return Err(ContentError::MissingReferences {
                    repository: repository.clone(),
                    missing,
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.after(change);
        Ok(PushedManifest {
            digest,
            subject: parsed.subject.map(|s| s.digest),
            tags,
        })
    }

    /// Refuses a descriptor whose size is not the size of the blob the repository holds
    /// (every client pulling the manifest would fail on it). Blobs the repository does not
    /// hold are left for the store's reference check, which names them all.
    async fn check_blob_sizes(
        &self,
        repository: &RepoName,
        blobs: &[&manifest::Descriptor],
    ) -> Result<()> {
        let digests: Vec<Digest> = blobs.iter().map(|d| d.digest.clone()).collect();
        let stored: HashMap<Digest, u64> = self
            .meta
            .linked_blobs(repository, &digests)
            .await?
            .into_iter()
            .collect();
        for d in blobs {
            // A negative size was refused while parsing.
            let declared = d.size.max(0) as u64;
            match stored.get(&d.digest) {
                Some(&stored) if stored != declared => {
                    return Err(ContentError::DescriptorSize {
                        repository: repository.clone(),
                        digest: d.digest.clone(),
                        declared,
                        stored,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A manifest by tag or digest, exactly as pushed.
    pub async fn manifest(
        &self,
        repository: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestRecord> {
        self.meta
            .get_manifest(repository, reference)
            .await?
            .ok_or_else(|| ContentError::ManifestUnknown(reference.clone()))
    }

    /// Deletes a manifest (by digest: with every tag pointing at it) or one tag (by tag:
    /// the manifest stays).
    pub async fn delete_manifest(
        &self,
        repository: &RepoName,
        reference: &Reference,
    ) -> Result<()> {
        let change = match reference {
            Reference::Digest(d) => Change::ManifestDeleted {
                repository: repository.clone(),
                digest: d.clone(),
            },
            Reference::Tag(t) => Change::TagDeleted {
                repository: repository.clone(),
                tag: t.clone(),
            },
        };
        self.before(&change).await?;
        let found = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repository, d).await?,
            Reference::Tag(t) => self.meta.delete_tag(repository, t).await?,
        };
        if !found {
            return Err(ContentError::ManifestUnknown(reference.clone()));
        }
        self.after(change);
        Ok(())
    }

    /// Deletes a repository: every manifest, tag and blob link in it, and its name, so
    /// that nothing of it is listed any more. Blobs stay for garbage collection; an upload
    /// in flight that finishes later creates the repository again, as a new push would.
    pub async fn delete_repository(&self, repository: &RepoName) -> Result<()> {
        let change = Change::RepositoryDeleted {
            repository: repository.clone(),
        };
        self.before(&change).await?;
        if !self.meta.delete_repository(repository).await? {
            return Err(ContentError::NameUnknown(repository.clone()));
        }
        self.after(change);
        Ok(())
    }

    /// Up to `n` tags of a repository in lexical order after `last`; an unknown repository
    /// is an error.
    pub async fn tags(
        &self,
        repository: &RepoName,
        last: Option<&str>,
        n: i64,
    ) -> Result<Vec<String>> {
        let tags = self.meta.list_tags(repository, last, n).await?;
        if tags.is_empty() && !self.meta.repository_exists(repository).await? {
            return Err(ContentError::NameUnknown(repository.clone()));
        }
        Ok(tags)
    }

    /// Manifests in `repository` whose subject is `subject`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repository: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        Ok(self
            .meta
            .referrers(repository, subject, artifact_type)
            .await?)
    }

    /// Up to `n` repositories in lexical order after `last` for which `visible` holds,
    /// and whether more follow.
    pub async fn repositories(
        &self,
        last: Option<String>,
        n: i64,
        visible: impl Fn(&str) -> bool,
    ) -> Result<(Vec<String>, bool)> {
        // Read in batches until a page of visible repositories (plus one, to know whether
        // there is a next page) is filled.
        let batch_size = (n + 1).max(100);
        let mut page = Vec::new();
        let mut cursor = last;
        while (page.len() as i64) <= n {
            let batch = self
                .meta
                .list_repositories(cursor.as_deref(), batch_size)
                .await?;
            let done = (batch.len() as i64) < batch_size;
            cursor = batch.last().cloned();
            page.extend(batch.into_iter().filter(|r| visible(r)));
            if done {
                break;
            }
        }
        let more = page.len() as i64 > n;
        page.truncate(n.max(0) as usize);
        Ok((page, more))
    }
}
