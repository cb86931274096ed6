//! The one error type of the domain, mapped to gRPC statuses once, in the server.

use std::fmt;

/// A field that failed validation, named as in the API (`email`,
/// `custom_attributes.custom_03`), with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Source error of a storage failure, kept for the log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in a directory operation.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request is malformed; one violation per bad field.
    #[error("invalid request: {}", join(.0))]
    Invalid(Vec<FieldViolation>),
    /// The named resource does not exist (or lives in another tenant).
    #[error("{kind} {name} not found")]
    NotFound { kind: ResourceKind, name: String },
    /// A unique field already belongs to another resource.
    #[error("{kind} with {field} {value:?} already exists")]
    AlreadyExists {
        kind: ResourceKind,
        field: &'static str,
        value: String,
    },
    /// The caller's etag is stale: someone changed the resource in between.
    #[error("{kind} {name} was changed by someone else (etag mismatch); read it again and retry")]
    EtagMismatch { kind: ResourceKind, name: String },
    /// The tenant has no free seat left.
    #[error("tenant {tenant} has no free seat (seat limit {limit})")]
    SeatLimitExceeded { tenant: String, limit: u32 },
    /// The operation conflicts with another one in progress (retry later).
    #[error("{message}")]
    Conflict { reason: &'static str, message: String },
    /// The system is not in the state the operation needs; the caller must
    /// change something first.
    #[error("{message}")]
    Precondition { reason: &'static str, message: String },
    /// The request names a position that is no longer there (a change-feed
    /// cursor older than the retention): start again from a new one.
    #[error("{message}")]
    OutOfRange { reason: &'static str, message: String },
    /// The request is larger or more than the server takes (a message over
    /// the size limit); retry with smaller pieces.
    #[error("{message}")]
    Exhausted { reason: &'static str, message: String },
    /// The server runs as much of this as it may at once (streams over
    /// their cap, no database connection free in time); retry after
    /// `retry_after`.
    #[error("{message}")]
    Busy {
        reason: &'static str,
        message: String,
        retry_after: std::time::Duration,
    },
    /// The caller's deadline (`grpc-timeout`) passed before the work was done.
    #[error("{message}")]
    DeadlineExceeded { message: String },
    /// The server is shutting down and its grace period is over; retry on
    /// another replica or once it is back.
    #[error("the server is shutting down; retry on another replica or once it is back")]
    ShuttingDown,
    /// No credential, or one that is not valid (UNAUTHENTICATED).
    #[error("{message}")]
    Unauthenticated { message: String },
    /// The caller may see the tenant but lacks `permission` (PERMISSION_DENIED
    /// `MISSING_PERMISSION`, the permission in the error's metadata).
    #[error("{message}")]
    PermissionDenied {
        /// `MISSING_PERMISSION`, or `KEY_ESCALATION` for a key that would
        /// hold more than its maker.
        reason: &'static str,
        permission: &'static str,
        message: String,
    },
    /// The database cannot be reached right now; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The database has no room for the write (disk full, or the configured
    /// size limit); nothing of the write was stored. Retryable once space is freed.
    #[error("the database is full: {0}")]
    StorageFull(#[source] BoxError),
    /// The database failed in a way the caller cannot fix.
    #[error("storage failure: {0}")]
    Storage(#[source] BoxError),
}

/// The kinds of resources errors talk about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Tenant,
    User,
    ImportJob,
    ApiKey,
    AuditEvent,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tenant => "tenant",
            Self::User => "user",
            Self::ImportJob => "import job",
            Self::ApiKey => "API key",
            Self::AuditEvent => "audit event",
        })
    }
}

impl DomainError {
    /// What a caller, a job record or a row result may be told: the
    /// database's own text (which can name hosts, tables or SQL) stays in
    /// the logs; everything else is its message.
    pub fn public_message(&self) -> String {
        match self {
            Self::Unavailable(_) => "the database is unavailable; retry later".to_owned(),
            Self::StorageFull(_) => "the database has no room left (disk full); nothing of this write was stored. \
                                     Retry once space is freed"
                .to_owned(),
            Self::Storage(_) => "internal storage error; it has been logged".to_owned(),
            other => other.to_string(),
        }
    }

    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }

    /// Wraps a storage error, keeping it as the source.
    pub fn storage(err: impl Into<BoxError>) -> Self {
        Self::Storage(err.into())
    }

    /// A stable, machine-readable reason (`USER_NOT_FOUND`), for `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "INVALID_ARGUMENT",
            Self::NotFound {
                kind: ResourceKind::Tenant,
                ..
            } => "TENANT_NOT_FOUND",
            Self::NotFound {
                kind: ResourceKind::User,
                ..
            } => "USER_NOT_FOUND",
            Self::NotFound {
                kind: ResourceKind::ImportJob,
                ..
            } => "IMPORT_JOB_NOT_FOUND",
            Self::NotFound {
                kind: ResourceKind::ApiKey,
                ..
            } => "API_KEY_NOT_FOUND",
            Self::NotFound {
                kind: ResourceKind::AuditEvent,
                ..
            } => "AUDIT_EVENT_NOT_FOUND",
            Self::AlreadyExists { field: "email", .. } => "EMAIL_ALREADY_EXISTS",
            Self::AlreadyExists {
                field: "external_id", ..
            } => "EXTERNAL_ID_ALREADY_EXISTS",
            Self::AlreadyExists { .. } => "ALREADY_EXISTS",
            Self::EtagMismatch { .. } => "ETAG_MISMATCH",
            Self::SeatLimitExceeded { .. } => "SEAT_LIMIT_EXCEEDED",
            Self::Conflict { reason, .. }
            | Self::Precondition { reason, .. }
            | Self::Exhausted { reason, .. }
            | Self::OutOfRange { reason, .. }
            | Self::Busy { reason, .. } => reason,
            Self::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            Self::Unavailable(_) => "DATABASE_UNAVAILABLE",
            Self::StorageFull(_) => "STORAGE_FULL",
            Self::ShuttingDown => "SERVER_SHUTTING_DOWN",
            Self::Unauthenticated { .. } => "UNAUTHENTICATED",
            Self::PermissionDenied { reason, .. } => reason,
            Self::Storage(_) => "STORAGE_FAILURE",
        }
    }
}

fn join(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects violations while checking many fields, so one response names them all.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the error of `result` (if any) and returns its value.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        result.map_err(|v| self.0.push(v)).ok()
    }

    /// `Ok(value)` when nothing was recorded, otherwise `DomainError::Invalid`.
    pub fn finish<T>(self, value: T) -> Result<T, DomainError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(DomainError::Invalid(self.0))
        }
    }
}
