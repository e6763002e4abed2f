//! Email verification and password reset: single-use, hashed, expiring tokens delivered by the
//! [`Notifier`](super::notifier::Notifier).

use super::{Auth, Caller, notifier::Message};
use crate::{
    db::{
        self,
        models::{OneTimeTokenRow, UserRow},
    },
    domain::{self, audit::AuditKind, password, secrets, user},
    error::AuthError,
};

/// A new single-use token for `purpose`, sent to the user's current address: the token and the
/// row that stores its hash.
fn one_time_token(
    purpose: &str,
    user: &UserRow,
    ttl: std::time::Duration,
) -> (String, OneTimeTokenRow) {
    let token = secrets::random_token();
    let now = domain::now();
    let row = OneTimeTokenRow {
        token_hash: secrets::token_hash(&token),
        purpose: purpose.into(),
        user_id: user.id.clone(),
        email: user.email_normalized.clone(),
        created_at: now,
        expires_at: domain::after(now, ttl),
        used_at: None,
    };
    (token, row)
}

impl Auth {
    /// Sends the caller a verification token for their current email address.
    pub async fn request_email_verification(&self, caller: &Caller) -> Result<(), AuthError> {
        let me = caller.user()?;
        let mut conn = self.conn().await?;
        let user = db::users::by_id(&mut conn, &me.user_id)
            .await?
            .ok_or(AuthError::NotFound { what: "user" })?;
        if user.email_verified {
            return Ok(());
        }
        let (token, row) = one_time_token(
            "verify_email",
            &user,
            self.settings().email_verification_ttl,
        );
        db::recovery::issue(&mut conn, &row, None).await?;
        drop(conn);
        let message = Message {
            recipient: user.email.clone(),
            subject: "Verify your email address".into(),
            summary: "email verification token".into(),
            body: format!(
                "Confirm that {} is your address: call VerifyEmail with this token (valid for {}):\n\n{token}\n",
                user.email,
                humantime::format_duration(self.settings().email_verification_ttl)
            ),
        };
        self.inner.notifier.send(&message).await
    }

    /// Marks the email the token was sent to as verified.
    pub async fn verify_email(&self, caller: &Caller, token: &str) -> Result<(), AuthError> {
        if token.is_empty() {
            return Err(AuthError::field("token", "is required"));
        }
        let audit = caller.audit(AuditKind::EmailVerified, None);
        let mut conn = self.conn().await?;
        db::recovery::verify_email(
            &mut conn,
            &secrets::token_hash(token),
            domain::now(),
            &audit.row(),
        )
        .await?
        .map(drop)
        .ok_or(AuthError::InvalidToken("verification token"))
    }

    /// Sends a reset token if the address belongs to an enabled account. Answers the same,
    /// in about the same time, whether or not it does: the work happens in the background.
    pub async fn request_password_reset(
        &self,
        caller: &Caller,
        email: &str,
    ) -> Result<(), AuthError> {
        let normalized = user::normalize_email(email)
            .map_err(|reason| AuthError::field("email", reason))?
            .1;
        let this = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            if let Err(err) = this.send_reset(&caller, &normalized).await {
                let status = tonic::Status::from(err);
                tracing::warn!(code = ?status.code(), message = %status.message(), "password reset not sent");
            }
        });
        Ok(())
    }

    async fn send_reset(&self, caller: &Caller, normalized: &str) -> Result<(), AuthError> {
        let mut conn = self.conn().await?;
        let Some(user) = db::users::by_email(&mut conn, normalized).await? else {
            return Ok(());
        };
        if user.disabled {
            return Ok(());
        }
        let (token, row) =
            one_time_token("reset_password", &user, self.settings().password_reset_ttl);
        let audit = caller.audit(AuditKind::PasswordResetRequested, Some(&user.id));
        db::recovery::issue(&mut conn, &row, Some(&audit.row())).await?;
        drop(conn);
        let message = Message {
            recipient: user.email.clone(),
            subject: "Reset your password".into(),
            summary: "password reset token".into(),
            body: format!(
                "Someone asked to reset the password of {}. If it was you, call ResetPassword with this token (valid for {}); otherwise ignore this message:\n\n{token}\n",
                user.email,
                humantime::format_duration(self.settings().password_reset_ttl)
            ),
        };
        self.inner.notifier.send(&message).await
    }

    /// Sets a new password with a reset token; every session of the account is revoked.
    pub async fn reset_password(
        &self,
        caller: &Caller,
        token: &str,
        new_password: &str,
    ) -> Result<(), AuthError> {
        if token.is_empty() {
            return Err(AuthError::field("token", "is required"));
        }
        let hash = secrets::token_hash(token);
        let mut conn = self.conn().await?;
        let usable = db::recovery::usable(&mut conn, &hash, "reset_password", domain::now())
            .await?
            .ok_or(AuthError::InvalidToken("reset token"))?;
        let user = db::users::by_id(&mut conn, &usable.user_id)
            .await?
            .ok_or(AuthError::InvalidToken("reset token"))?;
        let context = [user.email.as_str(), user.display_name.as_str()];
        if let Some(reason) = password::weakness(new_password, &context) {
            return Err(AuthError::field("new_password", reason));
        }
        let new_hash = self
            .inner
            .hasher
            .hash(new_password.to_owned())
            .await
            .map_err(|_| AuthError::HashingBusy)?;
        let audit = caller
            .audit(AuditKind::PasswordReset, Some(&user.id))
            .actor(Some(&user.id));
        db::recovery::reset_password(
            &mut conn,
            &hash,
            &user.id,
            &new_hash,
            domain::now(),
            &audit.row(),
        )
        .await?
        .map(drop)
        .ok_or(AuthError::InvalidToken("reset token"))
    }
}
