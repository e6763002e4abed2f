//! The real binaries as a user runs them: grpcurl against each service, SIGTERM while a call is
//! in flight, a malformed database URL, and a PostgreSQL that is down at start-up and later.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::time::Duration;

use backbone_tests::{
    Backend, InProcess, Process, Svc, TestDb, channel, free_port, health, on_both_backends,
    postgres_admin_url, run_grpcurl, wait_for_health, wait_ready,
};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_checks_health_of_each_service() {
    for svc in Svc::ALL {
        let db = TestDb::new(Backend::Sqlite).await;
        let process = Process::start(svc, &db.url, &[]);
        let addr = process.addr.to_string();
        wait_ready(&channel(process.addr).await, svc.grpc_name()).await;

        let (ok, listed) = run_grpcurl(&["-plaintext", &addr, "list"]);
        assert!(ok, "{listed}");
        for expected in [
            svc.grpc_name(),
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(
                listed.lines().any(|l| l.trim() == expected),
                "{svc:?}: {expected} not in\n{listed}"
            );
        }

        let (ok, described) = run_grpcurl(&["-plaintext", &addr, "describe", svc.grpc_name()]);
        assert!(ok, "{described}");
        assert!(described.contains("rpc "), "{described}");
        assert!(
            described
                .lines()
                .filter(|l| l.trim_start().starts_with("//"))
                .count()
                > 3,
            "{svc:?}: describe shows no comments:\n{described}"
        );

        for service in ["", svc.grpc_name()] {
            let body = format!("{{\"service\":\"{service}\"}}");
            let (ok, checked) = run_grpcurl(&[
                "-plaintext",
                "-d",
                &body,
                &addr,
                "grpc.health.v1.Health/Check",
            ]);
            assert!(
                ok && checked.contains("\"SERVING\""),
                "{svc:?} {service:?}: {checked}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_sees_a_readable_unauthenticated_error() {
    let db = TestDb::new(Backend::Sqlite).await;
    let process = Process::start(Svc::Billing, &db.url, &[]);
    let addr = process.addr.to_string();
    wait_ready(&channel(process.addr).await, Svc::Billing.grpc_name()).await;
    let (ok, answer) = run_grpcurl(&[
        "-plaintext",
        "-d",
        "{}",
        &addr,
        "backbone.billing.v1.BillingService/GetCart",
    ]);
    assert!(!ok, "{answer}");
    assert!(answer.contains("Unauthenticated"), "{answer}");
    assert!(answer.contains("TOKEN_REQUIRED"), "{answer}");
}

on_both_backends! {
    async fn sigterm_lets_the_in_flight_call_finish_then_exits_zero(backend: Backend) {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest,
        };
        let db = TestDb::new(backend).await;
        let mut process = Process::start(Svc::Billing, &db.url, &[]);
        let chan = channel(process.addr).await;
        wait_ready(&chan, Svc::Billing.grpc_name()).await;

        let mut watch = HealthClient::new(chan.clone())
            .watch(HealthCheckRequest { service: String::new() })
            .await
            .expect("watch")
            .into_inner();
        let first = watch.next().await.expect("first status").expect("ok");
        assert_eq!(first.status(), ServingStatus::Serving);

        // A streaming call that stays in flight across the signal.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let ask = || ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        tx.send(ask()).await.expect("send");
        let mut answers = ServerReflectionClient::new(chan.clone())
            .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("reflection")
            .into_inner();
        answers.next().await.expect("first answer").expect("ok");

        process.terminate();
        let next = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("status change");
        assert_eq!(next.expect("an update").expect("ok").status(), ServingStatus::NotServing);

        // The in-flight call is still served after the signal, then completes normally.
        tx.send(ask()).await.expect("send after SIGTERM");
        answers.next().await.expect("answer after SIGTERM").expect("ok");
        drop(tx);
        assert!(answers.next().await.is_none(), "stream ends cleanly");

        let code = tokio::task::spawn_blocking(move || process.wait_exit(Duration::from_secs(15)))
            .await
            .expect("join");
        assert_eq!(code, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_database_url_is_a_clear_startup_error() {
    for (url, expected) in [
        (
            "mysql://root:hunter2@localhost/db",
            "unsupported database URL scheme",
        ),
        (
            "postgres://app:hunter2@localhost:notaport/db",
            "malformed PostgreSQL URL",
        ),
    ] {
        let mut process = Process::start(Svc::Auth, url, &[]);
        let code = process.wait_exit(Duration::from_secs(10));
        let stderr = process.stderr();
        assert_ne!(code, Some(0), "{url}: started anyway");
        assert!(stderr.contains(expected), "{url}: unclear error: {stderr}");
        assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    }
}

/// A TCP forwarder to the real PostgreSQL that the test can switch on and off.
struct Outage {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Outage {
    fn down() -> Self {
        Self {
            port: free_port(),
            task: None,
        }
    }

    async fn up(&mut self) {
        let target = pg_host_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind proxy");
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    fn cut(&mut self) {
        // Aborting drops the listener and the JoinSet, which aborts every proxied connection.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn pg_host_port() -> String {
    let config: tokio_postgres::Config = postgres_admin_url().parse().expect("TEST_DATABASE_URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// The test database's URL, pointed at the proxy's port instead of the server's.
fn via_proxy(db: &TestDb, port: u16) -> String {
    let config: tokio_postgres::Config = db.url.parse().expect("url");
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or("postgres").to_owned();
    format!("postgres://{user}{password}@127.0.0.1:{port}/{dbname}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_keeps_the_service_up_and_it_recovers() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut outage = Outage::down();
    let server = InProcess::start(Svc::Catalog, &via_proxy(&db, outage.port)).await;
    let chan = server.channel().await;
    let name = Svc::Catalog.grpc_name();

    // Down at start-up: alive, not ready, calls fail fast with UNAVAILABLE and RetryInfo.
    assert_eq!(
        health(&chan, "").await.expect("liveness"),
        ServingStatus::Serving
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        health(&chan, name).await.expect("readiness"),
        ServingStatus::NotServing
    );
    let mut client =
        backbone_proto::catalog::catalog_service_client::CatalogServiceClient::new(chan.clone());
    let status = client
        .get_product(backbone_proto::catalog::GetProductRequest::default())
        .await
        .expect_err("database is down");
    assert_eq!(status.code(), Code::Unavailable);
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert!(details.retry_info().is_some(), "no RetryInfo: {status:?}");
    assert_eq!(
        details.error_info().map(|i| i.reason.clone()).as_deref(),
        Some("DATABASE_UNAVAILABLE")
    );

    // The database appears: the service migrates and becomes ready by itself.
    outage.up().await;
    wait_for_health(&chan, name, ServingStatus::Serving, Duration::from_secs(10)).await;
    let status = client
        .get_product(backbone_proto::catalog::GetProductRequest::default())
        .await
        .expect_err("no product id");
    assert_eq!(status.code(), Code::InvalidArgument, "the gate opened");

    // It goes away later: readiness follows, liveness does not; and it recovers again.
    outage.cut();
    wait_for_health(
        &chan,
        name,
        ServingStatus::NotServing,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        health(&chan, "").await.expect("liveness"),
        ServingStatus::Serving
    );
    outage.up().await;
    wait_for_health(&chan, name, ServingStatus::Serving, Duration::from_secs(10)).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_collector_never_stops_a_service_and_logs_carry_the_callers_trace_id() {
    let db = TestDb::new(Backend::Sqlite).await;
    let collector = format!("http://127.0.0.1:{}", free_port());
    let process = Process::start_with_env(
        Svc::Catalog,
        &db.url,
        &["--log-filter", "info,backbone_common=debug"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let chan = channel(process.addr).await;
    wait_ready(&chan, Svc::Catalog.grpc_name()).await;

    // A caller's W3C trace context is continued: its trace id shows up in the service's log.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("ascii"),
    );
    let answer = HealthClient::new(chan.clone())
        .check(request)
        .await
        .expect("check");
    assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
    // Spans are exported (and fail to reach the collector) while the service keeps serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        health(&chan, Svc::Catalog.grpc_name())
            .await
            .expect("health"),
        ServingStatus::Serving
    );

    process.terminate();
    let code = tokio::task::spawn_blocking({
        let mut process = process;
        move || {
            let code = process.wait_exit(Duration::from_secs(20));
            (code, process.logs())
        }
    })
    .await
    .expect("join");
    assert_eq!(code.0, Some(0), "exit code with the collector down");
    let logs = code.1;
    assert!(
        logs.contains("call answered"),
        "no access log lines in:\n{logs}"
    );
    let carried = logs.lines().any(|l| {
        l.contains("call answered") && l.contains(&format!("\"trace_id\":\"{trace_id}\""))
    });
    assert!(carried, "the caller's trace id is in no log line:\n{logs}");
}
