//! The auth service's error type and its one exhaustive mapping to a gRPC status.

use std::time::Duration;

use backbone_common::{
    db::DbError,
    error::{self, FieldViolation},
};
use tonic::{Code, Status};

use crate::social::SocialError;

/// `ErrorInfo.domain` of the auth service's business errors.
pub const ERROR_DOMAIN: &str = "auth.backbone";

/// Everything an auth call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request is malformed; each violation names its field.
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    /// Wrong email or password (the same answer for both, so accounts cannot be enumerated).
    #[error("wrong email or password")]
    InvalidCredentials,
    /// A refresh, verification or reset token that is unknown, expired or already used.
    #[error("the {0} is invalid or has expired")]
    InvalidToken(&'static str),
    /// A rotated refresh token was presented after the grace window, or an older one at all:
    /// the session has been revoked.
    #[error("this refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    /// The session was revoked or has expired.
    #[error("the session has ended; sign in again")]
    SessionEnded,
    /// The call needs an access token and none was sent.
    #[error("this call needs an access token: send `authorization: Bearer <token>`")]
    TokenRequired,
    /// The call needs a signed-in user (not a service account).
    #[error("this call needs a user's access token")]
    UserRequired,
    /// The account is disabled.
    #[error("this account is disabled")]
    UserDisabled,
    /// The client id or secret of a service account is wrong.
    #[error("unknown client id or wrong client secret")]
    InvalidClient,
    /// Something named in the request does not exist (`what` says which kind of thing).
    #[error("{what} not found")]
    NotFound {
        /// "user", "session", ...
        what: &'static str,
    },
    /// The email address already belongs to an account.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The caller's etag is stale.
    #[error("the resource was changed by someone else; read it again")]
    EtagMismatch {
        /// The etag the resource has now.
        current: String,
    },
    /// An administrator tried to take their own admin role away or disable themselves.
    #[error("{0}")]
    SelfLockout(&'static str),
    /// Too many failed logins for this account or address.
    #[error("too many failed sign-in attempts; try again later")]
    LoginThrottled {
        /// When a new attempt will be considered.
        retry_after: Duration,
    },
    /// The password-hashing pool and its queue are full.
    #[error("the service is busy hashing passwords; try again shortly")]
    HashingBusy,
    /// The account has no password to change (made by social login): use password reset.
    #[error("this account has no password yet; set one with RequestPasswordReset")]
    NoPasswordSet,
    /// A social-login `state` that is unknown, used, expired, or for the other finishing call.
    #[error("{0}")]
    InvalidState(&'static str),
    /// A link flow finished by a different user than the one who started it.
    #[error("this social-login flow was started by another user")]
    StateOfAnotherUser,
    /// Social sign-in found an existing account with the provider's email, not linked to it.
    #[error(
        "an account with this email already exists; sign in to it, then link this provider \
         with StartSocialLogin (intent LINK) and LinkSocialIdentity"
    )]
    AccountExistsLinkRequired {
        /// The provider.
        provider: String,
    },
    /// The provider did not share an email address, which a new account needs.
    #[error("the provider did not share an email address; allow the email scope and try again")]
    ProviderEmailMissing,
    /// The provider does not vouch for the email address, so no account is made with it.
    #[error("the provider has not verified this email address")]
    ProviderEmailUnverified,
    /// The provider identity is linked to another account.
    #[error("this provider identity is already linked to another account")]
    IdentityLinkedElsewhere,
    /// A step with the OpenID Connect provider failed.
    #[error(transparent)]
    Social(#[from] SocialError),
    /// The database failed; unreachable becomes UNAVAILABLE with RetryInfo, the rest INTERNAL.
    #[error(transparent)]
    Database(#[from] DbError),
    /// An unexpected failure (a corrupt key, a task that panicked); logged, answered INTERNAL.
    #[error("{0}")]
    Internal(String),
}

impl AuthError {
    /// INVALID_ARGUMENT for one field.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

impl From<diesel::result::Error> for AuthError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Database(err.into())
    }
}

fn reason(err: &AuthError, code: Code, reason: &str) -> Status {
    error::business(ERROR_DOMAIN, code, reason, err.to_string(), [])
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match &err {
            AuthError::InvalidArgument(violations) => error::invalid_argument(violations),
            AuthError::InvalidCredentials => {
                reason(&err, Code::Unauthenticated, "INVALID_CREDENTIALS")
            }
            AuthError::InvalidToken(_) => reason(&err, Code::Unauthenticated, "INVALID_TOKEN"),
            AuthError::RefreshTokenReused => {
                reason(&err, Code::Unauthenticated, "REFRESH_TOKEN_REUSED")
            }
            AuthError::SessionEnded => reason(&err, Code::Unauthenticated, "SESSION_ENDED"),
            AuthError::TokenRequired => reason(&err, Code::Unauthenticated, "TOKEN_REQUIRED"),
            AuthError::UserRequired => reason(&err, Code::PermissionDenied, "USER_REQUIRED"),
            AuthError::UserDisabled => reason(&err, Code::PermissionDenied, "USER_DISABLED"),
            AuthError::InvalidClient => reason(&err, Code::Unauthenticated, "INVALID_CLIENT"),
            AuthError::NotFound { .. } => reason(&err, Code::NotFound, "NOT_FOUND"),
            AuthError::EmailTaken => reason(&err, Code::AlreadyExists, "EMAIL_TAKEN"),
            AuthError::EtagMismatch { current } => error::business(
                ERROR_DOMAIN,
                Code::Aborted,
                "ETAG_MISMATCH",
                err.to_string(),
                [("current_etag".to_owned(), current.clone())],
            ),
            AuthError::SelfLockout(_) => reason(&err, Code::FailedPrecondition, "SELF_LOCKOUT"),
            AuthError::LoginThrottled { retry_after } => error::retryable(
                ERROR_DOMAIN,
                Code::ResourceExhausted,
                "LOGIN_THROTTLED",
                err.to_string(),
                // Whole seconds, rounded up, so a client that waits exactly this long gets in.
                Duration::from_secs(
                    retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
                ),
            ),
            AuthError::HashingBusy => error::retryable(
                ERROR_DOMAIN,
                Code::ResourceExhausted,
                "PASSWORD_HASHING_BUSY",
                err.to_string(),
                Duration::from_secs(1),
            ),
            AuthError::NoPasswordSet => reason(&err, Code::FailedPrecondition, "NO_PASSWORD_SET"),
            AuthError::InvalidState(_) => error::business(
                ERROR_DOMAIN,
                Code::InvalidArgument,
                "INVALID_STATE",
                err.to_string(),
                [("field".to_owned(), "state".to_owned())],
            ),
            AuthError::StateOfAnotherUser => {
                reason(&err, Code::PermissionDenied, "STATE_OF_ANOTHER_USER")
            }
            AuthError::AccountExistsLinkRequired { provider } => error::business(
                ERROR_DOMAIN,
                Code::FailedPrecondition,
                "ACCOUNT_EXISTS_LINK_REQUIRED",
                err.to_string(),
                [("provider".to_owned(), provider.clone())],
            ),
            AuthError::ProviderEmailMissing => {
                reason(&err, Code::FailedPrecondition, "PROVIDER_EMAIL_MISSING")
            }
            AuthError::ProviderEmailUnverified => {
                reason(&err, Code::FailedPrecondition, "PROVIDER_EMAIL_UNVERIFIED")
            }
            AuthError::IdentityLinkedElsewhere => {
                reason(&err, Code::AlreadyExists, "IDENTITY_ALREADY_LINKED")
            }
            AuthError::Social(social) => match social {
                SocialError::UnknownProvider => reason(&err, Code::NotFound, "PROVIDER_NOT_FOUND"),
                SocialError::Unavailable(_) => error::retryable(
                    ERROR_DOMAIN,
                    Code::Unavailable,
                    "PROVIDER_UNAVAILABLE",
                    err.to_string(),
                    Duration::from_secs(5),
                ),
                SocialError::CodeRejected(_) => error::business(
                    ERROR_DOMAIN,
                    Code::InvalidArgument,
                    "CODE_REJECTED",
                    err.to_string(),
                    [("field".to_owned(), "code".to_owned())],
                ),
                SocialError::InvalidIdToken(_) => {
                    reason(&err, Code::Unauthenticated, "INVALID_ID_TOKEN")
                }
            },
            AuthError::Database(db) => Status::from(db),
            AuthError::Internal(_) => error::internal(&err),
        }
    }
}
