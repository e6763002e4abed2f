//! Stock levels and movements. Every change is one conditional update whose WHERE clause keeps
//! the invariant, backed by the table's CHECK constraints (on_hand >= reserved >= 0).

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run, keyset,
};
use chrono::NaiveDateTime;
use diesel::{
    ExpressionMethods as _, JoinOnDsl as _, OptionalExtension as _, QueryDsl as _,
    SelectableHelper as _,
};
use diesel_async::RunQueryDsl as _;

use super::{
    TxError, is_unique_violation,
    models::{MovementRow, StockRow},
    schema::{stock, stock_adjustment_requests, stock_movements},
};

/// The stock of these products (any order).
pub async fn of(conn: &mut DbConn, product_ids: &[String]) -> Result<Vec<StockRow>, DbError> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(db_run!(conn, |c| {
        stock::table
            .filter(stock::product_id.eq_any(product_ids))
            .select(StockRow::as_select())
            .load(c)
            .await
    })?)
}

/// An adjustment to store.
#[derive(Debug, Clone)]
pub struct Adjustment {
    /// The movement row (its on_hand_after is filled in here).
    pub movement: MovementRow,
    /// The caller's idempotency key and the request's fingerprint.
    pub request: Option<(String, String)>,
}

/// What an adjustment did.
#[derive(Debug, Clone)]
pub enum Adjusted {
    /// Applied now.
    Applied(StockRow, MovementRow),
    /// The idempotency key was used before for the same request: that movement, and the stock
    /// now.
    Replayed(StockRow, MovementRow),
    /// The key was used for a different request.
    KeyConflict,
    /// On hand would drop below reserved; the stock as it is.
    Insufficient(StockRow),
    /// No such product.
    NotFound,
}

/// Applies an adjustment: on hand changes only if it stays at or above reserved (the first
/// statement is this write, so the transaction holds the write lock from the start), the
/// movement is recorded, and the idempotency key (if any) is claimed last: a key already used
/// rolls the whole adjustment back.
pub async fn adjust(conn: &mut DbConn, adjustment: &Adjustment) -> Result<Adjusted, DbError> {
    let movement = &adjustment.movement;
    let result: Result<Adjusted, TxError<Box<Adjusted>>> = db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let updated: Option<StockRow> = diesel::update(
                stock::table
                    .filter(stock::product_id.eq(&movement.product_id))
                    .filter((stock::on_hand + movement.delta).ge(stock::reserved)),
            )
            .set((
                stock::on_hand.eq(stock::on_hand + movement.delta),
                stock::updated_at.eq(Some(movement.created_at)),
            ))
            .returning(StockRow::as_returning())
            .prepared()
            .get_result(tx)
            .await
            .optional()?;
            let Some(row) = updated else {
                let current: Option<StockRow> = stock::table
                    .find(&movement.product_id)
                    .select(StockRow::as_select())
                    .first(tx)
                    .await
                    .optional()?;
                return Err(TxError::Abort(Box::new(match current {
                    Some(row) => Adjusted::Insufficient(row),
                    None => Adjusted::NotFound,
                })));
            };
            let stored = MovementRow {
                on_hand_after: row.on_hand,
                ..movement.clone()
            };
            diesel::insert_into(stock_movements::table)
                .values(&stored)
                .prepared()
                .execute(tx)
                .await?;
            if let Some((key, fingerprint)) = &adjustment.request {
                let claimed = diesel::insert_into(stock_adjustment_requests::table)
                    .values((
                        stock_adjustment_requests::actor_id.eq(&movement.actor_id),
                        stock_adjustment_requests::request_id.eq(key),
                        stock_adjustment_requests::fingerprint.eq(fingerprint),
                        stock_adjustment_requests::movement_id.eq(&movement.id),
                        stock_adjustment_requests::created_at.eq(movement.created_at),
                    ))
                    .prepared()
                    .execute(tx)
                    .await;
                if let Err(err) = claimed {
                    if !is_unique_violation(&err) {
                        return Err(err.into());
                    }
                    // Rolled back; answered from the first request's row.
                    return Err(TxError::Abort(Box::new(Adjusted::KeyConflict)));
                }
            }
            Ok(Adjusted::Applied(row, stored))
        })
        .await
    });
    match result {
        Ok(done) => Ok(done),
        Err(TxError::Abort(done)) if matches!(*done, Adjusted::KeyConflict) => {
            let Some((key, fingerprint)) = &adjustment.request else {
                return Ok(Adjusted::KeyConflict);
            };
            replay(conn, &movement.actor_id, key, fingerprint).await
        }
        Err(TxError::Abort(done)) => Ok(*done),
        Err(TxError::Diesel(err)) => Err(err.into()),
    }
}

/// The answer to a reused idempotency key.
async fn replay(
    conn: &mut DbConn,
    actor_id: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Adjusted, DbError> {
    let found: Option<(String, MovementRow)> = db_run!(conn, |c| {
        stock_adjustment_requests::table
            .inner_join(
                stock_movements::table
                    .on(stock_movements::id.eq(stock_adjustment_requests::movement_id)),
            )
            .filter(stock_adjustment_requests::actor_id.eq(actor_id))
            .filter(stock_adjustment_requests::request_id.eq(key))
            .select((
                stock_adjustment_requests::fingerprint,
                MovementRow::as_select(),
            ))
            .first(c)
            .await
            .optional()
    })?;
    let Some((stored, movement)) = found else {
        return Ok(Adjusted::KeyConflict);
    };
    if stored != fingerprint {
        return Ok(Adjusted::KeyConflict);
    }
    let now = of(conn, std::slice::from_ref(&movement.product_id)).await?;
    Ok(match now.into_iter().next() {
        Some(stock) => Adjusted::Replayed(stock, movement),
        None => Adjusted::NotFound,
    })
}

/// A page of a product's movements, newest first, before `before_id`.
pub async fn movements(
    conn: &mut DbConn,
    product_id: &str,
    before_id: Option<&str>,
    limit: i64,
) -> Result<Vec<MovementRow>, DbError> {
    Ok(db_run!(conn, |c| {
        let mut q = stock_movements::table
            .filter(stock_movements::product_id.eq(product_id))
            .into_boxed();
        if let Some(before) = before_id {
            q = q.filter(stock_movements::id.lt(before));
        }
        keyset::limit(
            q.order(stock_movements::id.desc())
                .select(MovementRow::as_select()),
            limit,
        )
        .load(c)
        .await
    })?)
}

/// Deletes idempotency keys older than `before`.
pub async fn prune_requests(conn: &mut DbConn, before: NaiveDateTime) -> Result<usize, DbError> {
    Ok(db_run!(conn, |c| {
        diesel::delete(
            stock_adjustment_requests::table
                .filter(stock_adjustment_requests::created_at.lt(before)),
        )
        .execute(c)
        .await
    })?)
}
