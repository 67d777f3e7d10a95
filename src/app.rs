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

use crate::auth::token::TokenAccess;
use crate::auth::{AccessController, OpenAccess};
use crate::config::Config;
use crate::metadata::{MetadataStore, SqlMetadataStore};
use crate::storage::BlobStore;
use crate::storage::fs::{FsBlobStore, UploadIo};
use crate::storage::s3::S3BlobStore;

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
    /// Opens the stores the configuration names, migrating the database, for a maintenance
    /// command that may run beside the server (`gc`).
    pub async fn from_config(config: &Config) -> anyhow::Result<AppState> {
        Self::open(config, false).await
    }

    /// Opens the stores for `serve`: as [`AppState::from_config`], and an embedded SQLite
    /// database becomes this process's alone (locked, manifest lookups cached; see
    /// [`SqlMetadataStore::own_exclusively`]).
    pub async fn for_server(config: &Config) -> anyhow::Result<AppState> {
        Self::open(config, true).await
    }

    async fn open(config: &Config, server: bool) -> anyhow::Result<AppState> {
        let mut meta =
            SqlMetadataStore::connect(&config.database_url(), config.database.max_connections)
                .await?;
        meta.migrate().await?;
        if server {
            meta.own_exclusively()?;
        }
        let blobs: Arc<dyn BlobStore> = match config.storage.backend.as_str() {
            "s3" => Arc::new(S3BlobStore::open(&config.storage.s3).await?),
            _ => Arc::new(
                FsBlobStore::open_with(
                    config.storage_root(),
                    if config.storage.direct_io {
                        UploadIo::Direct
                    } else {
                        UploadIo::Buffered
                    },
                )
                .await?,
            ),
        };
        Ok(AppState {
            blobs,
            meta: Arc::new(meta),
            access: match config.auth.mode.as_str() {
                "token" => Arc::new(TokenAccess::new(&config.auth.token)?),
                _ => Arc::new(OpenAccess),
            },
            limits: Limits {
                max_manifest_bytes: config.limits.max_manifest_bytes,
            },
        })
    }
}

/// What one purge of abandoned uploads removed.
#[derive(Debug, Default)]
pub struct Purged {
    pub sessions: u64,
    pub orphans: u64,
}

/// Discards upload sessions nobody has written to for `max_age` (their data too), then
/// upload data in the blob store that no session owns (left by a crash between steps).
pub async fn purge_uploads(state: &AppState, max_age: Duration) -> anyhow::Result<Purged> {
    let before = crate::metadata::now_millis() - max_age.as_millis() as i64;
    let mut purged = Purged::default();
    loop {
        let stale = state.meta.stale_uploads(before, 500).await?;
        if stale.is_empty() {
            break;
        }
        for s in &stale {
            // The session first, so no request can continue it while its data goes; a
            // crash in between leaves data that the orphan sweep below removes next time.
            if state.meta.delete_upload(&s.id).await? {
                state.blobs.upload_abort(&s.id, &s.store_state).await?;
                purged.sessions += 1;
            }
        }
        if stale.len() < 500 {
            break;
        }
    }
    let live: std::collections::HashSet<String> =
        state.meta.upload_ids().await?.into_iter().collect();
    purged.orphans = state.blobs.purge_orphan_uploads(before, &live).await?;
    Ok(purged)
}

/// Runs `purge_uploads` every `every` until the process ends.
pub fn spawn_upload_purger(state: AppState, max_age: Duration, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match purge_uploads(&state, max_age).await {
                Ok(p) if p.sessions + p.orphans > 0 => tracing::info!(
                    sessions = p.sessions,
                    orphans = p.orphans,
                    "purged abandoned uploads"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging abandoned uploads failed"),
            }
        }
    });
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
