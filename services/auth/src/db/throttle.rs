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

/// The read of `$key`'s stored row on the connection `$c` (a `pipeline!` handle too): an
/// `Option<Stored>`, which [`state`] turns into a state.
macro_rules! read_stored {
    ($c:expr, $key:expr) => {
        $crate::db::schema::login_throttles::table
            .find($key)
            .select($crate::db::throttle::COLUMNS)
            .first::<$crate::db::throttle::Stored>($c)
            .await
            .optional()
    };
}
pub(super) use read_stored;

/// The stored state of `key`.
pub async fn get(conn: &mut DbConn, key: &str) -> Result<Option<ThrottleState>, DbError> {
    let row = db_run!(conn, |c| read_stored!(c, key))?;
    Ok(row.map(state))
}

/// The compare-and-set of one counter on the connection `$c`: the rows it changed (1 if it won).
macro_rules! compare_and_set {
    ($c:expr, $key:expr, $previous:expr, $next:expr) => {{
        let (key, next): (&str, &ThrottleState) = ($key, $next);
        match $previous {
            None => {
                diesel::insert_into(login_throttles::table)
                    .values((
                        login_throttles::throttle_key.eq(key),
                        login_throttles::attempts.eq(next.attempts),
                        login_throttles::last_attempt_at.eq(next.last_attempt_at),
                        login_throttles::blocked_until.eq(next.blocked_until),
                    ))
                    .on_conflict_do_nothing()
                    .prepared()
                    .execute($c)
                    .await
            }
            Some(previous) => {
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
                .execute($c)
                .await
            }
        }
    }};
}

/// Replaces `previous` with `next` if the stored state is still `previous` (or absent when
/// `previous` is `None`). False if another attempt changed it first.
pub async fn compare_and_set(
    conn: &mut DbConn,
    key: &str,
    previous: Option<&ThrottleState>,
    next: &ThrottleState,
) -> Result<bool, DbError> {
    let changed = db_run!(conn, |c| compare_and_set!(c, key, previous, next))?;
    Ok(changed == 1)
}

/// A change of one counter for [`compare_and_set_both`]: its key, the state read, the next.
pub type Change<'a> = (&'a str, Option<&'a ThrottleState>, &'a ThrottleState);

/// [`compare_and_set`] of two counters, in one round trip on PostgreSQL (each statement
/// commits on its own): whether each won.
pub async fn compare_and_set_both(
    conn: &mut DbConn,
    [first, second]: [Change<'_>; 2],
) -> Result<[bool; 2], DbError> {
    let (a, b) = db_run!(conn, |c| {
        pipeline!(
            c,
            h,
            compare_and_set!(h, first.0, first.1, first.2),
            compare_and_set!(h, second.0, second.1, second.2),
        )
    })?;
    Ok([a == 1, b == 1])
}
