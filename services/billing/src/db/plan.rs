//! One unit of work of the checkout saga, refunds and cancellations, applied in one transaction:
//! a guarded state change of the order (a conditional update that must match, so two workers or
//! a worker and a request can never both move an order), the rows it creates or changes, its
//! ledger entries, and the events describing every changed subject, appended last without a
//! sequence (the feed's [numberer](super::feed) gives them one after they commit).

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run,
};
use chrono::NaiveDateTime;
use diesel::{
    AsChangeset, ExpressionMethods as _, OptionalExtension as _, QueryDsl as _,
    SelectableHelper as _,
};
use diesel_async::RunQueryDsl as _;

use super::{
    TxError,
    models::{
        CreditNoteRow, InvoiceRecord, InvoiceRow, LedgerEntryRow, NewEvent, OrderLineRow,
        OrderRecord, OrderRow, PaymentRow, RefundRow,
    },
    schema::{
        cart_lines, carts, counters, credit_notes, events, idempotency_keys, invoices,
        ledger_entries, order_lines, orders, payments, refunds,
    },
};
use crate::{domain, present};

/// A guarded change of an order.
#[derive(Debug, Clone, Default)]
pub struct OrderChange {
    /// The order.
    pub order_id: String,
    /// Statuses it must be in (empty: any).
    pub from: Vec<&'static str>,
    /// New status.
    pub status: Option<&'static str>,
    /// New status reason.
    pub status_reason: Option<String>,
    /// New stock state.
    pub stock_state: Option<&'static str>,
    /// Added to refunded_minor.
    pub refunded_add: i64,
    /// Set invoice id.
    pub invoice_id: Option<String>,
    /// Set payment id.
    pub payment_id: Option<String>,
    /// New lease.
    pub locked_until: Option<NaiveDateTime>,
}

/// A guarded change of a payment.
#[derive(Debug, Clone, Default)]
pub struct PaymentChange {
    /// The payment.
    pub id: String,
    /// Status it must be in.
    pub from: &'static str,
    /// New status.
    pub status: Option<&'static str>,
    /// Gateway id.
    pub gateway_payment_id: Option<String>,
    /// Failure reason.
    pub failure_reason: Option<String>,
    /// Added to refunded_minor.
    pub refunded_add: i64,
}

/// A change of an invoice.
#[derive(Debug, Clone, Default)]
pub struct InvoiceChange {
    /// The invoice.
    pub id: String,
    /// New status.
    pub status: Option<&'static str>,
    /// New paid amount.
    pub paid_minor: Option<i64>,
    /// Added to refunded_minor.
    pub refunded_add: i64,
}

/// What an event is about.
#[derive(Debug, Clone)]
pub enum Subject {
    /// An order.
    Order(String),
    /// A payment.
    Payment(String),
    /// An invoice.
    Invoice(String),
    /// A credit note.
    CreditNote(String),
}

impl Subject {
    /// The subject's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Order(id) | Self::Payment(id) | Self::Invoice(id) | Self::CreditNote(id) => id,
        }
    }
}

/// A new order, its lines, and the (caller, key) of the Checkout that creates it.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// The order.
    pub order: OrderRow,
    /// Its lines.
    pub lines: Vec<OrderLineRow>,
    /// The idempotency key that made it.
    pub key: Option<(String, String)>,
}

/// The answer of a keyed request, stored under its key by the transaction that finishes it (one
/// round trip and one commit fewer than storing it after).
#[derive(Debug, Clone)]
pub struct KeyAnswer {
    /// The caller.
    pub caller_id: String,
    /// The key.
    pub request_key: String,
    /// The encoded answer from what the transaction left; `None`: not answered here.
    pub respond: fn(&Applied) -> Option<Vec<u8>>,
}

/// Everything one transaction does.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// An order's lines the caller already has: (order id, lines by position); not read again.
    pub lines: Option<(String, Vec<OrderLineRow>)>,
    /// Store the request's answer under its key (if `respond` gives one).
    pub answer: Option<KeyAnswer>,
    /// A new order and its lines (with the key that created it, if any).
    pub new_order: Option<NewOrder>,
    /// The guarded order change.
    pub order: Option<OrderChange>,
    /// A new invoice (its number is taken here).
    pub new_invoice: Option<InvoiceRow>,
    /// A new payment.
    pub new_payment: Option<PaymentRow>,
    /// The guarded payment change.
    pub payment: Option<PaymentChange>,
    /// The invoice change.
    pub invoice: Option<InvoiceChange>,
    /// A new refund.
    pub new_refund: Option<RefundRow>,
    /// A refund leaving PENDING: (id, status, gateway refund id).
    pub refund: Option<(String, &'static str, String)>,
    /// A new credit note (its number is taken here).
    pub new_credit_note: Option<CreditNoteRow>,
    /// Balanced ledger entries.
    pub ledger: Vec<LedgerEntryRow>,
    /// Take what an order bought out of its customer's cart: (customer, [(product, quantity)]).
    /// Lines added or raised while the checkout ran keep the difference.
    pub clear_cart: Option<(String, Vec<(String, i64)>)>,
    /// Events: type and subject.
    pub events: Vec<(&'static str, Subject)>,
    /// Trace id of the call making the change.
    pub trace_id: String,
    /// When.
    pub now: Option<NaiveDateTime>,
}

/// The columns an order change sets; `None` leaves a column alone.
#[derive(AsChangeset)]
#[diesel(table_name = orders)]
struct OrderSet<'a> {
    status: Option<&'a str>,
    status_reason: Option<&'a str>,
    stock_state: Option<&'a str>,
    invoice_id: Option<Option<&'a str>>,
    payment_id: Option<Option<&'a str>>,
    locked_until: Option<NaiveDateTime>,
    updated_at: NaiveDateTime,
}

/// The columns a payment change sets.
#[derive(AsChangeset)]
#[diesel(table_name = payments)]
struct PaymentSet<'a> {
    status: Option<&'a str>,
    gateway_payment_id: Option<&'a str>,
    failure_reason: Option<&'a str>,
    updated_at: NaiveDateTime,
}

/// The columns an invoice change sets.
#[derive(AsChangeset)]
#[diesel(table_name = invoices)]
struct InvoiceSet<'a> {
    status: Option<&'a str>,
    paid_minor: Option<i64>,
    updated_at: NaiveDateTime,
}

/// Why a plan was not applied.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A guarded change matched nothing: someone else moved the order (or payment) first.
    #[error("the order changed concurrently")]
    Conflict,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Numbers `count` values from counter `name` (one statement); returns the first.
macro_rules! take_numbers {
    ($tx:expr, $name:expr, $count:expr) => {{
        let last: i64 = diesel::update(counters::table.find($name))
            .set(counters::value.eq(counters::value + $count))
            .returning(counters::value)
            .prepared()
            .get_result(&mut *$tx)
            .await?;
        last - $count + 1
    }};
}

/// Rows a plan appends in bulk: one statement on PostgreSQL; one per row on SQLite, where
/// diesel-async sends no multi-row insert (and its one writer holds no lock for others to wait on).
trait InsertRows {
    fn insert_events(
        &mut self,
        rows: &[NewEvent],
    ) -> impl Future<Output = diesel::QueryResult<()>> + Send;
    fn insert_ledger(
        &mut self,
        rows: &[LedgerEntryRow],
    ) -> impl Future<Output = diesel::QueryResult<()>> + Send;
}

impl InsertRows for &backbone_common::db::PgConn {
    async fn insert_events(&mut self, rows: &[NewEvent]) -> diesel::QueryResult<()> {
        if !rows.is_empty() {
            diesel::insert_into(events::table)
                .values(rows)
                .prepared()
                .execute(self)
                .await?;
        }
        Ok(())
    }

    async fn insert_ledger(&mut self, rows: &[LedgerEntryRow]) -> diesel::QueryResult<()> {
        if !rows.is_empty() {
            diesel::insert_into(ledger_entries::table)
                .values(rows)
                .prepared()
                .execute(self)
                .await?;
        }
        Ok(())
    }
}

impl InsertRows for backbone_common::db::SqliteConn {
    async fn insert_events(&mut self, rows: &[NewEvent]) -> diesel::QueryResult<()> {
        for row in rows {
            diesel::insert_into(events::table)
                .values(row)
                .prepared()
                .execute(self)
                .await?;
        }
        Ok(())
    }

    async fn insert_ledger(&mut self, rows: &[LedgerEntryRow]) -> diesel::QueryResult<()> {
        for row in rows {
            diesel::insert_into(ledger_entries::table)
                .values(row)
                .prepared()
                .execute(self)
                .await?;
        }
        Ok(())
    }
}

/// The subjects of a plan's events as the transaction left them.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The order with its lines.
    pub order: Option<OrderRecord>,
    /// The invoice with its lines and credit notes.
    pub invoice: Option<InvoiceRecord>,
    /// The payment.
    pub payment: Option<PaymentRow>,
    /// The plan's [`KeyAnswer`] was stored.
    pub answered: bool,
}

/// Rows the transaction wrote or changed (as they are after it), so most event payloads are
/// built without reading them back.
#[derive(Default)]
struct Seen {
    order: Option<OrderRow>,
    /// An order's lines: (order id, lines by position).
    lines: Option<(String, Vec<OrderLineRow>)>,
    invoice: Option<InvoiceRow>,
    payment: Option<PaymentRow>,
}

/// The lines of `order_id`, from `seen` or read (and kept there).
macro_rules! lines_of {
    ($tx:expr, $seen:expr, $order_id:expr) => {
        async {
            let order_id: &str = $order_id;
            if let Some((id, lines)) = &$seen.lines
                && id == order_id
            {
                return Ok::<_, diesel::result::Error>(lines.clone());
            }
            let lines: Vec<OrderLineRow> = order_lines::table
                .filter(order_lines::order_id.eq(order_id))
                .order(order_lines::position)
                .select(OrderLineRow::as_select())
                .load(&mut *$tx)
                .await?;
            $seen.lines = Some((order_id.to_owned(), lines.clone()));
            Ok(lines)
        }
    };
}

/// Applies `plan` in one transaction: the writes, then the event payloads, then (holding the
/// invoice counter's row lock for as short as possible) the new invoice's number, and the events.
pub async fn apply(conn: &mut DbConn, plan: &Plan) -> Result<Applied, PlanError> {
    let now = plan.now.unwrap_or_else(domain::now);
    let result = db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let mut seen = Seen {
                lines: plan.lines.clone(),
                ..Seen::default()
            };
            let mut applied = Applied::default();
            // Writes come first, so the transaction holds the write lock from its first statement.
            // They do not read each other's results, so they go out together (one round trip on
            // PostgreSQL); a row and the rows referring to it share a block, which keeps them in order.
            let (_, _, order, payment, refund_moved, invoice, _, _, _) = pipeline!(
                tx,
                h,
                {
                    if let Some(NewOrder { order, lines, .. }) = &plan.new_order {
                        diesel::insert_into(orders::table)
                            .values(order)
                            .prepared()
                            .execute(h)
                            .await?;
                        for line in lines {
                            diesel::insert_into(order_lines::table)
                                .values(line)
                                .prepared()
                                .execute(h)
                                .await?;
                        }
                    }
                    diesel::QueryResult::Ok(())
                },
                {
                    if let Some(NewOrder {
                        order,
                        key: Some((caller, request_key)),
                        ..
                    }) = &plan.new_order
                    {
                        diesel::update(idempotency_keys::table.find((caller, request_key)))
                            .set(idempotency_keys::order_id.eq(Some(&order.id)))
                            .prepared()
                            .execute(h)
                            .await?;
                    }
                    diesel::QueryResult::Ok(())
                },
                async {
                    let Some(change) = &plan.order else {
                        return diesel::QueryResult::Ok(None);
                    };
                    let mut target = diesel::update(orders::table)
                        .filter(orders::id.eq(&change.order_id))
                        .into_boxed();
                    if !change.from.is_empty() {
                        target = target.filter(orders::status.eq_any(&change.from));
                    }
                    // One statement: the CHECKs see the row whole (a paid order with its stock
                    // committed), and the guard and the change cannot be split.
                    target
                        .set((
                            OrderSet {
                                status: change.status,
                                status_reason: change.status_reason.as_deref(),
                                stock_state: change.stock_state,
                                invoice_id: change.invoice_id.as_deref().map(Some),
                                payment_id: change.payment_id.as_deref().map(Some),
                                locked_until: change.locked_until,
                                updated_at: now,
                            },
                            orders::refunded_minor.eq(orders::refunded_minor + change.refunded_add),
                        ))
                        .returning(OrderRow::as_returning())
                        .prepared()
                        .get_result::<OrderRow>(h)
                        .await
                        .optional()
                        .map(Some)
                }
                .await,
                async {
                    let Some(change) = &plan.payment else {
                        return diesel::QueryResult::Ok(None);
                    };
                    diesel::update(payments::table)
                        .filter(payments::id.eq(&change.id))
                        .filter(payments::status.eq(change.from))
                        .set((
                            PaymentSet {
                                status: change.status,
                                gateway_payment_id: change.gateway_payment_id.as_deref(),
                                failure_reason: change.failure_reason.as_deref(),
                                updated_at: now,
                            },
                            payments::refunded_minor
                                .eq(payments::refunded_minor + change.refunded_add),
                        ))
                        .returning(PaymentRow::as_returning())
                        .prepared()
                        .get_result::<PaymentRow>(h)
                        .await
                        .optional()
                        .map(Some)
                }
                .await,
                async {
                    // A new refund and a refund leaving PENDING never come in the same plan.
                    if let Some(refund) = &plan.new_refund {
                        diesel::insert_into(refunds::table)
                            .values(refund)
                            .prepared()
                            .execute(h)
                            .await?;
                    }
                    let Some((id, status, gateway_id)) = &plan.refund else {
                        return diesel::QueryResult::Ok(None);
                    };
                    diesel::update(refunds::table)
                        .filter(refunds::id.eq(id))
                        .filter(refunds::status.eq(domain::RefundStatus::Pending.as_str()))
                        .set((
                            refunds::status.eq(*status),
                            refunds::gateway_refund_id.eq(gateway_id),
                            refunds::updated_at.eq(now),
                        ))
                        .prepared()
                        .execute(h)
                        .await
                        .map(Some)
                }
                .await,
                async {
                    let Some(change) = &plan.invoice else {
                        return diesel::QueryResult::Ok(None);
                    };
                    diesel::update(invoices::table.find(&change.id))
                        .set((
                            InvoiceSet {
                                status: change.status,
                                paid_minor: change.paid_minor,
                                updated_at: now,
                            },
                            invoices::refunded_minor
                                .eq(invoices::refunded_minor + change.refunded_add),
                        ))
                        .returning(InvoiceRow::as_returning())
                        .prepared()
                        .get_result::<InvoiceRow>(h)
                        .await
                        .optional()
                }
                .await,
                {
                    if let Some(payment) = &plan.new_payment {
                        diesel::insert_into(payments::table)
                            .values(payment)
                            .prepared()
                            .execute(h)
                            .await?;
                    }
                    h.insert_ledger(&plan.ledger).await
                },
                {
                    // A line raised while the checkout ran keeps the difference: it is deleted
                    // only if no more than the order bought is left, else lowered.
                    if let Some((customer, bought)) = &plan.clear_cart {
                        for (product, quantity) in bought {
                            let line = cart_lines::table
                                .filter(cart_lines::customer_id.eq(customer))
                                .filter(cart_lines::product_id.eq(product));
                            let gone =
                                diesel::delete(line.filter(cart_lines::quantity.le(quantity)))
                                    .execute(h)
                                    .await?;
                            if gone == 0 {
                                diesel::update(line)
                                    .set(cart_lines::quantity.eq(cart_lines::quantity - quantity))
                                    .prepared()
                                    .execute(h)
                                    .await?;
                            }
                        }
                    }
                    diesel::QueryResult::Ok(())
                },
                {
                    if let Some((customer, _)) = &plan.clear_cart {
                        diesel::update(carts::table.find(customer))
                            .set(carts::updated_at.eq(now))
                            .prepared()
                            .execute(h)
                            .await?;
                    }
                    diesel::QueryResult::Ok(())
                },
            )?;
            // A guarded change that matched nothing: someone else moved the order first.
            if matches!(order, Some(None))
                || matches!(payment, Some(None))
                || refund_moved == Some(0)
            {
                return Err(TxError::Abort(()));
            }
            if let Some(NewOrder { order, lines, .. }) = &plan.new_order {
                seen.order = Some(order.clone());
                seen.lines = Some((order.id.clone(), lines.clone()));
            }
            if let Some(order) = order.flatten() {
                seen.order = Some(order);
            }
            if let Some(payment) = payment.flatten() {
                seen.payment = Some(payment);
            }
            if let Some(payment) = &plan.new_payment {
                seen.payment = Some(payment.clone());
            }
            seen.invoice = invoice;
            if let Some(note) = &plan.new_credit_note {
                let n = take_numbers!(tx, "credit_note", 1_i64);
                let mut row = note.clone();
                row.number = domain::document_number("CN", n);
                diesel::insert_into(credit_notes::table)
                    .values(&row)
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            // Event payloads show every subject after the changes above: from the rows just
            // written or returned, else read. A new invoice's is made once it has its number.
            let mut payloads: Vec<Option<String>> = Vec::with_capacity(plan.events.len());
            for (_, subject) in &plan.events {
                let payload = match subject {
                    Subject::Order(id) => {
                        let order = match seen.order.as_ref().filter(|o| &o.id == id) {
                            Some(order) => Some(order.clone()),
                            None => orders::table
                                .find(id)
                                .select(OrderRow::as_select())
                                .first(tx)
                                .await
                                .optional()?,
                        };
                        match order {
                            Some(order) => {
                                let lines = lines_of!(tx, seen, &order.id).await?;
                                let record = OrderRecord { order, lines };
                                let payload = present::json(&present::order(&record));
                                applied.order = Some(record);
                                Some(payload)
                            }
                            None => Some("{}".to_owned()),
                        }
                    }
                    Subject::Invoice(id)
                        if plan.new_invoice.as_ref().is_some_and(|i| &i.id == id) =>
                    {
                        None
                    }
                    Subject::Invoice(id) => {
                        let invoice = match seen.invoice.as_ref().filter(|i| &i.id == id) {
                            Some(invoice) => Some(invoice.clone()),
                            None => invoices::table
                                .find(id)
                                .select(InvoiceRow::as_select())
                                .first(tx)
                                .await
                                .optional()?,
                        };
                        match invoice {
                            Some(invoice) => {
                                let lines = lines_of!(tx, seen, &invoice.order_id).await?;
                                // Credit notes come with refunds only, and every refund adds
                                // to the invoice's refunded amount.
                                let credit_notes = if invoice.refunded_minor == 0 {
                                    Vec::new()
                                } else {
                                    credit_notes::table
                                        .filter(credit_notes::invoice_id.eq(&invoice.id))
                                        .order(credit_notes::id)
                                        .select(CreditNoteRow::as_select())
                                        .load(tx)
                                        .await?
                                };
                                let record = InvoiceRecord {
                                    invoice,
                                    lines,
                                    credit_notes,
                                };
                                let payload = present::json(&present::invoice(&record));
                                applied.invoice = Some(record);
                                Some(payload)
                            }
                            None => Some("{}".to_owned()),
                        }
                    }
                    Subject::Payment(id) => {
                        let payment = match seen.payment.as_ref().filter(|p| &p.id == id) {
                            Some(payment) => Some(payment.clone()),
                            None => payments::table
                                .find(id)
                                .select(PaymentRow::as_select())
                                .first(tx)
                                .await
                                .optional()?,
                        };
                        let payload = payment.as_ref().map_or_else(
                            || "{}".to_owned(),
                            |r| present::json(&present::payment(r)),
                        );
                        applied.payment = payment;
                        Some(payload)
                    }
                    Subject::CreditNote(id) => {
                        let row: Option<CreditNoteRow> = credit_notes::table
                            .find(id)
                            .select(CreditNoteRow::as_select())
                            .first(tx)
                            .await
                            .optional()?;
                        Some(row.map_or_else(
                            || "{}".to_owned(),
                            |r| present::json(&present::credit_note(&r)),
                        ))
                    }
                };
                payloads.push(payload);
            }
            // Invoice numbers have no gaps: the counter row stays locked until this transaction
            // ends, so it is taken last, with only the invoice, the answer and the events written
            // after it, in one round trip.
            let mut new_invoice = None;
            if let Some(invoice) = &plan.new_invoice {
                let lines = lines_of!(tx, seen, &invoice.order_id).await?;
                let n = take_numbers!(tx, "invoice", 1_i64);
                let mut row = invoice.clone();
                row.number = domain::document_number("INV", n);
                new_invoice = Some(row.clone());
                let record = InvoiceRecord {
                    invoice: row,
                    lines,
                    credit_notes: Vec::new(),
                };
                let payload = present::json(&present::invoice(&record));
                applied.invoice = Some(record);
                for slot in payloads.iter_mut().filter(|p| p.is_none()) {
                    *slot = Some(payload.clone());
                }
            }
            // Unnumbered: the feed's numberer gives them their sequence once committed.
            let rows: Vec<NewEvent> = plan
                .events
                .iter()
                .zip(payloads)
                .map(|((kind, subject), payload)| NewEvent {
                    id: domain::new_id(),
                    event_type: (*kind).to_owned(),
                    subject_id: subject.id().to_owned(),
                    payload: payload.unwrap_or_else(|| "{}".to_owned()),
                    trace_id: plan.trace_id.clone(),
                    created_at: now,
                })
                .collect();
            let answer = plan
                .answer
                .as_ref()
                .and_then(|answer| (answer.respond)(&applied).map(|response| (answer, response)));
            applied.answered = answer.is_some();
            pipeline!(
                tx,
                h,
                {
                    if let Some(row) = &new_invoice {
                        diesel::insert_into(invoices::table)
                            .values(row)
                            .prepared()
                            .execute(h)
                            .await?;
                    }
                    diesel::QueryResult::Ok(())
                },
                {
                    if let Some((answer, response)) = &answer {
                        diesel::update(
                            idempotency_keys::table.find((&answer.caller_id, &answer.request_key)),
                        )
                        .set((
                            idempotency_keys::state.eq("DONE"),
                            idempotency_keys::status_code.eq(Some(0)),
                            idempotency_keys::response.eq(Some(response)),
                        ))
                        .prepared()
                        .execute(h)
                        .await?;
                    }
                    diesel::QueryResult::Ok(())
                },
                h.insert_events(&rows).await,
            )?;
            Ok(applied)
        })
        .await
    });
    match result {
        Ok(applied) => Ok(applied),
        Err(TxError::Abort(())) => Err(PlanError::Conflict),
        Err(TxError::Diesel(err)) => Err(PlanError::Db(err.into())),
    }
}
