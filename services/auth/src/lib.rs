//! The auth service: `backbone.auth.v1.AuthService`. [`run`] builds and serves it; tests call
//! it with a port-0 listener.

pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod keys;
pub mod service;
pub mod social;

use std::{future::Future, sync::Arc, time::Duration};

use backbone_common::{
    app::{self, AppError},
    auth::TokenVerifier,
    db::{Database, Migrations},
    metrics,
};
use backbone_proto::auth::auth_service_server::AuthServiceServer;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::net::TcpListener;
use tonic::{server::NamedService, service::Routes};

use crate::{
    config::Config,
    domain::{
        password::{HashPool, PasswordHasher},
        throttle::ThrottlePolicy,
        user::User,
    },
    keys::{KeyStore, LocalJwks},
    service::{Auth, Settings, notifier::OutboxNotifier},
};

static POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
static SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// This service's migrations, one tree per backend.
pub const MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES_MIGRATIONS,
    sqlite: &SQLITE_MIGRATIONS,
};

/// The gRPC service name this binary serves and reports readiness for.
pub const SERVICE_NAME: &str = <AuthServiceServer<grpc::AuthApi> as NamedService>::NAME;

/// Opens the database described by `config` (no connection is made yet).
pub fn database(config: &Config) -> Result<Database, AppError> {
    Ok(Database::new(
        config.database_url.expose(),
        &config.db,
        MIGRATIONS,
    )?)
}

fn hasher(config: &Config) -> Result<PasswordHasher, AppError> {
    let workers = match config.auth.password_hash_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let pool = HashPool::new(workers, config.auth.password_hash_queue).map_err(|err| {
        AppError::Config(format!(
            "cannot start {workers} password hashing threads (--password-hash-workers): {err}"
        ))
    })?;
    let (running, queued) = (pool.clone(), pool.clone());
    metrics::observe_gauge(
        "backbone.password_hash.running",
        "Password hashes being computed now.",
        move || Some(running.running()),
    );
    metrics::observe_gauge(
        "backbone.password_hash.queued",
        "Password hashes waiting for a worker (beyond the queue, logins are refused).",
        move || Some(queued.queued()),
    );
    Ok(PasswordHasher::new(
        pool,
        config.auth.password_hash_params.params(),
    ))
}

fn settings(config: &Config) -> Settings {
    let auth = &config.auth;
    let policy = |free_attempts| ThrottlePolicy {
        free_attempts,
        base_delay: Duration::from_secs(1),
        max_delay: auth.login_max_delay,
        window: auth.login_max_delay,
    };
    Settings {
        issuer: config.token.token_issuer.clone(),
        audience: config.token.token_audience.clone(),
        access_token_ttl: auth.access_token_ttl,
        refresh_token_ttl: auth.refresh_token_ttl,
        refresh_reuse_grace: auth.refresh_reuse_grace,
        service_token_ttl: auth.service_token_ttl,
        email_verification_ttl: auth.email_verification_ttl,
        password_reset_ttl: auth.password_reset_ttl,
        account_throttle: policy(auth.login_attempts_per_account),
        address_throttle: policy(auth.login_attempts_per_address),
    }
}

/// Serves the auth service on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let kek = config.auth.kek().map_err(AppError::Config)?;
    let providers = config.auth.providers().map_err(AppError::Config)?;
    if config.auth.dev_mode {
        tracing::warn!(
            "development mode: outgoing messages are logged with their tokens; never run this in production"
        );
    }
    let database = database(&config)?;
    // Retired keys stay published until every token they signed has expired.
    let longest_token = config
        .auth
        .access_token_ttl
        .max(config.auth.service_token_ttl);
    let retention = longest_token + config.token.token_leeway + Duration::from_secs(300);
    let keys = KeyStore::new(database.clone(), kek, retention);
    let notifier = Arc::new(OutboxNotifier::new(database.clone(), config.auth.dev_mode));
    let auth = Auth::new(
        database.clone(),
        keys.clone(),
        hasher(&config)?,
        notifier,
        providers,
        settings(&config),
    );
    let verifier = TokenVerifier::new(config.token.verifier_settings(), LocalJwks(keys));
    let routes = Routes::new(AuthServiceServer::new(grpc::AuthApi::new(auth)));
    app::serve_with_database(
        listener,
        routes,
        vec![SERVICE_NAME],
        database,
        config.server,
        Some(verifier),
        shutdown,
    )
    .await
}

/// The `migrate` subcommand.
pub async fn migrate(config: &Config) -> Result<(), AppError> {
    app::migrate(&database(config)?).await
}

/// The `create-admin` subcommand: migrates, then creates the administrator (or grants the admin
/// role to an existing account). Returns the user and whether it was created.
pub async fn create_admin(
    config: &Config,
    email: &str,
    display_name: Option<&str>,
    password: &str,
) -> Result<(User, bool), AppError> {
    let database = database(config)?;
    database.prepare().await?;
    service::accounts::create_admin(&database, &hasher(config)?, email, display_name, password)
        .await
        .map_err(|err| AppError::Command(tonic::Status::from(err).message().to_owned()))
}

/// The `create-service-account` subcommand: migrates, then creates a service account with the
/// `service` role (what billing signs in with). Returns its client id and its secret.
pub async fn create_service_account(
    config: &Config,
    display_name: &str,
) -> Result<(String, String), AppError> {
    let database = database(config)?;
    database.prepare().await?;
    let created = async {
        let mut conn = database.conn().await?;
        let caller = service::Caller::command_line("create-service-account");
        service::admin::create_service_account(&mut conn, &caller, display_name).await
    };
    let (account, secret) = created
        .await
        .map_err(|err| AppError::Command(tonic::Status::from(err).message().to_owned()))?;
    Ok((account.id, secret))
}
