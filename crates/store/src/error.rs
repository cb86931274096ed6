//! Database errors into domain errors.

use sea_orm::{DbErr, SqlErr};
use userdir_domain::{DomainError, ResourceKind};

/// Any database error that has no domain meaning: unavailable when the
/// database cannot be reached (retryable), otherwise a storage failure.
pub fn db_error(err: DbErr) -> DomainError {
    match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => DomainError::Unavailable(Box::new(err)),
        _ => DomainError::storage(err),
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
