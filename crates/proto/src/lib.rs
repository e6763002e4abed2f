//! Backbone's gRPC contracts: prost messages, tonic servers and clients generated from `proto/`,
//! and the encoded descriptor set that server reflection serves. Nothing here is hand-written
//! beyond these re-exports.

#![allow(
    missing_docs,
    clippy::all,
    missing_debug_implementations,
    reason = "generated code"
)]

/// The `FileDescriptorSet` of every Backbone proto file, encoded, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/backbone_descriptor.bin"));

pub mod backbone {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("backbone.common.v1");
        }
    }
    pub mod auth {
        pub mod v1 {
            tonic::include_proto!("backbone.auth.v1");
        }
    }
    pub mod catalog {
        pub mod v1 {
            tonic::include_proto!("backbone.catalog.v1");
        }
    }
    pub mod billing {
        pub mod v1 {
            tonic::include_proto!("backbone.billing.v1");
        }
    }
}

pub use backbone::{
    auth::v1 as auth, billing::v1 as billing, catalog::v1 as catalog, common::v1 as common,
};
