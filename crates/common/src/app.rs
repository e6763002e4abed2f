//! What every service binary does the same way: serve with a database (migrated in the
//! background, readiness following it) and the `migrate` subcommand.

use std::{future::Future, process::ExitCode};

use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{
    auth::TokenVerifier,
    balance::PeerResolver,
    client::{self, Channel},
    config::{PeerArgs, PeerBalancing, ServerArgs, TlsArgs},
    db::{Database, DbError},
    error::SourceChain,
    serve::{ServeError, ServeOptions, serve},
    tls::ClientTls,
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

/// How a service reaches its peers: plaintext for `http://` URLs, TLS for `https://` ones; one
/// connection per peer, or balanced per call over the addresses of its name.
#[derive(Debug, Clone)]
pub struct PeerChannels {
    tls: Option<ClientTls>,
    /// Set with `--peer-balancing per-request`.
    resolver: Option<PeerResolver>,
}

impl PeerChannels {
    /// Peers verified with `peers.tls_ca_file`, presenting the identity in `identity` to those
    /// that require mutual TLS, and balanced as `peers.peer_balancing` says. Call inside the
    /// runtime (the TLS files are watched, peers' names re-resolved).
    pub fn new(identity: &TlsArgs, peers: &PeerArgs) -> Result<Self, AppError> {
        let tls = ClientTls::from_args(identity, peers)
            .map_err(|err| AppError::Config(format!("peer TLS: {}", SourceChain(&err))))?;
        let resolver = match peers.peer_balancing {
            PeerBalancing::Connection => None,
            PeerBalancing::PerRequest => Some(
                PeerResolver::new(peers.peer_dns_server, peers.peer_resolve_interval).map_err(
                    |err| AppError::Config(format!("--peer-balancing per-request: {err}")),
                )?,
            ),
        };
        Ok(Self { tls, resolver })
    }

    /// A lazily connected channel to the peer at `url`, given by the flag `flag`.
    pub fn channel(&self, url: &str, flag: &str) -> Result<Channel, AppError> {
        match &self.resolver {
            None => client::channel(url, self.tls.as_ref()),
            Some(resolver) => client::balanced_channel(url, self.tls.as_ref(), resolver),
        }
        .map_err(|err| AppError::Config(format!("{flag}: {err}")))
    }
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
    if let Some(name) = service_names.first() {
        database.observe(name);
    }
    let monitor = tokio::spawn(database.clone().monitor());
    let options = ServeOptions {
        service_names,
        descriptor_sets: Vec::new(),
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
