//! Helpers for tests that need accounts and tokens: the auth service's configuration with the
//! test key-encryption key, sign-up and login, administrators, bearer requests, error details,
//! and reading what the auth database holds (outbox messages, signing keys).

use std::time::Duration;

use backbone_auth::db::schema::{outbox, signing_keys};
use backbone_common::{config::DatabaseArgs, db::Database, db_run};
use backbone_proto::auth::{self as pb, auth_service_client::AuthServiceClient};
use diesel::{ExpressionMethods as _, QueryDsl as _};
use diesel_async::RunQueryDsl as _;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::TEST_KEY_ENCRYPTION_KEY;

/// A password the policy accepts.
pub const PASSWORD: &str = "violet kettle marches north 2049";

/// The auth client.
pub type AuthClient = AuthServiceClient<Channel>;

/// The auth service's configuration for tests: `database_url`, the test key-encryption key and
/// `extra` flags.
pub fn config(database_url: &str, extra: &[&str]) -> backbone_auth::config::Config {
    let mut args = vec![
        "backbone-auth",
        "--database-url",
        database_url,
        "--key-encryption-key",
        TEST_KEY_ENCRYPTION_KEY,
    ];
    args.extend_from_slice(extra);
    let cli: backbone_auth::config::Cli =
        backbone_common::config::try_parse_from("AUTH", args).expect("auth test flags parse");
    cli.config
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

/// Signs up `email` with [`PASSWORD`].
pub async fn sign_up(client: &mut AuthClient, email: &str) -> pb::User {
    client
        .sign_up(pb::SignUpRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: "Test User".into(),
        })
        .await
        .expect("sign up")
        .into_inner()
        .user
        .expect("user")
}

/// Logs in and returns the token pair.
pub async fn login(client: &mut AuthClient, email: &str, password: &str) -> pb::TokenPair {
    client
        .login(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
}

/// Signs up and logs in; returns the access token.
pub async fn customer(client: &mut AuthClient, email: &str) -> String {
    sign_up(client, email).await;
    login(client, email, PASSWORD).await.access_token
}

/// Creates an administrator with `create-admin` on `database_url` and logs in; returns the
/// access token.
pub async fn admin(client: &mut AuthClient, database_url: &str, email: &str) -> String {
    backbone_auth::create_admin(&config(database_url, &[]), email, None, PASSWORD)
        .await
        .expect("create-admin");
    login(client, email, PASSWORD).await.access_token
}

/// The `ErrorInfo.reason` of a status ("" when absent).
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// The field names of a status's `BadRequest` violations.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The types of the audit events about `subject`, newest first, listed by `admin`.
pub async fn audit_types(
    client: &mut AuthClient,
    admin: &str,
    subject: &str,
) -> Vec<pb::AuditEventType> {
    client
        .list_audit_events(bearer(
            pb::ListAuditEventsRequest {
                page_size: 500,
                subject_id: subject.into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("list audit events")
        .into_inner()
        .audit_events
        .iter()
        .map(|e| e.r#type())
        .collect()
}

/// The auth database, migrated and ready, for reading what the service stored.
pub async fn database(database_url: &str) -> Database {
    let args = DatabaseArgs {
        db_pool_size: 2,
        db_timeout: Duration::from_secs(5),
        db_read_connections: 2,
    };
    let database = Database::new(database_url, &args, backbone_auth::MIGRATIONS).expect("database");
    database.prepare().await.expect("migrated");
    database
}

/// The token at the end of the newest outbox message to `recipient`, waiting up to 5 s for it.
pub async fn outbox_token(database_url: &str, recipient: &str, subject: &str) -> String {
    let database = database(database_url).await;
    for _ in 0..100 {
        let mut conn = database.conn().await.expect("conn");
        let body: Option<String> = db_run!(&mut conn, |c| {
            outbox::table
                .filter(outbox::recipient.eq(recipient))
                .filter(outbox::subject.eq(subject))
                .order(outbox::id.desc())
                .select(outbox::body)
                .first(c)
                .await
                .ok()
        });
        if let Some(body) = body {
            return body
                .lines()
                .rev()
                .find(|line| !line.trim().is_empty())
                .expect("a token line")
                .trim()
                .to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {subject:?} message to {recipient} in the outbox");
}

/// The active signing key, unsealed with the test key-encryption key: its id and its PKCS#8
/// DER, for forging tokens that carry a real signature.
pub async fn active_signing_key(database_url: &str) -> (String, Vec<u8>) {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    let database = database(database_url).await;
    let mut conn = database.conn().await.expect("conn");
    let (kid, sealed): (String, String) = db_run!(&mut conn, |c| {
        signing_keys::table
            .filter(signing_keys::active.eq(true))
            .select((signing_keys::kid, signing_keys::private_key_sealed))
            .first(c)
            .await
            .expect("an active key")
    });
    let kek = backbone_auth::domain::secrets::Kek::parse(TEST_KEY_ENCRYPTION_KEY).expect("kek");
    let seed: [u8; 32] = kek
        .open(&sealed, &kid)
        .expect("unseal")
        .try_into()
        .expect("32 bytes");
    let der = ed25519_dalek::SigningKey::from_bytes(&seed)
        .to_pkcs8_der()
        .expect("pkcs8");
    (kid, der.as_bytes().to_vec())
}
