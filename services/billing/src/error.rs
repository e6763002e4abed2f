//! The billing service's error type and its one exhaustive mapping to a gRPC status.

use std::time::Duration;

use backbone_common::{
    db::DbError,
    error::{self, FieldViolation},
};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::peers::PeerError;

/// `ErrorInfo.domain` of the billing service's business errors.
pub const ERROR_DOMAIN: &str = "billing.backbone";

/// One product that could not be bought, as catalog described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbuyable {
    /// The product.
    pub product_id: String,
    /// What is wrong (`requested 3, available 1`).
    pub description: String,
}

/// Everything a billing call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The request is malformed; each violation names its field.
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    /// A page token from another query or edited.
    #[error("the page token does not belong to this query")]
    InvalidPageToken,
    /// Absent, or another customer's.
    #[error("{what} not found")]
    NotFound {
        /// "order", "invoice", "product", "cart line".
        what: &'static str,
    },
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The idempotency key was used for a different request.
    #[error("this idempotency key was used for a different request; use a new key")]
    IdempotencyKeyReused,
    /// The first request with this key is still running.
    #[error("a request with this idempotency key is still running; retry later")]
    IdempotencyKeyInUse,
    /// The product is not ACTIVE.
    #[error("product {0} is not for sale")]
    ProductNotAvailable(String),
    /// Too many lines or units.
    #[error("a cart holds at most 100 lines of at most 1,000 units each")]
    CartLimitExceeded,
    /// Nothing to buy.
    #[error("the cart is empty")]
    CartEmpty,
    /// Lines priced in several currencies.
    #[error("an order is paid in one currency; the items are priced in several")]
    MixedCurrencies,
    /// Catalog could not hold the stock.
    #[error("not enough stock for every item; nothing was reserved or charged")]
    InsufficientStock(Vec<Unbuyable>),
    /// Some items are not for sale (at reservation time).
    #[error("some items are not for sale; nothing was reserved or charged")]
    ItemsNotAvailable(Vec<Unbuyable>),
    /// The gateway declined the charge.
    #[error("the card was declined; the order was not paid")]
    CardDeclined {
        /// The PAYMENT_FAILED order.
        order_id: String,
    },
    /// CancelOrder on an order past the point of cancelling.
    #[error("an order in status {0} cannot be cancelled")]
    OrderNotCancellable(&'static str),
    /// RefundPayment on an order that is not paid.
    #[error("an order in status {0} cannot be refunded")]
    OrderNotRefundable(&'static str),
    /// RefundPayment above what remains.
    #[error("the refund exceeds the unrefunded remainder of {remaining_minor} minor units")]
    RefundExceedsRemaining {
        /// What can still be refunded.
        remaining_minor: i64,
    },
    /// The order moved concurrently (another request or the recovery worker got there first).
    #[error("the order changed concurrently; read it again")]
    Conflict,
    /// Another refund of the order is running.
    #[error("another refund of this order is running; retry shortly")]
    OrderBusy,
    /// The gateway refused the refund.
    #[error("the payment gateway refused the refund ({0})")]
    RefundRefused(String),
    /// The gateway could not be reached; the same request may be sent again.
    #[error("the payment gateway is unavailable; retry with the same request_id")]
    GatewayUnavailable,
    /// Catalog or auth could not be reached; nothing was charged.
    #[error("the {0} service is unavailable; nothing was charged, retry later")]
    PeerUnavailable(&'static str),
    /// A peer answered something billing cannot act on (logged; INTERNAL).
    #[error("unexpected answer from a peer service: {0}")]
    Peer(String),
    /// Billing's own rows contradict each other (a bug or a hand edit; logged; INTERNAL).
    #[error("billing's records are inconsistent: {0}")]
    Inconsistent(String),
    /// The database failed; unreachable becomes UNAVAILABLE with RetryInfo, the rest INTERNAL.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl BillingError {
    /// A single field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        BillingError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// True if the answer may be stored under an idempotency key: everything but "try again"
    /// answers, which must let the same key run again.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            BillingError::IdempotencyKeyInUse
                | BillingError::Conflict
                | BillingError::OrderBusy
                | BillingError::PeerUnavailable(_)
                | BillingError::GatewayUnavailable
                | BillingError::Peer(_)
                | BillingError::Inconsistent(_)
                | BillingError::Database(_)
        )
    }
}

impl From<PeerError> for BillingError {
    fn from(err: PeerError) -> Self {
        match err {
            PeerError::Unavailable { peer } => BillingError::PeerUnavailable(peer),
            PeerError::Refused { .. } => BillingError::Peer(err.to_string()),
        }
    }
}

fn reason(err: &BillingError, code: Code, reason: &str) -> Status {
    error::business(ERROR_DOMAIN, code, reason, err.to_string(), [])
}

fn unbuyable(err: &BillingError, reason: &str, items: &[Unbuyable]) -> Status {
    let mut details = ErrorDetails::with_error_info(
        reason,
        ERROR_DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    for item in items {
        details.add_precondition_failure_violation(
            "STOCK",
            item.product_id.clone(),
            item.description.clone(),
        );
    }
    Status::with_error_details(Code::FailedPrecondition, err.to_string(), details)
}

impl From<BillingError> for Status {
    fn from(err: BillingError) -> Self {
        match &err {
            BillingError::InvalidArgument(violations) => error::invalid_argument(violations),
            BillingError::InvalidPageToken => error::business(
                ERROR_DOMAIN,
                Code::InvalidArgument,
                "INVALID_PAGE_TOKEN",
                err.to_string(),
                [("field".to_owned(), "page_token".to_owned())],
            ),
            BillingError::NotFound { .. } => reason(&err, Code::NotFound, "NOT_FOUND"),
            BillingError::PermissionDenied(_) => {
                reason(&err, Code::PermissionDenied, "PERMISSION_DENIED")
            }
            BillingError::IdempotencyKeyReused => {
                reason(&err, Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED")
            }
            BillingError::IdempotencyKeyInUse => {
                reason(&err, Code::Aborted, "IDEMPOTENCY_KEY_IN_USE")
            }
            BillingError::ProductNotAvailable(_) => {
                reason(&err, Code::FailedPrecondition, "PRODUCT_NOT_AVAILABLE")
            }
            BillingError::CartLimitExceeded => {
                reason(&err, Code::FailedPrecondition, "CART_LIMIT_EXCEEDED")
            }
            BillingError::CartEmpty => reason(&err, Code::FailedPrecondition, "CART_EMPTY"),
            BillingError::MixedCurrencies => {
                reason(&err, Code::FailedPrecondition, "MIXED_CURRENCIES")
            }
            BillingError::InsufficientStock(items) => unbuyable(&err, "INSUFFICIENT_STOCK", items),
            BillingError::ItemsNotAvailable(items) => {
                unbuyable(&err, "PRODUCT_NOT_AVAILABLE", items)
            }
            BillingError::CardDeclined { order_id } => error::business(
                ERROR_DOMAIN,
                Code::FailedPrecondition,
                "CARD_DECLINED",
                err.to_string(),
                [("order_id".to_owned(), order_id.clone())],
            ),
            BillingError::OrderNotCancellable(_) => {
                reason(&err, Code::FailedPrecondition, "ORDER_NOT_CANCELLABLE")
            }
            BillingError::OrderNotRefundable(_) => {
                reason(&err, Code::FailedPrecondition, "ORDER_NOT_REFUNDABLE")
            }
            BillingError::RefundExceedsRemaining { remaining_minor } => error::business(
                ERROR_DOMAIN,
                Code::FailedPrecondition,
                "REFUND_EXCEEDS_REMAINING",
                err.to_string(),
                [("remaining_minor".to_owned(), remaining_minor.to_string())],
            ),
            BillingError::Conflict => reason(&err, Code::Aborted, "CONCURRENT_UPDATE"),
            BillingError::OrderBusy => reason(&err, Code::Aborted, "ORDER_BUSY"),
            BillingError::RefundRefused(_) => {
                reason(&err, Code::FailedPrecondition, "REFUND_REFUSED")
            }
            BillingError::GatewayUnavailable => error::retryable(
                ERROR_DOMAIN,
                Code::Unavailable,
                "GATEWAY_UNAVAILABLE",
                err.to_string(),
                Duration::from_secs(2),
            ),
            BillingError::PeerUnavailable(peer) => error::retryable(
                ERROR_DOMAIN,
                Code::Unavailable,
                if *peer == crate::peers::AUTH {
                    "AUTH_UNAVAILABLE"
                } else {
                    "CATALOG_UNAVAILABLE"
                },
                err.to_string(),
                Duration::from_secs(1),
            ),
            BillingError::Peer(_) | BillingError::Inconsistent(_) => error::internal(&err),
            BillingError::Database(err) => Status::from(err),
        }
    }
}
