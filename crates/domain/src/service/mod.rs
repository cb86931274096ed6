//! The domain's services: what each RPC calls, one file per resource, on
//! the one [`Directory`] (the facade, generic over the store). The types
//! and their rules live beside this folder, not in it.

pub mod directory;
pub mod events;
mod exports;
mod imports;
pub mod keys;
pub mod roles;
mod tenants;
mod users;

pub use directory::{Directory, Page};
