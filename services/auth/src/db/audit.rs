//! The audit log: written inside the transactions of the events it records (see the other
//! modules), or alone here for events that change nothing else; listed newest first.

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run, keyset,
};
use diesel::{
    BoolExpressionMethods as _, ExpressionMethods as _, IntoSql as _, QueryDsl as _,
    SelectableHelper as _,
};
use diesel_async::RunQueryDsl as _;

use super::{models::AuditRow, schema::audit_events};

/// Stores one event.
pub async fn insert(conn: &mut DbConn, row: &AuditRow) -> Result<(), DbError> {
    db_run!(conn, |c| {
        diesel::insert_into(audit_events::table)
            .values(row)
            .prepared()
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Filters of [`list`]; empty strings match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events about this user or service account.
    pub subject_id: String,
    /// Only events done by this principal.
    pub actor_id: String,
    /// Only events of this type (stored name).
    pub event_type: String,
}

/// A page of events, newest first, older than `before_id`.
pub async fn list(
    conn: &mut DbConn,
    filter: &AuditFilter,
    before_id: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditRow>, DbError> {
    // Past every UUID, so the first page starts at the newest event.
    let before = before_id.unwrap_or("~");
    let any_subject = filter.subject_id.is_empty();
    let any_actor = filter.actor_id.is_empty();
    let any_type = filter.event_type.is_empty();
    Ok(db_run!(conn, |c| {
        keyset::limit(
            audit_events::table
                .filter(audit_events::id.lt(before))
                .filter(
                    audit_events::subject_id
                        .eq(&filter.subject_id)
                        .or(any_subject.into_sql::<diesel::sql_types::Bool>()),
                )
                .filter(
                    audit_events::actor_id
                        .eq(&filter.actor_id)
                        .or(any_actor.into_sql::<diesel::sql_types::Bool>()),
                )
                .filter(
                    audit_events::event_type
                        .eq(&filter.event_type)
                        .or(any_type.into_sql::<diesel::sql_types::Bool>()),
                )
                .order(audit_events::id.desc())
                .select(AuditRow::as_select()),
            limit,
        )
        .load(c)
        .await
    })?)
}
