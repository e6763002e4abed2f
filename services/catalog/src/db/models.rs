//! Rows as stored, and their conversion to the domain's types.

use std::collections::BTreeMap;

use backbone_common::money::Amount;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{
    categories, products, reservation_items, reservations, stock, stock_movements,
};
use crate::domain::{
    category::Category,
    product::{Product, ProductStatus},
    stock::{MovementKind, Reservation, ReservationItem, ReservationState, Stock},
};

/// A `products` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = products)]
pub struct ProductRow {
    pub id: String,
    pub sku: String,
    pub title: String,
    pub description: String,
    pub price_minor: i64,
    pub currency_code: String,
    pub status: String,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub attributes: String,
    pub image_urls: String,
    pub search_text: String,
    /// The sorted category ids, as a JSON array (the same set as the product's
    /// `product_categories` links, written in the same transaction).
    pub category_ids: String,
}

impl ProductRow {
    /// The row of `product`.
    pub fn from_product(product: &Product) -> Self {
        ProductRow {
            id: product.id.clone(),
            sku: product.sku.clone(),
            title: product.title.clone(),
            description: product.description.clone(),
            price_minor: product.price.amount_minor,
            currency_code: product.price.currency_code.clone(),
            status: product.status.as_str().to_owned(),
            version: product.version,
            created_at: product.created_at,
            updated_at: product.updated_at,
            attributes: serde_json::to_string(&product.attributes).unwrap_or_default(),
            image_urls: serde_json::to_string(&product.image_urls).unwrap_or_default(),
            search_text: product.search_text(),
            category_ids: category_ids_json(&product.category_ids),
        }
    }

    /// The product.
    pub fn into_product(self) -> Product {
        Product {
            id: self.id,
            sku: self.sku,
            title: self.title,
            description: self.description,
            price: Amount {
                currency_code: self.currency_code,
                amount_minor: self.price_minor,
            },
            category_ids: serde_json::from_str(&self.category_ids).unwrap_or_default(),
            attributes: serde_json::from_str::<BTreeMap<String, String>>(&self.attributes)
                .unwrap_or_default(),
            image_urls: serde_json::from_str(&self.image_urls).unwrap_or_default(),
            status: ProductStatus::parse(&self.status).unwrap_or(ProductStatus::Draft),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The `category_ids` column for these (sorted) ids.
pub fn category_ids_json(ids: &[String]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

/// A `categories` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = categories)]
pub struct CategoryRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl From<CategoryRow> for Category {
    fn from(row: CategoryRow) -> Self {
        Category {
            id: row.id,
            slug: row.slug,
            name: row.name,
            parent_id: row.parent_id,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A `stock` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = stock)]
pub struct StockRow {
    pub product_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub updated_at: Option<NaiveDateTime>,
}

impl From<StockRow> for Stock {
    fn from(row: StockRow) -> Self {
        Stock {
            product_id: row.product_id,
            on_hand: row.on_hand,
            reserved: row.reserved,
            updated_at: row.updated_at,
        }
    }
}

/// A `stock_movements` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = stock_movements)]
pub struct MovementRow {
    pub id: String,
    pub product_id: String,
    pub kind: String,
    pub delta: i64,
    pub on_hand_after: i64,
    pub reason: String,
    pub reservation_id: Option<String>,
    pub actor_id: String,
    pub created_at: NaiveDateTime,
}

impl MovementRow {
    /// The kind, as the domain names it.
    pub fn movement_kind(&self) -> MovementKind {
        MovementKind::parse(&self.kind).unwrap_or(MovementKind::Adjustment)
    }
}

/// A `reservations` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = reservations)]
pub struct ReservationRow {
    pub id: String,
    pub fingerprint: String,
    pub state: String,
    pub owner_id: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

/// A `reservation_items` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = reservation_items)]
pub struct ReservationItemRow {
    pub reservation_id: String,
    pub position: i32,
    pub product_id: String,
    pub quantity: i64,
}

impl ReservationRow {
    /// The reservation with its items (any order; sorted by position here).
    pub fn into_reservation(self, mut items: Vec<ReservationItemRow>) -> Reservation {
        items.sort_by_key(|item| item.position);
        Reservation {
            id: self.id,
            items: items
                .into_iter()
                .map(|item| ReservationItem {
                    product_id: item.product_id,
                    quantity: item.quantity,
                })
                .collect(),
            state: ReservationState::parse(&self.state).unwrap_or(ReservationState::Held),
            owner_id: self.owner_id,
            created_at: self.created_at,
            expires_at: self.expires_at,
            finished_at: self.finished_at,
        }
    }
}
