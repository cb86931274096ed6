//! gRPC services: thin translators between protobuf and the domain.

mod convert;
pub mod ending;
pub mod exports;
pub mod health;
pub mod imports;
pub mod status;
pub mod tenants;
pub mod users;

pub use status::to_status;
