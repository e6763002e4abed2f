//! Logging, tracing and metrics (see [`crate::metrics`]): a `tracing` subscriber that writes human lines on a terminal and JSON
//! (with `trace_id`/`span_id`) otherwise, bridged to OpenTelemetry; spans are exported over OTLP
//! when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Exporting is best-effort: a missing or
//! unreachable collector is logged, never fatal.

use std::io::IsTerminal;

use opentelemetry::trace::SpanContext;
use opentelemetry::{
    global,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tracing::{Metadata, level_filters::LevelFilter, subscriber::Interest};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::FilterExt as _,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{LogFormat, TelemetryArgs};

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes pending spans.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    meters: SdkMeterProvider,
}

impl Telemetry {
    /// Flushes pending spans to the collector (bounded by the SDK's export timeout) and stops
    /// the exporter. Call it last, after the server has drained.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            // The collector may be gone; exiting cleanly matters more than these spans.
            tracing::warn!(error = %err, "flushing traces failed");
        }
        if let Err(err) = self.meters.shutdown() {
            tracing::warn!(error = %err, "flushing metrics failed");
        }
    }
}

/// True when the standard OTEL variables ask for OTLP export of `signal` (`TRACES`,
/// `METRICS`): an endpoint is set, and neither the SDK nor that signal's exporter is off.
pub(crate) fn otlp_requested(signal: &str) -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var(format!("OTEL_{signal}_EXPORTER"))
            .is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
}

/// Installs the global subscriber, propagator and tracer provider for `service` (the default
/// `service.name` when `OTEL_SERVICE_NAME` is unset). Call once, inside the Tokio runtime.
pub fn init(service: &'static str, args: &TelemetryArgs) -> Telemetry {
    global::set_text_map_propagator(TraceContextPropagator::new());

    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    // The sampler comes from OTEL_TRACES_SAMPLER / _ARG, read by the SDK's default config.
    let resource = resource.build();
    let (meters, metrics_error) = crate::metrics::init(resource.clone());
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    let mut export_error = None;
    let mut exporting = false;
    if otlp_requested("TRACES") {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => {
                provider = provider.with_batch_exporter(exporter);
                exporting = true;
            }
            Err(err) => export_error = Some(err.to_string()),
        }
    }
    // Without an exporter the provider still mints trace ids, so log lines carry them; and
    // with the default sampler, calls' spans are ids alone (nothing would read the rest).
    crate::trace::ids_only(!exporting && std::env::var_os("OTEL_TRACES_SAMPLER").is_none());
    let provider = provider.build();
    global::set_tracer_provider(provider.clone());

    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .or_else(|| EnvFilter::try_new(&args.log_filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = match args.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let fmt_layer = if json {
        let mut layer = json_subscriber::fmt::layer()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .with_target(true);
        // `trace_id` and `span_id` of the line's call, read when a line is written (nothing is
        // recorded per call for them).
        layer
            .inner_layer_mut()
            .add_multiple_dynamic_fields(|event, ctx, writer| {
                if let Some(ids) = line_span_context(event, ctx.current_span().id().cloned()) {
                    _ = writer.write_field("trace_id", ids.trace_id().to_string());
                    _ = writer.write_field("span_id", ids.span_id().to_string());
                }
            });
        layer.with_filter(filter.and(OutsideCallSpans)).boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .map_event_format(WithTraceId)
            .with_filter(filter.and(OutsideCallSpans))
            .boxed()
    };
    // The log filter applies to log lines only: spans (and so trace ids in logs, audit rows and
    // exported traces) keep flowing when an operator turns logging down to `warn`.
    // Per call, only what the spans need: code location, thread names, busy/idle timings and
    // activating an OpenTelemetry context on every poll cost ~5% of a trivial call's throughput
    // (make bench) and nothing here reads them; parents come from the tracing span tree, and a
    // span opened outside any (an outgoing call in a handler) is a child of the current
    // OpenTelemetry context: the SERVER span of the call being served.
    let otel_layer = tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_tracer(provider.tracer("backbone"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let installed = tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt_layer)
        .try_init();
    if installed.is_err() {
        // Tests start several services in one process; the first subscriber stays.
        tracing::debug!("a global tracing subscriber is already installed");
    }
    if let Some(err) = export_error {
        tracing::warn!(error = %err, "OTLP trace export is off: the exporter could not be built");
    }
    if let Some(err) = metrics_error {
        tracing::warn!(error = %err, "a metrics exporter could not be built");
    }
    Telemetry { provider, meters }
}

/// The OpenTelemetry span a log line belongs to: its `tracing` span's when it is written in one
/// that OpenTelemetry knows (an outgoing call's), else the current OpenTelemetry context's (the
/// call being served, see [`crate::trace::ServerTraceLayer`]). `current` is the registry's
/// current span (its id), whatever the writing layer's filter hides from it.
fn line_span_context(
    event: &tracing::Event<'_>,
    current: Option<tracing::span::Id>,
) -> Option<SpanContext> {
    let span = if event.is_root() {
        None
    } else if let Some(parent) = event.parent() {
        Some(parent.clone())
    } else {
        current
    };
    let from_span = span.and_then(|span| {
        tracing::dispatcher::get_default(|dispatch| {
            tracing_opentelemetry::get_otel_context(&span, dispatch)
        })
    });
    let ids = match from_span {
        Some(cx) => cx.span().span_context().clone(),
        None => opentelemetry::Context::map_current(|cx| cx.span().span_context().clone()),
    };
    ids.is_valid().then_some(ids)
}

/// Text lines start with the trace id of their call, when they belong to one.
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some(ids) = line_span_context(event, ctx.current_span().id().cloned()) {
            write!(writer, "trace_id={} ", ids.trace_id())?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// A per-layer filter that keeps the kit's call spans (see [`crate::trace`]) away from a log
/// layer: formatting their fields when each call opens (and freeing them when it ends) was the
/// largest part of a call's tracing cost (make bench), and lines logged during a call carry its
/// trace id anyway.
#[derive(Debug, Clone, Copy)]
struct OutsideCallSpans;

impl<S> tracing_subscriber::layer::Filter<S> for OutsideCallSpans {
    fn enabled(&self, meta: &Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        !crate::trace::is_call_span(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if crate::trace::is_call_span(meta) {
            Interest::never()
        } else {
            Interest::always()
        }
    }

    /// Every level: it hides by kind, not level, so the log filter's own level is the bound.
    /// Without a hint the combined filter had none, the subscriber's maximum level was TRACE, and
    /// every `debug!` and `trace!` of a dependency (h2 per frame, tokio-postgres per statement
    /// through the `log` bridge, whose maximum follows it) was checked against the filter at run
    /// time instead of being skipped where it is written: 4% of billing's instructions in a
    /// checkout (callgrind).
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_filter_is_the_subscribers_level_bound() {
        for (directives, level) in [("warn", LevelFilter::WARN), ("info", LevelFilter::INFO)] {
            let lines = tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(EnvFilter::new(directives).and(OutsideCallSpans));
            let subscriber = tracing_subscriber::registry().with(lines);
            // What `log` and the callsites skip by: anything above it costs nothing.
            assert_eq!(
                tracing::Subscriber::max_level_hint(&subscriber),
                Some(level),
                "{directives}"
            );
        }
    }
}
