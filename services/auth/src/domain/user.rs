//! Accounts: what a user is, how emails are normalised and display names checked, and how
//! roles are written down.

use backbone_common::auth::Role;
use chrono::NaiveDateTime;

/// Longest email address accepted (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest display name accepted, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 200;

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// UUIDv7.
    pub id: String,
    /// As the user typed it (trimmed).
    pub email: String,
    /// Proven by a verification link.
    pub email_verified: bool,
    /// Shown to people.
    pub display_name: String,
    /// Sorted, without duplicates.
    pub roles: Vec<Role>,
    /// Disabled accounts cannot sign in or refresh.
    pub disabled: bool,
    /// False for accounts made through a social provider only.
    pub has_password: bool,
    /// Creation time (UTC).
    pub created_at: NaiveDateTime,
    /// Last change (UTC).
    pub updated_at: NaiveDateTime,
    /// When it was disabled (UTC).
    pub disabled_at: Option<NaiveDateTime>,
    /// Bumped on every change; the etag.
    pub version: i64,
    /// Linked identities at social-login providers (filled where the API shows them).
    pub social_identities: Vec<SocialIdentity>,
}

/// An identity at an OpenID Connect provider linked to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocialIdentity {
    /// The configured provider name.
    pub provider: String,
    /// The provider's `sub`.
    pub subject: String,
    /// The email the provider reported when linking.
    pub email: String,
    /// When it was linked (UTC).
    pub linked_at: NaiveDateTime,
}

impl User {
    /// The etag clients send back for optimistic concurrency.
    pub fn etag(&self) -> String {
        etag(self.version)
    }
}

/// The etag of `version`.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The lookup form of an email: trimmed and lowercased, so `Alice@Example.COM` and
/// `alice@example.com` are one account. Returns the display form and the lookup form, or why
/// the address is refused.
pub fn normalize_email(email: &str) -> Result<(String, String), &'static str> {
    let email = email.trim();
    if email.is_empty() {
        return Err("is required");
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err("must be at most 254 characters");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("must be an email address like name@example.com");
    };
    let domain_ok = !domain.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    if local.is_empty() || local.len() > 64 || !domain_ok || email.chars().any(char::is_whitespace)
    {
        return Err("must be an email address like name@example.com");
    }
    Ok((email.to_owned(), email.to_lowercase()))
}

/// A display name trimmed, or why it is refused.
pub fn check_display_name(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    if name.is_empty() {
        return Err("is required");
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err("must be at most 200 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(name.to_owned())
}

/// A display name for an account made by social sign-up: the provider's name claim cleaned up
/// (control characters dropped, at most 200 characters), or else the email's local part.
pub fn display_name_from(name: Option<&str>, email: &str) -> String {
    let cleaned: String = name
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DISPLAY_NAME_CHARS)
        .collect();
    match check_display_name(&cleaned) {
        Ok(name) => name,
        Err(_) => email.split('@').next().unwrap_or(email).to_owned(),
    }
}

/// Roles as stored: sorted names joined by commas.
pub fn roles_to_text(roles: &[Role]) -> String {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Roles from their stored form; unknown names are dropped.
pub fn roles_from_text(text: &str) -> Vec<Role> {
    let mut roles: Vec<Role> = text.split(',').filter_map(Role::parse).collect();
    roles.sort();
    roles.dedup();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_normalise_case_insensitively() {
        assert_eq!(
            normalize_email("  Alice@Example.COM "),
            Ok(("Alice@Example.COM".into(), "alice@example.com".into()))
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a b@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_are_stored_sorted_and_unique() {
        let text = roles_to_text(&[Role::Admin, Role::Customer, Role::Admin]);
        assert_eq!(text, "customer,admin");
        assert_eq!(roles_from_text(&text), vec![Role::Customer, Role::Admin]);
        assert_eq!(roles_from_text("admin,root"), vec![Role::Admin]);
    }
}
