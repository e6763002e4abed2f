//! The billing service's error type and its one exhaustive mapping to a gRPC status.

use backbone_common::db::DbError;
use tonic::Status;

/// Everything a billing call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The database failed; unreachable becomes UNAVAILABLE with RetryInfo, the rest INTERNAL.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<BillingError> for Status {
    fn from(err: BillingError) -> Self {
        match err {
            BillingError::Database(err) => Status::from(&err),
        }
    }
}
