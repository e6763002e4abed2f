//! The catalog service: `backbone.catalog.v1.CatalogService`. [`run`] builds and serves it; tests call
//! it with a port-0 listener.

pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod service;

use std::{future::Future, time::Duration};

use backbone_common::{
    app::{self, AppError, PeerChannels},
    auth::{GrpcJwks, TokenVerifier},
    db::{Database, Migrations},
    serve::AbortOnDrop,
};
use backbone_proto::catalog::catalog_service_server::CatalogServiceServer;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::net::TcpListener;
use tonic::server::NamedService;

use crate::{
    config::Config,
    service::{Catalog, Settings},
};

static POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
static SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// This service's migrations, one tree per backend.
pub const MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES_MIGRATIONS,
    sqlite: &SQLITE_MIGRATIONS,
};

/// The gRPC service name this binary serves and reports readiness for.
pub const SERVICE_NAME: &str = <CatalogServiceServer<grpc::CatalogApi> as NamedService>::NAME;

/// Opens the database described by `config` (no connection is made yet).
pub fn database(config: &Config) -> Result<Database, AppError> {
    Ok(Database::new(
        config.database_url.expose(),
        &config.db,
        MIGRATIONS,
    )?)
}

/// Serves the catalog service on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let database = database(&config)?;
    let channel = PeerChannels::new(&config.server.tls, &config.peers)?
        .channel(&config.auth_url, "--auth-url")?;
    let verifier = TokenVerifier::new(config.token.verifier_settings(), GrpcJwks::new(channel));
    let catalog = Catalog::new(
        database.clone(),
        &Settings {
            product_cache_ttl: config.product_cache_ttl,
            product_cache_capacity: config.product_cache_capacity,
        },
    );
    let sweeper = AbortOnDrop(tokio::spawn(service::sweeper::run(
        catalog.clone(),
        config
            .reservation_sweep_interval
            .max(Duration::from_millis(50)),
    )));
    let routes = grpc::routes(catalog);
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
    drop(sweeper);
    served
}

/// The `seed` subcommand: migrations, then the sample catalog.
pub async fn seed(config: &Config) -> Result<service::seed::SeedReport, AppError> {
    let database = database(config)?;
    database.prepare().await?;
    let catalog = Catalog::new(
        database,
        &Settings {
            product_cache_ttl: config.product_cache_ttl,
            product_cache_capacity: config.product_cache_capacity,
        },
    );
    catalog
        .seed()
        .await
        .map_err(|err| AppError::Command(tonic::Status::from(err).message().to_owned()))
}

/// The `migrate` subcommand.
pub async fn migrate(config: &Config) -> Result<(), AppError> {
    app::migrate(&database(config)?).await
}
