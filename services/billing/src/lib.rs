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

use std::future::Future;

use backbone_common::{
    app::{self, AppError},
    db::{Database, Migrations},
};
use backbone_proto::billing::billing_service_server::BillingServiceServer;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::net::TcpListener;
use tonic::{server::NamedService, service::Routes};

use crate::config::Config;

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
    let routes = Routes::new(BillingServiceServer::new(grpc::BillingApi::new(
        database.clone(),
    )));
    app::serve_with_database(
        listener,
        routes,
        vec![SERVICE_NAME],
        database,
        config.server,
        None,
        shutdown,
    )
    .await
}

/// The `migrate` subcommand.
pub async fn migrate(config: &Config) -> Result<(), AppError> {
    app::migrate(&database(config)?).await
}
