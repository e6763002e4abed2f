//! Payment gateways: the interface a Stripe or PayPal adapter implements, and the built-in `test`
//! gateway. Every call carries an idempotency key, so any of them may be sent again safely.

pub mod test;

use futures::future::BoxFuture;

/// A charge to make.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// Idempotency key: billing's payment id. The same key never charges twice.
    pub idempotency_key: String,
    /// The payment method token from the provider's client side (never logged).
    pub method_token: String,
    /// ISO 4217 code.
    pub currency_code: String,
    /// Minor units.
    pub amount_minor: i64,
}

/// What became of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Authorized and captured.
    Succeeded {
        /// The gateway's id of the charge.
        gateway_payment_id: String,
    },
    /// Declined for good (`CARD_DECLINED`, ...); no money moved.
    Declined {
        /// Stable UPPER_SNAKE reason.
        reason: String,
    },
    /// The gateway failed to process it; no money moved.
    Failed {
        /// Stable UPPER_SNAKE reason.
        reason: String,
    },
}

/// A refund to make.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// Idempotency key: billing's refund id.
    pub idempotency_key: String,
    /// The charge's gateway id.
    pub gateway_payment_id: String,
    /// Minor units, in the charge's currency.
    pub amount_minor: i64,
}

/// What became of a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// Refunded.
    Succeeded {
        /// The gateway's id of the refund.
        gateway_refund_id: String,
    },
    /// Refused (more than remains, unknown charge).
    Refused {
        /// Stable UPPER_SNAKE reason.
        reason: String,
    },
}

/// The gateway could not say what happened: ask again later by the idempotency key.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No answer in time (the call may or may not have taken effect).
    #[error("the payment gateway did not answer in time")]
    Timeout,
    /// The gateway answered with an error or could not be reached.
    #[error("the payment gateway failed: {0}")]
    Unavailable(String),
}

/// A payment gateway. Implementations must make every call idempotent on its key.
pub trait PaymentGateway: Send + Sync + 'static {
    /// The configured name (`test`, `stripe`, ...), stored on payments.
    fn name(&self) -> &'static str;

    /// Authorizes and captures a charge.
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, Result<ChargeOutcome, GatewayError>>;

    /// What became of the charge sent with this idempotency key; `None` if it never arrived.
    fn lookup(
        &self,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<ChargeOutcome>, GatewayError>>;

    /// Refunds part or all of a charge.
    fn refund(&self, request: RefundRequest) -> BoxFuture<'_, Result<RefundOutcome, GatewayError>>;
}
