//! Email-verification and password-reset tokens (single use, hashed, expiring) and the outbox
//! their messages go to.

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
    models::{AuditRow, OneTimeTokenRow, OutboxRow},
    schema::{audit_events, one_time_tokens, outbox, users},
};

/// Stores a token (and an audit row), in one transaction.
pub async fn issue(
    conn: &mut DbConn,
    token: &OneTimeTokenRow,
    audit: Option<&AuditRow>,
) -> Result<(), DbError> {
    db_run!(conn, |c| {
        transaction!(c, async |tx| {
            diesel::insert_into(one_time_tokens::table)
                .values(token)
                .prepared()
                .execute(tx)
                .await?;
            if let Some(audit) = audit {
                diesel::insert_into(audit_events::table)
                    .values(audit)
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            Ok::<_, diesel::result::Error>(())
        })
        .await
    })?;
    Ok(())
}

/// Queues a message for the mail relay.
pub async fn enqueue(conn: &mut DbConn, message: &OutboxRow) -> Result<(), DbError> {
    db_run!(conn, |c| {
        diesel::insert_into(outbox::table)
            .values(message)
            .prepared()
            .execute(c)
            .await
    })?;
    Ok(())
}

/// The unused, unexpired token with this hash and purpose.
pub async fn usable(
    conn: &mut DbConn,
    token_hash: &str,
    purpose: &str,
    now: NaiveDateTime,
) -> Result<Option<OneTimeTokenRow>, DbError> {
    Ok(db_run!(conn, |c| {
        one_time_tokens::table
            .filter(one_time_tokens::token_hash.eq(token_hash))
            .filter(one_time_tokens::purpose.eq(purpose))
            .filter(one_time_tokens::used_at.is_null())
            .filter(one_time_tokens::expires_at.gt(now))
            .select(OneTimeTokenRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Marks the email verified by consuming the token, if the address is still the one it was
/// sent to. Returns the user id, or `None` if the token was not usable.
pub async fn verify_email(
    conn: &mut DbConn,
    token_hash: &str,
    now: NaiveDateTime,
    audit: &AuditRow,
) -> Result<Option<String>, DbError> {
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let consumed: Option<(String, String)> = diesel::update(
                one_time_tokens::table
                    .filter(one_time_tokens::token_hash.eq(token_hash))
                    .filter(one_time_tokens::purpose.eq("verify_email"))
                    .filter(one_time_tokens::used_at.is_null())
                    .filter(one_time_tokens::expires_at.gt(now)),
            )
            .set(one_time_tokens::used_at.eq(Some(now)))
            .returning((one_time_tokens::user_id, one_time_tokens::email))
            .prepared()
            .get_result(tx)
            .await
            .optional()?;
            let Some((user_id, email)) = consumed else {
                return Ok(None);
            };
            let verified = diesel::update(
                users::table
                    .filter(users::id.eq(&user_id))
                    .filter(users::email_normalized.eq(&email)),
            )
            .set((
                users::email_verified.eq(true),
                users::updated_at.eq(now),
                users::version.eq(users::version + 1),
            ))
            .prepared()
            .execute(tx)
            .await?;
            if verified == 0 {
                return Ok(None);
            }
            let mut audit = audit.clone();
            audit.subject_id = Some(user_id.clone());
            audit.actor_id = Some(user_id.clone());
            diesel::insert_into(audit_events::table)
                .values(&audit)
                .prepared()
                .execute(tx)
                .await?;
            Ok::<_, diesel::result::Error>(Some(user_id))
        })
        .await
    })?)
}

/// Consumes a reset token, sets the new password hash and revokes every session of the user,
/// in one transaction. Returns how many sessions were revoked, or `None` if the token was used
/// meanwhile.
pub async fn reset_password(
    conn: &mut DbConn,
    token_hash: &str,
    user_id: &str,
    new_hash: &str,
    now: NaiveDateTime,
    audit: &AuditRow,
) -> Result<Option<usize>, DbError> {
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let consumed = diesel::update(
                one_time_tokens::table
                    .filter(one_time_tokens::token_hash.eq(token_hash))
                    .filter(one_time_tokens::purpose.eq("reset_password"))
                    .filter(one_time_tokens::user_id.eq(user_id))
                    .filter(one_time_tokens::used_at.is_null())
                    .filter(one_time_tokens::expires_at.gt(now)),
            )
            .set(one_time_tokens::used_at.eq(Some(now)))
            .prepared()
            .execute(tx)
            .await?;
            if consumed == 0 {
                return Ok(None);
            }
            diesel::update(users::table.find(user_id))
                .set((
                    users::password_hash.eq(Some(new_hash)),
                    users::updated_at.eq(now),
                    users::version.eq(users::version + 1),
                ))
                .prepared()
                .execute(tx)
                .await?;
            let revoked =
                super::revoke_user_sessions!(tx, user_id, "", "password_reset", now).await?;
            diesel::insert_into(audit_events::table)
                .values(audit)
                .prepared()
                .execute(tx)
                .await?;
            Ok::<_, diesel::result::Error>(Some(revoked))
        })
        .await
    })?)
}
