//! The catalog service's storage: its Diesel schema, row types, and one function per unit of
//! work (a single statement or one transaction), written once for both backends with `db_run!`.

pub mod categories;
pub mod models;
pub mod products;
pub mod reservations;
pub mod schema;
pub mod stock;

pub use backbone_common::db::{TxError, is_unique_violation};
