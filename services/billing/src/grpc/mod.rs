//! gRPC handlers of `backbone.billing.v1.BillingService`: decode, validate, call the domain, encode.
//! Every RPC not written yet answers UNIMPLEMENTED through the generated default stubs; the
//! handlers arrive with issue #5.

use backbone_common::db::Database;
use backbone_proto::billing::billing_service_server::BillingService;

/// The handlers' shared state.
#[derive(Debug, Clone)]
pub struct BillingApi {
    #[expect(dead_code, reason = "read by the handlers of issue #5")]
    database: Database,
}

impl BillingApi {
    /// Handlers over `database`.
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

#[tonic::async_trait]
impl BillingService for BillingApi {}
