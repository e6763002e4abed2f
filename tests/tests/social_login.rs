//! Social login end to end, on SQLite and PostgreSQL, against a real OpenID Connect provider
//! (npm `oidc-provider`, started with node): sign-up and sign-in through the provider, the
//! single-use state, the rule that an existing account is never linked by email alone, explicit
//! linking, and the error paths.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use backbone_auth::db::schema::social_login_states;
use backbone_common::db_run;
use backbone_proto::auth as pb;
use backbone_tests::{
    InProcess, Svc, TestDb,
    auth_support::{
        self, AuthClient, PASSWORD, admin, audit_types, bearer, customer, login, reason, sign_up,
        violated_fields,
    },
    oidc_support::{Callback, OidcProvider, REDIRECT_URI, sign_in_at_provider},
    on_both_backends, wait_ready,
};
use diesel::ExpressionMethods as _;
use diesel_async::RunQueryDsl as _;
use tonic::Code;

/// The provider name the tests configure.
const PROVIDER: &str = "local";

async fn start(db: &TestDb, provider: &OidcProvider) -> (InProcess, AuthClient) {
    let flag = provider.providers_flag(PROVIDER);
    let server = InProcess::start_auth(&db.url, &["--oidc-providers", &flag]).await;
    let channel = server.channel().await;
    wait_ready(&channel, Svc::Auth.grpc_name()).await;
    (server, AuthClient::new(channel))
}

/// StartSocialLogin, anonymous (sign-in) or with `token` (link).
async fn start_flow(
    client: &mut AuthClient,
    token: Option<&str>,
) -> Result<pb::StartSocialLoginResponse, tonic::Status> {
    let request = pb::StartSocialLoginRequest {
        provider: PROVIDER.into(),
        intent: if token.is_some() {
            pb::SocialLoginIntent::Link
        } else {
            pb::SocialLoginIntent::SignIn
        } as i32,
    };
    let request = match token {
        Some(token) => bearer(request, token),
        None => tonic::Request::new(request),
    };
    client
        .start_social_login(request)
        .await
        .map(|r| r.into_inner())
}

/// A sign-in flow up to the provider's redirect back, as `email`.
async fn through_provider(client: &mut AuthClient, token: Option<&str>, email: &str) -> Callback {
    let started = start_flow(client, token).await.expect("start social login");
    let callback = sign_in_at_provider(&started.authorization_url, email).await;
    assert_eq!(
        callback.state, started.state,
        "the provider echoes our state"
    );
    callback
}

async fn complete(
    client: &mut AuthClient,
    callback: &Callback,
) -> Result<pb::CompleteSocialLoginResponse, tonic::Status> {
    client
        .complete_social_login(pb::CompleteSocialLoginRequest {
            state: callback.state.clone(),
            code: callback.code.clone(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn link(
    client: &mut AuthClient,
    token: &str,
    callback: &Callback,
) -> Result<pb::User, tonic::Status> {
    client
        .link_social_identity(bearer(
            pb::LinkSocialIdentityRequest {
                state: callback.state.clone(),
                code: callback.code.clone(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn me(client: &mut AuthClient, token: &str) -> pb::User {
    client
        .get_me(bearer(pb::GetMeRequest {}, token))
        .await
        .expect("get me")
        .into_inner()
        .user
        .expect("user")
}

fn identities(user: &pb::User) -> Vec<(String, String, String)> {
    user.social_identities
        .iter()
        .map(|i| (i.provider.clone(), i.subject.clone(), i.email.clone()))
        .collect()
}

on_both_backends! {
    async fn a_new_person_signs_up_and_then_signs_in_through_the_provider(backend: Backend) {
        let provider = OidcProvider::start();
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &provider).await;

        // The authorization URL carries everything the flow needs, PKCE S256 included.
        let started = start_flow(&mut client, None).await.expect("start");
        let url = url::Url::parse(&started.authorization_url).expect("url");
        let params: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert!(started.authorization_url.starts_with(&provider.issuer));
        assert_eq!(params["client_id"], backbone_tests::oidc_support::CLIENT_ID);
        assert_eq!(params["redirect_uri"], REDIRECT_URI);
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["state"], started.state);
        assert_eq!(params["code_challenge_method"], "S256");
        assert!(params["scope"].split(' ').collect::<Vec<_>>().contains(&"email"));
        assert!(params["nonce"].len() >= 32 && params["code_challenge"].len() == 43);
        let expires = started.expire_time.expect("expire time").seconds - chrono::Utc::now().timestamp();
        assert!((590..=600).contains(&expires), "the state lives ten minutes, not {expires} s");

        // First visit: a new account, verified by the provider, with no password.
        let callback = sign_in_at_provider(&started.authorization_url, "ada@example.com").await;
        let done = complete(&mut client, &callback).await.expect("complete");
        assert!(done.user_created);
        let user = done.user.expect("user");
        assert_eq!((user.email.as_str(), user.display_name.as_str()), ("ada@example.com", "ada"));
        assert!(user.email_verified && !user.has_password);
        assert_eq!(user.roles, vec![pb::Role::Customer as i32]);
        let expected = vec![(PROVIDER.to_owned(), "sub-ada@example.com".to_owned(), "ada@example.com".to_owned())];
        assert_eq!(identities(&user), expected);
        let tokens = done.tokens.expect("tokens");
        let mine = me(&mut client, &tokens.access_token).await;
        assert_eq!((mine.id.as_str(), identities(&mine)), (user.id.as_str(), expected.clone()));

        // The state is single use.
        let again = complete(&mut client, &callback).await.expect_err("state used");
        assert_eq!((again.code(), reason(&again).as_str()), (Code::InvalidArgument, "INVALID_STATE"));

        // Second visit: the same account, a new session.
        let callback = through_provider(&mut client, None, "ada@example.com").await;
        let second = complete(&mut client, &callback).await.expect("sign in");
        assert!(!second.user_created);
        assert_eq!(second.user.expect("user").id, user.id);
        assert_ne!(second.tokens.expect("tokens").session_id, tokens.session_id);

        let admin_token = admin(&mut client, &db.url, "root@example.com").await;
        let audit = audit_types(&mut client, &admin_token, &user.id).await;
        assert_eq!(audit.iter().filter(|t| **t == pb::AuditEventType::SocialLoginSucceeded).count(), 2);
        assert_eq!(audit.iter().filter(|t| **t == pb::AuditEventType::SignUp).count(), 1);

        // A password change is refused: the account has no password.
        let no_password = client
            .change_password(bearer(
                pb::ChangePasswordRequest { current_password: "x".repeat(12), new_password: "a quiet orange lantern 88".into() },
                &tokens.access_token,
            ))
            .await
            .expect_err("no password");
        assert_eq!(reason(&no_password), "NO_PASSWORD_SET");
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn an_existing_account_is_linked_only_by_its_signed_in_owner(backend: Backend) {
        let provider = OidcProvider::start();
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &provider).await;
        sign_up(&mut client, "Grace@Example.com").await;

        // Same email at the provider: never linked automatically, and nothing is created.
        let callback = through_provider(&mut client, None, "grace@example.com").await;
        let refused = complete(&mut client, &callback).await.expect_err("link required");
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::FailedPrecondition, "ACCOUNT_EXISTS_LINK_REQUIRED")
        );
        assert!(refused.message().contains("LinkSocialIdentity"), "{}", refused.message());

        // Linking needs a signed-in user.
        let anonymous = client
            .start_social_login(pb::StartSocialLoginRequest { provider: PROVIDER.into(), intent: pb::SocialLoginIntent::Link as i32 })
            .await
            .expect_err("needs a token");
        assert_eq!(anonymous.code(), Code::Unauthenticated);

        // Grace signs in with her password and links.
        let grace = login(&mut client, "grace@example.com", PASSWORD).await.access_token;
        let bob = customer(&mut client, "bob@example.com").await;
        let callback = through_provider(&mut client, Some(&grace), "grace@example.com").await;
        // A link state cannot finish a sign-in, and is not used up by trying.
        let wrong_call = complete(&mut client, &callback).await.expect_err("wrong call");
        assert_eq!(reason(&wrong_call), "INVALID_STATE");
        assert!(wrong_call.message().contains("LinkSocialIdentity"));
        // Nor can another user finish it.
        let stolen = link(&mut client, &bob, &callback).await.expect_err("not bob's flow");
        assert_eq!((stolen.code(), reason(&stolen).as_str()), (Code::PermissionDenied, "STATE_OF_ANOTHER_USER"));
        let linked = link(&mut client, &grace, &callback).await.expect("link");
        assert_eq!(
            identities(&linked),
            vec![(PROVIDER.to_owned(), "sub-grace@example.com".to_owned(), "grace@example.com".to_owned())]
        );
        assert!(linked.has_password);

        // From now on the provider signs Grace in to her account.
        let callback = through_provider(&mut client, None, "grace@example.com").await;
        let signed_in = complete(&mut client, &callback).await.expect("sign in");
        assert!(!signed_in.user_created);
        assert_eq!(signed_in.user.expect("user").id, linked.id);

        // Bob cannot take Grace's provider identity.
        let callback = through_provider(&mut client, Some(&bob), "grace@example.com").await;
        let taken = link(&mut client, &bob, &callback).await.expect_err("linked elsewhere");
        assert_eq!((taken.code(), reason(&taken).as_str()), (Code::AlreadyExists, "IDENTITY_ALREADY_LINKED"));

        let admin_token = admin(&mut client, &db.url, "root@example.com").await;
        let audit = audit_types(&mut client, &admin_token, &linked.id).await;
        assert!(audit.contains(&pb::AuditEventType::SocialIdentityLinked));
        assert!(audit.contains(&pb::AuditEventType::SocialLoginSucceeded));
        // GetUser shows the identity to administrators too.
        let seen = client
            .get_user(bearer(pb::GetUserRequest { user_id: linked.id.clone() }, &admin_token))
            .await
            .expect("get user")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(identities(&seen), identities(&linked));
        // So does the answer to a password login (read with the account, before the check).
        let answer = client
            .login(pb::LoginRequest { email: "grace@example.com".into(), password: PASSWORD.into() })
            .await
            .expect("password login")
            .into_inner();
        assert_eq!(identities(&answer.user.expect("user")), identities(&linked));
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn bad_social_login_requests_get_clear_errors(backend: Backend) {
        let provider = OidcProvider::start();
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &provider).await;

        let unknown = client
            .start_social_login(pb::StartSocialLoginRequest { provider: "myspace".into(), intent: 0 })
            .await
            .expect_err("unknown provider");
        assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "PROVIDER_NOT_FOUND"));
        let empty = client
            .start_social_login(pb::StartSocialLoginRequest::default())
            .await
            .expect_err("no provider");
        assert_eq!(violated_fields(&empty), vec!["provider"]);
        let missing = client
            .complete_social_login(pb::CompleteSocialLoginRequest::default())
            .await
            .expect_err("nothing sent");
        assert_eq!(violated_fields(&missing), vec!["state", "code"]);
        let forged = complete(&mut client, &Callback { code: "code".into(), state: "made-up".into() })
            .await
            .expect_err("unknown state");
        assert_eq!(reason(&forged), "INVALID_STATE");

        // A code the provider never issued: refused, and the state is used up.
        let callback = through_provider(&mut client, None, "eve@example.com").await;
        let wrong_code = Callback { code: format!("{}x", callback.code), state: callback.state.clone() };
        let rejected = complete(&mut client, &wrong_code).await.expect_err("bad code");
        assert_eq!((rejected.code(), reason(&rejected).as_str()), (Code::InvalidArgument, "CODE_REJECTED"));
        let replay = complete(&mut client, &callback).await.expect_err("state used");
        assert_eq!(reason(&replay), "INVALID_STATE");

        // The provider does not vouch for the email: no account.
        let callback = through_provider(&mut client, None, "unverified.mallory@example.com").await;
        let unverified = complete(&mut client, &callback).await.expect_err("unverified email");
        assert_eq!(
            (unverified.code(), reason(&unverified).as_str()),
            (Code::FailedPrecondition, "PROVIDER_EMAIL_UNVERIFIED")
        );

        // An expired state is refused (moved into the past in the database: ten minutes is long).
        let callback = through_provider(&mut client, None, "late@example.com").await;
        let database = auth_support::database(&db.url).await;
        let mut conn = database.conn().await.expect("conn");
        let past = chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1);
        let moved = db_run!(&mut conn, |c| {
            diesel::update(social_login_states::table)
                .filter(social_login_states::used_at.is_null())
                .set(social_login_states::expires_at.eq(past))
                .execute(c)
                .await
        })
        .expect("expire states");
        assert_eq!(moved, 1);
        let late = complete(&mut client, &callback).await.expect_err("expired");
        assert_eq!(reason(&late), "INVALID_STATE");
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn an_unreachable_provider_is_unavailable_not_fatal(backend: Backend) {
        let db = TestDb::new(backend).await;
        let port = backbone_tests::free_port();
        let flag = serde_json::json!([{
            "name": PROVIDER,
            "issuer": format!("http://127.0.0.1:{port}"),
            "client_id": "c",
            "client_secret": "s",
            "redirect_uri": REDIRECT_URI,
        }])
        .to_string();
        // The service starts and serves although the provider is down.
        let server = InProcess::start_auth(&db.url, &["--oidc-providers", &flag]).await;
        let channel = server.channel().await;
        wait_ready(&channel, Svc::Auth.grpc_name()).await;
        let mut client = AuthClient::new(channel);
        let down = start_flow(&mut client, None).await.expect_err("provider down");
        assert_eq!((down.code(), reason(&down).as_str()), (Code::Unavailable, "PROVIDER_UNAVAILABLE"));
        use tonic_types::StatusExt as _;
        assert!(down.get_error_details().retry_info().is_some());
        server.stop().await.expect("clean stop");
    }
}
