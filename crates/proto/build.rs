//! Compiles `proto/` with protox (pure Rust, so no system `protoc`) and feeds the resulting
//! descriptor set to tonic-prost-build; the same set is saved for server reflection.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;
    println!("cargo:rerun-if-changed={}", root.display());

    let mut files = Vec::new();
    collect_protos(&root, &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let encoded = descriptors.encode_to_vec();
    fs::write(out_dir.join("backbone_descriptor.bin"), &encoded)?;

    tonic_prost_build::configure()
        // Handlers land one issue at a time; the default stubs answer UNIMPLEMENTED meanwhile.
        .generate_default_stubs(true)
        // Well-known types with serde, as the messages' serde below needs: pbjson-types', but
        // for Timestamp, whose JSON is ours (see `timestamp.rs`).
        .compile_well_known_types(true)
        .extern_path(".google.protobuf.Timestamp", "crate::Timestamp")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;
    // serde for every message: canonical proto3 JSON (lowerCamelCase names, enums by name,
    // 64-bit integers as strings, RFC 3339 timestamps), generated code instead of reflection.
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .build(&[".backbone"])?;
    Ok(())
}

fn collect_protos(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
