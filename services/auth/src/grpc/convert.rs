//! Conversions between the API's messages and the domain's types.

use backbone_common::auth::Role;
use backbone_proto::Timestamp;
use backbone_proto::auth as pb;

use crate::{
    domain::{
        audit::{AuditEvent, AuditKind},
        user::User,
    },
    service::{Tokens, admin::ServiceAccount, sessions::SessionInfo},
};

/// A stored UTC time as a protobuf timestamp.
pub fn timestamp(time: chrono::NaiveDateTime) -> Timestamp {
    let utc = time.and_utc();
    Timestamp {
        seconds: utc.timestamp(),
        nanos: i32::try_from(utc.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Seconds since the epoch as a protobuf timestamp.
pub fn epoch_timestamp(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// The API role of a domain role.
pub fn role(role: Role) -> pb::Role {
    match role {
        Role::Customer => pb::Role::Customer,
        Role::Admin => pb::Role::Admin,
        Role::Service => pb::Role::Service,
    }
}

/// The domain role of an API role value; `None` for UNSPECIFIED or unknown numbers.
pub fn role_from_api(value: i32) -> Option<Role> {
    match pb::Role::try_from(value).ok()? {
        pb::Role::Customer => Some(Role::Customer),
        pb::Role::Admin => Some(Role::Admin),
        pb::Role::Service => Some(Role::Service),
        pb::Role::Unspecified => None,
    }
}

/// The API form of an account.
pub fn user(user: User) -> pb::User {
    let etag = user.etag();
    pb::User {
        id: user.id,
        email: user.email,
        email_verified: user.email_verified,
        display_name: user.display_name,
        roles: user.roles.into_iter().map(|r| role(r) as i32).collect(),
        disabled: user.disabled,
        has_password: user.has_password,
        social_identities: user
            .social_identities
            .into_iter()
            .map(|identity| pb::SocialIdentity {
                provider: identity.provider,
                subject: identity.subject,
                email: identity.email,
                link_time: Some(timestamp(identity.linked_at)),
            })
            .collect(),
        create_time: Some(timestamp(user.created_at)),
        update_time: Some(timestamp(user.updated_at)),
        disable_time: user.disabled_at.map(timestamp),
        etag,
    }
}

/// The API form of a token pair.
pub fn tokens(tokens: Tokens) -> pb::TokenPair {
    pb::TokenPair {
        token_type: "Bearer".into(),
        access_token: tokens.access_token,
        access_token_expire_time: Some(epoch_timestamp(tokens.access_token_expires_at)),
        refresh_token: tokens.refresh_token,
        refresh_token_expire_time: Some(epoch_timestamp(tokens.refresh_token_expires_at)),
        session_id: tokens.session_id,
    }
}

/// The API form of a session.
pub fn session(session: SessionInfo) -> pb::Session {
    pb::Session {
        id: session.id,
        user_id: session.user_id,
        user_agent: session.user_agent,
        client_address: session.client_address,
        current: session.current,
        create_time: Some(timestamp(session.created_at)),
        last_use_time: Some(timestamp(session.last_used_at)),
        expire_time: Some(timestamp(session.expires_at)),
    }
}

/// The API form of a service account.
pub fn service_account(account: ServiceAccount) -> pb::ServiceAccount {
    pb::ServiceAccount {
        id: account.id,
        display_name: account.display_name,
        roles: account.roles.into_iter().map(|r| role(r) as i32).collect(),
        creator_id: account.creator_id,
        create_time: Some(timestamp(account.created_at)),
    }
}

/// The API number of an audit kind (the API enum lists them in [`AuditKind::ALL`] order).
pub fn audit_kind(kind: AuditKind) -> i32 {
    AuditKind::ALL
        .iter()
        .position(|k| *k == kind)
        .and_then(|i| i32::try_from(i + 1).ok())
        .unwrap_or(0)
}

/// The audit kind of an API number; `None` for UNSPECIFIED or unknown numbers.
pub fn audit_kind_from_api(value: i32) -> Option<AuditKind> {
    let index = usize::try_from(value).ok()?.checked_sub(1)?;
    AuditKind::ALL.get(index).copied()
}

/// The API form of an audit event.
pub fn audit_event(event: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: event.id,
        r#type: audit_kind(event.kind),
        actor_id: event.actor_id.unwrap_or_default(),
        subject_id: event.subject_id.unwrap_or_default(),
        client_address: event.client_address,
        trace_id: event.trace_id,
        details: event.details.into_iter().collect(),
        create_time: Some(timestamp(event.created_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_kinds_match_the_api_enum() {
        for kind in AuditKind::ALL {
            let api = pb::AuditEventType::try_from(audit_kind(kind)).expect("known number");
            assert_eq!(
                api.as_str_name(),
                format!("AUDIT_EVENT_TYPE_{}", kind.as_str())
            );
            assert_eq!(audit_kind_from_api(audit_kind(kind)), Some(kind));
        }
        assert_eq!(audit_kind_from_api(0), None);
    }
}
