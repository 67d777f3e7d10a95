//! The connections that serve the metadata store's reads, pooled with `deadpool`.
//!
//! sqlx's own pool pings every connection as it goes back to the pool: on PostgreSQL a
//! `Sync` message and its `ReadyForQuery`, on SQLite a command to the connection's
//! thread and its answer. For a manifest `GET` answered by one query, that second round
//! trip cost PostgreSQL a third of its throughput (docs/performance.md). The ping is
//! there for one case: a query whose future was dropped half way (a client that hung
//! up) may leave its answer unread on the connection. Here each connection remembers
//! whether its last query finished (the database answered, with rows or with an error),
//! and only one that did not is pinged before its next use; the ping reads whatever was
//! left. A connection idle for a while is pinged too, one that fails is replaced, and
//! connections are retired after half an hour, as sqlx's pool retires them.
//!
//! Writes stay on sqlx's pool: they are few, and transactions want its handling.

use std::time::Duration;

use deadpool::managed::{self, Metrics, Pool, PoolError, RecycleError, RecycleResult};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Connection, Executor};

use super::MetaError;

/// How long a caller waits for a free connection, or for a new one to open, before the
/// read fails (sqlx's pool waits as long).
const WAIT: Duration = Duration::from_secs(30);
/// A connection unused for this long is pinged before it serves a read.
const IDLE_CHECK: Duration = Duration::from_secs(30);
/// Connections older than this are closed and replaced.
const MAX_AGE: Duration = Duration::from_secs(30 * 60);

pub struct ReadConn {
    conn: AnyConnection,
    /// The last query on this connection ran to its end.
    in_step: bool,
}

pub struct Opener {
    url: String,
    /// Run on each new connection (SQLite's pragmas); `None` for none.
    setup: Option<&'static str>,
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
    pub fn new(url: &str, max: u32, setup: Option<&'static str>) -> Result<Readers, MetaError> {
        let pool = Pool::builder(Opener {
            url: url.to_string(),
            setup,
        })
        .max_size(max.max(1) as usize)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(WAIT))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| {
            MetaError::Database(sqlx::Error::Configuration(
                format!("read connection pool: {e}").into(),
            ))
        })?;
        Ok(Readers { pool })
    }

    async fn get(&self) -> Result<managed::Object<Opener>, MetaError> {
        self.pool.get().await.map_err(|e| {
            MetaError::Database(match e {
                PoolError::Backend(e) => e,
                PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
                PoolError::Closed => sqlx::Error::PoolClosed,
                other => sqlx::Error::Configuration(other.to_string().into()),
            })
        })
    }

    pub async fn fetch_optional<'q>(
        &self,
        q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<Option<AnyRow>, MetaError> {
        let mut c = self.get().await?;
        c.in_step = false;
        let r = q.fetch_optional(&mut c.conn).await;
        c.in_step = answered(&r);
        Ok(r?)
    }

    pub async fn fetch_one<'q>(
        &self,
        q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<AnyRow, MetaError> {
        let mut c = self.get().await?;
        c.in_step = false;
        let r = q.fetch_one(&mut c.conn).await;
        c.in_step = answered(&r);
        Ok(r?)
    }

    pub async fn fetch_all<'q>(
        &self,
        q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<Vec<AnyRow>, MetaError> {
        let mut c = self.get().await?;
        c.in_step = false;
        let r = q.fetch_all(&mut c.conn).await;
        c.in_step = answered(&r);
        Ok(r?)
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
/// connection: rows, no row, or an error the database reported.
fn answered<T>(r: &Result<T, sqlx::Error>) -> bool {
    matches!(
        r,
        Ok(_) | Err(sqlx::Error::Database(_) | sqlx::Error::RowNotFound)
    )
}
