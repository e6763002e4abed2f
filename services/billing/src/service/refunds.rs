//! Refunds: a PENDING refund row is written (under the order's lease, so two refunds of one
//! order never race past the remainder) before the gateway is asked, keyed by the refund id; its
//! outcome then settles the refund, the credit note, the ledger and the order and invoice in
//! one transaction. A refund the gateway did not answer is finished by the worker or by a retry
//! with the same request_id.

use backbone_proto::{billing as pb, common::Money};
use sha2::{Digest as _, Sha256};

use super::{Billing, Caller, RequestKey, checkout::ignore_conflict};
use crate::{
    db::{
        models::{CreditNoteRow, LedgerEntryRow, RefundRow},
        plan::{InvoiceChange, OrderChange, PaymentChange, Plan, Subject},
        reads,
    },
    domain::{self, InvoiceStatus, LedgerAccount, OrderStatus, PaymentStatus, RefundStatus},
    error::BillingError,
    gateway::{RefundOutcome, RefundRequest},
    present,
};

/// The refund id of (caller, key): a retry with the same request_id finds the same refund.
fn refund_id(caller: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("refund\0{caller}\0{key}"));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("rf_{hex}")
}

impl Billing {
    /// Refunds all or part of an order's payment, at most once per key.
    pub async fn refund(
        &self,
        caller: &Caller,
        order_id: &str,
        amount: Option<Money>,
        reason: &str,
        key: RequestKey,
    ) -> Result<pb::RefundPaymentResponse, tonic::Status> {
        caller.admin()?;
        let mut violations = Vec::new();
        if order_id.is_empty() {
            violations.push(backbone_common::error::FieldViolation::new(
                "order_id",
                "is required",
            ));
        }
        if reason.chars().count() > 500 {
            violations.push(backbone_common::error::FieldViolation::new(
                "reason",
                "at most 500 characters",
            ));
        }
        let amount = match &amount {
            None => None,
            Some(money) => match backbone_common::money::check(Some(money), "amount") {
                Ok(a) if a.amount_minor > 0 => Some(a),
                Ok(_) => {
                    violations.push(backbone_common::error::FieldViolation::new(
                        "amount.amount_minor",
                        "must be greater than 0",
                    ));
                    None
                }
                Err(v) => {
                    violations.extend(v);
                    None
                }
            },
        };
        if !violations.is_empty() {
            return Err(BillingError::InvalidArgument(violations).into());
        }
        let id = refund_id(caller.id(), &key.key);
        self.keyed(caller, "refund", Some(key), |_| async move {
            let mut conn = self.conn().await?;
            let existing = reads::refund(&mut conn, &id).await?;
            drop(conn);
            let refund = match existing {
                Some(refund) => refund,
                None => {
                    self.start_refund(&id, order_id, amount.as_ref(), reason)
                        .await?
                }
            };
            self.finish_refund(&refund).await?;
            self.refund_answer(&id).await
        })
        .await
    }

    async fn start_refund(
        &self,
        id: &str,
        order_id: &str,
        amount: Option<&backbone_common::money::Amount>,
        reason: &str,
    ) -> Result<RefundRow, BillingError> {
        let mut conn = self.conn().await?;
        let record = reads::order(&mut conn, order_id)
            .await?
            .ok_or(BillingError::NotFound { what: "order" })?;
        let order = record.order;
        let status =
            OrderStatus::parse(&order.status).ok_or(BillingError::NotFound { what: "order" })?;
        if !status.refundable() {
            return Err(BillingError::OrderNotRefundable(status.as_str()));
        }
        let payment_id = order
            .payment_id
            .clone()
            .ok_or(BillingError::OrderNotRefundable(status.as_str()))?;
        let now = domain::now();
        let until = domain::after(now, self.settings().lease);
        // The order's lease serializes refunds of one order.
        if order.locked_until > now
            || !reads::lease_order(&mut conn, &order.id, order.locked_until, until).await?
        {
            return Err(BillingError::OrderBusy);
        }
        let remaining = order.total_minor
            - order.refunded_minor
            - reads::refunds_in_flight(&mut conn, &payment_id).await?;
        drop(conn);
        let amount_minor = match amount {
            Some(a) if a.currency_code != order.currency_code => {
                self.unlease(&order.id).await?;
                return Err(BillingError::field(
                    "amount.currency_code",
                    format!("must be the order's currency, {}", order.currency_code),
                ));
            }
            Some(a) => a.amount_minor,
            None => remaining,
        };
        if amount_minor > remaining || amount_minor <= 0 {
            self.unlease(&order.id).await?;
            return Err(BillingError::RefundExceedsRemaining {
                remaining_minor: remaining.max(0),
            });
        }
        let row = RefundRow {
            id: id.to_owned(),
            order_id: order.id.clone(),
            payment_id,
            status: RefundStatus::Pending.as_str().into(),
            currency_code: order.currency_code.clone(),
            amount_minor,
            reason: reason.to_owned(),
            gateway_refund_id: String::new(),
            locked_until: until,
            created_at: now,
            updated_at: now,
        };
        self.apply(Plan {
            order: Some(OrderChange {
                order_id: order.id.clone(),
                ..Default::default()
            }),
            new_refund: Some(row.clone()),
            ..self.plan()
        })
        .await?;
        Ok(row)
    }

    async fn unlease(&self, order_id: &str) -> Result<(), BillingError> {
        self.apply(Plan {
            order: Some(OrderChange {
                order_id: order_id.to_owned(),
                locked_until: Some(domain::now()),
                ..Default::default()
            }),
            ..self.plan()
        })
        .await
    }

    /// Asks the gateway for a PENDING refund and settles it; an already settled one is left.
    pub(super) async fn finish_refund(&self, refund: &RefundRow) -> Result<(), BillingError> {
        if refund.status != RefundStatus::Pending.as_str() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let payment = reads::payment(&mut conn, &refund.payment_id)
            .await?
            .ok_or(BillingError::NotFound { what: "payment" })?;
        let record = reads::order(&mut conn, &refund.order_id)
            .await?
            .ok_or(BillingError::NotFound { what: "order" })?;
        drop(conn);
        let outcome = self
            .inner
            .gateway
            .refund(RefundRequest {
                idempotency_key: refund.id.clone(),
                gateway_payment_id: payment.gateway_payment_id.clone(),
                amount_minor: refund.amount_minor,
            })
            .await
            .map_err(|err| {
                tracing::warn!(refund_id = refund.id, error = %err, "refund outcome unknown; retried later");
                BillingError::GatewayUnavailable
            })?;
        let order = &record.order;
        let now = domain::now();
        match outcome {
            RefundOutcome::Refused { reason } => {
                self.apply(Plan {
                    order: Some(OrderChange {
                        order_id: order.id.clone(),
                        locked_until: Some(now),
                        ..Default::default()
                    }),
                    refund: Some((
                        refund.id.clone(),
                        RefundStatus::Failed.as_str(),
                        String::new(),
                    )),
                    ..self.plan()
                })
                .await
                .or_else(ignore_conflict)?;
                Err(BillingError::RefundRefused(reason))
            }
            RefundOutcome::Succeeded { gateway_refund_id } => {
                let refunded = order.refunded_minor + refund.amount_minor;
                let whole = refunded >= order.total_minor;
                let (order_status, invoice_status, order_event, invoice_event) = if whole {
                    (
                        OrderStatus::Refunded,
                        InvoiceStatus::Refunded,
                        "order.refunded",
                        "invoice.refunded",
                    )
                } else {
                    (
                        OrderStatus::PartiallyRefunded,
                        InvoiceStatus::PartiallyRefunded,
                        "order.partially_refunded",
                        "invoice.partially_refunded",
                    )
                };
                let invoice_id = order.invoice_id.clone().unwrap_or_default();
                let note_id = domain::new_id();
                let transaction = domain::new_id();
                let entry = |account: LedgerAccount, amount: i64| LedgerEntryRow {
                    id: domain::new_id(),
                    transaction_id: transaction.clone(),
                    account: account.as_str().into(),
                    customer_id: String::new(),
                    currency_code: refund.currency_code.clone(),
                    amount_minor: amount,
                    order_id: order.id.clone(),
                    payment_id: payment.id.clone(),
                    credit_note_id: note_id.clone(),
                    description: format!("refund of order {}", order.id),
                    created_at: now,
                };
                self.apply(Plan {
                    order: Some(OrderChange {
                        order_id: order.id.clone(),
                        from: vec![
                            OrderStatus::Paid.as_str(),
                            OrderStatus::PartiallyRefunded.as_str(),
                        ],
                        status: Some(order_status.as_str()),
                        refunded_add: refund.amount_minor,
                        locked_until: Some(now),
                        ..Default::default()
                    }),
                    refund: Some((
                        refund.id.clone(),
                        RefundStatus::Succeeded.as_str(),
                        gateway_refund_id.clone(),
                    )),
                    payment: Some(PaymentChange {
                        id: payment.id.clone(),
                        from: PaymentStatus::Succeeded.as_str(),
                        refunded_add: refund.amount_minor,
                        ..Default::default()
                    }),
                    invoice: Some(InvoiceChange {
                        id: invoice_id.clone(),
                        status: Some(invoice_status.as_str()),
                        refunded_add: refund.amount_minor,
                        ..Default::default()
                    }),
                    new_credit_note: Some(CreditNoteRow {
                        id: note_id.clone(),
                        number: String::new(),
                        invoice_id: invoice_id.clone(),
                        order_id: order.id.clone(),
                        payment_id: payment.id.clone(),
                        refund_id: refund.id.clone(),
                        currency_code: refund.currency_code.clone(),
                        amount_minor: refund.amount_minor,
                        reason: refund.reason.clone(),
                        gateway_refund_id,
                        created_at: now,
                    }),
                    ledger: vec![
                        entry(LedgerAccount::Refunds, refund.amount_minor),
                        entry(LedgerAccount::GatewayClearing, -refund.amount_minor),
                    ],
                    events: vec![
                        ("credit_note.created", Subject::CreditNote(note_id)),
                        (invoice_event, Subject::Invoice(invoice_id)),
                        (order_event, Subject::Order(order.id.clone())),
                    ],
                    now: Some(now),
                    ..self.plan()
                })
                .await
                .or_else(ignore_conflict)
            }
        }
    }

    async fn refund_answer(
        &self,
        refund_id: &str,
    ) -> Result<pb::RefundPaymentResponse, BillingError> {
        let mut conn = self.conn().await?;
        let refund = reads::refund(&mut conn, refund_id)
            .await?
            .ok_or(BillingError::NotFound { what: "refund" })?;
        let order = reads::order(&mut conn, &refund.order_id)
            .await?
            .ok_or(BillingError::NotFound { what: "order" })?;
        let invoice = match &order.order.invoice_id {
            Some(id) => reads::invoice(&mut conn, id).await?,
            None => None,
        };
        let payment = reads::payment(&mut conn, &refund.payment_id).await?;
        let credit_note = invoice
            .as_ref()
            .and_then(|i| i.credit_notes.iter().find(|c| c.refund_id == refund.id))
            .map(present::credit_note);
        Ok(pb::RefundPaymentResponse {
            credit_note,
            order: Some(present::order(&order)),
            invoice: invoice.as_ref().map(present::invoice),
            payment: payment.as_ref().map(present::payment),
        })
    }
}
