//! Signing keys: the active one, the published ones, and rotation (retire the active key and
//! insert its successor in one transaction; a unique index keeps a single active key).

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run,
};
use chrono::NaiveDateTime;
use diesel::{
    BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _, QueryDsl as _,
    SelectableHelper as _,
};
use diesel_async::RunQueryDsl as _;

use super::{
    models::{AuditRow, SigningKeyRow},
    schema::{audit_events, signing_keys},
};

/// The active key, if one exists.
pub async fn active(conn: &mut DbConn) -> Result<Option<SigningKeyRow>, DbError> {
    Ok(db_run!(conn, |c| {
        signing_keys::table
            .filter(signing_keys::active.eq(true))
            .select(SigningKeyRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Stores the first active key. False if another replica stored one first.
pub async fn insert_first(conn: &mut DbConn, key: &SigningKeyRow) -> Result<bool, DbError> {
    let result = db_run!(conn, |c| {
        diesel::insert_into(signing_keys::table)
            .values(key)
            .prepared()
            .execute(c)
            .await
    });
    match result {
        Ok(_) => Ok(true),
        Err(err) if super::is_unique_violation(&err) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Retires the active key and makes `key` active, with the audit row. Returns the retired key id.
pub async fn rotate(
    conn: &mut DbConn,
    key: &SigningKeyRow,
    now: NaiveDateTime,
    audit: &AuditRow,
) -> Result<Option<String>, DbError> {
    Ok(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let retired: Option<String> =
                diesel::update(signing_keys::table.filter(signing_keys::active.eq(true)))
                    .set((
                        signing_keys::active.eq(false),
                        signing_keys::retired_at.eq(Some(now)),
                    ))
                    .returning(signing_keys::kid)
                    .prepared()
                    .get_result(tx)
                    .await
                    .optional()?;
            diesel::insert_into(signing_keys::table)
                .values(key)
                .prepared()
                .execute(tx)
                .await?;
            diesel::insert_into(audit_events::table)
                .values(audit)
                .prepared()
                .execute(tx)
                .await?;
            Ok::<_, diesel::result::Error>(retired)
        })
        .await
    })?)
}

/// The active key and the keys retired after `retired_after` (their tokens may still be live).
pub async fn published(
    conn: &mut DbConn,
    retired_after: NaiveDateTime,
) -> Result<Vec<SigningKeyRow>, DbError> {
    Ok(db_run!(conn, |c| {
        signing_keys::table
            .filter(
                signing_keys::active
                    .eq(true)
                    .or(signing_keys::retired_at.gt(retired_after)),
            )
            .order(signing_keys::created_at.desc())
            .select(SigningKeyRow::as_select())
            .load(c)
            .await
    })?)
}
