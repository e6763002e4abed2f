//! Carts: one per customer, priced from the catalog at read time; unknown, unavailable or short
//! products are reported per line.

use std::collections::{BTreeMap, HashMap};

use backbone_proto::{billing as pb, catalog as catalog_pb};
use chrono::NaiveDateTime;
use prost::Message as _;

use super::{Billing, Caller, RequestKey};
use crate::{
    db::{
        carts::{self, CartChange, CartOutcome},
        keys::Claim,
        models::{CartLineRow, IdempotencyRecord},
    },
    domain::{self, MAX_QUANTITY},
    error::BillingError,
    present,
};

/// What the catalog says about some products right now.
#[derive(Debug, Clone, Default)]
pub struct Pricing {
    products: HashMap<String, catalog_pb::Product>,
    available: HashMap<String, i64>,
    reachable: bool,
}

impl Pricing {
    /// A product catalog knows (any status).
    pub fn product(&self, id: &str) -> Option<&catalog_pb::Product> {
        self.products.get(id)
    }

    /// The cart of `lines` priced with this.
    pub fn cart(
        &self,
        customer_id: &str,
        lines: &[CartLineRow],
        updated_at: Option<NaiveDateTime>,
    ) -> pb::Cart {
        let mut subtotals: BTreeMap<String, i64> = BTreeMap::new();
        let lines = lines
            .iter()
            .map(|line| {
                let mut out = pb::CartLine {
                    product_id: line.product_id.clone(),
                    quantity: line.quantity,
                    add_time: Some(present::timestamp(line.added_at)),
                    ..Default::default()
                };
                let status = if !self.reachable {
                    pb::CartLineStatus::CatalogUnavailable
                } else if let Some(product) = self.products.get(&line.product_id) {
                    out.sku.clone_from(&product.sku);
                    out.title.clone_from(&product.title);
                    if let Some(price) = &product.price {
                        out.unit_price = Some(price.clone());
                        let total = price.amount_minor.saturating_mul(line.quantity);
                        out.line_total = Some(present::money(&price.currency_code, total));
                        *subtotals.entry(price.currency_code.clone()).or_default() += total;
                    }
                    out.available_quantity =
                        self.available.get(&line.product_id).copied().unwrap_or(0);
                    if product.status != catalog_pb::ProductStatus::Active as i32 {
                        pb::CartLineStatus::ProductNotAvailable
                    } else if out.available_quantity < line.quantity {
                        pb::CartLineStatus::InsufficientStock
                    } else {
                        pb::CartLineStatus::Ok
                    }
                } else {
                    pb::CartLineStatus::ProductNotFound
                };
                out.status = status as i32;
                out
            })
            .collect();
        pb::Cart {
            customer_id: customer_id.to_owned(),
            lines,
            subtotals: subtotals
                .into_iter()
                .map(|(currency, amount)| present::money(&currency, amount))
                .collect(),
            update_time: updated_at.map(present::timestamp),
        }
    }
}

fn check_product(product_id: &str, quantity: i64, min: i64) -> Result<(), BillingError> {
    let mut violations = Vec::new();
    if product_id.is_empty() {
        violations.push(backbone_common::error::FieldViolation::new(
            "product_id",
            "is required",
        ));
    }
    if !(min..=MAX_QUANTITY).contains(&quantity) {
        violations.push(backbone_common::error::FieldViolation::new(
            "quantity",
            format!("must be {min} to {MAX_QUANTITY}"),
        ));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(BillingError::InvalidArgument(violations))
    }
}

impl Billing {
    /// Prices `ids` now; an unreachable catalog gives an unreachable pricing, not an error.
    pub async fn pricing(&self, caller: &Caller, ids: Vec<String>) -> Pricing {
        let peers = &self.inner.peers;
        // Both reads at once: stock of an id catalog does not know is simply missing.
        let (products, stock) = tokio::join!(
            peers.products(caller.deadline, ids.clone()),
            peers.stock(caller.deadline, ids)
        );
        let (products, available) = match (products, stock) {
            (Ok(found), Ok(stock)) => (
                found.products,
                stock
                    .stocks
                    .into_iter()
                    .map(|s| (s.product_id, s.available))
                    .collect(),
            ),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "cart priced without the catalog");
                return Pricing::default();
            }
        };
        Pricing {
            products: products.into_iter().map(|p| (p.id.clone(), p)).collect(),
            available,
            reachable: true,
        }
    }

    /// The caller's cart, priced now.
    pub async fn cart(&self, caller: &Caller) -> Result<pb::Cart, BillingError> {
        let customer = caller.customer()?.to_owned();
        let mut conn = self.conn().await?;
        let lines = carts::lines(&mut conn, &customer).await?;
        let updated_at = carts::updated_at(&mut conn, &customer).await?;
        drop(conn);
        let pricing = self
            .pricing(caller, lines.iter().map(|l| l.product_id.clone()).collect())
            .await;
        Ok(pricing.cart(&customer, &lines, updated_at))
    }

    /// Applies a cart change (at most once per key) and returns the cart after it.
    pub async fn change_cart(
        &self,
        caller: &Caller,
        change: CartChange,
        key: Option<RequestKey>,
    ) -> Result<pb::Cart, tonic::Status> {
        let customer = caller.customer()?.to_owned();
        let (product, quantity, min) = match &change {
            CartChange::Add {
                product_id,
                quantity,
            } => (Some(product_id.as_str()), *quantity, 1),
            CartChange::Set {
                product_id,
                quantity,
            } => (Some(product_id.as_str()), *quantity, 0),
            CartChange::Remove { product_id } => (Some(product_id.as_str()), 1, 1),
            CartChange::Clear => (None, 1, 1),
        };
        if let Some(product) = product {
            check_product(product, quantity, min)?;
        }
        let record = key.as_ref().map(|key| {
            let now = domain::now();
            IdempotencyRecord {
                caller_id: caller.id().to_owned(),
                request_key: key.key.clone(),
                operation: "cart".into(),
                fingerprint: key.fingerprint.clone(),
                state: "DONE".into(),
                order_id: None,
                status_code: None,
                response: None,
                locked_until: now,
                created_at: now,
            }
        });
        // A repeat is not looked for up front: the change's transaction stores the key last, and a
        // key used before rolls it back (an error answer looks for it before it is stored).
        let mut conn = self.conn().await?;
        let mut ids: Vec<String> = carts::lines(&mut conn, &customer)
            .await
            .map_err(BillingError::from)?
            .into_iter()
            .map(|l| l.product_id)
            .collect();
        drop(conn);
        if let Some(product) = product
            && !ids.iter().any(|id| id == product)
        {
            ids.push(product.to_owned());
        }
        let pricing = self.pricing(caller, ids).await;
        if let CartChange::Add { product_id, .. } = &change {
            if !pricing.reachable {
                // Not stored (a retry may succeed), but a repeat still gets its first answer.
                return self
                    .refuse(
                        record.as_ref(),
                        BillingError::PeerUnavailable(crate::peers::CATALOG),
                        false,
                    )
                    .await;
            }
            match pricing.product(product_id) {
                None => {
                    return self
                        .refuse(
                            record.as_ref(),
                            BillingError::NotFound { what: "product" },
                            true,
                        )
                        .await;
                }
                Some(p) if p.status != catalog_pb::ProductStatus::Active as i32 => {
                    return self
                        .refuse(
                            record.as_ref(),
                            BillingError::ProductNotAvailable(product_id.clone()),
                            true,
                        )
                        .await;
                }
                Some(_) => {}
            }
        }
        let respond = |lines: &[CartLineRow], now: NaiveDateTime| {
            pb::GetCartResponse {
                cart: Some(pricing.cart(&customer, lines, Some(now))),
            }
            .encode_to_vec()
        };
        let mut conn = self.conn().await?;
        let outcome = carts::change(
            &mut conn,
            &customer,
            &change,
            record.as_ref(),
            &respond,
            domain::now(),
        )
        .await
        .map_err(BillingError::from)?;
        drop(conn);
        match outcome {
            // The answer built inside the transaction, so a replay is byte for byte the same.
            CartOutcome::Done(response) => pb::GetCartResponse::decode(response.as_slice())
                .map(|r| r.cart.unwrap_or_default())
                .map_err(|err| backbone_common::error::internal(&err)),
            CartOutcome::Replay(existing) => replay_cart(record.as_ref(), &existing),
            CartOutcome::LimitExceeded => {
                self.refuse(record.as_ref(), BillingError::CartLimitExceeded, true)
                    .await
            }
            CartOutcome::NotInCart => {
                self.refuse(
                    record.as_ref(),
                    BillingError::NotFound { what: "cart line" },
                    true,
                )
                .await
            }
        }
    }

    /// Refuses a cart change: with a key used before, the first answer instead; else `err`,
    /// stored under the key if it is `lasting` (a racing twin stores the same).
    async fn refuse(
        &self,
        record: Option<&IdempotencyRecord>,
        err: BillingError,
        lasting: bool,
    ) -> Result<pb::Cart, tonic::Status> {
        let status = tonic::Status::from(err);
        let Some(record) = record else {
            return Err(status);
        };
        let found = match self.conn().await {
            Ok(mut conn) if lasting => {
                let mut done = record.clone();
                done.status_code = Some(status.code() as i32);
                done.response = Some(super::encode_status(&status));
                crate::db::keys::claim(&mut conn, &done)
                    .await
                    .map_err(BillingError::from)
                    .map(|claim| match claim {
                        Claim::New => None,
                        Claim::Existing(existing) => Some(existing),
                    })
            }
            Ok(mut conn) => crate::db::keys::get(&mut conn, &record.caller_id, &record.request_key)
                .await
                .map_err(BillingError::from),
            Err(err) => Err(err),
        };
        match found {
            Ok(Some(existing)) => replay_cart(Some(record), &existing),
            Ok(None) => Err(status),
            Err(err) => {
                tracing::warn!(error = %err, "could not look up or store an answer under its key");
                Err(status)
            }
        }
    }
}

/// The first answer under a key, unless the key was used for another request.
fn replay_cart(
    record: Option<&IdempotencyRecord>,
    existing: &IdempotencyRecord,
) -> Result<pb::Cart, tonic::Status> {
    if record
        .is_some_and(|r| r.fingerprint != existing.fingerprint || r.operation != existing.operation)
    {
        return Err(BillingError::IdempotencyKeyReused.into());
    }
    super::replay::<pb::GetCartResponse>(existing).map(|r| r.cart.unwrap_or_default())
}
