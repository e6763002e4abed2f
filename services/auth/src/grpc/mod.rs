//! gRPC handlers of `backbone.auth.v1.AuthService`: decode, validate, call the domain, encode.
//! Every RPC not written yet answers UNIMPLEMENTED through the generated default stubs; the
//! handlers arrive with issue #3.

use backbone_common::db::Database;
use backbone_proto::auth::auth_service_server::AuthService;

/// The handlers' shared state.
#[derive(Debug, Clone)]
pub struct AuthApi {
    #[expect(dead_code, reason = "read by the handlers of issue #3")]
    database: Database,
}

impl AuthApi {
    /// Handlers over `database`.
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {}
