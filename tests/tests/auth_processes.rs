//! The auth binary as operators and developers meet it: `create-admin` reading the password
//! from stdin, the README's grpcurl flow (sign up, log in, call with the token, refresh), and a
//! full scenario whose complete debug log holds no password, token, secret or key, and
//! `create-service-account` writing credentials that IssueServiceToken accepts.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use backbone_proto::auth as pb;
use backbone_tests::{
    Backend, Process, Svc, TEST_KEY_ENCRYPTION_KEY, TestDb,
    auth_support::{self, AuthClient, PASSWORD, bearer, login, sign_up},
    binary_path, channel,
    oidc_support::{OidcProvider, sign_in_at_provider},
    run_grpcurl, wait_ready,
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};

/// Runs `backbone-auth create-admin` on `database_url` with `password` on stdin.
fn create_admin(database_url: &str, email: &str, password: &str) -> (bool, String) {
    let mut child = Command::new(binary_path("backbone-auth"))
        .args([
            "create-admin",
            "--email",
            email,
            "--database-url",
            database_url,
            "--log-format",
            "json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn create-admin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let output = child.wait_with_output().expect("create-admin output");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn json_field(text: &str, field: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut current = &value;
    for part in field.split('.') {
        current = &current[part];
    }
    current
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_admin_and_the_readme_grpcurl_flow() {
    let db = TestDb::new(Backend::Sqlite).await;
    let process = Process::start(Svc::Auth, &db.url, &[]);
    let addr = process.addr.to_string();
    wait_ready(&channel(process.addr).await, Svc::Auth.grpc_name()).await;

    // The password comes from stdin, never argv; a weak one is refused with the reason.
    let (ok, said) = create_admin(&db.url, "root@example.com", "password");
    assert!(!ok, "{said}");
    assert!(said.contains("at least 12 characters"), "{said}");
    let (ok, said) = create_admin(&db.url, "root@example.com", PASSWORD);
    assert!(ok, "{said}");
    assert!(
        said.contains("created administrator root@example.com"),
        "{said}"
    );

    // The README's flow, with grpcurl: sign up, log in, call with the token, refresh.
    let service = "backbone.auth.v1.AuthService";
    let signup =
        format!(r#"{{"email":"dev@example.com","password":"{PASSWORD}","display_name":"Dev"}}"#);
    let (ok, out) = run_grpcurl(&[
        "-plaintext",
        "-d",
        &signup,
        &addr,
        &format!("{service}/SignUp"),
    ]);
    assert!(ok, "{out}");
    let login_body = format!(r#"{{"email":"dev@example.com","password":"{PASSWORD}"}}"#);
    let (ok, out) = run_grpcurl(&[
        "-plaintext",
        "-d",
        &login_body,
        &addr,
        &format!("{service}/Login"),
    ]);
    assert!(ok, "{out}");
    let access = json_field(&out, "tokens.accessToken");
    let refresh = json_field(&out, "tokens.refreshToken");
    let auth_header = format!("authorization: Bearer {access}");
    let (ok, out) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth_header,
        &addr,
        &format!("{service}/GetMe"),
    ]);
    assert!(ok, "{out}");
    assert_eq!(json_field(&out, "user.email"), "dev@example.com");
    let refresh_body = format!(r#"{{"refresh_token":"{refresh}"}}"#);
    let (ok, out) = run_grpcurl(&[
        "-plaintext",
        "-d",
        &refresh_body,
        &addr,
        &format!("{service}/RefreshSession"),
    ]);
    assert!(ok, "{out}");
    assert_ne!(json_field(&out, "tokens.refreshToken"), refresh);
    // Errors are readable: code, message and the ErrorInfo reason.
    let (ok, out) = run_grpcurl(&["-plaintext", &addr, &format!("{service}/GetMe")]);
    assert!(!ok);
    assert!(
        out.contains("Unauthenticated") && out.contains("TOKEN_REQUIRED"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scenario_logs_no_secret() {
    let db = TestDb::new(Backend::Sqlite).await;
    let provider = OidcProvider::start();
    let mut process = Process::start(
        Svc::Auth,
        &db.url,
        &[
            "--log-filter",
            "debug",
            "--refresh-reuse-grace",
            "0s",
            "--oidc-providers",
            &provider.providers_flag("local"),
        ],
    );
    let mut client = AuthClient::new(channel(process.addr).await);
    wait_ready(&channel(process.addr).await, Svc::Auth.grpc_name()).await;
    let mut secrets: Vec<(&str, String)> = vec![
        ("password", PASSWORD.to_owned()),
        ("key-encryption key", TEST_KEY_ENCRYPTION_KEY.to_owned()),
    ];

    sign_up(&mut client, "eve@example.com").await;
    let wrong = "definitely the wrong password";
    secrets.push(("wrong password", wrong.into()));
    assert!(
        client
            .login(pb::LoginRequest {
                email: "eve@example.com".into(),
                password: wrong.into()
            })
            .await
            .is_err()
    );
    let first = login(&mut client, "eve@example.com", PASSWORD).await;
    let second = client
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .tokens
        .expect("tokens");
    // Reuse (no grace here) logs a warning and revokes the session.
    assert!(
        client
            .refresh_session(pb::RefreshSessionRequest {
                refresh_token: first.refresh_token.clone()
            })
            .await
            .is_err()
    );
    secrets.extend([
        ("access token", first.access_token.clone()),
        ("refresh token", first.refresh_token.clone()),
        ("access token", second.access_token.clone()),
        ("refresh token", second.refresh_token.clone()),
    ]);

    let (ok, said) = create_admin(&db.url, "root@example.com", PASSWORD);
    assert!(ok, "{said}");
    assert!(
        !said.contains(PASSWORD),
        "create-admin printed the password"
    );
    let admin = login(&mut client, "root@example.com", PASSWORD).await;
    secrets.push(("access token", admin.access_token.clone()));
    let created = client
        .create_service_account(bearer(
            pb::CreateServiceAccountRequest {
                display_name: "billing".into(),
            },
            &admin.access_token,
        ))
        .await
        .expect("service account")
        .into_inner();
    let client_id = created.service_account.expect("account").id;
    let service = client
        .issue_service_token(pb::IssueServiceTokenRequest {
            client_id,
            client_secret: created.client_secret.clone(),
        })
        .await
        .expect("service token")
        .into_inner();
    secrets.extend([
        ("client secret", created.client_secret),
        ("service token", service.access_token),
    ]);
    client
        .rotate_signing_key(bearer(pb::RotateSigningKeyRequest {}, &admin.access_token))
        .await
        .expect("rotate");

    let eve = login(&mut client, "eve@example.com", PASSWORD).await;
    secrets.push(("access token", eve.access_token.clone()));
    client
        .request_email_verification(bearer(
            pb::RequestEmailVerificationRequest {},
            &eve.access_token,
        ))
        .await
        .expect("verification");
    let verification =
        auth_support::outbox_token(&db.url, "eve@example.com", "Verify your email address").await;
    client
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: "eve@example.com".into(),
        })
        .await
        .expect("reset request");
    let reset = auth_support::outbox_token(&db.url, "eve@example.com", "Reset your password").await;
    let new_password = "saffron glacier hums quietly 8";
    client
        .reset_password(pb::ResetPasswordRequest {
            token: reset.clone(),
            new_password: new_password.into(),
        })
        .await
        .expect("reset");
    secrets.extend([
        ("verification token", verification),
        ("reset token", reset),
        ("new password", new_password.into()),
    ]);
    // Social sign-up through a real provider.
    let started = client
        .start_social_login(pb::StartSocialLoginRequest {
            provider: "local".into(),
            intent: pb::SocialLoginIntent::SignIn as i32,
        })
        .await
        .expect("start social login")
        .into_inner();
    let callback = sign_in_at_provider(&started.authorization_url, "zoe@example.com").await;
    let social = client
        .complete_social_login(pb::CompleteSocialLoginRequest {
            state: callback.state.clone(),
            code: callback.code.clone(),
        })
        .await
        .expect("social login")
        .into_inner()
        .tokens
        .expect("tokens");
    secrets.extend([
        ("OIDC client secret", provider.client_secret.clone()),
        ("authorization code", callback.code),
        ("social-login state", callback.state),
        ("access token", social.access_token),
        ("refresh token", social.refresh_token),
    ]);
    let (_, key_der) = auth_support::active_signing_key(&db.url).await;
    let seed = &key_der[key_der.len() - 32..];
    secrets.extend([
        ("private key", URL_SAFE_NO_PAD.encode(seed)),
        ("private key", STANDARD.encode(seed)),
        (
            "private key",
            seed.iter().map(|b| format!("{b:02x}")).collect(),
        ),
    ]);

    process.terminate();
    assert_eq!(process.wait_exit(Duration::from_secs(30)), Some(0));
    let logs = process.logs();
    assert!(
        logs.lines().count() > 20,
        "the scenario was logged at debug level:\n{logs}"
    );
    assert!(logs.contains("refresh token reuse detected"), "{logs}");
    for (what, secret) in &secrets {
        assert!(!logs.contains(secret.as_str()), "the log contains a {what}");
    }
}

/// Runs `backbone-auth create-service-account` on `database_url`; returns success and stdout.
fn create_service_account(database_url: &str, secret_file: &std::path::Path) -> (bool, String) {
    let output = Command::new(binary_path("backbone-auth"))
        .args([
            "create-service-account",
            "--display-name",
            "billing",
            "--secret-file",
        ])
        .arg(secret_file)
        .args(["--database-url", database_url, "--log-format", "json"])
        .output()
        .expect("run create-service-account");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_service_account_gives_credentials_that_issue_a_service_token() {
    use std::os::unix::fs::PermissionsExt as _;
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("billing-client-secret");

    // Before the service ever ran: it migrates, prints the id, writes the secret 0600.
    let (ok, said) = create_service_account(&db.url, &secret_file);
    assert!(ok, "{said}");
    let client_id = said.lines().next().expect("client id").trim().to_owned();
    let secret = std::fs::read_to_string(&secret_file).expect("secret file");
    assert!(!said.contains(&secret), "the secret is not printed");
    let mode = std::fs::metadata(&secret_file)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // An existing secret file is never overwritten, and no account is made.
    let (ok, said) = create_service_account(&db.url, &secret_file);
    assert!(!ok && said.contains("never overwritten"), "{said}");
    assert_eq!(
        std::fs::read_to_string(&secret_file).expect("secret file"),
        secret
    );

    let process = Process::start(Svc::Auth, &db.url, &[]);
    let channel = channel(process.addr).await;
    wait_ready(&channel, Svc::Auth.grpc_name()).await;
    let mut client = AuthClient::new(channel);
    let token = client
        .issue_service_token(pb::IssueServiceTokenRequest {
            client_id,
            client_secret: secret,
        })
        .await
        .expect("a service token for the new account")
        .into_inner();
    assert_eq!(token.token_type, "Bearer");
    assert!(!token.access_token.is_empty());
}
