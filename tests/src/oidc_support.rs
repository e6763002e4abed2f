//! A real OpenID Connect provider for social-login tests: panva's `oidc-provider` from npm
//! (`tests/oidc/provider.mjs`), started with node as a child process, and a browser stand-in
//! that follows its redirects with a cookie jar until they reach the redirect URI.

use std::{
    io::BufRead as _,
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::Once,
    time::Duration,
};

/// The provider's client id.
pub const CLIENT_ID: &str = "backbone-tests";
/// Where the provider sends the browser back (nothing listens there; the browser stand-in stops
/// when a redirect points at it).
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/social/callback";

/// A running provider; killed when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    /// Its issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
    /// The client secret it was started with (unique per provider, so log checks can look
    /// for it).
    pub client_secret: String,
    child: Child,
    // Held open: the provider exits when its stdin closes, so it never outlives the test.
    _stdin: Option<ChildStdin>,
}

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Installs the provider's npm packages once (`make test` does it too).
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if oidc_dir().join("node_modules/oidc-provider").is_dir() {
            return;
        }
        let status = Command::new("npm")
            .args([
                "ci",
                "--prefer-offline",
                "--no-audit",
                "--no-fund",
                "--prefix",
            ])
            .arg(oidc_dir())
            .stdout(Stdio::null())
            .status()
            .expect("run npm (Node.js is needed for the social-login tests)");
        assert!(status.success(), "npm ci --prefix tests/oidc failed");
    });
}

impl OidcProvider {
    /// Starts a provider with one confidential client ([`CLIENT_ID`], a fresh secret,
    /// [`REDIRECT_URI`]) and waits until it listens.
    pub fn start() -> Self {
        install();
        let client_secret = format!("oidc-secret-{}", uuid::Uuid::now_v7().simple());
        let mut child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", &client_secret)
            .env("OIDC_REDIRECT_URI", REDIRECT_URI)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node tests/oidc/provider.mjs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("provider stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining: a closed pipe would kill the provider at its next write.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the OIDC provider did not start within 30 s");
        let issuer = line
            .trim()
            .strip_prefix("OIDC_ISSUER=")
            .unwrap_or_else(|| panic!("unexpected first line from the provider: {line:?}"))
            .to_owned();
        Self {
            issuer,
            client_secret,
            child,
            _stdin: stdin,
        }
    }

    /// The auth service's `--oidc-providers` value naming this provider `name`.
    pub fn providers_flag(&self, name: &str) -> String {
        serde_json::json!([{
            "name": name,
            "issuer": self.issuer,
            "client_id": CLIENT_ID,
            "client_secret": self.client_secret,
            "redirect_uri": REDIRECT_URI,
        }])
        .to_string()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the provider sent back to the redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// The authorization code.
    pub code: String,
    /// The state, as the provider echoed it.
    pub state: String,
}

/// Plays the user's browser: opens `authorization_url` as the person `email` (passed to the
/// test provider as `login_hint`), follows redirects with a cookie jar, and returns the code
/// and state of the redirect to [`REDIRECT_URI`].
pub async fn sign_in_at_provider(authorization_url: &str, email: &str) -> Callback {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let mut url = url::Url::parse(authorization_url).expect("authorization URL");
    url.query_pairs_mut().append_pair("login_hint", email);
    for _ in 0..10 {
        let response = browser
            .get(url.clone())
            .send()
            .await
            .expect("provider answers");
        assert!(
            response.status().is_redirection(),
            "the provider answered {} at {url}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        let location = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .expect("redirect location");
        url = url.join(location).expect("redirect URL");
        if url.as_str().starts_with(REDIRECT_URI) {
            let param = |name: &str| {
                url.query_pairs()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.into_owned())
            };
            if let Some(error) = param("error") {
                panic!(
                    "the provider refused: {error}: {}",
                    param("error_description").unwrap_or_default()
                );
            }
            return Callback {
                code: param("code").expect("code"),
                state: param("state").expect("state"),
            };
        }
    }
    panic!("the provider did not redirect back within 10 hops");
}
