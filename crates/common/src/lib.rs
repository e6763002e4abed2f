//! The runtime kit every Backbone service shares: configuration, telemetry, server bootstrap,
//! error mapping, database access, paging, token verification and the traced client channel.

pub mod app;
pub mod auth;
pub mod balance;
pub mod client;

pub mod config;
pub mod db;
pub mod deadline;
pub mod encoded;
pub mod error;
pub mod keyset;
pub mod limit;
pub mod metrics;
pub mod money;
pub mod page;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use backbone_proto as proto;
