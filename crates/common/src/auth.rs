//! Access-token verification for every service. The auth service signs JWT access tokens with
//! Ed25519; every service (auth included) verifies them here against the auth service's JWKS:
//! fetched over gRPC, cached, refetched on an unknown `kid` at most once per
//! [`VerifierSettings::refetch_interval`]. Only EdDSA is accepted; `iss`, `aud`, `exp`, `nbf`
//! (with a small leeway) and the `typ` header are checked. A verified token is memoised until it
//! expires, so the hot path pays a hash lookup instead of an Ed25519 verification per call.
//!
//! [`AuthLayer`] reads `authorization: Bearer ...`, verifies it and puts the [`Principal`] into the
//! request; handlers then call [`require_role`] (or [`principal`]) in one line. A call without a
//! token goes through anonymously; a call with a bad token is refused with UNAUTHENTICATED before
//! it reaches a handler. Revocation is not checked here: a revoked session's access tokens keep
//! working until they expire (minutes), which is the price of verifying without a round trip.

use std::{
    collections::HashMap,
    future::{Future, Ready},
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use backbone_proto::auth::{Jwk, auth_service_client::AuthServiceClient};
use futures::future::Either;
use http::{HeaderMap, Request, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use crate::error::{self, KIT_ERROR_DOMAIN};

/// The JOSE `typ` of Backbone access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Any error a JWKS source may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a principal may do. Serialised in tokens as lowercase strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A signed-up user: their own profile, sessions, cart and orders.
    Customer,
    /// Operators: user administration, catalog writes, key rotation, audit.
    Admin,
    /// Service accounts: calls between services (stock reservations, ...).
    Service,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Customer, Role::Admin, Role::Service];

    /// The name used in tokens and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    /// Parses a name written by [`Role::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who signed in: a user (with a session) or a service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A person; the token belongs to a session.
    User,
    /// A service account (OAuth client credentials); no session.
    ServiceAccount,
}

/// The verified caller of a request, put into its extensions by [`AuthLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id or service-account (client) id: the token's `sub`.
    pub subject: String,
    /// User or service account.
    pub kind: PrincipalKind,
    /// Roles granted when the token was issued.
    pub roles: Vec<Role>,
    /// The session the token belongs to (users only).
    pub session_id: Option<String>,
    /// The token's `jti`.
    pub token_id: String,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Principal {
    /// True if the principal holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// `aud` is a string or an array of strings (RFC 7519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

/// The claims of a Backbone access token (the RFC 9068 profile plus `sid` and `roles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the auth service's configured issuer.
    pub iss: String,
    /// Audience: the Backbone deployment.
    pub aud: Audience,
    /// User id or service-account id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Unique token id.
    pub jti: String,
    /// Session id (user tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// OAuth client id (service-account tokens, where it equals `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or an `authorization` header that is not `Bearer <token>`.
    #[error("the access token is malformed")]
    Malformed,
    /// `exp` has passed (beyond the leeway).
    #[error("the access token has expired")]
    Expired,
    /// Well-formed but not acceptable: the reason says which check failed.
    #[error("the access token is not valid: {0}")]
    Invalid(&'static str),
    /// Signed by a key the auth service does not publish.
    #[error("the access token was signed by an unknown key")]
    UnknownKey,
    /// The auth service's keys could not be fetched.
    #[error("the token signing keys could not be fetched")]
    KeysUnavailable(#[source] BoxError),
}

impl From<&TokenError> for Status {
    fn from(err: &TokenError) -> Self {
        let reason = match err {
            TokenError::Malformed | TokenError::Invalid(_) => "INVALID_TOKEN",
            TokenError::Expired => "TOKEN_EXPIRED",
            TokenError::UnknownKey => "UNKNOWN_SIGNING_KEY",
            TokenError::KeysUnavailable(source) => {
                tracing::warn!(error = %error::SourceChain(source.as_ref()), "cannot fetch the JWKS");
                return error::unavailable(
                    "AUTH_UNAVAILABLE",
                    "the auth service's signing keys cannot be fetched; try again shortly",
                    Duration::from_secs(1),
                );
            }
        };
        error::business(
            KIT_ERROR_DOMAIN,
            Code::Unauthenticated,
            reason,
            err.to_string(),
            [],
        )
    }
}

/// The boxed future of [`JwksSource::fetch`].
pub type JwksFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Jwk>, BoxError>> + Send + 'a>>;

/// Where the verifier gets the public keys: the auth service over gRPC for other services, the
/// key store itself inside the auth service.
pub trait JwksSource: Send + Sync + 'static {
    /// The currently published keys.
    fn fetch(&self) -> JwksFuture<'_>;
}

/// Fetches the JWKS from the auth service's `GetJwks`.
#[derive(Debug, Clone)]
pub struct GrpcJwks {
    client: AuthServiceClient<crate::client::Channel>,
}

impl GrpcJwks {
    /// A source calling the auth service on `channel`.
    pub fn new(channel: crate::client::Channel) -> Self {
        Self {
            client: AuthServiceClient::new(channel),
        }
    }
}

impl JwksSource for GrpcJwks {
    fn fetch(&self) -> JwksFuture<'_> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let call = client.get_jwks(backbone_proto::auth::GetJwksRequest {});
            let response = tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .map_err(|_| "GetJwks timed out")??;
            Ok(response.into_inner().keys)
        })
    }
}

/// How tokens are checked.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// The expected `iss`.
    pub issuer: String,
    /// The expected `aud` (one of the token's audiences).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf` (at most 60 s).
    pub leeway: Duration,
    /// Least time between two JWKS fetches triggered by unknown key ids.
    pub refetch_interval: Duration,
    /// Most verified tokens remembered.
    pub memo_capacity: u64,
}

impl VerifierSettings {
    /// Settings for `issuer` and `audience` with the defaults for the rest.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(30),
            refetch_interval: Duration::from_secs(2),
            memo_capacity: 100_000,
        }
    }
}

/// When the JWKS was last fetched and whether that worked.
#[derive(Debug, Clone, Copy)]
struct LastFetch {
    at: Instant,
    ok: bool,
}

struct Inner {
    source: Box<dyn JwksSource>,
    validation: Validation,
    settings: VerifierSettings,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    fetch: tokio::sync::Mutex<Option<LastFetch>>,
    memo: moka::sync::Cache<[u8; 32], Arc<Principal>>,
    /// Tells this verifier's entries in [`RECENT`] from other verifiers' (tests run several
    /// services, each with its own verifier, in one process).
    id: u64,
}

/// Tokens a thread verified last, per thread, in front of the shared memo: a call bearing one of
/// them costs a comparison of the token's bytes, where the shared memo costs a SHA-256 of the
/// token and a concurrent-map lookup (about a tenth of a trivial call's CPU, make bench). A
/// service mostly sees the same few callers (other services' tokens, a client's session), so a
/// handful per thread is enough.
const RECENT_PER_THREAD: usize = 8;

/// One of a thread's [`RECENT`] tokens.
struct RecentToken {
    verifier: u64,
    token: Box<[u8]>,
    principal: Arc<Principal>,
}

thread_local! {
    /// This thread's recently verified tokens, most recent first.
    static RECENT: std::cell::RefCell<std::collections::VecDeque<RecentToken>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// Whether `a` and `b` are the same bytes, in a time that depends on their length only: no
/// early exit at the first difference, so how long a comparison takes tells a caller nothing
/// about how much of a valid token it has guessed (lengths are no secret).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Eight bytes at a time, then the rest.
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a_words
        .remainder()
        .iter()
        .zip(b_words.remainder())
        .fold(0, |differ, (x, y)| differ | u64::from(x ^ y));
    let word = |chunk: &[u8]| u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
    a_words
        .zip(b_words)
        .fold(tail, |differ, (x, y)| differ | (word(x) ^ word(y)))
        == 0
}

/// Hands every verifier its own [`Inner::id`].
static NEXT_VERIFIER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Verifies access tokens; cheap to clone (one shared key cache and memo).
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Memoised principals live until their token expires.
struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<Principal>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Principal>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.expires_at.saturating_sub(unix_now()),
        ))
    }
}

/// The shared memo's key of `token`: its SHA-256, so the memo holds 32 bytes per token however
/// long tokens are, and no token text.
fn memo_key(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenVerifier {
    /// A verifier that takes its keys from `source`.
    pub fn new(settings: VerifierSettings, source: impl JwksSource) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = settings.leeway.min(Duration::from_secs(60)).as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        let memo = moka::sync::Cache::builder()
            .max_capacity(settings.memo_capacity)
            .expire_after(UntilExpiry)
            .build();
        Self {
            inner: Arc::new(Inner {
                source: Box::new(source),
                validation,
                settings,
                keys: RwLock::new(HashMap::new()),
                fetch: tokio::sync::Mutex::new(None),
                memo,
                id: NEXT_VERIFIER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            }),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &VerifierSettings {
        &self.inner.settings
    }

    /// The principal of `token` if it was verified before and has not expired: no signature
    /// check, no waiting. [`Self::verify`] does the rest. Takes the token's bytes as they
    /// came (a header value need not be checked for UTF-8 first: only verified tokens match).
    pub fn memoised(&self, token: impl AsRef<[u8]>) -> Option<Arc<Principal>> {
        let token = token.as_ref();
        let now = unix_now();
        let recent = RECENT.with_borrow(|recent| {
            recent
                .iter()
                .find(|r| r.verifier == self.inner.id && same_bytes(&r.token, token))
                .map(|r| r.principal.clone())
        });
        if let Some(principal) = recent {
            return (principal.expires_at > now).then_some(principal);
        }
        let principal = self.inner.memo.get(&memo_key(token))?;
        if principal.expires_at <= now {
            return None;
        }
        self.remember_here(token, &principal);
        Some(principal)
    }

    /// Puts `token` first in this thread's [`RECENT`] tokens.
    fn remember_here(&self, token: &[u8], principal: &Arc<Principal>) {
        let now = unix_now();
        RECENT.with_borrow_mut(|recent| {
            // Expired tokens go now rather than when pushed out, and a token is listed once.
            recent.retain(|r| {
                r.principal.expires_at > now
                    && !(r.verifier == self.inner.id && same_bytes(&r.token, token))
            });
            recent.truncate(RECENT_PER_THREAD - 1);
            // A copy of its own: every call of the token clones and drops this `Arc`, and a
            // reference count shared by the threads would move between the cores each time.
            recent.push_front(RecentToken {
                verifier: self.inner.id,
                token: token.into(),
                principal: Arc::new(Principal::clone(principal)),
            });
        });
    }

    /// Verifies `token` and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        if let Some(principal) = self.memoised(token) {
            return Ok(principal);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid("only EdDSA-signed tokens are accepted"));
        }
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
                || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenError::Invalid("the token type is not at+jwt"));
        }
        let kid = header
            .kid
            .ok_or(TokenError::Invalid("the token names no key id"))?;
        let key = self.key(&kid).await?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &self.inner.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::Invalid("the signature does not verify"),
                ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience"),
                ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer"),
                ErrorKind::ImmatureSignature => TokenError::Invalid("the token is not valid yet"),
                ErrorKind::InvalidAlgorithm => {
                    TokenError::Invalid("only EdDSA-signed tokens are accepted")
                }
                ErrorKind::MissingRequiredClaim(_) => {
                    TokenError::Invalid("a required claim is missing")
                }
                _ => TokenError::Malformed,
            })?;
        let principal = Arc::new(principal_of(data.claims)?);
        let bytes = token.as_bytes();
        self.inner.memo.insert(memo_key(bytes), principal.clone());
        self.remember_here(bytes, &principal);
        Ok(principal)
    }

    /// The decoding key for `kid`, fetching the JWKS again when it is unknown. Fetches are at
    /// least `refetch_interval` apart: a caller that arrives sooner waits for the next fetch
    /// (shared by everyone waiting) rather than being refused, so tokens signed by a key that
    /// was just rotated in verify after a short delay, and a flood of made-up key ids costs one
    /// fetch per interval.
    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, TokenError> {
        let arrived = Instant::now();
        let interval = self.inner.settings.refetch_interval;
        loop {
            if let Some(key) = self.cached_key(kid) {
                return Ok(key);
            }
            let mut last = self.inner.fetch.lock().await;
            if let Some(key) = self.cached_key(kid) {
                return Ok(key);
            }
            if let Some(previous) = *last {
                if previous.at >= arrived {
                    // A fetch made after this call arrived did not know the key.
                    return Err(if previous.ok {
                        TokenError::UnknownKey
                    } else {
                        TokenError::KeysUnavailable("the JWKS fetch failed".into())
                    });
                }
                let since = previous.at.elapsed();
                if since < interval {
                    drop(last);
                    tokio::time::sleep(interval - since).await;
                    continue;
                }
            }
            let fetched = self.inner.source.fetch().await;
            *last = Some(LastFetch {
                at: Instant::now(),
                ok: fetched.is_ok(),
            });
            let keys = decoding_keys(&fetched.map_err(TokenError::KeysUnavailable)?);
            let found = keys.get(kid).cloned();
            if let Ok(mut cache) = self.inner.keys.write() {
                *cache = keys;
            }
            return found.ok_or(TokenError::UnknownKey);
        }
    }

    fn cached_key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.inner.keys.read().ok()?.get(kid).cloned()
    }
}

/// The usable Ed25519 signing keys of a JWKS, by key id; anything else is ignored.
fn decoding_keys(jwks: &[Jwk]) -> HashMap<String, Arc<DecodingKey>> {
    use base64::Engine as _;
    jwks.iter()
        .filter(|jwk| {
            jwk.kty == "OKP"
                && jwk.crv == "Ed25519"
                && (jwk.alg.is_empty() || jwk.alg == "EdDSA")
                && (jwk.r#use.is_empty() || jwk.r#use == "sig")
                && !jwk.kid.is_empty()
                && base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&jwk.x)
                    .is_ok_and(|x| x.len() == 32)
        })
        .filter_map(|jwk| {
            let key = DecodingKey::from_ed_components(&jwk.x).ok()?;
            Some((jwk.kid.clone(), Arc::new(key)))
        })
        .collect()
}

fn principal_of(claims: AccessClaims) -> Result<Principal, TokenError> {
    let roles = claims
        .roles
        .iter()
        .filter_map(|name| Role::parse(name))
        .collect();
    let kind = match (&claims.sid, &claims.client_id) {
        (Some(_), None) => PrincipalKind::User,
        (None, Some(client)) if *client == claims.sub => PrincipalKind::ServiceAccount,
        _ => return Err(TokenError::Invalid("neither a session nor a client token")),
    };
    Ok(Principal {
        subject: claims.sub,
        kind,
        roles,
        session_id: claims.sid,
        token_id: claims.jti,
        expires_at: claims.exp,
    })
}

/// The bearer token of an `authorization` header, if there is one, as the header's bytes: a
/// memoised token is found without checking them for UTF-8 (see [`TokenVerifier::memoised`]).
fn bearer(headers: &HeaderMap) -> Result<Option<&[u8]>, TokenError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.as_bytes();
    let space = value
        .iter()
        .position(|b| *b == b' ')
        .ok_or(TokenError::Malformed)?;
    let (scheme, token) = (&value[..space], value[space + 1..].trim_ascii());
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(Some(token))
}

/// The caller of `request`, or UNAUTHENTICATED (`TOKEN_REQUIRED`) for an anonymous call.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Arc<Principal>, Status> {
    optional_principal(request).ok_or_else(|| {
        error::business(
            KIT_ERROR_DOMAIN,
            Code::Unauthenticated,
            "TOKEN_REQUIRED",
            "this call needs an access token: send `authorization: Bearer <token>`",
            [],
        )
    })
}

/// The caller of `request`, if it sent a valid token.
pub fn optional_principal<T>(request: &tonic::Request<T>) -> Option<Arc<Principal>> {
    request.extensions().get::<Arc<Principal>>().cloned()
}

/// The caller if it holds `role`; UNAUTHENTICATED without a token, PERMISSION_DENIED
/// (`ROLE_REQUIRED`) without the role.
pub fn require_role<T>(request: &tonic::Request<T>, role: Role) -> Result<Arc<Principal>, Status> {
    require_any_role(request, &[role])
}

/// The caller if it holds one of `roles`; otherwise as [`require_role`].
pub fn require_any_role<T>(
    request: &tonic::Request<T>,
    roles: &[Role],
) -> Result<Arc<Principal>, Status> {
    let principal = principal(request)?;
    if roles.iter().any(|role| principal.has_role(*role)) {
        return Ok(principal);
    }
    let wanted = roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" or ");
    Err(error::business(
        KIT_ERROR_DOMAIN,
        Code::PermissionDenied,
        "ROLE_REQUIRED",
        format!("this call needs the {wanted} role"),
        [("role".to_owned(), wanted)],
    ))
}

/// Verifies the bearer token of calls to the listed services and puts the [`Principal`] into
/// the request's extensions. Without a verifier (or a token) calls pass through anonymously.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    /// Behind one reference count: tonic copies the whole layer stack for every call, and
    /// each `Arc` in it is a counter both cores write.
    shared: Arc<Guarded>,
}

#[derive(Debug)]
struct Guarded {
    verifier: Option<TokenVerifier>,
    services: Vec<&'static str>,
}

impl AuthLayer {
    /// Verifies tokens sent to `services` (health and reflection stay open).
    pub fn new(verifier: Option<TokenVerifier>, services: Vec<&'static str>) -> Self {
        Self {
            shared: Arc::new(Guarded { verifier, services }),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    layer: AuthLayer,
}

/// A call whose token was not verified before: verified here, then served.
type Verifying<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, B> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    /// The inner call as it is (anonymous, unguarded, or a memoised token), a refusal, or a
    /// verification: only the last one allocates.
    type Future =
        Either<S::Future, Either<Ready<Result<Response<Body>, S::Error>>, Verifying<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let shared = &self.layer.shared;
        let guarded = crate::trace::calls_any(request.uri().path(), &shared.services);
        let verifier = match &shared.verifier {
            Some(verifier) if guarded => verifier,
            _ => return Either::Left(self.inner.call(request)),
        };
        let refuse = |err: TokenError| {
            Either::Right(Either::Left(std::future::ready(Ok(
                Status::from(&err).into_http()
            ))))
        };
        let token = match bearer(request.headers()) {
            Ok(None) => return Either::Left(self.inner.call(request)),
            Ok(Some(token)) => token,
            Err(err) => return refuse(err),
        };
        // The common case, a token verified before: the call goes on at once.
        if let Some(principal) = verifier.memoised(token) {
            request.extensions_mut().insert(principal);
            return Either::Left(self.inner.call(request));
        }
        let Ok(token) = std::str::from_utf8(token).map(str::to_owned) else {
            return refuse(TokenError::Malformed);
        };
        let verifier = verifier.clone();
        // The clone that was driven to readiness serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Either::Right(Box::pin(async move {
            match verifier.verify(&token).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                }
                Err(err) => return Ok(Status::from(&err).into_http()),
            }
            inner.call(request).await
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bytes_compare_whole() {
        assert!(same_bytes(b"abc.def", b"abc.def"));
        assert!(!same_bytes(b"abc.def", b"abc.deg"));
        assert!(!same_bytes(b"xbc.def", b"abc.def"));
        assert!(!same_bytes(b"abc.def", b"abc.de"));
        assert!(same_bytes(b"", b""));
        let long = b"eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFZERTQSJ9.payload.signature";
        assert!(same_bytes(long, long));
        for at in [0, 7, 8, 30, long.len() - 1] {
            let mut altered = *long;
            altered[at] ^= 1;
            assert!(!same_bytes(long, &altered), "byte {at}");
        }
    }

    #[test]
    fn bearer_header_parsing() {
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer(&headers), Ok(None)));
        headers.insert(
            "authorization",
            "Bearer abc.def.ghi".parse().expect("header"),
        );
        assert_eq!(
            bearer(&headers).ok().flatten(),
            Some(b"abc.def.ghi".as_slice())
        );
        headers.insert("authorization", "bearer   xyz".parse().expect("header"));
        assert_eq!(bearer(&headers).ok().flatten(), Some(b"xyz".as_slice()));
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token"] {
            headers.insert("authorization", bad.parse().expect("header"));
            assert!(
                matches!(bearer(&headers), Err(TokenError::Malformed)),
                "{bad}"
            );
        }
    }

    /// Publishes one Ed25519 key and signs tokens with it.
    struct OneKey {
        der: Vec<u8>,
        jwk: Jwk,
    }

    impl OneKey {
        fn new() -> Self {
            use base64::Engine as _;
            use ed25519_dalek::pkcs8::EncodePrivateKey as _;
            let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
            let der = key.to_pkcs8_der().expect("der").as_bytes().to_vec();
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(key.verifying_key().as_bytes());
            let jwk = Jwk {
                kid: "k1".into(),
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x,
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            };
            Self { der, jwk }
        }

        fn sign(&self, audience: &str, expires_in: i64) -> String {
            let now = unix_now();
            let claims = AccessClaims {
                iss: "https://auth.test".into(),
                aud: Audience::One(audience.into()),
                sub: "u1".into(),
                exp: now.saturating_add_signed(expires_in),
                iat: now - 10,
                nbf: now - 10,
                jti: "j1".into(),
                sid: Some("s1".into()),
                client_id: None,
                roles: vec!["customer".into()],
            };
            let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
            header.kid = Some(self.jwk.kid.clone());
            header.typ = Some(ACCESS_TOKEN_TYPE.into());
            let key = jsonwebtoken::EncodingKey::from_ed_der(&self.der);
            jsonwebtoken::encode(&header, &claims, &key).expect("sign")
        }
    }

    struct Published(Jwk);

    impl JwksSource for Published {
        fn fetch(&self) -> JwksFuture<'_> {
            Box::pin(async move { Ok(vec![self.0.clone()]) })
        }
    }

    fn verifier(keys: &OneKey, audience: &str) -> TokenVerifier {
        let settings = VerifierSettings {
            leeway: Duration::ZERO,
            ..VerifierSettings::new("https://auth.test", audience)
        };
        TokenVerifier::new(settings, Published(keys.jwk.clone()))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_token_remembered_by_one_verifier_is_not_accepted_by_another() {
        let keys = OneKey::new();
        let shop = verifier(&keys, "shop");
        let other = verifier(&keys, "other");
        let token = keys.sign("shop", 600);
        assert!(
            shop.memoised(&token).is_none(),
            "nothing is remembered before"
        );
        assert_eq!(shop.verify(&token).await.expect("valid").subject, "u1");
        // Remembered on this thread now, and only for the verifier that checked it.
        assert!(shop.memoised(&token).is_some());
        assert!(other.memoised(&token).is_none());
        assert!(matches!(
            other.verify(&token).await,
            Err(TokenError::Invalid("wrong audience"))
        ));
        // A token differing in one byte of its signature is not the remembered one.
        let mut altered = token.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(shop.memoised(&altered).is_none());
        assert!(shop.verify(&altered).await.is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn remembered_tokens_stop_working_when_they_expire() {
        let keys = OneKey::new();
        let shop = verifier(&keys, "shop");
        let token = keys.sign("shop", 1);
        shop.verify(&token).await.expect("valid for a second");
        assert!(shop.memoised(&token).is_some());
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert!(shop.memoised(&token).is_none(), "expired");
        assert!(matches!(
            shop.verify(&token).await,
            Err(TokenError::Expired)
        ));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn each_thread_remembers_a_few_tokens_and_the_shared_memo_the_rest() {
        let keys = OneKey::new();
        let shop = verifier(&keys, "shop");
        let tokens: Vec<String> = (0..RECENT_PER_THREAD + 4)
            .map(|n| keys.sign("shop", 600 + i64::try_from(n).expect("small")))
            .collect();
        for token in &tokens {
            shop.verify(token).await.expect("valid");
        }
        let here = RECENT.with_borrow(|recent| {
            recent
                .iter()
                .filter(|r| r.verifier == shop.inner.id)
                .count()
        });
        assert_eq!(here, RECENT_PER_THREAD);
        // The oldest are no longer on this thread's list but still in the shared memo.
        for token in &tokens {
            assert!(shop.memoised(token).is_some());
        }
    }

    #[test]
    fn roles_round_trip_and_unknown_roles_are_dropped() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
