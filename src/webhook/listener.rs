//! The listeners: the HTTPS accept loop (TLS handshake deadline, per-connection deadlines,
//! graceful drain) and the plain-HTTP health listener, with the limits they enforce.
//!
//! Bytes and connections only: what a request means is `http`'s business.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceBuilder;

use crate::webhook::deadlines::{DeadlineIo, RequestActivity};

/// HTTP/2 connections multiplex and ping (keep-alive below drops dead peers); the HTTP/1.1
/// byte-stream deadlines do not apply to them and are set out of reach: their idleness is
/// counted in requests ([`RequestActivity`]).
const HTTP2_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// Pause after a failed `accept` (out of file descriptors and the like) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Time and count limits of the webhook: its listener, its requests and the SPC write.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
    /// After shutdown is asked, open connections get this long to finish.
    pub drain_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this (HTTP/2: with
    /// GOAWAY; its pings do not count as requests); longer than the 90 s for which the API
    /// server reuses idle connections.
    pub idle_timeout: Duration,
    /// Requests answered at once, counted once their body is read; more are answered 503 at
    /// once instead of queueing.
    pub max_in_flight: usize,
    /// Bytes of request bodies read or held at once; a body that would go beyond is answered
    /// 503 at once. Bounds the memory a flood of large or slow bodies can take.
    pub max_body_bytes_in_flight: usize,
    /// Deadline for writing the SecretProviderClass a pod needs.
    pub write_timeout: Duration,
    /// Generated SPCs one namespace may hold before a new one is refused: bounds what a flood
    /// of (forged or real) pods with ever-new annotations can make kvinject store.
    pub max_spcs_per_namespace: usize,
    /// A namespace a direct read showed not opted in is not read again for this long.
    pub namespace_recheck: Duration,
    /// Open HTTPS connections at once; one more is closed as soon as it is accepted, before
    /// any TLS work (the API server keeps a few per replica; a flood gets a fast refusal).
    pub max_connections: usize,
    /// Streams in flight on one HTTP/2 connection.
    pub max_http2_streams: u32,
    /// HTTP/2 keep-alive: a ping after this long without frames; a peer that does not answer
    /// within the same time is dropped.
    pub http2_keep_alive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(120),
            max_in_flight: 256,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            write_timeout: Duration::from_secs(5),
            max_spcs_per_namespace: 200,
            namespace_recheck: Duration::from_secs(10),
            max_connections: 1024,
            max_http2_streams: 64,
            http2_keep_alive: Duration::from_secs(30),
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then drains open connections
/// for at most `limits.drain_timeout`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let (drain, draining) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timeout would also close idle keep-alive connections; DeadlineIo does both
    // jobs apart (see `deadlines`).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_http2_streams)
        .keep_alive_interval(Some(limits.http2_keep_alive))
        .keep_alive_timeout(limits.http2_keep_alive);
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(max_connections));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            // Dropping the stream closes it: no handshake, no memory for it.
            tracing::debug!(%peer, "connection limit reached; refused");
            continue;
        };
        let (acceptor, builder, app) = (acceptor.clone(), builder.clone(), app.clone());
        let draining = draining.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            serve_connection(tls, &builder, app, limits, draining).await;
        });
    }
    drop(listener);
    let _ = drain.send(true);
    // Every connection holds a slot until it ends: all slots back means all drained.
    let drained = connections.acquire_many(max_connections as u32);
    if tokio::time::timeout(limits.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
}

/// Serves one connection until it ends, closing it gracefully when the server drains or, over
/// HTTP/2, when it has had no request for `limits.idle_timeout`.
async fn serve_connection(
    tls: TlsStream<TcpStream>,
    builder: &auto::Builder<TokioExecutor>,
    app: Router,
    limits: Limits,
    mut draining: watch::Receiver<bool>,
) {
    let peer = tls.get_ref().0.peer_addr().ok();
    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let (idle, request) = if http2 {
        (HTTP2_DEADLINE, HTTP2_DEADLINE)
    } else {
        (
            limits.idle_timeout,
            limits.header_timeout + limits.body_timeout,
        )
    };
    let activity = RequestActivity::new();
    let tracked = activity.clone();
    let service = ServiceBuilder::new()
        .map_future(move |response| {
            let request = tracked.enter();
            async move {
                let response = response.await;
                drop(request);
                response
            }
        })
        .service(app);
    let io = DeadlineIo::new(tls, idle, request);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        // While a request is in flight the connection cannot be idle before now + idle_timeout.
        let idle_at = activity
            .idle_deadline(limits.idle_timeout)
            .unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(?peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = draining.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_at), if http2 && !closing => {
                if activity.idle_deadline(limits.idle_timeout).is_some_and(|at| at <= Instant::now()) {
                    tracing::debug!(?peer, "HTTP/2 connection idle; closing");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Serves the health router over plain HTTP until `shutdown` resolves.
pub async fn serve_health(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The address a listener is bound to, for logs (`0.0.0.0:0` when unknown).
pub fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
