//! Database errors into domain errors.

use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};
use userdir_domain::{DomainError, ResourceKind};

/// What a database error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The database cannot be reached (refused, lost or closed connections,
    /// no connection to be had): retryable once it is back.
    Unavailable,
    /// The disk (or the configured size limit) is full: retryable once
    /// space is freed.
    Full,
    /// Anything else.
    Other,
}

/// Classifies a database error by what the caller can do about it.
pub(crate) fn failure(err: &DbErr) -> Failure {
    let sqlx_error = match err {
        DbErr::ConnectionAcquire(_) => return Failure::Unavailable,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        DbErr::Conn(_) => return Failure::Unavailable,
        _ => return Failure::Other,
    };
    match &**sqlx_error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // SQLite: SQLITE_FULL (13) and its extended codes.
            Some(code) if code.parse::<i32>().is_ok_and(|c| c & 0xff == 13) => Failure::Full,
            // PostgreSQL: disk_full, out_of_memory.
            Some("53100" | "53200") => Failure::Full,
            // PostgreSQL: connection exceptions (class 08), the server
            // shutting down or starting (57P01..57P03), too many connections.
            Some(code) if code.starts_with("08") => Failure::Unavailable,
            Some("57P01" | "57P02" | "57P03" | "53300") => Failure::Unavailable,
            _ => Failure::Other,
        },
        _ => Failure::Other,
    }
}

/// Whether `err` says no connection could be had from a pool in time.
fn acquire_timed_out(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(&**e, sqlx::Error::PoolTimedOut)
        }
        _ => false,
    }
}

/// Whether every connection `pool` may open is open and in use: a request
/// that timed out waiting for one waited for other requests, not for a
/// database that does not answer (that one's connections fail and close,
/// so its pool is never full).
fn saturated(pool: &sea_orm::DatabaseConnection) -> bool {
    fn full<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> bool {
        pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0
    }
    match pool.get_database_backend() {
        sea_orm::DbBackend::Postgres => full(pool.get_postgres_connection_pool()),
        sea_orm::DbBackend::Sqlite => full(pool.get_sqlite_connection_pool()),
        _ => false,
    }
}

/// What a refused caller of a saturated server is told to wait.
const BUSY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl crate::Store {
    /// [`db_error`], except that a request which could not get a database
    /// connection in time because every one is busy with other requests is a
    /// saturated server (`Busy`: RESOURCE_EXHAUSTED, retry shortly), not an
    /// unavailable database.
    pub(crate) fn db_error(&self, err: DbErr) -> DomainError {
        if acquire_timed_out(&err) && (saturated(self.connection()) || saturated(self.writer())) {
            tracing::debug!(error = %err, "no database connection free in time");
            return DomainError::Busy {
                reason: "SERVER_BUSY",
                message: format!(
                    "the server is busy: no database connection became free within {} s; retry in a moment \
                     (long imports and exports hold connections; see --db-max-connections)",
                    self.acquire_timeout().as_secs()
                ),
                retry_after: BUSY_RETRY_AFTER,
            };
        }
        db_error(err)
    }
}

/// Any database error that has no domain meaning: unavailable when the
/// database cannot be reached, full when it has no room (both retryable),
/// otherwise a storage failure.
pub fn db_error(err: DbErr) -> DomainError {
    match failure(&err) {
        Failure::Unavailable => DomainError::Unavailable(Box::new(err)),
        Failure::Full => DomainError::StorageFull(Box::new(err)),
        Failure::Other => DomainError::storage(err),
    }
}

/// Maps a unique-constraint violation on `users` to `AlreadyExists`, naming
/// the field; other errors are storage failures.
pub(crate) fn user_write_error(err: DbErr, email: &str, external_id: Option<&str>) -> DomainError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(msg)) => {
            // PostgreSQL names the index (ux_users_external_id), SQLite the
            // columns (users.tenant_id, users.external_id).
            if msg.contains("external_id") {
                DomainError::AlreadyExists {
                    kind: ResourceKind::User,
                    field: "external_id",
                    value: external_id.unwrap_or_default().to_owned(),
                }
            } else {
                DomainError::AlreadyExists {
                    kind: ResourceKind::User,
                    field: "email",
                    value: email.to_owned(),
                }
            }
        }
        _ => db_error(err),
    }
}
