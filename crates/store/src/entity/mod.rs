//! sea-orm entities: the tables exactly as migrated.

pub mod import_deletion;
pub mod import_job;
pub mod service_key;
pub mod tenant;
pub mod user;
