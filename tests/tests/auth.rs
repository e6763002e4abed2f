//! The auth service end to end over gRPC, on SQLite and PostgreSQL: accounts, login and
//! throttling, refresh-token rotation under parallel use, token verification against forged
//! tokens, signing-key rotation, administration, service accounts, email verification and
//! password reset, and the audit log.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use backbone_common::auth::{AccessClaims, Audience};
use backbone_proto::auth as pb;
use backbone_tests::{
    InProcess, Svc, TestDb,
    auth_support::{
        self, AuthClient, PASSWORD, admin, audit_types, bearer, customer, login, reason, sign_up,
        violated_fields,
    },
    on_both_backends, open_database, wait_ready,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use tonic::Code;
use tonic_types::StatusExt as _;

async fn start(db: &TestDb, extra: &[&str]) -> (InProcess, AuthClient) {
    let server = InProcess::start_auth(&db.url, extra).await;
    let channel = server.channel().await;
    wait_ready(&channel, Svc::Auth.grpc_name()).await;
    (server, AuthClient::new(channel))
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

fn header_of(token: &str) -> serde_json::Value {
    let header = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64")).expect("json")
}

async fn me(client: &mut AuthClient, token: &str) -> Result<pb::User, tonic::Status> {
    client
        .get_me(bearer(pb::GetMeRequest {}, token))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn refresh(client: &mut AuthClient, token: &str) -> Result<pb::TokenPair, tonic::Status> {
    client
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

on_both_backends! {
    async fn accounts_sign_up_log_in_and_manage_their_profile(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &[]).await;

        // Bad input: every bad field is named; the weak password's reason comes from zxcvbn.
        let status = client
            .sign_up(pb::SignUpRequest {
                email: "not-an-email".into(),
                password: "password1234".into(),
                display_name: " ".into(),
            })
            .await
            .expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["email", "display_name", "password"]);
        assert!(status.message().contains("too easy to guess"), "{}", status.message());
        let short = client
            .sign_up(pb::SignUpRequest {
                email: "a@example.com".into(),
                password: "short".into(),
                display_name: "A".into(),
            })
            .await
            .expect_err("short");
        assert!(short.message().contains("at least 12 characters"), "{}", short.message());

        let user = sign_up(&mut client, "Alice@Example.COM").await;
        assert_eq!(user.email, "Alice@Example.COM");
        assert_eq!(user.roles, [pb::Role::Customer as i32]);
        assert!(!user.email_verified && user.has_password);
        // The same address in another case is the same account.
        let taken = client
            .sign_up(pb::SignUpRequest {
                email: "alice@example.com".into(),
                password: PASSWORD.into(),
                display_name: "Other".into(),
            })
            .await
            .expect_err("taken");
        assert_eq!((taken.code(), reason(&taken).as_str()), (Code::AlreadyExists, "EMAIL_TAKEN"));

        // Login with the address in any case; the access token is an EdDSA at+jwt.
        let tokens = login(&mut client, "ALICE@example.com", PASSWORD).await;
        assert_eq!(tokens.token_type, "Bearer");
        let header = header_of(&tokens.access_token);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "at+jwt");
        assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
        let claims = claims_of(&tokens.access_token);
        assert_eq!(claims["iss"], "backbone-auth");
        assert_eq!(claims["aud"], "backbone");
        assert_eq!(claims["sub"], user.id.as_str());
        assert_eq!(claims["sid"], tokens.session_id.as_str());
        assert_eq!(claims["roles"], serde_json::json!(["customer"]));
        assert_eq!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"), 900);
        assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
        let refresh_lifetime = tokens.refresh_token_expire_time.expect("expiry").seconds
            - tokens.access_token_expire_time.expect("expiry").seconds;
        assert!((30 * 86_400 - 1_000..30 * 86_400).contains(&refresh_lifetime), "{refresh_lifetime}");
        assert_eq!(URL_SAFE_NO_PAD.decode(&tokens.refresh_token).map(|b| b.len()).ok(), Some(32));

        // GetMe needs a token.
        let anonymous = client.get_me(pb::GetMeRequest {}).await.expect_err("anonymous");
        assert_eq!((anonymous.code(), reason(&anonymous).as_str()), (Code::Unauthenticated, "TOKEN_REQUIRED"));
        let fetched = me(&mut client, &tokens.access_token).await.expect("me");
        assert_eq!(fetched.id, user.id);

        // UpdateMe: display name, with and without the current etag.
        let updated = client
            .update_me(bearer(
                pb::UpdateMeRequest {
                    user: Some(pb::User { display_name: "Alice A.".into(), etag: fetched.etag.clone(), ..Default::default() }),
                    update_mask: Some(backbone_proto::pbjson_types::FieldMask { paths: vec!["display_name".into()] }),
                },
                &tokens.access_token,
            ))
            .await
            .expect("update")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(updated.display_name, "Alice A.");
        assert_ne!(updated.etag, fetched.etag);
        let stale = client
            .update_me(bearer(
                pb::UpdateMeRequest {
                    user: Some(pb::User { display_name: "Again".into(), etag: fetched.etag.clone(), ..Default::default() }),
                    update_mask: None,
                },
                &tokens.access_token,
            ))
            .await
            .expect_err("stale etag");
        assert_eq!((stale.code(), reason(&stale).as_str()), (Code::Aborted, "ETAG_MISMATCH"));
        let current = stale.get_error_details().error_info().map(|i| i.metadata["current_etag"].clone());
        assert_eq!(current, Some(updated.etag.clone()));
        let bad_mask = client
            .update_me(bearer(
                pb::UpdateMeRequest {
                    user: Some(pb::User { email: "x@example.com".into(), ..Default::default() }),
                    update_mask: Some(backbone_proto::pbjson_types::FieldMask { paths: vec!["email".into()] }),
                },
                &tokens.access_token,
            ))
            .await
            .expect_err("email is not updatable here");
        assert_eq!(violated_fields(&bad_mask), ["update_mask"]);

        // ChangePassword: the current password is checked; other sessions end, this one stays.
        let other = login(&mut client, "alice@example.com", PASSWORD).await;
        let wrong = client
            .change_password(bearer(
                pb::ChangePasswordRequest { current_password: "not my password at all".into(), new_password: "amber lantern drifts softly 77".into() },
                &tokens.access_token,
            ))
            .await
            .expect_err("wrong current password");
        assert_eq!(violated_fields(&wrong), ["current_password"]);
        let changed = client
            .change_password(bearer(
                pb::ChangePasswordRequest { current_password: PASSWORD.into(), new_password: "amber lantern drifts softly 77".into() },
                &tokens.access_token,
            ))
            .await
            .expect("change password")
            .into_inner();
        assert_eq!(changed.revoked_session_count, 1);
        let ended = refresh(&mut client, &other.refresh_token).await.expect_err("other session ended");
        assert_eq!(reason(&ended), "SESSION_ENDED");
        assert!(refresh(&mut client, &tokens.refresh_token).await.is_ok(), "this session goes on");
        let old = client
            .login(pb::LoginRequest { email: "alice@example.com".into(), password: PASSWORD.into() })
            .await
            .expect_err("old password");
        assert_eq!(reason(&old), "INVALID_CREDENTIALS");
        login(&mut client, "alice@example.com", "amber lantern drifts softly 77").await;

        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn unknown_email_and_wrong_password_get_the_same_answer(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &[]).await;
        sign_up(&mut client, "bob@example.com").await;
        let mut answers = Vec::new();
        for email in ["bob@example.com", "nobody@example.com"] {
            let status = client
                .login(pb::LoginRequest { email: email.into(), password: "wrong password entirely".into() })
                .await
                .expect_err("refused");
            answers.push((status.code(), reason(&status), status.message().to_owned()));
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[0].0, Code::Unauthenticated);
        let empty = client.login(pb::LoginRequest::default()).await.expect_err("empty");
        assert_eq!(violated_fields(&empty), ["email", "password"]);
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn refresh_tokens_rotate_and_reuse_revokes_the_session(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &["--refresh-reuse-grace", "2s"]).await;
        sign_up(&mut client, "carol@example.com").await;
        let first = login(&mut client, "carol@example.com", PASSWORD).await;

        let second = refresh(&mut client, &first.refresh_token).await.expect("refresh");
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_ne!(second.access_token, first.access_token);
        assert_eq!(second.session_id, first.session_id);
        // A client that lost the answer presents the old token again within the grace window
        // and gets the very same pair.
        let again = refresh(&mut client, &first.refresh_token).await.expect("replay in grace");
        assert_eq!(again, second);
        me(&mut client, &second.access_token).await.expect("new access token works");

        // Once the successor has been used, the ancestor is reuse: the session is revoked.
        let third = refresh(&mut client, &second.refresh_token).await.expect("refresh again");
        let reused = refresh(&mut client, &first.refresh_token).await.expect_err("ancestor reuse");
        assert_eq!((reused.code(), reason(&reused).as_str()), (Code::Unauthenticated, "REFRESH_TOKEN_REUSED"));
        let dead = refresh(&mut client, &third.refresh_token).await.expect_err("session revoked");
        assert_eq!(reason(&dead), "SESSION_ENDED");

        // After the grace window, presenting the rotated token again is reuse too.
        let fourth = login(&mut client, "carol@example.com", PASSWORD).await;
        let fifth = refresh(&mut client, &fourth.refresh_token).await.expect("refresh");
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let late = refresh(&mut client, &fourth.refresh_token).await.expect_err("late replay");
        assert_eq!(reason(&late), "REFRESH_TOKEN_REUSED");
        assert_eq!(reason(&refresh(&mut client, &fifth.refresh_token).await.expect_err("revoked")), "SESSION_ENDED");

        let unknown = refresh(&mut client, "bm90IGEgcmVhbCB0b2tlbg").await.expect_err("unknown");
        assert_eq!(reason(&unknown), "INVALID_TOKEN");
        let empty = refresh(&mut client, "").await.expect_err("empty");
        assert_eq!(violated_fields(&empty), ["refresh_token"]);

        let admin = admin(&mut client, &db.url, "root@example.com").await;
        let user_id = claims_of(&first.access_token)["sub"].as_str().expect("sub").to_owned();
        let events = audit_types(&mut client, &admin, &user_id).await;
        assert_eq!(
            events.iter().filter(|t| **t == pb::AuditEventType::RefreshTokenReuseDetected).count(),
            2,
            "{events:?}"
        );
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn parallel_refreshes_of_one_token_leave_one_live_successor(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, client) = start(&db, &["--db-pool-size", "24"]).await;
        let mut c = client.clone();
        sign_up(&mut c, "dave@example.com").await;
        let tokens = login(&mut c, "dave@example.com", PASSWORD).await;

        let barrier = Arc::new(tokio::sync::Barrier::new(20));
        let calls = (0..20).map(|_| {
            let mut client = client.clone();
            let barrier = barrier.clone();
            let token = tokens.refresh_token.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                refresh(&mut client, &token).await
            })
        });
        let results = futures::future::join_all(calls).await;
        let pairs: Vec<pb::TokenPair> = results
            .into_iter()
            .map(|r| r.expect("join").expect("every parallel refresh inside the grace window succeeds"))
            .collect();
        let successors: HashSet<&str> = pairs.iter().map(|p| p.refresh_token.as_str()).collect();
        assert_eq!(successors.len(), 1, "exactly one successor");
        let successor = pairs[0].refresh_token.clone();
        assert_ne!(successor, tokens.refresh_token);
        // The session lives: the successor refreshes, and nothing was flagged as reuse.
        refresh(&mut c, &successor).await.expect("the successor is live");
        let admin = admin(&mut c, &db.url, "root@example.com").await;
        let user_id = claims_of(&tokens.access_token)["sub"].as_str().expect("sub").to_owned();
        let events = audit_types(&mut c, &admin, &user_id).await;
        assert!(!events.contains(&pb::AuditEventType::RefreshTokenReuseDetected), "{events:?}");
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn parallel_wrong_passwords_are_throttled_at_the_limit(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, client) = start(&db, &["--db-pool-size", "24"]).await;
        let mut c = client.clone();
        let user = sign_up(&mut c, "erin@example.com").await;

        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let calls = (0..50).map(|i| {
            let mut client = client.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .login(pb::LoginRequest { email: "erin@example.com".into(), password: format!("wrong guess number {i}") })
                    .await
                    .expect_err("every guess is wrong")
            })
        });
        let statuses: Vec<tonic::Status> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.expect("join"))
            .collect();
        let checked = statuses.iter().filter(|s| s.code() == Code::Unauthenticated).count();
        let throttled: Vec<&tonic::Status> = statuses.iter().filter(|s| s.code() == Code::ResourceExhausted).collect();
        // Five free attempts per account (the default); every other guess is refused unchecked.
        assert_eq!(checked, 5, "{statuses:?}");
        assert_eq!(throttled.len(), 45, "{statuses:?}");
        for status in &throttled {
            assert_eq!(reason(status), "LOGIN_THROTTLED");
            assert!(status.get_error_details().retry_info().and_then(|r| r.retry_delay).is_some());
        }
        // Even the right password waits now.
        let right = c
            .login(pb::LoginRequest { email: "erin@example.com".into(), password: PASSWORD.into() })
            .await
            .expect_err("throttled");
        assert_eq!(right.code(), Code::ResourceExhausted);

        let admin = admin(&mut c, &db.url, "root@example.com").await;
        let events = audit_types(&mut c, &admin, &user.id).await;
        let failed = events.iter().filter(|t| **t == pb::AuditEventType::LoginFailed).count();
        let blocked = events.iter().filter(|t| **t == pb::AuditEventType::LoginThrottled).count();
        assert_eq!((failed, blocked), (5, 46), "{events:?}");
        server.stop().await.expect("clean stop");
    }
}

/// The trace a test call claims to belong to (W3C trace-context example id).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Signs `claims` with `header` fields using an Ed25519 key in PKCS#8 DER.
fn sign(kid: &str, der: &[u8], claims: &AccessClaims) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der),
    )
    .expect("sign")
}

on_both_backends! {
    async fn forged_tokens_are_refused(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &[]).await;
        sign_up(&mut client, "frank@example.com").await;
        let real = login(&mut client, "frank@example.com", PASSWORD).await.access_token;
        me(&mut client, &real).await.expect("the real token works");
        let (kid, der) = auth_support::active_signing_key(&db.url).await;
        let claims: AccessClaims = serde_json::from_value(claims_of(&real)).expect("claims");
        let now = backbone_common::auth::unix_now();
        let [header, payload, signature] = <[&str; 3]>::try_from(real.split('.').collect::<Vec<_>>()).expect("jwt");

        let mut forged = Vec::new();
        // alg none, no signature.
        let none = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#));
        forged.push(("alg none", format!("{none}.{payload}.")));
        // HS256 with the public key as the HMAC secret (the classic key-confusion attack).
        let jwks = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().keys;
        let public = URL_SAFE_NO_PAD.decode(&jwks[0].x).expect("x");
        let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hs.kid = Some(kid.clone());
        hs.typ = Some("at+jwt".into());
        for secret in [public.as_slice(), jwks[0].x.as_bytes()] {
            let token = jsonwebtoken::encode(&hs, &claims, &jsonwebtoken::EncodingKey::from_secret(secret)).expect("hs256");
            forged.push(("HS256 with the public key", token));
        }
        // Real signatures over bad claims.
        let wrong_aud = AccessClaims { aud: Audience::One("someone-else".into()), ..claims.clone() };
        forged.push(("wrong aud", sign(&kid, &der, &wrong_aud)));
        let wrong_iss = AccessClaims { iss: "https://evil.example".into(), ..claims.clone() };
        forged.push(("wrong iss", sign(&kid, &der, &wrong_iss)));
        let expired = AccessClaims { exp: now - 120, iat: now - 1_000, nbf: now - 1_000, ..claims.clone() };
        forged.push(("expired", sign(&kid, &der, &expired)));
        let future = AccessClaims { nbf: now + 600, ..claims.clone() };
        forged.push(("not yet valid", sign(&kid, &der, &future)));
        // A payload edited after signing (an admin role added).
        let mut elevated = claims.clone();
        elevated.roles.push("admin".into());
        let elevated = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&elevated).expect("json"));
        forged.push(("tampered payload", format!("{header}.{elevated}.{signature}")));
        // Signed by a key the service never published.
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let stranger_der = {
            use ed25519_dalek::pkcs8::EncodePrivateKey as _;
            stranger.to_pkcs8_der().expect("der").as_bytes().to_vec()
        };
        forged.push(("unknown kid", sign("not-a-published-key", &stranger_der, &claims)));
        forged.push(("known kid, other key", sign(&kid, &stranger_der, &claims)));
        // A token of another type.
        let mut id_token_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        id_token_header.kid = Some(kid.clone());
        id_token_header.typ = Some("JWT".into());
        forged.push(("typ JWT", jsonwebtoken::encode(&id_token_header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(&der)).expect("sign")));
        forged.push(("garbage", "not.a.jwt".into()));

        for (what, token) in forged {
            let status = me(&mut client, &token).await.expect_err(what);
            assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
            assert!(!status.message().contains(&token), "{what}: the token is echoed");
        }
        let mut request = tonic::Request::new(pb::GetMeRequest {});
        request.metadata_mut().insert("authorization", format!("Basic {real}").parse().expect("header"));
        assert_eq!(client.get_me(request).await.expect_err("basic").code(), Code::Unauthenticated);
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn rotated_keys_keep_old_tokens_valid_until_they_expire(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &[]).await;
        let admin = admin(&mut client, &db.url, "root@example.com").await;
        let before = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().keys;
        assert_eq!(before.len(), 1);
        assert_eq!((before[0].kty.as_str(), before[0].crv.as_str(), before[0].alg.as_str(), before[0].r#use.as_str()), ("OKP", "Ed25519", "EdDSA", "sig"));
        let old_kid = before[0].kid.clone();
        let customer = customer(&mut client, "gina@example.com").await;

        let denied = client
            .rotate_signing_key(bearer(pb::RotateSigningKeyRequest {}, &customer))
            .await
            .expect_err("customers cannot rotate");
        assert_eq!((denied.code(), reason(&denied).as_str()), (Code::PermissionDenied, "ROLE_REQUIRED"));
        let rotated = client
            .rotate_signing_key(bearer(pb::RotateSigningKeyRequest {}, &admin))
            .await
            .expect("rotate")
            .into_inner();
        assert_eq!(rotated.retired_kid, old_kid);
        let new_kid = rotated.active_key.expect("new key").kid;
        assert_ne!(new_kid, old_kid);
        let after = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().keys;
        let kids: HashSet<String> = after.into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, HashSet::from([old_kid.clone(), new_kid.clone()]));

        // The token signed by the retired key still verifies; new tokens use the new key.
        me(&mut client, &customer).await.expect("old-key token still valid");
        let fresh = login(&mut client, "gina@example.com", PASSWORD).await.access_token;
        assert_eq!(header_of(&fresh)["kid"], new_kid.as_str());
        me(&mut client, &fresh).await.expect("new-key token valid");
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn administrators_manage_users_and_read_the_audit_log(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &[]).await;
        let admin = admin(&mut client, &db.url, "root@example.com").await;
        let admin_id = claims_of(&admin)["sub"].as_str().expect("sub").to_owned();
        for name in ["ann", "andy", "ben", "anita"] {
            sign_up(&mut client, &format!("{name}@example.com")).await;
        }
        let customer_tokens = login(&mut client, "ben@example.com", PASSWORD).await;
        let customer = customer_tokens.access_token.clone();

        // Customers cannot administer.
        let denied = client
            .list_users(bearer(pb::ListUsersRequest::default(), &customer))
            .await
            .expect_err("customer");
        assert_eq!((denied.code(), reason(&denied).as_str()), (Code::PermissionDenied, "ROLE_REQUIRED"));
        let anonymous = client.list_users(pb::ListUsersRequest::default()).await.expect_err("anonymous");
        assert_eq!(anonymous.code(), Code::Unauthenticated);

        // Paging through a prefix filter, two at a time.
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_users(bearer(pb::ListUsersRequest { page_size: 2, page_token: token.clone(), email_prefix: "AN".into() }, &admin))
                .await
                .expect("list")
                .into_inner();
            assert!(page.users.len() <= 2);
            seen.extend(page.users.into_iter().map(|u| u.email));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        seen.sort();
        assert_eq!(seen, ["andy@example.com", "anita@example.com", "ann@example.com"]);
        let first = client
            .list_users(bearer(pb::ListUsersRequest { page_size: 1, email_prefix: "an".into(), ..Default::default() }, &admin))
            .await
            .expect("list")
            .into_inner();
        let other_query = client
            .list_users(bearer(pb::ListUsersRequest { page_size: 1, page_token: first.next_page_token, email_prefix: "b".into() }, &admin))
            .await
            .expect_err("token from another query");
        assert_eq!(violated_fields(&other_query), ["page_token"]);
        let negative = client
            .list_users(bearer(pb::ListUsersRequest { page_size: -1, ..Default::default() }, &admin))
            .await
            .expect_err("negative page size");
        assert_eq!(violated_fields(&negative), ["page_size"]);

        // GetUser, SetUserRoles.
        let ben_id = claims_of(&customer)["sub"].as_str().expect("sub").to_owned();
        let ben = client
            .get_user(bearer(pb::GetUserRequest { user_id: ben_id.clone() }, &admin))
            .await
            .expect("get user")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(ben.email, "ben@example.com");
        let missing = client
            .get_user(bearer(pb::GetUserRequest { user_id: "nope".into() }, &admin))
            .await
            .expect_err("missing");
        assert_eq!(missing.code(), Code::NotFound);
        let promoted = client
            .set_user_roles(bearer(pb::SetUserRolesRequest { user_id: ben_id.clone(), roles: vec![pb::Role::Customer as i32, pb::Role::Admin as i32] }, &admin))
            .await
            .expect("set roles")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(promoted.roles, [pb::Role::Customer as i32, pb::Role::Admin as i32]);
        for (roles, what) in [(vec![], "none"), (vec![pb::Role::Service as i32], "service"), (vec![0], "unspecified")] {
            let status = client
                .set_user_roles(bearer(pb::SetUserRolesRequest { user_id: ben_id.clone(), roles }, &admin))
                .await
                .expect_err(what);
            assert_eq!(violated_fields(&status), ["roles"], "{what}");
        }
        let lockout = client
            .set_user_roles(bearer(pb::SetUserRolesRequest { user_id: admin_id.clone(), roles: vec![pb::Role::Customer as i32] }, &admin))
            .await
            .expect_err("self demotion");
        assert_eq!((lockout.code(), reason(&lockout).as_str()), (Code::FailedPrecondition, "SELF_LOCKOUT"));
        // New roles reach tokens at the next refresh.
        let refreshed = refresh(&mut client, &customer_tokens.refresh_token).await.expect("refresh");
        assert_eq!(claims_of(&refreshed.access_token)["roles"], serde_json::json!(["customer", "admin"]));

        // DisableUser: sessions end at once, refresh and login are refused.
        let mut request = bearer(pb::DisableUserRequest { user_id: ben_id.clone(), reason: "left the company".into() }, &admin);
        request.metadata_mut().insert("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01").parse().expect("header"));
        let disabled = client
            .disable_user(request)
            .await
            .expect("disable")
            .into_inner();
        assert!(disabled.user.expect("user").disabled);
        assert_eq!(disabled.revoked_session_count, 1);
        let refused = refresh(&mut client, &refreshed.refresh_token).await.expect_err("disabled");
        assert_eq!((refused.code(), reason(&refused).as_str()), (Code::PermissionDenied, "USER_DISABLED"));
        let blocked = client
            .login(pb::LoginRequest { email: "ben@example.com".into(), password: PASSWORD.into() })
            .await
            .expect_err("disabled login");
        assert_eq!(reason(&blocked), "USER_DISABLED");
        let self_disable = client
            .disable_user(bearer(pb::DisableUserRequest { user_id: admin_id.clone(), reason: String::new() }, &admin))
            .await
            .expect_err("self");
        assert_eq!(reason(&self_disable), "SELF_LOCKOUT");

        // The audit log: who did what to whom, from where, in which trace.
        let events = client
            .list_audit_events(bearer(pb::ListAuditEventsRequest { subject_id: ben_id.clone(), page_size: 100, ..Default::default() }, &admin))
            .await
            .expect("audit")
            .into_inner()
            .audit_events;
        let types: Vec<pb::AuditEventType> = events.iter().map(|e| e.r#type()).collect();
        for wanted in [
            pb::AuditEventType::SignUp,
            pb::AuditEventType::LoginSucceeded,
            pb::AuditEventType::RolesChanged,
            pb::AuditEventType::UserDisabled,
            pb::AuditEventType::LoginFailed,
        ] {
            assert!(types.contains(&wanted), "{wanted:?} missing from {types:?}");
        }
        let disable = events.iter().find(|e| e.r#type() == pb::AuditEventType::UserDisabled).expect("disable event");
        assert_eq!(disable.actor_id, admin_id);
        assert_eq!(disable.client_address, "127.0.0.1");
        assert_eq!(disable.trace_id, TRACE_ID, "the caller's trace continues into the audit row");
        assert_eq!(disable.details.get("reason").map(String::as_str), Some("left the company"));
        // Newest first, paged, filtered by type.
        let page = client
            .list_audit_events(bearer(pb::ListAuditEventsRequest { page_size: 1, r#type: pb::AuditEventType::SignUp as i32, ..Default::default() }, &admin))
            .await
            .expect("audit page")
            .into_inner();
        assert_eq!(page.audit_events.len(), 1);
        assert!(!page.next_page_token.is_empty());
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn service_accounts_get_short_lived_service_tokens(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &[]).await;
        let admin = admin(&mut client, &db.url, "root@example.com").await;
        let created = client
            .create_service_account(bearer(pb::CreateServiceAccountRequest { display_name: "billing".into() }, &admin))
            .await
            .expect("create")
            .into_inner();
        let account = created.service_account.expect("account");
        assert_eq!(account.roles, [pb::Role::Service as i32]);
        assert_eq!(URL_SAFE_NO_PAD.decode(&created.client_secret).map(|b| b.len()).ok(), Some(32));

        let issued = client
            .issue_service_token(pb::IssueServiceTokenRequest { client_id: account.id.clone(), client_secret: created.client_secret.clone() })
            .await
            .expect("issue")
            .into_inner();
        let claims = claims_of(&issued.access_token);
        assert_eq!(claims["sub"], account.id.as_str());
        assert_eq!(claims["client_id"], account.id.as_str());
        assert_eq!(claims["roles"], serde_json::json!(["service"]));
        assert!(claims.get("sid").is_none());
        // A service token is not a user: user-only calls are refused.
        let not_user = me(&mut client, &issued.access_token).await.expect_err("service account");
        assert_eq!((not_user.code(), reason(&not_user).as_str()), (Code::PermissionDenied, "USER_REQUIRED"));

        for (id, secret) in [(account.id.as_str(), "wrong-secret"), ("unknown-client", created.client_secret.as_str())] {
            let status = client
                .issue_service_token(pb::IssueServiceTokenRequest { client_id: id.into(), client_secret: secret.into() })
                .await
                .expect_err("bad credentials");
            assert_eq!((status.code(), reason(&status).as_str()), (Code::Unauthenticated, "INVALID_CLIENT"));
        }
        let customer = customer(&mut client, "hank@example.com").await;
        let denied = client
            .create_service_account(bearer(pb::CreateServiceAccountRequest { display_name: "mine".into() }, &customer))
            .await
            .expect_err("customer");
        assert_eq!(denied.code(), Code::PermissionDenied);
        let events = audit_types(&mut client, &admin, &account.id).await;
        assert!(events.contains(&pb::AuditEventType::ServiceTokenIssued) && events.contains(&pb::AuditEventType::ServiceAccountCreated), "{events:?}");
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn sessions_are_listed_and_revoked_by_their_user(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &[]).await;
        sign_up(&mut client, "ivy@example.com").await;
        let a = login(&mut client, "ivy@example.com", PASSWORD).await;
        let b = login(&mut client, "ivy@example.com", PASSWORD).await;
        let c = login(&mut client, "ivy@example.com", PASSWORD).await;
        let listed = client
            .list_sessions(bearer(pb::ListSessionsRequest::default(), &a.access_token))
            .await
            .expect("list")
            .into_inner()
            .sessions;
        assert_eq!(listed.len(), 3);
        let current: Vec<&pb::Session> = listed.iter().filter(|s| s.current).collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].id, a.session_id);
        assert_eq!(current[0].client_address, "127.0.0.1");
        assert!(current[0].user_agent.contains("tonic"), "{:?}", current[0].user_agent);

        client
            .revoke_session(bearer(pb::RevokeSessionRequest { session_id: b.session_id.clone() }, &a.access_token))
            .await
            .expect("revoke b");
        assert_eq!(reason(&refresh(&mut client, &b.refresh_token).await.expect_err("b ended")), "SESSION_ENDED");
        let again = client
            .revoke_session(bearer(pb::RevokeSessionRequest { session_id: b.session_id.clone() }, &a.access_token))
            .await
            .expect_err("already revoked");
        assert_eq!(again.code(), Code::NotFound);
        // Someone else's session is not found, not revoked.
        sign_up(&mut client, "jack@example.com").await;
        let jack = login(&mut client, "jack@example.com", PASSWORD).await;
        let foreign = client
            .revoke_session(bearer(pb::RevokeSessionRequest { session_id: c.session_id.clone() }, &jack.access_token))
            .await
            .expect_err("not theirs");
        assert_eq!(foreign.code(), Code::NotFound);

        let others = client
            .revoke_other_sessions(bearer(pb::RevokeOtherSessionsRequest {}, &a.access_token))
            .await
            .expect("revoke others")
            .into_inner();
        assert_eq!(others.revoked_session_count, 1);
        assert!(refresh(&mut client, &c.refresh_token).await.is_err());
        client.logout(bearer(pb::LogoutRequest {}, &a.access_token)).await.expect("logout");
        assert_eq!(reason(&refresh(&mut client, &a.refresh_token).await.expect_err("logged out")), "SESSION_ENDED");
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn email_verification_and_password_reset_use_single_use_tokens(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, mut client) = start(&db, &[]).await;
        sign_up(&mut client, "kim@example.com").await;
        let session = login(&mut client, "kim@example.com", PASSWORD).await;

        client
            .request_email_verification(bearer(pb::RequestEmailVerificationRequest {}, &session.access_token))
            .await
            .expect("request verification");
        let token = auth_support::outbox_token(&db.url, "kim@example.com", "Verify your email address").await;
        client.verify_email(pb::VerifyEmailRequest { token: token.clone() }).await.expect("verify");
        assert!(me(&mut client, &session.access_token).await.expect("me").email_verified);
        let reused = client.verify_email(pb::VerifyEmailRequest { token }).await.expect_err("single use");
        assert_eq!((reused.code(), reason(&reused).as_str()), (Code::Unauthenticated, "INVALID_TOKEN"));

        // The same answer whether or not the address has an account.
        client.request_password_reset(pb::RequestPasswordResetRequest { email: "nobody@example.com".into() }).await.expect("unknown email");
        client.request_password_reset(pb::RequestPasswordResetRequest { email: "KIM@example.com".into() }).await.expect("known email");
        let bad = client.request_password_reset(pb::RequestPasswordResetRequest { email: "nope".into() }).await.expect_err("malformed");
        assert_eq!(violated_fields(&bad), ["email"]);
        let reset = auth_support::outbox_token(&db.url, "kim@example.com", "Reset your password").await;
        let weak = client
            .reset_password(pb::ResetPasswordRequest { token: reset.clone(), new_password: "kim@example.com".into() })
            .await
            .expect_err("weak");
        assert_eq!(violated_fields(&weak), ["new_password"]);
        client
            .reset_password(pb::ResetPasswordRequest { token: reset.clone(), new_password: "granite pelican sings loudly 5".into() })
            .await
            .expect("reset");
        // Every session ends; the new password works; the token does not work twice.
        assert_eq!(reason(&refresh(&mut client, &session.refresh_token).await.expect_err("revoked")), "SESSION_ENDED");
        login(&mut client, "kim@example.com", "granite pelican sings loudly 5").await;
        let twice = client
            .reset_password(pb::ResetPasswordRequest { token: reset, new_password: "another long passphrase 77".into() })
            .await
            .expect_err("used");
        assert_eq!(reason(&twice), "INVALID_TOKEN");
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn a_full_hashing_pool_answers_resource_exhausted(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (server, client) = start(&db, &["--password-hash-workers", "1", "--password-hash-queue", "0"]).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let calls = (0..8).map(|i| {
            let mut client = client.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .sign_up(pb::SignUpRequest { email: format!("user{i}@example.com"), password: PASSWORD.into(), display_name: "U".into() })
                    .await
            })
        });
        let results: Vec<_> = futures::future::join_all(calls).await.into_iter().map(|r| r.expect("join")).collect();
        let busy: Vec<&tonic::Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(results.iter().any(Result::is_ok), "someone got through");
        assert!(!busy.is_empty(), "one worker and no queue cannot take eight hashes at once");
        for status in busy {
            assert_eq!((status.code(), reason(status).as_str()), (Code::ResourceExhausted, "PASSWORD_HASHING_BUSY"));
            assert!(status.get_error_details().retry_info().is_some());
        }
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn a_password_hashed_with_other_owasp_parameters_is_rehashed_at_login(backend: Backend) {
        use backbone_auth::db::schema::users;
        use backbone_common::db_run;
        use diesel::{ExpressionMethods as _, QueryDsl as _};
        use diesel_async::RunQueryDsl as _;

        let db = TestDb::new(backend).await;
        let email = "rehash@example.com";
        let (server, mut client) = start(&db, &["--password-hash-params", "m12-t3"]).await;
        sign_up(&mut client, email).await;
        drop(client);
        server.stop().await.expect("auth stops");
        let database = open_database(&db.url, backbone_auth::MIGRATIONS).await;
        let stored = || {
            let database = database.clone();
            async move {
                let mut conn = database.conn().await.expect("auth database");
                db_run!(&mut conn, |c| {
                    users::table
                        .filter(users::email.eq(email))
                        .select(users::password_hash)
                        .first::<Option<String>>(c)
                        .await
                })
                .expect("user row")
                .expect("a password hash")
            }
        };
        let old = stored().await;
        assert!(old.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"), "{old}");

        // Restarted with the default parameters: the next login stores a hash made with them,
        // and the password still works with either.
        let (_server, mut client) = start(&db, &[]).await;
        login(&mut client, email, PASSWORD).await;
        let new = stored().await;
        assert!(new.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{new}");
        login(&mut client, email, PASSWORD).await;
        assert_eq!(stored().await, new, "a current hash is not rewritten");
        let wrong = client
            .login(pb::LoginRequest { email: email.into(), password: format!("{PASSWORD}!") })
            .await
            .expect_err("a wrong password");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
}
