//! The catalog's rules, free of gRPC and SQL: what a valid product, category, stock change and
//! reservation are, and the orders products can be listed in.

pub mod category;
pub mod product;
pub mod stock;

use std::time::Duration;

use chrono::NaiveDateTime;

/// Now, in UTC, truncated to microseconds (what both databases store).
pub fn now() -> NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    now - chrono::Duration::nanoseconds(i64::from(now.and_utc().timestamp_subsec_nanos() % 1000))
}

/// `time` plus `duration`, saturating far in the future.
pub fn after(time: NaiveDateTime, duration: Duration) -> NaiveDateTime {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| time.checked_add_signed(d))
        .unwrap_or(NaiveDateTime::MAX)
}

/// A new time-ordered id (UUIDv7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The etag of a row `version`.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The row version an etag names, if it is one of ours.
pub fn version_of(etag: &str) -> Option<i64> {
    etag.strip_prefix("W/\"")?.strip_suffix('"')?.parse().ok()
}
