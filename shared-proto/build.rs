//! Compiles `proto/retich/events/v1/*.proto` into Rust with a pure-Rust protobuf compiler
//! (`protox`), so building needs no system `protoc`.

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
const EVENTS_DIR: &str = "proto/retich/events/v1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let mut files: Vec<PathBuf> = std::fs::read_dir(EVENTS_DIR)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    // Sorted so that the generated code does not depend on directory order.
    files.sort();

    let descriptors = protox::compile(&files, [PROTO_ROOT])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
