//! The userdir domain: types that validate once at construction, the rules of
//! the seeds, the list/filter language and the repository traits the store
//! implements. No database, gRPC or protobuf code lives here.

pub mod access;
pub mod acting;
pub mod admission;
pub mod apikey;
pub mod csvfmt;
pub mod directory;
pub mod email;
pub mod error;
pub mod export;
pub mod filter;
pub mod import;
pub mod keyring;
pub mod keys;
pub mod list;
pub mod page_token;
pub mod repo;
pub mod roles;
pub mod tenant;
pub mod tenant_role;
pub mod text;
pub mod user;

pub use directory::Directory;
pub use error::{DomainError, FieldViolation, ResourceKind};
