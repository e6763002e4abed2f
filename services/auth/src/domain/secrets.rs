//! Secrets: random bearer tokens (256 bits), their stored form (SHA-256), and sealing with
//! XChaCha20-Poly1305, by the key-encryption key (signing keys) or by a key derived from a
//! refresh token (its successor pair, readable only by whoever holds that token).

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use chacha20poly1305::{
    KeyInit as _, XChaCha20Poly1305, XNonce,
    aead::{Aead as _, AeadCore as _, Payload},
};
use rand::{RngCore as _, rngs::OsRng};
use sha2::{Digest as _, Sha256};

/// A new bearer secret: 256 random bits, base64url (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored instead of a bearer secret: its SHA-256, base64url. A fast hash is enough
/// because the secrets are 256 random bits (nothing to brute-force), unlike passwords.
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// Sealing or opening failed: wrong key, tampered data, or not our format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed data could not be opened")]
pub struct SealError;

/// A 256-bit key-encryption key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Kek(XChaCha20Poly1305);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Kek {
    /// Parses a key given as base64 (standard or URL alphabet) of 32 bytes. The error never
    /// repeats the value.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| "the key-encryption key is not base64")?;
        if bytes.len() != 32 {
            return Err("the key-encryption key must be 32 bytes (base64 of 32 random bytes)");
        }
        Ok(Self(
            XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| "bad key length")?,
        ))
    }

    /// A fresh random key (tests, tools).
    pub fn generate() -> Self {
        Self(XChaCha20Poly1305::new(&XChaCha20Poly1305::generate_key(
            &mut OsRng,
        )))
    }

    /// Base64 of a fresh random key, for `make run` and operators.
    pub fn generate_text() -> String {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// Seals `plaintext`, bound to `context` (for example the key id it belongs to).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        seal(&self.0, plaintext, context)
    }

    /// Opens what [`Kek::seal`] sealed with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        open(&self.0, sealed, context)
    }
}

fn token_cipher(token: &str) -> XChaCha20Poly1305 {
    let key = Sha256::new()
        .chain_update(b"backbone refresh successor v1\0")
        .chain_update(token.as_bytes())
        .finalize();
    XChaCha20Poly1305::new(&key)
}

/// Seals `plaintext` with a key derived from `token` (which is never stored).
pub fn seal_for_token(token: &str, plaintext: &[u8]) -> String {
    seal(&token_cipher(token), plaintext, "refresh")
}

/// Opens what [`seal_for_token`] sealed for the same `token`.
pub fn open_with_token(token: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
    open(&token_cipher(token), sealed, "refresh")
}

fn seal(cipher: &XChaCha20Poly1305, plaintext: &[u8], context: &str) -> String {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let payload = Payload {
        msg: plaintext,
        aad: context.as_bytes(),
    };
    // Encryption with a valid key and nonce cannot fail; an empty result would fail to open.
    let ciphertext = cipher.encrypt(&nonce, payload).unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    URL_SAFE_NO_PAD.encode(out)
}

fn open(cipher: &XChaCha20Poly1305, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| SealError)?;
    if bytes.len() < 24 {
        return Err(SealError);
    }
    let (nonce, ciphertext) = bytes.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| SealError)?;
    let payload = Payload {
        msg: ciphertext,
        aad: context.as_bytes(),
    };
    cipher
        .decrypt(&XNonce::from(nonce), payload)
        .map_err(|_| SealError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_and_stored_hashed() {
        let token = random_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).map(|b| b.len()), Ok(32));
        assert_ne!(token, random_token());
        assert_eq!(token_hash(&token), token_hash(&token));
        assert!(!token_hash(&token).contains(&token));
    }

    #[test]
    fn sealing_binds_key_and_context() {
        let kek = Kek::generate();
        let sealed = kek.seal(b"private key", "kid-1");
        assert_eq!(kek.open(&sealed, "kid-1"), Ok(b"private key".to_vec()));
        assert_eq!(kek.open(&sealed, "kid-2"), Err(SealError));
        assert_eq!(Kek::generate().open(&sealed, "kid-1"), Err(SealError));
        let for_token = seal_for_token("token-a", b"pair");
        assert_eq!(open_with_token("token-a", &for_token), Ok(b"pair".to_vec()));
        assert_eq!(open_with_token("token-b", &for_token), Err(SealError));
    }

    #[test]
    fn keys_parse_from_base64_of_32_bytes_only() {
        assert!(Kek::parse(&Kek::generate_text()).is_ok());
        assert!(Kek::parse("c2hvcnQ=").is_err());
        assert!(Kek::parse("not base64 at all!").is_err());
        assert!(!format!("{:?}", Kek::generate()).contains("Kek(X"));
    }
}
