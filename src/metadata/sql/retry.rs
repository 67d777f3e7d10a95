//! Surviving a database restart or failover: which failures mean "the database is not
//! there" (answered 503, retried), which mean "the disk is full", and the retry of a
//! statement that a dead pooled connection refused before it ran.
//!
//! After PostgreSQL restarts, every connection pooled before it is dead, and each fails the
//! first statement sent on it. Testing each connection before use would cost a round trip
//! per query (docs/performance.md, "No ping before a query"); instead the first failure
//! marks the moment ([`Health::lost`]) and every connection opened before it is discarded
//! when next taken from a pool (a clock comparison, no round trip), so the statement's one
//! retry, and every other request, gets a fresh connection.
//!
//! What is retried, and why it is safe:
//! - a read, always (it changes nothing);
//! - `BEGIN`, always: nothing of the transaction has happened yet. A connection that died
//!   while idle fails right there, at the transaction's first statement. A failure after
//!   `BEGIN` (inside the transaction, or at `COMMIT`, whose outcome is then unknown) is not
//!   retried: the request fails with 503 and the client repeats it, and every registry
//!   write is idempotent at the request level (a manifest put, a blob link, a tag move);
//! - a single-statement write (autocommit) that failed on a lost connection. When the
//!   connection died while idle the statement never ran; when it died while the statement
//!   ran the outcome is unknown, and a replay must not do the change twice. Every such
//!   statement in `sql/` is an upsert (`ON CONFLICT`), a delete, or a compare-and-set
//!   update (`WHERE committed = $n AND writer = $w`), so a replay of one that had committed
//!   changes nothing and at worst reports a conflict or "not found" instead of success; the
//!   few plain inserts (a new upload id, user, robot) fail with a unique violation instead
//!   of inserting twice. Keep it so: a new single-statement write must be idempotent, or
//!   run in a transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow};
use sqlx::pool::{PoolConnection, PoolConnectionMetadata};
use sqlx::{Any, AnyPool, Database, Either, Execute, Executor, Transaction};

/// Retries after the first attempt. The first retry runs on a connection opened after the
/// failure; a second covers a database that went away again meanwhile.
const RETRIES: u32 = 2;

/// When a connection to the database was last seen lost, shared by a store's pools.
pub struct Health {
    /// The reference point of `lost_at`.
    base: Instant,
    /// Nanoseconds after `base` of the last loss, 0 for never.
    lost_at: AtomicU64,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            base: Instant::now(),
            lost_at: AtomicU64::new(0),
        })
    }

    /// Records that a connection was found dead: every connection opened before now is
    /// suspect.
    pub fn lost(&self) {
        let now = self.base.elapsed().as_nanos().max(1) as u64;
        self.lost_at.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether a connection opened at `opened` predates the last loss (and must go).
    pub fn predates_loss(&self, opened: Instant) -> bool {
        match self.lost_at.load(Ordering::Relaxed) {
            0 => false,
            at => opened <= self.base + Duration::from_nanos(at),
        }
    }

    /// [`Health::predates_loss`] for a connection `age` old.
    pub fn older_than_loss(&self, age: Duration) -> bool {
        Instant::now()
            .checked_sub(age)
            .is_none_or(|opened| self.predates_loss(opened))
    }
}

/// The database-specific code of an error it reported: PostgreSQL's SQLSTATE, or SQLite's
/// (extended) result code.
enum Reported<'a> {
    Postgres(&'a str),
    Sqlite(i32),
}

fn reported(e: &sqlx::Error) -> Option<Reported<'_>> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return Some(Reported::Postgres(pg.code()));
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(Reported::Sqlite);
    }
    None
}

/// PostgreSQL's word that the session is gone: connection exceptions (class 08) and the
/// server shutting down or starting up (57P01 administrator command, 57P02 crash shutdown,
/// 57P03 cannot connect now).
fn session_ended(sqlstate: &str) -> bool {
    sqlstate.starts_with("08") || matches!(sqlstate, "57P01" | "57P02" | "57P03")
}

/// The connection was lost, or never made: the statement did not run on a live session
/// (see the module's notes for the one ambiguous case), and a fresh connection may succeed.
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        _ => matches!(reported(e), Some(Reported::Postgres(code)) if session_ended(code)),
    }
}

/// The database cannot serve now (unreachable, restarting, out of connections, busy): the
/// client should retry later (503), this is not a bug.
pub fn unavailable(e: &sqlx::Error) -> bool {
    if connection_lost(e) {
        return true;
    }
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        // 53300 too many connections; 57014 a statement timeout.
        _ => match reported(e) {
            Some(Reported::Postgres(code)) => matches!(code, "53300" | "57014"),
            // SQLITE_BUSY (and its extended codes) after busy_timeout ran out.
            Some(Reported::Sqlite(code)) => code & 0xff == 5,
            None => false,
        },
    }
}

/// The database's disk is full: SQLite's SQLITE_FULL, PostgreSQL's 53100 disk_full.
pub fn out_of_space(e: &sqlx::Error) -> bool {
    match reported(e) {
        Some(Reported::Postgres(code)) => code == "53100",
        Some(Reported::Sqlite(code)) => code & 0xff == 13,
        None => false,
    }
}

/// Runs `attempt` until it succeeds, fails for another reason than a lost connection, or
/// has been retried [`RETRIES`] times; a lost connection is recorded in `health` first, so
/// the retry runs on a connection opened after it.
pub async fn retrying<T, F>(
    health: &Health,
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, sqlx::Error>
where
    F: Future<Output = Result<T, sqlx::Error>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(e) if connection_lost(&e) => {
                health.lost();
                if retries == RETRIES {
                    return Err(e);
                }
                retries += 1;
                tracing::warn!(error = %e, what, retry = retries, "database connection lost; retrying on a new connection");
            }
            other => return other,
        }
    }
}

/// A statement's text and arguments, kept so that it can be sent again.
pub struct Replay<'q> {
    sql: &'q str,
    /// `None`: the simple protocol (text without parameters, possibly several statements).
    args: Option<AnyArguments<'q>>,
}

impl<'q> Replay<'q> {
    pub fn of(mut query: impl Execute<'q, Any>) -> Result<Replay<'q>, sqlx::Error> {
        let sql = query.sql();
        let args = query.take_arguments().map_err(sqlx::Error::Encode)?;
        Ok(Replay { sql, args })
    }

    /// Runs the statement once on `conn`, collecting what it returns.
    pub async fn run(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<Vec<Either<AnyQueryResult, AnyRow>>, sqlx::Error> {
        match &self.args {
            None => conn.fetch_many(self.sql).try_collect().await,
            Some(args) => {
                let args = copy(args);
                conn.fetch_many(sqlx::query_with(self.sql, args))
                    .try_collect()
                    .await
            }
        }
    }

    /// Runs the statement once on `conn`, returning its first row.
    pub async fn first_row(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<Option<AnyRow>, sqlx::Error> {
        match &self.args {
            None => conn.fetch_optional(self.sql).await,
            Some(args) => {
                let args = copy(args);
                conn.fetch_optional(sqlx::query_with(self.sql, args)).await
            }
        }
    }
}

/// A copy of `args` for one more attempt (sqlx's arguments are moved into the query).
fn copy<'q>(args: &AnyArguments<'q>) -> AnyArguments<'q> {
    let mut copy = AnyArguments::default();
    copy.values.0.clone_from(&args.values.0);
    copy
}

/// sqlx's `before_acquire` hook: a pooled connection opened before the database was last
/// seen lost is closed instead of used.
pub fn drop_stale(
    health: Arc<Health>,
) -> impl for<'c> Fn(
    &'c mut sqlx::AnyConnection,
    PoolConnectionMetadata,
) -> BoxFuture<'c, Result<bool, sqlx::Error>>
+ Send
+ Sync
+ 'static {
    move |_, meta| {
        let fresh = !health.older_than_loss(meta.age);
        Box::pin(async move { Ok(fresh) })
    }
}

/// The pool writes go through: sqlx's, with single statements and `BEGIN` retried on a new
/// connection when a pooled one turns out dead (see the module's notes). `&Writer` is an
/// executor like `&AnyPool`, so queries run on it unchanged.
pub struct Writer {
    pool: AnyPool,
    health: Arc<Health>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("pool", &self.pool).finish()
    }
}

impl Writer {
    pub fn new(pool: AnyPool, health: Arc<Health>) -> Writer {
        Writer { pool, health }
    }

    /// The pool itself, for what needs no retry (migrations, closing).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection for several statements that are not one transaction; not retried.
    pub async fn acquire(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// Begins a transaction; a connection found dead at `BEGIN` is replaced.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        retrying(&self.health, "BEGIN", || self.pool.begin()).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl<'p> Executor<'p> for &'_ Writer {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Any>,
    {
        let (pool, health) = (self.pool.clone(), self.health.clone());
        let replay = Replay::of(query);
        futures::stream::once(async move {
            let replay = replay?;
            let results = retrying(&health, replay.sql, || async {
                replay.run(&mut *pool.acquire().await?).await
            })
            .await?;
            Ok::<_, sqlx::Error>(futures::stream::iter(results.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Any>,
    {
        let (pool, health) = (self.pool.clone(), self.health.clone());
        let replay = Replay::of(query);
        Box::pin(async move {
            let replay = replay?;
            retrying(&health, replay.sql, || async {
                replay.first_row(&mut *pool.acquire().await?).await
            })
            .await
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [<Any as Database>::TypeInfo],
    ) -> BoxFuture<'e, Result<<Any as Database>::Statement<'q>, sqlx::Error>> {
        let pool = self.pool.clone();
        Box::pin(async move { pool.acquire().await?.prepare_with(sql, parameters).await })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Any>, sqlx::Error>> {
        let pool = self.pool.clone();
        Box::pin(async move { pool.acquire().await?.describe(sql).await })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Health, connection_lost, unavailable};

    #[test]
    fn connections_opened_before_a_loss_are_suspect_and_later_ones_are_not() {
        let health = Health::new();
        let before = Instant::now();
        assert!(!health.predates_loss(before), "nothing was lost yet");
        std::thread::sleep(Duration::from_millis(2));
        health.lost();
        std::thread::sleep(Duration::from_millis(2));
        let after = Instant::now();
        assert!(health.predates_loss(before));
        assert!(!health.predates_loss(after));
        assert!(health.older_than_loss(Duration::from_secs(3600)));
        assert!(!health.older_than_loss(Duration::ZERO));
    }

    #[test]
    fn transport_failures_and_an_exhausted_pool_are_unavailability_not_bugs() {
        let reset = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(connection_lost(&reset) && unavailable(&reset));
        assert!(!connection_lost(&sqlx::Error::PoolTimedOut));
        assert!(unavailable(&sqlx::Error::PoolTimedOut));
        assert!(unavailable(&sqlx::Error::PoolClosed));
        assert!(!unavailable(&sqlx::Error::RowNotFound));
        assert!(!connection_lost(&sqlx::Error::Protocol("odd".into())));
    }
}
