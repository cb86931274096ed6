//! What the store tells an operator about itself: connection pool gauges,
//! the time taken to get a transaction, and a span per database
//! transaction. The store knows nothing of metrics; the server hands it an
//! observer and reads the gauges.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sea_orm::{DatabaseConnection, DatabaseConnectionType, DatabaseTransaction, DbBackend, TransactionTrait};
use userdir_domain::repo::RepoResult;

use crate::Store;

/// One connection pool's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// `main` (reads, and writes on PostgreSQL) or `writer` (SQLite's one writer).
    pub pool: &'static str,
    /// Connections open, busy or idle.
    pub open: u32,
    /// Connections open and idle.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// Called with how long each transaction took to begin: the wait for a
/// pooled connection (or SQLite's writer) plus `BEGIN`.
pub type TransactionObserver = Arc<dyn Fn(&'static str, Duration) + Send + Sync>;

/// The observer slot, shared by the store's clones.
#[derive(Clone, Default)]
pub(crate) struct Observer(Arc<OnceLock<TransactionObserver>>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Observer(set)"
        } else {
            "Observer(none)"
        })
    }
}

impl Store {
    /// Sets the observer of transaction waits (once; later calls are ignored).
    pub fn observe_transactions(&self, observer: TransactionObserver) {
        let _ = self.observer.0.set(observer);
    }

    /// The pools' state now.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        let mut stats = vec![pool_stats("main", &self.db, self.max_connections)];
        if self.backend() == DbBackend::Sqlite {
            stats.push(pool_stats("writer", &self.writer, 1));
        }
        stats
    }

    /// The database's name in OpenTelemetry's `db.system.name`.
    pub fn system_name(&self) -> &'static str {
        match self.backend() {
            DbBackend::Postgres => "postgresql",
            _ => "sqlite",
        }
    }

    /// Begins a transaction on `conn` for `operation`, telling the observer
    /// how long that took.
    ///
    /// The BEGIN runs in a task of its own, so that a call cancelled while
    /// it is on the wire (a deadline that passes) cannot leave it behind:
    /// sqlx counts a transaction only once PostgreSQL has answered its
    /// BEGIN, so one cancelled in between was rolled back by nobody, and its
    /// connection went back to the pool inside an open transaction (every
    /// later statement on it ran in that transaction, its locks held until
    /// some COMMIT; a test's `DROP SCHEMA` waited on it). Finished in its
    /// task, a transaction nobody took is dropped there and rolled back.
    pub(crate) async fn begin_on(
        &self,
        conn: &DatabaseConnection,
        operation: &'static str,
    ) -> RepoResult<DatabaseTransaction> {
        let start = Instant::now();
        let conn = conn.clone();
        let txn = tokio::spawn(async move { conn.begin().await })
            .await
            .map_err(|e| userdir_domain::DomainError::storage(format!("a transaction's BEGIN did not finish: {e}")))?
            .map_err(|e| self.db_error(e))?;
        self.observed(operation, start);
        Ok(txn)
    }

    /// Tells the observer that the transaction for `operation` asked for at `start` began.
    pub(crate) fn observed(&self, operation: &'static str, start: Instant) {
        if let Some(observer) = self.observer.0.get() {
            observer(operation, start.elapsed());
        }
    }
}

fn pool_stats(pool: &'static str, conn: &DatabaseConnection, max: u32) -> PoolStats {
    let (open, idle) = match &conn.inner {
        DatabaseConnectionType::SqlxSqlitePoolConnection(_) => {
            let p = conn.get_sqlite_connection_pool();
            (p.size(), p.num_idle())
        }
        DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            let p = conn.get_postgres_connection_pool();
            (p.size(), p.num_idle())
        }
        #[allow(unreachable_patterns)]
        _ => (0, 0),
    };
    PoolStats {
        pool,
        open,
        idle: u32::try_from(idle).unwrap_or(u32::MAX),
        max,
    }
}
