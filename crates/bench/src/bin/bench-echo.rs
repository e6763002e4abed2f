//! The benchmark's echo server. `--mode bare` is tonic alone: the baseline every ratio of
//! `make bench` is measured against. `--mode kit` serves the same handler through the kit's full
//! stack: tracing and metrics, bearer-token verification (memoised), the readiness gate, the
//! concurrency limit and request timeouts, plus health and reflection, as every service does.
//! Same workspace and binary profile as the services: the same tonic, tokio, release profile
//! and allocator (the system's).

use std::{net::SocketAddr, process::ExitCode};

use backbone_bench::echo::{
    EchoRequest, EchoResponse,
    echo_service_server::{EchoService, EchoServiceServer},
};
use backbone_common::{
    app,
    auth::{GrpcJwks, TokenVerifier, principal},
    client,
    config::{ServerArgs, TelemetryArgs, TokenArgs},
    serve::{ServeOptions, serve, shutdown_signal},
    telemetry,
};
use clap::{Args, Parser, ValueEnum};
use tonic::{Request, Response, Status, server::NamedService, service::Routes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// tonic's server and the handler, nothing else.
    Bare,
    /// The kit's serving stack; calls need a bearer token from auth.
    Kit,
}

#[derive(Debug, Parser)]
#[command(name = "bench-echo", about = "The echo server of make bench")]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Args)]
struct Config {
    /// Bare tonic or the full kit.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:50060")]
    listen_addr: SocketAddr,
    /// The auth service whose keys verify tokens (kit mode).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    auth_url: String,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

struct Echo {
    authenticated: bool,
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        if self.authenticated {
            principal(&request)?;
        }
        Ok(Response::new(EchoResponse {
            message: request.into_inner().message,
        }))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = backbone_common::config::parse::<Cli>("BENCH_ECHO").config;
    let listener = match app::bind(config.listen_addr).await {
        Ok(listener) => listener,
        Err(err) => return app::exit_code(Err(err)),
    };
    if config.mode == Mode::Bare {
        let served = tonic::transport::Server::builder()
            .add_service(EchoServiceServer::new(Echo {
                authenticated: false,
            }))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown_signal(),
            )
            .await;
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let telemetry = telemetry::init("bench-echo", &config.telemetry);
    let result = async {
        let channel = client::lazy_channel(&config.auth_url)
            .map_err(|err| app::AppError::Config(format!("--auth-url: {err}")))?;
        let verifier = TokenVerifier::new(config.token.verifier_settings(), GrpcJwks::new(channel));
        let routes = Routes::new(EchoServiceServer::new(Echo {
            authenticated: true,
        }));
        let options = ServeOptions {
            service_names: vec![<EchoServiceServer<Echo> as NamedService>::NAME],
            descriptor_sets: vec![backbone_bench::ECHO_DESCRIPTOR_SET],
            readiness: None,
            server: config.server,
            verifier: Some(verifier),
        };
        Ok(serve(listener, routes, options, shutdown_signal()).await?)
    }
    .await;
    let code = app::exit_code(result);
    telemetry.shutdown();
    code
}
