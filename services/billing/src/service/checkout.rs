//! The checkout saga. Each step is persisted before the next, so whatever stops it (a crash, an
//! outage) leaves a state the recovery worker can finish:
//! 1. price snapshot from catalog; one currency per order;
//! 2. the order, PENDING (stock NONE: the reserve call's outcome is unknown until it answers);
//! 3. ReserveStock under the order id, then in one transaction: stock HELD, invoice OPEN,
//!    payment PENDING, order PAYMENT_PENDING;
//! 4. the charge at the gateway, keyed by the payment id;
//! 5. paid: commit the reservation, then order PAID, payment SUCCEEDED, invoice PAID, ledger,
//!    cart cleared, in one transaction; declined: order PAYMENT_FAILED and the reservation
//!    released; unknown (gateway error or timeout): left PAYMENT_PENDING for the worker.

use std::collections::HashSet;

use backbone_common::error::FieldViolation;
use backbone_proto::{billing as pb, catalog as catalog_pb};
use tonic_types::StatusExt as _;

use prost::Message as _;

use super::{Answer, Billing, Caller, RequestKey, Resume, trace_id};
use crate::{
    db::{
        carts,
        models::{InvoiceRow, LedgerEntryRow, OrderLineRow, OrderRecord, OrderRow, PaymentRow},
        plan::{
            self, Applied, InvoiceChange, KeyAnswer, NewOrder, OrderChange, PaymentChange, Plan,
            PlanError, Subject,
        },
        reads,
    },
    domain::{
        self, InvoiceStatus, LedgerAccount, MAX_QUANTITY, OrderStatus, PaymentStatus, StockState,
        reasons,
    },
    error::{BillingError, Unbuyable},
    gateway::{ChargeOutcome, ChargeRequest, GatewayError},
    peers::PeerError,
};

/// A checked Checkout request.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    /// Payment method token.
    pub method_token: String,
    /// Explicit items (product, quantity); empty: the cart.
    pub items: Vec<(String, i64)>,
}

impl CheckoutRequest {
    /// Checks the fields.
    pub fn new(method_token: String, items: &[pb::CheckoutItem]) -> Result<Self, BillingError> {
        let mut violations = Vec::new();
        if method_token.is_empty() || method_token.len() > 255 {
            violations.push(FieldViolation::new(
                "payment_method_token",
                "must be 1 to 255 characters",
            ));
        }
        if items.len() > 100 {
            violations.push(FieldViolation::new("items", "at most 100 items"));
        }
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if item.product_id.is_empty() {
                violations.push(FieldViolation::new(
                    format!("items[{i}].product_id"),
                    "is required",
                ));
            } else if !seen.insert(item.product_id.as_str()) {
                violations.push(FieldViolation::new(
                    format!("items[{i}].product_id"),
                    "appears twice",
                ));
            }
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                violations.push(FieldViolation::new(
                    format!("items[{i}].quantity"),
                    "must be 1 to 1000",
                ));
            }
        }
        if !violations.is_empty() {
            return Err(BillingError::InvalidArgument(violations));
        }
        Ok(Self {
            method_token,
            items: items
                .iter()
                .map(|i| (i.product_id.clone(), i.quantity))
                .collect(),
        })
    }
}

/// The short items of a catalog refusal, from its PreconditionFailure.
fn unbuyable(status: &tonic::Status) -> Vec<Unbuyable> {
    status
        .get_error_details()
        .precondition_failure()
        .map(|failure| {
            failure
                .violations
                .iter()
                .map(|v| Unbuyable {
                    product_id: v.subject.clone(),
                    description: v.description.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Billing {
    /// Checkout, at most once per key.
    pub async fn checkout(
        &self,
        caller: &Caller,
        request: CheckoutRequest,
        key: RequestKey,
    ) -> Result<pb::CheckoutResponse, tonic::Status> {
        let customer = caller.customer()?.to_owned();
        self.keyed(
            caller,
            "checkout",
            Some(key.clone()),
            |resume: Resume| async move {
                match resume.order_id {
                    // A first run under this key stopped after making its order: answer with where
                    // that order stands (the worker finishes it).
                    Some(order_id) => self.checkout_answer(&order_id).await.map(Answer::from),
                    None => self.run_checkout(caller, &customer, request, &key).await,
                }
            },
        )
        .await
    }

    async fn run_checkout(
        &self,
        caller: &Caller,
        customer: &str,
        request: CheckoutRequest,
        key: &RequestKey,
    ) -> Result<Answer<pb::CheckoutResponse>, BillingError> {
        let from_cart = request.items.is_empty();
        let items = if from_cart {
            let mut conn = self.conn().await?;
            carts::lines(&mut conn, customer)
                .await?
                .into_iter()
                .map(|l| (l.product_id, l.quantity))
                .collect()
        } else {
            request.items.clone()
        };
        if items.is_empty() {
            return Err(BillingError::CartEmpty);
        }
        // 1. Price snapshot.
        let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
        let found = self.inner.peers.products(caller.deadline, ids).await?;
        let mut not_for_sale: Vec<Unbuyable> = found
            .missing_product_ids
            .iter()
            .map(|id| Unbuyable {
                product_id: id.clone(),
                description: "unknown product".into(),
            })
            .collect();
        let mut lines = Vec::with_capacity(items.len());
        let mut currencies = HashSet::new();
        let order_id = domain::new_id();
        for (position, (product_id, quantity)) in items.iter().enumerate() {
            let Some(product) = found.products.iter().find(|p| &p.id == product_id) else {
                continue;
            };
            if product.status != catalog_pb::ProductStatus::Active as i32 {
                not_for_sale.push(Unbuyable {
                    product_id: product_id.clone(),
                    description: "not for sale".into(),
                });
                continue;
            }
            let price = product.price.clone().unwrap_or_default();
            currencies.insert(price.currency_code.clone());
            lines.push((
                price.currency_code,
                OrderLineRow {
                    order_id: order_id.clone(),
                    position: i32::try_from(position).unwrap_or(i32::MAX),
                    product_id: product_id.clone(),
                    sku: product.sku.clone(),
                    title: product.title.clone(),
                    quantity: *quantity,
                    unit_price_minor: price.amount_minor,
                    amount_minor: price.amount_minor.saturating_mul(*quantity),
                },
            ));
        }
        if !not_for_sale.is_empty() {
            return Err(BillingError::ItemsNotAvailable(not_for_sale));
        }
        if currencies.len() != 1 {
            return Err(BillingError::MixedCurrencies);
        }
        let currency = lines[0].0.clone();
        let lines: Vec<OrderLineRow> = lines.into_iter().map(|(_, l)| l).collect();
        let total: i64 = lines.iter().map(|l| l.amount_minor).sum();

        // 2. The order, before anything is held.
        let now = domain::now();
        let order = OrderRow {
            id: order_id.clone(),
            customer_id: customer.to_owned(),
            status: OrderStatus::Pending.as_str().into(),
            status_reason: String::new(),
            currency_code: currency.clone(),
            total_minor: total,
            refunded_minor: 0,
            stock_state: StockState::None.as_str().into(),
            from_cart,
            invoice_id: None,
            payment_id: None,
            locked_until: domain::after(now, self.settings().lease),
            created_at: now,
            updated_at: now,
        };
        self.apply(Plan {
            new_order: Some(NewOrder {
                order,
                lines: lines.clone(),
                key: Some((caller.id().to_owned(), key.key.clone())),
            }),
            events: vec![("order.created", Subject::Order(order_id.clone()))],
            ..self.plan()
        })
        .await?;

        // 3. Hold the stock; then invoice, payment and PAYMENT_PENDING together.
        let reservation_items = lines
            .iter()
            .map(|l| catalog_pb::ReservationItem {
                product_id: l.product_id.clone(),
                quantity: l.quantity,
            })
            .collect();
        let reserved = self
            .inner
            .peers
            .reserve(
                caller.deadline,
                &order_id,
                reservation_items,
                self.settings().reservation_ttl,
            )
            .await;
        match reserved {
            Ok(reservation) if reservation.state == catalog_pb::ReservationState::Held as i32 => {}
            Ok(_) => {
                self.cancel_unreserved(&order_id, reasons::INSUFFICIENT_STOCK)
                    .await?;
                return Err(BillingError::InsufficientStock(Vec::new()));
            }
            Err(err) => {
                if let Some(status) = err.refused_with("INSUFFICIENT_STOCK") {
                    let short = unbuyable(status);
                    self.cancel_unreserved(&order_id, reasons::INSUFFICIENT_STOCK)
                        .await?;
                    return Err(BillingError::InsufficientStock(short));
                }
                if let Some(status) = err.refused_with("PRODUCT_NOT_AVAILABLE") {
                    let short = unbuyable(status);
                    self.cancel_unreserved(&order_id, reasons::PRODUCT_NOT_AVAILABLE)
                        .await?;
                    return Err(BillingError::ItemsNotAvailable(short));
                }
                // Unknown outcome: the order is cancelled with its stock still NONE, so the
                // worker releases whatever catalog may hold under its id.
                self.apply(Plan {
                    order: Some(OrderChange {
                        order_id: order_id.clone(),
                        from: vec![OrderStatus::Pending.as_str()],
                        status: Some(OrderStatus::Cancelled.as_str()),
                        status_reason: Some(reasons::CATALOG_UNAVAILABLE.into()),
                        locked_until: Some(domain::now()),
                        ..Default::default()
                    }),
                    events: vec![("order.cancelled", Subject::Order(order_id.clone()))],
                    ..self.plan()
                })
                .await?;
                return Err(err.into());
            }
        }
        let invoice_id = domain::new_id();
        let payment_id = domain::new_id();
        let now = domain::now();
        let pending = self
            .apply_seen(Plan {
                order: Some(OrderChange {
                    order_id: order_id.clone(),
                    from: vec![OrderStatus::Pending.as_str()],
                    status: Some(OrderStatus::PaymentPending.as_str()),
                    stock_state: Some(StockState::Held.as_str()),
                    invoice_id: Some(invoice_id.clone()),
                    payment_id: Some(payment_id.clone()),
                    ..Default::default()
                }),
                new_invoice: Some(InvoiceRow {
                    id: invoice_id.clone(),
                    number: String::new(),
                    order_id: order_id.clone(),
                    customer_id: customer.to_owned(),
                    status: InvoiceStatus::Open.as_str().into(),
                    currency_code: currency.clone(),
                    total_minor: total,
                    paid_minor: 0,
                    refunded_minor: 0,
                    created_at: now,
                    updated_at: now,
                }),
                new_payment: Some(PaymentRow {
                    id: payment_id.clone(),
                    order_id: order_id.clone(),
                    status: PaymentStatus::Pending.as_str().into(),
                    currency_code: currency.clone(),
                    amount_minor: total,
                    refunded_minor: 0,
                    gateway: self.inner.gateway.name().into(),
                    gateway_payment_id: String::new(),
                    method_token: request.method_token.clone(),
                    failure_reason: String::new(),
                    created_at: now,
                    updated_at: now,
                }),
                lines: Some((order_id.clone(), lines.clone())),
                events: vec![
                    ("invoice.created", Subject::Invoice(invoice_id)),
                    ("payment.created", Subject::Payment(payment_id.clone())),
                    ("order.payment_pending", Subject::Order(order_id.clone())),
                ],
                ..self.plan()
            })
            .await?;

        // 4. Charge.
        let charged = self
            .charge(ChargeRequest {
                idempotency_key: payment_id,
                method_token: request.method_token,
                currency_code: currency,
                amount_minor: total,
            })
            .await;
        // 5. Settle, or leave it to the worker.
        let known = pending.order.map(|record| Known {
            record,
            invoice_number: pending.invoice.map(|i| i.invoice.number),
        });
        // Paid now: the paying transaction stores the answer under the key as well.
        let answer = KeyAnswer {
            caller_id: caller.id().to_owned(),
            request_key: key.key.clone(),
            respond: |applied| paid_answer(applied).map(|r| r.encode_to_vec()),
        };
        let settled = match charged {
            Ok(outcome) => {
                self.settle(caller.deadline, &order_id, outcome, known, Some(answer))
                    .await?
            }
            Err(err) => {
                tracing::warn!(order_id, error = %err, "charge outcome unknown; the recovery worker settles it");
                self.apply(Plan {
                    order: Some(OrderChange {
                        order_id: order_id.clone(),
                        from: vec![OrderStatus::PaymentPending.as_str()],
                        locked_until: Some(domain::after(
                            domain::now(),
                            self.settings().recovery_delay,
                        )),
                        ..Default::default()
                    }),
                    ..self.plan()
                })
                .await
                .or_else(ignore_conflict)?;
                Applied::default()
            }
        };
        // Paid just now: the answer is what that transaction left, with nothing to read back.
        if let Some(response) = paid_answer(&settled) {
            return Ok(Answer {
                response,
                stored: settled.answered,
            });
        }
        self.checkout_answer(&order_id).await.map(Answer::from)
    }

    /// A charge with the gateway's time limit.
    pub(super) async fn charge(
        &self,
        request: ChargeRequest,
    ) -> Result<ChargeOutcome, GatewayError> {
        match tokio::time::timeout(
            self.settings().gateway_timeout,
            self.inner.gateway.charge(request),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(GatewayError::Timeout),
        }
    }

    /// The checkout answer for an order as it stands: a declined order is CARD_DECLINED.
    pub(super) async fn checkout_answer(
        &self,
        order_id: &str,
    ) -> Result<pb::CheckoutResponse, BillingError> {
        let mut conn = self.conn().await?;
        let order = reads::order(&mut conn, order_id)
            .await?
            .ok_or(BillingError::NotFound { what: "order" })?;
        if order.order.status == OrderStatus::PaymentFailed.as_str()
            && order.order.status_reason == reasons::CARD_DECLINED
        {
            return Err(BillingError::CardDeclined {
                order_id: order_id.to_owned(),
            });
        }
        let invoice = match &order.order.invoice_id {
            Some(id) => reads::invoice(&mut conn, id).await?,
            None => None,
        };
        let payment = match &order.order.payment_id {
            Some(id) => reads::payment(&mut conn, id).await?,
            None => None,
        };
        Ok(pb::CheckoutResponse {
            order: Some(crate::present::order(&order)),
            invoice: invoice.as_ref().map(crate::present::invoice),
            payment: payment.as_ref().map(crate::present::payment),
        })
    }

    /// Cancels a PENDING order whose reservation catalog refused (nothing is held).
    async fn cancel_unreserved(&self, order_id: &str, reason: &str) -> Result<(), BillingError> {
        self.apply(Plan {
            order: Some(OrderChange {
                order_id: order_id.to_owned(),
                from: vec![OrderStatus::Pending.as_str()],
                status: Some(OrderStatus::Cancelled.as_str()),
                status_reason: Some(reason.to_owned()),
                stock_state: Some(StockState::Released.as_str()),
                locked_until: Some(domain::now()),
                ..Default::default()
            }),
            events: vec![("order.cancelled", Subject::Order(order_id.to_owned()))],
            ..self.plan()
        })
        .await
    }

    /// Settles a PAYMENT_PENDING order whose charge outcome is known; `known` is the order as
    /// this call last wrote it, if it did (else it is read). Returns what a payment that went
    /// through left (empty if nothing was paid now).
    pub(super) async fn settle(
        &self,
        deadline: Option<tokio::time::Instant>,
        order_id: &str,
        outcome: ChargeOutcome,
        known: Option<Known>,
        answer: Option<KeyAnswer>,
    ) -> Result<Applied, BillingError> {
        let known = match known {
            Some(known) => known,
            None => {
                let mut conn = self.conn().await?;
                let Some(record) = reads::order(&mut conn, order_id).await? else {
                    return Err(BillingError::NotFound { what: "order" });
                };
                Known {
                    record,
                    invoice_number: None,
                }
            }
        };
        let record = &known.record;
        if record.order.status != OrderStatus::PaymentPending.as_str() {
            return Ok(Applied::default());
        }
        match outcome {
            ChargeOutcome::Succeeded { gateway_payment_id } => {
                match self.inner.peers.commit(deadline, order_id).await {
                    Ok(()) => {
                        self.mark_paid(record, known.invoice_number, &gateway_payment_id, answer)
                            .await
                    }
                    Err(err) if err.refused_with("RESERVATION_NOT_HELD").is_some() => self
                        .refund_unheld(record, &gateway_payment_id)
                        .await
                        .map(|()| Applied::default()),
                    // Catalog is away: stay PAYMENT_PENDING; the worker commits later.
                    Err(err) => {
                        tracing::warn!(order_id, error = %err, "paid, stock not committed yet; the worker retries");
                        Ok(Applied::default())
                    }
                }
            }
            ChargeOutcome::Declined { reason } | ChargeOutcome::Failed { reason } => {
                self.mark_failed(record, &reason).await?;
                self.release_stock(deadline, order_id).await?;
                Ok(Applied::default())
            }
        }
    }

    async fn mark_paid(
        &self,
        record: &OrderRecord,
        invoice_number: Option<String>,
        gateway_payment_id: &str,
        answer: Option<KeyAnswer>,
    ) -> Result<Applied, BillingError> {
        let order = &record.order;
        let (Some(invoice_id), Some(payment_id)) = (&order.invoice_id, &order.payment_id) else {
            return Err(BillingError::Inconsistent(format!(
                "order {} has no invoice or payment",
                order.id
            )));
        };
        let number = match invoice_number {
            Some(number) => number,
            None => {
                let mut conn = self.conn().await?;
                reads::invoice_number(&mut conn, invoice_id)
                    .await?
                    .unwrap_or_default()
            }
        };
        let now = domain::now();
        let transaction = domain::new_id();
        let entry = |account: LedgerAccount, customer: &str, amount: i64| LedgerEntryRow {
            id: domain::new_id(),
            transaction_id: transaction.clone(),
            account: account.as_str().into(),
            customer_id: customer.to_owned(),
            currency_code: order.currency_code.clone(),
            amount_minor: amount,
            order_id: order.id.clone(),
            payment_id: payment_id.clone(),
            credit_note_id: String::new(),
            description: format!("charge {number}"),
            created_at: now,
        };
        let total = order.total_minor;
        // A zero total moves no money: no entries (they are never 0).
        let ledger = if total == 0 {
            Vec::new()
        } else {
            vec![
                entry(LedgerAccount::Customer, &order.customer_id, total),
                entry(LedgerAccount::Revenue, "", -total),
                entry(LedgerAccount::GatewayClearing, "", total),
                entry(LedgerAccount::Customer, &order.customer_id, -total),
            ]
        };
        self.apply_seen(Plan {
            order: Some(OrderChange {
                order_id: order.id.clone(),
                from: vec![OrderStatus::PaymentPending.as_str()],
                status: Some(OrderStatus::Paid.as_str()),
                stock_state: Some(StockState::Committed.as_str()),
                locked_until: Some(now),
                ..Default::default()
            }),
            payment: Some(PaymentChange {
                id: payment_id.clone(),
                from: PaymentStatus::Pending.as_str(),
                status: Some(PaymentStatus::Succeeded.as_str()),
                gateway_payment_id: Some(gateway_payment_id.to_owned()),
                ..Default::default()
            }),
            invoice: Some(InvoiceChange {
                id: invoice_id.clone(),
                status: Some(InvoiceStatus::Paid.as_str()),
                paid_minor: Some(total),
                ..Default::default()
            }),
            ledger,
            lines: Some((order.id.clone(), record.lines.clone())),
            answer,
            clear_cart: order.from_cart.then(|| {
                let bought = record
                    .lines
                    .iter()
                    .map(|l| (l.product_id.clone(), l.quantity));
                (order.customer_id.clone(), bought.collect())
            }),
            events: vec![
                ("payment.succeeded", Subject::Payment(payment_id.clone())),
                ("invoice.paid", Subject::Invoice(invoice_id.clone())),
                ("order.paid", Subject::Order(order.id.clone())),
            ],
            now: Some(now),
            ..self.plan()
        })
        .await
        .or_else(ignore_conflict)
    }

    async fn mark_failed(&self, record: &OrderRecord, reason: &str) -> Result<(), BillingError> {
        let order = &record.order;
        let mut plan = Plan {
            order: Some(OrderChange {
                order_id: order.id.clone(),
                from: vec![OrderStatus::PaymentPending.as_str()],
                status: Some(OrderStatus::PaymentFailed.as_str()),
                status_reason: Some(reason.to_owned()),
                locked_until: Some(domain::now()),
                ..Default::default()
            }),
            events: vec![("order.payment_failed", Subject::Order(order.id.clone()))],
            ..self.plan()
        };
        if let Some(payment_id) = &order.payment_id {
            plan.payment = Some(PaymentChange {
                id: payment_id.clone(),
                from: PaymentStatus::Pending.as_str(),
                status: Some(PaymentStatus::Failed.as_str()),
                failure_reason: Some(reason.to_owned()),
                ..Default::default()
            });
            plan.events
                .push(("payment.failed", Subject::Payment(payment_id.clone())));
        }
        if let Some(invoice_id) = &order.invoice_id {
            plan.invoice = Some(InvoiceChange {
                id: invoice_id.clone(),
                status: Some(InvoiceStatus::Void.as_str()),
                ..Default::default()
            });
            plan.events
                .push(("invoice.voided", Subject::Invoice(invoice_id.clone())));
        }
        self.apply(plan).await.or_else(ignore_conflict)
    }

    /// The charge succeeded but catalog no longer holds the stock (the reservation expired while
    /// billing was away): the charge is refunded in full and the order fails.
    async fn refund_unheld(
        &self,
        record: &OrderRecord,
        gateway_payment_id: &str,
    ) -> Result<(), BillingError> {
        let order = &record.order;
        let key = format!("{}-unheld", order.payment_id.clone().unwrap_or_default());
        let refund = self
            .inner
            .gateway
            .refund(crate::gateway::RefundRequest {
                idempotency_key: key,
                gateway_payment_id: gateway_payment_id.to_owned(),
                amount_minor: order.total_minor,
            })
            .await
            .map_err(|_| BillingError::GatewayUnavailable)?;
        tracing::warn!(
            order_id = order.id,
            ?refund,
            "stock reservation expired before the charge settled; charge refunded"
        );
        self.mark_failed(record, reasons::RESERVATION_EXPIRED)
            .await?;
        self.apply(Plan {
            order: Some(OrderChange {
                order_id: order.id.clone(),
                stock_state: Some(StockState::Released.as_str()),
                ..Default::default()
            }),
            ..self.plan()
        })
        .await
        .or_else(ignore_conflict)
    }

    /// Releases the order's reservation and records it; a catalog outage leaves it to the
    /// worker.
    pub(super) async fn release_stock(
        &self,
        deadline: Option<tokio::time::Instant>,
        order_id: &str,
    ) -> Result<(), BillingError> {
        match self.inner.peers.release(deadline, order_id).await {
            Ok(()) => self
                .apply(Plan {
                    order: Some(OrderChange {
                        order_id: order_id.to_owned(),
                        from: vec![
                            OrderStatus::PaymentFailed.as_str(),
                            OrderStatus::Cancelled.as_str(),
                        ],
                        stock_state: Some(StockState::Released.as_str()),
                        ..Default::default()
                    }),
                    ..self.plan()
                })
                .await
                .or_else(ignore_conflict),
            Err(PeerError::Unavailable { .. }) => {
                tracing::warn!(
                    order_id,
                    "stock not released yet (catalog unavailable); the worker retries"
                );
                Ok(())
            }
            Err(err) => {
                tracing::error!(order_id, error = %err, "catalog refused to release a reservation");
                Ok(())
            }
        }
    }

    /// An empty plan stamped with the current trace.
    pub(super) fn plan(&self) -> Plan {
        Plan {
            trace_id: trace_id(),
            ..Plan::default()
        }
    }

    /// Applies a plan.
    pub(super) async fn apply(&self, plan: Plan) -> Result<(), BillingError> {
        self.apply_seen(plan).await.map(drop)
    }

    /// Applies a plan; returns its events' subjects as it left them.
    pub(super) async fn apply_seen(&self, plan: Plan) -> Result<Applied, BillingError> {
        let mut conn = self.conn().await?;
        match plan::apply(&mut conn, &plan).await {
            Ok(applied) => Ok(applied),
            Err(PlanError::Conflict) => Err(BillingError::Conflict),
            Err(PlanError::Db(err)) => Err(err.into()),
        }
    }
}

/// The answer to a checkout that a transaction just paid, from what that transaction left.
fn paid_answer(applied: &Applied) -> Option<pb::CheckoutResponse> {
    let (Some(order), Some(invoice), Some(payment)) =
        (&applied.order, &applied.invoice, &applied.payment)
    else {
        return None;
    };
    (order.order.status == OrderStatus::Paid.as_str()).then(|| pb::CheckoutResponse {
        order: Some(crate::present::order(order)),
        invoice: Some(crate::present::invoice(invoice)),
        payment: Some(crate::present::payment(payment)),
    })
}

/// An order as this checkout last wrote it, with its invoice's number.
#[derive(Debug, Clone)]
pub(super) struct Known {
    record: OrderRecord,
    invoice_number: Option<String>,
}

/// Someone else already made the change: nothing to do.
pub(super) fn ignore_conflict<T: Default>(err: BillingError) -> Result<T, BillingError> {
    match err {
        BillingError::Conflict => Ok(T::default()),
        err => Err(err),
    }
}
