//! Products: their fields and limits, their lifecycle status, and the orders they list in.

use std::collections::BTreeMap;

use backbone_common::{error::FieldViolation, money::Amount};
use chrono::NaiveDateTime;

/// Most categories per product.
pub const MAX_CATEGORIES: usize = 20;
/// Most attributes per product.
pub const MAX_ATTRIBUTES: usize = 50;
/// Most images per product.
pub const MAX_IMAGES: usize = 20;

/// Where a product is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProductStatus {
    /// Being prepared: admins and services only.
    Draft,
    /// For sale.
    Active,
    /// No longer sold: admins and services only.
    Archived,
}

impl ProductStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Draft => "DRAFT",
            ProductStatus::Active => "ACTIVE",
            ProductStatus::Archived => "ARCHIVED",
        }
    }

    /// From the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "DRAFT" => Some(ProductStatus::Draft),
            "ACTIVE" => Some(ProductStatus::Active),
            "ARCHIVED" => Some(ProductStatus::Archived),
            _ => None,
        }
    }
}

/// Something for sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// UUIDv7.
    pub id: String,
    /// Unique stock keeping unit.
    pub sku: String,
    /// Title.
    pub title: String,
    /// Plain-text description.
    pub description: String,
    /// Unit price.
    pub price: Amount,
    /// Category ids, sorted.
    pub category_ids: Vec<String>,
    /// Free-form attributes.
    pub attributes: BTreeMap<String, String>,
    /// Image URLs; the first is the main image.
    pub image_urls: Vec<String>,
    /// Lifecycle status.
    pub status: ProductStatus,
    /// Bumped on every change.
    pub version: i64,
    /// Creation time (UTC).
    pub created_at: NaiveDateTime,
    /// Last change (UTC).
    pub updated_at: NaiveDateTime,
}

impl Product {
    /// The etag clients send back.
    pub fn etag(&self) -> String {
        super::etag(self.version)
    }

    /// What the text search matches: title and description, lower-cased.
    pub fn search_text(&self) -> String {
        search_text(&self.title, &self.description)
    }
}

/// The lower-cased text the product search matches against.
pub fn search_text(title: &str, description: &str) -> String {
    format!("{}\n{}", title.to_lowercase(), description.to_lowercase())
}

/// Checks a SKU.
pub fn check_sku(sku: &str) -> Result<(), &'static str> {
    if sku.is_empty() {
        return Err("is required");
    }
    if sku.len() > 64
        || !sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' and '.'");
    }
    Ok(())
}

/// Checks a title; returns it trimmed.
pub fn check_title(title: &str) -> Result<String, &'static str> {
    let title = title.trim();
    if title.is_empty() {
        return Err("is required");
    }
    if title.chars().count() > 200 {
        return Err("must be at most 200 characters");
    }
    if title.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(title.to_owned())
}

/// Checks a description.
pub fn check_description(description: &str) -> Result<(), &'static str> {
    if description.chars().count() > 10_000 {
        return Err("must be at most 10,000 characters");
    }
    Ok(())
}

/// Checks category ids (existence is the database's job); returns them sorted.
pub fn check_category_ids(ids: &[String]) -> Result<Vec<String>, &'static str> {
    if ids.len() > MAX_CATEGORIES {
        return Err("must list at most 20 categories");
    }
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != ids.len() {
        return Err("must not repeat a category");
    }
    if sorted.iter().any(String::is_empty) {
        return Err("must not contain empty ids");
    }
    Ok(sorted)
}

/// Checks attributes.
pub fn check_attributes(attributes: &BTreeMap<String, String>) -> Result<(), &'static str> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err("must have at most 50 entries");
    }
    for (key, value) in attributes {
        if key.is_empty() || key.chars().count() > 64 {
            return Err("keys must be 1 to 64 characters");
        }
        if value.chars().count() > 1000 {
            return Err("values must be at most 1,000 characters");
        }
    }
    Ok(())
}

/// Checks image URLs: absolute http(s), at most 2,048 characters each, at most 20.
pub fn check_image_urls(urls: &[String]) -> Result<(), &'static str> {
    if urls.len() > MAX_IMAGES {
        return Err("must list at most 20 images");
    }
    for url in urls {
        let parsed = url::Url::parse(url).map_err(|_| "must be absolute http or https URLs")?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err("must be absolute http or https URLs");
        }
        if url.len() > 2048 {
            return Err("must each be at most 2,048 characters");
        }
    }
    Ok(())
}

/// Pushes a violation of `prefix.field` when `check` fails.
pub fn collect<T>(
    violations: &mut Vec<FieldViolation>,
    field: &str,
    check: Result<T, &'static str>,
) -> Option<T> {
    check
        .map_err(|reason| violations.push(FieldViolation::new(field, reason)))
        .ok()
}

/// The orders ListProducts offers; ties are broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductOrder {
    /// Newest first (default).
    CreatedDesc,
    /// Oldest first.
    CreatedAsc,
    /// By currency, then cheapest first.
    PriceAsc,
    /// By currency descending, then dearest first.
    PriceDesc,
    /// By title A to Z.
    TitleAsc,
    /// By title Z to A.
    TitleDesc,
}

impl ProductOrder {
    /// Parses `order_by`; empty is the default.
    pub fn parse(order_by: &str) -> Result<Self, FieldViolation> {
        let normalized = order_by.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(match normalized.as_str() {
            "" | "create_time desc" => ProductOrder::CreatedDesc,
            "create_time" | "create_time asc" => ProductOrder::CreatedAsc,
            "price" | "price asc" => ProductOrder::PriceAsc,
            "price desc" => ProductOrder::PriceDesc,
            "title" | "title asc" => ProductOrder::TitleAsc,
            "title desc" => ProductOrder::TitleDesc,
            _ => {
                return Err(FieldViolation::new(
                    "order_by",
                    "must be one of \"create_time desc\", \"create_time\", \"price\", \
                     \"price desc\", \"title\", \"title desc\"",
                ));
            }
        })
    }

    /// A stable name for page-token fingerprints.
    pub fn as_str(self) -> &'static str {
        match self {
            ProductOrder::CreatedDesc => "create_time desc",
            ProductOrder::CreatedAsc => "create_time",
            ProductOrder::PriceAsc => "price",
            ProductOrder::PriceDesc => "price desc",
            ProductOrder::TitleAsc => "title",
            ProductOrder::TitleDesc => "title desc",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_and_urls_are_checked() {
        assert!(check_sku("TSHIRT-red_M.1").is_ok());
        assert!(check_sku("").is_err());
        assert!(check_sku("has space").is_err());
        assert!(check_sku(&"x".repeat(65)).is_err());
        assert!(check_image_urls(&["https://cdn.example.com/a.png".into()]).is_ok());
        assert!(check_image_urls(&["ftp://example.com/a.png".into()]).is_err());
        assert!(check_image_urls(&["/relative.png".into()]).is_err());
    }

    #[test]
    fn order_by_accepts_the_documented_values() {
        assert_eq!(
            ProductOrder::parse("").ok(),
            Some(ProductOrder::CreatedDesc)
        );
        assert_eq!(
            ProductOrder::parse(" price   desc ").ok(),
            Some(ProductOrder::PriceDesc)
        );
        assert!(ProductOrder::parse("sku").is_err());
    }
}
