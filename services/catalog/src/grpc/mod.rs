//! gRPC handlers of `backbone.catalog.v1.CatalogService`: decode, check the caller's role, call
//! the use case, encode.

pub mod convert;

use std::time::Duration;

use backbone_common::{
    auth::{Role, optional_principal, require_any_role, require_role},
    encoded::{EncodedField, UnaryRoute},
};
use backbone_proto::catalog::{
    self as pb,
    catalog_service_server::{CatalogService, CatalogServiceServer},
};
use prost::Message;
use tonic::{Request, Response, Status, service::Routes};

use crate::{
    domain::stock::ReservationItem,
    error::CatalogError,
    service::{Caller, Catalog, products::ListRequest},
};

/// The handlers' shared state.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    catalog: Catalog,
}

impl CatalogApi {
    /// Handlers over the use cases.
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }

    /// GetProduct: the answer is the product's API form, encoded once per cached copy of the
    /// product and sent as is (`GetProductResponse` is field 1 holding the product), instead of
    /// building and encoding the message on every call. [`routes`] mounts it on the method's
    /// path, so the generated service's `get_product` (its default stub) is never reached.
    async fn get_product_encoded(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Answer<EncodedField<1>> {
        let caller = caller(&request);
        let product = self
            .catalog
            .product(&caller, &request.into_inner().product_id)
            .await?;
        let bytes = product.api_form(|product| convert::product(product).encode_to_vec().into());
        ok(EncodedField::new(bytes))
    }
}

/// The catalog's gRPC routes: the generated service, with GetProduct served by
/// [`CatalogApi::get_product_encoded`].
pub fn routes(catalog: Catalog) -> Routes {
    let api = CatalogApi::new(catalog);
    let get_product = UnaryRoute::new({
        let api = api.clone();
        move |request| {
            let api = api.clone();
            async move { api.get_product_encoded(request).await }
        }
    });
    Routes::from(
        Routes::new(CatalogServiceServer::new(api))
            .into_axum_router()
            .route_service(&format!("/{}/GetProduct", crate::SERVICE_NAME), get_product),
    )
}

fn caller<T>(request: &Request<T>) -> Caller {
    Caller {
        principal: optional_principal(request),
    }
}

/// The caller, required to be an admin.
fn admin<T>(request: &Request<T>) -> Result<Caller, Status> {
    require_role(request, Role::Admin)?;
    Ok(caller(request))
}

/// The caller, required to be a service or an admin.
fn service<T>(request: &Request<T>) -> Result<Caller, Status> {
    require_any_role(request, &[Role::Service, Role::Admin])?;
    Ok(caller(request))
}

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(message: T) -> Answer<T> {
    Ok(Response::new(message))
}

fn status_of(
    value: i32,
    field: &str,
) -> Result<Option<crate::domain::product::ProductStatus>, Status> {
    convert::status_from_api(value)
        .ok_or_else(|| CatalogError::field(field, "is not a known status").into())
}

fn mask(mask: Option<backbone_proto::pbjson_types::FieldMask>) -> Result<Vec<String>, Status> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(CatalogError::field("update_mask", "must name at least one field").into());
    }
    Ok(paths)
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Answer<pb::CreateProductResponse> {
        admin(&request)?;
        let product = request
            .into_inner()
            .product
            .ok_or_else(|| Status::from(CatalogError::field("product", "is required")))?;
        let status = status_of(product.status, "product.status")?;
        let created = self
            .catalog
            .create_product(convert::fields(product, status))
            .await?;
        ok(pb::CreateProductResponse {
            product: Some(convert::product(&created)),
        })
    }

    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Answer<pb::BatchGetProductsResponse> {
        let caller = caller(&request);
        let (products, missing) = self
            .catalog
            .batch_products(&caller, &request.into_inner().product_ids)
            .await?;
        ok(pb::BatchGetProductsResponse {
            products: products.iter().map(|p| convert::product(p)).collect(),
            missing_product_ids: missing,
        })
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Answer<pb::ListProductsResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let list = ListRequest {
            page_size: r.page_size,
            page_token: r.page_token,
            category_id: r.category_id,
            include_subcategories: r.include_subcategories,
            status: status_of(r.status, "status")?,
            min_price: r.min_price,
            max_price: r.max_price,
            query: r.query,
            order_by: r.order_by,
        };
        let (products, next) = self.catalog.list_products(&caller, &list).await?;
        ok(pb::ListProductsResponse {
            products: products.iter().map(convert::product).collect(),
            next_page_token: next,
        })
    }

    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Answer<pb::UpdateProductResponse> {
        admin(&request)?;
        let r = request.into_inner();
        let paths = mask(r.update_mask)?;
        let product = r
            .product
            .ok_or_else(|| Status::from(CatalogError::field("product", "is required")))?;
        let (id, etag) = (product.id.clone(), product.etag.clone());
        let status = status_of(product.status, "product.status")?;
        let updated = self
            .catalog
            .update_product(&id, convert::fields(product, status), &paths, &etag)
            .await?;
        ok(pb::UpdateProductResponse {
            product: Some(convert::product(&updated)),
        })
    }

    async fn archive_product(
        &self,
        request: Request<pb::ArchiveProductRequest>,
    ) -> Answer<pb::ArchiveProductResponse> {
        admin(&request)?;
        let r = request.into_inner();
        let product = self.catalog.archive_product(&r.product_id, &r.etag).await?;
        ok(pb::ArchiveProductResponse {
            product: Some(convert::product(&product)),
        })
    }

    async fn create_category(
        &self,
        request: Request<pb::CreateCategoryRequest>,
    ) -> Answer<pb::CreateCategoryResponse> {
        admin(&request)?;
        let c = request
            .into_inner()
            .category
            .ok_or_else(|| Status::from(CatalogError::field("category", "is required")))?;
        let created = self
            .catalog
            .create_category(&c.slug, &c.name, &c.parent_id)
            .await?;
        ok(pb::CreateCategoryResponse {
            category: Some(convert::category(created)),
        })
    }

    async fn get_category(
        &self,
        request: Request<pb::GetCategoryRequest>,
    ) -> Answer<pb::GetCategoryResponse> {
        let category = self
            .catalog
            .category(&request.into_inner().category_id)
            .await?;
        ok(pb::GetCategoryResponse {
            category: Some(convert::category(category)),
        })
    }

    async fn update_category(
        &self,
        request: Request<pb::UpdateCategoryRequest>,
    ) -> Answer<pb::UpdateCategoryResponse> {
        admin(&request)?;
        let r = request.into_inner();
        let paths = mask(r.update_mask)?;
        let c = r
            .category
            .ok_or_else(|| Status::from(CatalogError::field("category", "is required")))?;
        let updated = self
            .catalog
            .update_category(&c.id, &c.slug, &c.name, &c.parent_id, &paths, &c.etag)
            .await?;
        ok(pb::UpdateCategoryResponse {
            category: Some(convert::category(updated)),
        })
    }

    async fn list_categories(
        &self,
        request: Request<pb::ListCategoriesRequest>,
    ) -> Answer<pb::ListCategoriesResponse> {
        let r = request.into_inner();
        let (categories, next) = self
            .catalog
            .list_categories(
                &r.parent_id,
                r.include_descendants,
                r.page_size,
                &r.page_token,
            )
            .await?;
        ok(pb::ListCategoriesResponse {
            categories: categories.into_iter().map(convert::category).collect(),
            next_page_token: next,
        })
    }

    async fn delete_category(
        &self,
        request: Request<pb::DeleteCategoryRequest>,
    ) -> Answer<pb::DeleteCategoryResponse> {
        admin(&request)?;
        let r = request.into_inner();
        self.catalog
            .delete_category(&r.category_id, &r.etag)
            .await?;
        ok(pb::DeleteCategoryResponse {})
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Answer<pb::AdjustStockResponse> {
        let caller = admin(&request)?;
        let header = request
            .metadata()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let r = request.into_inner();
        let key = if r.request_id.is_empty() {
            header
        } else {
            r.request_id
        };
        let (stock, movement) = self
            .catalog
            .adjust_stock(&caller, &r.product_id, r.delta, &r.reason, &key)
            .await?;
        ok(pb::AdjustStockResponse {
            stock: Some(convert::stock(stock)),
            movement: Some(convert::movement(movement)),
        })
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Answer<pb::GetStockResponse> {
        let caller = caller(&request);
        let id = request.into_inner().product_id;
        if id.is_empty() {
            return Err(CatalogError::field("product_id", "is required").into());
        }
        let (stocks, _) = self.catalog.stock_of(&caller, &[id]).await?;
        let stock = stocks
            .into_iter()
            .next()
            .ok_or_else(|| Status::from(CatalogError::NotFound { what: "product" }))?;
        ok(pb::GetStockResponse {
            stock: Some(convert::stock(stock)),
        })
    }

    async fn batch_get_stock(
        &self,
        request: Request<pb::BatchGetStockRequest>,
    ) -> Answer<pb::BatchGetStockResponse> {
        let caller = caller(&request);
        let (stocks, missing) = self
            .catalog
            .stock_of(&caller, &request.into_inner().product_ids)
            .await?;
        ok(pb::BatchGetStockResponse {
            stocks: stocks.into_iter().map(convert::stock).collect(),
            missing_product_ids: missing,
        })
    }

    async fn list_stock_movements(
        &self,
        request: Request<pb::ListStockMovementsRequest>,
    ) -> Answer<pb::ListStockMovementsResponse> {
        admin(&request)?;
        let r = request.into_inner();
        let (movements, next) = self
            .catalog
            .movements(&r.product_id, r.page_size, &r.page_token)
            .await?;
        ok(pb::ListStockMovementsResponse {
            movements: movements.into_iter().map(convert::movement).collect(),
            next_page_token: next,
        })
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Answer<pb::ReserveStockResponse> {
        let caller = service(&request)?;
        let r = request.into_inner();
        let items: Vec<ReservationItem> = r
            .items
            .into_iter()
            .map(|i| ReservationItem {
                product_id: i.product_id,
                quantity: i.quantity,
            })
            .collect();
        let ttl = match r.ttl {
            None => None,
            Some(d) => Some(
                Duration::try_from(d)
                    .map_err(|_| Status::from(CatalogError::field("ttl", "must be positive")))?,
            ),
        };
        let reservation = self
            .catalog
            .reserve(&caller, &r.reservation_id, &items, ttl)
            .await?;
        ok(pb::ReserveStockResponse {
            reservation: Some(convert::reservation(reservation)),
        })
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Answer<pb::GetReservationResponse> {
        service(&request)?;
        let reservation = self
            .catalog
            .reservation(&request.into_inner().reservation_id)
            .await?;
        ok(pb::GetReservationResponse {
            reservation: Some(convert::reservation(reservation)),
        })
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Answer<pb::CommitReservationResponse> {
        let caller = service(&request)?;
        let reservation = self
            .catalog
            .commit(&caller, &request.into_inner().reservation_id)
            .await?;
        ok(pb::CommitReservationResponse {
            reservation: Some(convert::reservation(reservation)),
        })
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Answer<pb::ReleaseReservationResponse> {
        let caller = service(&request)?;
        let reservation = self
            .catalog
            .release(&caller, &request.into_inner().reservation_id)
            .await?;
        ok(pb::ReleaseReservationResponse {
            reservation: Some(convert::reservation(reservation)),
        })
    }
}
