//! Security events kept in the audit log.

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// An account was created.
    SignUp,
    /// A password login succeeded.
    LoginSucceeded,
    /// A password login failed (wrong password, unknown email, disabled account).
    LoginFailed,
    /// A login was refused by brute-force protection before any check.
    LoginThrottled,
    /// A rotated refresh token was presented again outside the grace window: session revoked.
    RefreshTokenReuseDetected,
    /// The user logged out of a session.
    Logout,
    /// A session was revoked (by its user or an administrator).
    SessionRevoked,
    /// The password was changed.
    PasswordChanged,
    /// A password reset was requested.
    PasswordResetRequested,
    /// The password was reset with a reset token.
    PasswordReset,
    /// The email address was verified.
    EmailVerified,
    /// An administrator changed a user's roles.
    RolesChanged,
    /// An administrator disabled a user.
    UserDisabled,
    /// The token signing key was rotated.
    SigningKeyRotated,
    /// A service account was created.
    ServiceAccountCreated,
    /// A service account obtained an access token.
    ServiceTokenIssued,
    /// A social login succeeded.
    SocialLoginSucceeded,
    /// A social identity was linked to an account.
    SocialIdentityLinked,
}

impl AuditKind {
    /// Every kind, in the order of the API enum.
    pub const ALL: [AuditKind; 18] = [
        AuditKind::SignUp,
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
        AuditKind::LoginThrottled,
        AuditKind::RefreshTokenReuseDetected,
        AuditKind::Logout,
        AuditKind::SessionRevoked,
        AuditKind::PasswordChanged,
        AuditKind::PasswordResetRequested,
        AuditKind::PasswordReset,
        AuditKind::EmailVerified,
        AuditKind::RolesChanged,
        AuditKind::UserDisabled,
        AuditKind::SigningKeyRotated,
        AuditKind::ServiceAccountCreated,
        AuditKind::ServiceTokenIssued,
        AuditKind::SocialLoginSucceeded,
        AuditKind::SocialIdentityLinked,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::SignUp => "SIGN_UP",
            AuditKind::LoginSucceeded => "LOGIN_SUCCEEDED",
            AuditKind::LoginFailed => "LOGIN_FAILED",
            AuditKind::LoginThrottled => "LOGIN_THROTTLED",
            AuditKind::RefreshTokenReuseDetected => "REFRESH_TOKEN_REUSE_DETECTED",
            AuditKind::Logout => "LOGOUT",
            AuditKind::SessionRevoked => "SESSION_REVOKED",
            AuditKind::PasswordChanged => "PASSWORD_CHANGED",
            AuditKind::PasswordResetRequested => "PASSWORD_RESET_REQUESTED",
            AuditKind::PasswordReset => "PASSWORD_RESET",
            AuditKind::EmailVerified => "EMAIL_VERIFIED",
            AuditKind::RolesChanged => "ROLES_CHANGED",
            AuditKind::UserDisabled => "USER_DISABLED",
            AuditKind::SigningKeyRotated => "SIGNING_KEY_ROTATED",
            AuditKind::ServiceAccountCreated => "SERVICE_ACCOUNT_CREATED",
            AuditKind::ServiceTokenIssued => "SERVICE_TOKEN_ISSUED",
            AuditKind::SocialLoginSucceeded => "SOCIAL_LOGIN_SUCCEEDED",
            AuditKind::SocialIdentityLinked => "SOCIAL_IDENTITY_LINKED",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One security event as written: who did what to whom, from where, in which trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// UUIDv7.
    pub id: String,
    /// What happened.
    pub kind: AuditKind,
    /// Who did it (user or service account); `None` when anonymous.
    pub actor_id: Option<String>,
    /// Whom it concerns.
    pub subject_id: Option<String>,
    /// The caller's address.
    pub client_address: String,
    /// The trace of the call.
    pub trace_id: String,
    /// Extra facts (never a secret).
    pub details: std::collections::BTreeMap<String, String>,
    /// When (UTC).
    pub created_at: chrono::NaiveDateTime,
}
