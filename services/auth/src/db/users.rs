//! Accounts: create, read, list and change users; changes that end sessions revoke them in the
//! same transaction and write their audit row with them.

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run, keyset,
};
use chrono::NaiveDateTime;
use diesel::{
    EscapeExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _, QueryDsl as _,
    SelectableHelper as _, TextExpressionMethods as _,
};
use diesel_async::RunQueryDsl as _;

use super::{
    models::{AuditRow, UserRow},
    schema::{audit_events, users},
};

/// Why a new account could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The normalised email is taken.
    #[error("email taken")]
    EmailTaken,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Stores a new account and its audit row.
pub async fn create(
    conn: &mut DbConn,
    user: &UserRow,
    audit: &AuditRow,
) -> Result<(), CreateError> {
    let result = db_run!(conn, |c| {
        transaction!(c, async |tx| {
            diesel::insert_into(users::table)
                .values(user)
                .prepared()
                .execute(tx)
                .await?;
            diesel::insert_into(audit_events::table)
                .values(audit)
                .prepared()
                .execute(tx)
                .await?;
            Ok::<_, diesel::result::Error>(())
        })
        .await
    });
    match result {
        Ok(()) => Ok(()),
        Err(err) if super::is_unique_violation(&err) => Err(CreateError::EmailTaken),
        Err(err) => Err(CreateError::Db(err.into())),
    }
}

/// The account with this normalised email.
pub async fn by_email(
    conn: &mut DbConn,
    email_normalized: &str,
) -> Result<Option<UserRow>, DbError> {
    Ok(db_run!(conn, |c| {
        users::table
            .filter(users::email_normalized.eq(email_normalized))
            .select(UserRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// The account with this id.
pub async fn by_id(conn: &mut DbConn, id: &str) -> Result<Option<UserRow>, DbError> {
    Ok(db_run!(conn, |c| {
        users::table
            .find(id)
            .select(UserRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// A page of accounts ordered by id, after `after_id`, whose normalised email starts with
/// `email_prefix` (already lowercased).
pub async fn list(
    conn: &mut DbConn,
    email_prefix: &str,
    after_id: Option<&str>,
    limit: i64,
) -> Result<Vec<UserRow>, DbError> {
    let pattern = format!(
        "{}%",
        email_prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let after = after_id.unwrap_or("");
    Ok(db_run!(conn, |c| {
        keyset::limit(
            users::table
                .filter(users::email_normalized.like(&pattern).escape('\\'))
                .filter(users::id.gt(after))
                .order(users::id.asc())
                .select(UserRow::as_select()),
            limit,
        )
        .load(c)
        .await
    })?)
}

/// Sets the display name if `expected_version` (when given) is still current. Returns the new
/// row, or `None` if nothing matched (absent or stale; the caller reads again to tell which).
pub async fn set_display_name(
    conn: &mut DbConn,
    id: &str,
    display_name: &str,
    expected_version: Option<i64>,
    now: NaiveDateTime,
) -> Result<Option<UserRow>, DbError> {
    // Any version when no etag was sent; exactly that version otherwise.
    let (low, high) = expected_version.map_or((0, i64::MAX), |v| (v, v));
    Ok(db_run!(conn, |c| {
        let target = users::table
            .filter(users::id.eq(id))
            .filter(users::version.between(low, high));
        diesel::update(target)
            .set((
                users::display_name.eq(display_name),
                users::updated_at.eq(now),
                users::version.eq(users::version + 1),
            ))
            .returning(UserRow::as_returning())
            .prepared()
            .get_result(c)
            .await
            .optional()
    })?)
}

/// Replaces the password hash after a successful login with old parameters, unless it changed
/// meanwhile.
pub async fn upgrade_hash(
    conn: &mut DbConn,
    id: &str,
    old_hash: &str,
    new_hash: &str,
) -> Result<(), DbError> {
    db_run!(conn, |c| {
        diesel::update(
            users::table
                .filter(users::id.eq(id))
                .filter(users::password_hash.eq(old_hash)),
        )
        .set(users::password_hash.eq(new_hash))
        .prepared()
        .execute(c)
        .await
    })?;
    Ok(())
}

/// Sets a new password hash and revokes the user's sessions except `keep_session`, with the
/// audit row, in one transaction. Returns how many sessions were revoked, or `None` if the
/// user does not exist.
pub async fn set_password(
    conn: &mut DbConn,
    id: &str,
    new_hash: &str,
    keep_session: Option<&str>,
    reason: &str,
    now: NaiveDateTime,
    audit: &AuditRow,
) -> Result<Option<usize>, DbError> {
    let keep = keep_session.unwrap_or("");
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let updated = diesel::update(users::table.find(id))
                .set((
                    users::password_hash.eq(new_hash),
                    users::updated_at.eq(now),
                    users::version.eq(users::version + 1),
                ))
                .prepared()
                .execute(tx)
                .await?;
            if updated == 0 {
                return Ok(None);
            }
            let revoked = super::revoke_user_sessions!(tx, id, keep, reason, now).await?;
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

/// Replaces the user's roles, with the audit row. `None` if the user does not exist.
pub async fn set_roles(
    conn: &mut DbConn,
    id: &str,
    roles: &str,
    now: NaiveDateTime,
    audit: &AuditRow,
) -> Result<Option<UserRow>, DbError> {
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let row = diesel::update(users::table.find(id))
                .set((
                    users::roles.eq(roles),
                    users::updated_at.eq(now),
                    users::version.eq(users::version + 1),
                ))
                .returning(UserRow::as_returning())
                .prepared()
                .get_result(tx)
                .await
                .optional()?;
            if row.is_some() {
                diesel::insert_into(audit_events::table)
                    .values(audit)
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            Ok::<_, diesel::result::Error>(row)
        })
        .await
    })?)
}

/// Disables the account and revokes all its sessions, with the audit row. Returns the row and
/// the number of sessions revoked, or `None` if the user does not exist.
pub async fn disable(
    conn: &mut DbConn,
    id: &str,
    now: NaiveDateTime,
    audit: &AuditRow,
) -> Result<Option<(UserRow, usize)>, DbError> {
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            // Disabling twice keeps the first time; sessions are revoked either way.
            diesel::update(users::table.find(id).filter(users::disabled.eq(false)))
                .set((
                    users::disabled.eq(true),
                    users::disabled_at.eq(Some(now)),
                    users::updated_at.eq(now),
                    users::version.eq(users::version + 1),
                ))
                .prepared()
                .execute(tx)
                .await?;
            let row = users::table
                .find(id)
                .select(UserRow::as_select())
                .first(tx)
                .await
                .optional()?;
            let Some(row) = row else { return Ok(None) };
            let revoked = super::revoke_user_sessions!(tx, id, "", "user_disabled", now).await?;
            diesel::insert_into(audit_events::table)
                .values(audit)
                .prepared()
                .execute(tx)
                .await?;
            Ok::<_, diesel::result::Error>(Some((row, revoked)))
        })
        .await
    })?)
}
