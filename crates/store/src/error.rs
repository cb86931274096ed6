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
