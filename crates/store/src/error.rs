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

/// The unique indexes of `users`, by name, with the columns SQLite names
/// when one is violated (PostgreSQL names the index itself).
const USER_UNIQUE_INDEXES: [(&str, &str); 4] = [
    ("ux_users_email_key", "users.tenant_id, users.email_key"),
    ("ux_users_external_id", "users.tenant_id, users.external_id"),
    ("ux_users_one_owner", "users.tenant_id"),
    ("users_pkey", "users.id"),
];

/// The unique index a write violated: `None` when the error is no unique
/// violation, `Some(None)` for one whose index is not known by name.
fn violated_index(err: &DbErr) -> Option<Option<&'static str>> {
    let Some(SqlErr::UniqueConstraintViolation(message)) = err.sql_err() else {
        return None;
    };
    let constraint = match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => match &**e {
            sqlx::Error::Database(db) => db.constraint().map(str::to_owned),
            _ => None,
        },
        _ => None,
    };
    let by_name = constraint.and_then(|c| USER_UNIQUE_INDEXES.iter().find(|(name, _)| *name == c));
    // SQLite: "UNIQUE constraint failed: users.tenant_id, users.email_key".
    let by_columns = || {
        let columns = message.rsplit_once("constraint failed: ").map(|(_, c)| c.trim())?;
        USER_UNIQUE_INDEXES.iter().find(|(_, cols)| *cols == columns)
    };
    Some(by_name.or_else(by_columns).map(|(name, _)| *name))
}

/// Maps a unique-constraint violation on `users` to what it means, by the
/// index violated (never by a guess from the message): `AlreadyExists` for
/// the email or external id, `Conflict` for a second owner; any other
/// violation, and any other error, is a storage failure.
pub(crate) fn user_write_error(err: DbErr, email: &str, external_id: Option<&str>) -> DomainError {
    match violated_index(&err) {
        None => db_error(err),
        Some(Some("ux_users_email_key")) => DomainError::AlreadyExists {
            kind: ResourceKind::User,
            field: "email",
            value: email.to_owned(),
        },
        Some(Some("ux_users_external_id")) => DomainError::AlreadyExists {
            kind: ResourceKind::User,
            field: "external_id",
            value: external_id.unwrap_or_default().to_owned(),
        },
        Some(Some("ux_users_one_owner")) => DomainError::Conflict {
            reason: "OWNER_EXISTS",
            message: "the tenant already has an owner: the role moves with TransferTenantOwnership".to_owned(),
        },
        Some(index) => DomainError::storage(format!(
            "a write to users broke the unique index {}: {err}",
            index.unwrap_or("(not known by name)")
        )),
    }
}
