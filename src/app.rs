//! The router: the `/v2` API, the token endpoint of the built-in token service, and the
//! tower layers around them.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, Response};
use axum::routing::{any, get};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let proxies = state.trusted_proxies.clone();
    let ops = state.ops.clone();
    let mut app = Router::new()
        .route("/v2", any(crate::registry::dispatch))
        .route("/v2/", any(crate::registry::dispatch))
        .route("/v2/{*rest}", any(crate::registry::dispatch))
        .with_state(state.clone());
    if let Some(tokens) = state.tokens.clone() {
        app = app
            .merge(
                Router::new()
                    .route("/service/token", get(crate::auth::endpoint::token))
                    .with_state(tokens.clone()),
            )
            .merge(crate::web::router(crate::web::Web {
                oidc: state.oidc.clone(),
                settings: state.web.clone(),
                state: state.clone(),
                tokens: tokens.clone(),
            }))
            .merge(crate::api::router(crate::api::Api {
                project_creation: state.project_creation,
                robot_prefix: state.robot_prefix.clone(),
                state,
                tokens,
            }));
    }
    // The probes and `/metrics` stay out of the request log (and the request metrics)
    // unless `server.log_probes`.
    let ops_routes = crate::ops::routes(ops.clone());
    if ops.log_probes {
        app = app.merge(ops_routes.clone());
    }
    let app = app
        // Blob bodies are streamed and manifests have their own limit.
        .layer(DefaultBodyLimit::disable())
        // Inside the header layer, so that a 500 from a panic carries the version header too.
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(
            crate::http::close_after_refused_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            proxies,
            crate::http::client::with_client_address,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ))
        .layer(axum::middleware::from_fn_with_state(
            ops.clone(),
            crate::ops::observe,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                })
                .on_request(())
                .on_response(|res: &Response<Body>, latency: Duration, _span: &Span| {
                    let bytes = res
                        .headers()
                        .get(axum::http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .or_else(|| http_body::Body::size_hint(res.body()).exact())
                        .unwrap_or(0);
                    tracing::info!(
                        status = res.status().as_u16(),
                        bytes,
                        latency_us = latency.as_micros() as u64,
                        "served"
                    );
                })
                .on_failure(()),
        );
    if ops.log_probes {
        app
    } else {
        app.merge(ops_routes)
    }
}
