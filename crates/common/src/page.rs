//! Paging for List RPCs (AIP-158): page-size rules and opaque `page_token`s that carry a keyset
//! cursor (never an offset), bound to the query that produced them. A token is base64url of
//! `query fingerprint (8 bytes) | checksum (8 bytes) | cursor`: a token from another query, or
//! one that was edited, is refused as INVALID_ARGUMENT instead of silently paging something else.
//! The checksum catches corruption and casual edits; it is not a secret MAC, and needs none: the
//! cursor only says where the next page starts, and every page is filtered by the caller's rights.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::error::FieldViolation;

/// The page size to use: `default` for 0, at most `max`; negative is a field violation.
pub fn page_size(requested: i32, default: i64, max: i64) -> Result<i64, FieldViolation> {
    match requested {
        0 => Ok(default),
        n if n < 0 => Err(FieldViolation::new(
            "page_size",
            "must not be negative (0 means the default)",
        )),
        n => Ok(i64::from(n).min(max)),
    }
}

fn fingerprint(query: &str) -> [u8; 8] {
    let digest = Sha256::digest(query.as_bytes());
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn checksum(fingerprint: &[u8], cursor: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(b"backbone page token")
        .chain_update(fingerprint)
        .chain_update(cursor)
        .finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The token for the page after `cursor` of `query` (a canonical description of the filters
/// and ordering, for example `users|email_prefix=ali`).
pub fn encode(query: &str, cursor: &str) -> String {
    let fp = fingerprint(query);
    let mut bytes = Vec::with_capacity(16 + cursor.len());
    bytes.extend_from_slice(&fp);
    bytes.extend_from_slice(&checksum(&fp, cursor.as_bytes()));
    bytes.extend_from_slice(cursor.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The cursor in `token` for `query`; `None` for the first page (empty token).
pub fn decode(query: &str, token: &str) -> Result<Option<String>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || FieldViolation::new("page_token", "is not a token this service issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if bytes.len() < 16 {
        return Err(invalid());
    }
    let (fp, rest) = bytes.split_at(8);
    let (sum, cursor) = rest.split_at(8);
    if sum != checksum(fp, cursor) {
        return Err(invalid());
    }
    if fp != fingerprint(query) {
        return Err(FieldViolation::new(
            "page_token",
            "belongs to a different query: keep every filter and the ordering the same while paging",
        ));
    }
    String::from_utf8(cursor.to_vec())
        .map(Some)
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_for_its_own_query_only() {
        let token = encode("users|prefix=a", "0193-abc");
        assert_eq!(
            decode("users|prefix=a", &token).ok().flatten().as_deref(),
            Some("0193-abc")
        );
        let other = decode("users|prefix=b", &token)
            .err()
            .map(|v| v.description);
        assert!(other.is_some_and(|d| d.contains("different query")));
        assert_eq!(decode("users|prefix=a", "").ok(), Some(None));
    }

    #[test]
    fn edited_tokens_are_refused() {
        let token = encode("q", "cursor-1");
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        if let Some(last) = bytes.last_mut() {
            *last ^= 1;
        }
        assert!(decode("q", &URL_SAFE_NO_PAD.encode(bytes)).is_err());
        assert!(decode("q", "not base64!").is_err());
        assert!(decode("q", "AAAA").is_err());
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0, 20, 100).ok(), Some(20));
        assert_eq!(page_size(500, 20, 100).ok(), Some(100));
        assert_eq!(page_size(7, 20, 100).ok(), Some(7));
        assert!(page_size(-1, 20, 100).is_err());
    }
}
