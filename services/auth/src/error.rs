//! The auth service's error type and its one exhaustive mapping to a gRPC status.

use backbone_common::db::DbError;
use tonic::Status;

/// Everything a auth call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The database failed; unreachable becomes UNAVAILABLE with RetryInfo, the rest INTERNAL.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Database(err) => Status::from(&err),
        }
    }
}
