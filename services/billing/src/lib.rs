//! The billing service: `backbone.billing.v1.BillingService`. [`run`] builds and serves it; tests call
//! it with a port-0 listener.

pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod peers;
pub mod present;
pub mod service;

use std::{future::Future, sync::Arc, time::Duration};

use backbone_common::{
    app::{self, AppError, PeerChannels},
    auth::{GrpcJwks, TokenVerifier},
    db::{Database, Migrations},
    serve::AbortOnDrop,
};
use backbone_proto::billing::billing_service_server::BillingServiceServer;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::net::TcpListener;
use tonic::{server::NamedService, service::Routes};

use crate::{
    config::Config,
    gateway::{PaymentGateway, test::TestGateway},
    peers::{Credentials, Peers},
    service::{Billing, Settings},
};

static POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
static SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// This service's migrations, one tree per backend.
pub const MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES_MIGRATIONS,
    sqlite: &SQLITE_MIGRATIONS,
};

/// The gRPC service name this binary serves and reports readiness for.
pub const SERVICE_NAME: &str = <BillingServiceServer<grpc::BillingApi> as NamedService>::NAME;

/// Opens the database described by `config` (no connection is made yet).
pub fn database(config: &Config) -> Result<Database, AppError> {
    Ok(Database::new(
        config.database_url.expose(),
        &config.db,
        MIGRATIONS,
    )?)
}

/// Serves the billing service on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let database = database(&config)?;
    let channels = PeerChannels::new(&config.server.tls, &config.peers)?;
    let auth = channels.channel(&config.auth_url, "--auth-url")?;
    let catalog = channels.channel(&config.catalog_url, "--catalog-url")?;
    let verifier = TokenVerifier::new(
        config.token.verifier_settings(),
        GrpcJwks::new(auth.clone()),
    );
    let credentials = match (
        &config.service_client_id,
        &config.service_client_secret_file,
        &config.service_client_secret,
    ) {
        (None, _, _) => {
            tracing::warn!("no --service-client-id: checkout cannot reserve stock in catalog");
            None
        }
        (Some(id), Some(path), _) => {
            let secret = std::fs::read_to_string(path).map_err(|err| {
                AppError::Config(format!(
                    "--service-client-secret-file {}: {err}",
                    path.display()
                ))
            })?;
            Some(Credentials {
                client_id: id.clone(),
                client_secret: secret.trim().into(),
            })
        }
        (Some(id), None, Some(secret)) => Some(Credentials {
            client_id: id.clone(),
            client_secret: secret.clone(),
        }),
        (Some(_), None, None) => {
            return Err(AppError::Config(
                "--service-client-id needs --service-client-secret-file (or --service-client-secret)".into(),
            ));
        }
    };
    let peers = Peers::new(catalog, auth, credentials, config.peer_timeout);
    let gateway: Arc<dyn PaymentGateway> = Arc::new(TestGateway::new(database.clone()));
    let billing = Billing::new(
        database.clone(),
        peers,
        gateway,
        Settings {
            reservation_ttl: config.reservation_ttl,
            lease: config.saga_lease,
            recovery_delay: config.recovery_delay,
            gateway_timeout: config.gateway_timeout,
            key_retention: config.idempotency_retention,
            key_wait: config.idempotency_wait,
        },
    );
    let worker = AbortOnDrop(tokio::spawn(service::recovery::run(
        billing.clone(),
        config.recovery_interval.max(Duration::from_millis(50)),
    )));
    let routes = Routes::new(BillingServiceServer::new(grpc::BillingApi::new(billing)));
    let served = app::serve_with_database(
        listener,
        routes,
        vec![SERVICE_NAME],
        database,
        config.server,
        Some(verifier),
        shutdown,
    )
    .await;
    drop(worker);
    served
}

/// The `migrate` subcommand.
pub async fn migrate(config: &Config) -> Result<(), AppError> {
    app::migrate(&database(config)?).await
}
