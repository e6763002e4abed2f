//! Trace context across gRPC calls: a server layer that continues the caller's W3C
//! `traceparent` and opens the SERVER span of each call, and a client layer that opens the
//! CLIENT span of each outgoing call and injects its context into the request headers.

use std::{
    borrow::Cow,
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderMap, Request, Response};
use opentelemetry::{
    KeyValue, global,
    trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _, Tracer as _},
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use tower::{Layer, Service};
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{CallMeasure, RpcLabels};

/// `package.Service` and `Method` of a gRPC path `/package.Service/Method`.
fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

/// The grpc-status of a response, from its headers (trailers-only answers) or trailers.
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Whether a call answered with `code` is a span error: for SERVER spans only server-side
/// failures are, the way the OpenTelemetry gRPC conventions say (client mistakes are not).
fn is_span_error(code: i32, server: bool) -> bool {
    let server_fault = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
    code != 0 && (!server || server_fault)
}

/// Records the status of an answer on the OpenTelemetry span of `cx` and ends it.
fn finish_span(cx: &opentelemetry::Context, code: i32) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
    if is_span_error(code, true) {
        span.set_status(Status::error(""));
    }
    span.end();
}

/// The name of the kit's CLIENT call spans, as `tracing` sees them.
const CALL_SPAN: &str = "grpc";

/// Whether `meta` describes a call span opened by this module.
pub(crate) fn is_call_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.name() == CALL_SPAN && meta.target() == module_path!()
}

/// The trace id of the current call (hex), for audit rows and error reports: the current
/// `tracing` span's when it has one (an outgoing call), else the call being served.
pub fn current_trace_id() -> Option<String> {
    let span = Span::current();
    let trace_id = if span.is_none() {
        opentelemetry::Context::map_current(|cx| cx.span().span_context().trace_id())
    } else {
        span.context().span().span_context().trace_id()
    };
    (trace_id != opentelemetry::TraceId::INVALID).then(|| trace_id.to_string())
}

/// Span names are `package.Service/Method`, kept once per process for the methods a server
/// answers: a span name is a `Cow<'static, str>`, so a borrowed one costs nothing per call.
fn interned(name: String) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = names.iter().find(|known| **known == name) {
        return known;
    }
    let leaked: &'static str = name.leak();
    names.push(leaked);
    leaked
}

/// What the server layer knows of a method it answers.
#[derive(Debug, Clone)]
struct Method {
    /// Its metrics labels.
    labels: RpcLabels,
    /// Its span name, `package.Service/Method`.
    name: &'static str,
}

/// Server layer: one SERVER span per call, child of the caller's `traceparent` when present,
/// and the call's metrics (active calls, duration by status code).
///
/// The span is an OpenTelemetry span made with the tracer directly, not a `tracing` span: that
/// costs a fraction of going through the `tracing` registry and its layers on every call (make
/// bench). Its context is the current OpenTelemetry context while the call runs, so log lines
/// carry its ids and the `tracing` spans of outgoing calls are its children.
#[derive(Clone)]
pub struct ServerTraceLayer {
    /// Every method this server answers, by path (`/pkg.Service/Method`); calls to any other
    /// path share one metrics label.
    known: Arc<HashMap<String, Method>>,
    tracer: Arc<global::BoxedTracer>,
}

impl std::fmt::Debug for ServerTraceLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTraceLayer")
            .field("methods", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl ServerTraceLayer {
    /// A layer for a server that answers these (`package.Service`, `Method`) pairs, with the
    /// global tracer (set up by [`crate::telemetry::init`]).
    pub fn new<'a>(methods: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let known = methods
            .into_iter()
            .map(|(service, method)| {
                let path = format!("/{service}/{method}");
                let method = Method {
                    labels: RpcLabels::new(service, method),
                    name: interned(path[1..].to_owned()),
                };
                (path, method)
            })
            .collect();
        Self {
            known: Arc::new(known),
            tracer: Arc::new(global::tracer(TRACER)),
        }
    }
}

/// The instrumentation scope of the kit's spans.
const TRACER: &str = "backbone";

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`ServerTraceLayer`].
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
    layer: ServerTraceLayer,
}

impl<S> ServerTrace<S> {
    /// The metrics and SERVER span of a call to `request`.
    fn start<B>(&self, request: &Request<B>) -> (CallMeasure, opentelemetry::Context) {
        let path = request.uri().path();
        let (labels, name, [service, method]) = match self.layer.known.get(path) {
            Some(known) => (
                known.labels.clone(),
                Cow::Borrowed(known.name),
                known.labels.attributes(),
            ),
            None => {
                let (service, method) = split_path(path);
                (
                    RpcLabels::other(),
                    Cow::Owned(path.strip_prefix('/').unwrap_or(path).to_owned()),
                    [
                        KeyValue::new("rpc.service", service.to_owned()),
                        KeyValue::new("rpc.method", method.to_owned()),
                    ],
                )
            }
        };
        let measure = CallMeasure::start(labels);
        // A caller without a `traceparent` starts a trace: nothing to continue.
        let parent = if request.headers().contains_key("traceparent") {
            global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())))
        } else {
            opentelemetry::Context::new()
        };
        let tracer = &*self.layer.tracer;
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("rpc.system", "grpc"), service, method])
            .start_with_context(tracer, &parent);
        (measure, parent.with_span(span))
    }
}

impl<S, B, RB> Service<Request<B>> for ServerTrace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body + Send + 'static,
    RB::Data: Send,
{
    type Response = Response<TracedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut measure, call) = self.start(&request);
        let future = self.inner.call(request).with_context(call.clone());
        Box::pin(async move {
            let response = future.await?;
            let trailers_only = grpc_status(response.headers());
            if let Some(code) = trailers_only {
                finish_span(&call, code);
                measure.finish(code.into());
            }
            // An access-log line for debugging, off at the default `info` filter.
            if tracing::enabled!(tracing::Level::DEBUG) {
                let _current = call.clone().attach();
                tracing::debug!(grpc_status = trailers_only.unwrap_or(0), "call answered");
            }
            let pending = trailers_only.is_none();
            Ok(response.map(|body| TracedBody {
                inner: body,
                call: pending.then_some(call),
                measure: pending.then_some(measure),
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the grpc-status of its trailers on the call's span and
    /// in its metrics (a body dropped before its trailers is a cancelled call).
    #[derive(Debug)]
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        call: Option<opentelemetry::Context>,
        measure: Option<CallMeasure>,
    }
}

impl<B: http_body::Body> http_body::Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = grpc_status(trailers)
        {
            if let Some(call) = this.call.take() {
                finish_span(&call, code);
            }
            if let Some(measure) = this.measure.as_mut() {
                measure.finish(code.into());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The CLIENT span of an outgoing call to `path` (`/package.Service/Method`): its name is the
/// path without the slash, and every field is a borrowed string, so making it formats and
/// allocates nothing. Its parent is the current `tracing` span, or else the call being served.
fn client_span(path: &str) -> Span {
    let (service, method) = split_path(path);
    tracing::info_span!(
        CALL_SPAN,
        otel.name = path.strip_prefix('/').unwrap_or(path),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    )
}

/// Client layer: one CLIENT span per outgoing call, its context injected as `traceparent`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTraceLayer;

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTrace { inner }
    }
}

/// The service made by [`ClientTraceLayer`].
#[derive(Debug, Clone)]
pub struct ClientTrace<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for ClientTrace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let span = client_span(request.uri().path());
        let context = span.context();
        global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut HeaderInjector(request.headers_mut()))
        });
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = future.await?;
            // Unary answers carry their status in trailers that this layer does not wait for;
            // an error answered before the body is seen here.
            if let Some(code) = grpc_status(response.headers()) {
                span.set_attribute("rpc.grpc.status_code", i64::from(code));
                if is_span_error(code, false) {
                    span.set_status(Status::error(""));
                }
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_splits_into_service_and_method() {
        assert_eq!(
            split_path("/backbone.catalog.v1.CatalogService/GetProduct"),
            ("backbone.catalog.v1.CatalogService", "GetProduct")
        );
        assert_eq!(split_path("/odd"), ("odd", ""));
    }
}
