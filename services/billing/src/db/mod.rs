//! The billing service's storage: its Diesel schema and, as handlers land, its queries.

pub mod schema;
