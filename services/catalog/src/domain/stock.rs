//! Stock levels, their movements, and reservations that hold units for a while.

use std::time::Duration;

use chrono::NaiveDateTime;

/// Longest a reservation can hold units.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a reservation holds units when the caller does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// Most items per reservation.
pub const MAX_ITEMS: usize = 100;
/// Most units of one item.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// A product's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    /// The product.
    pub product_id: String,
    /// Units in stock, reserved ones included.
    pub on_hand: i64,
    /// Units held by reservations.
    pub reserved: i64,
    /// Last change.
    pub updated_at: Option<NaiveDateTime>,
}

impl Stock {
    /// Units that can still be reserved.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// Why on-hand stock changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    /// An admin's AdjustStock.
    Adjustment,
    /// A committed reservation.
    ReservationCommit,
}

impl MovementKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Adjustment => "ADJUSTMENT",
            MovementKind::ReservationCommit => "RESERVATION_COMMIT",
        }
    }

    /// From the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ADJUSTMENT" => Some(MovementKind::Adjustment),
            "RESERVATION_COMMIT" => Some(MovementKind::ReservationCommit),
            _ => None,
        }
    }
}

/// A reservation's state; only HELD holds units, and it is left at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// Units held until expiry.
    Held,
    /// Sold.
    Committed,
    /// Given back by its owner.
    Released,
    /// Given back by the sweeper after expiry.
    Expired,
}

impl ReservationState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Held => "HELD",
            ReservationState::Committed => "COMMITTED",
            ReservationState::Released => "RELEASED",
            ReservationState::Expired => "EXPIRED",
        }
    }

    /// From the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "HELD" => Some(ReservationState::Held),
            "COMMITTED" => Some(ReservationState::Committed),
            "RELEASED" => Some(ReservationState::Released),
            "EXPIRED" => Some(ReservationState::Expired),
            _ => None,
        }
    }
}

/// One line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationItem {
    /// The product.
    pub product_id: String,
    /// Units held.
    pub quantity: i64,
}

/// Units of some products held for a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Client-chosen id.
    pub id: String,
    /// Lines in request order.
    pub items: Vec<ReservationItem>,
    /// Current state.
    pub state: ReservationState,
    /// Who made it.
    pub owner_id: String,
    /// When.
    pub created_at: NaiveDateTime,
    /// When a HELD reservation is released automatically.
    pub expires_at: NaiveDateTime,
    /// When it left HELD.
    pub finished_at: Option<NaiveDateTime>,
}

/// What identifies a reservation request for idempotency: its items (in order) and ttl.
pub fn fingerprint(items: &[ReservationItem], ttl: Duration) -> String {
    let mut text = format!("ttl={}ms", ttl.as_millis());
    for item in items {
        text.push_str(&format!(";{}x{}", item.product_id, item.quantity));
    }
    text
}

/// Checks a reservation id: 1 to 128 of A-Z, a-z, 0-9, '-', '_'.
pub fn check_reservation_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("is required");
    }
    if id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("must be 1 to 128 characters of A-Z, a-z, 0-9, '-' and '_'");
    }
    Ok(())
}
