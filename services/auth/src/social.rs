//! OpenID Connect providers for social login, through the `openidconnect` crate: configuration,
//! discovery (the provider's metadata and JWKS, cached and refetched when a token names a key
//! the cache lacks), authorization URLs with PKCE S256, code exchange and ID-token validation
//! (signature with an algorithm the provider advertises, `iss`, `aud`, `exp`, `nonce`).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse as _,
    core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata},
    reqwest,
};
use serde::Deserialize;
use tokio::sync::Mutex;

/// How long discovered metadata and keys are used before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Shortest time between two fetches caused by an ID token signed with an unknown key.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Time limit of each HTTP call to a provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One provider as configured (an element of the `--oidc-providers` JSON array). `Debug` hides
/// the client secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name clients pass to StartSocialLogin, e.g. "google": 1 to 32 of `a-z`, `0-9`, `-`.
    pub name: String,
    /// Issuer URL; `<issuer>/.well-known/openid-configuration` must serve its metadata.
    pub issuer: String,
    /// OAuth client id registered at the provider.
    pub client_id: String,
    /// OAuth client secret (prefer `client_secret_file`).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// File holding the client secret (a mounted Kubernetes Secret); wins over `client_secret`.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Redirect URI registered at the provider: the client app's page that receives `code` and
    /// `state` and passes them to CompleteSocialLogin or LinkSocialIdentity.
    pub redirect_uri: String,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// A provider ready to use: its checked settings and its cached metadata.
struct Provider {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    redirect_uri: RedirectUrl,
    cache: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

/// What a provider vouches for about the person who signed in, from a validated ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The provider's stable subject id (`sub`).
    pub subject: String,
    /// The email address, if the provider shared it.
    pub email: Option<String>,
    /// Whether the provider says the email is verified.
    pub email_verified: bool,
    /// The person's name, if shared.
    pub name: Option<String>,
}

/// Why a social-login step with a provider failed. Messages never hold codes or tokens.
#[derive(Debug, thiserror::Error)]
pub enum SocialError {
    /// No provider has this name.
    #[error("unknown provider")]
    UnknownProvider,
    /// The provider could not be reached or answered nonsense.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the authorization code (used, expired, or for another client).
    #[error("the provider refused the authorization code ({0})")]
    CodeRejected(String),
    /// The ID token did not validate.
    #[error("the provider's ID token is invalid: {0}")]
    InvalidIdToken(String),
}

/// The configured providers and the HTTP client that talks to them. Cheap to clone.
#[derive(Clone)]
pub struct Providers {
    http: reqwest::Client,
    by_name: Arc<BTreeMap<String, Provider>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

/// Parses the `--oidc-providers` JSON array (reading secret files); the error never shows a
/// secret.
pub fn parse_config(json: &str) -> Result<Vec<ProviderConfig>, String> {
    let json = json.trim();
    if json.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json).map_err(|err| {
        // serde's message can quote the offending value; say only where it is.
        format!(
            "--oidc-providers is not a JSON array of providers (line {}, column {}): \
             each needs name, issuer, client_id, redirect_uri and client_secret or \
             client_secret_file",
            err.line(),
            err.column()
        )
    })
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "OIDC provider name {name:?} must be 1 to 32 of a-z, 0-9 and -"
        ))
    }
}

impl Providers {
    /// Checks the configured providers. Nothing is fetched yet: discovery happens on first use,
    /// so a provider that is down does not stop the service from starting.
    pub fn new(configs: Vec<ProviderConfig>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // Following redirects would let a provider point us anywhere (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT / 2)
            .build()
            .map_err(|err| format!("cannot build the OIDC HTTP client: {err}"))?;
        let mut by_name = BTreeMap::new();
        for config in configs {
            check_name(&config.name)?;
            let name = config.name.clone();
            let secret = match (&config.client_secret_file, &config.client_secret) {
                (Some(path), _) => std::fs::read_to_string(path)
                    .map_err(|err| {
                        format!(
                            "OIDC provider {name}: cannot read client_secret_file {}: {err}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned(),
                (None, Some(secret)) => secret.clone(),
                (None, None) => {
                    return Err(format!(
                        "OIDC provider {name}: set client_secret_file or client_secret"
                    ));
                }
            };
            let issuer = IssuerUrl::new(config.issuer.clone())
                .map_err(|err| format!("OIDC provider {name}: issuer is not a URL: {err}"))?;
            let redirect_uri = RedirectUrl::new(config.redirect_uri.clone())
                .map_err(|err| format!("OIDC provider {name}: redirect_uri is not a URL: {err}"))?;
            let provider = Provider {
                issuer,
                client_id: ClientId::new(config.client_id),
                client_secret: ClientSecret::new(secret),
                redirect_uri,
                cache: Mutex::new(None),
            };
            if by_name.insert(name.clone(), provider).is_some() {
                return Err(format!("OIDC provider {name} is configured twice"));
            }
        }
        Ok(Self {
            http,
            by_name: Arc::new(by_name),
        })
    }

    /// True if a provider has this name.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn provider(&self, name: &str) -> Result<&Provider, SocialError> {
        self.by_name.get(name).ok_or(SocialError::UnknownProvider)
    }

    /// The provider's metadata and keys: cached, or fetched when older than an hour or when
    /// `refetch` asks for it (at most once per [`MIN_REFETCH`]).
    async fn metadata(
        &self,
        provider: &Provider,
        refetch: bool,
    ) -> Result<CoreProviderMetadata, SocialError> {
        let mut cache = provider.cache.lock().await;
        if let Some((fetched, metadata)) = cache.as_ref() {
            let age = fetched.elapsed();
            if age < METADATA_TTL && !(refetch && age >= MIN_REFETCH) {
                return Ok(metadata.clone());
            }
        }
        let metadata = CoreProviderMetadata::discover_async(provider.issuer.clone(), &self.http)
            .await
            .map_err(|err| {
                tracing::warn!(issuer = %provider.issuer.as_str(), error = %err, "OIDC discovery failed");
                SocialError::Unavailable(format!("discovery failed: {err}"))
            })?;
        *cache = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    fn client(
        provider: &Provider,
        metadata: CoreProviderMetadata,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            metadata,
            provider.client_id.clone(),
            Some(provider.client_secret.clone()),
        )
        .set_redirect_uri(provider.redirect_uri.clone())
    }

    /// The URL that sends the browser to the provider, carrying `state`, `nonce`, scope
    /// "openid email profile" and a fresh PKCE S256 challenge; returns it with the PKCE
    /// verifier to keep server-side.
    pub async fn authorization_url(
        &self,
        name: &str,
        state: &str,
        nonce: &str,
    ) -> Result<(String, String), SocialError> {
        let provider = self.provider(name)?;
        let client = Self::client(provider, self.metadata(provider, false).await?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let (url, _, _) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok((url.into(), verifier.into_secret()))
    }

    /// Exchanges an authorization code (with the flow's PKCE verifier) and validates the ID
    /// token against the flow's nonce.
    pub async fn exchange(
        &self,
        name: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<VerifiedIdentity, SocialError> {
        let provider = self.provider(name)?;
        let client = Self::client(provider, self.metadata(provider, false).await?);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|err| SocialError::Unavailable(format!("no token endpoint: {err}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|err| match err {
                RequestTokenError::ServerResponse(answer) => {
                    SocialError::CodeRejected(answer.error().to_string())
                }
                // Never the body: it could hold tokens.
                RequestTokenError::Parse(_, _) => {
                    SocialError::Unavailable("unreadable token response".into())
                }
                RequestTokenError::Request(err) => {
                    SocialError::Unavailable(format!("token request failed: {err}"))
                }
                RequestTokenError::Other(message) => SocialError::Unavailable(message),
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| SocialError::InvalidIdToken("the token response has none".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let verified = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider rotated its keys since we fetched them: fetch again, once.
                let fresh = Self::client(provider, self.metadata(provider, true).await?);
                id_token.claims(&fresh.id_token_verifier(), &nonce).cloned()
            }
            other => other.cloned(),
        }
        .map_err(|err| SocialError::InvalidIdToken(verification_reason(&err).into()))?;
        Ok(VerifiedIdentity {
            subject: verified.subject().to_string(),
            email: verified.email().map(|email| email.to_string()),
            email_verified: verified.email_verified().unwrap_or(false),
            name: verified
                .name()
                .and_then(|name| name.get(None))
                .map(|name| name.to_string()),
        })
    }
}

/// A short, value-free description of an ID-token check that failed.
fn verification_reason(err: &ClaimsVerificationError) -> &'static str {
    match err {
        ClaimsVerificationError::Expired(_) => "expired",
        ClaimsVerificationError::InvalidAudience(_) => "wrong audience",
        ClaimsVerificationError::InvalidIssuer(_) => "wrong issuer",
        ClaimsVerificationError::InvalidNonce(_) => "wrong nonce",
        ClaimsVerificationError::SignatureVerification(_) => "bad signature",
        ClaimsVerificationError::InvalidSubject(_) => "bad subject",
        _ => "rejected",
    }
}
