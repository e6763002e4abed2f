//! Helpers for catalog tests: the auth service and the catalog (verifying tokens against it)
//! running in-process on their own databases, with an admin, a service account and a customer
//! signed in.

use backbone_proto::{
    auth as auth_pb,
    catalog::{self as pb, catalog_service_client::CatalogServiceClient},
    common::Money,
};
use tonic::transport::Channel;

use crate::{
    Backend, InProcess, Svc, TestDb,
    auth_support::{self, AuthClient, bearer},
    wait_ready,
};

/// The catalog client.
pub type CatalogClient = CatalogServiceClient<Channel>;

/// Auth and catalog running, with tokens of each caller class.
#[derive(Debug)]
pub struct Stack {
    /// The auth service.
    pub auth: InProcess,
    /// The catalog service.
    pub catalog: InProcess,
    /// The catalog's database.
    pub catalog_db: TestDb,
    /// Its client.
    pub client: CatalogClient,
    /// An administrator's access token.
    pub admin: String,
    /// A service account's access token (role service).
    pub service: String,
    /// A customer's access token.
    pub customer: String,
    _auth_db: TestDb,
}

impl Stack {
    /// Starts both services on `backend` with extra catalog flags.
    pub async fn start(backend: Backend, extra: &[&str]) -> Self {
        let auth_db = TestDb::new(backend).await;
        let catalog_db = TestDb::new(backend).await;
        let auth = InProcess::start_auth(&auth_db.url, &[]).await;
        let auth_channel = auth.channel().await;
        wait_ready(&auth_channel, Svc::Auth.grpc_name()).await;
        let mut auth_client = AuthClient::new(auth_channel);
        let admin = auth_support::admin(&mut auth_client, &auth_db.url, "root@example.com").await;
        let customer = auth_support::customer(&mut auth_client, "cara@example.com").await;
        let created = auth_client
            .create_service_account(bearer(
                auth_pb::CreateServiceAccountRequest {
                    display_name: "billing".into(),
                },
                &admin,
            ))
            .await
            .expect("service account")
            .into_inner();
        let service = auth_client
            .issue_service_token(auth_pb::IssueServiceTokenRequest {
                client_id: created.service_account.expect("account").id,
                client_secret: created.client_secret,
            })
            .await
            .expect("service token")
            .into_inner()
            .access_token;
        let auth_url = format!("http://{}", auth.addr);
        let mut args = vec![
            "backbone-catalog",
            "--database-url",
            &catalog_db.url,
            "--auth-url",
            &auth_url,
            "--reservation-sweep-interval",
            "100ms",
        ];
        args.extend_from_slice(extra);
        let cli: backbone_catalog::config::Cli =
            backbone_common::config::try_parse_from("CATALOG", args)
                .expect("catalog test flags parse");
        let config = cli.config;
        let catalog = InProcess::launch(|listener, shutdown| {
            backbone_catalog::run(config, listener, shutdown)
        })
        .await;
        let channel = catalog.channel().await;
        wait_ready(&channel, Svc::Catalog.grpc_name()).await;
        Self {
            auth,
            catalog,
            catalog_db,
            client: CatalogClient::new(channel),
            admin,
            service,
            customer,
            _auth_db: auth_db,
        }
    }

    /// Stops both services.
    pub async fn stop(self) {
        self.catalog.stop().await.expect("catalog stops cleanly");
        self.auth.stop().await.expect("auth stops cleanly");
    }
}

/// Money in EUR cents.
pub fn eur(cents: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        amount_minor: cents,
    }
}

/// A valid ACTIVE product with this SKU and price.
pub fn product(sku: &str, title: &str, price: Money) -> pb::Product {
    pb::Product {
        sku: sku.into(),
        title: title.into(),
        description: format!("The {title}."),
        price: Some(price),
        status: pb::ProductStatus::Active as i32,
        ..Default::default()
    }
}

/// Creates `product` as the admin.
pub async fn create(stack: &mut Stack, product: pb::Product) -> pb::Product {
    let admin = stack.admin.clone();
    stack
        .client
        .create_product(bearer(
            pb::CreateProductRequest {
                product: Some(product),
            },
            &admin,
        ))
        .await
        .expect("create product")
        .into_inner()
        .product
        .expect("product")
}

/// Adds `units` to a product's stock as the admin.
pub async fn stock_up(stack: &mut Stack, product_id: &str, units: i64) -> pb::Stock {
    let admin = stack.admin.clone();
    stack
        .client
        .adjust_stock(bearer(
            pb::AdjustStockRequest {
                product_id: product_id.into(),
                delta: units,
                reason: "delivery".into(),
                request_id: String::new(),
            },
            &admin,
        ))
        .await
        .expect("adjust stock")
        .into_inner()
        .stock
        .expect("stock")
}

/// A product's stock, read as the admin.
pub async fn stock(stack: &mut Stack, product_id: &str) -> pb::Stock {
    let admin = stack.admin.clone();
    stack
        .client
        .get_stock(bearer(
            pb::GetStockRequest {
                product_id: product_id.into(),
            },
            &admin,
        ))
        .await
        .expect("get stock")
        .into_inner()
        .stock
        .expect("stock")
}

/// ReserveStock as the service account.
pub async fn reserve(
    client: &mut CatalogClient,
    token: &str,
    id: &str,
    items: &[(&str, i64)],
    ttl_seconds: Option<i64>,
) -> Result<pb::Reservation, tonic::Status> {
    client
        .reserve_stock(bearer(
            pb::ReserveStockRequest {
                reservation_id: id.into(),
                items: items
                    .iter()
                    .map(|(product_id, quantity)| pb::ReservationItem {
                        product_id: (*product_id).into(),
                        quantity: *quantity,
                    })
                    .collect(),
                ttl: ttl_seconds.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().reservation.expect("reservation"))
}
