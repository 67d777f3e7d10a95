//! The metadata store on SQL, through sqlx's `Any` driver: one set of queries serves
//! SQLite (embedded default) and PostgreSQL (shared by stateless replicas). The two
//! dialects differ only in their migrations (`migrations/sqlite`, `migrations/postgres`).

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use super::cache::ManifestCache;
use super::readers::Readers;
use super::{
    ManifestRecord, MetaError, MetadataStore, NewManifest, Referrer, UploadSession, now_millis,
};
use crate::oci::{Digest, Reference, RepoName};

/// Run on every SQLite connection.
const SQLITE_SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn of_url(url: &str) -> Option<Dialect> {
        if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }
}

pub struct SqlMetadataStore {
    /// Connections for reads (see [`Readers`]: no round trip when a connection goes back).
    read: Readers,
    /// Pool for writes: on SQLite a single connection, so that this process's writers
    /// queue instead of failing with SQLITE_BUSY.
    write: AnyPool,
    dialect: Dialect,
    /// The SQLite database file (`None` on PostgreSQL and for in-memory databases).
    sqlite_file: Option<std::path::PathBuf>,
    /// Set once this process holds the SQLite file exclusively ([`Self::own_exclusively`]).
    manifest_cache: Option<ManifestCache>,
    /// The open file whose `flock` marks the SQLite database as owned by this process.
    _owner_lock: Option<std::fs::File>,
}

impl SqlMetadataStore {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<SqlMetadataStore, MetaError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of_url(url).ok_or_else(|| {
            MetaError::Database(sqlx::Error::Configuration(
                format!("database URL {url:?} must start with sqlite:// or postgres://").into(),
            ))
        })?;
        match dialect {
            Dialect::Sqlite => {
                let url = sqlite_url(url)?;
                // No liveness ping before every query: it doubled the round trips of a
                // manifest GET (docs/performance.md). A dead connection fails one query
                // and is replaced.
                // Create the file and switch it to WAL before the readers open it.
                let write = AnyPoolOptions::new()
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(SQLITE_SETUP).await?;
                            Ok(())
                        })
                    })
                    .max_connections(1)
                    .connect(&url)
                    .await?;
                let read = Readers::new(&url, max_connections, Some(SQLITE_SETUP))?;
                Ok(SqlMetadataStore {
                    read,
                    write,
                    dialect,
                    sqlite_file: sqlite_file(&url),
                    manifest_cache: None,
                    _owner_lock: None,
                })
            }
            Dialect::Postgres => {
                let pool = AnyPoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(max_connections.max(1))
                    .connect(url)
                    .await?;
                Ok(SqlMetadataStore {
                    read: Readers::new(url, max_connections, None)?,
                    write: pool,
                    dialect,
                    sqlite_file: None,
                    manifest_cache: None,
                    _owner_lock: None,
                })
            }
        }
    }

    /// Applies the dialect's pending migrations.
    pub async fn migrate(&self) -> Result<(), MetaError> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.write).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.write).await?,
        }
        Ok(())
    }

    /// For `serve` on SQLite: takes an exclusive lock on the database file for as long as
    /// this store lives and, since no other process can then change it, caches manifest
    /// lookups in memory ([`ManifestCache`]). A second server on the same file is refused
    /// with a clear error instead of serving answers the first one's cache no longer
    /// matches. Maintenance commands (`gc`, `migrate`) do not take the lock. On PostgreSQL,
    /// whose replicas share the database, this does nothing.
    pub fn own_exclusively(&mut self) -> Result<(), MetaError> {
        let Some(path) = &self.sqlite_file else {
            return Ok(());
        };
        let file =
            std::fs::File::open(path).map_err(|e| MetaError::Database(sqlx::Error::Io(e)))?;
        // SAFETY: flock on a descriptor we own; released when the file closes.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let e = std::io::Error::last_os_error();
            return Err(MetaError::Database(sqlx::Error::Configuration(
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    format!(
                        "the SQLite database {} is in use by another `berth serve`: the \
                         embedded database serves one process; use PostgreSQL \
                         (database.url) to run several",
                        path.display()
                    )
                } else {
                    format!("locking the SQLite database {}: {e}", path.display())
                }
                .into(),
            )));
        }
        self._owner_lock = Some(file);
        self.manifest_cache = Some(ManifestCache::default());
        Ok(())
    }

    /// Held by a write that may change a manifest lookup's answer: empties the cache when
    /// the write returns (after its commit), whatever the outcome.
    fn manifests_changed(&self) -> ManifestsChanged<'_> {
        ManifestsChanged(self.manifest_cache.as_ref())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// See [`SqlMetadataStore::manifests_changed`].
struct ManifestsChanged<'a>(Option<&'a ManifestCache>);

impl Drop for ManifestsChanged<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.0 {
            cache.invalidate();
        }
    }
}

/// The path part of a `sqlite:` URL (`:memory:` or empty for an in-memory database).
fn sqlite_path(url: &str) -> &str {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    rest.split('?').next().unwrap_or("")
}

/// The file of a `sqlite:` URL, `None` for an in-memory database.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let path = sqlite_path(url);
    (!path.is_empty() && path != ":memory:" && !url.contains("mode=memory"))
        .then(|| std::path::PathBuf::from(path))
}

/// Makes sure a SQLite URL creates its file, and that the file's directory exists.
fn sqlite_url(url: &str) -> Result<String, MetaError> {
    let path = sqlite_path(url);
    if !path.is_empty() && path != ":memory:" {
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| MetaError::Database(sqlx::Error::Io(e)))?;
            }
        }
    }
    Ok(if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

fn digest_col(row: &AnyRow, col: &str) -> Result<Digest, MetaError> {
    let s: String = row.try_get(col)?;
    s.parse()
        .map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

/// `$from, $from+1, ...` for `count` values.
fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl MetadataStore for SqlMetadataStore {
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
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(digest.to_string())
            .bind(size as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
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
             WHERE rb.repository = $1 AND rb.digest = $2",
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
        for (set, table) in [(&blobs, "repository_blobs"), (&children, "manifests")] {
            if set.is_empty() {
                continue;
            }
            let sql = format!(
                "SELECT digest FROM {table} WHERE repository = $1 AND digest IN ({})",
                placeholders(2, set.len())
            );
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

    async fn create_upload(&self, s: &UploadSession) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO uploads (id, repository, committed, hash_state, store_state, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id)
        .bind(s.repository.as_str())
        .bind(s.committed as i64)
        .bind(s.hash_state.as_slice())
        .bind(s.store_state.as_slice())
        .bind(s.started_at)
        .bind(s.started_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn get_upload(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<Option<UploadSession>, MetaError> {
        let row = self.read.fetch_optional(sqlx::query(
            "SELECT id, repository, committed, hash_state, store_state, started_at FROM uploads WHERE id = $1 AND repository = $2",
        )
        .bind(id)
        .bind(repo.as_str()))
        .await?;
        row.map(|r| upload_row(&r)).transpose()
    }

    async fn stale_uploads(&self, before: i64, n: i64) -> Result<Vec<UploadSession>, MetaError> {
        let rows = self.read.fetch_all(sqlx::query(
            "SELECT id, repository, committed, hash_state, store_state, started_at FROM uploads \
             WHERE updated_at < $1 AND (writer IS NULL OR lease_until < $1) ORDER BY updated_at LIMIT $2",
        )
        .bind(before)
        .bind(n))
        .await?;
        rows.iter().map(upload_row).collect()
    }

    async fn upload_ids(&self) -> Result<Vec<String>, MetaError> {
        let rows = self
            .read
            .fetch_all(sqlx::query("SELECT id FROM uploads"))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(MetaError::from))
            .collect()
    }

    async fn claim_upload(
        &self,
        id: &str,
        from: u64,
        writer: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<(), MetaError> {
        let done = sqlx::query(
            "UPDATE uploads SET writer = $1, lease_until = $2, updated_at = $3 \
             WHERE id = $4 AND committed = $5 AND (writer IS NULL OR lease_until < $3)",
        )
        .bind(writer)
        .bind(lease_until)
        .bind(now)
        .bind(id)
        .bind(from as i64)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(MetaError::UploadConflict)
        }
    }

    async fn renew_upload_claim(
        &self,
        id: &str,
        writer: &str,
        lease_until: i64,
    ) -> Result<bool, MetaError> {
        let done = sqlx::query(
            "UPDATE uploads SET lease_until = $1, updated_at = $2 WHERE id = $3 AND writer = $4",
        )
        .bind(lease_until)
        .bind(now_millis())
        .bind(id)
        .bind(writer)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_upload_claim(&self, id: &str, writer: &str) -> Result<(), MetaError> {
        sqlx::query(
            "UPDATE uploads SET writer = NULL, lease_until = NULL WHERE id = $1 AND writer = $2",
        )
        .bind(id)
        .bind(writer)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn advance_upload(
        &self,
        id: &str,
        writer: &str,
        from: u64,
        to: u64,
        hash_state: &[u8],
        store_state: &[u8],
    ) -> Result<(), MetaError> {
        let done = sqlx::query(
            "UPDATE uploads SET committed = $1, hash_state = $2, updated_at = $3, writer = NULL, lease_until = NULL, store_state = $7 \
             WHERE id = $4 AND committed = $5 AND writer = $6",
        )
        .bind(to as i64)
        .bind(hash_state)
        .bind(now_millis())
        .bind(id)
        .bind(from as i64)
        .bind(writer)
        .bind(store_state)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(MetaError::UploadConflict)
        }
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn close(&self) {
        SqlMetadataStore::close(self).await;
    }
}

/// A listing page comes back as one row: its names joined (`string_agg`, which SQLite has
/// since 3.44 and PostgreSQL always had), then split and sorted here. One row per name cost
/// sqlx about 2.5 µs a row on SQLite (a hand-off from its database thread and a converted
/// row each), most of a 1,000-name page's 3 ms; and ordering inside the aggregate made
/// PostgreSQL sort the page a second time (0.3 ms). The subquery's `ORDER BY ... LIMIT`
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

fn upload_row(r: &sqlx::any::AnyRow) -> Result<UploadSession, MetaError> {
    let repository: String = r.try_get("repository")?;
    Ok(UploadSession {
        id: r.try_get("id")?,
        repository: RepoName::parse(&repository).map_err(|_| {
            MetaError::Corrupt(format!("upload for bad repository name {repository:?}"))
        })?,
        committed: r.try_get::<i64, _>("committed")? as u64,
        hash_state: r.try_get("hash_state")?,
        store_state: r.try_get("store_state")?,
        started_at: r.try_get("started_at")?,
    })
}
