//! Rows as stored. Billing's rows are close to its API, so they double as its domain records.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{
    cart_lines, credit_notes, events, idempotency_keys, invoices, ledger_entries, order_lines,
    orders, payments, refunds,
};

/// A `cart_lines` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = cart_lines)]
pub struct CartLineRow {
    pub customer_id: String,
    pub product_id: String,
    pub quantity: i64,
    pub added_at: NaiveDateTime,
}

/// An `idempotency_keys` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct IdempotencyRecord {
    pub caller_id: String,
    pub request_key: String,
    pub operation: String,
    pub fingerprint: String,
    pub state: String,
    pub order_id: Option<String>,
    pub status_code: Option<i32>,
    pub response: Option<Vec<u8>>,
    pub locked_until: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

/// An `orders` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = orders)]
pub struct OrderRow {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    pub status_reason: String,
    pub currency_code: String,
    pub total_minor: i64,
    pub refunded_minor: i64,
    pub stock_state: String,
    pub from_cart: bool,
    pub invoice_id: Option<String>,
    pub payment_id: Option<String>,
    pub locked_until: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// An `order_lines` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_lines)]
pub struct OrderLineRow {
    pub order_id: String,
    pub position: i32,
    pub product_id: String,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub amount_minor: i64,
}

/// An `invoices` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = invoices)]
pub struct InvoiceRow {
    pub id: String,
    pub number: String,
    pub order_id: String,
    pub customer_id: String,
    pub status: String,
    pub currency_code: String,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub refunded_minor: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A `payments` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payments)]
pub struct PaymentRow {
    pub id: String,
    pub order_id: String,
    pub status: String,
    pub currency_code: String,
    pub amount_minor: i64,
    pub refunded_minor: i64,
    pub gateway: String,
    pub gateway_payment_id: String,
    pub method_token: String,
    pub failure_reason: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A `refunds` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refunds)]
pub struct RefundRow {
    pub id: String,
    pub order_id: String,
    pub payment_id: String,
    pub status: String,
    pub currency_code: String,
    pub amount_minor: i64,
    pub reason: String,
    pub gateway_refund_id: String,
    pub locked_until: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A `credit_notes` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = credit_notes)]
pub struct CreditNoteRow {
    pub id: String,
    pub number: String,
    pub invoice_id: String,
    pub order_id: String,
    pub payment_id: String,
    pub refund_id: String,
    pub currency_code: String,
    pub amount_minor: i64,
    pub reason: String,
    pub gateway_refund_id: String,
    pub created_at: NaiveDateTime,
}

/// A `ledger_entries` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ledger_entries)]
pub struct LedgerEntryRow {
    pub id: String,
    pub transaction_id: String,
    pub account: String,
    pub customer_id: String,
    pub currency_code: String,
    pub amount_minor: i64,
    pub order_id: String,
    pub payment_id: String,
    pub credit_note_id: String,
    pub description: String,
    pub created_at: NaiveDateTime,
}

/// A numbered `events` row (only numbered events are read).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct EventRow {
    #[diesel(select_expression = events::sequence.assume_not_null())]
    pub sequence: i64,
    pub id: String,
    pub event_type: String,
    pub subject_id: String,
    pub payload: String,
    pub trace_id: String,
    pub created_at: NaiveDateTime,
}

/// An event as appended, before the numberer gives it a sequence.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = events)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    pub subject_id: String,
    pub payload: String,
    pub trace_id: String,
    pub created_at: NaiveDateTime,
}

/// An order with its lines.
#[derive(Debug, Clone)]
pub struct OrderRecord {
    /// The order.
    pub order: OrderRow,
    /// Its lines by position.
    pub lines: Vec<OrderLineRow>,
}

/// An invoice with its lines (the order's) and credit notes.
#[derive(Debug, Clone)]
pub struct InvoiceRecord {
    /// The invoice.
    pub invoice: InvoiceRow,
    /// The order's lines.
    pub lines: Vec<OrderLineRow>,
    /// Credit notes, oldest first.
    pub credit_notes: Vec<CreditNoteRow>,
}
