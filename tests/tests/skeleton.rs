//! Every service, on SQLite and PostgreSQL: health (liveness and readiness), reflection v1 and
//! v1alpha with field comments, UNIMPLEMENTED for RPCs not built yet, malformed bodies answered
//! without harm, and graceful in-process shutdown.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::time::Duration;

use backbone_tests::{InProcess, Svc, TestDb, health, on_both_backends, wait_ready};
use prost::Message as _;
use tokio_stream::StreamExt as _;
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

async fn list_services_v1(channel: &Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection v1")
        .into_inner();
    match stream
        .next()
        .await
        .expect("one answer")
        .expect("ok")
        .message_response
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// The files describing `symbol`, asked over reflection v1alpha (what grpcurl 1.8.6 speaks).
async fn files_for_symbol_v1alpha(
    channel: &Channel,
    symbol: &str,
) -> Vec<prost_types::FileDescriptorProto> {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
    };
    let mut stream = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    match stream
        .next()
        .await
        .expect("one answer")
        .expect("ok")
        .message_response
    {
        Some(MessageResponse::FileDescriptorResponse(files)) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor")
            })
            .collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

on_both_backends! {
    async fn health_and_reflection(backend: Backend) {
        for svc in Svc::ALL {
            let db = TestDb::new(backend).await;
            let server = InProcess::start(svc, &db.url).await;
            let channel = server.channel().await;
            // Liveness answers at once; readiness once migrations are applied.
            assert_eq!(health(&channel, "").await.expect("health"), ServingStatus::Serving);
            wait_ready(&channel, svc.grpc_name()).await;
            let unknown = health(&channel, "no.such.Service").await.expect_err("unknown service");
            assert_eq!(unknown.code(), Code::NotFound);

            let services = list_services_v1(&channel).await;
            for expected in [
                svc.grpc_name(),
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ] {
                assert!(services.iter().any(|s| s == expected), "{svc:?}: {expected} missing from {services:?}");
            }
            // Only what this process serves: the other Backbone services are not advertised.
            assert_eq!(services.len(), 4, "{svc:?}: {services:?}");

            // Comments travel with the descriptors, so `grpcurl describe` can show them.
            let files = files_for_symbol_v1alpha(&channel, svc.grpc_name()).await;
            let service_file = files
                .iter()
                .find(|f| f.service.iter().any(|s| svc.grpc_name().ends_with(s.name())))
                .expect("file declaring the service");
            let comments = service_file
                .source_code_info
                .as_ref()
                .map(|info| info.location.iter().filter(|l| l.leading_comments.is_some()).count())
                .unwrap_or_default();
            assert!(comments > 10, "{svc:?}: only {comments} commented elements");
            // The google.rpc error details are there for grpcurl to decode rich errors.
            let details = files_for_symbol_v1alpha(&channel, "google.rpc.BadRequest").await;
            assert!(details.iter().any(|f| f.package() == "google.rpc"));

            server.stop().await.expect("clean stop");
        }
    }
}

on_both_backends! {
    async fn billing_calls_without_a_token_are_unauthenticated(backend: Backend) {
        let db = TestDb::new(backend).await;
        let server = InProcess::start(Svc::Billing, &db.url).await;
        let channel = server.channel().await;
        wait_ready(&channel, Svc::Billing.grpc_name()).await;
        let mut client =
            backbone_proto::billing::billing_service_client::BillingServiceClient::new(channel.clone());
        let status = client
            .get_cart(backbone_proto::billing::GetCartRequest::default())
            .await
            .expect_err("no token");
        assert_eq!(status.code(), Code::Unauthenticated);
        server.stop().await.expect("clean stop");
    }
}

/// Sends `body` as the raw request message of `path`, bypassing protobuf encoding.
async fn raw_call(
    channel: &Channel,
    path: &'static str,
    body: bytes::Bytes,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary::<_, (), _>(tonic::Request::new(body), path, raw::RawCodec)
        .await
        .map(drop)
}

mod raw {
    //! A codec that sends bytes as they are and ignores the answer's body.
    use bytes::{Buf, BufMut, Bytes};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Debug, Default)]
    pub struct RawCodec;
    #[derive(Debug, Default)]
    pub struct RawEncoder;
    #[derive(Debug, Default)]
    pub struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Bytes;
        type Decode = ();
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }
    impl Encoder for RawEncoder {
        type Item = Bytes;
        type Error = tonic::Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put(item);
            Ok(())
        }
    }
    impl Decoder for RawDecoder {
        type Item = ();
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
            src.advance(src.remaining());
            Ok(Some(()))
        }
    }
}

on_both_backends! {
    async fn malformed_body_is_refused_and_service_keeps_serving(backend: Backend) {
        let db = TestDb::new(backend).await;
        let server = InProcess::start(Svc::Auth, &db.url).await;
        let channel = server.channel().await;
        wait_ready(&channel, Svc::Auth.grpc_name()).await;
        // Field 1 declared as a varint, then the message ends mid-varint.
        let garbage = bytes::Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff]);
        let status = raw_call(&channel, "/grpc.health.v1.Health/Check", garbage.clone())
            .await
            .expect_err("garbage refused");
        assert!(
            matches!(status.code(), Code::Internal | Code::InvalidArgument),
            "got {status:?}"
        );
        assert!(status.message().contains("decode"), "unclear message: {}", status.message());
        let status = raw_call(&channel, "/backbone.auth.v1.AuthService/Login", garbage)
            .await
            .expect_err("garbage refused");
        assert!(matches!(status.code(), Code::Internal | Code::InvalidArgument), "got {status:?}");
        // Still serving, on the same connection and a new one.
        assert_eq!(health(&channel, "").await.expect("health"), ServingStatus::Serving);
        let fresh = server.channel().await;
        assert_eq!(health(&fresh, Svc::Auth.grpc_name()).await.expect("health"), ServingStatus::Serving);
        server.stop().await.expect("clean stop");
    }
}

on_both_backends! {
    async fn migrations_apply_revert_and_reapply(backend: Backend) {
        use backbone_common::db::Database;
        use backbone_common::config::DatabaseArgs;
        let args = DatabaseArgs { db_pool_size: 2, db_timeout: Duration::from_secs(5), db_read_connections: 2 };
        for (svc, migrations) in [
            (Svc::Auth, backbone_auth::MIGRATIONS),
            (Svc::Catalog, backbone_catalog::MIGRATIONS),
            (Svc::Billing, backbone_billing::MIGRATIONS),
        ] {
            let db = TestDb::new(backend).await;
            let database = Database::new(&db.url, &args, migrations).expect("database");
            assert!(database.migrate().await.expect("migrate") >= 1, "{svc:?}: nothing applied");
            assert_eq!(database.migrate().await.expect("migrate again"), 0, "{svc:?}: not idempotent");
            assert!(database.revert_all().await.expect("revert") >= 1, "{svc:?}: nothing reverted");
            assert!(database.migrate().await.expect("reapply") >= 1, "{svc:?}: down.sql left tables behind");
        }
    }
}
