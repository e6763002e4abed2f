//! Products and their category links: create, read, update, and keyset-paged listing with
//! filters. A product is created with its (empty) stock row in the same transaction.

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{DbConn, DbError, ReadConn},
    db_run, keyset, read_run,
};
use chrono::NaiveDateTime;
use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel::{
    EscapeExpressionMethods as _, ExpressionMethods as _, IntoSql as _, OptionalExtension as _,
    QueryDsl as _, SelectableHelper as _, TextExpressionMethods as _,
};
use diesel_async::RunQueryDsl as _;
use serde::{Deserialize, Serialize};

use super::{
    TxError, is_unique_violation,
    models::{ProductRow, StockRow, category_ids_json},
    schema::{categories, product_categories, products, stock},
};
use crate::domain::product::ProductOrder;

/// Why a product write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another product has the SKU.
    #[error("SKU taken")]
    SkuTaken,
    /// Some category ids do not exist.
    #[error("unknown categories")]
    UnknownCategories(Vec<String>),
    /// The product does not exist.
    #[error("not found")]
    NotFound,
    /// The caller's version is stale; the current one is given.
    #[error("stale")]
    Stale(i64),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn write_result<T>(result: Result<T, TxError<WriteError>>) -> Result<T, WriteError> {
    match result {
        Ok(value) => Ok(value),
        Err(TxError::Abort(err)) => Err(err),
        Err(TxError::Diesel(err)) if is_unique_violation(&err) => Err(WriteError::SkuTaken),
        Err(TxError::Diesel(err)) => Err(WriteError::Db(err.into())),
    }
}

/// The ids among `ids` that name no category; evaluates to the future of that list. A macro
/// because it runs inside either backend's transaction.
macro_rules! missing_categories {
    ($tx:expr, $ids:expr) => {
        async {
            let ids: &[String] = $ids;
            if ids.is_empty() {
                return Ok::<Vec<String>, diesel::result::Error>(Vec::new());
            }
            let found: Vec<String> = categories::table
                .filter(categories::id.eq_any(ids))
                .select(categories::id)
                .load($tx)
                .await?;
            Ok(ids
                .iter()
                .filter(|id| !found.contains(id))
                .cloned()
                .collect())
        }
    };
}

/// Stores a new product, its category links and its empty stock row.
pub async fn create(
    conn: &mut DbConn,
    product: &ProductRow,
    category_ids: &[String],
) -> Result<(), WriteError> {
    let links: Vec<_> = category_ids
        .iter()
        .map(|c| {
            (
                product_categories::product_id.eq(product.id.clone()),
                product_categories::category_id.eq(c.clone()),
            )
        })
        .collect();
    let empty = StockRow {
        product_id: product.id.clone(),
        on_hand: 0,
        reserved: 0,
        updated_at: None,
    };
    write_result(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            diesel::insert_into(products::table)
                .values(product)
                .prepared()
                .execute(tx)
                .await?;
            let missing = missing_categories!(tx, category_ids).await?;
            if !missing.is_empty() {
                return Err(TxError::Abort(WriteError::UnknownCategories(missing)));
            }
            for link in &links {
                diesel::insert_into(product_categories::table)
                    .values(link.clone())
                    .prepared()
                    .execute(tx)
                    .await?;
            }
            diesel::insert_into(stock::table)
                .values(&empty)
                .prepared()
                .execute(tx)
                .await?;
            Ok(())
        })
        .await
    }))
}

/// The changes of an update; `None` leaves a column alone.
#[derive(Debug, Clone, Default, diesel::AsChangeset)]
#[diesel(table_name = products)]
pub struct ProductChanges {
    pub sku: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub price_minor: Option<i64>,
    pub currency_code: Option<String>,
    pub status: Option<String>,
    pub attributes: Option<String>,
    pub image_urls: Option<String>,
    pub search_text: Option<String>,
    pub updated_at: Option<NaiveDateTime>,
}

/// Applies `changes` (and, if given, replaces the category links) if the product is at
/// `expected_version` (when given); returns the new row.
pub async fn update(
    conn: &mut DbConn,
    id: &str,
    changes: &ProductChanges,
    category_ids: Option<&[String]>,
    expected_version: Option<i64>,
) -> Result<ProductRow, WriteError> {
    write_result(db_run!(conn, |c| {
        transaction!(c, async |tx| {
            let mut target = diesel::update(products::table)
                .filter(products::id.eq(id))
                .into_boxed();
            if let Some(version) = expected_version {
                target = target.filter(products::version.eq(version));
            }
            let updated: Option<ProductRow> = target
                .set((
                    changes,
                    category_ids.map(|ids| products::category_ids.eq(category_ids_json(ids))),
                    products::version.eq(products::version + 1),
                ))
                .returning(ProductRow::as_returning())
                // Not `.prepared()`: the field mask picks the columns, so a caller could make
                // hundreds of shapes; an update of a product is rare enough to prepare each time.
                .get_result(tx)
                .await
                .optional()?;
            let Some(row) = updated else {
                let current: Option<i64> = products::table
                    .find(id)
                    .select(products::version)
                    .first(tx)
                    .await
                    .optional()?;
                return Err(TxError::Abort(match current {
                    Some(version) => WriteError::Stale(version),
                    None => WriteError::NotFound,
                }));
            };
            if let Some(ids) = category_ids {
                let missing = missing_categories!(tx, ids).await?;
                if !missing.is_empty() {
                    return Err(TxError::Abort(WriteError::UnknownCategories(missing)));
                }
                diesel::delete(
                    product_categories::table.filter(product_categories::product_id.eq(id)),
                )
                .execute(tx)
                .await?;
                for category in ids {
                    diesel::insert_into(product_categories::table)
                        .values((
                            product_categories::product_id.eq(id),
                            product_categories::category_id.eq(category),
                        ))
                        .prepared()
                        .execute(tx)
                        .await?;
                }
            }
            Ok(row)
        })
        .await
    }))
}

/// The products with these ids (any order).
pub async fn by_ids(conn: &mut ReadConn, ids: &[String]) -> Result<Vec<ProductRow>, DbError> {
    // One primary-key lookup (the row carries its category ids). A single id is compared with
    // `=` rather than `= ANY($1)`: PostgreSQL cannot size an array parameter when it plans a
    // prepared statement once for all values, so an `ANY` lookup is planned again on every
    // execution, which costs several times the lookup itself.
    Ok(match ids {
        [] => Vec::new(),
        [id] => read_run!(conn, |c| {
            products::table
                .filter(products::id.eq(id))
                .select(ProductRow::as_select())
                .load(c)
                .await
        })?,
        _ => read_run!(conn, |c| {
            products::table
                .filter(products::id.eq_any(ids))
                .select(ProductRow::as_select())
                .load(c)
                .await
        })?,
    })
}

/// Where a page ended: the sort keys of its last product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// `created_at` in microseconds since the epoch.
    pub created: i64,
    /// Currency code.
    pub currency: String,
    /// Price in minor units.
    pub price: i64,
    /// Title.
    pub title: String,
    /// Id.
    pub id: String,
}

impl Cursor {
    /// The cursor after `row`.
    pub fn after(row: &ProductRow) -> Self {
        Cursor {
            created: row.created_at.and_utc().timestamp_micros(),
            currency: row.currency_code.clone(),
            price: row.price_minor,
            title: row.title.clone(),
            id: row.id.clone(),
        }
    }

    fn created_at(&self) -> NaiveDateTime {
        chrono::DateTime::from_timestamp_micros(self.created)
            .map(|t| t.naive_utc())
            .unwrap_or_default()
    }
}

/// A ListProducts query after validation.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only this status (stored name); `None`: any.
    pub status: Option<&'static str>,
    /// Only products linked to one of these categories.
    pub categories: Option<Vec<String>>,
    /// Only this currency.
    pub currency: Option<String>,
    /// Lowest price, inclusive.
    pub min_price: Option<i64>,
    /// Highest price, inclusive.
    pub max_price: Option<i64>,
    /// Lower-cased text the search text must contain.
    pub text: Option<String>,
    /// Order.
    pub order: ProductOrder,
    /// Continue after this product.
    pub after: Option<Cursor>,
    /// Rows to fetch.
    pub limit: i64,
}

/// `text` as a LIKE pattern matching it anywhere, with `\` escaping LIKE's wildcards.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::from("%");
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

/// One page of products matching `query`, in its order.
pub async fn list(conn: &mut DbConn, query: &ListQuery) -> Result<Vec<ProductRow>, DbError> {
    let pattern = query.text.as_deref().map(contains_pattern);
    let rows: Vec<ProductRow> = db_run!(conn, |c| {
        let mut q = products::table.into_boxed();
        if let Some(status) = query.status {
            q = q.filter(products::status.eq(status));
        }
        if let Some(ids) = &query.categories {
            q = q.filter(
                products::id.eq_any(
                    product_categories::table
                        .filter(product_categories::category_id.eq_any(ids))
                        .select(product_categories::product_id),
                ),
            );
        }
        if let Some(currency) = &query.currency {
            q = q.filter(products::currency_code.eq(currency));
        }
        if let Some(min) = query.min_price {
            q = q.filter(products::price_minor.ge(min));
        }
        if let Some(max) = query.max_price {
            q = q.filter(products::price_minor.le(max));
        }
        if let Some(pattern) = &pattern {
            q = q.filter(products::search_text.like(pattern).escape('\\'));
        }
        if let Some(cursor) = &query.after {
            let (t, cur, p, title, id) = (
                cursor.created_at(),
                cursor.currency.clone(),
                cursor.price,
                cursor.title.clone(),
                cursor.id.clone(),
            );
            // Row-value comparisons (see `backbone_common::keyset`): one index range from the
            // cursor on, and a query the statement cache keeps like page 1's.
            let desc = matches!(
                query.order,
                ProductOrder::CreatedDesc | ProductOrder::PriceDesc | ProductOrder::TitleDesc
            );
            let id = id.into_sql::<Text>();
            q = match query.order {
                ProductOrder::CreatedDesc | ProductOrder::CreatedAsc => {
                    let columns = (products::created_at, products::id);
                    let values = (t.into_sql::<Timestamp>(), id);
                    q.filter(keyset::past(columns, values, desc))
                }
                ProductOrder::PriceAsc | ProductOrder::PriceDesc => {
                    let columns = (products::currency_code, products::price_minor, products::id);
                    let values = (cur.into_sql::<Text>(), p.into_sql::<BigInt>(), id);
                    q.filter(keyset::past(columns, values, desc))
                }
                ProductOrder::TitleAsc | ProductOrder::TitleDesc => {
                    let columns = (products::title, products::id);
                    let values = (title.into_sql::<Text>(), id);
                    q.filter(keyset::past(columns, values, desc))
                }
            };
        }
        q = match query.order {
            ProductOrder::CreatedDesc => {
                q.order((products::created_at.desc(), products::id.desc()))
            }
            ProductOrder::CreatedAsc => q.order((products::created_at.asc(), products::id.asc())),
            ProductOrder::PriceAsc => q.order((
                products::currency_code.asc(),
                products::price_minor.asc(),
                products::id.asc(),
            )),
            ProductOrder::PriceDesc => q.order((
                products::currency_code.desc(),
                products::price_minor.desc(),
                products::id.desc(),
            )),
            ProductOrder::TitleAsc => q.order((products::title.asc(), products::id.asc())),
            ProductOrder::TitleDesc => q.order((products::title.desc(), products::id.desc())),
        };
        keyset::limit(q.select(ProductRow::as_select()), query.limit)
            .load(c)
            .await
    })?;
    Ok(rows)
}

/// Every (id, parent) pair of the category tree (it is small: loaded whole to walk subtrees).
pub async fn category_tree(conn: &mut DbConn) -> Result<Vec<(String, Option<String>)>, DbError> {
    Ok(db_run!(conn, |c| {
        categories::table
            .select((categories::id, categories::parent_id))
            .load(c)
            .await
    })?)
}

/// The id of the product with this SKU, if any.
pub async fn id_by_sku(conn: &mut DbConn, sku: &str) -> Result<Option<String>, DbError> {
    Ok(db_run!(conn, |c| {
        products::table
            .filter(products::sku.eq(sku))
            .select(products::id)
            .first::<String>(c)
            .await
            .optional()
    })?)
}
