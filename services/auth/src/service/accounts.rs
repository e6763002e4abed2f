//! Accounts: sign-up, the caller's own profile and password, and the `create-admin` bootstrap.

use backbone_common::{auth::Role, db::Database, error::FieldViolation};

use super::{Auth, Caller};
use crate::{
    db::{self, models::UserRow, users::CreateError},
    domain::{
        self,
        audit::AuditKind,
        password::{self, PasswordHasher},
        user::{self, User},
    },
    error::AuthError,
};

/// Checks a new account's fields; returns (email, normalised email, display name).
fn check_sign_up(
    email: &str,
    password: &str,
    display_name: &str,
) -> Result<(String, String, String), AuthError> {
    let mut violations = Vec::new();
    let email = user::normalize_email(email)
        .map_err(|reason| violations.push(FieldViolation::new("email", reason)))
        .ok();
    let name = user::check_display_name(display_name)
        .map_err(|reason| violations.push(FieldViolation::new("display_name", reason)))
        .ok();
    let mut context: Vec<&str> = Vec::new();
    if let Some((display, _)) = &email {
        context.push(display);
        context.extend(display.split(['@', '.']));
    }
    if let Some(name) = &name {
        context.push(name);
    }
    if let Some(reason) = password::weakness(password, &context) {
        violations.push(FieldViolation::new("password", reason));
    }
    match (email, name) {
        (Some((email, normalized)), Some(name)) if violations.is_empty() => {
            Ok((email, normalized, name))
        }
        _ => Err(AuthError::InvalidArgument(violations)),
    }
}

/// A new, enabled account: with a password and an unverified email, or (social sign-up) without
/// a password and with the email the provider verified.
pub(super) fn new_user_row(
    email: String,
    email_normalized: String,
    display_name: String,
    password_hash: Option<String>,
    roles: &[Role],
) -> UserRow {
    let email_verified = password_hash.is_none();
    let now = domain::now();
    UserRow {
        id: domain::new_id(),
        email,
        email_normalized,
        display_name,
        password_hash,
        email_verified,
        disabled: false,
        created_at: now,
        updated_at: now,
        roles: user::roles_to_text(roles),
        disabled_at: None,
        version: 1,
    }
}

/// Hashes on the pool, mapping a full pool to RESOURCE_EXHAUSTED.
async fn hash(hasher: &PasswordHasher, password: &str) -> Result<String, AuthError> {
    hasher
        .hash(password.to_owned())
        .await
        .map_err(|_| AuthError::HashingBusy)
}

impl Auth {
    /// Creates a customer account.
    pub async fn sign_up(
        &self,
        caller: &Caller,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<User, AuthError> {
        let (email, normalized, name) = check_sign_up(email, password, display_name)?;
        let mut conn = self.conn().await?;
        // A cheap early answer; the unique index decides races.
        if db::users::by_email(&mut conn, &normalized).await?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let password_hash = hash(&self.inner.hasher, password).await?;
        let row = new_user_row(
            email,
            normalized,
            name,
            Some(password_hash),
            &[Role::Customer],
        );
        let audit = caller
            .audit(AuditKind::SignUp, Some(&row.id))
            .actor(Some(&row.id));
        match db::users::create(&mut conn, &row, &audit.row()).await {
            Ok(()) => Ok(row.into()),
            Err(CreateError::EmailTaken) => Err(AuthError::EmailTaken),
            Err(CreateError::Db(err)) => Err(err.into()),
        }
    }

    /// The caller's own account.
    pub async fn me(&self, caller: &Caller) -> Result<User, AuthError> {
        let me = caller.user()?;
        self.user(&me.user_id).await
    }

    /// A user by id.
    pub async fn user(&self, id: &str) -> Result<User, AuthError> {
        let mut conn = self.conn().await?;
        let row = db::users::by_id(&mut conn, id)
            .await?
            .ok_or(AuthError::NotFound { what: "user" })?;
        self.present_one(&mut conn, row).await
    }

    /// Changes the caller's display name; `etag`, when given, must be current.
    pub async fn update_me(
        &self,
        caller: &Caller,
        display_name: Option<&str>,
        etag: Option<&str>,
    ) -> Result<User, AuthError> {
        let me = caller.user()?;
        let current = self.user(&me.user_id).await?;
        if let Some(etag) = etag
            && etag != current.etag()
        {
            return Err(AuthError::EtagMismatch {
                current: current.etag(),
            });
        }
        let Some(display_name) = display_name else {
            return Ok(current);
        };
        let name = user::check_display_name(display_name)
            .map_err(|reason| AuthError::field("user.display_name", reason))?;
        let mut conn = self.conn().await?;
        let expected = etag.map(|_| current.version);
        match db::users::set_display_name(&mut conn, &me.user_id, &name, expected, domain::now())
            .await?
        {
            Some(row) => self.present_one(&mut conn, row).await,
            None => {
                let now = self.user(&me.user_id).await?;
                Err(AuthError::EtagMismatch {
                    current: now.etag(),
                })
            }
        }
    }

    /// Changes the caller's password after checking the current one; the caller's other
    /// sessions are revoked. Returns how many.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current_password: &str,
        new_password: &str,
    ) -> Result<usize, AuthError> {
        let me = caller.user()?;
        let mut conn = self.conn().await?;
        let row = db::users::by_id(&mut conn, &me.user_id)
            .await?
            .ok_or(AuthError::NotFound { what: "user" })?;
        if row.password_hash.is_none() {
            return Err(AuthError::NoPasswordSet);
        }
        if current_password.is_empty() {
            return Err(AuthError::field("current_password", "is required"));
        }
        let context = [row.email.as_str(), row.display_name.as_str()];
        if let Some(reason) = password::weakness(new_password, &context) {
            return Err(AuthError::field("new_password", reason));
        }
        let checked = self
            .inner
            .hasher
            .check(current_password.to_owned(), row.password_hash.clone())
            .await
            .map_err(|_| AuthError::HashingBusy)?;
        if !checked.matches {
            return Err(AuthError::field(
                "current_password",
                "does not match the account's password",
            ));
        }
        let new_hash = hash(&self.inner.hasher, new_password).await?;
        let audit = caller.audit(AuditKind::PasswordChanged, Some(&me.user_id));
        db::users::set_password(
            &mut conn,
            &me.user_id,
            &new_hash,
            Some(&me.session_id),
            "password_changed",
            domain::now(),
            &audit.row(),
        )
        .await?
        .ok_or(AuthError::NotFound { what: "user" })
    }
}

/// `backbone-auth create-admin`: creates an administrator, or grants the admin role to the
/// account with this email. Returns the user and whether it was created.
pub async fn create_admin(
    database: &Database,
    hasher: &PasswordHasher,
    email: &str,
    display_name: Option<&str>,
    password: &str,
) -> Result<(User, bool), AuthError> {
    let caller = Caller::command_line("create-admin");
    let (_, normalized) =
        user::normalize_email(email).map_err(|reason| AuthError::field("email", reason))?;
    let mut conn = database.conn().await?;
    if let Some(existing) = db::users::by_email(&mut conn, &normalized).await? {
        let mut roles = user::roles_from_text(&existing.roles);
        roles.push(Role::Admin);
        let roles = user::roles_to_text(&roles);
        let audit = caller
            .audit(AuditKind::RolesChanged, Some(&existing.id))
            .detail("roles", roles.clone());
        let row =
            db::users::set_roles(&mut conn, &existing.id, &roles, domain::now(), &audit.row())
                .await?
                .ok_or(AuthError::NotFound { what: "user" })?;
        return Ok((row.into(), false));
    }
    let fallback = normalized.split('@').next().unwrap_or("admin").to_owned();
    let name = display_name.unwrap_or(&fallback);
    let (email, normalized, name) = check_sign_up(email, password, name)?;
    let password_hash = hash(hasher, password).await?;
    let row = new_user_row(
        email,
        normalized,
        name,
        Some(password_hash),
        &[Role::Customer, Role::Admin],
    );
    let audit = caller
        .audit(AuditKind::SignUp, Some(&row.id))
        .detail("via", "create-admin");
    match db::users::create(&mut conn, &row, &audit.row()).await {
        Ok(()) => Ok((row.into(), true)),
        Err(CreateError::EmailTaken) => Err(AuthError::EmailTaken),
        Err(CreateError::Db(err)) => Err(err.into()),
    }
}
