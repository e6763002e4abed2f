//! What every service binary does the same way: serve with a database (migrated in the
//! background, readiness following it) and the `migrate` subcommand.

use std::{future::Future, process::ExitCode};

use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{
    auth::TokenVerifier,
    config::ServerArgs,
    db::{Database, DbError},
    error::SourceChain,
    serve::{ServeError, ServeOptions, serve},
};

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// A one-shot command failed; the message says why.
    #[error("{0}")]
    Command(String),
    /// The database configuration is wrong, or migrating failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` for a service.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

/// Serves `routes` with `database`: migrations and reconnects happen in the background while
/// the process already answers health checks (readiness NOT_SERVING until the database is up).
pub async fn serve_with_database(
    listener: TcpListener,
    routes: Routes,
    service_names: Vec<&'static str>,
    database: Database,
    server: ServerArgs,
    verifier: Option<TokenVerifier>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, database = %database.redacted_url(), services = ?service_names, "serving");
    }
    let monitor = tokio::spawn(database.clone().monitor());
    let options = ServeOptions {
        service_names,
        readiness: Some(database.readiness()),
        server,
        verifier,
    };
    let result = serve(listener, routes, options, shutdown).await;
    monitor.abort();
    Ok(result?)
}

/// The `migrate` subcommand: applies pending migrations once and exits.
pub async fn migrate(database: &Database) -> Result<(), AppError> {
    let applied = database.migrate().await?;
    tracing::info!(applied, database = %database.redacted_url(), "migrations applied");
    Ok(())
}

/// Logs a fatal error with its causes and turns it into a failing exit code.
pub fn exit_code(result: Result<(), AppError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %SourceChain(&err), "fatal");
            eprintln!("error: {}", SourceChain(&err));
            ExitCode::FAILURE
        }
    }
}
