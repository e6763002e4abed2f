//! Compiles the benchmark's echo contract (kept out of `proto/`: it is no product API).

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile([root.join("echo.proto")], [&root])?;
    // Served by reflection, and names the echo's method in the kit's metrics and spans.
    fs::write(
        PathBuf::from(env::var("OUT_DIR")?).join("echo_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
