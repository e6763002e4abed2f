//! The catalog service's error type and its one exhaustive mapping to a gRPC status.

use backbone_common::{
    db::DbError,
    error::{self, FieldViolation},
};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::db::reservations::Short;

/// `ErrorInfo.domain` of the catalog service's business errors.
pub const ERROR_DOMAIN: &str = "catalog.backbone";

/// Everything a catalog call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The request is malformed; each violation names its field.
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    /// A page token from another query or edited.
    #[error("the page token does not belong to this query")]
    InvalidPageToken,
    /// Something named in the request does not exist or is not visible to the caller.
    #[error("{what} not found")]
    NotFound {
        /// "product", "category", "reservation".
        what: &'static str,
    },
    /// The caller may not see or do this.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// Another product has the SKU.
    #[error("a product with this SKU already exists")]
    SkuTaken,
    /// Another category has the slug.
    #[error("a category with this slug already exists")]
    SlugTaken,
    /// The caller's etag is stale.
    #[error("the resource was changed by someone else; read it again")]
    EtagMismatch {
        /// The etag it has now.
        current: String,
    },
    /// A category move would create a cycle.
    #[error("a category cannot be moved under itself or one of its descendants")]
    CategoryCycle,
    /// A category is in use by products.
    #[error("products use this category")]
    CategoryHasProducts,
    /// A category has children.
    #[error("this category has child categories")]
    CategoryHasChildren,
    /// An adjustment would leave on hand below reserved.
    #[error("on hand cannot drop below the {reserved} reserved units")]
    AdjustmentBelowReserved {
        /// Units reserved now.
        reserved: i64,
    },
    /// An idempotency key was used for a different request.
    #[error("this request_id was already used for a different request")]
    RequestIdConflict,
    /// Not enough available stock for some items.
    #[error("not enough stock for {} item(s)", .0.len())]
    InsufficientStock(Vec<Short>),
    /// Some items are unknown or not for sale.
    #[error("{} item(s) are not for sale", .0.iter().filter(|s| !s.for_sale).count())]
    ProductNotAvailable(Vec<Short>),
    /// The reservation id was used for a different request.
    #[error("this reservation_id was already used for a different request")]
    ReservationIdConflict,
    /// The reservation is not HELD (or expired) and cannot be committed.
    #[error("the reservation is {0} and can no longer be committed")]
    ReservationNotHeld(&'static str),
    /// The reservation was committed and cannot be released.
    #[error("the reservation was committed and cannot be released")]
    ReservationAlreadyCommitted,
    /// The database failed; unreachable becomes UNAVAILABLE with RetryInfo, the rest INTERNAL.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl CatalogError {
    /// INVALID_ARGUMENT for one field.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

fn reason(err: &CatalogError, code: Code, reason: &str) -> Status {
    error::business(ERROR_DOMAIN, code, reason, err.to_string(), [])
}

/// FAILED_PRECONDITION with `reason` and a PreconditionFailure listing each short item.
fn stock_failure(err: &CatalogError, reason: &str, short: &[Short]) -> Status {
    let mut details = ErrorDetails::with_error_info(
        reason,
        ERROR_DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    for item in short {
        let description = if item.for_sale {
            format!("requested {}, available {}", item.requested, item.available)
        } else {
            format!("requested {}, not for sale", item.requested)
        };
        details.add_precondition_failure_violation("STOCK", item.product_id.clone(), description);
    }
    Status::with_error_details(Code::FailedPrecondition, err.to_string(), details)
}

impl From<CatalogError> for Status {
    fn from(err: CatalogError) -> Self {
        match &err {
            CatalogError::InvalidArgument(violations) => error::invalid_argument(violations),
            CatalogError::InvalidPageToken => error::business(
                ERROR_DOMAIN,
                Code::InvalidArgument,
                "INVALID_PAGE_TOKEN",
                err.to_string(),
                [("field".to_owned(), "page_token".to_owned())],
            ),
            CatalogError::NotFound { .. } => reason(&err, Code::NotFound, "NOT_FOUND"),
            CatalogError::PermissionDenied(_) => {
                reason(&err, Code::PermissionDenied, "ROLE_REQUIRED")
            }
            CatalogError::SkuTaken => reason(&err, Code::AlreadyExists, "SKU_ALREADY_EXISTS"),
            CatalogError::SlugTaken => reason(&err, Code::AlreadyExists, "SLUG_ALREADY_EXISTS"),
            CatalogError::EtagMismatch { current } => error::business(
                ERROR_DOMAIN,
                Code::Aborted,
                "ETAG_MISMATCH",
                err.to_string(),
                [("current_etag".to_owned(), current.clone())],
            ),
            CatalogError::CategoryCycle => reason(&err, Code::InvalidArgument, "CATEGORY_CYCLE"),
            CatalogError::CategoryHasProducts => {
                reason(&err, Code::FailedPrecondition, "CATEGORY_HAS_PRODUCTS")
            }
            CatalogError::CategoryHasChildren => {
                reason(&err, Code::FailedPrecondition, "CATEGORY_HAS_CHILDREN")
            }
            CatalogError::AdjustmentBelowReserved { .. } => {
                reason(&err, Code::FailedPrecondition, "INSUFFICIENT_STOCK")
            }
            CatalogError::RequestIdConflict => {
                reason(&err, Code::FailedPrecondition, "REQUEST_ID_CONFLICT")
            }
            CatalogError::InsufficientStock(short) => {
                stock_failure(&err, "INSUFFICIENT_STOCK", short)
            }
            CatalogError::ProductNotAvailable(short) => {
                stock_failure(&err, "PRODUCT_NOT_AVAILABLE", short)
            }
            CatalogError::ReservationIdConflict => {
                reason(&err, Code::FailedPrecondition, "RESERVATION_ID_CONFLICT")
            }
            CatalogError::ReservationNotHeld(_) => {
                reason(&err, Code::FailedPrecondition, "RESERVATION_NOT_HELD")
            }
            CatalogError::ReservationAlreadyCommitted => reason(
                &err,
                Code::FailedPrecondition,
                "RESERVATION_ALREADY_COMMITTED",
            ),
            CatalogError::Database(db) => Status::from(db),
        }
    }
}

impl From<diesel::result::Error> for CatalogError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Database(err.into())
    }
}
