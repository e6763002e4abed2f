//! The auth service's rules, free of gRPC and SQL: accounts and roles, password policy and
//! hashing, secrets and sealing, login throttling and audit event kinds.

pub mod audit;
pub mod password;
pub mod secrets;
pub mod throttle;
pub mod user;

use chrono::{NaiveDateTime, SubsecRound as _, Utc};

/// Now, in UTC, truncated to microseconds: what both databases store exactly, so a value read
/// back compares equal to the value written.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// `now() + duration`, saturating far in the future instead of overflowing.
pub fn after(from: NaiveDateTime, duration: std::time::Duration) -> NaiveDateTime {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| from.checked_add_signed(d))
        .unwrap_or(NaiveDateTime::MAX)
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
