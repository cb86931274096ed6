//! userdir integration tests: one binary, every test against a real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod cli;
mod common;
mod config;
mod deploy;
mod events;
mod export;
mod import;
mod import_roles;
mod jobs;
mod key_rights;
mod keys;
mod limits;
mod list;
mod ops;
mod pg_tls;
mod promises;
mod roles;
mod rpc_matrix;
mod safety;
mod secrets;
mod telemetry;
mod tenants;
mod tls;
mod users;
mod workbook;
