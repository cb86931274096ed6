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
        DomainError::Unavailable(_) | DomainError::ShuttingDown => Code::Unavailable,
        DomainError::StorageFull(_) | DomainError::Exhausted { .. } | DomainError::Busy { .. } => {
            Code::ResourceExhausted
        }
        DomainError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        DomainError::OutOfRange { .. } => Code::OutOfRange,
        DomainError::Storage(_) => Code::Internal,
        DomainError::Unauthenticated { .. } => Code::Unauthenticated,
        DomainError::PermissionDenied { .. } => Code::PermissionDenied,
    };
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::new();
    match &err {
        DomainError::Unavailable(source) => tracing::warn!(error = %source, "database unavailable"),
        DomainError::StorageFull(source) => tracing::error!(error = %source, "database full"),
        DomainError::Storage(source) => tracing::error!(error = %source, "storage failure"),
        _ => {}
    }
    let message = err.public_message();
    match &err {
        DomainError::Invalid(violations) => {
            for v in violations {
                details.add_bad_request_violation(cap(&v.field, QUOTE_MAX), cap(&v.description, QUOTE_MAX * 2));
            }
        }
        DomainError::NotFound { kind, name } => {
            details.set_resource_info(kind.to_string(), cap(name, QUOTE_MAX), "", "not found");
        }
        DomainError::AlreadyExists { field, value, .. } => {
            metadata.insert("field".to_owned(), (*field).to_owned());
            metadata.insert("value".to_owned(), cap(value, QUOTE_MAX));
        }
        DomainError::SeatLimitExceeded { limit, .. } => {
            metadata.insert("seat_limit".to_owned(), limit.to_string());
        }
        DomainError::Busy { retry_after, .. } => {
            details.set_retry_info(Some(*retry_after));
        }
        DomainError::PermissionDenied { permission, .. } => {
            metadata.insert("permission".to_owned(), (*permission).to_owned());
        }
        _ => {}
    }
    for (key, value) in extra {
        metadata.insert((*key).to_owned(), cap(value, QUOTE_MAX));
    }
    details.set_error_info(err.reason(), ERROR_DOMAIN, metadata);
    let message = cap(&message, MESSAGE_MAX);
    Status::with_error_details(code, format!("{message}{context}"), details)
}

/// Longest message a status carries, in characters: whatever a request
/// quoted into it (a tenant id, a header of a file), the status fits in the
/// HTTP/2 headers it travels in.
const MESSAGE_MAX: usize = 1024;
/// Longest single value quoted in the details.
const QUOTE_MAX: usize = 256;

/// `text`, cut to `max` characters with an ellipsis that says how much was left out.
fn cap(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} more characters)", &text[..end], text[end..].chars().count()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tonic::Code;
    use tonic_types::StatusExt as _;
    use userdir_domain::DomainError;

    #[test]
    fn callers_refused_get_their_codes_and_the_missing_permission() {
        let status = super::to_status(DomainError::PermissionDenied {
            reason: "MISSING_PERMISSION",
            permission: "users.delete",
            message: "the caller may not users.delete in tenants/acme".into(),
        });
        assert_eq!(status.code(), Code::PermissionDenied);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "MISSING_PERMISSION");
        assert_eq!(
            info.metadata.get("permission").map(String::as_str),
            Some("users.delete")
        );
        let status = super::to_status(DomainError::Unauthenticated {
            message: "no credential".into(),
        });
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.get_details_error_info().unwrap().reason, "UNAUTHENTICATED");
    }
}
