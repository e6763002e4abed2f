//! Command line and environment of `backbone-auth`: every flag is also a `AUTH_*` variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use backbone_common::config::{DatabaseArgs, Secret, ServerArgs, TelemetryArgs, TokenArgs};
use clap::{Args, Parser, Subcommand};

use crate::{
    domain::{password::OwaspParams, secrets::Kek},
    social::{self, Providers},
};

/// Prefix of every environment variable of this service.
pub const ENV_PREFIX: &str = "AUTH";
/// Name of the binary and default OpenTelemetry `service.name`.
pub const SERVICE: &str = "backbone-auth";

/// Backbone auth service: accounts, sessions, tokens, keys, roles and social login.
#[derive(Debug, Parser)]
#[command(name = "backbone-auth", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Clone, Default, Subcommand)]
pub enum Command {
    /// Serve gRPC (applies pending migrations first, in the background).
    #[default]
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create an administrator, or grant the admin role to an existing account. The password is
    /// read from the terminal (asked twice) or, when stdin is not a terminal, from its first line;
    /// never from the command line.
    CreateAdmin {
        /// The administrator's email address.
        #[arg(long)]
        email: String,
        /// Display name of a new account (default: the part of the email before `@`).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Create a service account with the `service` role (billing signs in with one). Prints its
    /// client id; the secret goes to `--secret-file` (mode 0600; `-` prints it instead).
    CreateServiceAccount {
        /// Name for people.
        #[arg(long)]
        display_name: String,
        /// Where to write the client secret. An existing file is never overwritten.
        #[arg(long)]
        secret_file: PathBuf,
    },
}

/// Settings of the service.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address and port to listen on for gRPC.
    #[arg(long, default_value = "0.0.0.0:50051")]
    pub listen_addr: SocketAddr,
    /// Database: `postgres://user:pass@host:5432/db`, `sqlite://PATH` or a file path.
    #[arg(long, default_value = "sqlite://.data/auth.db")]
    pub database_url: Secret,
    #[command(flatten)]
    #[allow(missing_docs, reason = "clap flattens the documented fields")]
    pub auth: AuthArgs,
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
    pub telemetry: TelemetryArgs,
}

/// Settings of accounts, sessions and keys.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Key-encryption key sealing the token signing keys in the database: base64 of 32 random
    /// bytes (`head -c32 /dev/urandom | base64`). Prefer the file variant with Kubernetes Secrets.
    #[arg(long)]
    pub key_encryption_key: Option<Secret>,
    /// File holding the key-encryption key (as above); wins over `--key-encryption-key`.
    #[arg(long)]
    pub key_encryption_key_file: Option<PathBuf>,
    /// Development mode: logs outgoing messages with their tokens (so `make run` users can verify
    /// emails and reset passwords) and warns at start-up. Never in production.
    #[arg(long)]
    pub dev_mode: bool,
    /// Lifetime of access tokens (also how long a revoked session's access tokens keep working).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens; each refresh starts a new one.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30d")]
    pub refresh_token_ttl: Duration,
    /// How long after a refresh the same refresh token may be presented again and get the same
    /// answer (a client that lost the response); after it, reuse revokes the session.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub refresh_reuse_grace: Duration,
    /// Lifetime of service-account access tokens.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    pub service_token_ttl: Duration,
    /// Lifetime of email-verification tokens.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    pub email_verification_ttl: Duration,
    /// Lifetime of password-reset tokens.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub password_reset_ttl: Duration,
    /// Argon2id memory and passes for new hashes, one of OWASP's configurations (equal in
    /// defence): m46-t1, m19-t2, m12-t3, m9-t4 or m7-t5 (the fastest on the bench's 2-core
    /// machine). A password hashed otherwise is rehashed with these at its next login.
    #[arg(long, value_enum, default_value_t = OwaspParams::default())]
    pub password_hash_params: OwaspParams,
    /// Password hashing threads, each with one Argon2 buffer (the memory of
    /// --password-hash-params), at background CPU priority (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub password_hash_workers: usize,
    /// Password hashes allowed to wait for a worker; beyond that, RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64)]
    pub password_hash_queue: usize,
    /// Failed logins per account before each further attempt must wait (doubling from 1s).
    #[arg(long, default_value_t = 5)]
    pub login_attempts_per_account: i64,
    /// Login attempts per client address (successful ones count too, so one address cannot
    /// sweep many accounts) before each further attempt must wait. Raise it when many people
    /// sign in from one address (a NAT, or a backend calling Login for its users).
    #[arg(long, default_value_t = 100)]
    pub login_attempts_per_address: i64,
    /// Longest wait imposed between login attempts; counters reset after this much quiet.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    pub login_max_delay: Duration,
    /// OpenID Connect providers for social login, a JSON array of objects with `name`,
    /// `issuer`, `client_id`, `client_secret_file` (or `client_secret`) and `redirect_uri`.
    /// Empty: social login is off.
    #[arg(long)]
    pub oidc_providers: Option<Secret>,
}

impl AuthArgs {
    /// The social-login providers (their secret files read); the error never shows a secret.
    pub fn providers(&self) -> Result<Providers, String> {
        let configs = match &self.oidc_providers {
            Some(json) => social::parse_config(json.expose())?,
            None => Vec::new(),
        };
        Providers::new(configs)
    }

    /// The key-encryption key from the file or the variable; the error never shows the key.
    pub fn kek(&self) -> Result<Kek, String> {
        let text = match (&self.key_encryption_key_file, &self.key_encryption_key) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|err| {
                format!(
                    "cannot read the key-encryption key file {}: {err}",
                    path.display()
                )
            })?,
            (None, Some(secret)) => secret.expose().to_owned(),
            (None, None) => {
                return Err(
                    "no key-encryption key: set AUTH_KEY_ENCRYPTION_KEY_FILE or \
                            AUTH_KEY_ENCRYPTION_KEY to base64 of 32 random bytes \
                            (`make run` creates a development key)"
                        .into(),
                );
            }
        };
        Kek::parse(&text).map_err(str::to_owned)
    }
}

impl Config {
    /// Defaults for everything, with this database and a fresh random key-encryption key
    /// (tests and tools).
    pub fn with_database(database_url: &str) -> Self {
        let kek = Kek::generate_text();
        let cli: Cli = backbone_common::config::try_parse_from(
            ENV_PREFIX,
            [
                "backbone-auth",
                "--database-url",
                database_url,
                "--key-encryption-key",
                &kek,
            ],
        )
        .unwrap_or_else(|err| unreachable!("the defaults parse: {err}"));
        cli.config
    }
}
