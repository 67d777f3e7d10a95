//! The process's Prometheus metrics, one registry for the whole process (so that the layers
//! that see an event record it without being handed anything: the error conversions, the
//! connection acceptor, garbage collection), encoded by `prometheus-client` at `/metrics`.
//!
//! Request series are labelled by route *template* (`/v2/{name}/manifests/{reference}`),
//! never by repository name or digest, so the number of series stays bounded whatever
//! clients ask for; label values are `&'static str` and small integers, so recording a
//! request allocates nothing once its series exists.

use std::sync::LazyLock;
use std::time::Duration;

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The labels of a request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

/// The labels of a request-latency series (the status is left out: a histogram per status
/// would multiply the series by every status a route answers).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub route: &'static str,
    pub method: &'static str,
}

/// The labels of a connection-pool gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `read` or `write`.
    pub pool: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    received: Counter,
    sent: Counter,
    uploads_open: Gauge,
    storage_free: Gauge,
    storage_low: Gauge,
    storage_errors: Counter,
    database_errors: Counter,
    pool_open: Family<PoolLabels, Gauge>,
    pool_idle: Family<PoolLabels, Gauge>,
    pool_max: Family<PoolLabels, Gauge>,
    connections_open: Gauge,
    connections_refused: Counter,
    gc_runs: Counter,
    gc_blobs_freed: Counter,
    gc_bytes_freed: Counter,
    gc_duration: Histogram,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "berth_http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        // 1 ms .. ~65 s.
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        registry.register(
            "berth_http_request_duration_seconds",
            "Time from a request's arrival to its response's headers, by route template and method",
            latency.clone(),
        );
        let received = Counter::default();
        registry.register(
            "berth_http_received_bytes",
            "Request body bytes received",
            received.clone(),
        );
        let sent = Counter::default();
        registry.register(
            "berth_http_sent_bytes",
            "Response body bytes sent (as the response declared them, or as its body yielded them)",
            sent.clone(),
        );
        let uploads_open = Gauge::default();
        registry.register(
            "berth_uploads_open",
            "Upload sessions in the metadata store (counted when scraped)",
            uploads_open.clone(),
        );
        let storage_free = Gauge::default();
        registry.register(
            "berth_storage_free_bytes",
            "Free bytes on the filesystem blob store's disk (measured when scraped; absent on S3)",
            storage_free.clone(),
        );
        let storage_low = Gauge::default();
        registry.register(
            "berth_storage_low_space",
            "1 while the filesystem blob store is below storage.min_free_bytes (new uploads are refused), else 0",
            storage_low.clone(),
        );
        let storage_errors = Counter::default();
        registry.register(
            "berth_storage_errors",
            "Blob store failures answered to a client (500 or 503)",
            storage_errors.clone(),
        );
        let database_errors = Counter::default();
        registry.register(
            "berth_database_errors",
            "Database failures answered to a client",
            database_errors.clone(),
        );
        let pool_open = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "berth_database_connections",
            "Database connections open, by pool (read when scraped)",
            pool_open.clone(),
        );
        let pool_idle = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "berth_database_connections_idle",
            "Database connections open and not in use, by pool",
            pool_idle.clone(),
        );
        let pool_max = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "berth_database_connections_max",
            "The most database connections a pool opens",
            pool_max.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "berth_connections_open",
            "Client connections open (server.max_connections caps them)",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "berth_connections_refused",
            "Client connections closed at once because server.max_connections were open",
            connections_refused.clone(),
        );
        let gc_runs = Counter::default();
        registry.register(
            "berth_gc_runs",
            "Garbage collection runs finished",
            gc_runs.clone(),
        );
        let gc_blobs_freed = Counter::default();
        registry.register(
            "berth_gc_blobs_freed",
            "Blobs deleted by garbage collection",
            gc_blobs_freed.clone(),
        );
        let gc_bytes_freed = Counter::default();
        registry.register(
            "berth_gc_bytes_freed",
            "Bytes of blobs deleted by garbage collection",
            gc_bytes_freed.clone(),
        );
        // 0.1 s .. ~1.8 h.
        let gc_duration = Histogram::new(exponential_buckets(0.1, 3.0, 11));
        registry.register(
            "berth_gc_duration_seconds",
            "How long garbage collection runs took",
            gc_duration.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            received,
            sent,
            uploads_open,
            storage_free,
            storage_low,
            storage_errors,
            database_errors,
            pool_open,
            pool_idle,
            pool_max,
            connections_open,
            connections_refused,
            gc_runs,
            gc_blobs_freed,
            gc_bytes_freed,
            gc_duration,
        }
    }

    /// One answered request.
    pub fn request(&self, route: &'static str, method: &Method, status: u16, latency: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { route, method })
            .observe(latency.as_secs_f64());
    }

    pub fn received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    pub fn sent(&self, bytes: u64) {
        self.sent.inc_by(bytes);
    }

    pub fn storage_error(&self) {
        self.storage_errors.inc();
    }

    pub fn database_error(&self) {
        self.database_errors.inc();
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// The values only known by asking the stores, set just before encoding.
    pub(crate) fn set_uploads_open(&self, n: u64) {
        self.uploads_open.set(n as i64);
    }

    pub(crate) fn set_space(&self, free: u64, low: bool) {
        self.storage_free.set(free.min(i64::MAX as u64) as i64);
        self.storage_low.set(low as i64);
    }

    pub(crate) fn set_pool(&self, pool: &'static str, open: u32, idle: u32, max: u32) {
        let labels = PoolLabels { pool };
        self.pool_open.get_or_create(&labels).set(open as i64);
        self.pool_idle.get_or_create(&labels).set(idle as i64);
        self.pool_max.get_or_create(&labels).set(max as i64);
    }

    /// The text exposition (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records one finished garbage collection run: the blobs it deleted, their bytes and how
/// long it took. Called by the collector (`berth gc` and the scheduled runs) once per run.
pub fn record_gc_run(blobs_freed: u64, bytes_freed: u64, duration: Duration) {
    let m = metrics();
    m.gc_runs.inc();
    m.gc_blobs_freed.inc_by(blobs_freed);
    m.gc_bytes_freed.inc_by(bytes_freed);
    m.gc_duration.observe(duration.as_secs_f64());
}

/// The method as a static label: the registry's and the API's methods, anything else `other`
/// (a client inventing methods must not invent series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
