//! Server bootstrap: one [`serve`] runs a service's routes on a listener with health (overall
//! `""` plus one entry per service), reflection v1 and v1alpha, tracing and metrics, a readiness
//! gate, a concurrency limit, a request timeout, TLS when configured, an admin port (metrics and
//! plaintext health) and graceful shutdown.

use std::{
    convert::Infallible,
    future::{Future, Ready},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::Either;
use http::{Request, Response};
use tokio::{net::TcpListener, sync::watch};
use tonic::{
    body::Body,
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Layer, Service, ServiceBuilder};

use crate::{
    auth::{AuthLayer, TokenVerifier},
    config::ServerArgs,
    db::DbError,
    deadline::DeadlineLayer,
    limit::ConcurrencyLimitLayer,
    tls::{ServerTls, TlsError},
    trace::ServerTraceLayer,
};

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("building the reflection service failed")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS files are missing or unusable.
    #[error("TLS cannot be set up")]
    Tls(#[from] TlsError),
    /// The admin port could not be bound.
    #[error("cannot listen on the admin address {addr}")]
    AdminBind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

/// What [`serve`] needs besides the routes.
#[derive(Debug)]
pub struct ServeOptions {
    /// Fully-qualified names of the services in the routes (`backbone.auth.v1.AuthService`);
    /// each gets a health entry that follows `readiness`.
    pub service_names: Vec<&'static str>,
    /// Encoded `FileDescriptorSet`s of served services whose contracts are not in
    /// `backbone_proto` (which is always included): reflection describes them, and their
    /// methods are labelled by name in metrics and spans.
    pub descriptor_sets: Vec<&'static [u8]>,
    /// Whether the services can answer (their database is reachable and migrated). While
    /// false their health entries are NOT_SERVING and their calls answer UNAVAILABLE at once;
    /// `""` (liveness) stays SERVING. `None`: always ready.
    pub readiness: Option<watch::Receiver<bool>>,
    /// Limits, timeouts and shutdown durations.
    pub server: ServerArgs,
    /// Verifies bearer tokens of calls to the services; `None`: every call is anonymous.
    pub verifier: Option<TokenVerifier>,
}

/// Serves `routes` on `listener` until `shutdown` resolves, then: every health entry goes
/// NOT_SERVING, calls are still accepted for `shutdown_drain`, the listener closes, and in-flight
/// calls get up to `shutdown_grace` to finish.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let ServeOptions {
        service_names,
        descriptor_sets,
        readiness,
        server: args,
        verifier,
    } = options;
    let tls = ServerTls::from_args(&args.tls)?;
    let admin = match args.admin_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::AdminBind { addr, source })?,
        ),
        None => None,
    };
    let (mut reporter, health) = tonic_health::server::health_reporter();
    let initially_ready = readiness.as_ref().is_none_or(|r| *r.borrow());
    for name in &service_names {
        reporter
            .set_service_status(name, serving(initially_ready))
            .await;
    }
    let readiness = readiness.unwrap_or_else(|| watch::channel(true).1);
    let gate = ReadinessGateLayer {
        shared: Arc::new(Gate {
            services: service_names.clone(),
            ready: AtomicBool::new(initially_ready),
        }),
    };
    let follower = tokio::spawn(follow_readiness(
        reporter.clone(),
        gate.shared.clone(),
        readiness,
    ));

    // Aborted when serving ends, which closes its listener and every admin connection.
    let admin = admin.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin port: GET /metrics, gRPC health");
        }
        AbortOnDrop(tokio::spawn(serve_admin(listener, health.clone())))
    });

    let descriptor_sets: Vec<&'static [u8]> =
        DESCRIPTOR_SETS.into_iter().chain(descriptor_sets).collect();
    let reflection_v1 = reflection_builder(&service_names, &descriptor_sets).build_v1()?;
    let reflection_v1alpha =
        reflection_builder(&service_names, &descriptor_sets).build_v1alpha()?;

    let layers = ServiceBuilder::new()
        // Outermost, so the span covers queueing and gate refusals and records every status.
        .layer(ServerTraceLayer::new(
            served_methods(&service_names, &descriptor_sets)
                .iter()
                .map(|(service, method)| (service.as_str(), method.as_str())),
        ))
        // The server's deadline covers token verification and the handler, and the trace layer
        // records its DEADLINE_EXCEEDED. (tonic itself enforces a caller's grpc-timeout.)
        .layer(DeadlineLayer::new(args.request_timeout))
        // Before the limit: a call that cannot be served must not wait for a slot first.
        .layer(gate)
        // Also before the limit, so forged or expired tokens are refused without taking a slot;
        // a memoised token costs a hash lookup here.
        .layer(AuthLayer::new(verifier, service_names.clone()))
        // One limit for the whole process rather than per connection: a few busy clients
        // cannot starve the rest, and memory stays bounded.
        .layer(ConcurrencyLimitLayer::new(args.concurrency_limit));

    // Dead peers are found by TCP keepalive ([`KEEPALIVE`]), not HTTP/2 PINGs: with PINGs on,
    // hyper reads the clock on every frame received (about 1% of a trivial call, callgrind).
    let mut builder = Server::builder();
    if !args.max_connection_age.is_zero() {
        builder = builder
            .max_connection_age(args.max_connection_age)
            .max_connection_age_grace(args.shutdown_grace);
    }
    let router = builder
        .layer(layers)
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let mut server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match &tls {
            Some(tls) => {
                tracing::info!(?tls, "gRPC over TLS");
                Box::pin(router.serve_with_incoming_shutdown(tls.incoming(listener), stopped))
            }
            None => {
                let incoming = TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(KEEPALIVE.idle))
                    .with_keepalive_interval(Some(KEEPALIVE.interval))
                    .with_keepalive_retries(Some(KEEPALIVE.probes));
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
            }
        };

    tokio::select! {
        result = &mut server => {
            follower.abort();
            drop(admin);
            return Ok(result?);
        }
        () = shutdown => {}
    }

    follower.abort();
    tracing::info!("shutting down: health is NOT_SERVING, draining in-flight calls");
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for name in &service_names {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    tokio::time::sleep(args.shutdown_drain).await;
    // Health watchers have seen NOT_SERVING; dropping the entries ends their streams, which
    // would otherwise hold the connections open for the whole grace period.
    reporter.clear_service_status("").await;
    for name in &service_names {
        reporter.clear_service_status(name).await;
    }
    let _ = stop.send(());
    let finished = tokio::time::timeout(args.shutdown_grace, server).await;
    drop(admin);
    match finished {
        Ok(result) => {
            tracing::info!("all calls finished; stopped");
            Ok(result?)
        }
        Err(_) => {
            tracing::warn!(grace = ?args.shutdown_grace, "calls still running after the grace period; stopping anyway");
            Ok(())
        }
    }
}

/// TCP keepalive of accepted connections: a peer that has been silent for `idle` is probed
/// every `interval`, and after `probes` unanswered probes the kernel closes the connection, so
/// a vanished client (a crashed pod, a dropped NAT entry) is noticed within about a minute and
/// idle connections through proxies stay open.
pub(crate) struct Keepalive {
    pub(crate) idle: Duration,
    pub(crate) interval: Duration,
    pub(crate) probes: u32,
}

/// See [`Keepalive`].
pub(crate) const KEEPALIVE: Keepalive = Keepalive {
    idle: Duration::from_secs(30),
    interval: Duration::from_secs(10),
    probes: 3,
};

impl Keepalive {
    /// Sets these options on an accepted connection.
    pub(crate) fn apply(&self, stream: &tokio::net::TcpStream) -> std::io::Result<()> {
        let options = socket2::TcpKeepalive::new()
            .with_time(self.idle)
            .with_interval(self.interval)
            .with_retries(self.probes);
        socket2::SockRef::from(stream).set_tcp_keepalive(&options)
    }
}

fn serving(ready: bool) -> ServingStatus {
    if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Keeps the gate and the services' health entries in step with `readiness`: the gate first,
/// so a caller who sees NOT_SERVING and then calls is refused.
async fn follow_readiness(
    reporter: HealthReporter,
    gate: Arc<Gate>,
    mut readiness: watch::Receiver<bool>,
) {
    loop {
        let ready = *readiness.borrow_and_update();
        gate.ready.store(ready, Ordering::Release);
        for name in &gate.services {
            reporter.set_service_status(name, serving(ready)).await;
        }
        if readiness.changed().await.is_err() {
            return;
        }
    }
}

/// The services every Backbone server answers besides its own.
const ALWAYS_SERVED: [&str; 3] = [
    tonic_health::pb::health_server::SERVICE_NAME,
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The descriptor sets of everything a Backbone server may serve, besides
/// [`ServeOptions::descriptor_sets`].
const DESCRIPTOR_SETS: [&[u8]; 4] = [
    backbone_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Every (`package.Service`, `Method`) this server answers, read from the descriptor sets: the
/// metrics label these, and only these, by name.
fn served_methods(services: &[&'static str], sets: &[&[u8]]) -> Vec<(String, String)> {
    let served: Vec<&str> = services.iter().copied().chain(ALWAYS_SERVED).collect();
    let mut methods = Vec::new();
    for encoded in sets.iter().copied() {
        let set = match <prost_types::FileDescriptorSet as prost::Message>::decode(encoded) {
            Ok(set) => set,
            Err(err) => {
                tracing::warn!(error = %err, "a descriptor set does not decode; its methods are labelled _OTHER");
                continue;
            }
        };
        for file in set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                if served.contains(&name.as_str()) {
                    methods.extend(
                        service
                            .method
                            .iter()
                            .map(|m| (name.clone(), m.name().to_owned())),
                    );
                }
            }
        }
    }
    methods
}

/// Reflection over our contracts plus health, both reflection versions and the google.rpc error
/// details (so grpcurl can describe everything and decode rich errors). Only what this process
/// serves is listed: the descriptor set also holds the other Backbone services.
fn reflection_builder(
    services: &[&'static str],
    sets: &[&'static [u8]],
) -> tonic_reflection::server::Builder<'static> {
    let served = services.iter().copied().chain(ALWAYS_SERVED);
    let builder = sets.iter().copied().fold(
        tonic_reflection::server::Builder::configure().include_reflection_service(false),
        |builder, set| builder.register_encoded_file_descriptor_set(set),
    );
    served.fold(
        builder.register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET),
        |builder, name| builder.with_service_name(name),
    )
}

/// Aborts a background task (a worker, the admin server) when the service stops.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The admin port: `GET /metrics` (Prometheus text, HTTP/1.1 or h2c) and the same gRPC health
/// entries as the gRPC port, in plaintext whatever the gRPC port speaks (kubelet's gRPC probes
/// cannot do TLS). Nothing else is served here.
async fn serve_admin<H>(listener: TcpListener, health: H)
where
    H: Service<Request<hyper::body::Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    H::Future: Send + 'static,
{
    let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let mut health = health.clone();
        async move {
            if request.uri().path().starts_with("/grpc.health.v1.Health/") {
                return health.call(request).await;
            }
            let (status, content_type, text) = match (request.method(), request.uri().path()) {
                (&http::Method::GET, "/metrics") => (
                    http::StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    // The process collector reads /proc: off the async threads.
                    tokio::task::spawn_blocking(crate::metrics::render)
                        .await
                        .unwrap_or_default(),
                ),
                _ => (
                    http::StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "not found: the admin port serves GET /metrics and grpc.health.v1.Health\n"
                        .to_owned(),
                ),
            };
            let mut response = Response::new(Body::new(http_body_util::Full::new(
                bytes::Bytes::from(text),
            )));
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            Ok::<_, Infallible>(response)
        }
    });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "admin port: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let service = hyper_util::service::TowerToHyperService::new(service.clone());
        connections.spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// Answers UNAVAILABLE (with RetryInfo) for the gated services while they are not ready, so
/// callers fail fast instead of waiting on a database that is known to be down. Health and
/// reflection are never gated.
#[derive(Debug, Clone)]
struct ReadinessGateLayer {
    shared: Arc<Gate>,
}

/// What every copy of the gate shares, behind one reference count: tonic copies the whole
/// layer stack for every call, and each `Arc` in it is a counter both cores write.
#[derive(Debug)]
struct Gate {
    services: Vec<&'static str>,
    /// Mirrors the readiness channel (set by [`follow_readiness`]): reading a `watch` takes
    /// its lock, and copying a receiver bumps its shared counts, on every call.
    ready: AtomicBool,
}

impl<S> Layer<S> for ReadinessGateLayer {
    type Service = ReadinessGate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ReadinessGate {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct ReadinessGate<S> {
    inner: S,
    layer: ReadinessGateLayer,
}

impl<S, B> Service<Request<B>> for ReadinessGate<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let gate = &self.layer.shared;
        if !gate.ready.load(Ordering::Acquire)
            && crate::trace::calls_any(request.uri().path(), &gate.services)
        {
            let status = tonic::Status::from(&DbError::NotReady);
            return Either::Left(std::future::ready(Ok(status.into_http())));
        }
        Either::Right(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_get_tcp_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let socket = socket2::SockRef::from(&accepted);
        assert!(!socket.keepalive().expect("SO_KEEPALIVE"), "off by default");

        KEEPALIVE.apply(&accepted).expect("keepalive");
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(socket.tcp_keepalive_time().expect("idle"), KEEPALIVE.idle);
        assert_eq!(
            socket.tcp_keepalive_interval().expect("interval"),
            KEEPALIVE.interval
        );
        assert_eq!(
            socket.tcp_keepalive_retries().expect("probes"),
            KEEPALIVE.probes
        );
    }
}
