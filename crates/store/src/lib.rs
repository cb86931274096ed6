//! Persistence for userdir on SQLite (the embedded default) and PostgreSQL,
//! through sea-orm. Implements the domain's repository traits; the rules stay
//! in the domain crate.

mod api_keys;
mod bulk_insert;
mod checkpoint;
mod convert;
pub mod entity;
mod error;
mod events;
mod file_mode;
mod full_sync;
mod import_jobs;
mod import_write;
mod imports;
pub mod migration;
mod observe;
mod query;
mod seats;
mod snapshot;
mod tenant_write;
mod tenants;
mod user_row;
mod user_writes;
mod users;

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;
use userdir_domain::repo::{Ping, RepoResult};

pub use error::db_error;
pub use events::signal::Signal;
pub use observe::{PoolStats, TransactionObserver};
pub use snapshot::StoreSnapshot;

/// How to open the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://path/to/file.db?mode=rwc` or `postgres://user@host/db`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// PostgreSQL only: the schema to use (`search_path`); tests use one each.
    pub pg_schema: Option<String>,
    /// SQLite only: the largest the database file may grow, in MiB (0 = no
    /// limit). Writes that would grow it further fail with `STORAGE_FULL`,
    /// exactly as on a full disk, and the server goes on serving.
    pub sqlite_max_size_mib: u64,
    /// How long a request waits for a free connection; then it fails
    /// RESOURCE_EXHAUSTED `SERVER_BUSY` when all are busy, UNAVAILABLE when
    /// the database does not answer.
    pub acquire_timeout: Duration,
    /// A test hook (never set by the server): faults injected into every
    /// tenant write between numbering its events and committing.
    #[doc(hidden)]
    pub commit_faults: Option<CommitFaults>,
}

/// Faults a test injects into tenant writes, to widen races and to prove a
/// write whose events fail leaves nothing.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct CommitFaults {
    /// Each write sleeps a random time up to this long, its events numbered
    /// and its tenant locked, before it commits.
    pub delay: Duration,
    /// One write in this many (0: none) fails there and rolls back, its
    /// change and its events with it.
    pub fail_one_in: u32,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            pg_schema: None,
            sqlite_max_size_mib: 0,
            acquire_timeout: Duration::from_secs(10),
            commit_faults: None,
        }
    }
}

/// The database, shared by every request.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Where writes go. On SQLite a pool of one connection: SQLite runs one
    /// writer at a time anyway, and a single writer keeps its page cache
    /// (another connection's commit would invalidate it). On PostgreSQL the
    /// same pool as reads.
    writer: DatabaseConnection,
    /// How long a request waits for a free connection.
    acquire_timeout: Duration,
    /// SQLite only: single-user writes that wait for the writer or hold it
    /// (see [`Store::interactive_write`]).
    interactive: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Rows inserted by bulk imports, for refreshing planner statistics.
    inserted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// SQLite only: checkpoints off the writer's path.
    checkpointer: Option<checkpoint::Checkpointer>,
    /// PostgreSQL only: how to open the one connection that holds the
    /// migration lock.
    lock_options: Option<ConnectOptions>,
    /// The health probe's own connection (a pool of one): a pool held by
    /// long exports or a storm of streams is a busy server, not a dead
    /// database, and the probe must not wait behind it.
    probe: DatabaseConnection,
    /// The request pool's size, for its gauges.
    max_connections: u32,
    /// Told how long transactions take to begin (see `observe.rs`).
    observer: observe::Observer,
    /// Wakes the change feed's watchers.
    signal: Signal,
    /// See [`StoreOptions::commit_faults`].
    commit_faults: Option<CommitFaults>,
}

/// A single-user write in progress; see [`Store::interactive_write`].
pub(crate) struct InteractiveWrite(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InteractiveWrite {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Page cache of the SQLite writer connection: bulk imports touch index pages
/// all over the file. Readers keep a small cache each (a write invalidates it).
/// 1M new users on SQLite (interleaved runs): 14.5 / 14.6 s at 24 MiB (peak
/// RSS 157 MiB), 13.7 / 14.0 s at 40 MiB (173-176 MiB), 13.2 / 13.8 s at 48
/// MiB (187-190 MiB, too close to the 200 MiB budget). Session 7: 32 MiB,
/// since faster result delivery (no Nagle stalls, partial batches) put more
/// rows in flight and the peak at 1M reached 201 MiB with 40 MiB here.
const WRITER_CACHE_KIB: u32 = 32 * 1024;
const READER_CACHE_KIB: u32 = 2 * 1024;

fn sqlite_options(
    o: sea_orm::sqlx::sqlite::SqliteConnectOptions,
    cache_kib: u32,
    max_size_mib: u64,
) -> sea_orm::sqlx::sqlite::SqliteConnectOptions {
    let o = if max_size_mib > 0 {
        // 4 KiB pages (SQLite's default page size): 256 a MiB.
        o.pragma("max_page_count", (max_size_mib * 256).to_string())
    } else {
        o
    };
    o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        // The users -> tenants foreign key is not enforced, as on PostgreSQL
        // (see migration m20261123_000003): the store locks the tenant row
        // before adding users anyway, and on SQLite an enforced key makes
        // every multi-row insert keep a statement journal.
        .foreign_keys(false)
        .create_if_missing(true)
        .pragma("cache_size", format!("-{cache_kib}"))
        // Checkpoint once the WAL holds 128 MiB (32,768 pages) rather than
        // 32 MiB: a bulk import's commit dirties pages all over the random
        // indexes, so each checkpoint rewrites and syncs them into the
        // database file; fewer checkpoints write each hot page fewer times.
        // Measured at 1M new users: 36-39 s at 8,192 pages, 30.6-31.4 s at
        // 32,768, no better at 65,536 or 131,072. Imports also ask for a
        // checkpoint beside the writer after each commit (`checkpoint.rs`),
        // which leaves this one little to do.
        .pragma("wal_autocheckpoint", "32768")
        .pragma("temp_store", "memory")
}

/// The advisory lock migrations take on PostgreSQL: one per schema, so
/// databases with many schemas (the tests use one each) do not wait on each other.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_lock(hashtext('userdir.migrate:' || coalesce(current_schema(), '')))";
const MIGRATION_UNLOCK: &str =
    "SELECT pg_advisory_unlock(hashtext('userdir.migrate:' || coalesce(current_schema(), '')))";

/// Decides whether a connection handed back goes back into the pool: only
/// when no transaction is open on it. A transaction whose COMMIT or ROLLBACK
/// failed (SQLite rolls a transaction back by itself on a full disk, so the
/// ROLLBACK that follows fails too) leaves the driver's transaction count
/// wrong; reused, the next "BEGIN" would become a savepoint inside a
/// transaction that never commits, and every later write would be
/// acknowledged and lost. Such a connection is closed instead, and the pool
/// opens a fresh one.
fn release_clean<C: sea_orm::sqlx::Connection>(
    conn: &mut C,
) -> futures_util::future::BoxFuture<'_, Result<bool, sea_orm::sqlx::Error>> {
    Box::pin(async move {
        // Almost always the count is zero and nothing is asked of the
        // database (sqlx pings every released connection anyway). Otherwise
        // first run what is queued: the rollback a dropped transaction asked
        // for (SQLite counts it down only when its worker runs it).
        if !conn.is_in_transaction() {
            return Ok(true);
        }
        conn.ping().await?;
        let clean = !conn.is_in_transaction();
        if !clean {
            tracing::warn!("a database connection was left inside a transaction; closing it");
        }
        Ok(clean)
    })
}

impl Store {
    /// Connects (creating a SQLite file if needed) without migrating.
    pub async fn connect(options: &StoreOptions) -> Result<Self, DbErr> {
        let max_size_mib = options.sqlite_max_size_mib;
        let mut opts = ConnectOptions::new(options.url.clone());
        opts.max_connections(options.max_connections)
            .min_connections(0)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(options.acquire_timeout)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(move |o| sqlite_options(o, READER_CACHE_KIB, max_size_mib))
            .map_sqlx_sqlite_pool_opts(|p| p.after_release(|conn, _| release_clean(conn)))
            .map_sqlx_postgres_pool_opts(|p| p.after_release(|conn, _| release_clean(conn)))
            // Plan every statement for its parameters: a generic plan cached
            // while a table was still small (say, early in a bulk import)
            // would otherwise keep scanning the whole tenant for lookups.
            .map_sqlx_postgres_opts(|o| o.options([("plan_cache_mode", "force_custom_plan")]));
        if let Some(schema) = &options.pg_schema {
            opts.set_schema_search_path(schema.clone());
        }
        if let Some(file) = file_mode::sqlite_file(&options.url) {
            file_mode::owner_only(&file).map_err(|e| {
                DbErr::Custom(format!(
                    "cannot make the database file {} owner-only: {e}",
                    file.display()
                ))
            })?;
        }
        let db = Database::connect(opts.clone()).await?;
        let pg = db.get_database_backend() == DbBackend::Postgres;
        let probe = {
            let mut one = opts.clone();
            one.max_connections(1)
                .min_connections(0)
                .connect_timeout(Duration::from_secs(2))
                .acquire_timeout(Duration::from_secs(2));
            Database::connect(one).await?
        };
        let lock_options = pg.then(|| {
            let mut one = opts.clone();
            one.max_connections(1).min_connections(0);
            one
        });
        let writer = if !pg {
            opts.max_connections(1)
                .min_connections(1)
                .map_sqlx_sqlite_opts(move |o| sqlite_options(o, WRITER_CACHE_KIB, max_size_mib));
            Database::connect(opts).await?
        } else {
            db.clone()
        };
        let signal = Signal::default();
        if pg {
            signal.listen(db.get_postgres_connection_pool().clone());
        }
        let checkpointer =
            (db.get_database_backend() == DbBackend::Sqlite).then(|| checkpoint::Checkpointer::spawn(db.clone()));
        Ok(Self {
            db,
            writer,
            interactive: Default::default(),
            acquire_timeout: options.acquire_timeout,
            inserted: Default::default(),
            checkpointer,
            lock_options,
            probe,
            max_connections: options.max_connections,
            observer: Default::default(),
            signal,
            commit_faults: options.commit_faults,
        })
    }

    /// Connects and applies every pending migration.
    pub async fn open(options: &StoreOptions) -> Result<Self, DbErr> {
        let store = Self::connect(options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations (idempotent). On PostgreSQL, replicas that
    /// start together take turns: each holds a session advisory lock (per
    /// schema) on a connection of its own while it migrates, so only the
    /// first creates anything and the others find nothing left to do.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        let Some(options) = &self.lock_options else {
            return migration::Migrator::up(&self.writer, None).await;
        };
        let lock = Database::connect(options.clone()).await?;
        lock.execute_unprepared(MIGRATION_LOCK).await?;
        let migrated = migration::Migrator::up(&self.writer, None).await;
        let unlocked = lock.execute_unprepared(MIGRATION_UNLOCK).await;
        // Closing the session releases the lock in any case.
        let _ = lock.close().await;
        migrated?;
        unlocked.map(|_| ())
    }

    /// The key that seals page tokens, the same for every replica.
    pub async fn page_token_key(&self) -> RepoResult<[u8; userdir_domain::page_token::KEY_BYTES]> {
        use sea_orm::EntityTrait;
        let name = migration::m20261202_000006_service_keys::PAGE_TOKEN_KEY;
        let row = entity::service_key::Entity::find_by_id(name)
            .one(&self.db)
            .await
            .map_err(db_error)?;
        let hex = row.map(|r| r.secret).unwrap_or_default();
        let mut key = [0u8; userdir_domain::page_token::KEY_BYTES];
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()));
        let mut n = 0;
        for (slot, byte) in key.iter_mut().zip(bytes) {
            *slot = byte.ok_or_else(|| userdir_domain::DomainError::storage("the stored page-token key is damaged"))?;
            n += 1;
        }
        if n != key.len() {
            return Err(userdir_domain::DomainError::storage(
                "the page-token key is missing or damaged; run `userdir migrate`",
            ));
        }
        Ok(key)
    }

    /// Migrations defined but not applied yet (for `serve --no-migrate`).
    pub async fn pending_migrations(&self) -> Result<Vec<String>, DbErr> {
        let pending = migration::Migrator::get_pending_migrations(&self.writer).await?;
        Ok(pending.iter().map(|m| m.name().to_owned()).collect())
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub(crate) fn commit_faults(&self) -> Option<CommitFaults> {
        self.commit_faults
    }

    /// What wakes the change feed's watchers.
    pub fn signal(&self) -> &Signal {
        &self.signal
    }

    /// The pool for reads.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The pool for writes.
    pub fn writer(&self) -> &DatabaseConnection {
        &self.writer
    }

    /// How long a request waits for a free connection.
    pub(crate) fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// Marks a single-user write as waiting for (then holding) the writer
    /// until the guard drops. On SQLite an import's writer sees it and
    /// commits at its next step, so the write waits for at most one step of
    /// the import, not for a whole transaction of up to 20,000 rows (the
    /// writer pool hands its connection out in order of arrival).
    pub(crate) fn interactive_write(&self) -> InteractiveWrite {
        self.interactive.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InteractiveWrite(std::sync::Arc::clone(&self.interactive))
    }

    /// Whether a single-user write waits for the SQLite writer.
    pub(crate) fn interactive_waiting(&self) -> bool {
        self.backend() == DbBackend::Sqlite && self.interactive.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// SQLite: asks for a WAL checkpoint beside the writer once a bulk write
    /// (an import's transaction, a FULL_SYNC's deletions) has committed; see
    /// `checkpoint.rs`. Nothing on PostgreSQL.
    pub(crate) fn checkpoint_soon(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.request();
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(self) -> Result<(), DbErr> {
        let sqlite = self.backend() == DbBackend::Sqlite;
        self.probe.close().await?;
        if sqlite {
            self.writer.close().await?;
        }
        self.db.close().await
    }
}

impl Ping for Store {
    /// On the probe's own connection, never waiting for the request pool.
    async fn ping(&self) -> RepoResult<()> {
        self.probe
            .execute_unprepared("SELECT 1")
            .await
            .map(|_| ())
            .map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sea_orm::Statement;

    use super::*;

    /// `.cargo/config.toml` builds the bundled SQLite with a page cache of its
    /// own for each connection and without memory statistics, so that the
    /// import's writer and readers do not queue on global mutexes (measured at
    /// 1M users: new users 20.3k -> 26.1k rows/s, unchanged 74k -> 86k).
    #[tokio::test]
    async fn sqlite_connections_share_no_global_locks() {
        let store = Store::connect(&StoreOptions::new("sqlite::memory:")).await.unwrap();
        let rows = store
            .connection()
            .query_all_raw(Statement::from_string(DbBackend::Sqlite, "PRAGMA compile_options"))
            .await
            .unwrap();
        let options: Vec<String> = rows.iter().map(|r| r.try_get_by_index(0).unwrap()).collect();
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
        // Cached statements keep their plans instead of being compiled
        // again for every new bound value (STAT4 is on in the bundled build).
        assert!(options.iter().any(|o| o == "ENABLE_QPSG"), "{options:?}");
    }
}
