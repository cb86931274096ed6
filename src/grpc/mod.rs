//! gRPC services: thin translators between protobuf and the domain.

pub mod api_keys;
mod convert;
pub mod ending;
pub mod events;
pub mod exports;
pub mod health;
pub mod imports;
pub mod status;
pub mod tenants;
pub mod users;

pub use status::to_status;

/// The caller of a request (see [`crate::auth`]), as the handler's error.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<std::sync::Arc<userdir_domain::access::Caller>, tonic::Status> {
    crate::auth::caller_of(request).map_err(to_status)
}
