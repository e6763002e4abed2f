//! `backbone-catalog seed`: a small sample catalog with stock for development, loaded through the
//! same use cases the API calls. Running it again changes nothing: categories are matched by slug,
//! products by SKU, and a product is stocked only while it has never had a stock movement.

use std::{collections::BTreeMap, sync::Arc};

use backbone_common::auth::{Principal, PrincipalKind, Role};
use backbone_proto::common::Money;

use super::{Caller, Catalog, products::ProductFields};
use crate::{
    db,
    domain::{category::Category, product::ProductStatus},
    error::CatalogError,
};

/// The actor id stock movements of the seed carry.
pub const ACTOR: &str = "seed";

/// (slug, name, parent slug)
const CATEGORIES: [(&str, &str, &str); 4] = [
    ("apparel", "Apparel", ""),
    ("t-shirts", "T-shirts", "apparel"),
    ("mugs", "Mugs", ""),
    ("books", "Books", ""),
];

struct Sample {
    sku: &'static str,
    title: &'static str,
    description: &'static str,
    price_cents: i64,
    category: &'static str,
    attributes: &'static [(&'static str, &'static str)],
    stock: i64,
}

const PRODUCTS: [Sample; 5] = [
    Sample {
        sku: "TSHIRT-BLUE-M",
        title: "Backbone T-shirt, blue",
        description: "Organic cotton crew neck with the Backbone logo.",
        price_cents: 2_500,
        category: "t-shirts",
        attributes: &[("colour", "blue"), ("size", "M")],
        stock: 40,
    },
    Sample {
        sku: "TSHIRT-BLACK-L",
        title: "Backbone T-shirt, black",
        description: "Organic cotton crew neck with the Backbone logo.",
        price_cents: 2_500,
        category: "t-shirts",
        attributes: &[("colour", "black"), ("size", "L")],
        stock: 25,
    },
    Sample {
        sku: "MUG-ENAMEL",
        title: "Enamel camping mug",
        description: "Enamelled steel mug, 350 ml, survives the dishwasher and the campfire.",
        price_cents: 1_200,
        category: "mugs",
        attributes: &[("capacity", "350 ml")],
        stock: 100,
    },
    Sample {
        sku: "BOOK-RUST-ASYNC",
        title: "Asynchronous Programming in Rust",
        description: "Futures, executors and tokio from the ground up. Paperback.",
        price_cents: 3_990,
        category: "books",
        attributes: &[("format", "paperback"), ("pages", "320")],
        stock: 12,
    },
    Sample {
        sku: "BOOK-DISTRIBUTED",
        title: "Designing Distributed Systems",
        description: "Patterns for sagas, idempotency and exactly-once effects. Hardcover.",
        price_cents: 4_900,
        category: "books",
        attributes: &[("format", "hardcover"), ("pages", "410")],
        stock: 3,
    },
];

/// What a seed run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Categories created by this run.
    pub categories_created: usize,
    /// Products created by this run.
    pub products_created: usize,
    /// Products stocked by this run.
    pub products_stocked: usize,
}

impl Catalog {
    /// Loads the sample catalog; a second run finds everything in place and changes nothing.
    pub async fn seed(&self) -> Result<SeedReport, CatalogError> {
        let caller = Caller {
            principal: Some(Arc::new(Principal {
                subject: ACTOR.to_owned(),
                kind: PrincipalKind::ServiceAccount,
                roles: vec![Role::Admin],
                session_id: None,
                token_id: String::new(),
                expires_at: 0,
            })),
        };
        let mut report = SeedReport::default();
        let mut by_slug: BTreeMap<String, String> = {
            let mut conn = self.conn().await?;
            db::categories::all(&mut conn)
                .await?
                .into_iter()
                .map(|c| (c.slug, c.id))
                .collect()
        };
        for (slug, name, parent) in CATEGORIES {
            if by_slug.contains_key(slug) {
                continue;
            }
            let parent_id = by_slug.get(parent).cloned().unwrap_or_default();
            let created: Category = self.create_category(slug, name, &parent_id).await?;
            by_slug.insert(created.slug, created.id);
            report.categories_created += 1;
        }
        for sample in &PRODUCTS {
            let existing = {
                let mut conn = self.conn().await?;
                db::products::id_by_sku(&mut conn, sample.sku).await?
            };
            let id = match existing {
                Some(id) => id,
                None => {
                    let created = self
                        .create_product(ProductFields {
                            sku: sample.sku.to_owned(),
                            title: sample.title.to_owned(),
                            description: sample.description.to_owned(),
                            price: Some(Money {
                                currency_code: "EUR".to_owned(),
                                amount_minor: sample.price_cents,
                            }),
                            category_ids: by_slug
                                .get(sample.category)
                                .cloned()
                                .into_iter()
                                .collect(),
                            attributes: sample
                                .attributes
                                .iter()
                                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                                .collect(),
                            image_urls: Vec::new(),
                            status: Some(ProductStatus::Active),
                        })
                        .await?;
                    report.products_created += 1;
                    created.id
                }
            };
            // Stock only what never had a movement, so a rerun (or an admin's later
            // adjustments) are never topped up again; the key makes a retried run safe.
            let (moves, _) = self.movements(&id, 1, "").await?;
            if moves.is_empty() {
                self.adjust_stock(
                    &caller,
                    &id,
                    sample.stock,
                    "sample catalog (backbone-catalog seed)",
                    &format!("seed:{}", sample.sku),
                )
                .await?;
                report.products_stocked += 1;
            }
        }
        Ok(report)
    }
}
