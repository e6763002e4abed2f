//! Social login (OpenID Connect): starting a flow, signing in (or up) with a provider identity,
//! and linking one to the signed-in account. An existing account is never linked by email
//! alone: its owner signs in and links explicitly.

use std::time::Duration;

use backbone_common::{auth::Role, error::FieldViolation};
use serde::{Deserialize, Serialize};

use super::{Auth, Caller, Tokens, accounts::new_user_row};
use crate::{
    db::{
        self,
        models::{SocialIdentityRow, SocialLoginStateRow},
        social::{LinkError, SocialSignUp},
    },
    domain::{
        self,
        audit::AuditKind,
        secrets,
        user::{self, User},
    },
    error::AuthError,
    social::{SocialError, VerifiedIdentity},
};

/// How long a started flow can be finished.
pub const STATE_TTL: Duration = Duration::from_secs(600);

/// What a flow is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Sign in, or sign up; finished by CompleteSocialLogin.
    SignIn,
    /// Link to the signed-in account; finished by LinkSocialIdentity.
    Link,
}

impl Intent {
    fn as_str(self) -> &'static str {
        match self {
            Intent::SignIn => "sign_in",
            Intent::Link => "link",
        }
    }
}

/// A started flow.
#[derive(Debug, Clone)]
pub struct Started {
    /// Where to send the browser.
    pub authorization_url: String,
    /// The flow's `state`.
    pub state: String,
    /// When the state expires.
    pub expires_at: chrono::NaiveDateTime,
}

/// A finished social sign-in.
#[derive(Debug, Clone)]
pub struct SocialSignIn {
    /// The new session's tokens.
    pub tokens: Tokens,
    /// The signed-in account.
    pub user: User,
    /// True if this call created the account.
    pub created: bool,
}

/// The per-flow secrets kept server-side, sealed with a key derived from the state.
#[derive(Serialize, Deserialize)]
struct FlowSecrets {
    nonce: String,
    pkce_verifier: String,
}

const STATE_USED: &str = "this social-login state is unknown, already used or expired; start again";

impl Auth {
    /// Starts a flow with `provider`: the authorization URL and its state, kept server-side
    /// with the nonce and PKCE verifier for [`STATE_TTL`].
    pub async fn start_social_login(
        &self,
        caller: &Caller,
        provider: &str,
        intent: Intent,
    ) -> Result<Started, AuthError> {
        if provider.trim().is_empty() {
            return Err(AuthError::field("provider", "is required"));
        }
        if !self.inner.providers.contains(provider) {
            return Err(SocialError::UnknownProvider.into());
        }
        let user_id = match intent {
            Intent::Link => Some(caller.user()?.user_id),
            Intent::SignIn => None,
        };
        let state = secrets::random_token();
        let nonce = secrets::random_token();
        let (authorization_url, pkce_verifier) = self
            .inner
            .providers
            .authorization_url(provider, &state, &nonce)
            .await?;
        let plain = serde_json::to_vec(&FlowSecrets {
            nonce,
            pkce_verifier,
        })
        .map_err(|err| AuthError::Internal(format!("encoding flow secrets: {err}")))?;
        let now = domain::now();
        let row = SocialLoginStateRow {
            state_hash: secrets::token_hash(&state),
            provider: provider.to_owned(),
            intent: intent.as_str().to_owned(),
            user_id,
            secrets_sealed: secrets::seal_for_token(&state, &plain),
            created_at: now,
            expires_at: domain::after(now, STATE_TTL),
            used_at: None,
        };
        let mut conn = self.conn().await?;
        db::social::insert_state(&mut conn, &row).await?;
        Ok(Started {
            authorization_url,
            state,
            expires_at: row.expires_at,
        })
    }

    /// Takes a flow's state for `intent` (single use) and asks its provider for the identity
    /// behind `code`.
    async fn finish_flow(
        &self,
        caller: &Caller,
        state: &str,
        code: &str,
        intent: Intent,
    ) -> Result<(String, VerifiedIdentity), AuthError> {
        let mut violations = Vec::new();
        if state.is_empty() {
            violations.push(FieldViolation::new("state", "is required"));
        }
        if code.is_empty() {
            violations.push(FieldViolation::new("code", "is required"));
        }
        if !violations.is_empty() {
            return Err(AuthError::InvalidArgument(violations));
        }
        let hash = secrets::token_hash(state);
        let now = domain::now();
        let flow = {
            let mut conn = self.conn().await?;
            let flow = db::social::state(&mut conn, &hash)
                .await?
                .filter(|flow| flow.used_at.is_none() && flow.expires_at > now)
                .ok_or(AuthError::InvalidState(STATE_USED))?;
            if flow.intent != intent.as_str() {
                return Err(AuthError::InvalidState(match intent {
                    Intent::SignIn => {
                        "this state was started to link an identity: finish it with \
                         LinkSocialIdentity"
                    }
                    Intent::Link => {
                        "this state was started to sign in: finish it with CompleteSocialLogin"
                    }
                }));
            }
            if intent == Intent::Link && flow.user_id != Some(caller.user()?.user_id) {
                return Err(AuthError::StateOfAnotherUser);
            }
            if !db::social::consume_state(&mut conn, &hash, now).await? {
                return Err(AuthError::InvalidState(STATE_USED));
            }
            flow
        };
        let secrets: FlowSecrets = secrets::open_with_token(state, &flow.secrets_sealed)
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or_else(|| AuthError::Internal("a social-login state does not open".into()))?;
        // No database connection is held while the provider answers.
        let identity = self
            .inner
            .providers
            .exchange(&flow.provider, code, &secrets.pkce_verifier, &secrets.nonce)
            .await?;
        Ok((flow.provider, identity))
    }

    /// Finishes a sign-in flow: signs in the account linked to the provider identity, or
    /// creates one when no account uses the provider's (verified) email.
    pub async fn complete_social_login(
        &self,
        caller: &Caller,
        state: &str,
        code: &str,
    ) -> Result<SocialSignIn, AuthError> {
        let (provider, identity) = self
            .finish_flow(caller, state, code, Intent::SignIn)
            .await?;
        let mut conn = self.conn().await?;
        // Two rounds: a parallel sign-up of the same identity or email makes the second round
        // find it.
        for _ in 0..2 {
            if let Some(linked) =
                db::social::identity(&mut conn, &provider, &identity.subject).await?
            {
                let user = db::users::by_id(&mut conn, &linked.user_id)
                    .await?
                    .ok_or(AuthError::NotFound { what: "user" })?;
                if user.disabled {
                    let audit = caller
                        .audit(AuditKind::LoginFailed, Some(&user.id))
                        .detail("reason", "disabled")
                        .detail("provider", provider.clone());
                    db::audit::insert(&mut conn, &audit.row()).await?;
                    return Err(AuthError::UserDisabled);
                }
                let (session, tokens, refresh) = self.new_session(caller, &user).await?;
                let audit = caller
                    .audit(AuditKind::SocialLoginSucceeded, Some(&user.id))
                    .actor(Some(&user.id))
                    .detail("provider", provider.clone())
                    .detail("session_id", session.id.clone());
                db::sessions::create(&mut conn, &session, &refresh, &audit.row(), None).await?;
                return Ok(SocialSignIn {
                    tokens,
                    user: self.present_one(&mut conn, user).await?,
                    created: false,
                });
            }
            let email = identity
                .email
                .as_deref()
                .ok_or(AuthError::ProviderEmailMissing)?;
            let (email, normalized) =
                user::normalize_email(email).map_err(|_| AuthError::ProviderEmailMissing)?;
            if !identity.email_verified {
                return Err(AuthError::ProviderEmailUnverified);
            }
            if db::users::by_email(&mut conn, &normalized).await?.is_some() {
                return Err(AuthError::AccountExistsLinkRequired { provider });
            }
            let name = user::display_name_from(identity.name.as_deref(), &email);
            let row = new_user_row(email.clone(), normalized, name, None, &[Role::Customer]);
            let linked = SocialIdentityRow {
                provider: provider.clone(),
                subject: identity.subject.clone(),
                user_id: row.id.clone(),
                email,
                linked_at: row.created_at,
            };
            let (session, tokens, refresh) = self.new_session(caller, &row).await?;
            let audits = [
                caller
                    .audit(AuditKind::SignUp, Some(&row.id))
                    .actor(Some(&row.id))
                    .detail("provider", provider.clone())
                    .row(),
                caller
                    .audit(AuditKind::SocialLoginSucceeded, Some(&row.id))
                    .actor(Some(&row.id))
                    .detail("provider", provider.clone())
                    .detail("session_id", session.id.clone())
                    .row(),
            ];
            let stored = db::social::sign_up(
                &mut conn,
                SocialSignUp {
                    user: &row,
                    identity: &linked,
                    session: &session,
                    refresh: &refresh,
                    audits: &audits,
                },
            )
            .await;
            match stored {
                Ok(()) => {
                    return Ok(SocialSignIn {
                        tokens,
                        user: self.present_one(&mut conn, row).await?,
                        created: true,
                    });
                }
                Err(LinkError::Taken) => {}
                Err(LinkError::Db(err)) => return Err(err.into()),
            }
        }
        Err(AuthError::Internal(
            "a social sign-up kept conflicting with parallel ones".into(),
        ))
    }

    /// Finishes a link flow: links the provider identity to the signed-in user who started it.
    /// Linking an identity the user already has is a no-op.
    pub async fn link_social_identity(
        &self,
        caller: &Caller,
        state: &str,
        code: &str,
    ) -> Result<User, AuthError> {
        let me = caller.user()?;
        let (provider, identity) = self.finish_flow(caller, state, code, Intent::Link).await?;
        let mut conn = self.conn().await?;
        let user = db::users::by_id(&mut conn, &me.user_id)
            .await?
            .ok_or(AuthError::NotFound { what: "user" })?;
        if user.disabled {
            return Err(AuthError::UserDisabled);
        }
        let row = SocialIdentityRow {
            provider: provider.clone(),
            subject: identity.subject.clone(),
            user_id: me.user_id.clone(),
            email: identity.email.clone().unwrap_or_default(),
            linked_at: domain::now(),
        };
        let audit = caller
            .audit(AuditKind::SocialIdentityLinked, Some(&me.user_id))
            .detail("provider", provider.clone());
        match db::social::link(&mut conn, &row, &audit.row()).await {
            Ok(()) => {}
            Err(LinkError::Taken) => {
                let owner = db::social::identity(&mut conn, &provider, &identity.subject)
                    .await?
                    .map(|linked| linked.user_id);
                if owner.as_deref() != Some(me.user_id.as_str()) {
                    return Err(AuthError::IdentityLinkedElsewhere);
                }
            }
            Err(LinkError::Db(err)) => return Err(err.into()),
        }
        self.present_one(&mut conn, user).await
    }
}
