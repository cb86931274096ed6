//! Persistence for userdir on SQLite (the embedded default) and PostgreSQL,
//! through sea-orm. Implements the domain's repository traits; the rules stay
//! in the domain crate.

mod convert;
pub mod entity;
mod error;
mod imports;
pub mod migration;
mod query;
mod tenants;
mod users;

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;
use userdir_domain::repo::{Ping, RepoResult};

pub use error::db_error;

/// How to open the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://path/to/file.db?mode=rwc` or `postgres://user@host/db`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// PostgreSQL only: the schema to use (`search_path`); tests use one each.
    pub pg_schema: Option<String>,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            pg_schema: None,
        }
    }
}

/// The database, shared by every request.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects (creating a SQLite file if needed) without migrating.
    pub async fn connect(options: &StoreOptions) -> Result<Self, DbErr> {
        let mut opts = ConnectOptions::new(options.url.clone());
        opts.max_connections(options.max_connections)
            .min_connections(0)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
        if let Some(schema) = &options.pg_schema {
            opts.set_schema_search_path(schema.clone());
        }
        let db = Database::connect(opts).await?;
        Ok(Self { db })
    }

    /// Connects and applies every pending migration.
    pub async fn open(options: &StoreOptions) -> Result<Self, DbErr> {
        let store = Self::connect(options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations (idempotent; safe with many replicas on
    /// PostgreSQL, where migrations run in a transaction).
    pub async fn migrate(&self) -> Result<(), DbErr> {
        migration::Migrator::up(&self.db, None).await
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(self) -> Result<(), DbErr> {
        self.db.close().await
    }
}

impl Ping for Store {
    async fn ping(&self) -> RepoResult<()> {
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map(|_| ())
            .map_err(db_error)
    }
}
