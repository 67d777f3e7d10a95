//! The application: its state (stores, access control, limits) and the router with its
//! tower layers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, Response, Version, header};
use axum::middleware::Next;
use axum::routing::any;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::auth::{AccessController, OpenAccess};
use crate::config::Config;
use crate::metadata::{MetadataStore, SqlMetadataStore};
use crate::storage::BlobStore;
use crate::storage::fs::FsBlobStore;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_manifest_bytes: usize,
}

#[derive(Clone)]
pub struct AppState {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetadataStore>,
    pub access: Arc<dyn AccessController>,
    pub limits: Limits,
}

impl AppState {
    /// Opens the stores the configuration names, migrating the database.
    pub async fn from_config(config: &Config) -> anyhow::Result<AppState> {
        let meta =
            SqlMetadataStore::connect(&config.database_url(), config.database.max_connections)
                .await?;
        meta.migrate().await?;
        let blobs = FsBlobStore::open(config.storage_root()).await?;
        Ok(AppState {
            blobs: Arc::new(blobs),
            meta: Arc::new(meta),
            access: Arc::new(OpenAccess),
            limits: Limits {
                max_manifest_bytes: config.limits.max_manifest_bytes,
            },
        })
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", any(crate::registry::dispatch))
        .route("/v2/", any(crate::registry::dispatch))
        .route("/v2/{*rest}", any(crate::registry::dispatch))
        .with_state(state)
        // Blob bodies are streamed and manifests have their own limit.
        .layer(DefaultBodyLimit::disable())
        // Inside the header layer, so that a 500 from a panic carries the version header too.
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(close_after_refused_body))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
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
        )
}

/// An error answered before the request body was read (a refused chunk, a busy upload, a
/// wrong digest) leaves the rest of the body on the connection. HTTP/1.1 cannot reuse such a
/// connection, so say so: a client that pooled it would otherwise send its next request into
/// a socket the server is closing.
async fn close_after_refused_body(req: Request<Body>, next: Next) -> Response<Body> {
    let http1 = req.version() < Version::HTTP_2;
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut res = next.run(req).await;
    if http1 && has_body && (res.status().is_client_error() || res.status().is_server_error()) {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
