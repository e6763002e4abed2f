//! The catalog's use cases: each validates its input, applies the domain's rules and runs its
//! units of work against the database. The gRPC handlers translate to and from these.

pub mod categories;
pub mod products;
pub mod seed;
pub mod stock;
pub mod sweeper;

use std::{sync::Arc, time::Duration};

use backbone_common::{
    auth::{Principal, Role},
    db::{Database, DbConn},
    page,
};

use crate::error::CatalogError;
use products::SharedProduct;

/// Who is calling.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The verified principal, if a token was sent.
    pub principal: Option<Arc<Principal>>,
}

impl Caller {
    /// True for admins and services, who see every product status.
    pub fn sees_all(&self) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| p.has_role(Role::Admin) || p.has_role(Role::Service))
    }

    /// The caller's id for stock movements and reservations.
    pub fn actor(&self) -> String {
        self.principal
            .as_ref()
            .map_or_else(String::new, |p| p.subject.clone())
    }
}

/// Settings the use cases follow.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a cached product may be served (the staleness bound across replicas).
    pub product_cache_ttl: Duration,
    /// Most products cached.
    pub product_cache_capacity: u64,
}

struct Inner {
    database: Database,
    /// None when the cache is off (no capacity or no time to live): reads then skip it.
    products: Option<moka::sync::Cache<String, Arc<SharedProduct>, foldhash::fast::RandomState>>,
}

/// The catalog's use cases. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    /// The use cases over `database`.
    pub fn new(database: Database, settings: &Settings) -> Self {
        let on = settings.product_cache_capacity > 0 && !settings.product_cache_ttl.is_zero();
        let products = on.then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.product_cache_capacity)
                .time_to_live(settings.product_cache_ttl)
                // Keys are ids from the database, so a fast seeded hash is safe here.
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        Self {
            inner: Arc::new(Inner { database, products }),
        }
    }

    async fn conn(&self) -> Result<DbConn, CatalogError> {
        Ok(self.inner.database.conn().await?)
    }
}

/// Decodes a page token of `query` into its cursor text.
fn page_cursor(query: &str, token: &str) -> Result<Option<String>, CatalogError> {
    page::decode(query, token).map_err(|_| CatalogError::InvalidPageToken)
}

/// The page size, or INVALID_ARGUMENT.
fn page_size(requested: i32) -> Result<i64, CatalogError> {
    page::page_size(requested, 20, 100).map_err(|v| CatalogError::InvalidArgument(vec![v]))
}

/// Checks a list of 1 to 100 ids; returns them without duplicates, first occurrence kept.
fn check_ids(ids: &[String], field: &str) -> Result<Vec<String>, CatalogError> {
    if ids.is_empty() || ids.len() > 100 {
        return Err(CatalogError::field(field, "must list 1 to 100 ids"));
    }
    let mut unique: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if id.is_empty() {
            return Err(CatalogError::field(field, "must not contain empty ids"));
        }
        if !unique.contains(id) {
            unique.push(id.clone());
        }
    }
    Ok(unique)
}

/// An etag sent by the client as the version it names; a malformed one can never match.
fn expected_version(etag: &str) -> Option<i64> {
    if etag.is_empty() {
        None
    } else {
        Some(crate::domain::version_of(etag).unwrap_or(-1))
    }
}
