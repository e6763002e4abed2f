//! Orders and invoices: reads (customers see their own; others' look NOT_FOUND), lists, and
//! cancelling an unpaid order.

use backbone_common::page;
use backbone_proto::billing as pb;

use super::{Billing, Caller, RequestKey, page_cursor, page_size};
use crate::{
    db::{
        models::OrderRecord,
        plan::{InvoiceChange, OrderChange, Plan, Subject},
        reads::{self, ListFilter},
    },
    domain::{InvoiceStatus, OrderStatus, reasons},
    error::BillingError,
    present,
};

/// A list request of orders or invoices.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Page size.
    pub page_size: i32,
    /// Page token.
    pub page_token: String,
    /// Status filter (stored name).
    pub status: Option<&'static str>,
    /// Customer filter.
    pub customer_id: String,
}

impl Billing {
    /// The filter, page query and size of a list of `kind` the caller may read: customers only
    /// their own; admins all, or one customer's.
    fn list_filter(
        &self,
        caller: &Caller,
        kind: &str,
        request: &ListRequest,
    ) -> Result<(ListFilter, String, i64), BillingError> {
        let customer = if caller.is_admin() {
            (!request.customer_id.is_empty()).then(|| request.customer_id.clone())
        } else {
            let me = caller.customer()?;
            if !request.customer_id.is_empty() && request.customer_id != me {
                return Err(BillingError::PermissionDenied(
                    "customers list only their own orders and invoices",
                ));
            }
            Some(me.to_owned())
        };
        let size = page_size(request.page_size)?;
        let query = format!(
            "{kind}|{}|{}",
            request.status.unwrap_or(""),
            customer.as_deref().unwrap_or("")
        );
        let filter = ListFilter {
            status: request.status.map(str::to_owned),
            customer_id: customer,
            before: page_cursor(&query, &request.page_token)?,
            limit: size + 1,
        };
        Ok((filter, query, size))
    }

    /// One order with its lines, if the caller may see it (another customer's is NOT_FOUND).
    async fn visible_order(&self, caller: &Caller, id: &str) -> Result<OrderRecord, BillingError> {
        if id.is_empty() {
            return Err(BillingError::field("order_id", "is required"));
        }
        let mut conn = self.conn().await?;
        match reads::order(&mut conn, id).await? {
            Some(r) if caller.is_admin() || r.order.customer_id == caller.id() => Ok(r),
            _ => Err(BillingError::NotFound { what: "order" }),
        }
    }

    /// One order the caller may see.
    pub async fn order(&self, caller: &Caller, id: &str) -> Result<pb::Order, BillingError> {
        Ok(present::order(&self.visible_order(caller, id).await?))
    }

    /// A page of orders, newest first.
    pub async fn orders(
        &self,
        caller: &Caller,
        request: &ListRequest,
    ) -> Result<(Vec<pb::Order>, String), BillingError> {
        let (filter, query, size) = self.list_filter(caller, "orders", request)?;
        let mut conn = self.conn().await?;
        let mut rows = reads::orders(&mut conn, &filter).await?;
        let next = next_token(&mut rows, size, &query, |r| r.order.id.clone());
        Ok((rows.iter().map(present::order).collect(), next))
    }

    /// One invoice the caller may see.
    pub async fn invoice(&self, caller: &Caller, id: &str) -> Result<pb::Invoice, BillingError> {
        if id.is_empty() {
            return Err(BillingError::field("invoice_id", "is required"));
        }
        let mut conn = self.conn().await?;
        match reads::invoice(&mut conn, id).await? {
            Some(r) if caller.is_admin() || r.invoice.customer_id == caller.id() => {
                Ok(present::invoice(&r))
            }
            _ => Err(BillingError::NotFound { what: "invoice" }),
        }
    }

    /// A page of invoices, newest first.
    pub async fn invoices(
        &self,
        caller: &Caller,
        request: &ListRequest,
    ) -> Result<(Vec<pb::Invoice>, String), BillingError> {
        let (filter, query, size) = self.list_filter(caller, "invoices", request)?;
        let mut conn = self.conn().await?;
        let mut rows = reads::invoices(&mut conn, &filter).await?;
        let next = next_token(&mut rows, size, &query, |r| r.invoice.id.clone());
        Ok((rows.iter().map(present::invoice).collect(), next))
    }

    /// Cancels an unpaid order (at most once per key) and releases its stock.
    pub async fn cancel_order(
        &self,
        caller: &Caller,
        id: &str,
        key: Option<RequestKey>,
    ) -> Result<pb::Order, tonic::Status> {
        let response: pb::CancelOrderResponse = self
            .keyed(caller, "cancel", key, |_| async move {
                let record = self.visible_order(caller, id).await?;
                let status = OrderStatus::parse(&record.order.status);
                match status {
                    Some(OrderStatus::Cancelled) => {
                        return Ok(pb::CancelOrderResponse {
                            order: Some(present::order(&record)),
                        });
                    }
                    Some(s) if s.cancellable() => {}
                    Some(s) => return Err(BillingError::OrderNotCancellable(s.as_str())),
                    None => return Err(BillingError::NotFound { what: "order" }),
                }
                let order = &record.order;
                let reason = if caller.is_admin() && order.customer_id != caller.id() {
                    reasons::CANCELLED_BY_ADMIN
                } else {
                    reasons::CANCELLED_BY_CUSTOMER
                };
                let mut plan = Plan {
                    order: Some(OrderChange {
                        order_id: id.to_owned(),
                        from: vec![
                            OrderStatus::Pending.as_str(),
                            OrderStatus::PaymentFailed.as_str(),
                        ],
                        status: Some(OrderStatus::Cancelled.as_str()),
                        status_reason: Some(reason.into()),
                        ..Default::default()
                    }),
                    events: vec![("order.cancelled", Subject::Order(id.to_owned()))],
                    ..self.plan()
                };
                // A PAYMENT_FAILED order's invoice is already void.
                if let (Some(invoice_id), Some(OrderStatus::Pending)) = (&order.invoice_id, status)
                {
                    plan.invoice = Some(InvoiceChange {
                        id: invoice_id.clone(),
                        status: Some(InvoiceStatus::Void.as_str()),
                        ..Default::default()
                    });
                    plan.events
                        .push(("invoice.voided", Subject::Invoice(invoice_id.clone())));
                }
                self.apply(plan).await?;
                self.release_stock(caller.deadline, id).await?;
                Ok(pb::CancelOrderResponse {
                    order: Some(self.order(caller, id).await?),
                })
            })
            .await?;
        Ok(response.order.unwrap_or_default())
    }
}

/// Trims `rows` to `size` and returns the token after the last, or "" at the end.
pub(super) fn next_token<T>(
    rows: &mut Vec<T>,
    size: i64,
    query: &str,
    cursor: impl Fn(&T) -> String,
) -> String {
    if rows.len() as i64 > size {
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        rows.last()
            .map(|r| page::encode(query, &cursor(r)))
            .unwrap_or_default()
    } else {
        String::new()
    }
}
