//! Serving: binding (plain HTTP or rustls), logging where we listen, and graceful
//! shutdown on SIGTERM/SIGINT that lets in-flight requests finish.

use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::app::router;
use crate::config::Config;
use crate::state::AppState;

/// How long closing the database connections may take at shutdown.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// How often freed heap memory is handed back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Every [`TRIM_EVERY`], `malloc_trim(0)`: glibc returns freed memory only from the top of
/// each heap, so buffers freed in the middle of an arena after a burst of transfers would
/// stay resident; trimming releases those free pages (docs/performance.md, "Trimming the
/// heap").
fn spawn_memory_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim only releases free memory; it is thread-safe.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    });
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let state = AppState::for_server(&config).await?;
    if config.uploads.purge_interval_seconds > 0 {
        crate::state::spawn_upload_purger(
            state.clone(),
            Duration::from_secs(config.uploads.purge_after_seconds),
            Duration::from_secs(config.uploads.purge_interval_seconds),
        );
    }
    if let Some(tokens) = &state.tokens {
        crate::state::spawn_key_refresher(tokens.clone());
        crate::state::spawn_sign_in_keeper(state.clone());
    }
    spawn_memory_trimmer();
    let content = state.content.clone();
    let app = router(state);
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = Handle::new();
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    tokio::spawn(shutdown_on_signal(handle.clone(), grace));
    let scheme = if config.tls_enabled() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        %addr,
        scheme,
        database = %redact(&config.database_url()),
        storage = %config.storage_description(),
        "listening"
    );
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if config.tls_enabled() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = RustlsConfig::from_pem_file(&config.tls.cert, &config.tls.key)
            .await
            .with_context(|| {
                format!(
                    "loading TLS certificate {} and key {}",
                    config.tls.cert.display(),
                    config.tls.key.display()
                )
            })?;
        axum_server::from_tcp_rustls(listener, tls)
            .handle(handle)
            .serve(service)
            .await?;
    } else if config.server.sendfile {
        axum_server::from_tcp(listener)
            .acceptor(crate::http::sendfile::SendfileAcceptor)
            .handle(handle)
            .serve(service)
            .await?;
    } else {
        axum_server::from_tcp(listener)
            .handle(handle)
            .serve(service)
            .await?;
    }
    // In-flight requests have finished (or the grace period ran out): close the
    // database connections before the process exits. Bounded, since closing a pool waits
    // for connections still lent out.
    if tokio::time::timeout(CLOSE_LIMIT, content.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still in use after {CLOSE_LIMIT:?}; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_on_signal(handle: Handle, grace: Duration) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: finishing in-flight requests"
    );
    handle.graceful_shutdown(Some(grace));
}

/// Hides a password in a database URL for logging.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.split_once('@') {
            if let Some((user, _)) = creds.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}
