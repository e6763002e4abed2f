//! Command line and environment of `backbone-billing`: every flag is also a `BILLING_*` variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use backbone_common::config::{
    DatabaseArgs, PeerArgs, Secret, ServerArgs, TelemetryArgs, TokenArgs,
};
use clap::{Args, Parser, Subcommand};

/// Prefix of every environment variable of this service.
pub const ENV_PREFIX: &str = "BILLING";
/// Name of the binary and default OpenTelemetry `service.name`.
pub const SERVICE: &str = "backbone-billing";

/// Backbone billing service: carts, checkout, payments, invoices, refunds and ledger.
#[derive(Debug, Parser)]
#[command(name = "backbone-billing", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Clone, Copy, Default, Subcommand)]
pub enum Command {
    /// Serve gRPC (applies pending migrations first, in the background).
    #[default]
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

/// Settings of the service.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address and port to listen on for gRPC.
    #[arg(long, default_value = "0.0.0.0:50053")]
    pub listen_addr: SocketAddr,
    /// Database: `postgres://user:pass@host:5432/db`, `sqlite://PATH` or a file path.
    #[arg(long, default_value = "sqlite://.data/billing.db")]
    pub database_url: Secret,
    /// The auth service: its GetJwks verifies callers' tokens, IssueServiceToken gives billing's.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub auth_url: String,
    /// The catalog service: prices, stock and reservations.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub catalog_url: String,
    /// Billing's service account (role service) for catalog calls; without it checkout cannot
    /// reserve stock.
    #[arg(long)]
    pub service_client_id: Option<String>,
    /// The service account's secret (prefer the file flag in production).
    #[arg(long)]
    pub service_client_secret: Option<Secret>,
    /// A file holding the service account's secret (a mounted Secret).
    #[arg(long)]
    pub service_client_secret_file: Option<PathBuf>,
    /// Payment gateway: `test` (the built-in deterministic gateway, see the README).
    #[arg(long, default_value = "test", value_parser = ["test"])]
    pub payment_gateway: String,
    /// Most time one call to catalog or auth may take (a shorter caller deadline wins).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub peer_timeout: Duration,
    /// Most time a charge may take at the gateway before its outcome counts as unknown.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub gateway_timeout: Duration,
    /// How long catalog holds a checkout's stock.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    pub reservation_ttl: Duration,
    /// How long a running checkout or refund owns its order before the recovery worker may
    /// take it over (longer than any checkout takes).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub saga_lease: Duration,
    /// How often the recovery worker looks for unsettled orders and refunds.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub recovery_interval: Duration,
    /// How long after a gateway error or timeout the worker asks the gateway again.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub recovery_delay: Duration,
    /// How long idempotency keys are kept (at least 24h).
    #[arg(long, value_parser = parse_retention, default_value = "24h")]
    pub idempotency_retention: Duration,
    /// How long a request repeated under a key waits for the first run's answer (a caller's
    /// shorter deadline wins); still running after that: ABORTED.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub idempotency_wait: Duration,
    #[command(flatten)]
    #[allow(missing_docs, reason = "clap flattens the documented fields")]
    pub token: TokenArgs,
    #[command(flatten)]
    #[allow(missing_docs, reason = "clap flattens the documented fields")]
    pub db: DatabaseArgs,
    #[command(flatten)]
    #[allow(missing_docs, reason = "clap flattens the documented fields")]
    pub server: ServerArgs,
    #[command(flatten)]
    #[allow(missing_docs, reason = "clap flattens the documented fields")]
    pub peers: PeerArgs,
    #[command(flatten)]
    #[allow(missing_docs, reason = "clap flattens the documented fields")]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// Defaults for everything, with this database (tests and tools).
    pub fn with_database(database_url: &str) -> Self {
        let cli: Cli = backbone_common::config::try_parse_from(
            ENV_PREFIX,
            ["backbone-billing", "--database-url", database_url],
        )
        .unwrap_or_else(|err| unreachable!("the defaults parse: {err}"));
        cli.config
    }
}

fn parse_retention(value: &str) -> Result<Duration, String> {
    let retention = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if retention < Duration::from_secs(24 * 3600) {
        return Err("at least 24h: clients may retry a request for a day".into());
    }
    Ok(retention)
}
