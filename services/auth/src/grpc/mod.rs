//! gRPC handlers of `backbone.auth.v1.AuthService`: decode, check the caller's role, call the
//! use case, encode.

pub mod convert;

use backbone_common::{
    auth::{Role, optional_principal, require_role},
    trace::current_trace_id,
};
use backbone_proto::auth::{self as pb, auth_service_server::AuthService};
use tonic::{Request, Response, Status};

use crate::{
    db::audit::AuditFilter,
    error::AuthError,
    service::{Auth, Caller, social::Intent},
};

/// The handlers' shared state.
#[derive(Debug, Clone)]
pub struct AuthApi {
    auth: Auth,
}

impl AuthApi {
    /// Handlers over the use cases.
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

/// Who is calling, from the request's token, peer address, user agent and trace.
fn caller<T>(request: &Request<T>) -> Caller {
    Caller {
        principal: optional_principal(request),
        client_address: request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string()),
        user_agent: request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        trace_id: current_trace_id().unwrap_or_default(),
    }
}

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(message: T) -> Answer<T> {
    Ok(Response::new(message))
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn sign_up(&self, request: Request<pb::SignUpRequest>) -> Answer<pb::SignUpResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let user = self
            .auth
            .sign_up(&caller, &r.email, &r.password, &r.display_name)
            .await?;
        ok(pb::SignUpResponse {
            user: Some(convert::user(user)),
        })
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Answer<pb::LoginResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let (tokens, user) = self.auth.login(&caller, &r.email, &r.password).await?;
        ok(pb::LoginResponse {
            tokens: Some(convert::tokens(tokens)),
            user: Some(convert::user(user)),
        })
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Answer<pb::RefreshSessionResponse> {
        let caller = caller(&request);
        let tokens = self
            .auth
            .refresh(&caller, &request.into_inner().refresh_token)
            .await?;
        ok(pb::RefreshSessionResponse {
            tokens: Some(convert::tokens(tokens)),
        })
    }

    async fn start_social_login(
        &self,
        request: Request<pb::StartSocialLoginRequest>,
    ) -> Answer<pb::StartSocialLoginResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let intent = match pb::SocialLoginIntent::try_from(r.intent) {
            Ok(pb::SocialLoginIntent::Unspecified | pb::SocialLoginIntent::SignIn) => {
                Intent::SignIn
            }
            Ok(pb::SocialLoginIntent::Link) => Intent::Link,
            Err(_) => return Err(AuthError::field("intent", "is not a known intent").into()),
        };
        let started = self
            .auth
            .start_social_login(&caller, &r.provider, intent)
            .await?;
        ok(pb::StartSocialLoginResponse {
            authorization_url: started.authorization_url,
            state: started.state,
            expire_time: Some(convert::timestamp(started.expires_at)),
        })
    }

    async fn complete_social_login(
        &self,
        request: Request<pb::CompleteSocialLoginRequest>,
    ) -> Answer<pb::CompleteSocialLoginResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let done = self
            .auth
            .complete_social_login(&caller, &r.state, &r.code)
            .await?;
        ok(pb::CompleteSocialLoginResponse {
            tokens: Some(convert::tokens(done.tokens)),
            user: Some(convert::user(done.user)),
            user_created: done.created,
        })
    }

    async fn link_social_identity(
        &self,
        request: Request<pb::LinkSocialIdentityRequest>,
    ) -> Answer<pb::LinkSocialIdentityResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let user = self
            .auth
            .link_social_identity(&caller, &r.state, &r.code)
            .await?;
        ok(pb::LinkSocialIdentityResponse {
            user: Some(convert::user(user)),
        })
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Answer<pb::LogoutResponse> {
        self.auth.logout(&caller(&request)).await?;
        ok(pb::LogoutResponse {})
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Answer<pb::GetMeResponse> {
        let user = self.auth.me(&caller(&request)).await?;
        ok(pb::GetMeResponse {
            user: Some(convert::user(user)),
        })
    }

    async fn update_me(
        &self,
        request: Request<pb::UpdateMeRequest>,
    ) -> Answer<pb::UpdateMeResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let user = r.user.unwrap_or_default();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut display_name = None;
        let mut unknown = Vec::new();
        if paths.is_empty() {
            // No mask: every mutable field that is set (AIP-134).
            display_name = (!user.display_name.is_empty()).then_some(user.display_name.as_str());
        }
        for path in &paths {
            match path.as_str() {
                "display_name" => display_name = Some(user.display_name.as_str()),
                other => unknown.push(other.to_owned()),
            }
        }
        if !unknown.is_empty() {
            return Err(AuthError::field(
                "update_mask",
                format!(
                    "only display_name can be updated here, not {}",
                    unknown.join(", ")
                ),
            )
            .into());
        }
        let etag = (!user.etag.is_empty()).then_some(user.etag.as_str());
        let updated = self.auth.update_me(&caller, display_name, etag).await?;
        ok(pb::UpdateMeResponse {
            user: Some(convert::user(updated)),
        })
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Answer<pb::ChangePasswordResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let revoked = self
            .auth
            .change_password(&caller, &r.current_password, &r.new_password)
            .await?;
        ok(pb::ChangePasswordResponse {
            revoked_session_count: count(revoked),
        })
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Answer<pb::ListSessionsResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let (sessions, next_page_token) = self
            .auth
            .list_sessions(&caller, r.page_size, &r.page_token)
            .await?;
        ok(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(convert::session).collect(),
            next_page_token,
        })
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Answer<pb::RevokeSessionResponse> {
        let caller = caller(&request);
        self.auth
            .revoke_session(&caller, &request.into_inner().session_id)
            .await?;
        ok(pb::RevokeSessionResponse {})
    }

    async fn revoke_other_sessions(
        &self,
        request: Request<pb::RevokeOtherSessionsRequest>,
    ) -> Answer<pb::RevokeOtherSessionsResponse> {
        let revoked = self.auth.revoke_other_sessions(&caller(&request)).await?;
        ok(pb::RevokeOtherSessionsResponse {
            revoked_session_count: count(revoked),
        })
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Answer<pb::GetJwksResponse> {
        ok(pb::GetJwksResponse {
            keys: self.auth.jwks().await?,
        })
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Answer<pb::RotateSigningKeyResponse> {
        require_role(&request, Role::Admin)?;
        let (active_key, retired) = self.auth.rotate_signing_key(&caller(&request)).await?;
        ok(pb::RotateSigningKeyResponse {
            active_key: Some(active_key),
            retired_kid: retired.unwrap_or_default(),
        })
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Answer<pb::ListUsersResponse> {
        require_role(&request, Role::Admin)?;
        let r = request.into_inner();
        let (users, next_page_token) = self
            .auth
            .list_users(r.page_size, &r.page_token, &r.email_prefix)
            .await?;
        ok(pb::ListUsersResponse {
            users: users.into_iter().map(convert::user).collect(),
            next_page_token,
        })
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Answer<pb::GetUserResponse> {
        require_role(&request, Role::Admin)?;
        let id = request.into_inner().user_id;
        if id.is_empty() {
            return Err(AuthError::field("user_id", "is required").into());
        }
        let user = self.auth.user(&id).await?;
        ok(pb::GetUserResponse {
            user: Some(convert::user(user)),
        })
    }

    async fn set_user_roles(
        &self,
        request: Request<pb::SetUserRolesRequest>,
    ) -> Answer<pb::SetUserRolesResponse> {
        require_role(&request, Role::Admin)?;
        let caller = caller(&request);
        let r = request.into_inner();
        let mut roles = Vec::with_capacity(r.roles.len());
        for value in &r.roles {
            match convert::role_from_api(*value) {
                Some(role) => roles.push(role),
                None => {
                    return Err(AuthError::field(
                        "roles",
                        format!("{value} is not a role: use ROLE_CUSTOMER or ROLE_ADMIN"),
                    )
                    .into());
                }
            }
        }
        let user = self.auth.set_roles(&caller, &r.user_id, &roles).await?;
        ok(pb::SetUserRolesResponse {
            user: Some(convert::user(user)),
        })
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> Answer<pb::DisableUserResponse> {
        require_role(&request, Role::Admin)?;
        let caller = caller(&request);
        let r = request.into_inner();
        let (user, revoked) = self
            .auth
            .disable_user(&caller, &r.user_id, &r.reason)
            .await?;
        ok(pb::DisableUserResponse {
            user: Some(convert::user(user)),
            revoked_session_count: count(revoked),
        })
    }

    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Answer<pb::CreateServiceAccountResponse> {
        require_role(&request, Role::Admin)?;
        let caller = caller(&request);
        let (account, client_secret) = self
            .auth
            .create_service_account(&caller, &request.into_inner().display_name)
            .await?;
        ok(pb::CreateServiceAccountResponse {
            service_account: Some(convert::service_account(account)),
            client_secret,
        })
    }

    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Answer<pb::IssueServiceTokenResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        let (access_token, exp) = self
            .auth
            .issue_service_token(&caller, &r.client_id, &r.client_secret)
            .await?;
        ok(pb::IssueServiceTokenResponse {
            token_type: "Bearer".into(),
            access_token,
            expire_time: Some(convert::epoch_timestamp(exp)),
        })
    }

    async fn request_email_verification(
        &self,
        request: Request<pb::RequestEmailVerificationRequest>,
    ) -> Answer<pb::RequestEmailVerificationResponse> {
        self.auth
            .request_email_verification(&caller(&request))
            .await?;
        ok(pb::RequestEmailVerificationResponse {})
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Answer<pb::VerifyEmailResponse> {
        let caller = caller(&request);
        self.auth
            .verify_email(&caller, &request.into_inner().token)
            .await?;
        ok(pb::VerifyEmailResponse {})
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Answer<pb::RequestPasswordResetResponse> {
        let caller = caller(&request);
        self.auth
            .request_password_reset(&caller, &request.into_inner().email)
            .await?;
        ok(pb::RequestPasswordResetResponse {})
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Answer<pb::ResetPasswordResponse> {
        let caller = caller(&request);
        let r = request.into_inner();
        self.auth
            .reset_password(&caller, &r.token, &r.new_password)
            .await?;
        ok(pb::ResetPasswordResponse {})
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Answer<pb::ListAuditEventsResponse> {
        require_role(&request, Role::Admin)?;
        let r = request.into_inner();
        let event_type = match r.r#type {
            0 => String::new(),
            value => convert::audit_kind_from_api(value)
                .map(|k| k.as_str().to_owned())
                .ok_or_else(|| {
                    AuthError::field("type", format!("{value} is not an audit event type"))
                })?,
        };
        let filter = AuditFilter {
            subject_id: r.subject_id,
            actor_id: r.actor_id,
            event_type,
        };
        let (events, next_page_token) = self
            .auth
            .list_audit_events(r.page_size, &r.page_token, filter)
            .await?;
        ok(pb::ListAuditEventsResponse {
            audit_events: events.into_iter().map(convert::audit_event).collect(),
            next_page_token,
        })
    }
}
