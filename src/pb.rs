//! Generated protobuf and gRPC code (`userdir.v1`) and its descriptor set.

#![allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

tonic::include_proto!("userdir.v1");

/// The encoded `FileDescriptorSet` of `proto/`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("userdir_descriptor");
