//! Serving: binding (plain HTTP or rustls), logging where we listen, and graceful
//! shutdown on SIGTERM/SIGINT that lets in-flight requests finish.

use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::app::router;
use crate::config::Config;
use crate::ops::connections::{ConnectionLimits, Guarded};
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
    if config.gc.interval_hours > 0.0 {
        crate::state::spawn_collector(
            state.clone(),
            crate::jobs::gc::GcOptions {
                untagged: config.gc.untagged,
                grace: Duration::from_secs(config.gc.grace_seconds),
                started_by: "schedule".into(),
                ..Default::default()
            },
            Duration::from_secs_f64(config.gc.interval_hours * 3600.0).max(Duration::from_secs(1)),
        );
    }
    if let Some(tokens) = &state.tokens {
        crate::state::spawn_key_refresher(tokens.clone());
        crate::state::spawn_sign_in_keeper(state.clone());
    }
    spawn_memory_trimmer();
    let content = state.content.clone();
    let ops = state.ops.clone();
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
    let limits = connection_limits(&config.server);
    let metrics_handle = Handle::new();
    if let Some(metrics_addr) = config.metrics_listen()? {
        let l = std::net::TcpListener::bind(metrics_addr)
            .with_context(|| format!("binding metrics.listen {metrics_addr}"))?;
        l.set_nonblocking(true)?;
        // Not "listening": that line names the registry's address.
        tracing::info!(addr = %l.local_addr()?, "metrics endpoint");
        let metrics = crate::ops::metrics_router(ops.clone()).into_make_service();
        let server = bounded(axum_server::from_tcp(l), &limits).handle(metrics_handle.clone());
        tokio::spawn(async move {
            if let Err(e) = server.serve(metrics).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
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
        bounded(axum_server::from_tcp_rustls(listener, tls), &limits)
            .map(|tls| Guarded::new(tls, limits))
            .handle(handle)
            .serve(service)
            .await?;
    } else if config.server.sendfile {
        bounded(axum_server::from_tcp(listener), &limits)
            .acceptor(Guarded::new(
                crate::http::sendfile::SendfileAcceptor,
                limits,
            ))
            .handle(handle)
            .serve(service)
            .await?;
    } else {
        bounded(axum_server::from_tcp(listener), &limits)
            .map(|plain| Guarded::new(plain, limits))
            .handle(handle)
            .serve(service)
            .await?;
    }
    metrics_handle.shutdown();
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

/// The connection guards' settings from `[server]`; `max_connections = 0` becomes three
/// quarters of the open-file limit (raised to its hard maximum first), and a larger
/// setting is lowered to that, so that connections never use up the descriptors the
/// database, the blob files and the logs need.
fn connection_limits(server: &crate::config::ServerConfig) -> ConnectionLimits {
    let files = raise_open_file_limit();
    let ceiling = (files / 4 * 3).max(64) as usize;
    let max_connections = match server.max_connections {
        0 => ceiling,
        n if n > ceiling => {
            tracing::warn!(
                configured = n,
                open_file_limit = files,
                using = ceiling,
                "server.max_connections is above three quarters of the open-file limit; lowered"
            );
            ceiling
        }
        n => n,
    };
    let header = Duration::from_secs(server.header_read_timeout_seconds);
    tracing::info!(
        max_connections,
        header_read_timeout_seconds = server.header_read_timeout_seconds,
        keepalive_timeout_seconds = server.keepalive_timeout_seconds,
        body_timeout_seconds = server.body_timeout_seconds,
        "connection limits"
    );
    ConnectionLimits {
        max_connections,
        handshake_timeout: header,
        keepalive_timeout: Duration::from_secs(server.keepalive_timeout_seconds),
        header_read_timeout: header,
    }
}

/// hyper's HTTP/1 header read timeout: the header of a request must arrive within it of the
/// connection's start or the previous response's end.
fn bounded<A>(
    mut server: axum_server::Server<A>,
    limits: &ConnectionLimits,
) -> axum_server::Server<A> {
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    server
}

/// Raises the soft limit on open files to the hard limit (as most servers do: the default
/// soft limit of 1024 is for programs that never meant to hold many files) and returns it.
fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
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
