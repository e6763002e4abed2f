//! The catalog service's storage: its Diesel schema, row types, and one function per unit of
//! work (a single statement or one transaction), written once for both backends with `db_run!`.

pub mod categories;
pub mod models;
pub mod products;
pub mod reservations;
pub mod schema;
pub mod stock;

use diesel::result::{DatabaseErrorKind, Error};

/// Why a transaction body stopped: an answer of ours that rolls the transaction back
/// (`Abort`), or the database's error.
#[derive(Debug)]
pub enum TxError<E> {
    /// Roll back and answer with this.
    Abort(E),
    /// The database failed.
    Diesel(Error),
}

impl<E> From<Error> for TxError<E> {
    fn from(err: Error) -> Self {
        TxError::Diesel(err)
    }
}

/// True if `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &Error) -> bool {
    matches!(
        err,
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}
