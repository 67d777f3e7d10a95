//! The repositories domain on SQL: repositories, blob links, manifests, tags, referrers.

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlMetadataStore, digest_col, placeholders};
use crate::metadata::identity::Page;
use crate::metadata::{
    ArtifactSummary, ManifestRecord, MetaError, NewManifest, Referrer, RepositoryStore,
    RepositorySummary, cache::ManifestCache, now_millis,
};
use crate::oci::{Digest, Reference, RepoName};

#[async_trait]
impl RepositoryStore for SqlMetadataStore {
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, MetaError> {
        let row = self
            .read
            .fetch_optional(
                sqlx::query("SELECT 1 FROM repositories WHERE name = $1").bind(repo.as_str()),
            )
            .await?;
        Ok(row.is_some())
    }

    async fn list_repositories(
        &self,
        last: Option<&str>,
        n: i64,
    ) -> Result<Vec<String>, MetaError> {
        let row = self
            .read
            .fetch_one(
                sqlx::query(
                    "SELECT string_agg(name, $3) AS names FROM \
             (SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2) AS page",
                )
                .bind(last.unwrap_or(""))
                .bind(n)
                .bind(NAME_SEPARATOR),
            )
            .await?;
        joined_names(&row)
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), MetaError> {
        let now = now_millis();
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Touched, so no collection decides to delete it within its grace period; a blob a
        // collection has marked is not linked (the caller waits for the collection).
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at, touched_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (digest) DO UPDATE SET touched_at = excluded.touched_at WHERE blobs.gc_mark IS NULL",
        )
        .bind(digest.to_string())
        .bind(size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let marked = sqlx::query("SELECT gc_mark FROM blobs WHERE digest = $1")
            .bind(digest.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<Option<String>, _>("gc_mark"))
            .transpose()?
            .flatten();
        if let Some(run) = marked {
            tx.rollback().await?;
            return Err(MetaError::BlobCollecting(run));
        }
        sqlx::query(
            "INSERT INTO repository_blobs (repository, digest, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn linked_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, MetaError> {
        let row = self
            .read
            .fetch_optional(
                sqlx::query(
                    "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repository = $1 AND rb.digest = $2 AND b.gc_mark IS NULL",
                )
                .bind(repo.as_str())
                .bind(digest.to_string()),
            )
            .await?;
        match row {
            Some(r) => Ok(Some(r.try_get::<i64, _>("size")? as u64)),
            None => Ok(None),
        }
    }

    async fn linked_blobs(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<(Digest, u64)>, MetaError> {
        let wanted: BTreeSet<String> = digests.iter().map(|d| d.to_string()).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT b.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repository = $1 AND rb.digest IN ({})",
            placeholders(2, wanted.len())
        );
        let mut q = sqlx::query(&sql).bind(repo.as_str());
        for d in &wanted {
            q = q.bind(d.as_str());
        }
        let rows = self.read.fetch_all(q).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    digest_col(r, "digest")?,
                    r.try_get::<i64, _>("size")? as u64,
                ))
            })
            .collect()
    }

    async fn repositories_with_blob(
        &self,
        digest: &Digest,
        last: Option<&str>,
        n: i64,
    ) -> Result<Vec<String>, MetaError> {
        let rows = self
            .read
            .fetch_all(
                sqlx::query(
                    "SELECT repository FROM repository_blobs WHERE digest = $1 AND repository > $2 \
                     ORDER BY repository LIMIT $3",
                )
                .bind(digest.to_string())
                .bind(last.unwrap_or(""))
                .bind(n),
            )
            .await?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>("repository")
                    .map_err(MetaError::from)
            })
            .collect()
    }

    async fn project_repositories(
        &self,
        project: &str,
        name_contains: Option<&str>,
        page: u64,
        page_size: u64,
    ) -> Result<Page<RepositorySummary>, MetaError> {
        // `<project>/` up to (not including) `<project>0`: '0' follows '/' in byte order,
        // which both dialects use for repository names.
        let (from, to) = (format!("{project}/"), format!("{project}0"));
        // Repository names are lower-case; `\`, `%` and `_` are escaped for LIKE.
        let pattern = match name_contains {
            Some(n) => format!(
                "%{}%",
                n.to_ascii_lowercase()
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            ),
            None => "%".to_string(),
        };
        const WHERE: &str = "r.name > $1 AND r.name < $2 AND r.name LIKE $3 ESCAPE '\\'";
        let total: i64 = self
            .read
            .fetch_one(
                sqlx::query(&format!(
                    "SELECT COUNT(*) AS n FROM repositories r WHERE {WHERE}"
                ))
                .bind(&from)
                .bind(&to)
                .bind(&pattern),
            )
            .await?
            .try_get("n")?;
        let rows = self
            .read
            .fetch_all(
                sqlx::query(&format!(
                    "SELECT r.name, r.created_at, \
                     (SELECT COUNT(*) FROM manifests m WHERE m.repository = r.name) AS artifacts \
                     FROM repositories r WHERE {WHERE} ORDER BY r.name LIMIT $4 OFFSET $5"
                ))
                .bind(&from)
                .bind(&to)
                .bind(&pattern)
                .bind(page_size as i64)
                .bind((page.max(1) - 1).saturating_mul(page_size) as i64),
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(RepositorySummary {
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    artifacts: r.try_get::<i64, _>("artifacts")? as u64,
                })
            })
            .collect::<Result<Vec<_>, MetaError>>()?;
        Ok(Page {
            items,
            total: total as u64,
        })
    }

    async fn artifacts(
        &self,
        repo: &RepoName,
        page: u64,
        page_size: u64,
        tags_each: u64,
    ) -> Result<Page<ArtifactSummary>, MetaError> {
        // A referrer of a manifest that is here belongs to that manifest, not to the list.
        const LISTED: &str = "m.repository = $1 AND (m.subject IS NULL OR NOT EXISTS \
             (SELECT 1 FROM manifests s WHERE s.repository = m.repository AND s.digest = m.subject))";
        let total: i64 = self
            .read
            .fetch_one(
                sqlx::query(&format!(
                    "SELECT COUNT(*) AS n FROM manifests m WHERE {LISTED}"
                ))
                .bind(repo.as_str()),
            )
            .await?
            .try_get("n")?;
        let offset = (page.max(1) - 1).saturating_mul(page_size) as i64;
        let rows = self
            .read
            .fetch_all(
                sqlx::query(&format!(
                    "SELECT m.digest, m.media_type, m.artifact_type, m.created_at, CAST(m.size + \
                     COALESCE((SELECT SUM(b.size) FROM manifest_references r JOIN blobs b ON b.digest = r.child \
                     WHERE r.repository = m.repository AND r.manifest = m.digest AND r.is_manifest = 0), 0) AS BIGINT) AS total_size, \
                     (SELECT COUNT(*) FROM tags t WHERE t.repository = m.repository AND t.digest = m.digest) AS tag_count, \
                     (SELECT COUNT(*) FROM manifests f WHERE f.repository = m.repository AND f.subject = m.digest) AS referrers \
                     FROM manifests m WHERE {LISTED} \
                     ORDER BY m.created_at DESC, m.digest LIMIT $2 OFFSET $3"
                ))
                .bind(repo.as_str())
                .bind(page_size as i64)
                .bind(offset),
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            items.push(ArtifactSummary {
                digest: digest_col(r, "digest")?,
                media_type: r.try_get("media_type")?,
                artifact_type: r.try_get("artifact_type")?,
                size: r.try_get::<i64, _>("total_size")? as u64,
                pushed_at: r.try_get("created_at")?,
                tags: Vec::new(),
                tag_count: r.try_get::<i64, _>("tag_count")? as u64,
                referrers: r.try_get::<i64, _>("referrers")? as u64,
            });
        }
        let tagged: Vec<&ArtifactSummary> = items.iter().filter(|a| a.tag_count > 0).collect();
        if !tagged.is_empty() && tags_each > 0 {
            // The first `tags_each` tags of each: an image with 10,000 tags costs no more
            // than one with 20.
            let sql = format!(
                "SELECT name, digest, updated_at FROM (SELECT name, digest, updated_at, \
                 ROW_NUMBER() OVER (PARTITION BY digest ORDER BY name) AS pos FROM tags \
                 WHERE repository = $1 AND digest IN ({})) AS ranked WHERE pos <= $2 ORDER BY name",
                placeholders(3, tagged.len())
            );
            let mut q = sqlx::query(&sql)
                .bind(repo.as_str())
                .bind(tags_each.min(i64::MAX as u64) as i64);
            for a in &tagged {
                q = q.bind(a.digest.to_string());
            }
            let found = self.read.fetch_all(q).await?;
            for t in found {
                let digest = digest_col(&t, "digest")?;
                if let Some(a) = items.iter_mut().find(|a| a.digest == digest) {
                    a.tags.push((t.try_get("name")?, t.try_get("updated_at")?));
                }
            }
        }
        Ok(Page {
            items,
            total: total as u64,
        })
    }

    async fn manifest_tags(
        &self,
        repo: &RepoName,
        digest: &Digest,
        page: u64,
        page_size: u64,
    ) -> Result<Page<(String, i64)>, MetaError> {
        let total: i64 = self
            .read
            .fetch_one(
                sqlx::query("SELECT COUNT(*) AS n FROM tags WHERE repository = $1 AND digest = $2")
                    .bind(repo.as_str())
                    .bind(digest.to_string()),
            )
            .await?
            .try_get("n")?;
        let offset = (page.max(1) - 1).saturating_mul(page_size) as i64;
        let rows = self
            .read
            .fetch_all(
                sqlx::query(
                    "SELECT name, updated_at FROM tags WHERE repository = $1 AND digest = $2 \
                     ORDER BY name LIMIT $3 OFFSET $4",
                )
                .bind(repo.as_str())
                .bind(digest.to_string())
                .bind(page_size as i64)
                .bind(offset),
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            items.push((r.try_get("name")?, r.try_get("updated_at")?));
        }
        Ok(Page {
            items,
            total: total as u64,
        })
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        let done =
            sqlx::query("DELETE FROM repository_blobs WHERE repository = $1 AND digest = $2")
                .bind(repo.as_str())
                .bind(digest.to_string())
                .execute(&self.write)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_manifest(&self, m: &NewManifest) -> Result<(), MetaError> {
        let _changed = self.manifests_changed();
        let now = now_millis();
        let repo = m.repository.as_str();
        let blobs: BTreeSet<String> = m.blobs.iter().map(|d| d.to_string()).collect();
        let children: BTreeSet<String> = m.manifests.iter().map(|d| d.to_string()).collect();
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(repo)
        .bind(now)
        .execute(&mut *tx)
        .await?;

        let mut missing = Vec::new();
        // A blob a collection has marked counts as missing (the client pushes it again,
        // and waits for the collection); on PostgreSQL the rows are locked against a
        // collection deciding about them until this manifest's references are committed.
        let lock_blobs = match self.dialect {
            super::Dialect::Postgres => " FOR SHARE OF b",
            super::Dialect::Sqlite => "",
        };
        for (set, is_blobs) in [(&blobs, true), (&children, false)] {
            if set.is_empty() {
                continue;
            }
            let sql = if is_blobs {
                format!(
                    "SELECT l.digest FROM repository_blobs l JOIN blobs b ON b.digest = l.digest \
                     WHERE l.repository = $1 AND l.digest IN ({}) AND b.gc_mark IS NULL{lock_blobs}",
                    placeholders(2, set.len())
                )
            } else {
                format!(
                    "SELECT digest FROM manifests WHERE repository = $1 AND digest IN ({})",
                    placeholders(2, set.len())
                )
            };
            let mut q = sqlx::query(&sql).bind(repo);
            for d in set {
                q = q.bind(d.as_str());
            }
            let found: BTreeSet<String> = q
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("digest"))
                .collect::<Result<_, _>>()?;
            for d in set.difference(&found) {
                missing.push(
                    d.parse()
                        .map_err(|e| MetaError::Corrupt(format!("{d}: {e}")))?,
                );
            }
        }
        if !missing.is_empty() {
            tx.rollback().await?;
            return Err(MetaError::MissingReferences(missing));
        }

        sqlx::query(
            "INSERT INTO manifests (repository, digest, media_type, size, content, artifact_type, subject, annotations, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(repo)
        .bind(m.digest.to_string())
        .bind(&m.media_type)
        .bind(m.content.len() as i64)
        .bind(m.content.as_slice())
        .bind(m.artifact_type.as_deref())
        .bind(m.subject.as_ref().map(|d| d.to_string()))
        .bind(m.annotations.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (set, is_manifest) in [(&blobs, 0i64), (&children, 1i64)] {
            for child in set {
                sqlx::query(
                    "INSERT INTO manifest_references (repository, manifest, child, is_manifest) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(repo)
                .bind(m.digest.to_string())
                .bind(child.as_str())
                .bind(is_manifest)
                .execute(&mut *tx)
                .await?;
            }
        }
        for tag in &m.tags {
            sqlx::query(
                "INSERT INTO tags (repository, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo)
            .bind(tag.as_str())
            .bind(m.digest.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>, MetaError> {
        let cache = self.manifest_cache.as_ref();
        if let Some(hit) = cache.and_then(|c| c.get(repo, reference)) {
            return Ok(Some(hit));
        }
        // Read before the query: see ManifestCache::insert.
        let generation = cache.map(ManifestCache::generation);
        let row = match reference {
            Reference::Digest(d) => {
                self.read.fetch_optional(sqlx::query("SELECT digest, media_type, content FROM manifests WHERE repository = $1 AND digest = $2")
                    .bind(repo.as_str())
                    .bind(d.to_string()))
                    .await?
            }
            Reference::Tag(t) => {
                self.read.fetch_optional(sqlx::query(
                    "SELECT m.digest, m.media_type, m.content FROM tags t \
                     JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest \
                     WHERE t.repository = $1 AND t.name = $2",
                )
                .bind(repo.as_str())
                .bind(t.as_str()))
                .await?
            }
        };
        let Some(row) = row else { return Ok(None) };
        let record = ManifestRecord {
            digest: digest_col(&row, "digest")?,
            media_type: row.try_get("media_type")?,
            content: bytes::Bytes::from(row.try_get::<Vec<u8>, _>("content")?),
        };
        if let (Some(cache), Some(generation)) = (cache, generation) {
            cache.insert(generation, repo, reference, &record);
        }
        Ok(Some(record))
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        let _changed = self.manifests_changed();
        let mut tx = self.write.begin().await?;
        // Explicit deletes of the dependents, rather than relying on ON DELETE CASCADE
        // being enabled on every connection.
        for sql in [
            "DELETE FROM tags WHERE repository = $1 AND digest = $2",
            "DELETE FROM manifest_references WHERE repository = $1 AND manifest = $2",
        ] {
            sqlx::query(sql)
                .bind(repo.as_str())
                .bind(digest.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM manifests WHERE repository = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_repository(&self, repo: &RepoName) -> Result<bool, MetaError> {
        let _changed = self.manifests_changed();
        let mut tx = self.write.begin().await?;
        // Dependents first, as in `delete_manifest`.
        for table in [
            "tags",
            "manifest_references",
            "manifests",
            "repository_blobs",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE repository = $1"))
                .bind(repo.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &str) -> Result<bool, MetaError> {
        let _changed = self.manifests_changed();
        let done = sqlx::query("DELETE FROM tags WHERE repository = $1 AND name = $2")
            .bind(repo.as_str())
            .bind(tag)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: i64,
    ) -> Result<Vec<String>, MetaError> {
        let row = self.read.fetch_one(sqlx::query(
            "SELECT string_agg(name, $4) AS names FROM \
             (SELECT name FROM tags WHERE repository = $1 AND name > $2 ORDER BY name LIMIT $3) AS page",
        )
        .bind(repo.as_str())
        .bind(last.unwrap_or(""))
        .bind(n)
        .bind(NAME_SEPARATOR))
        .await?;
        joined_names(&row)
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, MetaError> {
        let rows = self
            .read
            .fetch_all(
                sqlx::query(
                    "SELECT digest, media_type, size, artifact_type, annotations FROM manifests \
             WHERE repository = $1 AND subject = $2 ORDER BY digest",
                )
                .bind(repo.as_str())
                .bind(subject.to_string()),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let at: Option<String> = r.try_get("artifact_type")?;
            if artifact_type.is_some_and(|want| at.as_deref() != Some(want)) {
                continue;
            }
            out.push(Referrer {
                digest: digest_col(r, "digest")?,
                media_type: r.try_get("media_type")?,
                size: r.try_get("size")?,
                artifact_type: at,
                annotations: r.try_get("annotations")?,
            });
        }
        Ok(out)
    }
}

/// A listing page comes back as one row, its names joined by `string_agg` (SQLite 3.44+,
/// PostgreSQL) and split and sorted here: a row per name cost most of a page's time
/// (docs/performance.md, "Listing pages as one row"). The subquery's `ORDER BY ... LIMIT`
/// picks the page; byte order here is the columns' order (`COLLATE "C"`, SQLite's binary).
/// Repository names and tags cannot hold a newline.
const NAME_SEPARATOR: &str = "\n";

fn joined_names(row: &AnyRow) -> Result<Vec<String>, MetaError> {
    let names: Option<String> = row.try_get("names")?;
    let mut names: Vec<String> = names
        .as_deref()
        .map(|s| s.split(NAME_SEPARATOR).map(str::to_owned).collect())
        .unwrap_or_default();
    names.sort_unstable();
    Ok(names)
}
