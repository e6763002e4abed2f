//! The token signing keys: Ed25519 key pairs stored in the auth database with the private half
//! sealed by the key-encryption key. The active key signs; retired keys stay published in the
//! JWKS long enough for every token they signed to expire. Replicas re-read the active key every
//! few seconds, so after a rotation they all move to the new key shortly.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use backbone_common::{
    auth::{ACCESS_TOKEN_TYPE, AccessClaims, BoxError, JwksFuture, JwksSource},
    db::Database,
};
use backbone_proto::auth::Jwk;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest as _, Sha256};

use crate::{
    db::{self, models::SigningKeyRow},
    domain::{self, secrets::Kek},
    error::AuthError,
};

/// How long a replica signs with the active key it read before reading it again.
const ACTIVE_KEY_REFRESH: Duration = Duration::from_secs(5);

/// The key new tokens are signed with.
pub struct ActiveKey {
    /// Key id, in the token header.
    pub kid: String,
    encoding: EncodingKey,
}

impl std::fmt::Debug for ActiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ActiveKey {
    /// Signs `claims` as an `at+jwt` access token.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|err| AuthError::Internal(format!("signing an access token failed: {err}")))
    }
}

struct Inner {
    database: Database,
    kek: Kek,
    /// Retired keys stay published this long (longest token lifetime plus slack).
    retention: Duration,
    cached: Mutex<Option<(Instant, Arc<ActiveKey>)>>,
}

/// The signing keys of this deployment. Cheap to clone.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Keys in `database`, sealed by `kek`; retired keys are published for `retention`.
    pub fn new(database: Database, kek: Kek, retention: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                database,
                kek,
                retention,
                cached: Mutex::new(None),
            }),
        }
    }

    /// The key to sign with now; creates the first key of a new deployment.
    pub async fn active(&self) -> Result<Arc<ActiveKey>, AuthError> {
        if let Ok(cached) = self.inner.cached.lock()
            && let Some((at, key)) = cached.as_ref()
            && at.elapsed() < ACTIVE_KEY_REFRESH
        {
            return Ok(key.clone());
        }
        let mut conn = self.inner.database.conn().await?;
        let row = match db::keys::active(&mut conn).await? {
            Some(row) => row,
            None => {
                let (row, _) = self.generate();
                if !db::keys::insert_first(&mut conn, &row).await? {
                    tracing::debug!("another replica created the first signing key");
                }
                db::keys::active(&mut conn).await?.ok_or_else(|| {
                    AuthError::Internal("no active signing key after creating one".into())
                })?
            }
        };
        let key = Arc::new(self.open(&row)?);
        if let Ok(mut cached) = self.inner.cached.lock() {
            *cached = Some((Instant::now(), key.clone()));
        }
        Ok(key)
    }

    /// Makes a new key active and retires the current one; `audit` is stored with it.
    pub async fn rotate(
        &self,
        audit: &db::models::AuditRow,
    ) -> Result<(Jwk, Option<String>), AuthError> {
        let (row, jwk) = self.generate();
        let mut conn = self.inner.database.conn().await?;
        let retired = db::keys::rotate(&mut conn, &row, domain::now(), audit).await?;
        if let Ok(mut cached) = self.inner.cached.lock() {
            *cached = None;
        }
        tracing::info!(kid = %row.kid, retired = ?retired, "signing key rotated");
        Ok((jwk, retired))
    }

    /// The public keys to publish: the active one and those retired within the retention.
    pub async fn jwks(&self) -> Result<Vec<Jwk>, AuthError> {
        // Make sure a new deployment has a key before anyone asks to verify with it.
        self.active().await?;
        let retention = chrono::Duration::from_std(self.inner.retention).unwrap_or_default();
        let cutoff = domain::now() - retention;
        let mut conn = self.inner.database.conn().await?;
        let rows = db::keys::published(&mut conn, cutoff).await?;
        Ok(rows
            .iter()
            .map(|row| jwk(&row.kid, &row.public_key))
            .collect())
    }

    /// A new key pair as a row (private half sealed) and its JWK.
    fn generate(&self) -> (SigningKeyRow, Jwk) {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let public = signing.verifying_key().to_bytes();
        let digest = Sha256::digest(public);
        let kid = URL_SAFE_NO_PAD.encode(&digest[..12]);
        let x = URL_SAFE_NO_PAD.encode(public);
        let sealed = self.inner.kek.seal(signing.as_bytes(), &kid);
        let row = SigningKeyRow {
            kid: kid.clone(),
            public_key: x.clone(),
            private_key_sealed: sealed,
            active: true,
            created_at: domain::now(),
            retired_at: None,
        };
        (row, jwk(&kid, &x))
    }

    fn open(&self, row: &SigningKeyRow) -> Result<ActiveKey, AuthError> {
        let seed = self
            .inner
            .kek
            .open(&row.private_key_sealed, &row.kid)
            .map_err(|_| {
                AuthError::Internal(format!(
                    "signing key {} cannot be unsealed: is the key-encryption key the one it was sealed with?",
                    row.kid
                ))
            })?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| AuthError::Internal(format!("signing key {} is corrupt", row.kid)))?;
        let der = SigningKey::from_bytes(&seed)
            .to_pkcs8_der()
            .map_err(|err| AuthError::Internal(format!("encoding signing key: {err}")))?;
        Ok(ActiveKey {
            kid: row.kid.clone(),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
        })
    }
}

fn jwk(kid: &str, x: &str) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: x.into(),
        kid: kid.into(),
        alg: "EdDSA".into(),
        r#use: "sig".into(),
    }
}

/// The auth service verifies its own tokens from its key store, without a network hop.
#[derive(Debug, Clone)]
pub struct LocalJwks(pub KeyStore);

impl JwksSource for LocalJwks {
    fn fetch(&self) -> JwksFuture<'_> {
        Box::pin(async move { self.0.jwks().await.map_err(|err| Box::new(err) as BoxError) })
    }
}
