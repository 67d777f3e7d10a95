//! The connections that serve the metadata store's reads, pooled with `deadpool`.
//!
//! sqlx's own pool pings every connection on its way back, a second round trip per read
//! (docs/performance.md, "Reads without a ping on release"). Here a connection is pinged
//! only when its last query did not run to its end (a dropped future may have left its
//! answer on the connection; the ping reads it) or when it sat idle; one whose ping fails
//! is replaced, and connections retire after half an hour, as sqlx's do.
//!
//! Writes stay on sqlx's pool: they are few, and transactions want its handling.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Pool, PoolError, QueueMode, RecycleError, RecycleResult};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Connection, Executor};

use super::MetaError;
use super::sql::retry::{Health, Replay, connection_lost, retrying};

/// How long a caller waits for a free connection, or for a new one to open, before the
/// read fails (sqlx's pool waits as long).
const WAIT: Duration = Duration::from_secs(30);
/// A connection unused for this long is pinged before it serves a read.
const IDLE_CHECK: Duration = Duration::from_secs(30);
/// Connections older than this are closed and replaced.
const MAX_AGE: Duration = Duration::from_secs(30 * 60);
/// A ping that takes longer than this (a connection whose peer went away without a word)
/// is given up: the connection is dropped and the caller gets another one.
const PING_LIMIT: Duration = Duration::from_secs(5);

pub struct ReadConn {
    conn: AnyConnection,
    /// The last query on this connection ran to its end.
    in_step: bool,
}

pub struct Opener {
    url: String,
    /// Run on each new connection (SQLite's pragmas); `None` for none.
    setup: Option<&'static str>,
    /// When a connection was last seen lost: older connections are replaced.
    health: Arc<Health>,
}

impl managed::Manager for Opener {
    type Type = ReadConn;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<ReadConn, sqlx::Error> {
        let mut conn = AnyConnection::connect(&self.url).await?;
        if let Some(setup) = self.setup {
            conn.execute(setup).await?;
        }
        Ok(ReadConn {
            conn,
            in_step: true,
        })
    }

    async fn recycle(&self, c: &mut ReadConn, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if metrics.age() > MAX_AGE {
            return Err(RecycleError::message("retired after its maximum age"));
        }
        if self.health.predates_loss(metrics.created) {
            return Err(RecycleError::message(
                "opened before the database was last seen lost",
            ));
        }
        if !c.in_step || metrics.last_used() > IDLE_CHECK {
            c.conn.ping().await?;
            c.in_step = true;
        }
        Ok(())
    }
}

pub struct Readers {
    pool: Pool<Opener>,
}

impl Readers {
    /// Opens connections to `url` on demand, at most `max` at once; `setup` runs on each.
    /// A connection found lost is recorded in `health` (and so are the writers').
    pub fn new(
        url: &str,
        max: u32,
        setup: Option<&'static str>,
        health: &Arc<Health>,
    ) -> Result<Readers, MetaError> {
        let pool = Pool::builder(Opener {
            url: url.to_string(),
            setup,
            health: health.clone(),
        })
        .max_size(max.max(1) as usize)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(WAIT))
        .recycle_timeout(Some(PING_LIMIT))
        // The connection used last serves next, so that under light load reads go to a
        // connection that is seldom idle long enough to need a ping.
        .queue_mode(QueueMode::Lifo)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| {
            MetaError::Database(sqlx::Error::Configuration(
                format!("read connection pool: {e}").into(),
            ))
        })?;
        Ok(Readers { pool })
    }

    async fn get(&self) -> Result<managed::Object<Opener>, sqlx::Error> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
            PoolError::Closed => sqlx::Error::PoolClosed,
            other => sqlx::Error::Configuration(other.to_string().into()),
        })
    }

    /// Runs `query` on a pooled connection, marking the connection in doubt until the
    /// database has answered (a dropped future leaves it so); returns its rows. A
    /// connection found lost is dropped, and the read runs again on one opened since
    /// (`sql/retry.rs`).
    async fn run(&self, query: Replay<'_>) -> Result<Vec<AnyRow>, MetaError> {
        let query = &query;
        let results = retrying(&self.pool.manager().health, "read", || async move {
            let mut c = self.get().await?;
            c.in_step = false;
            let r = query.run(&mut c.conn).await;
            c.in_step = answered(&r);
            if r.as_ref().is_err_and(connection_lost) {
                // Not back into the pool: its ping would only confirm it.
                drop(managed::Object::take(c));
            }
            r
        })
        .await?;
        Ok(results.into_iter().filter_map(|r| r.right()).collect())
    }

    pub async fn fetch_optional<'q>(
        &self,
        q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<Option<AnyRow>, MetaError> {
        Ok(self.run(Replay::of(q)?).await?.into_iter().next())
    }

    pub async fn fetch_one<'q>(
        &self,
        q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<AnyRow, MetaError> {
        self.run(Replay::of(q)?)
            .await?
            .into_iter()
            .next()
            .ok_or(MetaError::Database(sqlx::Error::RowNotFound))
    }

    pub async fn fetch_all<'q>(
        &self,
        q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<Vec<AnyRow>, MetaError> {
        self.run(Replay::of(q)?).await
    }

    /// The pool's use, for the metrics.
    pub fn usage(&self) -> super::PoolUsage {
        let status = self.pool.status();
        super::PoolUsage {
            pool: "read",
            open: status.size as u32,
            idle: status.available as u32,
            max: status.max_size as u32,
        }
    }

    /// Closes the idle connections and refuses further reads.
    pub async fn close(&self) {
        let idle = self.pool.retain(|_, _| false).removed;
        self.pool.close();
        for c in idle {
            let _ = c.conn.close().await;
        }
    }
}

/// Whether the database answered the query in full, so that nothing of it is left on the
/// connection: rows, no row, or an error the database reported about the query. Errors
/// about the session itself (PostgreSQL's classes 08, connection exceptions, and 57,
/// such as an administrator's shutdown, and XX, internal errors) leave the connection
/// in doubt: it is pinged, and replaced if the ping fails, before it serves again.
fn answered<T>(r: &Result<T, sqlx::Error>) -> bool {
    match r {
        Ok(_) | Err(sqlx::Error::RowNotFound) => true,
        Err(sqlx::Error::Database(e)) => !e
            .code()
            .is_some_and(|code| ["08", "57", "XX"].iter().any(|c| code.starts_with(c))),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::error::Error as StdError;
    use std::fmt;

    use std::time::Duration;

    use sqlx::Row;
    use sqlx::error::{DatabaseError, ErrorKind};

    use super::{Health, Readers, answered};

    #[derive(Debug)]
    struct Reported(&'static str);

    impl fmt::Display for Reported {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl StdError for Reported {}

    impl DatabaseError for Reported {
        fn message(&self) -> &str {
            "reported by the database"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn db(code: &'static str) -> Result<(), sqlx::Error> {
        Err(sqlx::Error::Database(Box::new(Reported(code))))
    }

    #[test]
    fn errors_about_the_query_leave_the_connection_clean() {
        assert!(answered(&Ok::<(), sqlx::Error>(())));
        assert!(answered(&Err::<(), _>(sqlx::Error::RowNotFound)));
        // PostgreSQL: unique violation, syntax error; SQLite: constraint, busy.
        for code in ["23505", "42601", "2067", "5"] {
            assert!(answered(&db(code)), "{code}");
        }
    }

    /// The PostgreSQL server the test command started; like every PostgreSQL test, fails
    /// rather than skips without it.
    fn postgres() -> String {
        sqlx::any::install_default_drivers();
        std::env::var("BERTH_TEST_POSTGRES_URL").expect(
            "BERTH_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL",
        )
    }

    async fn backend_pid(readers: &Readers) -> i64 {
        let row = readers
            .fetch_one(sqlx::query("SELECT pg_backend_pid()::int8 AS pid"))
            .await
            .expect("read");
        row.try_get("pid").expect("pid column")
    }

    #[tokio::test]
    async fn a_ping_that_does_not_come_back_is_given_up_for_another_connection() {
        let readers = Readers::new(&postgres(), 1, None, &Health::new()).expect("pool");
        let first = backend_pid(&readers).await;
        // Given up while the database is still at work: the connection's ping has to wait
        // for that answer, half a minute away.
        let slow = readers.fetch_one(sqlx::query("SELECT pg_sleep(30)"));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), slow)
                .await
                .is_err()
        );
        let next = tokio::time::timeout(Duration::from_secs(20), backend_pid(&readers))
            .await
            .expect("the read waited on the ping of a connection in doubt");
        assert_ne!(next, first, "the connection in doubt served again");
    }

    #[tokio::test]
    async fn the_connection_used_last_serves_next() {
        let readers = Readers::new(&postgres(), 2, None, &Health::new()).expect("pool");
        // Two reads at once open two connections.
        let both = "SELECT pg_backend_pid()::int8 AS pid FROM pg_sleep(0.2)";
        let (a, b) = tokio::join!(
            readers.fetch_one(sqlx::query(both)),
            readers.fetch_one(sqlx::query(both))
        );
        let a: i64 = a.expect("read").try_get("pid").expect("pid");
        let b: i64 = b.expect("read").try_get("pid").expect("pid");
        assert_ne!(a, b);
        let last = backend_pid(&readers).await;
        for _ in 0..4 {
            assert_eq!(backend_pid(&readers).await, last);
        }
        readers.close().await;
    }

    #[test]
    fn errors_about_the_session_or_the_transport_need_a_ping() {
        // Connection failure, administrator shutdown, internal error.
        for code in ["08006", "57P01", "XX000"] {
            assert!(!answered(&db(code)), "{code}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!answered(&Err::<(), _>(sqlx::Error::Io(io))));
        assert!(!answered(&Err::<(), _>(sqlx::Error::Protocol(
            "cut".into()
        ))));
    }
}
