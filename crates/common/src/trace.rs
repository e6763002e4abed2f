//! Trace context across gRPC calls: a server layer that continues the caller's W3C
//! `traceparent` and opens the SERVER span of each call, and a client layer that opens the
//! CLIENT span of each outgoing call and injects its context into the request headers.

use std::{
    borrow::Cow,
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderName, Request, Response};
use opentelemetry::{
    KeyValue, global,
    trace::{
        FutureExt as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags,
        TraceState, Tracer as _, WithContext,
    },
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

/// Whether `path` (`/package.Service/Method`) calls one of `services` (`package.Service`).
pub(crate) fn calls_any(path: &str, services: &[&str]) -> bool {
    let Some(path) = path.strip_prefix('/') else {
        return false;
    };
    services.iter().any(|service| {
        path.strip_prefix(service)
            .is_some_and(|method| method.starts_with('/'))
    })
}

/// Header names looked up on every call, made once: a name given as a `&str` is parsed and
/// validated again on each lookup.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The grpc-status of a response, from its headers (trailers-only answers) or trailers: one to
/// three ASCII digits.
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    let digits = headers.get(GRPC_STATUS)?.as_bytes();
    if digits.is_empty() || digits.len() > 3 {
        return None;
    }
    digits.iter().try_fold(0, |code, digit| {
        digit
            .is_ascii_digit()
            .then(|| code * 10 + i32::from(digit - b'0'))
    })
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
    if !span.is_recording() {
        return;
    }
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
    /// Behind one reference count: tonic copies the whole layer stack for every call, and
    /// each `Arc` in it is a counter both cores write.
    shared: Arc<Traced>,
}

struct Traced {
    /// Every method this server answers, by path (`/pkg.Service/Method`); calls to any other
    /// path share one metrics label.
    /// Keyed by foldhash: the map never changes after start-up, so nothing a caller sends can
    /// grow it, and a lookup costs a fraction of SipHash's.
    known: HashMap<String, Method, foldhash::fast::RandomState>,
    tracer: global::BoxedTracer,
    /// Spans get ids but are not recorded (see [`ids_only`]).
    ids_only: bool,
}

/// Whether SERVER spans are only given ids: set by [`crate::telemetry::init`] when no span
/// exporter is configured and the sampler is the default one.
static IDS_ONLY: AtomicBool = AtomicBool::new(false);

/// Makes the SERVER spans of layers built from now on ids only (`true`) or recorded.
///
/// A recorded span nobody exports is work thrown away: its attributes, status and timings are
/// collected and then dropped when it ends (about 2,500 instructions of a trivial call,
/// callgrind). Without an exporter a call's span is therefore a span context alone: a trace id
/// (the caller's, or a new one) and a new span id, with the flags and trace state the default
/// sampler (parent-based, always on) would give it. Log lines and outgoing calls carry exactly
/// what they carried before; nothing that is exported changes.
pub(crate) fn ids_only(on: bool) {
    IDS_ONLY.store(on, Ordering::Relaxed);
}

impl std::fmt::Debug for ServerTraceLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTraceLayer")
            .field("methods", &self.shared.known.len())
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
            shared: Arc::new(Traced {
                known,
                tracer: global::tracer(TRACER),
                ids_only: IDS_ONLY.load(Ordering::Relaxed),
            }),
        }
    }
}

/// A span context for a call continuing `parent` (or starting a trace), as the default
/// sampler would make it, with nothing recorded (see [`ids_only`]).
fn span_context_only(parent: &opentelemetry::Context) -> SpanContext {
    use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
    let ids = RandomIdGenerator::default();
    let span = parent.span();
    let parent = span.span_context();
    if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            ids.new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    } else {
        SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        )
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
        let shared = &*self.layer.shared;
        let known = shared.known.get(path);
        let measure = CallMeasure::start(known.map_or_else(RpcLabels::other, |k| k.labels));
        // A caller without a `traceparent` starts a trace: nothing to continue.
        let parent = if request.headers().contains_key(TRACEPARENT) {
            global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())))
        } else {
            opentelemetry::Context::new()
        };
        if shared.ids_only {
            let context = span_context_only(&parent);
            return (measure, parent.with_remote_span_context(context));
        }
        let (name, [service, method]) = match known {
            Some(known) => (Cow::Borrowed(known.name), known.labels.attributes()),
            None => {
                let (service, method) = split_path(path);
                (
                    Cow::Owned(path.strip_prefix('/').unwrap_or(path).to_owned()),
                    [
                        KeyValue::new("rpc.service", service.to_owned()),
                        KeyValue::new("rpc.method", method.to_owned()),
                    ],
                )
            }
        };
        // Room for the status code set at the end, so the SDK does not grow the vector then.
        let mut attributes = Vec::with_capacity(4);
        attributes.extend([KeyValue::new("rpc.system", "grpc"), service, method]);
        let tracer = &shared.tracer;
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        (measure, parent.with_span(span))
    }
}

impl<S, B, RB> Service<Request<B>> for ServerTrace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<TracedBody<RB>>;
    type Error = S::Error;
    type Future = TracedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (measure, call) = self.start(&request);
        TracedCall {
            inner: Box::pin(self.inner.call(request).with_context(call.clone())),
            call: Some(call),
            measure: Some(measure),
        }
    }
}

/// The answer of a call made through [`ServerTrace`]: the call runs with its span's context
/// current, and the span and metrics are finished when its status is known (from the headers
/// of a trailers-only answer, else from the body's trailers).
///
/// The inner layers' futures are boxed here, once, so that this future stays small: tonic
/// moves it a few times before polling it, and copying the whole unboxed stack each time cost
/// more than the allocation (callgrind).
pub struct TracedCall<F> {
    inner: Pin<Box<WithContext<F>>>,
    call: Option<opentelemetry::Context>,
    measure: Option<CallMeasure>,
}

impl<F> std::fmt::Debug for TracedCall<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedCall")
            .field("measure", &self.measure)
            .finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for TracedCall<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<TracedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // An error (the connection went away) leaves span and measure to their drops: the
        // measure records CANCELLED, the span ends unset.
        let response = std::task::ready!(this.inner.as_mut().poll(cx))?;
        let trailers_only = grpc_status(response.headers());
        let (call, measure) = (this.call.take(), this.measure.take());
        // An access-log line for debugging, off at the default `info` filter.
        if tracing::enabled!(tracing::Level::DEBUG)
            && let Some(call) = &call
        {
            let _current = call.clone().attach();
            tracing::debug!(grpc_status = trailers_only.unwrap_or(0), "call answered");
        }
        // A trailers-only answer is finished now; otherwise the body finishes it at its trailers.
        let (call, measure) = match trailers_only {
            Some(code) => {
                if let Some(call) = &call {
                    finish_span(call, code);
                }
                if let Some(mut measure) = measure {
                    measure.finish(code.into());
                }
                (None, None)
            }
            None => (call, measure),
        };
        Poll::Ready(Ok(response.map(|body| TracedBody {
            inner: body,
            call,
            measure,
        })))
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
    fn id_only_spans_continue_the_callers_trace_or_start_a_sampled_one() {
        use opentelemetry::trace::{SpanId, TraceId};
        let root = span_context_only(&opentelemetry::Context::new());
        assert!(root.is_valid());
        assert!(root.is_sampled(), "the default sampler records new traces");

        for flags in [TraceFlags::SAMPLED, TraceFlags::default()] {
            let caller = SpanContext::new(
                TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c),
                SpanId::from(0xb7ad_6b71_6920_3331),
                flags,
                true,
                TraceState::from_key_value([("vendor", "value")]).expect("trace state"),
            );
            let parent = opentelemetry::Context::new().with_remote_span_context(caller.clone());
            let child = span_context_only(&parent);
            assert_eq!(child.trace_id(), caller.trace_id());
            assert_ne!(child.span_id(), caller.span_id());
            assert_eq!(child.trace_flags(), flags, "the caller's sampling decision");
            assert_eq!(child.trace_state(), caller.trace_state());
            assert!(!child.is_remote());
        }
    }

    #[test]
    fn paths_call_their_service_only() {
        let services = ["backbone.catalog.v1.CatalogService"];
        assert!(calls_any(
            "/backbone.catalog.v1.CatalogService/GetProduct",
            &services
        ));
        for other in [
            "/backbone.catalog.v1.CatalogServiceX/GetProduct",
            "/backbone.catalog.v1.CatalogService",
            "backbone.catalog.v1.CatalogService/GetProduct",
            "/grpc.health.v1.Health/Check",
            "/",
        ] {
            assert!(!calls_any(other, &services), "{other}");
        }
    }

    #[test]
    fn path_splits_into_service_and_method() {
        assert_eq!(
            split_path("/backbone.catalog.v1.CatalogService/GetProduct"),
            ("backbone.catalog.v1.CatalogService", "GetProduct")
        );
        assert_eq!(split_path("/odd"), ("odd", ""));
    }
}
