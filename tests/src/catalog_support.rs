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
    Backend, InProcess, Mode, Process, Running, Svc, TestDb,
    auth_support::{self, AuthClient, bearer},
    wait_ready,
};

/// The catalog client.
pub type CatalogClient = CatalogServiceClient<Channel>;

/// Auth and catalog running, with tokens of each caller class.
#[derive(Debug)]
pub struct Stack {
    /// The auth service.
    pub auth: Running,
    /// The catalog service.
    pub catalog: Running,
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
    /// How the services run.
    pub mode: Mode,
    /// The auth service's database.
    pub auth_db: TestDb,
    catalog_extra: Vec<String>,
}

impl Stack {
    /// Starts both services in the test process on `backend` with extra catalog flags.
    pub async fn start(backend: Backend, extra: &[&str]) -> Self {
        Self::start_in(backend, extra, Mode::InProcess).await
    }

    /// Starts both services on `backend`, run as `mode` says, with extra catalog flags.
    pub async fn start_in(backend: Backend, extra: &[&str], mode: Mode) -> Self {
        let auth_db = TestDb::new(backend).await;
        let catalog_db = TestDb::new(backend).await;
        let auth = match &mode {
            Mode::InProcess => Running::InProcess(InProcess::start_auth(&auth_db.url, &[]).await),
            Mode::Processes(_) => Running::Process(Process::start_with_env(
                Svc::Auth,
                &auth_db.url,
                &[],
                &mode.env(),
            )),
        };
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
        let catalog_extra: Vec<String> = [
            "--auth-url",
            &auth.url(),
            "--reservation-sweep-interval",
            "100ms",
        ]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect();
        let catalog = start_catalog(&mode, &catalog_db, &catalog_extra, None).await;
        let client = CatalogClient::new(catalog.channel().await);
        Self {
            auth,
            catalog,
            catalog_db,
            client,
            admin,
            service,
            customer,
            mode,
            auth_db,
            catalog_extra,
        }
    }

    /// SIGKILLs the catalog process (a crash: nothing finishes, nothing is flushed).
    pub fn kill_catalog(&mut self) {
        self.catalog.process().kill();
    }

    /// Starts the catalog again on its address and database, after [`Stack::kill_catalog`].
    pub async fn restart_catalog(&mut self) {
        let addr = self.catalog.addr();
        self.catalog = start_catalog(
            &self.mode,
            &self.catalog_db,
            &self.catalog_extra,
            Some(addr),
        )
        .await;
        self.client = CatalogClient::new(self.catalog.channel().await);
    }

    /// Stops both services.
    pub async fn stop(self) {
        self.catalog.stop().await;
        self.auth.stop().await;
    }
}

/// Starts the catalog (on `addr` when given) and waits until it is SERVING.
async fn start_catalog(
    mode: &Mode,
    db: &TestDb,
    extra: &[String],
    addr: Option<std::net::SocketAddr>,
) -> Running {
    let catalog = match mode {
        Mode::InProcess => {
            let mut args = vec!["backbone-catalog", "--database-url", &db.url];
            args.extend(extra.iter().map(String::as_str));
            let cli: backbone_catalog::config::Cli =
                backbone_common::config::try_parse_from("CATALOG", args)
                    .expect("catalog test flags parse");
            let config = cli.config;
            Running::InProcess(
                InProcess::launch(|listener, shutdown| {
                    backbone_catalog::run(config, listener, shutdown)
                })
                .await,
            )
        }
        Mode::Processes(_) => {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let addr = addr.unwrap_or_else(|| {
                format!("127.0.0.1:{}", crate::free_port())
                    .parse()
                    .expect("addr")
            });
            Running::Process(Process::start_on(
                Svc::Catalog,
                addr,
                &db.url,
                &extra,
                &mode.env(),
            ))
        }
    };
    wait_ready(&catalog.channel().await, Svc::Catalog.grpc_name()).await;
    catalog
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
                ttl: ttl_seconds
                    .map(|seconds| backbone_proto::pbjson_types::Duration { seconds, nanos: 0 }),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().reservation.expect("reservation"))
}
