//! An in-process cache of manifest lookups for a metadata store that only this process
//! writes (the embedded SQLite database; `serve` holds an exclusive lock on its file).
//! A manifest GET or HEAD that hits it skips the database round trip (docs/performance.md,
//! "The manifest cache").
//!
//! Coherence: every write that can change what a lookup returns (a manifest put, which may
//! move a tag; a manifest or tag delete) calls [`ManifestCache::invalidate`] once it has
//! committed, which empties the cache and starts a new generation. A lookup notes the
//! generation before it queries the database and stores its result only if no write
//! finished meanwhile, so a result read before a commit is never kept after it.

use std::collections::HashMap;
use std::sync::RwLock;

use super::ManifestRecord;
use crate::oci::{Reference, RepoName};

/// Manifests bigger than this are not kept (image indexes of hundreds of platforms are
/// rare and cheap enough to read from the database).
const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Bytes of keys and content the cache holds at most; when an entry would not fit, the
/// cache starts over empty.
const MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Default)]
pub struct ManifestCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    bytes: usize,
    /// `repository@reference`: neither names nor references contain `@`.
    entries: HashMap<String, ManifestRecord>,
}

fn key(repo: &RepoName, reference: &Reference) -> String {
    format!("{}@{reference}", repo.as_str())
}

impl ManifestCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, repo: &RepoName, reference: &Reference) -> Option<ManifestRecord> {
        self.read().entries.get(&key(repo, reference)).cloned()
    }

    /// The generation to pass to [`ManifestCache::insert`]: read it before querying.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Keeps what a lookup read, unless a write finished since `generation` was read.
    pub fn insert(
        &self,
        generation: u64,
        repo: &RepoName,
        reference: &Reference,
        record: &ManifestRecord,
    ) {
        if record.content.len() > MAX_ENTRY_BYTES {
            return;
        }
        let key = key(repo, reference);
        let size = key.len() + record.content.len() + record.media_type.len();
        let mut inner = self.write();
        if inner.generation != generation {
            return;
        }
        if inner.bytes + size > MAX_BYTES {
            inner.entries.clear();
            inner.bytes = 0;
        }
        if inner.entries.insert(key, record.clone()).is_none() {
            inner.bytes += size;
        }
    }

    /// Forgets everything: call after a write that may change a lookup's answer commits.
    pub fn invalidate(&self) {
        let mut inner = self.write();
        inner.generation += 1;
        inner.entries.clear();
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn record(content: &[u8]) -> ManifestRecord {
        ManifestRecord {
            digest: Digest::compute(crate::oci::Algorithm::Sha256, content),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content: bytes::Bytes::copy_from_slice(content),
        }
    }

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).expect("valid name")
    }

    fn tag(s: &str) -> Reference {
        Reference::parse(s).expect("valid reference")
    }

    #[test]
    fn keeps_lookups_until_a_write_invalidates() {
        let c = ManifestCache::default();
        let (r, t, m) = (repo("a/b"), tag("v1"), record(b"{}"));
        assert!(c.get(&r, &t).is_none());
        let g = c.generation();
        c.insert(g, &r, &t, &m);
        assert_eq!(c.get(&r, &t).expect("cached").digest, m.digest);
        // Same tag in another repository, and the digest as a reference, are other keys.
        assert!(c.get(&repo("a/c"), &t).is_none());
        assert!(c.get(&r, &Reference::Digest(m.digest.clone())).is_none());
        c.invalidate();
        assert!(c.get(&r, &t).is_none());
    }

    #[test]
    fn a_lookup_that_raced_a_write_is_not_kept() {
        let c = ManifestCache::default();
        let (r, t) = (repo("a"), tag("latest"));
        let before = c.generation();
        // A write commits and invalidates while the lookup's query is in flight.
        c.invalidate();
        c.insert(before, &r, &t, &record(b"old"));
        assert!(c.get(&r, &t).is_none(), "the stale answer was kept");
        c.insert(c.generation(), &r, &t, &record(b"new"));
        assert_eq!(c.get(&r, &t).expect("cached").content, &b"new"[..]);
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let c = ManifestCache::default();
        let big = vec![b'x'; MAX_ENTRY_BYTES + 1];
        c.insert(c.generation(), &repo("a"), &tag("big"), &record(&big));
        assert!(
            c.get(&repo("a"), &tag("big")).is_none(),
            "oversize entry kept"
        );
        let entry = vec![b'y'; MAX_ENTRY_BYTES];
        for i in 0..(MAX_BYTES / MAX_ENTRY_BYTES + 10) {
            c.insert(
                c.generation(),
                &repo("a"),
                &tag(&format!("t{i}")),
                &record(&entry),
            );
            assert!(c.read().bytes <= MAX_BYTES);
        }
        assert!(c.read().entries.len() < MAX_BYTES / MAX_ENTRY_BYTES + 10);
    }
}
