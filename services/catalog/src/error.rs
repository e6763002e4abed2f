//! The catalog service's error type and its one exhaustive mapping to a gRPC status.

use backbone_common::db::DbError;
use tonic::Status;

/// Everything a catalog call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database failed; unreachable becomes UNAVAILABLE with RetryInfo, the rest INTERNAL.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<CatalogError> for Status {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Database(err) => Status::from(&err),
        }
    }
}
