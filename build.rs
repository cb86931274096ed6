//! Compiles `proto/` with protox (pure Rust: no `protoc` needed) and generates
//! the tonic server and client code plus the descriptor set for reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "userdir/v1/api_keys.proto",
    "userdir/v1/tenants.proto",
    "userdir/v1/users.proto",
    "userdir/v1/import.proto",
    "userdir/v1/export.proto",
    "userdir/v1/user_directory.proto",
    "userdir/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("userdir_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
