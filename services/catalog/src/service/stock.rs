//! Stock: adjustments, reads (never cached), movements, and reservations that can never
//! oversell.

use std::time::Duration;

use backbone_common::{error::FieldViolation, page};

use super::{Caller, Catalog, check_ids, page_cursor, page_size};
use crate::{
    db::{
        self,
        models::{MovementRow, ReservationItemRow, ReservationRow},
        reservations::{Finish, Reserved},
        stock::{Adjusted, Adjustment},
    },
    domain::{
        self,
        product::ProductStatus,
        stock::{
            self as rules, MovementKind, Reservation, ReservationItem, ReservationState, Stock,
        },
    },
    error::CatalogError,
};

impl Catalog {
    /// Adds or removes on-hand units; with `request_id`, at most once per key.
    pub async fn adjust_stock(
        &self,
        caller: &Caller,
        product_id: &str,
        delta: i64,
        reason: &str,
        request_id: &str,
    ) -> Result<(Stock, MovementRow), CatalogError> {
        let mut violations = Vec::new();
        if product_id.is_empty() {
            violations.push(FieldViolation::new("product_id", "is required"));
        }
        if delta == 0 || !(-1_000_000..=1_000_000).contains(&delta) {
            violations.push(FieldViolation::new(
                "delta",
                "must be between -1,000,000 and 1,000,000 and not 0",
            ));
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            violations.push(FieldViolation::new("reason", "must be 1 to 500 characters"));
        }
        if !request_id.is_empty() && !(8..=255).contains(&request_id.len()) {
            violations.push(FieldViolation::new(
                "request_id",
                "must be 8 to 255 characters",
            ));
        }
        if !violations.is_empty() {
            return Err(CatalogError::InvalidArgument(violations));
        }
        let now = domain::now();
        let adjustment = Adjustment {
            movement: MovementRow {
                id: domain::new_id(),
                product_id: product_id.to_owned(),
                kind: MovementKind::Adjustment.as_str().to_owned(),
                delta,
                on_hand_after: 0,
                reason: reason.to_owned(),
                reservation_id: None,
                actor_id: caller.actor(),
                created_at: now,
            },
            request: (!request_id.is_empty()).then(|| {
                (
                    request_id.to_owned(),
                    format!("{product_id}|{delta}|{reason}"),
                )
            }),
        };
        let mut conn = self.conn().await?;
        match db::stock::adjust(&mut conn, &adjustment).await? {
            Adjusted::Applied(stock, movement) | Adjusted::Replayed(stock, movement) => {
                Ok((stock.into(), movement))
            }
            Adjusted::KeyConflict => Err(CatalogError::RequestIdConflict),
            Adjusted::Insufficient(stock) => Err(CatalogError::AdjustmentBelowReserved {
                reserved: stock.reserved,
            }),
            Adjusted::NotFound => Err(CatalogError::NotFound { what: "product" }),
        }
    }

    /// Stock of products the caller may see, in request order, and the ids missing.
    pub async fn stock_of(
        &self,
        caller: &Caller,
        ids: &[String],
    ) -> Result<(Vec<Stock>, Vec<String>), CatalogError> {
        let ids = check_ids(ids, "product_ids")?;
        let visible: Vec<String> = if caller.sees_all() {
            ids.clone()
        } else {
            // Visibility follows the (possibly cached) product; the numbers never come from
            // the cache.
            self.load(&ids)
                .await?
                .iter()
                .filter(|p| p.status == ProductStatus::Active)
                .map(|p| p.id.clone())
                .collect()
        };
        let mut conn = self.conn().await?;
        let rows = db::stock::of(&mut conn, &visible).await?;
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match rows.iter().find(|r| r.product_id == id) {
                Some(row) => found.push(Stock::from(row.clone())),
                None => missing.push(id),
            }
        }
        Ok((found, missing))
    }

    /// A page of a product's movements, newest first.
    pub async fn movements(
        &self,
        product_id: &str,
        size: i32,
        token: &str,
    ) -> Result<(Vec<MovementRow>, String), CatalogError> {
        if product_id.is_empty() {
            return Err(CatalogError::field("product_id", "is required"));
        }
        let size = page_size(size)?;
        let query = format!("movements|{product_id}");
        let before = page_cursor(&query, token)?;
        let mut conn = self.conn().await?;
        let mut rows =
            db::stock::movements(&mut conn, product_id, before.as_deref(), size + 1).await?;
        let next = if rows.len() as i64 > size {
            rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            rows.last()
                .map(|r| page::encode(&query, &r.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows, next))
    }

    /// Holds every item or none; idempotent on the reservation id.
    pub async fn reserve(
        &self,
        caller: &Caller,
        id: &str,
        items: &[ReservationItem],
        ttl: Option<Duration>,
    ) -> Result<Reservation, CatalogError> {
        let mut violations = Vec::new();
        if let Err(reason) = rules::check_reservation_id(id) {
            violations.push(FieldViolation::new("reservation_id", reason));
        }
        if items.is_empty() || items.len() > rules::MAX_ITEMS {
            violations.push(FieldViolation::new("items", "must hold 1 to 100 items"));
        }
        for (i, item) in items.iter().enumerate() {
            if item.product_id.is_empty() {
                violations.push(FieldViolation::new(
                    format!("items[{i}].product_id"),
                    "is required",
                ));
            } else if items[..i].iter().any(|o| o.product_id == item.product_id) {
                violations.push(FieldViolation::new(
                    format!("items[{i}].product_id"),
                    "repeats an earlier item's product",
                ));
            }
            if !(1..=rules::MAX_QUANTITY).contains(&item.quantity) {
                violations.push(FieldViolation::new(
                    format!("items[{i}].quantity"),
                    "must be 1 to 1,000,000",
                ));
            }
        }
        let ttl = ttl.unwrap_or(rules::DEFAULT_TTL);
        if ttl < Duration::from_secs(1) || ttl > rules::MAX_TTL {
            violations.push(FieldViolation::new("ttl", "must be 1 second to 24 hours"));
        }
        if !violations.is_empty() {
            return Err(CatalogError::InvalidArgument(violations));
        }
        let fingerprint = rules::fingerprint(items, ttl);
        let now = domain::now();
        let row = ReservationRow {
            id: id.to_owned(),
            fingerprint: fingerprint.clone(),
            state: ReservationState::Held.as_str().to_owned(),
            owner_id: caller.actor(),
            created_at: now,
            expires_at: domain::after(now, ttl),
            finished_at: None,
        };
        let item_rows: Vec<ReservationItemRow> = items
            .iter()
            .enumerate()
            .map(|(position, item)| ReservationItemRow {
                reservation_id: id.to_owned(),
                position: i32::try_from(position).unwrap_or(i32::MAX),
                product_id: item.product_id.clone(),
                quantity: item.quantity,
            })
            .collect();
        let mut conn = self.conn().await?;
        match db::reservations::reserve(&mut conn, &row, &item_rows).await? {
            Reserved::Created => Ok(row.into_reservation(item_rows)),
            Reserved::Exists(existing, items) => {
                if existing.fingerprint == fingerprint {
                    Ok(existing.into_reservation(items))
                } else {
                    Err(CatalogError::ReservationIdConflict)
                }
            }
            Reserved::Short(short) => {
                if short.iter().any(|s| !s.for_sale) {
                    Err(CatalogError::ProductNotAvailable(
                        short.into_iter().filter(|s| !s.for_sale).collect(),
                    ))
                } else {
                    Err(CatalogError::InsufficientStock(short))
                }
            }
        }
    }

    /// A reservation.
    pub async fn reservation(&self, id: &str) -> Result<Reservation, CatalogError> {
        required_reservation_id(id)?;
        let mut conn = self.conn().await?;
        db::reservations::get(&mut conn, id)
            .await?
            .map(|(row, items)| row.into_reservation(items))
            .ok_or(CatalogError::NotFound {
                what: "reservation",
            })
    }

    /// Commits a HELD reservation (idempotent once committed).
    pub async fn commit(&self, caller: &Caller, id: &str) -> Result<Reservation, CatalogError> {
        self.finish(caller, id, Finish::Commit).await
    }

    /// Releases a HELD reservation (idempotent once released or expired).
    pub async fn release(&self, caller: &Caller, id: &str) -> Result<Reservation, CatalogError> {
        self.finish(caller, id, Finish::Release).await
    }

    async fn finish(
        &self,
        caller: &Caller,
        id: &str,
        how: Finish,
    ) -> Result<Reservation, CatalogError> {
        required_reservation_id(id)?;
        // The common case in one transaction: still HELD, moved now. Otherwise the reservation
        // as it stands says why not (or that it was done before).
        let mut conn = self.conn().await?;
        let moved =
            db::reservations::finish(&mut conn, id, how, &caller.actor(), domain::now()).await?;
        drop(conn);
        let after = match moved {
            Some((row, items)) => row.into_reservation(items),
            None => self.reservation(id).await?,
        };
        match (how, after.state) {
            (Finish::Commit, ReservationState::Committed)
            | (Finish::Release, ReservationState::Released | ReservationState::Expired) => {
                Ok(after)
            }
            (Finish::Commit, ReservationState::Held) => {
                Err(CatalogError::ReservationNotHeld("expired"))
            }
            (Finish::Commit, state) => Err(CatalogError::ReservationNotHeld(match state {
                ReservationState::Released => "released",
                _ => "expired",
            })),
            (Finish::Release, _) => Err(CatalogError::ReservationAlreadyCommitted),
            (Finish::Expire, _) => Ok(after),
        }
    }

    /// Releases up to `limit` reservations past their expiry; returns how many this replica
    /// released (others racing on the same rows get none of them twice).
    pub async fn expire_reservations(&self, limit: i64) -> Result<usize, CatalogError> {
        let now = domain::now();
        let mut conn = self.conn().await?;
        let ids = db::reservations::expired(&mut conn, now, limit).await?;
        let mut released = 0;
        for id in ids {
            if db::reservations::finish(&mut conn, &id, Finish::Expire, "sweeper", now)
                .await?
                .is_some()
            {
                released += 1;
            }
        }
        Ok(released)
    }
}

/// A reservation id must be given.
fn required_reservation_id(id: &str) -> Result<(), CatalogError> {
    if id.is_empty() {
        return Err(CatalogError::field("reservation_id", "is required"));
    }
    Ok(())
}
