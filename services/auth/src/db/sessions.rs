//! Sessions and their refresh tokens. Rotation is one conditional update (`rotated_at IS NULL`),
//! so of any number of parallel refreshes with the same token exactly one rotates it; the others
//! find the successor it sealed.

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

use crate::domain::throttle::ThrottleState;

use super::{
    models::{AuditRow, RefreshTokenRow, SessionRow, SocialIdentityRow, UserRow},
    schema::{audit_events, login_throttles, refresh_tokens, sessions, social_identities, users},
    throttle,
};

/// Stores a new session with its first refresh token and the login's audit row, and clears the
/// account's failed-login counter, in one transaction.
pub async fn create(
    conn: &mut DbConn,
    session: &SessionRow,
    refresh: &RefreshTokenRow,
    audit: &AuditRow,
    clear_throttle: Option<&str>,
) -> Result<(), DbError> {
    let clear = clear_throttle.unwrap_or("");
    db_run!(conn, |c| {
        transaction!(c, async |tx| {
            // One round trip on PostgreSQL: the session and its token (which refers to it) in
            // one step, the audit row and the counter beside them.
            pipeline!(
                tx,
                h,
                {
                    diesel::insert_into(sessions::table)
                        .values(session)
                        .prepared()
                        .execute(h)
                        .await?;
                    diesel::insert_into(refresh_tokens::table)
                        .values(refresh)
                        .prepared()
                        .execute(h)
                        .await
                },
                diesel::insert_into(audit_events::table)
                    .values(audit)
                    .prepared()
                    .execute(h)
                    .await,
                diesel::delete(login_throttles::table.find(clear))
                    .execute(h)
                    .await,
            )
        })
        .await
    })?;
    Ok(())
}

/// What a login starts from, in one round trip on PostgreSQL.
#[derive(Debug)]
pub struct LoginContext {
    /// The account with the normalized address, if any.
    pub user: Option<UserRow>,
    /// Its linked social identities, for the answer, by link time.
    pub identities: Vec<SocialIdentityRow>,
    /// The stored failed-login states of the login's keys, in their order.
    pub throttles: [Option<ThrottleState>; 2],
}

/// The account with this normalized address, its social identities and the stored failed-login
/// states of `keys`: four statements, one round trip on PostgreSQL.
pub async fn login_context(
    conn: &mut DbConn,
    email_normalized: &str,
    keys: [&str; 2],
) -> Result<LoginContext, DbError> {
    let (user, identities, first, second) = db_run!(conn, |c| {
        pipeline!(
            c,
            h,
            users::table
                .filter(users::email_normalized.eq(email_normalized))
                .select(UserRow::as_select())
                .first(h)
                .await
                .optional(),
            social_identities::table
                .inner_join(users::table)
                .filter(users::email_normalized.eq(email_normalized))
                .order((social_identities::linked_at, social_identities::provider))
                .select(SocialIdentityRow::as_select())
                .load(h)
                .await,
            throttle::read_stored!(h, keys[0]),
            throttle::read_stored!(h, keys[1]),
        )
    })?;
    Ok(LoginContext {
        user,
        identities,
        throttles: [first.map(throttle::state), second.map(throttle::state)],
    })
}

/// A refresh token with its session and user.
pub type RefreshContext = (RefreshTokenRow, SessionRow, UserRow);

/// The refresh token with this hash, its session and its user.
pub async fn refresh_context(
    conn: &mut DbConn,
    token_hash: &str,
) -> Result<Option<RefreshContext>, DbError> {
    Ok(db_run!(conn, |c| {
        refresh_tokens::table
            .inner_join(sessions::table.inner_join(users::table))
            .filter(refresh_tokens::token_hash.eq(token_hash))
            .select((
                RefreshTokenRow::as_select(),
                SessionRow::as_select(),
                UserRow::as_select(),
            ))
            .first(c)
            .await
            .optional()
    })?)
}

/// The refresh token with this hash, alone.
pub async fn refresh_token(
    conn: &mut DbConn,
    token_hash: &str,
) -> Result<Option<RefreshTokenRow>, DbError> {
    Ok(db_run!(conn, |c| {
        refresh_tokens::table
            .find(token_hash)
            .select(RefreshTokenRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Rotates `parent` to `successor` if nobody has yet: marks the parent rotated with the sealed
/// successor pair, stores the successor and extends the session. False if another call rotated
/// it first (the caller then reads the parent again and finds that call's successor).
pub async fn rotate(
    conn: &mut DbConn,
    parent_hash: &str,
    successor: &RefreshTokenRow,
    sealed_pair: &str,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            // The first statement writes, so on SQLite the transaction waits for the write lock
            // instead of failing on a stale snapshot; on PostgreSQL a parallel rotation waits
            // for this row's lock and then finds `rotated_at` set.
            let claimed = diesel::update(
                refresh_tokens::table
                    .filter(refresh_tokens::token_hash.eq(parent_hash))
                    .filter(refresh_tokens::rotated_at.is_null()),
            )
            .set((
                refresh_tokens::rotated_at.eq(Some(now)),
                refresh_tokens::successor_hash.eq(Some(&successor.token_hash)),
                refresh_tokens::successor_sealed.eq(Some(sealed_pair)),
            ))
            .prepared()
            .execute(tx)
            .await?;
            if claimed == 0 {
                return Ok(false);
            }
            diesel::insert_into(refresh_tokens::table)
                .values(successor)
                .prepared()
                .execute(tx)
                .await?;
            diesel::update(sessions::table.find(&successor.session_id))
                .set((
                    sessions::last_used_at.eq(now),
                    sessions::expires_at.eq(successor.expires_at),
                ))
                .prepared()
                .execute(tx)
                .await?;
            Ok::<_, diesel::result::Error>(true)
        })
        .await
    })?)
}

/// Revokes one session of `user_id` (unless already revoked), with the audit row. True if it
/// was active.
pub async fn revoke(
    conn: &mut DbConn,
    session_id: &str,
    user_id: &str,
    reason: &str,
    now: NaiveDateTime,
    audit: &AuditRow,
) -> Result<bool, DbError> {
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let revoked = diesel::update(
                sessions::table
                    .filter(sessions::id.eq(session_id))
                    .filter(sessions::user_id.eq(user_id))
                    .filter(sessions::revoked_at.is_null()),
            )
            .set((
                sessions::revoked_at.eq(now),
                sessions::revoke_reason.eq(reason),
            ))
            .prepared()
            .execute(tx)
            .await?;
            if revoked > 0 {
                diesel::insert_into(audit_events::table)
                    .values(audit)
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            Ok::<_, diesel::result::Error>(revoked > 0)
        })
        .await
    })?)
}

/// Revokes every active session of `user_id` except `keep`, with the audit row. Returns how
/// many were revoked.
pub async fn revoke_others(
    conn: &mut DbConn,
    user_id: &str,
    keep: &str,
    now: NaiveDateTime,
    audit: &AuditRow,
) -> Result<usize, DbError> {
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let revoked =
                super::revoke_user_sessions!(tx, user_id, keep, "revoked_by_user", now).await?;
            diesel::insert_into(audit_events::table)
                .values(audit)
                .prepared()
                .execute(tx)
                .await?;
            Ok::<_, diesel::result::Error>(revoked)
        })
        .await
    })?)
}

/// A page of `user_id`'s active sessions, ordered by id, after `after_id`.
pub async fn list_active(
    conn: &mut DbConn,
    user_id: &str,
    after_id: Option<&str>,
    limit: i64,
    now: NaiveDateTime,
) -> Result<Vec<SessionRow>, DbError> {
    let after = after_id.unwrap_or("");
    Ok(db_run!(conn, |c| {
        keyset::limit(
            sessions::table
                .filter(sessions::user_id.eq(user_id))
                .filter(sessions::revoked_at.is_null())
                .filter(sessions::expires_at.gt(now))
                .filter(sessions::id.gt(after))
                .order(sessions::id.asc())
                .select(SessionRow::as_select()),
            limit,
        )
        .load(c)
        .await
    })?)
}
