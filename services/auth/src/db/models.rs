//! Rows as stored, and their conversion to the domain's types.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{
    audit_events, one_time_tokens, outbox, refresh_tokens, service_accounts, sessions,
    signing_keys, social_identities, social_login_states, users,
};
use crate::domain::{
    audit::{AuditEvent, AuditKind},
    user::{SocialIdentity, User, roles_from_text},
};

/// A `users` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub email_normalized: String,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub email_verified: bool,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub roles: String,
    pub disabled_at: Option<NaiveDateTime>,
    pub version: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id,
            email: row.email,
            email_verified: row.email_verified,
            display_name: row.display_name,
            roles: roles_from_text(&row.roles),
            disabled: row.disabled,
            has_password: row.password_hash.is_some(),
            created_at: row.created_at,
            updated_at: row.updated_at,
            disabled_at: row.disabled_at,
            version: row.version,
            social_identities: Vec::new(),
        }
    }
}

/// A `sessions` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub user_agent: String,
    pub client_address: String,
    pub created_at: NaiveDateTime,
    pub last_used_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
    pub revoke_reason: Option<String>,
}

/// A `refresh_tokens` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshTokenRow {
    pub token_hash: String,
    pub session_id: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub rotated_at: Option<NaiveDateTime>,
    pub successor_hash: Option<String>,
    pub successor_sealed: Option<String>,
}

/// A `signing_keys` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys)]
pub struct SigningKeyRow {
    pub kid: String,
    pub public_key: String,
    pub private_key_sealed: String,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub retired_at: Option<NaiveDateTime>,
}

/// A `service_accounts` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = service_accounts)]
pub struct ServiceAccountRow {
    pub id: String,
    pub display_name: String,
    pub secret_hash: String,
    pub roles: String,
    pub creator_id: String,
    pub created_at: NaiveDateTime,
    pub disabled: bool,
}

/// A `one_time_tokens` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = one_time_tokens)]
pub struct OneTimeTokenRow {
    pub token_hash: String,
    pub purpose: String,
    pub user_id: String,
    pub email: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}

/// An `outbox` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub created_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
}

/// An `audit_events` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct AuditRow {
    pub id: String,
    pub event_type: String,
    pub actor_id: Option<String>,
    pub subject_id: Option<String>,
    pub client_address: String,
    pub trace_id: String,
    pub details: String,
    pub created_at: NaiveDateTime,
}

impl From<&AuditEvent> for AuditRow {
    fn from(event: &AuditEvent) -> Self {
        AuditRow {
            id: event.id.clone(),
            event_type: event.kind.as_str().to_owned(),
            actor_id: event.actor_id.clone(),
            subject_id: event.subject_id.clone(),
            client_address: event.client_address.clone(),
            trace_id: event.trace_id.clone(),
            details: serde_json::to_string(&event.details).unwrap_or_else(|_| "{}".into()),
            created_at: event.created_at,
        }
    }
}

impl AuditRow {
    /// The event, or `None` for a type this version does not know.
    pub fn into_event(self) -> Option<AuditEvent> {
        Some(AuditEvent {
            kind: AuditKind::parse(&self.event_type)?,
            id: self.id,
            actor_id: self.actor_id,
            subject_id: self.subject_id,
            client_address: self.client_address,
            trace_id: self.trace_id,
            details: serde_json::from_str(&self.details).unwrap_or_default(),
            created_at: self.created_at,
        })
    }
}

/// A `social_identities` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = social_identities)]
pub struct SocialIdentityRow {
    pub provider: String,
    pub subject: String,
    pub user_id: String,
    pub email: String,
    pub linked_at: NaiveDateTime,
}

impl From<SocialIdentityRow> for SocialIdentity {
    fn from(row: SocialIdentityRow) -> Self {
        SocialIdentity {
            provider: row.provider,
            subject: row.subject,
            email: row.email,
            linked_at: row.linked_at,
        }
    }
}

/// A `social_login_states` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = social_login_states)]
pub struct SocialLoginStateRow {
    pub state_hash: String,
    pub provider: String,
    pub intent: String,
    pub user_id: Option<String>,
    pub secrets_sealed: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}
