//! Service accounts (OAuth client-credentials clients).

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run,
};
use diesel::{OptionalExtension as _, QueryDsl as _, SelectableHelper as _};
use diesel_async::RunQueryDsl as _;

use super::{
    models::{AuditRow, ServiceAccountRow},
    schema::{audit_events, service_accounts},
};

/// Stores a new service account with its audit row.
pub async fn create(
    conn: &mut DbConn,
    account: &ServiceAccountRow,
    audit: &AuditRow,
) -> Result<(), DbError> {
    db_run!(conn, |c| {
        transaction!(c, async |tx| {
            diesel::insert_into(service_accounts::table)
                .values(account)
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
    })?;
    Ok(())
}

/// The service account with this client id.
pub async fn by_id(conn: &mut DbConn, id: &str) -> Result<Option<ServiceAccountRow>, DbError> {
    Ok(db_run!(conn, |c| {
        service_accounts::table
            .find(id)
            .select(ServiceAccountRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}
