//! Idempotency keys: claimed before a request runs, answered when it ends, pruned after the
//! retention period. The primary key (caller, key) decides which of two racing requests runs.

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

use super::{is_unique_violation, models::IdempotencyRecord, schema::idempotency_keys};

/// The answer stored under an idempotency key.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    /// The caller.
    pub caller_id: String,
    /// The key.
    pub request_key: String,
    /// gRPC code (0 for OK).
    pub status_code: i32,
    /// The encoded response, or the encoded `google.rpc.Status` of the error.
    pub response: Vec<u8>,
}

/// What a claim found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The key is ours now.
    New,
    /// The key was already used: its record.
    Existing(IdempotencyRecord),
}

/// The record under (caller, key).
pub async fn get(
    conn: &mut DbConn,
    caller: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, DbError> {
    Ok(db_run!(conn, |c| {
        idempotency_keys::table
            .find((caller, key))
            .select(IdempotencyRecord::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Inserts `record` unless the key exists.
pub async fn claim(conn: &mut DbConn, record: &IdempotencyRecord) -> Result<Claim, DbError> {
    let inserted = db_run!(conn, |c| {
        diesel::insert_into(idempotency_keys::table)
            .values(record)
            .prepared()
            .execute(c)
            .await
    });
    match inserted {
        Ok(_) => Ok(Claim::New),
        Err(err) if is_unique_violation(&err) => {
            match get(conn, &record.caller_id, &record.request_key).await? {
                Some(existing) => Ok(Claim::Existing(existing)),
                // Pruned between the insert and the read: answered as still in use, so the
                // client's retry claims it afresh.
                None => Ok(Claim::Existing(record.clone())),
            }
        }
        Err(err) => Err(err.into()),
    }
}

/// Takes over a RUNNING key whose lease (`seen`) ran out; true if this caller got it.
pub async fn take_over(
    conn: &mut DbConn,
    caller: &str,
    key: &str,
    seen: NaiveDateTime,
    until: NaiveDateTime,
) -> Result<bool, DbError> {
    let moved = db_run!(conn, |c| {
        diesel::update(idempotency_keys::table.find((caller, key)))
            .filter(idempotency_keys::state.eq("RUNNING"))
            .filter(idempotency_keys::locked_until.eq(seen))
            .set(idempotency_keys::locked_until.eq(until))
            .prepared()
            .execute(c)
            .await
    })?;
    Ok(moved == 1)
}

/// Stores the answer of a request that ran.
pub async fn answer(conn: &mut DbConn, answer: &StoredAnswer) -> Result<(), DbError> {
    db_run!(conn, |c| {
        diesel::update(idempotency_keys::table.find((&answer.caller_id, &answer.request_key)))
            .set((
                idempotency_keys::state.eq("DONE"),
                idempotency_keys::status_code.eq(Some(answer.status_code)),
                idempotency_keys::response.eq(Some(&answer.response)),
            ))
            .prepared()
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Forgets a RUNNING key whose request ended with a "try again" answer, so the same key runs
/// again.
pub async fn release(conn: &mut DbConn, caller: &str, key: &str) -> Result<(), DbError> {
    db_run!(conn, |c| {
        diesel::delete(idempotency_keys::table.find((caller, key)))
            .filter(idempotency_keys::state.eq("RUNNING"))
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Deletes answered keys created before `before`; returns how many.
pub async fn prune(conn: &mut DbConn, before: NaiveDateTime) -> Result<usize, DbError> {
    Ok(db_run!(conn, |c| {
        diesel::delete(idempotency_keys::table)
            .filter(idempotency_keys::state.eq("DONE"))
            .filter(idempotency_keys::created_at.lt(before))
            .execute(c)
            .await
    })?)
}
