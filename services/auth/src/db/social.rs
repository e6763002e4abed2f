//! Social login: linked provider identities and the single-use state of flows in progress.

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run,
};
use chrono::NaiveDateTime;
use diesel::{
    ExpressionMethods as _, OptionalExtension as _, QueryDsl as _, SelectableHelper as _,
};
use diesel_async::RunQueryDsl as _;

use super::{
    models::{
        AuditRow, RefreshTokenRow, SessionRow, SocialIdentityRow, SocialLoginStateRow, UserRow,
    },
    schema::{
        audit_events, refresh_tokens, sessions, social_identities, social_login_states, users,
    },
};

/// How long a used or expired state row is kept before [`insert_state`] deletes it.
const STATE_RETENTION_HOURS: i64 = 1;

/// Stores a new flow's state, and deletes states that ended more than an hour ago.
pub async fn insert_state(conn: &mut DbConn, state: &SocialLoginStateRow) -> Result<(), DbError> {
    let stale = state.created_at - chrono::Duration::hours(STATE_RETENTION_HOURS);
    db_run!(conn, |c| {
        transaction!(c, async |tx| {
            diesel::delete(
                social_login_states::table.filter(social_login_states::expires_at.lt(stale)),
            )
            .execute(tx)
            .await?;
            diesel::insert_into(social_login_states::table)
                .values(state)
                .prepared()
                .execute(tx)
                .await?;
            Ok::<_, diesel::result::Error>(())
        })
        .await
    })?;
    Ok(())
}

/// The flow state with this hash.
pub async fn state(
    conn: &mut DbConn,
    state_hash: &str,
) -> Result<Option<SocialLoginStateRow>, DbError> {
    Ok(db_run!(conn, |c| {
        social_login_states::table
            .find(state_hash)
            .select(SocialLoginStateRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Marks the state used if it is still unused and unexpired; false if another call got it
/// first or it has expired. The single-use guarantee is this one conditional update.
pub async fn consume_state(
    conn: &mut DbConn,
    state_hash: &str,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    let updated = db_run!(conn, |c| {
        diesel::update(
            social_login_states::table
                .filter(social_login_states::state_hash.eq(state_hash))
                .filter(social_login_states::used_at.is_null())
                .filter(social_login_states::expires_at.gt(now)),
        )
        .set(social_login_states::used_at.eq(now))
        .prepared()
        .execute(c)
        .await
    })?;
    Ok(updated == 1)
}

/// The identity `subject` at `provider`, if linked.
pub async fn identity(
    conn: &mut DbConn,
    provider: &str,
    subject: &str,
) -> Result<Option<SocialIdentityRow>, DbError> {
    Ok(db_run!(conn, |c| {
        social_identities::table
            .find((provider, subject))
            .select(SocialIdentityRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// The identities linked to any of `user_ids`, by user and then link time.
pub async fn identities_of(
    conn: &mut DbConn,
    user_ids: &[String],
) -> Result<Vec<SocialIdentityRow>, DbError> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(db_run!(conn, |c| {
        social_identities::table
            .filter(social_identities::user_id.eq_any(user_ids))
            .order((
                social_identities::user_id,
                social_identities::linked_at,
                social_identities::provider,
            ))
            .select(SocialIdentityRow::as_select())
            .load(c)
            .await
    })?)
}

/// Why a social sign-up or link was not stored.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The identity, or the new account's email, was taken by a parallel call.
    #[error("taken")]
    Taken,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn link_result(result: Result<(), diesel::result::Error>) -> Result<(), LinkError> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if super::is_unique_violation(&err) => Err(LinkError::Taken),
        Err(err) => Err(LinkError::Db(err.into())),
    }
}

/// A new account made from a provider identity, with its first session: all stored in one
/// transaction, or nothing.
#[derive(Debug, Clone, Copy)]
pub struct SocialSignUp<'a> {
    /// The account.
    pub user: &'a UserRow,
    /// Its linked identity.
    pub identity: &'a SocialIdentityRow,
    /// Its first session.
    pub session: &'a SessionRow,
    /// The session's first refresh token.
    pub refresh: &'a RefreshTokenRow,
    /// The audit rows (sign-up, social login).
    pub audits: &'a [AuditRow],
}

/// Stores a [`SocialSignUp`].
pub async fn sign_up(conn: &mut DbConn, new: SocialSignUp<'_>) -> Result<(), LinkError> {
    link_result(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            diesel::insert_into(users::table)
                .values(new.user)
                .prepared()
                .execute(tx)
                .await?;
            diesel::insert_into(social_identities::table)
                .values(new.identity)
                .prepared()
                .execute(tx)
                .await?;
            diesel::insert_into(sessions::table)
                .values(new.session)
                .prepared()
                .execute(tx)
                .await?;
            diesel::insert_into(refresh_tokens::table)
                .values(new.refresh)
                .prepared()
                .execute(tx)
                .await?;
            for audit in new.audits {
                diesel::insert_into(audit_events::table)
                    .values(audit)
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            Ok(())
        })
        .await
    }))
}

/// Links an identity to an existing account and writes its audit row, in one transaction.
pub async fn link(
    conn: &mut DbConn,
    identity: &SocialIdentityRow,
    audit: &AuditRow,
) -> Result<(), LinkError> {
    link_result(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            diesel::insert_into(social_identities::table)
                .values(identity)
                .prepared()
                .execute(tx)
                .await?;
            diesel::insert_into(audit_events::table)
                .values(audit)
                .prepared()
                .execute(tx)
                .await?;
            Ok(())
        })
        .await
    }))
}
