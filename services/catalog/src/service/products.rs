//! Products: create, read (cached), list with filters and keyset pages, update and archive.

use std::{
    collections::BTreeMap,
    ops::Deref,
    sync::{Arc, OnceLock},
};

use backbone_common::{error::FieldViolation, money, page};
use backbone_proto::common::Money;
use bytes::Bytes;

use super::{Caller, Catalog, check_ids, expected_version, page_cursor, page_size};
use crate::{
    db::{
        self,
        models::ProductRow,
        products::{Cursor, ListQuery, ProductChanges, WriteError},
    },
    domain::{
        self,
        category::subtree,
        product::{self as rules, Product, ProductOrder, ProductStatus, collect},
    },
    error::CatalogError,
};

/// A product as reads share it: one copy per product in the cache, handed to every read until
/// the product changes (a change here evicts it; another replica's change shows when the copy
/// expires), with room for the answer the API layer encodes from it, so that answer is encoded
/// once per copy instead of on every call.
#[derive(Debug)]
pub struct SharedProduct {
    product: Product,
    api_form: OnceLock<Bytes>,
}

impl SharedProduct {
    fn new(product: Product) -> Self {
        Self {
            product,
            api_form: OnceLock::new(),
        }
    }

    /// The product's encoded API form: `encode`'s result at the first call, the same bytes after.
    pub fn api_form(&self, encode: impl FnOnce(&Product) -> Bytes) -> Bytes {
        self.api_form.get_or_init(|| encode(&self.product)).clone()
    }
}

impl Deref for SharedProduct {
    type Target = Product;

    fn deref(&self) -> &Product {
        &self.product
    }
}

/// A product's writable fields as a client sent them.
#[derive(Debug, Clone, Default)]
pub struct ProductFields {
    /// SKU.
    pub sku: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Price.
    pub price: Option<Money>,
    /// Category ids.
    pub category_ids: Vec<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Image URLs.
    pub image_urls: Vec<String>,
    /// Status; `None` for UNSPECIFIED.
    pub status: Option<ProductStatus>,
}

/// A ListProducts request.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Page size (0: default).
    pub page_size: i32,
    /// Page token.
    pub page_token: String,
    /// Category filter.
    pub category_id: String,
    /// With descendants.
    pub include_subcategories: bool,
    /// Status filter; `None` for UNSPECIFIED.
    pub status: Option<ProductStatus>,
    /// Lowest price.
    pub min_price: Option<Money>,
    /// Highest price.
    pub max_price: Option<Money>,
    /// Text query.
    pub query: String,
    /// Order.
    pub order_by: String,
}

fn map_write(err: WriteError) -> CatalogError {
    match err {
        WriteError::SkuTaken => CatalogError::SkuTaken,
        WriteError::UnknownCategories(ids) => CatalogError::field(
            "product.category_ids",
            format!("unknown categories: {}", ids.join(", ")),
        ),
        WriteError::NotFound => CatalogError::NotFound { what: "product" },
        WriteError::Stale(version) => CatalogError::EtagMismatch {
            current: domain::etag(version),
        },
        WriteError::Db(err) => err.into(),
    }
}

impl Catalog {
    /// Creates a product (DRAFT unless ACTIVE is asked for) with zero stock.
    pub async fn create_product(&self, fields: ProductFields) -> Result<Product, CatalogError> {
        let mut violations = Vec::new();
        collect(
            &mut violations,
            "product.sku",
            rules::check_sku(&fields.sku),
        );
        let title = collect(
            &mut violations,
            "product.title",
            rules::check_title(&fields.title),
        );
        collect(
            &mut violations,
            "product.description",
            rules::check_description(&fields.description),
        );
        let price = money::check(fields.price.as_ref(), "product.price")
            .map_err(|v| violations.extend(v))
            .ok();
        let categories = collect(
            &mut violations,
            "product.category_ids",
            rules::check_category_ids(&fields.category_ids),
        );
        collect(
            &mut violations,
            "product.attributes",
            rules::check_attributes(&fields.attributes),
        );
        collect(
            &mut violations,
            "product.image_urls",
            rules::check_image_urls(&fields.image_urls),
        );
        if fields.status == Some(ProductStatus::Archived) {
            violations.push(FieldViolation::new(
                "product.status",
                "a new product is DRAFT or ACTIVE",
            ));
        }
        let (Some(title), Some(price), Some(category_ids)) = (title, price, categories) else {
            return Err(CatalogError::InvalidArgument(violations));
        };
        if !violations.is_empty() {
            return Err(CatalogError::InvalidArgument(violations));
        }
        let now = domain::now();
        let product = Product {
            id: domain::new_id(),
            sku: fields.sku,
            title,
            description: fields.description,
            price,
            category_ids,
            attributes: fields.attributes,
            image_urls: fields.image_urls,
            status: fields.status.unwrap_or(ProductStatus::Draft),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let mut conn = self.conn().await?;
        db::products::create(
            &mut conn,
            &ProductRow::from_product(&product),
            &product.category_ids,
        )
        .await
        .map_err(map_write)?;
        Ok(product)
    }

    /// Product `id` if the cache holds it.
    fn cached(&self, id: &str) -> Option<Arc<SharedProduct>> {
        self.inner.products.as_ref()?.get(id)
    }

    /// Products by id from the cache or the database, any status.
    pub(super) async fn load(
        &self,
        ids: &[String],
    ) -> Result<Vec<Arc<SharedProduct>>, CatalogError> {
        let cache = self.inner.products.as_ref();
        let mut found: Vec<Arc<SharedProduct>> = Vec::with_capacity(ids.len());
        let mut missing: Vec<String> = Vec::new();
        for id in ids {
            match self.cached(id) {
                Some(product) => found.push(product),
                None => missing.push(id.clone()),
            }
        }
        if !missing.is_empty() {
            let mut conn = self.inner.database.read_conn().await?;
            for row in db::products::by_ids(&mut conn, &missing).await? {
                let product = Arc::new(SharedProduct::new(row.into_product()));
                if let Some(cache) = cache {
                    cache.insert(product.id.clone(), product.clone());
                }
                found.push(product);
            }
        }
        Ok(found)
    }

    /// One product the caller may see (shared with the cache: read it, do not change it).
    pub async fn product(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Arc<SharedProduct>, CatalogError> {
        if id.is_empty() {
            return Err(CatalogError::field("product_id", "is required"));
        }
        let product = match self.cached(id) {
            Some(product) => Some(product),
            None => self.load(&[id.to_owned()]).await?.pop(),
        };
        product
            .filter(|p| caller.sees_all() || p.status == ProductStatus::Active)
            .ok_or(CatalogError::NotFound { what: "product" })
    }

    /// Up to 100 products in request order, and the ids not found (or not visible).
    pub async fn batch_products(
        &self,
        caller: &Caller,
        ids: &[String],
    ) -> Result<(Vec<Arc<SharedProduct>>, Vec<String>), CatalogError> {
        let ids = check_ids(ids, "product_ids")?;
        let loaded = self.load(&ids).await?;
        let mut products = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match loaded
                .iter()
                .find(|p| p.id == id && (caller.sees_all() || p.status == ProductStatus::Active))
            {
                Some(product) => products.push(product.clone()),
                None => missing.push(id),
            }
        }
        Ok((products, missing))
    }

    /// One page of products.
    pub async fn list_products(
        &self,
        caller: &Caller,
        request: &ListRequest,
    ) -> Result<(Vec<Product>, String), CatalogError> {
        let mut violations = Vec::new();
        let size = page_size(request.page_size)?;
        let order = ProductOrder::parse(&request.order_by)
            .map_err(|v| violations.push(v))
            .ok();
        let status = match (request.status, caller.sees_all()) {
            (Some(ProductStatus::Active), _) => Some(ProductStatus::Active),
            (Some(other), true) => Some(other),
            (None, true) => None,
            (None, false) => Some(ProductStatus::Active),
            (Some(_), false) => {
                return Err(CatalogError::PermissionDenied(
                    "only admins and services may list DRAFT or ARCHIVED products",
                ));
            }
        };
        let min = request
            .min_price
            .as_ref()
            .map(|m| money::check(Some(m), "min_price"))
            .transpose()
            .map_err(|v| violations.extend(v))
            .ok()
            .flatten();
        let max = request
            .max_price
            .as_ref()
            .map(|m| money::check(Some(m), "max_price"))
            .transpose()
            .map_err(|v| violations.extend(v))
            .ok()
            .flatten();
        if let (Some(min), Some(max)) = (&min, &max)
            && min.currency_code != max.currency_code
        {
            violations.push(FieldViolation::new(
                "max_price.currency_code",
                "must be the currency of min_price",
            ));
        }
        let text = request.query.trim();
        if text.chars().count() > 200 {
            violations.push(FieldViolation::new(
                "query",
                "must be at most 200 characters",
            ));
        }
        let Some(order) = order else {
            return Err(CatalogError::InvalidArgument(violations));
        };
        if !violations.is_empty() {
            return Err(CatalogError::InvalidArgument(violations));
        }
        let fingerprint = format!(
            "products|cat={}|sub={}|status={:?}|min={:?}|max={:?}|q={}|order={}",
            request.category_id,
            request.include_subcategories,
            status,
            min,
            max,
            text.to_lowercase(),
            order.as_str(),
        );
        let after = match page_cursor(&fingerprint, &request.page_token)? {
            Some(text) => Some(
                serde_json::from_str::<Cursor>(&text)
                    .map_err(|_| CatalogError::InvalidPageToken)?,
            ),
            None => None,
        };
        let mut conn = self.conn().await?;
        let categories = if request.category_id.is_empty() {
            None
        } else {
            let tree = db::products::category_tree(&mut conn).await?;
            if !tree.iter().any(|(id, _)| *id == request.category_id) {
                return Err(CatalogError::NotFound { what: "category" });
            }
            Some(if request.include_subcategories {
                subtree(&request.category_id, &tree)
            } else {
                vec![request.category_id.clone()]
            })
        };
        let currency = min
            .as_ref()
            .or(max.as_ref())
            .map(|m| m.currency_code.clone());
        let query = ListQuery {
            status: status.map(ProductStatus::as_str),
            categories,
            currency,
            min_price: min.map(|m| m.amount_minor),
            max_price: max.map(|m| m.amount_minor),
            text: (!text.is_empty()).then(|| text.to_lowercase()),
            order,
            after,
            limit: size + 1,
        };
        let mut rows = db::products::list(&mut conn, &query).await?;
        let next = if rows.len() as i64 > size {
            rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            rows.last()
                .map(|row| {
                    let cursor = serde_json::to_string(&Cursor::after(row)).unwrap_or_default();
                    page::encode(&fingerprint, &cursor)
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((
            rows.into_iter().map(ProductRow::into_product).collect(),
            next,
        ))
    }

    /// Applies the fields named in `paths` (already checked against the allowed list) at
    /// `etag` (if given).
    pub async fn update_product(
        &self,
        id: &str,
        fields: ProductFields,
        paths: &[String],
        etag: &str,
    ) -> Result<Product, CatalogError> {
        if id.is_empty() {
            return Err(CatalogError::field("product.id", "is required"));
        }
        let mut violations = Vec::new();
        let mut changes = ProductChanges::default();
        let mut category_ids = None;
        let mut text_changed = false;
        let current = self
            .load(&[id.to_owned()])
            .await?
            .pop()
            .ok_or(CatalogError::NotFound { what: "product" })?;
        for path in paths {
            match path.as_str() {
                "sku" => {
                    collect(
                        &mut violations,
                        "product.sku",
                        rules::check_sku(&fields.sku),
                    );
                    changes.sku = Some(fields.sku.clone());
                }
                "title" => {
                    changes.title = collect(
                        &mut violations,
                        "product.title",
                        rules::check_title(&fields.title),
                    );
                    text_changed = true;
                }
                "description" => {
                    collect(
                        &mut violations,
                        "product.description",
                        rules::check_description(&fields.description),
                    );
                    changes.description = Some(fields.description.clone());
                    text_changed = true;
                }
                "price" => match money::check(fields.price.as_ref(), "product.price") {
                    Ok(price) => {
                        changes.price_minor = Some(price.amount_minor);
                        changes.currency_code = Some(price.currency_code);
                    }
                    Err(v) => violations.extend(v),
                },
                "category_ids" => {
                    category_ids = collect(
                        &mut violations,
                        "product.category_ids",
                        rules::check_category_ids(&fields.category_ids),
                    );
                }
                "attributes" => {
                    collect(
                        &mut violations,
                        "product.attributes",
                        rules::check_attributes(&fields.attributes),
                    );
                    changes.attributes =
                        Some(serde_json::to_string(&fields.attributes).unwrap_or_default());
                }
                "image_urls" => {
                    collect(
                        &mut violations,
                        "product.image_urls",
                        rules::check_image_urls(&fields.image_urls),
                    );
                    changes.image_urls =
                        Some(serde_json::to_string(&fields.image_urls).unwrap_or_default());
                }
                "status" => match fields.status {
                    Some(status @ (ProductStatus::Draft | ProductStatus::Active)) => {
                        changes.status = Some(status.as_str().to_owned());
                    }
                    _ => violations.push(FieldViolation::new(
                        "product.status",
                        "must be DRAFT or ACTIVE (archive with ArchiveProduct)",
                    )),
                },
                other => violations.push(FieldViolation::new(
                    "update_mask",
                    format!(
                        "unknown path {other:?}: use sku, title, description, price, \
                         category_ids, attributes, image_urls or status"
                    ),
                )),
            }
        }
        if !violations.is_empty() {
            return Err(CatalogError::InvalidArgument(violations));
        }
        if text_changed {
            let title = changes.title.as_deref().unwrap_or(&current.title);
            let description = changes
                .description
                .as_deref()
                .unwrap_or(&current.description);
            changes.search_text = Some(rules::search_text(title, description));
        }
        self.write(id, changes, category_ids, etag).await
    }

    /// Archives a product (idempotent).
    pub async fn archive_product(&self, id: &str, etag: &str) -> Result<Product, CatalogError> {
        if id.is_empty() {
            return Err(CatalogError::field("product_id", "is required"));
        }
        let changes = ProductChanges {
            status: Some(ProductStatus::Archived.as_str().to_owned()),
            ..ProductChanges::default()
        };
        self.write(id, changes, None, etag).await
    }

    async fn write(
        &self,
        id: &str,
        mut changes: ProductChanges,
        category_ids: Option<Vec<String>>,
        etag: &str,
    ) -> Result<Product, CatalogError> {
        changes.updated_at = Some(domain::now());
        let mut conn = self.conn().await?;
        let result = db::products::update(
            &mut conn,
            id,
            &changes,
            category_ids.as_deref(),
            expected_version(etag),
        )
        .await;
        // Whatever happened, this replica's copy may be stale now.
        if let Some(cache) = &self.inner.products {
            cache.invalidate(id);
        }
        Ok(result.map_err(map_write)?.into_product())
    }
}
