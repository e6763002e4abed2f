//! Rows as the API shows them (the proto messages), and those messages as the canonical proto3
//! JSON that event payloads carry.

use backbone_proto::{billing as pb, common::Money, pbjson_types};
use chrono::NaiveDateTime;

use crate::{
    db::models::{
        CreditNoteRow, EventRow, InvoiceRecord, LedgerEntryRow, OrderLineRow, OrderRecord,
        PaymentRow,
    },
    domain::{InvoiceStatus, LedgerAccount, OrderStatus, PaymentStatus},
};

/// A timestamp of a stored time.
pub fn timestamp(at: NaiveDateTime) -> backbone_proto::Timestamp {
    let utc = at.and_utc();
    backbone_proto::Timestamp {
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
    let payload = serde_json::from_str::<pbjson_types::Struct>(&e.payload).ok();
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

/// `message` as canonical proto3 JSON (pbjson's generated serde code).
pub fn json<M: serde::Serialize>(message: &M) -> String {
    serde_json::to_string(message).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use prost_reflect::{DescriptorPool, DynamicMessage};

    use super::*;

    /// `message` rendered by reflection from the descriptors: the proto3 JSON mapping itself.
    fn by_reflection<M: prost::Message>(message: &M, name: &str) -> serde_json::Value {
        let pool = DescriptorPool::decode(backbone_proto::FILE_DESCRIPTOR_SET).expect("pool");
        let descriptor = pool.get_message_by_name(name).expect(name);
        let dynamic =
            DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).expect("decode");
        serde_json::to_value(&dynamic).expect("serialize")
    }

    fn at(seconds: i64, nanos: i32) -> Option<backbone_proto::Timestamp> {
        Some(backbone_proto::Timestamp { seconds, nanos })
    }

    fn line(n: i64) -> pb::LineItem {
        pb::LineItem {
            product_id: format!("prod-{n}"),
            sku: format!("SKU-\"{n}\"\u{e9}"),
            title: "T-shirt, red \u{2014} size M\n".into(),
            quantity: n,
            unit_price: Some(money("EUR", 1999)),
            amount: Some(money("EUR", 1999 * n)),
        }
    }

    #[test]
    fn payloads_are_the_proto3_json_mapping() {
        let order = pb::Order {
            id: "o1".into(),
            customer_id: "c1".into(),
            status: pb::OrderStatus::PartiallyRefunded as i32,
            status_reason: "CARD_DECLINED".into(),
            lines: vec![line(1), line(3)],
            total: Some(money("EUR", 7996)),
            refunded_amount: Some(money("EUR", 0)),
            invoice_id: "i1".into(),
            payment_id: String::new(),
            create_time: at(1_795_345_385, 0),
            update_time: at(1_795_345_385, 123_456_000),
        };
        let note = pb::CreditNote {
            id: "n1".into(),
            number: "CN-000001".into(),
            invoice_id: "i1".into(),
            order_id: "o1".into(),
            payment_id: "y1".into(),
            amount: Some(money("EUR", 500)),
            reason: "damaged".into(),
            gateway_refund_id: "re_1".into(),
            create_time: at(1_795_345_386, 1),
        };
        let invoice = pb::Invoice {
            id: "i1".into(),
            number: "INV-000001".into(),
            order_id: "o1".into(),
            customer_id: "c1".into(),
            status: pb::InvoiceStatus::Paid as i32,
            lines: vec![line(2)],
            subtotal: Some(money("EUR", 3998)),
            total: Some(money("EUR", 3998)),
            amount_paid: Some(money("EUR", 3998)),
            amount_refunded: Some(money("EUR", 500)),
            credit_notes: vec![note.clone()],
            create_time: at(0, 0),
            update_time: at(-1, 999_999_999),
        };
        let payment = pb::Payment {
            id: "y1".into(),
            order_id: "o1".into(),
            status: pb::PaymentStatus::Succeeded as i32,
            amount: Some(money("JPY", i64::MAX)),
            refunded_amount: None,
            gateway: "test".into(),
            gateway_payment_id: "ch_1".into(),
            failure_reason: String::new(),
            create_time: at(253_402_300_799, 0),
            update_time: None,
        };
        let cases = [
            (
                json(&order),
                by_reflection(&order, "backbone.billing.v1.Order"),
            ),
            (
                json(&invoice),
                by_reflection(&invoice, "backbone.billing.v1.Invoice"),
            ),
            (
                json(&payment),
                by_reflection(&payment, "backbone.billing.v1.Payment"),
            ),
            (
                json(&note),
                by_reflection(&note, "backbone.billing.v1.CreditNote"),
            ),
            (
                json(&pb::Order::default()),
                by_reflection(&pb::Order::default(), "backbone.billing.v1.Order"),
            ),
        ];
        for (text, reference) in cases {
            let value: serde_json::Value = serde_json::from_str(&text).expect("json");
            assert_eq!(value, reference, "{text}");
        }
        let value: serde_json::Value = serde_json::from_str(&json(&payment)).expect("json");
        assert_eq!(value["status"], "PAYMENT_STATUS_SUCCEEDED");
        assert_eq!(value["amount"]["amountMinor"], i64::MAX.to_string());
        assert_eq!(value["createTime"], "9999-12-31T23:59:59Z");
        assert!(
            value.get("failureReason").is_none(),
            "defaults are left out"
        );
    }

    #[test]
    fn a_stored_payload_comes_back_as_its_struct() {
        let row = EventRow {
            id: "e1".into(),
            sequence: 7,
            event_type: "payment.succeeded".into(),
            subject_id: "y1".into(),
            payload: json(&pb::Payment {
                id: "y1".into(),
                amount: Some(money("EUR", 1250)),
                ..Default::default()
            }),
            trace_id: String::new(),
            created_at: NaiveDateTime::default(),
        };
        let payload = event(&row).payload.expect("a struct");
        let kind = |v: &pbjson_types::Value| v.kind.clone();
        assert_eq!(
            kind(&payload.fields["id"]),
            Some(pbjson_types::value::Kind::StringValue("y1".into()))
        );
        let Some(pbjson_types::value::Kind::StructValue(amount)) = kind(&payload.fields["amount"])
        else {
            panic!("amount is an object: {payload:?}");
        };
        assert_eq!(
            kind(&amount.fields["amountMinor"]),
            Some(pbjson_types::value::Kind::StringValue("1250".into()))
        );
        // Not JSON (never written so): no payload rather than a failed call.
        let broken = EventRow {
            payload: "{".into(),
            ..row
        };
        assert!(event(&broken).payload.is_none());
    }
}
