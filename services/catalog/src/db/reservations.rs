//! Reservations. Reserving is all or nothing in one transaction: the reservation row with its
//! items (its id decides idempotency), and each item's stock reserved with a conditional update
//! that only succeeds while enough units are available. On PostgreSQL both go out in one round
//! trip; on SQLite the reservation row comes first, so the transaction holds the write lock from
//! its first statement. Leaving HELD is a conditional update on the state, so a
//! reservation is committed, released or expired at most once, whoever races.

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run, keyset,
};
use chrono::NaiveDateTime;
use diesel::{
    ExpressionMethods as _, OptionalExtension as _, QueryDsl as _, SelectableHelper as _,
};
use diesel_async::RunQueryDsl as _;

use super::{
    TxError, is_unique_violation,
    models::{MovementRow, ReservationItemRow, ReservationRow},
    schema::{products, reservation_items, reservations, stock, stock_movements},
};
use crate::domain::{
    product::ProductStatus,
    stock::{MovementKind, ReservationState},
};

/// One item that could not be held, with what was available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Short {
    /// The product.
    pub product_id: String,
    /// Units asked for.
    pub requested: i64,
    /// Units available (0 for unknown or unavailable products).
    pub available: i64,
    /// False if the product is unknown or not ACTIVE.
    pub for_sale: bool,
}

/// What a reserve did.
#[derive(Debug, Clone)]
pub enum Reserved {
    /// Held now.
    Created,
    /// The id exists: the stored reservation (compare fingerprints).
    Exists(ReservationRow, Vec<ReservationItemRow>),
    /// Some items could not be held; nothing was.
    Short(Vec<Short>),
}

/// Why a reservation was not stored.
enum Refused {
    /// The id exists.
    Exists,
    /// These items are short.
    Short(Vec<Short>),
}

/// Holds every item of `reservation` or none.
pub async fn reserve(
    conn: &mut DbConn,
    reservation: &ReservationRow,
    items: &[ReservationItemRow],
) -> Result<Reserved, DbError> {
    // Lock stock rows in one order so two multi-item reservations cannot deadlock.
    let mut order: Vec<&ReservationItemRow> = items.iter().collect();
    order.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    let result: Result<(), TxError<Refused>> = db_run!(conn, |c| {
        transaction!(c, async |tx| {
            // The reservation with its items, and the stock held, go out together (one round
            // trip on PostgreSQL): a reservation made before, or an item short, rolls all back.
            let pipelined = pipeline!(
                tx,
                h,
                {
                    diesel::insert_into(reservations::table)
                        .values(reservation)
                        .prepared()
                        .execute(h)
                        .await?;
                    for item in items {
                        diesel::insert_into(reservation_items::table)
                            .values(item)
                            .prepared()
                            .execute(h)
                            .await?;
                    }
                    diesel::QueryResult::Ok(())
                },
                {
                    let mut short = Vec::new();
                    for item in &order {
                        let held = diesel::update(
                            stock::table
                                .filter(stock::product_id.eq(&item.product_id))
                                .filter((stock::on_hand - stock::reserved).ge(item.quantity))
                                .filter(
                                    stock::product_id.eq_any(
                                        products::table
                                            .filter(
                                                products::status.eq(ProductStatus::Active.as_str()),
                                            )
                                            .select(products::id),
                                    ),
                                ),
                        )
                        .set((
                            stock::reserved.eq(stock::reserved + item.quantity),
                            stock::updated_at.eq(Some(reservation.created_at)),
                        ))
                        .prepared()
                        .execute(h)
                        .await?;
                        if held == 0 {
                            let state: Option<(i64, i64, String)> = stock::table
                                .inner_join(products::table)
                                .filter(stock::product_id.eq(&item.product_id))
                                .select((stock::on_hand, stock::reserved, products::status))
                                .first(h)
                                .await
                                .optional()?;
                            let (available, for_sale) = match state {
                                Some((on_hand, reserved, status)) => {
                                    (on_hand - reserved, status == ProductStatus::Active.as_str())
                                }
                                None => (0, false),
                            };
                            short.push(Short {
                                product_id: item.product_id.clone(),
                                requested: item.quantity,
                                available: if for_sale { available } else { 0 },
                                for_sale,
                            });
                        }
                    }
                    diesel::QueryResult::Ok(short)
                },
            );
            let ((), short) = match pipelined {
                // A reservation made before fails its insert, and what PostgreSQL was sent after
                // it fails as aborted: the first error is the insert's.
                Err(err) if is_unique_violation(&err) => {
                    return Err(TxError::Abort(Refused::Exists));
                }
                other => other?,
            };
            if !short.is_empty() {
                return Err(TxError::Abort(Refused::Short(short)));
            }
            Ok(())
        })
        .await
    });
    match result {
        Ok(()) => Ok(Reserved::Created),
        Err(TxError::Abort(Refused::Short(mut short))) => {
            // Report in request order.
            short.sort_by_key(|s| items.iter().position(|i| i.product_id == s.product_id));
            Ok(Reserved::Short(short))
        }
        Err(TxError::Abort(Refused::Exists)) => match get(conn, &reservation.id).await? {
            Some((row, items)) => Ok(Reserved::Exists(row, items)),
            // Deleted in between (never happens: reservations are kept); report it as short.
            None => Ok(Reserved::Short(Vec::new())),
        },
        Err(TxError::Diesel(err)) => Err(err.into()),
    }
}

/// A reservation with its items.
pub async fn get(
    conn: &mut DbConn,
    id: &str,
) -> Result<Option<(ReservationRow, Vec<ReservationItemRow>)>, DbError> {
    let row: Option<ReservationRow> = db_run!(conn, |c| {
        reservations::table
            .find(id)
            .select(ReservationRow::as_select())
            .first(c)
            .await
            .optional()
    })?;
    let Some(row) = row else {
        return Ok(None);
    };
    let items: Vec<ReservationItemRow> = db_run!(conn, |c| {
        reservation_items::table
            .filter(reservation_items::reservation_id.eq(id))
            .select(ReservationItemRow::as_select())
            .load(c)
            .await
    })?;
    Ok(Some((row, items)))
}

/// How a HELD reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Sold: on hand and reserved both drop, a movement per item.
    Commit,
    /// Given back by the owner.
    Release,
    /// Given back by the sweeper (only if past its expiry).
    Expire,
}

/// Moves the reservation out of HELD if it is still HELD (and, except for Expire, not past its
/// expiry; for Expire, past it), adjusting stock in the same transaction. The reservation as it
/// is after, if this call did it.
pub async fn finish(
    conn: &mut DbConn,
    id: &str,
    how: Finish,
    actor_id: &str,
    now: NaiveDateTime,
) -> Result<Option<(ReservationRow, Vec<ReservationItemRow>)>, DbError> {
    let state = match how {
        Finish::Commit => ReservationState::Committed,
        Finish::Release => ReservationState::Released,
        Finish::Expire => ReservationState::Expired,
    };
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let mut target = diesel::update(reservations::table)
                .filter(reservations::id.eq(id))
                .filter(reservations::state.eq(ReservationState::Held.as_str()))
                .into_boxed();
            target = match how {
                Finish::Expire => target.filter(reservations::expires_at.le(now)),
                Finish::Commit => target.filter(reservations::expires_at.gt(now)),
                Finish::Release => target,
            };
            // The guarded change and the items go out together (one round trip on PostgreSQL).
            let (moved, items) = pipeline!(
                tx,
                h,
                target
                    .set((
                        reservations::state.eq(state.as_str()),
                        reservations::finished_at.eq(Some(now)),
                    ))
                    .returning(ReservationRow::as_returning())
                    .prepared()
                    .get_result::<ReservationRow>(h)
                    .await
                    .optional(),
                reservation_items::table
                    .filter(reservation_items::reservation_id.eq(id))
                    .order(reservation_items::product_id)
                    .select(ReservationItemRow::as_select())
                    .load::<ReservationItemRow>(h)
                    .await,
            )?;
            let Some(row) = moved else {
                return Ok::<_, diesel::result::Error>(None);
            };
            for item in &items {
                if how == Finish::Commit {
                    let on_hand: i64 = diesel::update(stock::table.find(&item.product_id))
                        .set((
                            stock::on_hand.eq(stock::on_hand - item.quantity),
                            stock::reserved.eq(stock::reserved - item.quantity),
                            stock::updated_at.eq(Some(now)),
                        ))
                        .returning(stock::on_hand)
                        .prepared()
                        .get_result(tx)
                        .await?;
                    diesel::insert_into(stock_movements::table)
                        .values(&MovementRow {
                            id: crate::domain::new_id(),
                            product_id: item.product_id.clone(),
                            kind: MovementKind::ReservationCommit.as_str().to_owned(),
                            delta: -item.quantity,
                            on_hand_after: on_hand,
                            reason: String::new(),
                            reservation_id: Some(id.to_owned()),
                            actor_id: actor_id.to_owned(),
                            created_at: now,
                        })
                        .prepared()
                        .execute(tx)
                        .await?;
                } else {
                    diesel::update(stock::table.find(&item.product_id))
                        .set((
                            stock::reserved.eq(stock::reserved - item.quantity),
                            stock::updated_at.eq(Some(now)),
                        ))
                        .prepared()
                        .execute(tx)
                        .await?;
                }
            }
            Ok(Some((row, items)))
        })
        .await
    })?)
}

/// Ids of HELD reservations past their expiry, oldest first.
pub async fn expired(
    conn: &mut DbConn,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    Ok(db_run!(conn, |c| {
        keyset::limit(
            reservations::table
                .filter(reservations::state.eq(ReservationState::Held.as_str()))
                .filter(reservations::expires_at.le(now))
                .order(reservations::expires_at)
                .select(reservations::id),
            limit,
        )
        .load(c)
        .await
    })?)
}
