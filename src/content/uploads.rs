//! Upload sessions: start, append, finish, cancel; mounts; the purge of abandoned ones.
//!
//! A session's durable length and hasher state live in the metadata store, so any process
//! can take the next request of an upload another started. A writing request first claims
//! the session (a compare-and-set on its length, with a lease it renews while it writes),
//! so that two requests for one session — a client's retry while its first attempt still
//! streams, perhaps on another replica — cannot interleave their bytes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{Change, Content, ContentError, Result};
use crate::metadata::gc::{BlobTouch, GC_LEASE};
use crate::metadata::{MetaError, MetadataStore, UploadSession, now_millis};
use crate::oci::{Algorithm, Digest, Hasher, RepoName};
use crate::storage::{ByteStream, StorageError, Verify};

/// How long a push waits for a garbage collection that is deleting the blob it publishes
/// (a collection forgets a batch within moments of deciding about it).
const COLLECTION_WAIT: Duration = Duration::from_secs(30);

/// How long a writing request holds an upload session without renewing its claim, and how
/// often it renews while it writes. A writer that dies stops renewing, and the session is
/// free again once the lease runs out.
const UPLOAD_LEASE_MS: i64 = 60_000;
const UPLOAD_RENEW_EVERY: Duration = Duration::from_secs(15);
/// How long a request waits for another writer of the same session before it is refused.
const CLAIM_WAIT: Duration = Duration::from_secs(3);
/// Repositories looked at per round when a mount names no source.
const MOUNT_BATCH: i64 = 100;
/// Stale sessions read per round of a purge.
const PURGE_BATCH: i64 = 500;

/// Bytes for an upload, and what the request said about them.
pub struct Chunk {
    pub data: ByteStream,
    /// Where the client says the chunk starts (`Content-Range`); checked against the
    /// session's length.
    pub start: Option<u64>,
    /// How many bytes the client promised; a body of another length is refused.
    pub len: Option<u64>,
}

/// What one purge of abandoned uploads removed.
#[derive(Debug, Default)]
pub struct Purged {
    pub sessions: u64,
    pub orphans: u64,
}

impl ContentError {
    fn out_of_order(session: &UploadSession, message: String) -> ContentError {
        ContentError::OutOfOrder {
            repository: session.repository.clone(),
            id: session.id.clone(),
            committed: session.committed,
            message,
        }
    }
}

impl Content {
    /// Opens an upload session in `repository`.
    pub async fn start_upload(&self, repository: &RepoName) -> Result<UploadSession> {
        let id = uuid::Uuid::new_v4().to_string();
        let store_state = self.blobs.upload_start(&id).await?;
        let session = UploadSession {
            id,
            repository: repository.clone(),
            committed: 0,
            hash_state: Hasher::new(Algorithm::Sha256).save(),
            store_state,
            started_at: now_millis(),
        };
        if let Err(e) = self.meta.create_upload(&session).await {
            // No session was recorded: its (empty) data goes too.
            let _ = self
                .blobs
                .upload_abort(&session.id, &session.store_state)
                .await;
            return Err(e.into());
        }
        Ok(session)
    }

    /// A session in progress in `repository`.
    pub async fn upload(&self, repository: &RepoName, id: &str) -> Result<UploadSession> {
        self.meta
            .get_upload(repository, id)
            .await?
            .ok_or_else(|| ContentError::UploadUnknown(id.to_string()))
    }

    /// Checks that `chunk` starts where the session ends; the session's length is the
    /// answer when the chunk is empty.
    pub fn check_chunk(&self, session: &UploadSession, chunk: &Chunk) -> Result<()> {
        if let Some(start) = chunk.start {
            if start != session.committed {
                return Err(ContentError::out_of_order(
                    session,
                    format!(
                        "chunk starts at byte {start} but the upload holds {} bytes; send the chunk that starts there",
                        session.committed
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Appends a chunk to a session; returns the session's new length. Durable when it
    /// returns; on error the session keeps its old length.
    pub async fn append(&self, session: &UploadSession, chunk: Chunk) -> Result<u64> {
        self.check_chunk(session, &chunk)?;
        if chunk.len == Some(0) {
            return Ok(session.committed);
        }
        let mut claim = Claim::take(self, session).await?;
        let (to, hasher, store_state) = self.write_chunk(session, &claim, chunk).await?;
        claim
            .advance(session.committed, to, &hasher, &store_state)
            .await?;
        Ok(to)
    }

    /// Appends the last chunk (if any), verifies the digest and commits the blob into the
    /// session's repository; the session is gone afterwards. Returns the blob's size.
    pub async fn finish_upload(
        &self,
        session: UploadSession,
        digest: &Digest,
        last: Option<Chunk>,
    ) -> Result<u64> {
        let last = last.filter(|c| c.len != Some(0));
        if let Some(chunk) = &last {
            self.check_chunk(&session, chunk)?;
        }
        // Held until the session is gone, so no append can write while the blob commits.
        let mut claim = Claim::take(self, &session).await?;
        let (size, hasher, store_state) = match last {
            None => (
                session.committed,
                restore_hasher(&session)?,
                session.store_state.clone(),
            ),
            Some(chunk) => self.write_chunk(&session, &claim, chunk).await?,
        };
        let change = Change::BlobPushed {
            repository: session.repository.clone(),
            digest: digest.clone(),
            size,
        };
        self.before(&change).await?;
        // No collection may be deleting these bytes while they are published.
        self.touch_blob(digest).await?;
        // Bytes first, then the link that makes them visible, then forget the session: a
        // crash in between leaves at worst an unreferenced blob for garbage collection. The
        // stream was hashed with sha256; a digest in another algorithm is checked by the
        // store while it commits, with one more pass over the bytes.
        let commit = if hasher.algorithm() != digest.algorithm() {
            self.blobs
                .upload_commit(&session.id, &store_state, size, digest, Verify::Rehash)
                .await
        } else {
            let actual = hasher.finish();
            if &actual == digest {
                self.blobs
                    .upload_commit(&session.id, &store_state, size, digest, Verify::Done)
                    .await
            } else {
                Err(StorageError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                })
            }
        };
        match commit {
            Ok(()) => {}
            Err(StorageError::DigestMismatch { actual, .. }) => {
                claim.forget();
                // A wrong digest leaves nothing behind.
                self.discard(&session.id, &store_state).await?;
                return Err(ContentError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                    size,
                });
            }
            Err(StorageError::UploadNotFound(_)) => {
                return Err(ContentError::UploadUnknown(session.id.clone()));
            }
            Err(e) => return Err(e.into()),
        }
        self.meta
            .link_blob(&session.repository, digest, size)
            .await?;
        self.meta.delete_upload(&session.id).await?;
        claim.forget();
        self.after(change);
        Ok(size)
    }

    /// Uploads a whole blob in one step (a monolithic `POST ?digest=`). The client never
    /// learns of the session, so a refused upload leaves none behind.
    pub async fn upload_whole(
        &self,
        repository: &RepoName,
        digest: &Digest,
        data: Chunk,
    ) -> Result<u64> {
        let session = self.start_upload(repository).await?;
        let (id, store_state) = (session.id.clone(), session.store_state.clone());
        match self.finish_upload(session, digest, Some(data)).await {
            Ok(size) => Ok(size),
            Err(e) => {
                // The data goes even if the session row cannot (a full database): no
                // client knows the session, and its bytes may be what filled the disk.
                // The refusal the client gets is the upload's, not the cleanup's.
                if let Err(d) = self.meta.delete_upload(&id).await {
                    tracing::warn!(upload = %id, error = %d, "cannot forget a refused upload; the purge will");
                }
                if let Err(d) = self.blobs.upload_abort(&id, &store_state).await {
                    tracing::warn!(upload = %id, error = %d, "cannot remove a refused upload's data; the purge will");
                }
                Err(e)
            }
        }
    }

    /// Says a push is about to publish `digest`'s bytes: waits while a collection is
    /// deleting them (it forgets them within moments), so the push never writes bytes a
    /// collection then removes. A collection that takes longer than [`COLLECTION_WAIT`]
    /// gets the client a 503 to retry.
    async fn touch_blob(&self, digest: &Digest) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            match self.meta.touch_blob(digest, GC_LEASE).await? {
                BlobTouch::Ready => return Ok(()),
                BlobTouch::Collecting { run } => {
                    if started.elapsed() >= COLLECTION_WAIT {
                        return Err(MetaError::BlobCollecting(run).into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Cancels a session and drops its data.
    pub async fn cancel_upload(&self, session: &UploadSession) -> Result<()> {
        self.discard(&session.id, &session.store_state).await
    }

    /// Links a blob `from` has into `repository` without an upload. `false` when `from`
    /// does not have it (the caller opens an ordinary upload instead).
    pub async fn mount(
        &self,
        repository: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<bool> {
        let Some(size) = self.meta.linked_blob(from, digest).await? else {
            return Ok(false);
        };
        // A blob a collection is deleting is not mounted: the client uploads it instead.
        if self.meta.touch_blob(digest, GC_LEASE).await? != BlobTouch::Ready {
            return Ok(false);
        }
        if self.blobs.stat(digest).await?.is_none() {
            return Ok(false);
        }
        let change = Change::BlobMounted {
            repository: repository.clone(),
            digest: digest.clone(),
            from: from.clone(),
        };
        self.before(&change).await?;
        match self.meta.link_blob(repository, digest, size).await {
            Ok(()) => {}
            Err(MetaError::BlobCollecting(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.after(change);
        Ok(true)
    }

    /// Links a blob into `repository` from any repository that has it and that `readable`
    /// allows (the caller may pull there), without an upload; the repository it came from,
    /// or `None` when no such repository has it. Repositories the caller may not read are
    /// never used, so a mount reveals nothing about them.
    pub async fn mount_from_any(
        &self,
        repository: &RepoName,
        digest: &Digest,
        readable: impl Fn(&str) -> bool,
    ) -> Result<Option<RepoName>> {
        let mut last: Option<String> = None;
        loop {
            let batch = self
                .meta
                .repositories_with_blob(digest, last.as_deref(), MOUNT_BATCH)
                .await?;
            for name in &batch {
                if !readable(name) {
                    continue;
                }
                let Ok(from) = RepoName::parse(name) else {
                    continue;
                };
                if self.mount(repository, digest, &from).await? {
                    return Ok(Some(from));
                }
            }
            if (batch.len() as i64) < MOUNT_BATCH {
                return Ok(None);
            }
            last = batch.last().cloned();
        }
    }

    /// Forgets a session, then drops its data (in that order, as the purge does: no request
    /// can continue a session whose data is going; a crash in between leaves data that the
    /// orphan sweep of the purge removes).
    async fn discard(&self, id: &str, store_state: &[u8]) -> Result<()> {
        self.meta.delete_upload(id).await?;
        self.blobs.upload_abort(id, store_state).await?;
        Ok(())
    }

    /// Writes a chunk after the session's durable bytes while `claim` holds the session;
    /// returns the new length, the hasher after it and the store's new state (the caller
    /// records them).
    async fn write_chunk(
        &self,
        session: &UploadSession,
        claim: &Claim,
        chunk: Chunk,
    ) -> Result<(u64, Hasher, Vec<u8>)> {
        let mut hasher = restore_hasher(session)?;
        let mut store_state = session.store_state.clone();
        let write = self.blobs.upload_append(
            &session.id,
            &mut store_state,
            session.committed,
            chunk.data,
            &mut hasher,
        );
        let written = tokio::select! {
            biased;
            r = write => r,
            lost = claim.keep() => return Err(lost),
        };
        let written = match written {
            Ok(n) => n,
            Err(StorageError::UploadNotFound(_)) => {
                return Err(ContentError::UploadUnknown(session.id.clone()));
            }
            Err(StorageError::Body(e)) => return Err(ContentError::BodyEnded(e)),
            Err(e) => return Err(e.into()),
        };
        if let Some(expected) = chunk.len {
            if written != expected {
                // Not acknowledged: the session keeps its old length and the extra bytes
                // are dropped by the next append.
                return Err(ContentError::SizeMismatch {
                    expected,
                    sent: written,
                });
            }
        }
        Ok((session.committed + written, hasher, store_state))
    }

    /// Discards upload sessions nobody has written to for `max_age` (their data too), then
    /// upload data in the blob store that no session owns (left by a crash between steps).
    pub async fn purge_uploads(&self, max_age: Duration) -> Result<Purged> {
        let before = now_millis() - max_age.as_millis() as i64;
        let mut purged = Purged::default();
        loop {
            let stale = self.meta.stale_uploads(before, PURGE_BATCH).await?;
            for s in &stale {
                // The session first, so no request can continue it while its data goes.
                if self.meta.delete_upload(&s.id).await? {
                    self.blobs.upload_abort(&s.id, &s.store_state).await?;
                    purged.sessions += 1;
                }
            }
            if (stale.len() as i64) < PURGE_BATCH {
                break;
            }
        }
        let live: HashSet<String> = self.meta.upload_ids().await?.into_iter().collect();
        purged.orphans = self.blobs.purge_orphan_uploads(before, &live).await?;
        Ok(purged)
    }
}

fn restore_hasher(session: &UploadSession) -> Result<Hasher> {
    Hasher::restore(&session.hash_state).ok_or_else(|| {
        ContentError::Corrupt(format!(
            "upload {} has an unreadable hash state",
            session.id
        ))
    })
}

/// One request's exclusive hold on an upload session, in whichever process it runs.
/// Released when dropped (a failed write, a client that hung up) unless the session was
/// advanced or finished.
struct Claim {
    meta: Arc<dyn MetadataStore>,
    id: String,
    writer: String,
    held: bool,
}

impl Claim {
    async fn take(content: &Content, session: &UploadSession) -> Result<Claim> {
        let writer = uuid::Uuid::new_v4().to_string();
        let started = tokio::time::Instant::now();
        loop {
            let now = now_millis();
            match content
                .meta
                .claim_upload(
                    &session.id,
                    session.committed,
                    &writer,
                    now,
                    now + UPLOAD_LEASE_MS,
                )
                .await
            {
                Ok(()) => {
                    return Ok(Claim {
                        meta: content.meta.clone(),
                        id: session.id.clone(),
                        writer,
                        held: true,
                    });
                }
                Err(MetaError::UploadConflict) => {}
                Err(e) => return Err(e.into()),
            }
            // Gone, moved on, or busy? A request that is still writing from the same offset
            // (often the first attempt of this very retry, whose connection dropped and
            // whose server has not noticed yet) gets a moment to finish or give up.
            let current = content.upload(&session.repository, &session.id).await?;
            if current.committed != session.committed {
                return Err(ContentError::out_of_order(
                    &current,
                    format!(
                        "the upload moved on to {} bytes while this request waited; resume from there",
                        current.committed
                    ),
                ));
            }
            if started.elapsed() >= CLAIM_WAIT {
                return Err(ContentError::out_of_order(
                    &current,
                    "another request is writing to this upload; check the upload status and resume from the offset it reports".to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Renews the lease until it fails; returns why (runs beside the write it guards).
    async fn keep(&self) -> ContentError {
        loop {
            tokio::time::sleep(UPLOAD_RENEW_EVERY).await;
            match self
                .meta
                .renew_upload_claim(&self.id, &self.writer, now_millis() + UPLOAD_LEASE_MS)
                .await
            {
                Ok(true) => continue,
                Ok(false) => return ContentError::UploadLost,
                Err(e) => return e.into(),
            }
        }
    }

    /// Records `to` durable bytes and the hasher after them, and lets the session go.
    async fn advance(
        &mut self,
        from: u64,
        to: u64,
        hasher: &Hasher,
        store_state: &[u8],
    ) -> Result<()> {
        let done = self
            .meta
            .advance_upload(
                &self.id,
                &self.writer,
                from,
                to,
                &hasher.save(),
                store_state,
            )
            .await;
        self.held = false;
        match done {
            Ok(()) => Ok(()),
            Err(MetaError::UploadConflict) => Err(ContentError::UploadLost),
            Err(e) => Err(e.into()),
        }
    }

    /// The session is gone (finished or discarded): nothing to release.
    fn forget(&mut self) {
        self.held = false;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let (meta, id, writer) = (self.meta.clone(), self.id.clone(), self.writer.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = meta.release_upload_claim(&id, &writer).await {
                    tracing::warn!(upload = %id, error = %e, "could not release an upload claim; it expires with its lease");
                }
            });
        }
    }
}
