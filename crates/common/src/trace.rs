//! Trace context across gRPC calls: a server layer that continues the caller's W3C
//! `traceparent` and opens the SERVER span of each call, and a client layer that opens the
//! CLIENT span of each outgoing call and injects its context into the request headers.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use http::{HeaderMap, Request, Response};
use opentelemetry::{
    global,
    trace::{Status, TraceContextExt as _},
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

/// Records the status on the span, marking server-side failures as span errors the way the
/// OpenTelemetry gRPC conventions do for SERVER spans (client mistakes are not span errors).
///
/// Set on the OpenTelemetry span directly, not recorded as `tracing` fields: a recorded field
/// makes the JSON log layer serialise all of the span's fields again, on every call.
fn record_status(span: &Span, code: i32, server: bool) {
    span.set_attribute("rpc.grpc.status_code", i64::from(code));
    let server_fault = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
    if code != 0 && (!server || server_fault) {
        span.set_status(Status::error(""));
    }
}

/// Whether the call span carries its trace id as a field, for the text log format (it prints
/// span fields). JSON lines get `trace_id` from the span context when one is written, so only
/// the text format pays for recording it on every call.
static TRACE_ID_FIELD: AtomicBool = AtomicBool::new(false);

/// Asks call spans to carry a `trace_id` field (see [`TRACE_ID_FIELD`]).
pub(crate) fn record_trace_id_fields() {
    TRACE_ID_FIELD.store(true, Ordering::Relaxed);
}

/// The span of a call to `path` (`/package.Service/Method`): its name is the path without
/// the slash, and every field is a borrowed string, so making it formats and allocates nothing.
fn rpc_span(kind: &'static str, path: &str) -> Span {
    let (service, method) = split_path(path);
    tracing::info_span!(
        "grpc",
        otel.name = path.strip_prefix('/').unwrap_or(path),
        otel.kind = kind,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        trace_id = tracing::field::Empty,
    )
}

/// Records the trace id on a call span, for the text log format only; call it once the span's
/// parent is set (reading the context starts the span, which fixes its trace).
fn note_trace_id(span: &Span) {
    if TRACE_ID_FIELD.load(Ordering::Relaxed) {
        let trace_id = span.context().span().span_context().trace_id();
        if trace_id != opentelemetry::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(trace_id));
        }
    }
}

/// The trace id of the current span (hex), for audit rows and error reports.
pub fn current_trace_id() -> Option<String> {
    let trace_id = Span::current().context().span().span_context().trace_id();
    (trace_id != opentelemetry::TraceId::INVALID).then(|| trace_id.to_string())
}

/// Server layer: one SERVER span per call, child of the caller's `traceparent` when present,
/// and the call's metrics (active calls, duration by status code).
#[derive(Debug, Clone)]
pub struct ServerTraceLayer {
    /// The metrics labels of every method this server answers, by path (`/pkg.Service/Method`);
    /// calls to any other path share one label.
    known: Arc<HashMap<String, RpcLabels>>,
}

impl ServerTraceLayer {
    /// A layer for a server that answers these (`package.Service`, `Method`) pairs.
    pub fn new<'a>(methods: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let known = methods
            .into_iter()
            .map(|(service, method)| {
                (
                    format!("/{service}/{method}"),
                    RpcLabels::new(service, method),
                )
            })
            .collect();
        Self {
            known: Arc::new(known),
        }
    }
}

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace {
            inner,
            known: self.known.clone(),
        }
    }
}

/// The service made by [`ServerTraceLayer`].
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
    known: Arc<HashMap<String, RpcLabels>>,
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
        let labels = self.known.get(request.uri().path()).cloned();
        let mut measure = CallMeasure::start(labels.unwrap_or_else(RpcLabels::other));
        let span = rpc_span("server", request.uri().path());
        // A caller without a `traceparent` starts a trace: nothing to continue.
        if request.headers().contains_key("traceparent") {
            let parent =
                global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
            // Only fails when the span is disabled by the filter: then there is nothing to link.
            let _ = span.set_parent(parent);
        }
        note_trace_id(&span);
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = future.await?;
            let trailers_only = grpc_status(response.headers());
            if let Some(code) = trailers_only {
                record_status(&span, code, true);
                measure.finish(code.into());
            }
            // An access-log line for debugging, off at the default `info` filter.
            tracing::debug!(parent: &span, grpc_status = trailers_only.unwrap_or(0), "call answered");
            let pending = trailers_only.is_none();
            Ok(response.map(|body| TracedBody {
                inner: body,
                span: pending.then_some(span),
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
        span: Option<Span>,
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
            if let Some(span) = this.span.as_ref() {
                record_status(span, code, true);
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
        let span = rpc_span("client", request.uri().path());
        let context = span.context();
        global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut HeaderInjector(request.headers_mut()))
        });
        note_trace_id(&span);
        let future = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let response = future.await?;
            // Unary answers carry their status in trailers that this layer does not wait for;
            // an error answered before the body is seen here.
            if let Some(code) = grpc_status(response.headers()) {
                record_status(&span, code, false);
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
