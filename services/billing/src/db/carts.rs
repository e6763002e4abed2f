//! Carts: one per customer, changed in one transaction that also stores the answer under the
//! request's idempotency key, so a change and its answer are never apart.

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run,
};
use chrono::NaiveDateTime;
use diesel::{
    ExpressionMethods as _, OptionalExtension as _, QueryDsl as _, SelectableHelper as _,
};
use diesel_async::RunQueryDsl as _;

use super::{
    TxError, is_unique_violation,
    models::{CartLineRow, IdempotencyRecord},
    schema::{cart_lines, carts, idempotency_keys},
};
use crate::domain::{MAX_CART_LINES, MAX_QUANTITY};

/// A change of a cart.
#[derive(Debug, Clone)]
pub enum CartChange {
    /// Add units (a new line, or more of an existing one).
    Add {
        /// The product.
        product_id: String,
        /// Units to add.
        quantity: i64,
    },
    /// Set the quantity of an existing line (0 removes it).
    Set {
        /// The product.
        product_id: String,
        /// New quantity.
        quantity: i64,
    },
    /// Remove a line (absent is fine).
    Remove {
        /// The product.
        product_id: String,
    },
    /// Remove every line.
    Clear,
}

/// How a change ended.
#[derive(Debug, Clone)]
pub enum CartOutcome {
    /// Applied: the answer built from the lines after it (stored too, if a key was given).
    Done(Vec<u8>),
    /// The key was used before: its record.
    Replay(IdempotencyRecord),
    /// The line or the cart would be too big.
    LimitExceeded,
    /// Set on a product that is not in the cart.
    NotInCart,
}

enum Stop {
    KeyUsed,
    LimitExceeded,
    NotInCart,
}

/// The customer's lines, in the order they were first added.
pub async fn lines(conn: &mut DbConn, customer_id: &str) -> Result<Vec<CartLineRow>, DbError> {
    Ok(db_run!(conn, |c| {
        cart_lines::table
            .filter(cart_lines::customer_id.eq(customer_id))
            .order((cart_lines::added_at, cart_lines::product_id))
            .select(CartLineRow::as_select())
            .load(c)
            .await
    })?)
}

/// When the cart last changed.
pub async fn updated_at(
    conn: &mut DbConn,
    customer_id: &str,
) -> Result<Option<NaiveDateTime>, DbError> {
    Ok(db_run!(conn, |c| {
        carts::table
            .find(customer_id)
            .select(carts::updated_at)
            .first(c)
            .await
            .optional()
    })?)
}

/// Applies `change`; with `key`, stores it DONE in the same transaction with the answer
/// `respond` builds from the lines after the change. The key is inserted last: a key used before
/// makes the insert fail, the change rolls back and the first answer is replayed.
pub async fn change(
    conn: &mut DbConn,
    customer_id: &str,
    change: &CartChange,
    key: Option<&IdempotencyRecord>,
    respond: &(dyn Fn(&[CartLineRow], NaiveDateTime) -> Vec<u8> + Sync),
    now: NaiveDateTime,
) -> Result<CartOutcome, DbError> {
    let result = db_run!(conn, |c| {
        transaction!(c, async |tx| {
            // The cart row first: it serializes concurrent changes of one cart.
            diesel::insert_into(carts::table)
                .values((
                    carts::customer_id.eq(customer_id),
                    carts::updated_at.eq(now),
                ))
                .on_conflict(carts::customer_id)
                .do_update()
                .set(carts::updated_at.eq(now))
                .prepared()
                .execute(tx)
                .await?;
            match change {
                CartChange::Add {
                    product_id,
                    quantity,
                } => {
                    // A new line, or more of the line, unless that passes the most a line holds.
                    let line = CartLineRow {
                        customer_id: customer_id.to_owned(),
                        product_id: product_id.clone(),
                        quantity: *quantity,
                        added_at: now,
                    };
                    let upsert = diesel::insert_into(cart_lines::table)
                        .values(&line)
                        .on_conflict((cart_lines::customer_id, cart_lines::product_id))
                        .do_update()
                        .set(cart_lines::quantity.eq(cart_lines::quantity + *quantity));
                    // ON CONFLICT ... DO UPDATE ... WHERE: `filter` of the upsert, not of a query.
                    let added: Option<i64> = diesel::query_dsl::methods::FilterDsl::filter(
                        upsert,
                        cart_lines::quantity.le(MAX_QUANTITY - *quantity),
                    )
                    .returning(cart_lines::quantity)
                    .prepared()
                    .get_result(tx)
                    .await
                    .optional()?;
                    if added.is_none() {
                        return Err(TxError::Abort(Stop::LimitExceeded));
                    }
                }
                CartChange::Set {
                    product_id,
                    quantity,
                } => {
                    let line = cart_lines::table.find((customer_id, product_id));
                    let changed = if *quantity == 0 {
                        diesel::delete(line).execute(tx).await?
                    } else {
                        diesel::update(line)
                            .set(cart_lines::quantity.eq(quantity))
                            .prepared()
                            .execute(tx)
                            .await?
                    };
                    if changed == 0 {
                        return Err(TxError::Abort(Stop::NotInCart));
                    }
                }
                CartChange::Remove { product_id } => {
                    diesel::delete(cart_lines::table.find((customer_id, product_id)))
                        .execute(tx)
                        .await?;
                }
                CartChange::Clear => {
                    diesel::delete(
                        cart_lines::table.filter(cart_lines::customer_id.eq(customer_id)),
                    )
                    .execute(tx)
                    .await?;
                }
            }
            let lines: Vec<CartLineRow> = cart_lines::table
                .filter(cart_lines::customer_id.eq(customer_id))
                .order((cart_lines::added_at, cart_lines::product_id))
                .select(CartLineRow::as_select())
                .load(tx)
                .await?;
            // Only an added product makes a new line: one too many rolls the change back.
            if matches!(change, CartChange::Add { .. }) && lines.len() > MAX_CART_LINES {
                return Err(TxError::Abort(Stop::LimitExceeded));
            }
            let response = respond(&lines, now);
            if let Some(key) = key {
                let done = IdempotencyRecord {
                    state: "DONE".into(),
                    status_code: Some(0),
                    response: Some(response.clone()),
                    ..key.clone()
                };
                match diesel::insert_into(idempotency_keys::table)
                    .values(&done)
                    .prepared()
                    .execute(tx)
                    .await
                {
                    Ok(_) => {}
                    Err(err) if is_unique_violation(&err) => {
                        return Err(TxError::Abort(Stop::KeyUsed));
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            Ok(response)
        })
        .await
    });
    match result {
        Ok(response) => Ok(CartOutcome::Done(response)),
        Err(TxError::Abort(Stop::LimitExceeded)) => Ok(CartOutcome::LimitExceeded),
        Err(TxError::Abort(Stop::NotInCart)) => Ok(CartOutcome::NotInCart),
        Err(TxError::Abort(Stop::KeyUsed)) => {
            let key = key.ok_or_else(|| DbError::from(diesel::result::Error::NotFound))?;
            let existing = super::keys::get(conn, &key.caller_id, &key.request_key).await?;
            Ok(CartOutcome::Replay(existing.unwrap_or_else(|| key.clone())))
        }
        Err(TxError::Diesel(err)) => Err(err.into()),
    }
}
