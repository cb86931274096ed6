//! sea-orm entities: the tables exactly as migrated.

pub mod tenant;
pub mod user;
