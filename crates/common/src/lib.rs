//! The runtime kit every Backbone service shares: configuration, telemetry, server bootstrap,
//! error mapping, database access and the traced client channel.

pub mod app;
pub mod client;
pub mod config;
pub mod db;
pub mod error;
pub mod serve;
pub mod telemetry;
pub mod trace;

pub use backbone_proto as proto;
