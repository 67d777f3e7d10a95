//! Running Berth in production: liveness and readiness probes (`/healthz`, `/readyz`),
//! Prometheus metrics (`/metrics`), the per-request middleware that feeds them, and the
//! connection guards that keep clients from hoarding connections.

pub mod connections;
pub mod health;
pub mod metrics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::Config;
use crate::content::Content;
use connections::{Activity, CountedBody, WatchedBody};
use health::{Check, Readiness};

/// What the probes, the metrics and the request middleware share.
pub struct Ops {
    pub readiness: Readiness,
    content: Arc<Content>,
    /// `server.body_timeout_seconds`.
    pub body_timeout: Duration,
    /// `server.log_probes`: the probes and `/metrics` go through the request log (and are
    /// counted in the metrics) like any other route.
    pub log_probes: bool,
    /// `/metrics` is served on the main port (`metrics.enabled`, no `metrics.listen`).
    pub metrics_on_main_port: bool,
}

/// What the disk-space check reads (the blob store's last measure).
#[derive(Clone)]
struct SpaceOf {
    content: Arc<Content>,
}

impl Ops {
    /// The probes over `content`'s stores: the database answers a query, the blob store is
    /// reachable. A further readiness condition is one more [`Readiness::with`].
    pub fn new(content: Arc<Content>, config: &Config) -> Ops {
        let meta = content.metadata().clone();
        let blobs = content.blob_store().clone();
        let space = SpaceOf {
            content: content.clone(),
        };
        let readiness = Readiness::new(vec![
            Check::new("database", move || {
                let meta = meta.clone();
                async move { meta.ping().await.map_err(|e| e.to_string()) }
            }),
            Check::new("blob store", move || {
                let blobs = blobs.clone();
                async move { blobs.reachable().await.map_err(|e| e.to_string()) }
            }),
            // Advisory: pulls go on while new uploads are refused, so a replica low on
            // space stays in service and says so.
            Check::advisory("disk space", move || {
                let space = space.content.blob_store().space();
                async move {
                    match space {
                        Some(s) if s.low() => Err(format!(
                            "{} bytes free, below storage.min_free_bytes ({}): new uploads are refused until space is freed",
                            s.free_bytes, s.min_free_bytes
                        )),
                        _ => Ok(()),
                    }
                }
            }),
        ]);
        Ops {
            readiness,
            content,
            body_timeout: Duration::from_secs(config.server.body_timeout_seconds),
            log_probes: config.server.log_probes,
            metrics_on_main_port: config.metrics.enabled && config.metrics.listen.is_empty(),
        }
    }
}

/// The routes the main port serves besides the registry: the probes, and `/metrics` unless
/// it has a port of its own or is off. Unauthenticated in every auth mode.
pub fn routes(ops: Arc<Ops>) -> Router {
    let mut routes = probes(ops.clone());
    if ops.metrics_on_main_port {
        routes = routes.merge(metrics_router(ops));
    }
    routes
}

/// `/healthz` and `/readyz`.
pub fn probes(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ops)
}

/// `/metrics`.
pub fn metrics_router(ops: Arc<Ops>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(ops)
}

/// The process serves.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Every readiness check passes: 200; otherwise 503 with the report naming the failing
/// checks and why.
async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let report = ops.readiness.report().await;
    let status = if report.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(report.as_ref().clone()),
    )
        .into_response()
}

/// How long the stores may take to answer a scrape's questions.
const SCRAPE_LIMIT: Duration = Duration::from_secs(2);

async fn scrape(State(ops): State<Arc<Ops>>) -> Response {
    let m = metrics::metrics();
    let meta = ops.content.metadata();
    for pool in meta.pool_usage() {
        m.set_pool(pool.pool, pool.open, pool.idle, pool.max);
    }
    // A database that does not answer leaves the last count in place (readiness says why).
    if let Ok(Ok(n)) = tokio::time::timeout(SCRAPE_LIMIT, meta.count_uploads()).await {
        m.set_uploads_open(n);
    }
    if let Some(space) = ops.content.blob_store().space() {
        m.set_space(space.free_bytes, space.low());
    }
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], m.encode()).into_response()
}

/// Per request: the route template, method, status and latency into the metrics, the
/// request body watched for stalls and counted, the response body counted, and the request
/// marked in flight on its connection until its response is done.
pub async fn observe(State(ops): State<Arc<Ops>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_template(&req);
    let method = req.method().clone();
    let busy = req.extensions().get::<Activity>().map(Activity::busy);
    let stall = ops.body_timeout;
    let req = req.map(|b| match http_body::Body::is_end_stream(&b) {
        true => b,
        false => Body::new(WatchedBody::new(b, stall)),
    });
    let res = next.run(req).await;
    metrics::metrics().request(route, &method, res.status().as_u16(), started.elapsed());
    res.map(|b| Body::new(CountedBody::new(b, busy)))
}

/// The route a request matched, as a template without repository names or digests.
fn route_template(req: &Request) -> &'static str {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v2/") {
        return match crate::registry::Route::parse(rest) {
            Some(route) => route.template(),
            None => "/v2/<unknown>",
        };
    }
    if path == "/v2" {
        return "/v2/";
    }
    match req.extensions().get::<MatchedPath>() {
        Some(matched) => intern(matched.as_str()),
        None => "<unmatched>",
    }
}

/// A matched route's pattern as a `&'static str`, its `{param}`s written `<param>` like the
/// `/v2` templates (braces in label values trip some parsers). Patterns are the router's
/// own (a fixed set), so each is converted and leaked once and found again by a lookup that
/// allocates nothing.
fn intern(pattern: &str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{LazyLock, RwLock};
    static PATTERNS: LazyLock<RwLock<HashMap<&'static str, &'static str>>> =
        LazyLock::new(|| RwLock::new(HashMap::new()));
    if let Some(label) = PATTERNS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(pattern)
    {
        return label;
    }
    let mut patterns = PATTERNS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(label) = patterns.get(pattern) {
        return label;
    }
    let label = pattern.replace('{', "<").replace('}', ">");
    let label: &'static str = Box::leak(label.into_boxed_str());
    // Found again under the router's spelling.
    let key: &'static str = Box::leak(pattern.to_string().into_boxed_str());
    patterns.insert(key, label);
    label
}
