//! Login, refresh-token rotation with reuse detection, logout and the caller's sessions.

use std::time::Duration;

use backbone_common::page;

use super::{Auth, Caller, Tokens, epoch};
use crate::{
    db::{
        self,
        models::{RefreshTokenRow, SessionRow, UserRow},
    },
    domain::{
        self,
        audit::AuditKind,
        secrets,
        throttle::{Decision, ThrottlePolicy, ThrottleState},
        user::{self, User},
    },
    error::AuthError,
};

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;
/// Compare-and-set rounds before a contended throttle counts as a refusal.
const THROTTLE_ROUNDS: usize = 16;

/// One of the caller's sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// The device's user agent at login.
    pub user_agent: String,
    /// The client address at login.
    pub client_address: String,
    /// True for the session of the calling token.
    pub current: bool,
    /// Login time.
    pub created_at: chrono::NaiveDateTime,
    /// Last refresh.
    pub last_used_at: chrono::NaiveDateTime,
    /// When it ends unless refreshed.
    pub expires_at: chrono::NaiveDateTime,
}

impl Auth {
    /// Counts one login attempt against `key`, refusing it when over the limit. Each attempt is
    /// counted (compare-and-set) before any password is checked. `state` is the stored state as
    /// the login read it; a lost compare-and-set reads it again.
    async fn count_attempt(
        &self,
        conn: &mut backbone_common::db::DbConn,
        key: &str,
        policy: &ThrottlePolicy,
        mut state: Option<ThrottleState>,
    ) -> Result<(), AuthError> {
        for round in 0..THROTTLE_ROUNDS {
            if round > 0 {
                state = db::throttle::get(conn, key).await?;
            }
            match policy.decide(state.as_ref(), domain::now()) {
                Decision::Block { retry_after } => {
                    return Err(AuthError::LoginThrottled { retry_after });
                }
                Decision::Allow { next } => {
                    if db::throttle::compare_and_set(conn, key, state.as_ref(), &next).await? {
                        return Ok(());
                    }
                }
            }
        }
        // Fail closed under heavy contention: a flood must not get more guesses through.
        Err(AuthError::LoginThrottled {
            retry_after: Duration::from_secs(1),
        })
    }

    /// Counts one login attempt against each of `attempts` (a key, its policy and the state the
    /// login read), in order, before any password is checked. When the states read allow the
    /// attempt on every key, both compare-and-sets go out together (one round trip on
    /// PostgreSQL) and a lost one is counted again from a fresh read, which may then refuse
    /// (the other key's attempt stays counted: a race errs towards counting more). Otherwise
    /// they are counted one by one, so a key over its limit refuses before the keys after it
    /// are counted. The error names the key.
    async fn count_attempts<'k>(
        &self,
        conn: &mut backbone_common::db::DbConn,
        attempts: [(&'k str, &ThrottlePolicy, Option<ThrottleState>); 2],
    ) -> Result<(), (&'k str, AuthError)> {
        let now = domain::now();
        let decided = attempts.each_ref().map(|(_, policy, state)| {
            match policy.decide(state.as_ref(), now) {
                Decision::Allow { next } => Some(next),
                Decision::Block { .. } => None,
            }
        });
        let [Some(first), Some(second)] = &decided else {
            for (key, policy, state) in attempts {
                self.count_attempt(conn, key, policy, state)
                    .await
                    .map_err(|err| (key, err))?;
            }
            return Ok(());
        };
        let changes = [
            (attempts[0].0, attempts[0].2.as_ref(), first),
            (attempts[1].0, attempts[1].2.as_ref(), second),
        ];
        let won = db::throttle::compare_and_set_both(conn, changes)
            .await
            .map_err(|err| (attempts[0].0, err.into()))?;
        for ((key, policy, _), won) in attempts.into_iter().zip(won) {
            if !won {
                let state = db::throttle::get(conn, key)
                    .await
                    .map_err(|err| (key, err.into()))?;
                self.count_attempt(conn, key, policy, state)
                    .await
                    .map_err(|err| (key, err))?;
            }
        }
        Ok(())
    }

    /// Signs in with email and password and starts a session.
    pub async fn login(
        &self,
        caller: &Caller,
        email: &str,
        password: &str,
    ) -> Result<(Tokens, User), AuthError> {
        let mut violations = Vec::new();
        if email.trim().is_empty() {
            violations.push(backbone_common::error::FieldViolation::new(
                "email",
                "is required",
            ));
        }
        if password.is_empty() {
            violations.push(backbone_common::error::FieldViolation::new(
                "password",
                "is required",
            ));
        }
        if !violations.is_empty() {
            return Err(AuthError::InvalidArgument(violations));
        }
        // Malformed addresses are looked up like any other and simply not found, so the answer
        // never tells which addresses exist.
        let normalized = user::normalize_email(email)
            .map(|(_, n)| n)
            .unwrap_or_else(|_| email.trim().to_lowercase());
        let account_key = format!("account:{normalized}");
        let address_key = format!("address:{}", caller.client_address);
        let mut conn = self.conn().await?;
        let db::sessions::LoginContext {
            user: found,
            identities,
            throttles: [account_state, address_state],
        } = db::sessions::login_context(&mut conn, &normalized, [&account_key, &address_key])
            .await?;
        let subject = found.as_ref().map(|u| u.id.clone());
        let attempts = [
            (
                account_key.as_str(),
                &self.settings().account_throttle,
                account_state,
            ),
            (
                address_key.as_str(),
                &self.settings().address_throttle,
                address_state,
            ),
        ];
        if let Err((key, err)) = self.count_attempts(&mut conn, attempts).await {
            let audit = caller
                .audit(AuditKind::LoginThrottled, subject.as_deref())
                .detail("throttle", key.split(':').next().unwrap_or_default());
            db::audit::insert(&mut conn, &audit.row()).await?;
            return Err(err);
        }
        let checked = self
            .inner
            .hasher
            .check(
                password.to_owned(),
                found.as_ref().and_then(|u| u.password_hash.clone()),
            )
            .await
            .map_err(|_| AuthError::HashingBusy)?;
        let Some(user) = found.filter(|_| checked.matches) else {
            let audit = caller
                .audit(AuditKind::LoginFailed, subject.as_deref())
                .detail(
                    "reason",
                    if subject.is_some() {
                        "wrong_password"
                    } else {
                        "unknown_email"
                    },
                );
            db::audit::insert(&mut conn, &audit.row()).await?;
            return Err(AuthError::InvalidCredentials);
        };
        if user.disabled {
            let audit = caller
                .audit(AuditKind::LoginFailed, Some(&user.id))
                .detail("reason", "disabled");
            db::audit::insert(&mut conn, &audit.row()).await?;
            return Err(AuthError::UserDisabled);
        }
        if checked.needs_rehash
            && let Some(old) = &user.password_hash
        {
            // Parameters were raised since this hash was made: store one with today's.
            let new_hash = self
                .inner
                .hasher
                .hash(password.to_owned())
                .await
                .map_err(|_| AuthError::HashingBusy)?;
            db::users::upgrade_hash(&mut conn, &user.id, old, &new_hash).await?;
        }
        let (session, tokens, refresh) = self.new_session(caller, &user).await?;
        let audit = caller
            .audit(AuditKind::LoginSucceeded, Some(&user.id))
            .actor(Some(&user.id))
            .detail("session_id", session.id.clone());
        db::sessions::create(
            &mut conn,
            &session,
            &refresh,
            &audit.row(),
            Some(&account_key),
        )
        .await?;
        // As `present_one` would show it, from the identities read with the account.
        let mut user = User::from(user);
        user.social_identities = identities
            .into_iter()
            .map(user::SocialIdentity::from)
            .collect();
        Ok((tokens, user))
    }

    /// A new session of `user` on the caller's device, its tokens and its first refresh-token
    /// row, ready to store.
    pub(super) async fn new_session(
        &self,
        caller: &Caller,
        user: &UserRow,
    ) -> Result<(SessionRow, Tokens, RefreshTokenRow), AuthError> {
        let now = domain::now();
        let session = SessionRow {
            id: domain::new_id(),
            user_id: user.id.clone(),
            user_agent: caller.user_agent.chars().take(MAX_USER_AGENT).collect(),
            client_address: caller.client_address.clone(),
            created_at: now,
            last_used_at: now,
            expires_at: domain::after(now, self.settings().refresh_token_ttl),
            revoked_at: None,
            revoke_reason: None,
        };
        let tokens = self.new_tokens(user, &session.id, now).await?;
        let refresh = self.refresh_row(&tokens, now);
        Ok((session, tokens, refresh))
    }

    /// A fresh access and refresh token for `user` in `session_id`.
    async fn new_tokens(
        &self,
        user: &UserRow,
        session_id: &str,
        now: chrono::NaiveDateTime,
    ) -> Result<Tokens, AuthError> {
        let roles = user::roles_from_text(&user.roles);
        let (access_token, access_exp) = self
            .access_token(
                &user.id,
                &roles,
                Some(session_id),
                self.settings().access_token_ttl,
            )
            .await?;
        Ok(Tokens {
            access_token,
            access_token_expires_at: access_exp,
            refresh_token: secrets::random_token(),
            refresh_token_expires_at: epoch(domain::after(now, self.settings().refresh_token_ttl)),
            session_id: session_id.to_owned(),
        })
    }

    fn refresh_row(&self, tokens: &Tokens, now: chrono::NaiveDateTime) -> RefreshTokenRow {
        RefreshTokenRow {
            token_hash: secrets::token_hash(&tokens.refresh_token),
            session_id: tokens.session_id.clone(),
            created_at: now,
            expires_at: domain::after(now, self.settings().refresh_token_ttl),
            rotated_at: None,
            successor_hash: None,
            successor_sealed: None,
        }
    }

    /// Exchanges a refresh token for a new pair. The token rotates: of parallel calls with the
    /// same token exactly one rotates it and the rest get that same successor pair; presenting
    /// it again after the grace window, or an older token at all, revokes the session.
    pub async fn refresh(&self, caller: &Caller, refresh_token: &str) -> Result<Tokens, AuthError> {
        if refresh_token.is_empty() {
            return Err(AuthError::field("refresh_token", "is required"));
        }
        let hash = secrets::token_hash(refresh_token);
        let now = domain::now();
        let mut conn = self.conn().await?;
        let (mut token, session, user) = db::sessions::refresh_context(&mut conn, &hash)
            .await?
            .ok_or(AuthError::InvalidToken("refresh token"))?;
        if user.disabled {
            return Err(AuthError::UserDisabled);
        }
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Err(AuthError::SessionEnded);
        }
        if token.expires_at <= now {
            return Err(AuthError::InvalidToken("refresh token"));
        }
        if token.rotated_at.is_none() {
            let fresh = self.new_tokens(&user, &session.id, now).await?;
            let plain = serde_json::to_vec(&fresh)
                .map_err(|err| AuthError::Internal(format!("encoding a token pair: {err}")))?;
            let sealed = secrets::seal_for_token(refresh_token, &plain);
            let successor = self.refresh_row(&fresh, now);
            if db::sessions::rotate(&mut conn, &hash, &successor, &sealed, now).await? {
                return Ok(fresh);
            }
            // Another call rotated it first: answer with its successor (or treat as reuse).
            token = db::sessions::refresh_token(&mut conn, &hash)
                .await?
                .ok_or(AuthError::InvalidToken("refresh token"))?;
        }
        let grace =
            chrono::Duration::from_std(self.settings().refresh_reuse_grace).unwrap_or_default();
        let in_grace = token.rotated_at.is_some_and(|at| now - at <= grace);
        let successor_live = match &token.successor_hash {
            Some(next) => db::sessions::refresh_token(&mut conn, next)
                .await?
                .is_some_and(|next| next.rotated_at.is_none()),
            None => false,
        };
        if in_grace
            && successor_live
            && let Some(sealed) = &token.successor_sealed
            && let Ok(plain) = secrets::open_with_token(refresh_token, sealed)
            && let Ok(tokens) = serde_json::from_slice::<Tokens>(&plain)
        {
            return Ok(tokens);
        }
        let audit = caller
            .audit(AuditKind::RefreshTokenReuseDetected, Some(&user.id))
            .detail("session_id", session.id.clone());
        db::sessions::revoke(
            &mut conn,
            &session.id,
            &user.id,
            "refresh_token_reuse",
            now,
            &audit.row(),
        )
        .await?;
        tracing::warn!(user_id = %user.id, session_id = %session.id, "refresh token reuse detected; session revoked");
        Err(AuthError::RefreshTokenReused)
    }

    /// Ends the caller's session.
    pub async fn logout(&self, caller: &Caller) -> Result<(), AuthError> {
        let me = caller.user()?;
        let audit = caller.audit(AuditKind::Logout, Some(&me.user_id));
        let mut conn = self.conn().await?;
        db::sessions::revoke(
            &mut conn,
            &me.session_id,
            &me.user_id,
            "logout",
            domain::now(),
            &audit.row(),
        )
        .await?;
        Ok(())
    }

    /// A page of the caller's active sessions.
    pub async fn list_sessions(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<SessionInfo>, String), AuthError> {
        let me = caller.user()?;
        let size =
            page::page_size(page_size, 50, 100).map_err(|v| AuthError::InvalidArgument(vec![v]))?;
        let query = format!("sessions|{}", me.user_id);
        let after =
            page::decode(&query, page_token).map_err(|v| AuthError::InvalidArgument(vec![v]))?;
        let mut conn = self.conn().await?;
        let mut rows = db::sessions::list_active(
            &mut conn,
            &me.user_id,
            after.as_deref(),
            size + 1,
            domain::now(),
        )
        .await?;
        let next = next_token(&mut rows, size, &query, |row| row.id.clone());
        let sessions = rows
            .into_iter()
            .map(|row| SessionInfo {
                current: row.id == me.session_id,
                id: row.id,
                user_id: row.user_id,
                user_agent: row.user_agent,
                client_address: row.client_address,
                created_at: row.created_at,
                last_used_at: row.last_used_at,
                expires_at: row.expires_at,
            })
            .collect();
        Ok((sessions, next))
    }

    /// Revokes one of the caller's sessions.
    pub async fn revoke_session(&self, caller: &Caller, session_id: &str) -> Result<(), AuthError> {
        let me = caller.user()?;
        if session_id.is_empty() {
            return Err(AuthError::field("session_id", "is required"));
        }
        let audit = caller
            .audit(AuditKind::SessionRevoked, Some(&me.user_id))
            .detail("session_id", session_id);
        let mut conn = self.conn().await?;
        let revoked = db::sessions::revoke(
            &mut conn,
            session_id,
            &me.user_id,
            "revoked_by_user",
            domain::now(),
            &audit.row(),
        )
        .await?;
        if revoked {
            Ok(())
        } else {
            Err(AuthError::NotFound { what: "session" })
        }
    }

    /// Revokes every session of the caller but the current one; returns how many.
    pub async fn revoke_other_sessions(&self, caller: &Caller) -> Result<usize, AuthError> {
        let me = caller.user()?;
        let audit = caller
            .audit(AuditKind::SessionRevoked, Some(&me.user_id))
            .detail("scope", "others");
        let mut conn = self.conn().await?;
        Ok(db::sessions::revoke_others(
            &mut conn,
            &me.user_id,
            &me.session_id,
            domain::now(),
            &audit.row(),
        )
        .await?)
    }
}

/// Trims a page fetched with one extra row and returns the token of the next page ("" at the end).
pub(crate) fn next_token<T>(
    rows: &mut Vec<T>,
    size: i64,
    query: &str,
    cursor: impl Fn(&T) -> String,
) -> String {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rows.len() <= size {
        return String::new();
    }
    rows.truncate(size);
    rows.last()
        .map(|last| page::encode(query, &cursor(last)))
        .unwrap_or_default()
}
