//! Categories: a tree of slugs and names.

use chrono::NaiveDateTime;

/// A node of the category tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// UUIDv7.
    pub id: String,
    /// Unique URL-friendly name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Parent; `None` for a root.
    pub parent_id: Option<String>,
    /// Bumped on every change.
    pub version: i64,
    /// Creation time (UTC).
    pub created_at: NaiveDateTime,
    /// Last change (UTC).
    pub updated_at: NaiveDateTime,
}

impl Category {
    /// The etag clients send back.
    pub fn etag(&self) -> String {
        super::etag(self.version)
    }
}

/// Checks a slug: 1 to 64 of a-z, 0-9 and '-', not starting or ending with '-'.
pub fn check_slug(slug: &str) -> Result<(), &'static str> {
    if slug.is_empty() {
        return Err("is required");
    }
    let ok = slug.len() <= 64
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 64 characters of a-z, 0-9 and '-', not starting or ending with '-'")
    }
}

/// Checks a name; returns it trimmed.
pub fn check_name(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    if name.is_empty() {
        return Err("is required");
    }
    if name.chars().count() > 100 {
        return Err("must be at most 100 characters");
    }
    Ok(name.to_owned())
}

/// The ids of `root` and every category below it, given all (id, parent) pairs.
pub fn subtree(root: &str, all: &[(String, Option<String>)]) -> Vec<String> {
    let mut found = vec![root.to_owned()];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next].clone();
        found.extend(
            all.iter()
                .filter(|(_, p)| p.as_deref() == Some(parent.as_str()))
                .map(|(id, _)| id.clone()),
        );
        next += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtrees_include_every_descendant() {
        let all = [
            ("a".to_owned(), None),
            ("b".to_owned(), Some("a".to_owned())),
            ("c".to_owned(), Some("b".to_owned())),
            ("d".to_owned(), None),
        ];
        assert_eq!(subtree("a", &all), ["a", "b", "c"]);
        assert_eq!(subtree("d", &all), ["d"]);
    }

    #[test]
    fn slugs_are_checked() {
        assert!(check_slug("running-shoes").is_ok());
        for bad in ["", "-a", "a-", "Upper", "a b"] {
            assert!(check_slug(bad).is_err(), "{bad}");
        }
    }
}
