//! Command line and environment of `backbone-catalog`: every flag is also a `CATALOG_*` variable.

use std::{net::SocketAddr, time::Duration};

use backbone_common::config::{
    DatabaseArgs, PeerArgs, Secret, ServerArgs, TelemetryArgs, TokenArgs,
};
use clap::{Args, Parser, Subcommand};

/// Prefix of every environment variable of this service.
pub const ENV_PREFIX: &str = "CATALOG";
/// Name of the binary and default OpenTelemetry `service.name`.
pub const SERVICE: &str = "backbone-catalog";

/// Backbone catalog service: products, categories, search, stock and reservations.
#[derive(Debug, Parser)]
#[command(name = "backbone-catalog", version, about)]
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
    /// Apply migrations, then load a small sample catalog with stock (development data; running
    /// it again changes nothing).
    Seed,
}

/// Settings of the service.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address and port to listen on for gRPC.
    #[arg(long, default_value = "0.0.0.0:50052")]
    pub listen_addr: SocketAddr,
    /// Database: `postgres://user:pass@host:5432/db`, `sqlite://PATH` or a file path.
    #[arg(long, default_value = "sqlite://.data/catalog.db")]
    pub database_url: Secret,
    /// The auth service, whose GetJwks gives the keys that verify access tokens.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub auth_url: String,
    /// How long GetProduct and BatchGetProducts may serve a cached product: the most another
    /// replica's write can stay unseen here (this replica's own writes evict at once).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub product_cache_ttl: Duration,
    /// Most products kept in the cache (0, or a TTL of 0s, turns the cache off).
    #[arg(long, default_value_t = 100_000)]
    pub product_cache_capacity: u64,
    /// How often the sweeper releases expired reservations.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub reservation_sweep_interval: Duration,
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
            ["backbone-catalog", "--database-url", database_url],
        )
        .unwrap_or_else(|err| unreachable!("the defaults parse: {err}"));
        cli.config
    }
}
