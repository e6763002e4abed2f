//! `make bench`: a bare tonic echo server as the baseline, the same echo through the kit, and
//! the orchestrator that starts the services, drives load (h2load for unary reads, Rust drivers
//! for login and checkout, pgbench as the database's own yardstick) and prints the report.

/// The echo contract, generated.
#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod echo {
    tonic::include_proto!("backbone.bench.v1");
}

/// The echo contract's encoded `FileDescriptorSet`, for the kit's reflection and metrics.
pub const ECHO_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/echo_descriptor.bin"));

/// gRPC's length-prefixed framing of one uncompressed message: what h2load posts.
pub fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}
