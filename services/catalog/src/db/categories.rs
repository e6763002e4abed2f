//! The category tree: create, read, update (moves checked for cycles inside the transaction),
//! list by slug, and delete while unused.

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError},
    db_run,
};
use diesel::{
    ExpressionMethods as _, OptionalExtension as _, QueryDsl as _, SelectableHelper as _,
};
use diesel_async::RunQueryDsl as _;

use super::{
    TxError, is_unique_violation,
    models::CategoryRow,
    schema::{categories, product_categories},
};

/// Why a category write failed.
#[derive(Debug, thiserror::Error)]
pub enum CategoryError {
    /// Another category has the slug.
    #[error("slug taken")]
    SlugTaken,
    /// The parent does not exist.
    #[error("unknown parent")]
    UnknownParent,
    /// The move would put the category under itself.
    #[error("cycle")]
    Cycle,
    /// Products use it.
    #[error("has products")]
    HasProducts,
    /// Child categories use it.
    #[error("has children")]
    HasChildren,
    /// No such category.
    #[error("not found")]
    NotFound,
    /// Stale version; the current one.
    #[error("stale")]
    Stale(i64),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn result<T>(result: Result<T, TxError<CategoryError>>) -> Result<T, CategoryError> {
    match result {
        Ok(value) => Ok(value),
        Err(TxError::Abort(err)) => Err(err),
        Err(TxError::Diesel(err)) if is_unique_violation(&err) => Err(CategoryError::SlugTaken),
        Err(TxError::Diesel(err)) => Err(CategoryError::Db(err.into())),
    }
}

/// Stores a new category.
pub async fn create(conn: &mut DbConn, row: &CategoryRow) -> Result<(), CategoryError> {
    result(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            // The parent is looked up first: the foreign key would refuse the insert with an
            // error that names no field.
            if let Some(parent) = &row.parent_id {
                let exists: Option<String> = categories::table
                    .find(parent)
                    .select(categories::id)
                    .first(tx)
                    .await
                    .optional()?;
                if exists.is_none() {
                    return Err(TxError::Abort(CategoryError::UnknownParent));
                }
            }
            diesel::insert_into(categories::table)
                .values(row)
                .prepared()
                .execute(tx)
                .await?;
            Ok(())
        })
        .await
    }))
}

/// A category by id.
pub async fn get(conn: &mut DbConn, id: &str) -> Result<Option<CategoryRow>, DbError> {
    Ok(db_run!(conn, |c| {
        categories::table
            .find(id)
            .select(CategoryRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Every category (the tree is small), ordered by slug.
pub async fn all(conn: &mut DbConn) -> Result<Vec<CategoryRow>, DbError> {
    Ok(db_run!(conn, |c| {
        categories::table
            .order(categories::slug)
            .select(CategoryRow::as_select())
            .load(c)
            .await
    })?)
}

/// New values of an update; `None` leaves a column alone (`Some(None)` makes a root).
#[derive(Debug, Clone, Default)]
pub struct CategoryChanges {
    pub slug: Option<String>,
    pub name: Option<String>,
    pub parent_id: Option<Option<String>>,
}

/// Applies `changes` at `expected_version` (if given); a new parent must exist and must not be
/// the category or one of its descendants.
pub async fn update(
    conn: &mut DbConn,
    id: &str,
    changes: &CategoryChanges,
    expected_version: Option<i64>,
    now: chrono::NaiveDateTime,
) -> Result<CategoryRow, CategoryError> {
    result(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            // Bump the version first: the write lock is taken at the first statement.
            let mut target = diesel::update(categories::table)
                .filter(categories::id.eq(id))
                .into_boxed();
            if let Some(version) = expected_version {
                target = target.filter(categories::version.eq(version));
            }
            let bumped = target
                .set((
                    categories::version.eq(categories::version + 1),
                    categories::updated_at.eq(now),
                ))
                .prepared()
                .execute(tx)
                .await?;
            if bumped == 0 {
                let current: Option<i64> = categories::table
                    .find(id)
                    .select(categories::version)
                    .first(tx)
                    .await
                    .optional()?;
                return Err(TxError::Abort(match current {
                    Some(version) => CategoryError::Stale(version),
                    None => CategoryError::NotFound,
                }));
            }
            if let Some(Some(parent)) = &changes.parent_id {
                let tree: Vec<(String, Option<String>)> = categories::table
                    .select((categories::id, categories::parent_id))
                    .load(tx)
                    .await?;
                if !tree.iter().any(|(c, _)| c == parent) {
                    return Err(TxError::Abort(CategoryError::UnknownParent));
                }
                if crate::domain::category::subtree(id, &tree).contains(parent) {
                    return Err(TxError::Abort(CategoryError::Cycle));
                }
            }
            if let Some(slug) = &changes.slug {
                diesel::update(categories::table.find(id))
                    .set(categories::slug.eq(slug))
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            if let Some(name) = &changes.name {
                diesel::update(categories::table.find(id))
                    .set(categories::name.eq(name))
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            if let Some(parent) = &changes.parent_id {
                diesel::update(categories::table.find(id))
                    .set(categories::parent_id.eq(parent))
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            let row: CategoryRow = categories::table
                .find(id)
                .select(CategoryRow::as_select())
                .first(tx)
                .await?;
            Ok(row)
        })
        .await
    }))
}

/// Deletes an unused category at `expected_version` (if given).
pub async fn delete(
    conn: &mut DbConn,
    id: &str,
    expected_version: Option<i64>,
) -> Result<(), CategoryError> {
    result(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let current: Option<i64> = categories::table
                .find(id)
                .select(categories::version)
                .first(tx)
                .await
                .optional()?;
            let Some(version) = current else {
                return Err(TxError::Abort(CategoryError::NotFound));
            };
            if expected_version.is_some_and(|v| v != version) {
                return Err(TxError::Abort(CategoryError::Stale(version)));
            }
            let products: i64 = product_categories::table
                .filter(product_categories::category_id.eq(id))
                .count()
                .get_result(tx)
                .await?;
            if products > 0 {
                return Err(TxError::Abort(CategoryError::HasProducts));
            }
            let children: i64 = categories::table
                .filter(categories::parent_id.eq(id))
                .count()
                .get_result(tx)
                .await?;
            if children > 0 {
                return Err(TxError::Abort(CategoryError::HasChildren));
            }
            // The foreign keys (RESTRICT) refuse a link or child added meanwhile.
            let deleted = diesel::delete(
                categories::table
                    .filter(categories::id.eq(id))
                    .filter(categories::version.eq(version)),
            )
            .execute(tx)
            .await;
            match deleted {
                Ok(1) => Ok(()),
                Ok(_) => Err(TxError::Abort(CategoryError::Stale(version))),
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                    _,
                )) => Err(TxError::Abort(CategoryError::HasProducts)),
                Err(err) => Err(err.into()),
            }
        })
        .await
    }))
}
