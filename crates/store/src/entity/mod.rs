//! sea-orm entities: the tables exactly as migrated.

pub mod api_key;
pub mod event;
pub mod import_deletion;
pub mod import_job;
pub mod service_key;
pub mod tenant;
pub mod user;
