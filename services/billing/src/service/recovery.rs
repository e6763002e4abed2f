//! The recovery worker: settles what a crash, a gateway error or an outage left open. Safe in
//! several replicas at once: each order or refund is taken with a conditional lease update
//! first, every state change is guarded, and every call out is idempotent.
//! - PENDING orders whose lease ran out (checkout stopped before the charge): cancelled, stock
//!   released;
//! - PAYMENT_PENDING orders: the gateway is asked about the payment by its idempotency key (and
//!   the charge is sent again under the same key if it never arrived), then paid or failed;
//! - cancelled or failed orders whose stock may still be held: released;
//! - PENDING refunds: asked again and settled;
//! - idempotency keys past their retention: pruned;
//! - events appended since the last pass: numbered (see [`feed`](crate::db::feed)).

use std::time::Duration;

use backbone_common::metrics::WorkerMetrics;

use super::Billing;
use crate::{
    db::{
        plan::{InvoiceChange, OrderChange, Plan, Subject},
        reads,
    },
    domain::{self, InvoiceStatus, OrderStatus, reasons},
    error::BillingError,
    gateway::ChargeRequest,
};

/// Orders and refunds settled per pass.
const BATCH: i64 = 50;

/// How often idempotency keys past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Runs passes every `every` until the task is dropped.
pub async fn run(billing: Billing, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Keys are pruned at the first pass that can reach the database, then about once a minute.
    let mut next_prune = tokio::time::Instant::now();
    let metrics = WorkerMetrics::new("billing.recovery");
    loop {
        ticker.tick().await;
        let passed = billing.recover().await;
        metrics.pass(&passed);
        if let Err(err) = &passed {
            tracing::warn!(error = %err, "recovery pass failed; retrying next tick");
        }
        // Events appended since the last pass get their numbers even while nobody reads the feed.
        if let Err(err) = billing.number_events().await {
            tracing::warn!(error = %err, "numbering events failed; retrying next tick");
        }
        if passed.is_ok() && tokio::time::Instant::now() >= next_prune {
            match billing.prune_keys().await {
                Ok(pruned) => {
                    if pruned > 0 {
                        tracing::info!(pruned, "pruned idempotency keys");
                    }
                    next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
                }
                Err(err) => tracing::warn!(error = %err, "pruning idempotency keys failed"),
            }
        }
    }
}

impl Billing {
    /// One pass; returns how many orders and refunds it settled.
    pub async fn recover(&self) -> Result<usize, BillingError> {
        let now = domain::now();
        let mut conn = self.conn().await?;
        let orders = reads::unsettled_orders(&mut conn, now, BATCH).await?;
        let refunds = reads::unsettled_refunds(&mut conn, now, BATCH).await?;
        drop(conn);
        let until = domain::after(now, self.settings().lease);
        let mut settled = 0;
        for order in orders {
            let mut conn = self.conn().await?;
            if !reads::lease_order(&mut conn, &order.id, order.locked_until, until).await? {
                continue;
            }
            drop(conn);
            let result = match OrderStatus::parse(&order.status) {
                Some(OrderStatus::Pending) => {
                    self.abandon(&order.id, order.invoice_id.as_deref()).await
                }
                Some(OrderStatus::PaymentPending) => {
                    self.settle_pending(&order.id, order.payment_id.as_deref())
                        .await
                }
                _ => self.release_stock(None, &order.id).await,
            };
            match result {
                Ok(()) => settled += 1,
                Err(err) => {
                    tracing::warn!(order_id = order.id, error = %err, "order not settled yet")
                }
            }
        }
        for refund in refunds {
            let mut conn = self.conn().await?;
            if !reads::lease_refund(&mut conn, &refund.id, refund.locked_until, until).await? {
                continue;
            }
            drop(conn);
            match self.finish_refund(&refund).await {
                Ok(()) | Err(BillingError::RefundRefused(_)) => settled += 1,
                Err(err) => {
                    tracing::warn!(refund_id = refund.id, error = %err, "refund not settled yet")
                }
            }
        }
        Ok(settled)
    }

    /// A checkout that stopped before its charge: cancelled, and its stock released.
    async fn abandon(&self, order_id: &str, invoice_id: Option<&str>) -> Result<(), BillingError> {
        let mut plan = Plan {
            order: Some(OrderChange {
                order_id: order_id.to_owned(),
                from: vec![OrderStatus::Pending.as_str()],
                status: Some(OrderStatus::Cancelled.as_str()),
                status_reason: Some(reasons::CHECKOUT_ABANDONED.into()),
                ..Default::default()
            }),
            events: vec![("order.cancelled", Subject::Order(order_id.to_owned()))],
            ..self.plan()
        };
        if let Some(invoice_id) = invoice_id {
            plan.invoice = Some(InvoiceChange {
                id: invoice_id.to_owned(),
                status: Some(InvoiceStatus::Void.as_str()),
                ..Default::default()
            });
            plan.events
                .push(("invoice.voided", Subject::Invoice(invoice_id.to_owned())));
        }
        self.apply(plan)
            .await
            .or_else(super::checkout::ignore_conflict)?;
        self.release_stock(None, order_id).await
    }

    /// A charge whose outcome is unknown: ask the gateway, send it again under the same key if
    /// it never arrived, then settle.
    async fn settle_pending(
        &self,
        order_id: &str,
        payment_id: Option<&str>,
    ) -> Result<(), BillingError> {
        let Some(payment_id) = payment_id else {
            return Err(BillingError::Inconsistent(format!(
                "order {order_id} is PAYMENT_PENDING without a payment"
            )));
        };
        let gateway = &self.inner.gateway;
        let known =
            tokio::time::timeout(self.settings().gateway_timeout, gateway.lookup(payment_id))
                .await
                .map_err(|_| BillingError::GatewayUnavailable)?
                .map_err(|_| BillingError::GatewayUnavailable)?;
        let outcome = match known {
            Some(outcome) => outcome,
            None => {
                let mut conn = self.conn().await?;
                let payment = reads::payment(&mut conn, payment_id)
                    .await?
                    .ok_or(BillingError::NotFound { what: "payment" })?;
                drop(conn);
                self.charge(ChargeRequest {
                    idempotency_key: payment.id,
                    method_token: payment.method_token,
                    currency_code: payment.currency_code,
                    amount_minor: payment.amount_minor,
                })
                .await
                .map_err(|_| BillingError::GatewayUnavailable)?
            }
        };
        tracing::info!(order_id, ?outcome, "settling a pending payment");
        self.settle(None, order_id, outcome, None, None).await?;
        // Still pending (catalog away while committing): try again after the delay.
        let mut conn = self.conn().await?;
        let still = reads::order(&mut conn, order_id)
            .await?
            .is_some_and(|o| o.order.status == OrderStatus::PaymentPending.as_str());
        drop(conn);
        if still {
            self.apply(Plan {
                order: Some(OrderChange {
                    order_id: order_id.to_owned(),
                    locked_until: Some(domain::after(
                        domain::now(),
                        self.settings().recovery_delay,
                    )),
                    ..Default::default()
                }),
                ..self.plan()
            })
            .await?;
        }
        Ok(())
    }
}
