//! Garbage collection's domain on SQL. On PostgreSQL a decision to delete locks its rows
//! first (`FOR UPDATE`) and checks again in a later statement, whose snapshot sees every
//! push that committed while it waited; pushes lock the blob rows they reference
//! (`FOR SHARE`, in `put_manifest`) or touch them (an update), so each either finishes
//! before the check or meets the mark after it. SQLite runs one write transaction at a
//! time, which gives the same order.

use async_trait::async_trait;
use sqlx::Row;

use super::{Dialect, SqlMetadataStore, digest_col, placeholders};
use crate::metadata::gc::{BlobTouch, GarbageBlob, GcRun, GcStore, ManifestNode};
use crate::metadata::{MetaError, now_millis};
use crate::oci::{Digest, RepoName};

impl SqlMetadataStore {
    /// ` FOR UPDATE` on PostgreSQL; SQLite locks the whole database per write transaction.
    fn for_update(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }
}

/// A `digest, size` row of `blobs`.
fn garbage_row(r: &sqlx::any::AnyRow) -> Result<GarbageBlob, MetaError> {
    Ok(GarbageBlob {
        digest: digest_col(r, "digest")?,
        size: r.try_get::<i64, _>("size")?.max(0) as u64,
    })
}

fn texts(digests: &[Digest]) -> Vec<String> {
    digests.iter().map(|d| d.to_string()).collect()
}

#[async_trait]
impl GcStore for SqlMetadataStore {
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Result<(), (String, i64)>, MetaError> {
        let now = now_millis();
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now.saturating_add(ttl_ms))
        .bind(now)
        .execute(&self.write)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(Ok(()));
        }
        let row = sqlx::query("SELECT holder, expires_at FROM leases WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.write)
            .await?;
        Ok(match row {
            Some(r) => Err((r.try_get("holder")?, r.try_get("expires_at")?)),
            // Released in between: the caller may try again.
            None => Err((String::new(), now)),
        })
    }

    async fn renew_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, MetaError> {
        let now = now_millis();
        let done = sqlx::query(
            "UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2 AND expires_at >= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now.saturating_add(ttl_ms))
        // Held for half the term after `now` at least: a statement that runs late (a lock
        // wait, a slow link) but answers within half the term then ran while it was held.
        .bind(now.saturating_add(ttl_ms / 2))
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn touch_blob(&self, digest: &Digest, lease: &str) -> Result<BlobTouch, MetaError> {
        let now = now_millis();
        let d = digest.to_string();
        // On PostgreSQL this waits for a collection deciding about the row, then sees its
        // mark.
        let touched =
            sqlx::query("UPDATE blobs SET touched_at = $2 WHERE digest = $1 AND gc_mark IS NULL")
                .bind(&d)
                .bind(now)
                .execute(&self.write)
                .await?;
        if touched.rows_affected() > 0 {
            return Ok(BlobTouch::Ready);
        }
        let row = sqlx::query("SELECT gc_mark FROM blobs WHERE digest = $1")
            .bind(&d)
            .fetch_optional(&self.write)
            .await?;
        let Some(mark) = row
            .map(|r| r.try_get::<Option<String>, _>("gc_mark"))
            .transpose()?
            .flatten()
        else {
            // No row: nothing to collect, nothing to touch. (Or the mark was cleared in
            // between: touched by the next caller, and no run decides within the grace.)
            return Ok(BlobTouch::Ready);
        };
        // A mark of a run that lost its lease (killed) is cleared: that run deletes no more.
        let cleared = sqlx::query(
            "UPDATE blobs SET gc_mark = NULL, touched_at = $3 WHERE digest = $1 AND gc_mark = $2 \
             AND NOT EXISTS (SELECT 1 FROM leases WHERE name = $4 AND holder = $2 AND expires_at >= $3)",
        )
        .bind(&d)
        .bind(&mark)
        .bind(now)
        .bind(lease)
        .execute(&self.write)
        .await?;
        Ok(if cleared.rows_affected() > 0 {
            BlobTouch::Ready
        } else {
            BlobTouch::Collecting { run: mark }
        })
    }

    async fn garbage_blobs(
        &self,
        cutoff: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GarbageBlob>, MetaError> {
        let rows = self
            .read
            .fetch_all(
                sqlx::query(
                    "SELECT b.digest, b.size FROM blobs b \
                     WHERE b.digest > $1 AND b.created_at < $2 AND b.touched_at < $2 \
                     AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = b.digest AND r.is_manifest = 0) \
                     ORDER BY b.digest LIMIT $3",
                )
                .bind(after.unwrap_or(""))
                .bind(cutoff)
                .bind(limit),
            )
            .await?;
        rows.iter().map(garbage_row).collect()
    }

    async fn mark_garbage(
        &self,
        run: &str,
        digests: &[Digest],
        cutoff: i64,
    ) -> Result<Vec<GarbageBlob>, MetaError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let set = texts(digests);
        let mut tx = self.write.begin().await?;
        if self.dialect == Dialect::Postgres {
            // Wait for pushes that hold these rows, then decide on what they committed.
            let sql = format!(
                "SELECT digest FROM blobs WHERE digest IN ({}) ORDER BY digest{}",
                placeholders(1, set.len()),
                self.for_update()
            );
            let mut q = sqlx::query(&sql);
            for d in &set {
                q = q.bind(d.as_str());
            }
            q.fetch_all(&mut *tx).await?;
        }
        let sql = format!(
            "UPDATE blobs SET gc_mark = $1 WHERE digest IN ({}) AND created_at < $2 AND touched_at < $2 \
             AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = blobs.digest AND r.is_manifest = 0)",
            placeholders(3, set.len())
        );
        let mut q = sqlx::query(&sql).bind(run).bind(cutoff);
        for d in &set {
            q = q.bind(d.as_str());
        }
        q.execute(&mut *tx).await?;
        let sql = format!(
            "SELECT digest, size FROM blobs WHERE gc_mark = $1 AND digest IN ({}) ORDER BY digest",
            placeholders(2, set.len())
        );
        let mut q = sqlx::query(&sql).bind(run);
        for d in &set {
            q = q.bind(d.as_str());
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(garbage_row).collect()
    }

    async fn forget_blobs(&self, run: &str, digests: &[Digest]) -> Result<u64, MetaError> {
        if digests.is_empty() {
            return Ok(0);
        }
        let set = texts(digests);
        let mut tx = self.write.begin().await?;
        let links = format!(
            "DELETE FROM repository_blobs WHERE digest IN \
             (SELECT digest FROM blobs WHERE gc_mark = $1 AND digest IN ({}))",
            placeholders(2, set.len())
        );
        let rows = format!(
            "DELETE FROM blobs WHERE gc_mark = $1 AND digest IN ({})",
            placeholders(2, set.len())
        );
        let mut gone = 0;
        for sql in [links, rows] {
            let mut q = sqlx::query(&sql).bind(run);
            for d in &set {
                q = q.bind(d.as_str());
            }
            gone = q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn unmark_blobs(&self, run: &str, digests: &[Digest]) -> Result<(), MetaError> {
        if digests.is_empty() {
            return Ok(());
        }
        let set = texts(digests);
        let sql = format!(
            "UPDATE blobs SET gc_mark = NULL WHERE gc_mark = $1 AND digest IN ({})",
            placeholders(2, set.len())
        );
        let mut q = sqlx::query(&sql).bind(run);
        for d in &set {
            q = q.bind(d.as_str());
        }
        q.execute(&self.write).await?;
        Ok(())
    }

    async fn manifest_nodes(&self, repo: &RepoName) -> Result<Vec<ManifestNode>, MetaError> {
        let rows = self
            .read
            .fetch_all(
                sqlx::query(
                    "SELECT m.digest, m.subject, CAST(CASE WHEN EXISTS (SELECT 1 FROM tags t \
                     WHERE t.repository = m.repository AND t.digest = m.digest) THEN 1 ELSE 0 END AS BIGINT) AS tagged \
                     FROM manifests m WHERE m.repository = $1 ORDER BY m.digest",
                )
                .bind(repo.as_str()),
            )
            .await?;
        let mut nodes = Vec::with_capacity(rows.len());
        for r in &rows {
            let subject: Option<String> = r.try_get("subject")?;
            nodes.push(ManifestNode {
                digest: digest_col(r, "digest")?,
                tagged: r.try_get::<i64, _>("tagged")? != 0,
                subject: subject.and_then(|s| s.parse().ok()),
                children: Vec::new(),
            });
        }
        let edges = self
            .read
            .fetch_all(
                sqlx::query(
                    "SELECT manifest, child FROM manifest_references WHERE repository = $1 AND is_manifest = 1",
                )
                .bind(repo.as_str()),
            )
            .await?;
        let at: std::collections::HashMap<Digest, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.digest.clone(), i))
            .collect();
        for e in &edges {
            let parent = digest_col(e, "manifest")?;
            if let Some(&i) = at.get(&parent) {
                nodes[i].children.push(digest_col(e, "child")?);
            }
        }
        Ok(nodes)
    }

    async fn delete_untagged(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, MetaError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let _changed = self.manifests_changed();
        let set = texts(digests);
        let mut tx = self.write.begin().await?;
        if self.dialect == Dialect::Postgres {
            let sql = format!(
                "SELECT digest FROM manifests WHERE repository = $1 AND digest IN ({}) ORDER BY digest{}",
                placeholders(2, set.len()),
                self.for_update()
            );
            let mut q = sqlx::query(&sql).bind(repo.as_str());
            for d in &set {
                q = q.bind(d.as_str());
            }
            q.fetch_all(&mut *tx).await?;
        }
        let list = placeholders(2, set.len());
        let sql = format!(
            "DELETE FROM manifests WHERE repository = $1 AND digest IN ({list}) \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository = manifests.repository AND t.digest = manifests.digest) \
             AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository = manifests.repository \
                 AND r.child = manifests.digest AND r.is_manifest = 1 AND r.manifest NOT IN ({list})) \
             AND NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repository = manifests.repository \
                 AND s.subject = manifests.digest AND s.digest NOT IN ({list})) \
             RETURNING digest"
        );
        let mut q = sqlx::query(&sql).bind(repo.as_str());
        for d in &set {
            q = q.bind(d.as_str());
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(|r| digest_col(r, "digest")).collect()
    }

    async fn record_gc_run(&self, run: &GcRun) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO gc_runs (id, started_at, finished_at, started_by, dry_run, untagged, status, \
             blobs_deleted, bytes_freed, manifests_deleted, failed, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at, status = excluded.status, \
             blobs_deleted = excluded.blobs_deleted, bytes_freed = excluded.bytes_freed, \
             manifests_deleted = excluded.manifests_deleted, failed = excluded.failed, error = excluded.error",
        )
        .bind(&run.id)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(&run.started_by)
        .bind(run.dry_run as i64)
        .bind(run.untagged as i64)
        .bind(&run.status)
        .bind(run.blobs_deleted as i64)
        .bind(run.bytes_freed as i64)
        .bind(run.manifests_deleted as i64)
        .bind(run.failed as i64)
        .bind(run.error.as_deref())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn gc_runs(&self, limit: i64) -> Result<Vec<GcRun>, MetaError> {
        let rows = self
            .read
            .fetch_all(
                sqlx::query(
                    "SELECT id, started_at, finished_at, started_by, dry_run, untagged, status, \
                     blobs_deleted, bytes_freed, manifests_deleted, failed, error \
                     FROM gc_runs ORDER BY started_at DESC, id DESC LIMIT $1",
                )
                .bind(limit),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(GcRun {
                    id: r.try_get("id")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    started_by: r.try_get("started_by")?,
                    dry_run: r.try_get::<i64, _>("dry_run")? != 0,
                    untagged: r.try_get::<i64, _>("untagged")? != 0,
                    status: r.try_get("status")?,
                    blobs_deleted: r.try_get::<i64, _>("blobs_deleted")?.max(0) as u64,
                    bytes_freed: r.try_get::<i64, _>("bytes_freed")?.max(0) as u64,
                    manifests_deleted: r.try_get::<i64, _>("manifests_deleted")?.max(0) as u64,
                    failed: r.try_get::<i64, _>("failed")?.max(0) as u64,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }
}
