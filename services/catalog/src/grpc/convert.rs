//! Conversions between the API's messages and the domain's types.

use backbone_proto::Timestamp;
use backbone_proto::catalog as pb;

use crate::{
    db::models::MovementRow,
    domain::{
        category::Category,
        product::{Product, ProductStatus},
        stock::{MovementKind, Reservation, ReservationState, Stock},
    },
    service::products::ProductFields,
};

/// A stored UTC time as a protobuf timestamp.
pub fn timestamp(time: chrono::NaiveDateTime) -> Timestamp {
    let utc = time.and_utc();
    Timestamp {
        seconds: utc.timestamp(),
        nanos: i32::try_from(utc.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The domain status of an API value: `Some(None)` for UNSPECIFIED, `None` for unknown numbers.
pub fn status_from_api(value: i32) -> Option<Option<ProductStatus>> {
    match pb::ProductStatus::try_from(value).ok()? {
        pb::ProductStatus::Unspecified => Some(None),
        pb::ProductStatus::Draft => Some(Some(ProductStatus::Draft)),
        pb::ProductStatus::Active => Some(Some(ProductStatus::Active)),
        pb::ProductStatus::Archived => Some(Some(ProductStatus::Archived)),
    }
}

fn status(status: ProductStatus) -> pb::ProductStatus {
    match status {
        ProductStatus::Draft => pb::ProductStatus::Draft,
        ProductStatus::Active => pb::ProductStatus::Active,
        ProductStatus::Archived => pb::ProductStatus::Archived,
    }
}

/// The writable fields of an API product (status already checked).
pub fn fields(product: pb::Product, status: Option<ProductStatus>) -> ProductFields {
    ProductFields {
        sku: product.sku,
        title: product.title,
        description: product.description,
        price: product.price,
        category_ids: product.category_ids,
        attributes: product.attributes.into_iter().collect(),
        image_urls: product.image_urls,
        status,
    }
}

/// The API form of a product.
///
/// By reference: reads answer from products shared with the cache, so each field is copied
/// once, into the answer, and not first into a copy of the whole product.
pub fn product(product: &Product) -> pb::Product {
    pb::Product {
        id: product.id.clone(),
        sku: product.sku.clone(),
        title: product.title.clone(),
        description: product.description.clone(),
        price: Some(product.price.to_api()),
        category_ids: product.category_ids.clone(),
        attributes: product
            .attributes
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        image_urls: product.image_urls.clone(),
        status: status(product.status) as i32,
        etag: product.etag(),
        create_time: Some(timestamp(product.created_at)),
        update_time: Some(timestamp(product.updated_at)),
    }
}

/// The API form of a category.
pub fn category(category: Category) -> pb::Category {
    let etag = category.etag();
    pb::Category {
        id: category.id,
        slug: category.slug,
        name: category.name,
        parent_id: category.parent_id.unwrap_or_default(),
        etag,
        create_time: Some(timestamp(category.created_at)),
        update_time: Some(timestamp(category.updated_at)),
    }
}

/// The API form of a stock level.
pub fn stock(stock: Stock) -> pb::Stock {
    pb::Stock {
        available: stock.available(),
        product_id: stock.product_id,
        on_hand: stock.on_hand,
        reserved: stock.reserved,
        update_time: stock.updated_at.map(timestamp),
    }
}

/// The API form of a movement.
pub fn movement(row: MovementRow) -> pb::StockMovement {
    let kind = match row.movement_kind() {
        MovementKind::Adjustment => pb::StockMovementKind::Adjustment,
        MovementKind::ReservationCommit => pb::StockMovementKind::ReservationCommit,
    };
    pb::StockMovement {
        id: row.id,
        product_id: row.product_id,
        kind: kind as i32,
        delta: row.delta,
        on_hand_after: row.on_hand_after,
        reason: row.reason,
        reservation_id: row.reservation_id.unwrap_or_default(),
        actor_id: row.actor_id,
        create_time: Some(timestamp(row.created_at)),
    }
}

/// The API form of a reservation.
pub fn reservation(reservation: Reservation) -> pb::Reservation {
    let state = match reservation.state {
        ReservationState::Held => pb::ReservationState::Held,
        ReservationState::Committed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
        ReservationState::Expired => pb::ReservationState::Expired,
    };
    pb::Reservation {
        id: reservation.id,
        items: reservation
            .items
            .into_iter()
            .map(|item| pb::ReservationItem {
                product_id: item.product_id,
                quantity: item.quantity,
            })
            .collect(),
        state: state as i32,
        owner_id: reservation.owner_id,
        create_time: Some(timestamp(reservation.created_at)),
        expire_time: Some(timestamp(reservation.expires_at)),
        finish_time: reservation.finished_at.map(timestamp),
    }
}
