//! The auth service's use cases: each validates its input, applies the domain's rules and runs
//! its units of work against the database. The gRPC handlers translate to and from these.

pub mod accounts;
pub mod admin;
pub mod notifier;
pub mod recovery;
pub mod sessions;
pub mod social;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use backbone_common::{
    auth::{AccessClaims, Audience, Principal, PrincipalKind, Role},
    db::{Database, DbConn},
};
use serde::{Deserialize, Serialize};

use crate::{
    db::models::{AuditRow, UserRow},
    domain::{
        self,
        audit::{AuditEvent, AuditKind},
        password::PasswordHasher,
        throttle::ThrottlePolicy,
        user::{SocialIdentity, User},
    },
    error::AuthError,
    keys::KeyStore,
    service::notifier::Notifier,
    social::Providers,
};

/// The settings the use cases follow (from [`crate::config`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// Access-token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh-token lifetime.
    pub refresh_token_ttl: Duration,
    /// Grace window for presenting a rotated refresh token again.
    pub refresh_reuse_grace: Duration,
    /// Service-account token lifetime.
    pub service_token_ttl: Duration,
    /// Email-verification token lifetime.
    pub email_verification_ttl: Duration,
    /// Password-reset token lifetime.
    pub password_reset_ttl: Duration,
    /// Throttling per account.
    pub account_throttle: ThrottlePolicy,
    /// Throttling per client address.
    pub address_throttle: ThrottlePolicy,
}

/// Who is calling and from where: what every use case needs besides its input.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The verified principal, if a token was sent.
    pub principal: Option<Arc<Principal>>,
    /// The client's IP address.
    pub client_address: String,
    /// The client's `user-agent`.
    pub user_agent: String,
    /// The trace of this call.
    pub trace_id: String,
}

/// A signed-in user's identity, taken from their access token.
#[derive(Debug, Clone)]
pub struct UserCaller {
    /// The user id.
    pub user_id: String,
    /// The session the token belongs to.
    pub session_id: String,
}

impl Caller {
    /// An operator running a `backbone-auth` subcommand (audited as such, with no principal).
    pub fn command_line(subcommand: &str) -> Self {
        Self {
            client_address: "cli".into(),
            user_agent: format!("backbone-auth {subcommand}"),
            trace_id: backbone_common::trace::current_trace_id().unwrap_or_default(),
            principal: None,
        }
    }

    /// The caller as a signed-in user; service accounts and anonymous callers are refused.
    pub fn user(&self) -> Result<UserCaller, AuthError> {
        match self.principal.as_deref() {
            Some(Principal {
                kind: PrincipalKind::User,
                subject,
                session_id: Some(session_id),
                ..
            }) => Ok(UserCaller {
                user_id: subject.clone(),
                session_id: session_id.clone(),
            }),
            None => Err(AuthError::TokenRequired),
            _ => Err(AuthError::UserRequired),
        }
    }

    /// An audit row for `kind` about `subject`, done by this caller.
    pub fn audit(&self, kind: AuditKind, subject: Option<&str>) -> AuditBuilder {
        AuditBuilder(AuditEvent {
            id: domain::new_id(),
            kind,
            actor_id: self.principal.as_ref().map(|p| p.subject.clone()),
            subject_id: subject.map(str::to_owned),
            client_address: self.client_address.clone(),
            trace_id: self.trace_id.clone(),
            details: BTreeMap::new(),
            created_at: domain::now(),
        })
    }
}

/// An audit event being put together.
#[derive(Debug, Clone)]
pub struct AuditBuilder(AuditEvent);

impl AuditBuilder {
    /// Sets who did it (when not the token's principal, for example at login).
    pub fn actor(mut self, actor: Option<&str>) -> Self {
        self.0.actor_id = actor.map(str::to_owned);
        self
    }

    /// Adds a detail (never a secret).
    pub fn detail(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.details.insert(key.to_owned(), value.into());
        self
    }

    /// The row to store.
    pub fn row(&self) -> AuditRow {
        AuditRow::from(&self.0)
    }
}

/// A new session's or a refresh's tokens. `Debug` hides the tokens.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    /// The JWT access token.
    pub access_token: String,
    /// Its `exp`, seconds since the epoch.
    pub access_token_expires_at: i64,
    /// The opaque refresh token.
    pub refresh_token: String,
    /// Its expiry, seconds since the epoch.
    pub refresh_token_expires_at: i64,
    /// The session.
    pub session_id: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    database: Database,
    keys: KeyStore,
    hasher: PasswordHasher,
    notifier: Arc<dyn Notifier>,
    providers: Providers,
    settings: Settings,
}

/// The auth service's use cases over its database, keys and hasher. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The use cases over these parts.
    pub fn new(
        database: Database,
        keys: KeyStore,
        hasher: PasswordHasher,
        notifier: Arc<dyn Notifier>,
        providers: Providers,
        settings: Settings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                database,
                keys,
                hasher,
                notifier,
                providers,
                settings,
            }),
        }
    }

    fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    async fn conn(&self) -> Result<DbConn, AuthError> {
        Ok(self.inner.database.conn().await?)
    }

    /// Accounts as the API shows them: with their linked social identities (one query for all).
    async fn present(&self, conn: &mut DbConn, rows: Vec<UserRow>) -> Result<Vec<User>, AuthError> {
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        let mut identities = crate::db::social::identities_of(conn, &ids).await?;
        let mut users: Vec<User> = rows.into_iter().map(User::from).collect();
        for user in &mut users {
            let (mine, rest) = identities
                .into_iter()
                .partition(|identity| identity.user_id == user.id);
            identities = rest;
            user.social_identities = mine.into_iter().map(SocialIdentity::from).collect();
        }
        Ok(users)
    }

    /// One account as the API shows it.
    async fn present_one(&self, conn: &mut DbConn, row: UserRow) -> Result<User, AuthError> {
        let mut users = self.present(conn, vec![row]).await?;
        users
            .pop()
            .ok_or_else(|| AuthError::Internal("presenting a user lost it".into()))
    }

    /// Signs an access token for `subject` with `roles`.
    async fn access_token(
        &self,
        subject: &str,
        roles: &[Role],
        session_id: Option<&str>,
        ttl: Duration,
    ) -> Result<(String, i64), AuthError> {
        let key = self.inner.keys.active().await?;
        let now = backbone_common::auth::unix_now();
        let exp = now.saturating_add(ttl.as_secs());
        let claims = AccessClaims {
            iss: self.settings().issuer.clone(),
            aud: Audience::One(self.settings().audience.clone()),
            sub: subject.to_owned(),
            exp,
            iat: now,
            nbf: now,
            jti: domain::new_id(),
            sid: session_id.map(str::to_owned),
            client_id: session_id.is_none().then(|| subject.to_owned()),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        };
        let token = key.sign(&claims)?;
        Ok((token, i64::try_from(exp).unwrap_or(i64::MAX)))
    }
}

/// Seconds since the epoch of a stored UTC time.
fn epoch(time: chrono::NaiveDateTime) -> i64 {
    time.and_utc().timestamp()
}
