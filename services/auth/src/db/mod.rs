//! The auth service's storage: its Diesel schema, row types, and one function per unit of work
//! (each a single statement or one transaction), written once for both backends with `db_run!`.

pub mod audit;
pub mod keys;
pub mod models;
pub mod recovery;
pub mod schema;
pub mod service_accounts;
pub mod sessions;
pub mod throttle;
pub mod users;

use diesel::result::{DatabaseErrorKind, Error};

/// True if `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &Error) -> bool {
    matches!(
        err,
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}
