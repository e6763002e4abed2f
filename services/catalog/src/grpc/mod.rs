//! gRPC handlers of `backbone.catalog.v1.CatalogService`: decode, validate, call the domain, encode.
//! Every RPC not written yet answers UNIMPLEMENTED through the generated default stubs; the
//! handlers arrive with issue #4.

use backbone_common::db::Database;
use backbone_proto::catalog::catalog_service_server::CatalogService;

/// The handlers' shared state.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    #[expect(dead_code, reason = "read by the handlers of issue #4")]
    database: Database,
}

impl CatalogApi {
    /// Handlers over `database`.
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {}
