//! Metrics: the RED metrics of every gRPC call (rate, errors by code, duration), database pool
//! and background-worker gauges, recorded once through the OpenTelemetry API and read two ways:
//! pushed over OTLP when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and pulled as
//! Prometheus text from the admin port (`/metrics`).
//!
//! Names follow the OpenTelemetry semantic conventions (`rpc.server.call.duration`,
//! `db.client.connection.count`); the Prometheus exporter turns them into
//! `rpc_server_call_duration_seconds` and friends.

use std::{
    sync::{
        Arc, LazyLock, Mutex, OnceLock, Weak,
        atomic::{AtomicI64, Ordering},
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    KeyValue, global,
    metrics::{BoundHistogram, Counter, Gauge, Histogram, Meter, ObservableUpDownCounter},
};
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider},
};

/// The Prometheus registry `/metrics` renders: OpenTelemetry instruments plus the process
/// collector (resident memory, CPU, open files).
static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

/// Where every Backbone instrument lives.
const SCOPE: &str = "backbone";

/// Bucket bounds of the call-duration histogram, in seconds: from half a millisecond (a cached
/// read) to ten seconds (a checkout waiting on a slow gateway).
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// gRPC CANCELLED: recorded for calls whose client went away before the answer ended.
const CANCELLED: i64 = 1;

/// Builds the meter provider (Prometheus reader always, OTLP reader when asked for) and makes it
/// the global one. Returns it with the reason OTLP export is off, if it failed.
pub(crate) fn init(resource: Resource) -> (SdkMeterProvider, Option<String>) {
    let registry = REGISTRY.get_or_init(new_registry).clone();
    let mut provider = SdkMeterProvider::builder().with_resource(resource);
    let mut problems = Vec::new();
    match opentelemetry_prometheus::exporter()
        .with_registry(registry)
        .build()
    {
        Ok(exporter) => provider = provider.with_reader(exporter),
        Err(err) => problems.push(format!("prometheus: {err}")),
    }
    if crate::telemetry::otlp_requested("METRICS") {
        match opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
        {
            // The export interval comes from OTEL_METRIC_EXPORT_INTERVAL (60 s by default).
            Ok(exporter) => {
                provider = provider.with_reader(PeriodicReader::builder(exporter).build())
            }
            Err(err) => problems.push(format!("otlp: {err}")),
        }
    }
    let provider = provider.build();
    global::set_meter_provider(provider.clone());
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    (provider, problem)
}

fn new_registry() -> prometheus::Registry {
    let registry = prometheus::Registry::new();
    #[cfg(target_os = "linux")]
    {
        // Only fails if registered twice, which the OnceLock rules out.
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
    }
    registry
}

/// The Prometheus text exposition of every metric, for `GET /metrics`.
pub fn render() -> String {
    let Some(registry) = REGISTRY.get() else {
        return String::new();
    };
    let families = registry.gather();
    let mut text = String::new();
    if let Err(err) = prometheus::TextEncoder::new().encode_utf8(&families, &mut text) {
        tracing::warn!(error = %err, "encoding metrics failed");
    }
    text
}

fn meter() -> Meter {
    global::meter_provider().meter(SCOPE)
}

/// The per-call instruments, made on first use from the global provider (a no-op one when
/// telemetry was never initialised, as in tests that run services in-process).
struct RpcInstruments {
    duration: Histogram<f64>,
    /// Reports [`ACTIVE`]; kept so the callback lives as long as the process.
    _active: ObservableUpDownCounter<i64>,
}

/// Calls being served now, one counter per service. A call bumps an atomic; the SDK reads the
/// counters when metrics are collected, so no call pays for the SDK's attribute lookup (and its
/// lock) twice just to say it started and ended.
static ACTIVE: Mutex<Vec<(KeyValue, Arc<AtomicI64>)>> = Mutex::new(Vec::new());

/// The active-calls counter of `service`, made on first use.
fn active_calls(service: &KeyValue) -> Arc<AtomicI64> {
    let mut all = ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, count)) = all.iter().find(|(s, _)| s == service) {
        return count.clone();
    }
    let count = Arc::new(AtomicI64::new(0));
    all.push((service.clone(), count.clone()));
    count
}

static RPC: LazyLock<RpcInstruments> = LazyLock::new(|| {
    let meter = meter();
    RpcInstruments {
        duration: meter
            .f64_histogram("rpc.server.call.duration")
            .with_unit("s")
            .with_description(
                "Duration of gRPC calls, by service, method and status code: its count is the \
                 request rate, its non-zero codes the errors.",
            )
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build(),
        _active: meter
            .i64_observable_up_down_counter("rpc.server.active_requests")
            .with_description("gRPC calls being served now, by service.")
            .with_callback(|observer| {
                let all = ACTIVE
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (service, count) in all.iter() {
                    observer.observe(count.load(Ordering::Relaxed), std::slice::from_ref(service));
                }
            })
            .build(),
    }
});

/// gRPC status codes: 0 (OK) to 16 (UNAUTHENTICATED).
const STATUS_CODES: usize = 17;

/// The service and method labels of a call, built once per method for the whole process and
/// kept for its life: a copy per call is a pointer, where a reference count would be one more
/// counter both cores write on every call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RpcLabels(&'static Labels);

/// Every method's labels made so far: as many as the process serves methods, however many
/// servers it starts (tests start many).
static LABELS: Mutex<Vec<&'static Labels>> = Mutex::new(Vec::new());

#[derive(Debug)]
struct Labels {
    service: KeyValue,
    method: KeyValue,
    active: Arc<AtomicI64>,
    /// The duration histogram bound to this method's attributes, one per status code, bound
    /// when the code is first seen: a bound record skips the SDK's per-call hashing of four
    /// attributes and its map lookup under a lock (about 2,000 instructions a call).
    durations: [OnceLock<BoundHistogram<f64>>; STATUS_CODES],
}

impl RpcLabels {
    pub(crate) fn new(service: &str, method: &str) -> Self {
        let mut all = LABELS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = all
            .iter()
            .find(|l| l.service.value.as_str() == service && l.method.value.as_str() == method)
        {
            return Self(known);
        }
        let (service, method): (Arc<str>, Arc<str>) = (service.into(), method.into());
        let service = KeyValue::new("rpc.service", service);
        let labels: &'static Labels = Box::leak(Box::new(Labels {
            active: active_calls(&service),
            service,
            method: KeyValue::new("rpc.method", method),
            durations: std::array::from_fn(|_| OnceLock::new()),
        }));
        all.push(labels);
        Self(labels)
    }

    /// The `rpc.service` and `rpc.method` attributes, for the call's span.
    pub(crate) fn attributes(&self) -> [KeyValue; 2] {
        [self.0.service.clone(), self.0.method.clone()]
    }

    /// The labels of every call to a path the server does not serve, so a client cannot grow
    /// the number of series by inventing services or methods.
    pub(crate) fn other() -> Self {
        static OTHER: LazyLock<RpcLabels> = LazyLock::new(|| RpcLabels::new("_OTHER", "_OTHER"));
        *OTHER
    }
}

/// One call being measured: counted as active until it ends, then its duration is recorded with
/// its status. Dropped before a status was seen means the client cancelled.
#[derive(Debug)]
pub(crate) struct CallMeasure {
    labels: Option<RpcLabels>,
    started: Instant,
}

impl CallMeasure {
    pub(crate) fn start(labels: RpcLabels) -> Self {
        LazyLock::force(&RPC);
        labels.0.active.fetch_add(1, Ordering::Relaxed);
        Self {
            labels: Some(labels),
            started: Instant::now(),
        }
    }

    /// Records the call with its grpc-status; later calls (and the drop) do nothing.
    pub(crate) fn finish(&mut self, code: i64) {
        let Some(RpcLabels(labels)) = self.labels.take() else {
            return;
        };
        labels.active.fetch_sub(1, Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        let attributes = || {
            [
                KeyValue::new("rpc.system", "grpc"),
                labels.service.clone(),
                labels.method.clone(),
                KeyValue::new("rpc.grpc.status_code", code),
            ]
        };
        match usize::try_from(code)
            .ok()
            .and_then(|code| labels.durations.get(code))
        {
            Some(bound) => bound
                .get_or_init(|| RPC.duration.bind(&attributes()))
                .record(seconds),
            None => RPC.duration.record(seconds, &attributes()),
        }
    }
}

impl Drop for CallMeasure {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

/// What a connection pool reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Most connections it may open.
    pub max: usize,
    /// Connections open now.
    pub open: usize,
    /// Open connections not lent out.
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// Something whose pool can be observed; held weakly, so a stopped service is not kept alive.
pub trait ObservablePool: Send + Sync + 'static {
    /// The pool's state now.
    fn status(&self) -> PoolStatus;
}

/// Reports `pool` as `db.client.connection.*` gauges named `pool_name` until it is dropped.
pub fn observe_pool<P: ObservablePool>(pool_name: &'static str, pool: Weak<P>) {
    let meter = meter();
    let name = KeyValue::new("db.client.connection.pool.name", pool_name);
    let (count_pool, count_name) = (pool.clone(), name.clone());
    meter
        .i64_observable_gauge("db.client.connection.count")
        .with_description("Open database connections, by state (idle or used).")
        .with_callback(move |observer| {
            if let Some(status) = count_pool.upgrade().map(|p| p.status()) {
                let used = status.open.saturating_sub(status.idle);
                for (state, value) in [("idle", status.idle), ("used", used)] {
                    observer.observe(
                        gauge_value(value),
                        &[
                            count_name.clone(),
                            KeyValue::new("db.client.connection.state", state),
                        ],
                    );
                }
            }
        })
        .build();
    let (max_pool, max_name) = (pool.clone(), name.clone());
    meter
        .i64_observable_gauge("db.client.connection.max")
        .with_description("Most database connections the pool may open.")
        .with_callback(move |observer| {
            if let Some(status) = max_pool.upgrade().map(|p| p.status()) {
                observer.observe(gauge_value(status.max), std::slice::from_ref(&max_name));
            }
        })
        .build();
    meter
        .i64_observable_gauge("db.client.connection.pending_requests")
        .with_description("Calls waiting for a database connection.")
        .with_callback(move |observer| {
            if let Some(status) = pool.upgrade().map(|p| p.status()) {
                observer.observe(gauge_value(status.waiting), std::slice::from_ref(&name));
            }
        })
        .build();
}

fn gauge_value(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A background worker's instruments: passes by outcome, items handled, and when it last
/// succeeded (alert when `time() - backbone_worker_last_success_seconds` grows).
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    worker: KeyValue,
    passes: Counter<u64>,
    items: Counter<u64>,
    last_success: Gauge<f64>,
}

impl WorkerMetrics {
    /// Instruments for the worker called `worker` (`catalog.reservation_sweeper`).
    pub fn new(worker: &'static str) -> Self {
        let meter = meter();
        Self {
            worker: KeyValue::new("backbone.worker", worker),
            passes: meter
                .u64_counter("backbone.worker.passes")
                .with_description("Background worker passes, by outcome (ok or error).")
                .build(),
            items: meter
                .u64_counter("backbone.worker.items")
                .with_description("Items a background worker settled (reservations, orders).")
                .build(),
            last_success: meter
                .f64_gauge("backbone.worker.last_success")
                .with_unit("s")
                .with_description("Unix time of the worker's last successful pass.")
                .build(),
        }
    }

    /// Records one pass: `Ok(items)` settled, or an error.
    pub fn pass<E>(&self, outcome: &Result<usize, E>) {
        let worker = std::slice::from_ref(&self.worker);
        let result = match outcome {
            Ok(items) => {
                self.items
                    .add(u64::try_from(*items).unwrap_or(u64::MAX), worker);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                self.last_success.record(now.as_secs_f64(), worker);
                "ok"
            }
            Err(_) => "error",
        };
        self.passes.add(
            1,
            &[
                self.worker.clone(),
                KeyValue::new("backbone.worker.outcome", result),
            ],
        );
    }
}

/// Reports a gauge whose value `read` returns; `None` reports nothing (the source is gone).
pub fn observe_gauge(
    name: &'static str,
    description: &'static str,
    read: impl Fn() -> Option<usize> + Send + Sync + 'static,
) {
    meter()
        .i64_observable_gauge(name)
        .with_description(description)
        .with_callback(move |observer| {
            if let Some(value) = read() {
                observer.observe(gauge_value(value), &[]);
            }
        })
        .build();
}
