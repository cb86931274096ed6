//! `DomainError` -> `tonic::Status`, in one place: canonical codes, an
//! `ErrorInfo` with a stable reason, `BadRequest` field violations.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use userdir_domain::DomainError;

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "userdir";

/// Maps a domain error to a status; storage failures are logged with their
/// source and reported without internals.
pub fn to_status(err: DomainError) -> Status {
    to_status_with(err, "", &[])
}

/// [`to_status`], with `context` appended to the message and `extra` entries
/// in the `ErrorInfo` metadata (an import's job name and committed rows).
pub fn to_status_with(err: DomainError, context: &str, extra: &[(&str, String)]) -> Status {
    let code = match &err {
        DomainError::Invalid(_) => Code::InvalidArgument,
        DomainError::NotFound { .. } => Code::NotFound,
        DomainError::AlreadyExists { .. } => Code::AlreadyExists,
        DomainError::EtagMismatch { .. } => Code::Aborted,
        DomainError::SeatLimitExceeded { .. } | DomainError::Precondition { .. } => Code::FailedPrecondition,
        DomainError::Conflict { .. } => Code::Aborted,
        DomainError::Unavailable(_) => Code::Unavailable,
        DomainError::StorageFull(_) | DomainError::Exhausted { .. } => Code::ResourceExhausted,
        DomainError::Storage(_) => Code::Internal,
    };
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::new();
    let message = match &err {
        DomainError::Unavailable(source) => {
            tracing::warn!(error = %source, "database unavailable");
            "the database is unavailable; retry later".to_owned()
        }
        DomainError::StorageFull(source) => {
            tracing::error!(error = %source, "database full");
            "the database has no room left (disk full); nothing of this write was stored. \
             Retry once space is freed"
                .to_owned()
        }
        DomainError::Storage(source) => {
            tracing::error!(error = %source, "storage failure");
            "internal storage error; it has been logged".to_owned()
        }
        other => other.to_string(),
    };
    match &err {
        DomainError::Invalid(violations) => {
            for v in violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
        }
        DomainError::NotFound { kind, name } => {
            details.set_resource_info(kind.to_string(), name.clone(), "", "not found");
        }
        DomainError::AlreadyExists { field, value, .. } => {
            metadata.insert("field".to_owned(), (*field).to_owned());
            metadata.insert("value".to_owned(), value.clone());
        }
        DomainError::SeatLimitExceeded { limit, .. } => {
            metadata.insert("seat_limit".to_owned(), limit.to_string());
        }
        _ => {}
    }
    for (key, value) in extra {
        metadata.insert((*key).to_owned(), value.clone());
    }
    details.set_error_info(err.reason(), ERROR_DOMAIN, metadata);
    Status::with_error_details(code, format!("{message}{context}"), details)
}
