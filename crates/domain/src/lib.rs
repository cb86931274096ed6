//! The userdir domain: types that validate once at construction, the rules of
//! the seeds, the list/filter language and the repository traits the store
//! implements. No database, gRPC or protobuf code lives here.

pub mod access;
pub mod acting;
pub mod admission;
pub mod apikey;
pub mod csvfmt;
pub mod email;
pub mod error;
pub mod event;
pub mod event_filter;
pub mod export;
pub mod feed;
pub mod filter;
pub mod import;
pub mod keyring;
pub mod list;
pub mod page_token;
pub mod repo;
pub mod service;
pub mod tenant;
pub mod tenant_role;
pub mod text;
pub mod user;

// The services' modules, at the paths callers know them by.
pub use error::{DomainError, FieldViolation, ResourceKind};
pub use service::Directory;
pub use service::{directory, keys, roles};
