//! The metadata store on SQL, through sqlx's `Any` driver: one set of queries serves
//! SQLite (embedded default) and PostgreSQL (shared by stateless replicas). The two
//! dialects differ only in their migrations (`migrations/sqlite`, `migrations/postgres`).
//!
//! This file holds the connections, the dialects, the migrations, the ownership of the
//! SQLite file and the row helpers; each domain's queries are in a file of their own
//! (`repositories.rs`, `uploads.rs`, `identity.rs`, `signin.rs`), implementing that domain's trait.

mod gc;
mod identity;
mod repositories;
pub(crate) mod retry;
mod signin;
mod uploads;

use std::os::fd::AsRawFd;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Executor, Row};

use super::cache::ManifestCache;
use super::readers::Readers;
use super::{MetaError, MetadataStore, PoolUsage};
use crate::oci::Digest;
use retry::{Health, Writer};

/// Run on every SQLite connection.
const SQLITE_SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a write waits for a PostgreSQL connection (a free one, or a new one while the
/// server refuses them) before it is answered 503 (sqlx's default is 30 s).
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// queue instead of failing with SQLITE_BUSY. Retries what a dead connection refused
    /// (`retry.rs`).
    write: Writer,
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
        // A connection opened before the database was last seen lost is not used again
        // (`retry.rs`): a clock comparison, no round trip.
        let health = Health::new();
        match dialect {
            Dialect::Sqlite => {
                let url = sqlite_url(url)?;
                // No liveness ping before a query: it doubled a manifest GET's round trips
                // (docs/performance.md, "No ping before a query"); a dead connection fails
                // one query and is replaced.
                // Create the file and switch it to WAL before the readers open it.
                let write = AnyPoolOptions::new()
                    .test_before_acquire(false)
                    .before_acquire(retry::drop_stale(health.clone()))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(SQLITE_SETUP).await?;
                            Ok(())
                        })
                    })
                    .max_connections(1)
                    .connect(&url)
                    .await?;
                let read = Readers::new(&url, max_connections, Some(SQLITE_SETUP), &health)?;
                Ok(SqlMetadataStore {
                    read,
                    write: Writer::new(write, health),
                    dialect,
                    sqlite_file: sqlite_file(&url),
                    manifest_cache: None,
                    _owner_lock: None,
                })
            }
            Dialect::Postgres => {
                let pool = AnyPoolOptions::new()
                    .test_before_acquire(false)
                    .before_acquire(retry::drop_stale(health.clone()))
                    // sqlx keeps trying to connect to a database that refuses connections
                    // until this runs out; then the write is answered 503.
                    .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                    .max_connections(max_connections.max(1))
                    .connect(url)
                    .await?;
                Ok(SqlMetadataStore {
                    read: Readers::new(url, max_connections, None, &health)?,
                    write: Writer::new(pool, health),
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
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(self.write.pool()).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(self.write.pool()).await?,
        }
        Ok(())
    }

    /// Refuses a database whose schema is not exactly the one this binary knows: older (run
    /// `berth migrate` first) or newer (written by a later release). For maintenance that
    /// must not migrate on its own (`berth gc`).
    pub async fn check_schema(&self) -> Result<(), MetaError> {
        let known: Vec<i64> = match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.iter().map(|m| m.version).collect(),
            Dialect::Postgres => POSTGRES_MIGRATIONS.iter().map(|m| m.version).collect(),
        };
        let latest = known.iter().copied().max().unwrap_or(0);
        let applied: Vec<i64> = match sqlx::query(
            "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
        )
        .fetch_all(self.write.pool())
        .await
        {
            Ok(rows) => rows
                .iter()
                .map(|r| r.try_get::<i64, _>("version"))
                .collect::<Result<_, _>>()?,
            Err(_) => Vec::new(),
        };
        let at = applied.iter().copied().max().unwrap_or(0);
        let schema_error = |m: String| MetaError::Database(sqlx::Error::Configuration(m.into()));
        if let Some(newer) = applied.iter().find(|v| !known.contains(v)) {
            return Err(schema_error(format!(
                "the database's schema is at version {at} (it has migration {newer}), newer than this berth knows (version {latest}): run this command with the release that migrated it"
            )));
        }
        if let Some(missing) = known.iter().find(|v| !applied.contains(v)) {
            return Err(schema_error(format!(
                "the database's schema is at version {at}, older than this berth needs (version {latest}, missing migration {missing}): run `berth migrate` first"
            )));
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
    async fn close(&self) {
        SqlMetadataStore::close(self).await;
    }

    /// On a read connection: the SQLite write connection may be busy with a long write,
    /// which says nothing about whether the database answers.
    async fn ping(&self) -> Result<(), MetaError> {
        self.read.fetch_one(sqlx::query("SELECT 1")).await?;
        Ok(())
    }

    fn pool_usage(&self) -> Vec<PoolUsage> {
        vec![
            self.read.usage(),
            PoolUsage {
                pool: "write",
                open: self.write.pool().size(),
                idle: self.write.pool().num_idle() as u32,
                max: self.write.pool().options().get_max_connections(),
            },
        ]
    }
}
