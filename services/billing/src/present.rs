//! Rows as the API shows them (the proto messages), and those messages as the canonical proto3
//! JSON that event payloads carry.

use std::sync::LazyLock;

use backbone_proto::{billing as pb, common::Money};
use chrono::NaiveDateTime;
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::{
    db::models::{
        CreditNoteRow, EventRow, InvoiceRecord, LedgerEntryRow, OrderLineRow, OrderRecord,
        PaymentRow,
    },
    domain::{InvoiceStatus, LedgerAccount, OrderStatus, PaymentStatus},
};

/// A timestamp of a stored time.
pub fn timestamp(at: NaiveDateTime) -> prost_types::Timestamp {
    let utc = at.and_utc();
    prost_types::Timestamp {
        seconds: utc.timestamp(),
        nanos: i32::try_from(utc.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Money of a stored amount.
pub fn money(currency_code: &str, amount_minor: i64) -> Money {
    Money {
        currency_code: currency_code.to_owned(),
        amount_minor,
    }
}

fn line(currency: &str, row: &OrderLineRow) -> pb::LineItem {
    pb::LineItem {
        product_id: row.product_id.clone(),
        sku: row.sku.clone(),
        title: row.title.clone(),
        quantity: row.quantity,
        unit_price: Some(money(currency, row.unit_price_minor)),
        amount: Some(money(currency, row.amount_minor)),
    }
}

/// The API's Order.
pub fn order(record: &OrderRecord) -> pb::Order {
    let o = &record.order;
    let status = match OrderStatus::parse(&o.status) {
        Some(OrderStatus::Pending) => pb::OrderStatus::Pending,
        Some(OrderStatus::PaymentPending) => pb::OrderStatus::PaymentPending,
        Some(OrderStatus::Paid) => pb::OrderStatus::Paid,
        Some(OrderStatus::PaymentFailed) => pb::OrderStatus::PaymentFailed,
        Some(OrderStatus::Cancelled) => pb::OrderStatus::Cancelled,
        Some(OrderStatus::PartiallyRefunded) => pb::OrderStatus::PartiallyRefunded,
        Some(OrderStatus::Refunded) => pb::OrderStatus::Refunded,
        None => pb::OrderStatus::Unspecified,
    };
    pb::Order {
        id: o.id.clone(),
        customer_id: o.customer_id.clone(),
        status: status as i32,
        status_reason: o.status_reason.clone(),
        lines: record
            .lines
            .iter()
            .map(|l| line(&o.currency_code, l))
            .collect(),
        total: Some(money(&o.currency_code, o.total_minor)),
        refunded_amount: Some(money(&o.currency_code, o.refunded_minor)),
        invoice_id: o.invoice_id.clone().unwrap_or_default(),
        payment_id: o.payment_id.clone().unwrap_or_default(),
        create_time: Some(timestamp(o.created_at)),
        update_time: Some(timestamp(o.updated_at)),
    }
}

/// The API's Payment.
pub fn payment(p: &PaymentRow) -> pb::Payment {
    let status = match PaymentStatus::parse(&p.status) {
        Some(PaymentStatus::Pending) => pb::PaymentStatus::Pending,
        Some(PaymentStatus::Succeeded) => pb::PaymentStatus::Succeeded,
        Some(PaymentStatus::Failed) => pb::PaymentStatus::Failed,
        None => pb::PaymentStatus::Unspecified,
    };
    pb::Payment {
        id: p.id.clone(),
        order_id: p.order_id.clone(),
        status: status as i32,
        amount: Some(money(&p.currency_code, p.amount_minor)),
        refunded_amount: Some(money(&p.currency_code, p.refunded_minor)),
        gateway: p.gateway.clone(),
        gateway_payment_id: p.gateway_payment_id.clone(),
        failure_reason: p.failure_reason.clone(),
        create_time: Some(timestamp(p.created_at)),
        update_time: Some(timestamp(p.updated_at)),
    }
}

/// The API's CreditNote.
pub fn credit_note(c: &CreditNoteRow) -> pb::CreditNote {
    pb::CreditNote {
        id: c.id.clone(),
        number: c.number.clone(),
        invoice_id: c.invoice_id.clone(),
        order_id: c.order_id.clone(),
        payment_id: c.payment_id.clone(),
        amount: Some(money(&c.currency_code, c.amount_minor)),
        reason: c.reason.clone(),
        gateway_refund_id: c.gateway_refund_id.clone(),
        create_time: Some(timestamp(c.created_at)),
    }
}

/// The API's Invoice.
pub fn invoice(record: &InvoiceRecord) -> pb::Invoice {
    let i = &record.invoice;
    let status = match InvoiceStatus::parse(&i.status) {
        Some(InvoiceStatus::Open) => pb::InvoiceStatus::Open,
        Some(InvoiceStatus::Paid) => pb::InvoiceStatus::Paid,
        Some(InvoiceStatus::PartiallyRefunded) => pb::InvoiceStatus::PartiallyRefunded,
        Some(InvoiceStatus::Refunded) => pb::InvoiceStatus::Refunded,
        Some(InvoiceStatus::Void) => pb::InvoiceStatus::Void,
        None => pb::InvoiceStatus::Unspecified,
    };
    pb::Invoice {
        id: i.id.clone(),
        number: i.number.clone(),
        order_id: i.order_id.clone(),
        customer_id: i.customer_id.clone(),
        status: status as i32,
        lines: record
            .lines
            .iter()
            .map(|l| line(&i.currency_code, l))
            .collect(),
        subtotal: Some(money(&i.currency_code, i.total_minor)),
        total: Some(money(&i.currency_code, i.total_minor)),
        amount_paid: Some(money(&i.currency_code, i.paid_minor)),
        amount_refunded: Some(money(&i.currency_code, i.refunded_minor)),
        credit_notes: record.credit_notes.iter().map(credit_note).collect(),
        create_time: Some(timestamp(i.created_at)),
        update_time: Some(timestamp(i.updated_at)),
    }
}

/// The API's ledger account of a stored name.
pub fn account(name: &str) -> pb::LedgerAccount {
    match LedgerAccount::parse(name) {
        Some(LedgerAccount::Customer) => pb::LedgerAccount::Customer,
        Some(LedgerAccount::GatewayClearing) => pb::LedgerAccount::GatewayClearing,
        Some(LedgerAccount::Revenue) => pb::LedgerAccount::Revenue,
        Some(LedgerAccount::Refunds) => pb::LedgerAccount::Refunds,
        None => pb::LedgerAccount::Unspecified,
    }
}

/// The API's LedgerEntry.
pub fn ledger_entry(e: &LedgerEntryRow) -> pb::LedgerEntry {
    pb::LedgerEntry {
        id: e.id.clone(),
        transaction_id: e.transaction_id.clone(),
        account: account(&e.account) as i32,
        customer_id: e.customer_id.clone(),
        amount: Some(money(&e.currency_code, e.amount_minor)),
        order_id: e.order_id.clone(),
        payment_id: e.payment_id.clone(),
        credit_note_id: e.credit_note_id.clone(),
        description: e.description.clone(),
        create_time: Some(timestamp(e.created_at)),
    }
}

/// The API's Event (its JSON payload as a Struct).
pub fn event(e: &EventRow) -> pb::Event {
    let payload = serde_json::from_str::<serde_json::Value>(&e.payload)
        .ok()
        .and_then(|v| match json_to_value(v).kind {
            Some(prost_types::value::Kind::StructValue(s)) => Some(s),
            _ => None,
        });
    pb::Event {
        id: e.id.clone(),
        sequence: e.sequence,
        r#type: e.event_type.clone(),
        subject_id: e.subject_id.clone(),
        payload,
        create_time: Some(timestamp(e.created_at)),
        trace_id: e.trace_id.clone(),
    }
}

fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(prost_types::Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

static POOL: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(backbone_proto::FILE_DESCRIPTOR_SET).ok());

/// A message events carry, with its proto name.
pub trait EventSubject: prost::Message {
    /// Fully qualified proto name.
    const FULL_NAME: &'static str;
}

impl EventSubject for pb::Order {
    const FULL_NAME: &'static str = "backbone.billing.v1.Order";
}
impl EventSubject for pb::Invoice {
    const FULL_NAME: &'static str = "backbone.billing.v1.Invoice";
}
impl EventSubject for pb::Payment {
    const FULL_NAME: &'static str = "backbone.billing.v1.Payment";
}
impl EventSubject for pb::CreditNote {
    const FULL_NAME: &'static str = "backbone.billing.v1.CreditNote";
}

/// `message` as canonical proto3 JSON.
pub fn json<M: EventSubject>(message: &M) -> String {
    POOL.as_ref()
        .and_then(|pool| pool.get_message_by_name(M::FULL_NAME))
        .and_then(|descriptor| {
            DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).ok()
        })
        .and_then(|dynamic| serde_json::to_string(&dynamic).ok())
        .unwrap_or_else(|| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_canonical_proto_json() {
        let text = json(&pb::Payment {
            id: "p1".into(),
            status: pb::PaymentStatus::Succeeded as i32,
            amount: Some(money("EUR", 1250)),
            ..Default::default()
        });
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["id"], "p1");
        assert_eq!(value["status"], "PAYMENT_STATUS_SUCCEEDED");
        assert_eq!(value["amount"]["amountMinor"], "1250");
        assert_eq!(value["amount"]["currencyCode"], "EUR");
    }
}
