//! Command-line and environment configuration shared by every service: each flag of every service
//! is also an environment variable named after the service (`--database-url` of the catalog is
//! `CATALOG_DATABASE_URL`), derived mechanically so a flag can never lack its variable.

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Command, CommandFactory, FromArgMatches, ValueEnum};

/// Parses `T` from the process arguments and environment, with `prefix` for the variables.
/// Exits with clap's usage message on bad input, like `Parser::parse`.
pub fn parse<T: CommandFactory + FromArgMatches>(prefix: &str) -> T {
    match try_parse_from(prefix, std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(err) => err.exit(),
    }
}

/// Like [`parse`] but from an explicit argument list, and returning the error (for tests).
pub fn try_parse_from<T, I, A>(prefix: &str, args: I) -> Result<T, clap::Error>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let mut matches = command::<T>(prefix).try_get_matches_from(args)?;
    T::from_arg_matches_mut(&mut matches)
}

/// The clap command of `T` with an environment variable on every long flag, for `--help` too.
pub fn command<T: CommandFactory>(prefix: &str) -> Command {
    with_env(T::command(), prefix, true)
}

fn with_env(command: Command, prefix: &str, top_level: bool) -> Command {
    command
        .mut_args(|arg| match arg.get_long().map(str::to_owned) {
            // Top-level flags are global so that `backbone-auth migrate --database-url ...` reads
            // like `serve`; a subcommand's own flags (`create-admin --email`) stay its own.
            Some(long) if arg.get_env().is_none() => {
                arg.env(env_name(prefix, &long)).global(top_level)
            }
            _ => arg,
        })
        .mut_subcommands(|sub| with_env(sub, prefix, false))
}

/// The environment variable that carries `--long` for the service with `prefix`.
pub fn env_name(prefix: &str, long: &str) -> String {
    format!("{prefix}_{}", long.to_uppercase().replace('-', "_"))
}

/// A configuration value that must never be printed (database URLs hold passwords): its
/// `Debug` is redacted, and the value is read with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself; keep it out of logs and error messages.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    /// One JSON object per line, with `trace_id` and `span_id`.
    Json,
    /// Human-readable text.
    Text,
}

/// Logging flags.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax (`info`, `warn,backbone_catalog=debug`, ...);
    /// `RUST_LOG` wins when set. Traces go over OTLP when the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set; all `OTEL_*` variables are honoured.
    #[arg(long, default_value = "info")]
    pub log_filter: String,
}

/// Server limits and shutdown behaviour.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Longest time one call may run before it fails with DEADLINE_EXCEEDED (a caller's
    /// shorter `grpc-timeout` ends it sooner).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub request_timeout: Duration,
    /// Most calls served at once by this process; further calls wait for a slot.
    #[arg(long, default_value_t = 1024)]
    pub concurrency_limit: usize,
    /// On SIGTERM/SIGINT, how long health reports NOT_SERVING while new calls are still
    /// accepted, so load balancers stop routing here before the listener closes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub shutdown_drain: Duration,
    /// On shutdown, the longest wait for in-flight calls to finish before exiting anyway.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "25s")]
    pub shutdown_grace: Duration,
    /// Connections older than this are asked to reconnect (HTTP/2 GOAWAY), so clients behind
    /// a connection-level balancer spread over new replicas. `0s` disables it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub max_connection_age: Duration,
    /// Address of the admin port: Prometheus metrics at `GET /metrics` (HTTP/1.1) and gRPC
    /// health over plaintext h2c, for kubelet probes and scrapers that sit outside TLS. Off
    /// when unset.
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
    #[command(flatten)]
    #[allow(missing_docs, reason = "clap flattens the documented fields")]
    pub tls: TlsArgs,
}

/// TLS of the gRPC port (and the identity presented to peers). Plaintext without a certificate.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) served on the gRPC port; with `--tls-key-file` it
    /// turns TLS on. Also presented to peers that ask for a client certificate.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert-file`.
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle that clients' certificates must chain to: turns on mutual TLS, so a
    /// client without such a certificate cannot connect.
    #[arg(long)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// How often the TLS files are checked for changes (rotated certificates are picked up
    /// for new connections without a restart). `0s` never re-reads them.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub tls_reload_interval: Duration,
}

/// How this service reaches and verifies the peers it calls.
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// PEM CA bundle that peers' server certificates must chain to; needed for `https://`
    /// peer URLs. The identity of `--tls-cert-file`/`--tls-key-file` is presented to peers
    /// that require mutual TLS.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// How calls spread over a peer's replicas. `connection`: one HTTP/2 connection to the
    /// peer's name (behind a ClusterIP Service it lands on one replica; servers' maximum
    /// connection age spreads clients over time). `per-request`: the name is resolved to every
    /// address behind it (a headless Service) and each call goes to the less busy of two.
    #[arg(long, value_enum, default_value_t = PeerBalancing::Connection)]
    pub peer_balancing: PeerBalancing,
    /// With `--peer-balancing per-request`: how often peers' names are resolved again, to
    /// follow replicas that come and go.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub peer_resolve_interval: Duration,
    /// With `--peer-balancing per-request`: the DNS server (`ip:port`) that resolves peers'
    /// names, instead of the system's (`/etc/resolv.conf`, `/etc/hosts`).
    #[arg(long)]
    pub peer_dns_server: Option<SocketAddr>,
}

impl Default for PeerArgs {
    fn default() -> Self {
        Self {
            tls_ca_file: None,
            peer_balancing: PeerBalancing::Connection,
            peer_resolve_interval: Duration::from_secs(10),
            peer_dns_server: None,
        }
    }
}

/// How a service spreads its calls over a peer's replicas (`--peer-balancing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerBalancing {
    /// One connection to the peer's name.
    Connection,
    /// Every call balanced over all addresses of the peer's name.
    PerRequest,
}

/// Database connection flags (the URL itself lives in each service's config, with its default).
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Most open database connections in this process.
    #[arg(long, default_value_t = 16)]
    pub db_pool_size: usize,
    /// Longest wait for a new database connection or a free pooled one before the call fails
    /// with UNAVAILABLE.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub db_timeout: Duration,
    /// PostgreSQL connections shared by primary-key reads, which pipeline their statements on
    /// them instead of each taking a pooled connection (on top of the pool; 0 = reads use the
    /// pool). Ignored on SQLite.
    #[arg(long, default_value_t = 2)]
    pub db_read_connections: usize,
}

/// How access tokens are issued (auth) and checked (every service).
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The `iss` of access tokens: the auth service writes it, every service requires it.
    #[arg(long, default_value = "backbone-auth")]
    pub token_issuer: String,
    /// The `aud` of access tokens: the deployment they are valid for.
    #[arg(long, default_value = "backbone")]
    pub token_audience: String,
    /// Clock skew tolerated when checking `exp` and `nbf` (at most 60s).
    #[arg(long, value_parser = parse_leeway, default_value = "30s")]
    pub token_leeway: Duration,
}

impl TokenArgs {
    /// Verifier settings for these flags.
    pub fn verifier_settings(&self) -> crate::auth::VerifierSettings {
        let mut settings =
            crate::auth::VerifierSettings::new(&self.token_issuer, &self.token_audience);
        settings.leeway = self.token_leeway;
        settings
    }
}

fn parse_leeway(value: &str) -> Result<Duration, String> {
    let leeway = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if leeway > Duration::from_secs(60) {
        return Err("at most 60s: a longer leeway keeps expired tokens alive".into());
    }
    Ok(leeway)
}

#[cfg(test)]
mod tests {
    use clap::{Parser, Subcommand};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Option<Cmd>,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:1")]
        listen_addr: String,
        #[command(flatten)]
        server: ServerArgs,
    }

    #[derive(Debug, Subcommand)]
    enum Cmd {
        Migrate,
    }

    #[test]
    fn every_flag_has_a_prefixed_variable() {
        let command = command::<Cli>("DEMO");
        let mut missing = Vec::new();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            if env.as_deref() != Some(env_name("DEMO", long).as_str()) {
                missing.push(long.to_owned());
            }
        }
        assert!(
            missing.is_empty(),
            "flags without DEMO_ variable: {missing:?}"
        );
        assert_eq!(env_name("DEMO", "request-timeout"), "DEMO_REQUEST_TIMEOUT");
    }

    #[test]
    fn flags_work_after_the_subcommand() {
        let cli: Cli = try_parse_from("DEMO", ["demo", "migrate", "--listen-addr", "0.0.0.0:9"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.command, Some(Cmd::Migrate)));
        assert_eq!(cli.listen_addr, "0.0.0.0:9");
        assert_eq!(cli.server.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn bad_duration_is_a_usage_error() {
        let err = try_parse_from::<Cli, _, _>("DEMO", ["demo", "--request-timeout", "soon"])
            .err()
            .map(|e| e.kind());
        assert_eq!(err, Some(clap::error::ErrorKind::ValueValidation));
    }
}
