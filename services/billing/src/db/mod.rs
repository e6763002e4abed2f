//! The billing service's storage: its Diesel schema, rows, and one function per unit of work,
//! written once for both backends with `db_run!`. Reads that transactions also need are macros,
//! so the same text runs on whichever connection (or transaction) is live.

pub mod carts;
pub mod feed;
pub mod keys;
pub mod models;
pub mod plan;
pub mod reads;
pub mod schema;

pub use backbone_common::db::{TxError, is_unique_violation};

/// Loads an order with its lines: `Option<OrderRecord>`, on any connection.
macro_rules! order_record {
    ($c:expr, $id:expr) => {
        async {
            use diesel::{OptionalExtension as _, QueryDsl as _, SelectableHelper as _};
            use diesel_async::RunQueryDsl as _;
            let order: Option<$crate::db::models::OrderRow> = $crate::db::schema::orders::table
                .find($id)
                .select($crate::db::models::OrderRow::as_select())
                .first(&mut *$c)
                .await
                .optional()?;
            match order {
                None => Ok::<_, diesel::result::Error>(None),
                Some(order) => {
                    let lines = $crate::db::schema::order_lines::table
                        .filter(diesel::ExpressionMethods::eq(
                            $crate::db::schema::order_lines::order_id,
                            &order.id,
                        ))
                        .order($crate::db::schema::order_lines::position)
                        .select($crate::db::models::OrderLineRow::as_select())
                        .load(&mut *$c)
                        .await?;
                    Ok(Some($crate::db::models::OrderRecord { order, lines }))
                }
            }
        }
    };
}

/// Loads an invoice with its lines and credit notes: `Option<InvoiceRecord>`.
macro_rules! invoice_record {
    ($c:expr, $id:expr) => {
        async {
            use diesel::{OptionalExtension as _, QueryDsl as _, SelectableHelper as _};
            use diesel_async::RunQueryDsl as _;
            let invoice: Option<$crate::db::models::InvoiceRow> =
                $crate::db::schema::invoices::table
                    .find($id)
                    .select($crate::db::models::InvoiceRow::as_select())
                    .first(&mut *$c)
                    .await
                    .optional()?;
            match invoice {
                None => Ok::<_, diesel::result::Error>(None),
                Some(invoice) => {
                    let lines = $crate::db::schema::order_lines::table
                        .filter(diesel::ExpressionMethods::eq(
                            $crate::db::schema::order_lines::order_id,
                            &invoice.order_id,
                        ))
                        .order($crate::db::schema::order_lines::position)
                        .select($crate::db::models::OrderLineRow::as_select())
                        .load(&mut *$c)
                        .await?;
                    let credit_notes = $crate::db::schema::credit_notes::table
                        .filter(diesel::ExpressionMethods::eq(
                            $crate::db::schema::credit_notes::invoice_id,
                            &invoice.id,
                        ))
                        .order($crate::db::schema::credit_notes::id)
                        .select($crate::db::models::CreditNoteRow::as_select())
                        .load(&mut *$c)
                        .await?;
                    Ok(Some($crate::db::models::InvoiceRecord {
                        invoice,
                        lines,
                        credit_notes,
                    }))
                }
            }
        }
    };
}

pub(crate) use invoice_record;
pub(crate) use order_record;
