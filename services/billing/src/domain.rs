//! Billing's states and the rules between them, independent of storage and transport.

use chrono::NaiveDateTime;

/// Now, in UTC, truncated to microseconds (what both backends store).
pub fn now() -> NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::microseconds(1)).unwrap_or(now)
}

/// `base` plus `by`.
pub fn after(base: NaiveDateTime, by: std::time::Duration) -> NaiveDateTime {
    base + chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::MAX)
}

/// A new UUIDv7 id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

macro_rules! states {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The name stored in the database and written in events.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Parses a stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

states! {
    /// Status of an order (see the proto for the lifecycle).
    OrderStatus {
        /// Created; stock being reserved, invoice being issued.
        Pending = "PENDING",
        /// The charge was sent; outcome not settled.
        PaymentPending = "PAYMENT_PENDING",
        /// Paid, stock committed.
        Paid = "PAID",
        /// Declined or failed for good; reservation released.
        PaymentFailed = "PAYMENT_FAILED",
        /// Cancelled before payment.
        Cancelled = "CANCELLED",
        /// Paid, partly refunded.
        PartiallyRefunded = "PARTIALLY_REFUNDED",
        /// Paid, wholly refunded.
        Refunded = "REFUNDED",
    }
}

states! {
    /// Where the order's catalog reservation stands.
    StockState {
        /// Not reserved yet (or the reserve call's outcome is unknown).
        None = "NONE",
        /// Held in catalog.
        Held = "HELD",
        /// Sold.
        Committed = "COMMITTED",
        /// Given back (or never taken).
        Released = "RELEASED",
    }
}

states! {
    /// Status of a payment.
    PaymentStatus {
        /// Charge about to be sent or outcome unknown.
        Pending = "PENDING",
        /// Captured.
        Succeeded = "SUCCEEDED",
        /// No money moved.
        Failed = "FAILED",
    }
}

states! {
    /// Status of an invoice.
    InvoiceStatus {
        /// Issued, awaiting payment.
        Open = "OPEN",
        /// Paid.
        Paid = "PAID",
        /// Partly refunded.
        PartiallyRefunded = "PARTIALLY_REFUNDED",
        /// Wholly refunded.
        Refunded = "REFUNDED",
        /// Cancelled without payment.
        Void = "VOID",
    }
}

states! {
    /// Status of a refund.
    RefundStatus {
        /// Written before the gateway is asked.
        Pending = "PENDING",
        /// Refunded; a credit note exists.
        Succeeded = "SUCCEEDED",
        /// The gateway refused it.
        Failed = "FAILED",
    }
}

states! {
    /// Ledger accounts.
    LedgerAccount {
        /// What customers owe, per customer.
        Customer = "CUSTOMER",
        /// Held by the gateway for us.
        GatewayClearing = "GATEWAY_CLEARING",
        /// Income.
        Revenue = "REVENUE",
        /// Given back.
        Refunds = "REFUNDS",
    }
}

impl OrderStatus {
    /// Cancellable by CancelOrder.
    pub fn cancellable(self) -> bool {
        matches!(self, OrderStatus::Pending | OrderStatus::PaymentFailed)
    }

    /// Refundable by RefundPayment.
    pub fn refundable(self) -> bool {
        matches!(self, OrderStatus::Paid | OrderStatus::PartiallyRefunded)
    }
}

/// Stable reasons written to `status_reason` and `failure_reason`.
pub mod reasons {
    /// The gateway declined the card.
    pub const CARD_DECLINED: &str = "CARD_DECLINED";
    /// The gateway failed to process the charge; no money moved.
    pub const PAYMENT_PROCESSING_ERROR: &str = "PAYMENT_PROCESSING_ERROR";
    /// Not enough stock at checkout.
    pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
    /// A product stopped being for sale between the snapshot and the reservation.
    pub const PRODUCT_NOT_AVAILABLE: &str = "PRODUCT_NOT_AVAILABLE";
    /// The catalog could not be reached while reserving stock.
    pub const CATALOG_UNAVAILABLE: &str = "CATALOG_UNAVAILABLE";
    /// Checkout stopped (a crash) before the charge; the recovery worker cancelled it.
    pub const CHECKOUT_ABANDONED: &str = "CHECKOUT_ABANDONED";
    /// The stock reservation had expired when the charge succeeded; the charge was refunded.
    pub const RESERVATION_EXPIRED: &str = "RESERVATION_EXPIRED";
    /// Cancelled by the customer.
    pub const CANCELLED_BY_CUSTOMER: &str = "CANCELLED_BY_CUSTOMER";
    /// Cancelled by an admin.
    pub const CANCELLED_BY_ADMIN: &str = "CANCELLED_BY_ADMIN";
}

/// Most lines in a cart, and most units in one line.
pub const MAX_CART_LINES: usize = 100;
/// Most units of one product in a cart line or checkout item.
pub const MAX_QUANTITY: i64 = 1_000;

/// `INV-000042`, `CN-000007`.
pub fn document_number(prefix: &str, n: i64) -> String {
    format!("{prefix}-{n:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in [
            OrderStatus::Pending,
            OrderStatus::PaymentPending,
            OrderStatus::Paid,
            OrderStatus::PaymentFailed,
            OrderStatus::Cancelled,
            OrderStatus::PartiallyRefunded,
            OrderStatus::Refunded,
        ] {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("paid"), None);
    }

    #[test]
    fn numbers_are_zero_padded_and_sort() {
        assert_eq!(document_number("INV", 42), "INV-000042");
        assert!(document_number("INV", 9) < document_number("INV", 10));
    }
}
