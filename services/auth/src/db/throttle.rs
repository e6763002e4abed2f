//! Failed-login counters. Each attempt is counted before its password is checked, with a
//! compare-and-set on the stored state, so parallel attempts are counted one by one and none
//! slips past the limit.

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run,
};
use diesel::{ExpressionMethods as _, OptionalExtension as _, QueryDsl as _};
use diesel_async::RunQueryDsl as _;

use super::schema::login_throttles;
use crate::domain::throttle::ThrottleState;

/// The columns a state is read from.
pub(super) const COLUMNS: (
    login_throttles::attempts,
    login_throttles::last_attempt_at,
    login_throttles::blocked_until,
) = (
    login_throttles::attempts,
    login_throttles::last_attempt_at,
    login_throttles::blocked_until,
);

/// [`COLUMNS`] as read.
pub(super) type Stored = (i64, chrono::NaiveDateTime, Option<chrono::NaiveDateTime>);

/// The state of a row read as [`COLUMNS`].
pub(super) fn state((attempts, last_attempt_at, blocked_until): Stored) -> ThrottleState {
    ThrottleState {
        attempts,
        last_attempt_at,
        blocked_until,
    }
}

/// The stored state of `key`.
pub async fn get(conn: &mut DbConn, key: &str) -> Result<Option<ThrottleState>, DbError> {
    let row: Option<Stored> = db_run!(conn, |c| {
        login_throttles::table
            .find(key)
            .select(COLUMNS)
            .first(c)
            .await
            .optional()
    })?;
    Ok(row.map(state))
}

/// Replaces `previous` with `next` if the stored state is still `previous` (or absent when
/// `previous` is `None`). False if another attempt changed it first.
pub async fn compare_and_set(
    conn: &mut DbConn,
    key: &str,
    previous: Option<&ThrottleState>,
    next: &ThrottleState,
) -> Result<bool, DbError> {
    let changed = match previous {
        None => db_run!(conn, |c| {
            diesel::insert_into(login_throttles::table)
                .values((
                    login_throttles::throttle_key.eq(key),
                    login_throttles::attempts.eq(next.attempts),
                    login_throttles::last_attempt_at.eq(next.last_attempt_at),
                    login_throttles::blocked_until.eq(next.blocked_until),
                ))
                .on_conflict_do_nothing()
                .prepared()
                .execute(c)
                .await
        })?,
        Some(previous) => db_run!(conn, |c| {
            diesel::update(
                login_throttles::table
                    .filter(login_throttles::throttle_key.eq(key))
                    .filter(login_throttles::attempts.eq(previous.attempts))
                    .filter(login_throttles::last_attempt_at.eq(previous.last_attempt_at)),
            )
            .set((
                login_throttles::attempts.eq(next.attempts),
                login_throttles::last_attempt_at.eq(next.last_attempt_at),
                login_throttles::blocked_until.eq(next.blocked_until),
            ))
            .prepared()
            .execute(c)
            .await
        })?,
    };
    Ok(changed == 1)
}
