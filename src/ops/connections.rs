//! Connections cannot be hoarded: a cap on open connections, a bound on a TLS handshake,
//! an idle keep-alive timeout, and a timeout for a request body that stops arriving. The
//! header read timeout itself is hyper's (`server.rs` sets it on the connection builder).
//!
//! [`Guarded`] wraps whichever acceptor the server uses (plain, zero-copy, rustls): it takes
//! a slot from the connection cap before anything else (a connection past the cap is closed
//! at once: no file descriptor is kept for it), bounds the inner acceptor (the TLS
//! handshake) by the header read timeout, and wraps the stream in [`Watched`], which ends a
//! connection that stays idle (no request in flight, nothing received) for the keep-alive
//! timeout. Requests on the connection carry its [`Activity`], which the
//! request middleware (`ops::observe`) marks busy from a request's arrival until its
//! response body is done.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum_server::accept::Accept;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower_http::add_extension::AddExtension;

use super::metrics::metrics;

/// What the connection guards enforce (`[server]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// The most connections open at once.
    pub max_connections: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// hyper's header read timeout (set on the connection builder, not here).
    pub header_read_timeout: Duration,
    /// How long a connection may sit with no request in flight and no next request coming.
    pub keepalive_timeout: Duration,
}

/// Per connection: requests in flight and when it last turned idle.
#[derive(Clone)]
pub struct Activity(Arc<ActivityState>);

struct ActivityState {
    epoch: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `epoch` when the last request in flight ended.
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(ActivityState {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.0.epoch.elapsed().as_millis() as u64
    }

    /// Marks a request in flight until the returned guard drops.
    pub fn busy(&self) -> Busy {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request in flight on its connection (see [`Activity::busy`]).
pub struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.0.idle_since.store(a.now_ms(), Ordering::Relaxed);
        a.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One place under the connection cap; counted in `berth_connections_open`.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Slot {
        metrics().connection_opened();
        Slot { _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics().connection_closed();
    }
}

/// The acceptor wrapper (see the module documentation).
#[derive(Clone)]
pub struct Guarded<A> {
    inner: A,
    slots: Arc<Semaphore>,
    limits: ConnectionLimits,
}

impl<A> Guarded<A> {
    pub fn new(inner: A, limits: ConnectionLimits) -> Guarded<A> {
        Guarded {
            inner,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
        }
    }
}

impl<A, S> Accept<TcpStream, S> for Guarded<A>
where
    A: Accept<TcpStream, AddExtension<S, Activity>>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Watched<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, tcp: TcpStream, service: S) -> Self::Future {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            // Closed at once (the stream drops here): refusing is cheaper than queueing a
            // descriptor per waiting client, and the client sees a reset, not a hang.
            metrics().connection_refused();
            return Box::pin(std::future::ready(Err(io::Error::other(
                "server.max_connections reached",
            ))));
        };
        let slot = Slot::new(permit);
        let activity = Activity::new();
        let accepting = self
            .inner
            .accept(tcp, AddExtension::new(service, activity.clone()));
        let limits = self.limits;
        Box::pin(async move {
            let (stream, service) = tokio::time::timeout(limits.handshake_timeout, accepting)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
            Ok((
                Watched {
                    io: stream,
                    activity,
                    keepalive: limits.keepalive_timeout,
                    last_read: 0,
                    idle_timer: None,
                    _slot: slot,
                },
                service,
            ))
        })
    }
}

/// A connection's stream: ends it (as if the client had closed it) once it has been idle
/// for the keep-alive timeout (see [`Watched::idle_expired`]).
pub struct Watched<S> {
    io: S,
    activity: Activity,
    keepalive: Duration,
    /// Milliseconds after the connection's epoch of the last byte read.
    last_read: u64,
    idle_timer: Option<Pin<Box<Sleep>>>,
    _slot: Slot,
}

impl<S> Watched<S> {
    /// Whether the connection has been idle for the keep-alive timeout: no request in
    /// flight, and nothing read since the last one ended or since the last byte came,
    /// whichever is later. (A half-sent HTTP/1 header is also bounded by hyper's header
    /// timeout; an HTTP/2 connection, which hyper's header timeout does not cover, only by
    /// this.)
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let state = &self.activity.0;
        if state.in_flight.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let since = state.idle_since.load(Ordering::Relaxed).max(self.last_read);
        let deadline = tokio::time::Instant::from_std(state.epoch + Duration::from_millis(since))
            + self.keepalive;
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last_read = this.activity.now_ms();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.idle_expired(cx) => {
                // End of stream: hyper closes an idle connection quietly.
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A request body that counts its bytes into `berth_http_received_bytes` and fails when no
/// frame comes for `stall` while its reader waits (a client that stopped sending: the
/// request ends with an error, and an upload's claim is released so the client can resume).
pub struct WatchedBody {
    inner: axum::body::Body,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl WatchedBody {
    pub fn new(inner: axum::body::Body, stall: Duration) -> WatchedBody {
        WatchedBody {
            inner,
            stall,
            timer: None,
        }
    }
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                if let Some(Ok(f)) = &frame {
                    if let Some(data) = f.data_ref() {
                        metrics().received(data.len() as u64);
                    }
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let stall = this.stall;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                ready!(timer.as_mut().poll(cx));
                this.timer = None;
                Poll::Ready(Some(Err(axum::Error::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no request body bytes arrived for {} s (server.body_timeout_seconds)",
                        stall.as_secs()
                    ),
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts its bytes into `berth_http_sent_bytes` and keeps its request
/// in flight on the connection (see [`Activity`]) until hyper is done with it.
pub struct CountedBody {
    inner: axum::body::Body,
    _busy: Option<Busy>,
}

impl CountedBody {
    pub fn new(inner: axum::body::Body, busy: Option<Busy>) -> CountedBody {
        CountedBody { inner, _busy: busy }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                metrics().sent(data.len() as u64);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
