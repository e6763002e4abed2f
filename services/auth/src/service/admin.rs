//! Administration: users and roles, service accounts and their tokens, signing keys, audit.

use backbone_common::{auth::Role, db::DbConn, error::FieldViolation, page};
use backbone_proto::auth::Jwk;
use subtle::ConstantTimeEq as _;

use super::{Auth, Caller, sessions::next_token};
use crate::{
    db::{self, audit::AuditFilter, models::ServiceAccountRow},
    domain::{
        self,
        audit::{AuditEvent, AuditKind},
        secrets,
        user::{self, User},
    },
    error::AuthError,
};

/// Longest reason kept when disabling a user.
const MAX_REASON_CHARS: usize = 500;

/// A service account as shown to administrators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Client id.
    pub id: String,
    /// Name for people.
    pub display_name: String,
    /// Roles of its tokens.
    pub roles: Vec<Role>,
    /// The administrator who made it.
    pub creator_id: String,
    /// Creation time.
    pub created_at: chrono::NaiveDateTime,
}

impl From<ServiceAccountRow> for ServiceAccount {
    fn from(row: ServiceAccountRow) -> Self {
        Self {
            roles: user::roles_from_text(&row.roles),
            id: row.id,
            display_name: row.display_name,
            creator_id: row.creator_id,
            created_at: row.created_at,
        }
    }
}

fn actor(caller: &Caller) -> String {
    caller
        .principal
        .as_ref()
        .map(|p| p.subject.clone())
        .unwrap_or_default()
}

impl Auth {
    /// A page of users, optionally only those whose email starts with `email_prefix`.
    pub async fn list_users(
        &self,
        page_size: i32,
        page_token: &str,
        email_prefix: &str,
    ) -> Result<(Vec<User>, String), AuthError> {
        let size =
            page::page_size(page_size, 50, 200).map_err(|v| AuthError::InvalidArgument(vec![v]))?;
        let prefix = email_prefix.trim().to_lowercase();
        let query = format!("users|prefix={prefix}");
        let after =
            page::decode(&query, page_token).map_err(|v| AuthError::InvalidArgument(vec![v]))?;
        let mut conn = self.conn().await?;
        let mut rows = db::users::list(&mut conn, &prefix, after.as_deref(), size + 1).await?;
        let next = next_token(&mut rows, size, &query, |row| row.id.clone());
        Ok((self.present(&mut conn, rows).await?, next))
    }

    /// Replaces a user's roles. Users hold `customer` and/or `admin`; `service` belongs to
    /// service accounts. An administrator cannot take their own admin role away.
    pub async fn set_roles(
        &self,
        caller: &Caller,
        user_id: &str,
        roles: &[Role],
    ) -> Result<User, AuthError> {
        let mut violations = Vec::new();
        if user_id.is_empty() {
            violations.push(FieldViolation::new("user_id", "is required"));
        }
        if roles.is_empty() {
            violations.push(FieldViolation::new("roles", "must name at least one role"));
        }
        if roles.contains(&Role::Service) {
            violations.push(FieldViolation::new(
                "roles",
                "ROLE_SERVICE belongs to service accounts; users hold ROLE_CUSTOMER and ROLE_ADMIN",
            ));
        }
        if !violations.is_empty() {
            return Err(AuthError::InvalidArgument(violations));
        }
        if actor(caller) == user_id && !roles.contains(&Role::Admin) {
            return Err(AuthError::SelfLockout(
                "an administrator cannot remove their own admin role",
            ));
        }
        let text = user::roles_to_text(roles);
        let audit = caller
            .audit(AuditKind::RolesChanged, Some(user_id))
            .detail("roles", text.clone());
        let mut conn = self.conn().await?;
        let row = db::users::set_roles(&mut conn, user_id, &text, domain::now(), &audit.row())
            .await?
            .ok_or(AuthError::NotFound { what: "user" })?;
        self.present_one(&mut conn, row).await
    }

    /// Disables a user: login is refused and every session is revoked at once.
    pub async fn disable_user(
        &self,
        caller: &Caller,
        user_id: &str,
        reason: &str,
    ) -> Result<(User, usize), AuthError> {
        if user_id.is_empty() {
            return Err(AuthError::field("user_id", "is required"));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(AuthError::field("reason", "must be at most 500 characters"));
        }
        if actor(caller) == user_id {
            return Err(AuthError::SelfLockout(
                "an administrator cannot disable their own account",
            ));
        }
        let audit = caller
            .audit(AuditKind::UserDisabled, Some(user_id))
            .detail("reason", reason.trim());
        let mut conn = self.conn().await?;
        let (row, revoked) = db::users::disable(&mut conn, user_id, domain::now(), &audit.row())
            .await?
            .ok_or(AuthError::NotFound { what: "user" })?;
        Ok((self.present_one(&mut conn, row).await?, revoked))
    }

    /// Creates a service account; returns it with its secret, which is never shown again.
    pub async fn create_service_account(
        &self,
        caller: &Caller,
        display_name: &str,
    ) -> Result<(ServiceAccount, String), AuthError> {
        let mut conn = self.conn().await?;
        create_service_account(&mut conn, caller, display_name).await
    }

    /// OAuth client credentials: a short-lived access token with the `service` role.
    pub async fn issue_service_token(
        &self,
        caller: &Caller,
        client_id: &str,
        client_secret: &str,
    ) -> Result<(String, i64), AuthError> {
        let mut violations = Vec::new();
        if client_id.is_empty() {
            violations.push(FieldViolation::new("client_id", "is required"));
        }
        if client_secret.is_empty() {
            violations.push(FieldViolation::new("client_secret", "is required"));
        }
        if !violations.is_empty() {
            return Err(AuthError::InvalidArgument(violations));
        }
        let mut conn = self.conn().await?;
        let account = db::service_accounts::by_id(&mut conn, client_id).await?;
        let presented = secrets::token_hash(client_secret);
        let stored = account.as_ref().map_or("", |a| a.secret_hash.as_str());
        let matches = bool::from(presented.as_bytes().ct_eq(stored.as_bytes()));
        let Some(account) = account.filter(|a| matches && !a.disabled) else {
            return Err(AuthError::InvalidClient);
        };
        let roles = user::roles_from_text(&account.roles);
        let (token, exp) = self
            .access_token(&account.id, &roles, None, self.settings().service_token_ttl)
            .await?;
        let audit = caller
            .audit(AuditKind::ServiceTokenIssued, Some(&account.id))
            .actor(Some(&account.id));
        db::audit::insert(&mut conn, &audit.row()).await?;
        Ok((token, exp))
    }

    /// The published public keys.
    pub async fn jwks(&self) -> Result<Vec<Jwk>, AuthError> {
        self.inner.keys.jwks().await
    }

    /// Rotates the signing key; returns the new key and the retired key id.
    pub async fn rotate_signing_key(
        &self,
        caller: &Caller,
    ) -> Result<(Jwk, Option<String>), AuthError> {
        let audit = caller.audit(AuditKind::SigningKeyRotated, None);
        self.inner.keys.rotate(&audit.row()).await
    }

    /// A page of audit events, newest first.
    pub async fn list_audit_events(
        &self,
        page_size: i32,
        page_token: &str,
        filter: AuditFilter,
    ) -> Result<(Vec<AuditEvent>, String), AuthError> {
        let size =
            page::page_size(page_size, 50, 500).map_err(|v| AuthError::InvalidArgument(vec![v]))?;
        let query = format!(
            "audit|s={}|a={}|t={}",
            filter.subject_id, filter.actor_id, filter.event_type
        );
        let before =
            page::decode(&query, page_token).map_err(|v| AuthError::InvalidArgument(vec![v]))?;
        let mut conn = self.conn().await?;
        let mut rows = db::audit::list(&mut conn, &filter, before.as_deref(), size + 1).await?;
        let next = next_token(&mut rows, size, &query, |row| row.id.clone());
        Ok((
            rows.into_iter().filter_map(|r| r.into_event()).collect(),
            next,
        ))
    }
}

/// Creates a service account with the `service` role (the API's and the CLI's way); returns it
/// with its secret, which is never shown again.
pub(crate) async fn create_service_account(
    conn: &mut DbConn,
    caller: &Caller,
    display_name: &str,
) -> Result<(ServiceAccount, String), AuthError> {
    let name = user::check_display_name(display_name)
        .map_err(|reason| AuthError::field("display_name", reason))?;
    let secret = secrets::random_token();
    let row = ServiceAccountRow {
        id: domain::new_id(),
        display_name: name,
        secret_hash: secrets::token_hash(&secret),
        roles: user::roles_to_text(&[Role::Service]),
        creator_id: actor(caller),
        created_at: domain::now(),
        disabled: false,
    };
    let audit = caller.audit(AuditKind::ServiceAccountCreated, Some(&row.id));
    db::service_accounts::create(conn, &row, &audit.row()).await?;
    Ok((row.into(), secret))
}
