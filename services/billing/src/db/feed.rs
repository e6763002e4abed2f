//! Numbering the event feed. A unit of work appends its events without a sequence (see
//! [`plan`](super::plan)), so concurrent checkouts never queue on one counter row until they
//! commit. The numberer gives committed, unnumbered events the next numbers, oldest id first, in
//! one short transaction that holds the `event` counter row: numberers (in any replica) take
//! turns, a number is only given to an event that has committed, and every number given later is
//! higher, so a reader following `sequence` never skips an event.

use backbone_common::db::Prepared as _;
use backbone_common::db::{DbConn, DbError};
use diesel::{ExpressionMethods as _, OptionalExtension as _, QueryDsl as _, sql_types::BigInt};
use diesel_async::RunQueryDsl as _;

use super::schema::{counters, events};

/// Events numbered per statement.
pub const BATCH: i64 = 1000;

/// Numbers up to `limit` committed unnumbered events, oldest id first; returns how many.
pub async fn number(conn: &mut DbConn, limit: i64) -> Result<usize, DbError> {
    // Bind markers differ; the statement is the same on both backends.
    const POSTGRES: &str = "UPDATE events SET sequence = numbered.sequence \
        FROM (SELECT id, $1 + ROW_NUMBER() OVER (ORDER BY id) AS sequence \
              FROM events WHERE sequence IS NULL ORDER BY id LIMIT $2) AS numbered \
        WHERE events.id = numbered.id";
    const SQLITE: &str = "UPDATE events SET sequence = numbered.sequence \
        FROM (SELECT id, ? + ROW_NUMBER() OVER (ORDER BY id) AS sequence \
              FROM events WHERE sequence IS NULL ORDER BY id LIMIT ?) AS numbered \
        WHERE events.id = numbered.id";
    let sql = match conn {
        DbConn::Postgres(_) => POSTGRES,
        DbConn::Sqlite(_) => SQLITE,
    };
    Ok(backbone_common::db_run!(conn, |c| {
        transaction!(c, async |tx| {
            // The counter row first: its lock makes numberers take turns, and on SQLite the
            // transaction holds the write lock from its first statement.
            let last: i64 = diesel::update(counters::table.find("event"))
                .set(counters::value.eq(counters::value))
                .returning(counters::value)
                .prepared()
                .get_result(tx)
                .await?;
            let count = diesel::sql_query(sql)
                .bind::<BigInt, _>(last)
                .bind::<BigInt, _>(limit)
                .execute(tx)
                .await?;
            if count > 0 {
                diesel::update(counters::table.find("event"))
                    .set(counters::value.eq(last + i64::try_from(count).unwrap_or(i64::MAX)))
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            Ok::<_, diesel::result::Error>(count)
        })
        .await
    })?)
}

/// True if some committed event has no number yet (an index-only look).
pub async fn unnumbered(conn: &mut DbConn) -> Result<bool, DbError> {
    let found: Option<String> = backbone_common::db_run!(conn, |c| {
        events::table
            .filter(events::sequence.is_null())
            .select(events::id)
            .first(c)
            .await
            .optional()
    })?;
    Ok(found.is_some())
}

/// Numbers every committed unnumbered event, in batches; returns how many.
pub async fn number_all(conn: &mut DbConn) -> Result<usize, DbError> {
    let mut total = 0;
    while unnumbered(conn).await? {
        let count = number(conn, BATCH).await?;
        total += count;
        if count == 0 {
            break;
        }
    }
    Ok(total)
}
