//! Reads: orders, invoices, payments, refunds, the ledger and its check, the event feed, and
//! what the recovery worker must look at. Lists are keyset-paged on ids (UUIDv7, so time order)
//! or event sequences.

use std::collections::{BTreeMap, HashMap};

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run, keyset,
};
use chrono::NaiveDateTime;
use diesel::{
    BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _, QueryDsl as _,
    SelectableHelper as _,
};
use diesel_async::RunQueryDsl as _;

use super::{
    invoice_record,
    models::{
        CreditNoteRow, EventRow, InvoiceRecord, InvoiceRow, LedgerEntryRow, OrderLineRow,
        OrderRecord, OrderRow, PaymentRow, RefundRow,
    },
    order_record,
    schema::{
        credit_notes, events, invoices, ledger_entries, order_lines, orders, payments, refunds,
    },
};
use crate::domain::{OrderStatus, RefundStatus, StockState};

/// One order with its lines.
pub async fn order(conn: &mut DbConn, id: &str) -> Result<Option<OrderRecord>, DbError> {
    Ok(db_run!(conn, |c| order_record!(c, id).await)?)
}

/// One invoice with its lines and credit notes.
pub async fn invoice(conn: &mut DbConn, id: &str) -> Result<Option<InvoiceRecord>, DbError> {
    Ok(db_run!(conn, |c| invoice_record!(c, id).await)?)
}

/// An invoice's number alone.
pub async fn invoice_number(conn: &mut DbConn, id: &str) -> Result<Option<String>, DbError> {
    Ok(db_run!(conn, |c| {
        invoices::table
            .find(id)
            .select(invoices::number)
            .first(c)
            .await
            .optional()
    })?)
}

/// One payment.
pub async fn payment(conn: &mut DbConn, id: &str) -> Result<Option<PaymentRow>, DbError> {
    Ok(db_run!(conn, |c| {
        payments::table
            .find(id)
            .select(PaymentRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// One refund.
pub async fn refund(conn: &mut DbConn, id: &str) -> Result<Option<RefundRow>, DbError> {
    Ok(db_run!(conn, |c| {
        refunds::table
            .find(id)
            .select(RefundRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Filters of ListOrders and ListInvoices.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this customer.
    pub customer_id: Option<String>,
    /// Ids below this one (the page cursor).
    pub before: Option<String>,
    /// Page size.
    pub limit: i64,
}

/// A page of `$table` rows (`$row`) matching a [`ListFilter`], newest first. Orders and invoices
/// share the filter columns (status, customer_id) and the UUIDv7 keyset on id.
macro_rules! filtered_page {
    ($conn:expr, $table:ident, $row:ty, $filter:expr) => {
        db_run!($conn, |c| {
            let filter: &ListFilter = $filter;
            let mut query = $table::table
                .select(<$row>::as_select())
                .order($table::id.desc())
                .into_boxed();
            if let Some(status) = &filter.status {
                query = query.filter($table::status.eq(status));
            }
            if let Some(customer) = &filter.customer_id {
                query = query.filter($table::customer_id.eq(customer));
            }
            if let Some(before) = &filter.before {
                query = query.filter($table::id.lt(before));
            }
            keyset::limit(query, filter.limit).load::<$row, _>(c).await
        })
    };
}

/// The lines of these orders, by order id, in position order (one query).
async fn lines_of(
    conn: &mut DbConn,
    order_ids: &[&str],
) -> Result<HashMap<String, Vec<OrderLineRow>>, DbError> {
    let rows: Vec<OrderLineRow> = db_run!(conn, |c| {
        order_lines::table
            .filter(order_lines::order_id.eq_any(order_ids))
            .order((order_lines::order_id, order_lines::position))
            .select(OrderLineRow::as_select())
            .load(c)
            .await
    })?;
    let mut by_order: HashMap<String, Vec<OrderLineRow>> = HashMap::new();
    for row in rows {
        by_order.entry(row.order_id.clone()).or_default().push(row);
    }
    Ok(by_order)
}

/// Orders, newest first, with their lines (two queries).
pub async fn orders(conn: &mut DbConn, filter: &ListFilter) -> Result<Vec<OrderRecord>, DbError> {
    let rows: Vec<OrderRow> = filtered_page!(conn, orders, OrderRow, filter)?;
    let ids: Vec<&str> = rows.iter().map(|o| o.id.as_str()).collect();
    let mut lines = lines_of(conn, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|order| OrderRecord {
            lines: lines.remove(&order.id).unwrap_or_default(),
            order,
        })
        .collect())
}

/// Invoices, newest first, with their lines and credit notes (three queries).
pub async fn invoices(
    conn: &mut DbConn,
    filter: &ListFilter,
) -> Result<Vec<InvoiceRecord>, DbError> {
    let rows: Vec<InvoiceRow> = filtered_page!(conn, invoices, InvoiceRow, filter)?;
    let order_ids: Vec<&str> = rows.iter().map(|i| i.order_id.as_str()).collect();
    let mut lines = lines_of(conn, &order_ids).await?;
    let invoice_ids: Vec<&str> = rows.iter().map(|i| i.id.as_str()).collect();
    let notes: Vec<CreditNoteRow> = db_run!(conn, |c| {
        credit_notes::table
            .filter(credit_notes::invoice_id.eq_any(&invoice_ids))
            .order(credit_notes::id)
            .select(CreditNoteRow::as_select())
            .load(c)
            .await
    })?;
    let mut notes_by_invoice: HashMap<String, Vec<CreditNoteRow>> = HashMap::new();
    for note in notes {
        notes_by_invoice
            .entry(note.invoice_id.clone())
            .or_default()
            .push(note);
    }
    Ok(rows
        .into_iter()
        .map(|invoice| InvoiceRecord {
            lines: lines.remove(&invoice.order_id).unwrap_or_default(),
            credit_notes: notes_by_invoice.remove(&invoice.id).unwrap_or_default(),
            invoice,
        })
        .collect())
}

/// Which ledger entries.
#[derive(Debug, Clone)]
pub enum LedgerScope {
    /// Of one order.
    Order(String),
    /// Of one account (and, for CUSTOMER, optionally one customer).
    Account(String, Option<String>),
}

/// Ledger entries, oldest first, after the cursor id.
pub async fn ledger(
    conn: &mut DbConn,
    scope: &LedgerScope,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<LedgerEntryRow>, DbError> {
    Ok(db_run!(conn, |c| {
        let mut query = ledger_entries::table
            .select(LedgerEntryRow::as_select())
            .order(ledger_entries::id)
            .into_boxed();
        match scope {
            LedgerScope::Order(order) => query = query.filter(ledger_entries::order_id.eq(order)),
            LedgerScope::Account(account, customer) => {
                query = query.filter(ledger_entries::account.eq(account));
                if let Some(customer) = customer {
                    query = query.filter(ledger_entries::customer_id.eq(customer));
                }
            }
        }
        if let Some(after) = after {
            query = query.filter(ledger_entries::id.gt(after));
        }
        keyset::limit(query, limit).load(c).await
    })?)
}

/// What CheckLedger found.
#[derive(Debug, Clone, Default)]
pub struct LedgerCheck {
    /// Sum per currency.
    pub totals: BTreeMap<String, i64>,
    /// Transactions that do not sum to zero.
    pub unbalanced: Vec<String>,
    /// Paid orders without charge entries.
    pub orders_missing_entries: Vec<String>,
    /// Entries examined.
    pub entry_count: i64,
}

/// Checks the ledger in one read transaction (one snapshot).
pub async fn check_ledger(conn: &mut DbConn) -> Result<LedgerCheck, DbError> {
    let paid = [
        OrderStatus::Paid.as_str(),
        OrderStatus::PartiallyRefunded.as_str(),
        OrderStatus::Refunded.as_str(),
    ];
    let (entries, missing): (Vec<(String, String, i64)>, Vec<String>) = db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let entries = ledger_entries::table
                .select((
                    ledger_entries::transaction_id,
                    ledger_entries::currency_code,
                    ledger_entries::amount_minor,
                ))
                .load::<(String, String, i64)>(tx)
                .await?;
            let missing = orders::table
                .filter(orders::status.eq_any(paid))
                .filter(diesel::dsl::not(diesel::dsl::exists(
                    ledger_entries::table.filter(
                        ledger_entries::order_id
                            .eq(orders::id)
                            .and(ledger_entries::credit_note_id.eq("")),
                    ),
                )))
                .select(orders::id)
                .limit(100)
                .load::<String>(tx)
                .await?;
            Ok::<_, diesel::result::Error>((entries, missing))
        })
        .await
    })?;
    let mut check = LedgerCheck {
        entry_count: i64::try_from(entries.len()).unwrap_or(i64::MAX),
        orders_missing_entries: missing,
        ..Default::default()
    };
    let mut per_transaction: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (transaction, currency, amount) in entries {
        *check.totals.entry(currency.clone()).or_default() += amount;
        *per_transaction.entry((transaction, currency)).or_default() += amount;
    }
    check.unbalanced = per_transaction
        .into_iter()
        .filter(|(_, sum)| *sum != 0)
        .map(|((transaction, _), _)| transaction)
        .take(100)
        .collect();
    Ok(check)
}

/// Events after `after`, oldest first, filtered.
pub async fn events(
    conn: &mut DbConn,
    after: i64,
    types: &[String],
    subject_id: Option<&str>,
    limit: i64,
) -> Result<Vec<EventRow>, DbError> {
    Ok(db_run!(conn, |c| {
        let mut query = events::table
            .select(EventRow::as_select())
            .filter(events::sequence.gt(after))
            .order(events::sequence)
            .into_boxed();
        if !types.is_empty() {
            query = query.filter(events::event_type.eq_any(types));
        }
        if let Some(subject) = subject_id {
            query = query.filter(events::subject_id.eq(subject));
        }
        keyset::limit(query, limit).load(c).await
    })?)
}

/// Orders the recovery worker must settle: unfinished checkouts whose lease ran out, and
/// finished unpaid orders whose stock may still be held.
pub async fn unsettled_orders(
    conn: &mut DbConn,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<OrderRow>, DbError> {
    Ok(db_run!(conn, |c| {
        keyset::limit(
            orders::table
                .filter(orders::locked_until.lt(now))
                .filter(
                    orders::status
                        .eq_any([
                            OrderStatus::Pending.as_str(),
                            OrderStatus::PaymentPending.as_str(),
                        ])
                        .or(orders::status
                            .eq_any([
                                OrderStatus::Cancelled.as_str(),
                                OrderStatus::PaymentFailed.as_str(),
                            ])
                            .and(
                                orders::stock_state
                                    .eq_any([StockState::None.as_str(), StockState::Held.as_str()]),
                            )),
                )
                .order(orders::locked_until)
                .select(OrderRow::as_select()),
            limit,
        )
        .load(c)
        .await
    })?)
}

/// Refunds left PENDING whose lease ran out.
pub async fn unsettled_refunds(
    conn: &mut DbConn,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<RefundRow>, DbError> {
    Ok(db_run!(conn, |c| {
        keyset::limit(
            refunds::table
                .filter(refunds::status.eq(RefundStatus::Pending.as_str()))
                .filter(refunds::locked_until.lt(now))
                .order(refunds::locked_until)
                .select(RefundRow::as_select()),
            limit,
        )
        .load(c)
        .await
    })?)
}

/// Takes the lease of an order whose lease (`seen`) ran out; true if this caller got it.
pub async fn lease_order(
    conn: &mut DbConn,
    id: &str,
    seen: NaiveDateTime,
    until: NaiveDateTime,
) -> Result<bool, DbError> {
    let moved = db_run!(conn, |c| {
        diesel::update(orders::table.find(id))
            .filter(orders::locked_until.eq(seen))
            .set(orders::locked_until.eq(until))
            .prepared()
            .execute(c)
            .await
    })?;
    Ok(moved == 1)
}

/// Takes the lease of a pending refund whose lease ran out.
pub async fn lease_refund(
    conn: &mut DbConn,
    id: &str,
    seen: NaiveDateTime,
    until: NaiveDateTime,
) -> Result<bool, DbError> {
    let moved = db_run!(conn, |c| {
        diesel::update(refunds::table.find(id))
            .filter(refunds::locked_until.eq(seen))
            .filter(refunds::status.eq(RefundStatus::Pending.as_str()))
            .set(refunds::locked_until.eq(until))
            .prepared()
            .execute(c)
            .await
    })?;
    Ok(moved == 1)
}

/// Succeeded refunds' total of a payment plus pending ones (what may not be refunded again).
pub async fn refunds_in_flight(conn: &mut DbConn, payment_id: &str) -> Result<i64, DbError> {
    let amounts: Vec<i64> = db_run!(conn, |c| {
        refunds::table
            .filter(refunds::payment_id.eq(payment_id))
            .filter(refunds::status.eq(RefundStatus::Pending.as_str()))
            .select(refunds::amount_minor)
            .load(c)
            .await
    })?;
    Ok(amounts.iter().sum())
}
