//! userdir: a multi-tenant user directory service spoken to over gRPC.
//!
//! The server crate: generated protobuf code ([`pb`]), thin gRPC translators
//! ([`grpc`]), the server assembly ([`server`]), configuration and telemetry.

pub mod auth;
pub mod certmap;
pub mod cli;
pub mod client;
pub mod config;
pub mod deadline;
pub mod grpc;
pub mod pb;
pub mod peer;
pub mod server;
pub mod telemetry;
pub mod tls;
