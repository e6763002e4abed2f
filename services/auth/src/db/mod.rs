//! The auth service's storage: its Diesel schema, row types, and one function per unit of work
//! (each a single statement or one transaction), written once for both backends with `db_run!`.

/// Revokes the active sessions of `$user_id` except `$keep` (`""` keeps none) with `$reason`,
/// on the transaction `$tx`; evaluates to the future of the number revoked. A macro rather than
/// a function because the same body runs on either backend's connection type.
macro_rules! revoke_user_sessions {
    ($tx:expr, $user_id:expr, $keep:expr, $reason:expr, $now:expr) => {{
        use backbone_common::db::Prepared as _;
        use $crate::db::schema::sessions;
        diesel::update(
            sessions::table
                .filter(sessions::user_id.eq($user_id))
                .filter(sessions::id.ne($keep))
                .filter(sessions::revoked_at.is_null()),
        )
        .set((
            sessions::revoked_at.eq($now),
            sessions::revoke_reason.eq($reason),
        ))
        .prepared()
        .execute($tx)
    }};
}
pub(crate) use revoke_user_sessions;

pub mod audit;
pub mod keys;
pub mod models;
pub mod recovery;
pub mod schema;
pub mod service_accounts;
pub mod sessions;
pub mod social;
pub mod throttle;
pub mod users;

use diesel::result::{DatabaseErrorKind, Error};

/// True if `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &Error) -> bool {
    matches!(
        err,
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}
