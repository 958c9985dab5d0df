//! The HTTP side of the webhook: `POST /mutate` over HTTPS, `/healthz` and `/readyz` over plain
//! HTTP, and the limits that keep bad clients from hurting good ones.
//!
//! Translates HTTP to and from the admission adapter; every HTTP error is mapped in one place
//! ([`HttpError`]). Decisions about pods are never made here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use axum::error_handling::HandleErrorLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;

use crate::admission::{self, Answer, Decoded, Outcome, ReviewError, Route};
use crate::cluster::{Cluster, Readiness};
use crate::deadlines::DeadlineIo;
use crate::denial::Denial;
use crate::facts::{ClusterFacts, LayeredFacts, RecordingFacts};
use crate::keyvault::{Verifier, VerifyMode};
use crate::metrics::SharedMetrics;
use crate::plan::Settings;

/// Largest AdmissionReview body accepted.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Time limits of the HTTPS listener.
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
    /// An HTTP/1.1 keep-alive connection with no request in flight is closed after this; longer
    /// than the 90 s for which the API server reuses idle connections.
    pub idle_timeout: Duration,
    /// Requests handled at once; more are answered 503 at once instead of queueing.
    pub max_in_flight: usize,
    /// Deadline for writing the SecretProviderClass a pod needs.
    pub write_timeout: Duration,
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
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything a request handler reads.
#[derive(Clone)]
pub struct AppState {
    facts: Arc<dyn ClusterFacts + Send + Sync>,
    cluster: Option<Cluster>,
    settings: Arc<Settings>,
    limits: Limits,
    spc_refresh: Duration,
    metrics: SharedMetrics,
    verifier: Option<(Arc<Verifier>, VerifyMode)>,
}

impl AppState {
    /// State over fixed `facts` (manifests): nothing is looked up or written.
    pub fn new(
        facts: Arc<dyn ClusterFacts + Send + Sync>,
        settings: Settings,
        limits: Limits,
    ) -> Self {
        Self {
            facts,
            cluster: None,
            settings: Arc::new(settings),
            limits,
            spc_refresh: Duration::ZERO,
            metrics: SharedMetrics::default(),
            verifier: None,
        }
    }

    /// The same state, counting into `metrics`.
    pub fn with_metrics(mut self, metrics: SharedMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same state, checking generated pods' objects against Key Vault in `mode`.
    pub fn with_verifier(mut self, verifier: Arc<Verifier>, mode: VerifyMode) -> Self {
        self.verifier = (mode != VerifyMode::Off).then_some((verifier, mode));
        self
    }

    /// The metrics this state counts into.
    pub fn metrics(&self) -> SharedMetrics {
        self.metrics.clone()
    }

    /// State over a live cluster: facts from its caches, missing ones looked up, generated SPCs
    /// written (and marked used at most once per `spc_refresh`).
    pub fn live(
        cluster: Cluster,
        settings: Settings,
        limits: Limits,
        spc_refresh: Duration,
    ) -> Self {
        Self {
            facts: Arc::new(cluster.clone()),
            cluster: Some(cluster),
            settings: Arc::new(settings),
            limits,
            spc_refresh,
            metrics: SharedMetrics::default(),
            verifier: None,
        }
    }

    /// Answers a decoded request: the core over the caches; one direct look-up round when the
    /// answer is a denial for a missing object; then the SPC the pod needs, written before the
    /// answer so no pod is admitted pointing at an SPC that does not exist.
    async fn answer(&self, route: Route, decoded: &Decoded) -> Result<Answer, ReviewError> {
        let facts = self.facts.as_ref();
        let (mut answer, misses) = {
            let recording = RecordingFacts::new(facts);
            let answer = admission::answer(route, decoded, &recording, &self.settings)?;
            (answer, recording.misses())
        };
        if let (true, Some(cluster)) = (answer.missing_fact, &self.cluster) {
            let overlay = cluster.fetch(&misses).await;
            let layered = LayeredFacts {
                overlay: &overlay,
                base: facts,
            };
            answer = admission::answer(route, decoded, &layered, &self.settings)?;
        }
        if route == Route::ValidateWorkloads && answer.missing_fact {
            // The ServiceAccount or SPC may be applied right after the workload: the pods are
            // checked again when they are created.
            answer = answer.softened();
        }
        answer = self.verify(answer).await;
        let Some(spc) = answer.generated_spc.clone() else {
            return Ok(answer);
        };
        let namespace = decoded.namespace();
        match &self.cluster {
            Some(_) if decoded.request.dry_run => {}
            Some(cluster) => {
                let written = tokio::time::timeout(
                    self.limits.write_timeout,
                    cluster.ensure_spc(&spc, &namespace, self.spc_refresh),
                )
                .await;
                let failure = match written {
                    Ok(Ok(applied)) => {
                        if applied {
                            self.metrics.spc_apply(true);
                        }
                        None
                    }
                    Ok(Err(kube::Error::Api(status))) => Some(status.message),
                    Ok(Err(other)) => Some(other.to_string()),
                    Err(_) => Some(format!(
                        "no answer from the API server within {:?}",
                        self.limits.write_timeout
                    )),
                };
                if let Some(reason) = failure {
                    self.metrics.spc_apply(false);
                    answer = answer.deny(
                        &Denial::new(format!(
                            "could not write SecretProviderClass {} in namespace {namespace}: {reason}; the pod \
                             cannot start without it, so it is not admitted: retry, or check kvinject's RBAC",
                            spc.name
                        ))
                        .because("spc-write"),
                    );
                }
            }
            None => {
                if facts.secret_provider_class(&namespace, &spc.name).is_none() {
                    answer.push_warning(format!(
                        "kvinject: SecretProviderClass {} does not exist in namespace {namespace}; this server \
                         reads its facts from a file and does not write it: apply the output of `kvinject inject`",
                        spc.name
                    ));
                }
            }
        }
        Ok(answer)
    }
}

impl AppState {
    /// Checks the objects of an admitted generate-mode pod against Key Vault: problems with an
    /// object deny in `deny` mode and warn in `warn` mode; not knowing always only warns.
    async fn verify(&self, mut answer: Answer) -> Answer {
        let (Some((verifier, mode)), Some(objects)) = (&self.verifier, answer.objects.clone())
        else {
            return answer;
        };
        if answer.outcome == Outcome::Denied || objects.references.is_empty() {
            return answer;
        }
        let mut refusals = Vec::new();
        for (label, report) in verifier.verify(&objects.vault, &objects.references).await {
            self.metrics.verification(label);
            match report {
                Some(report) if report.about_object && *mode == VerifyMode::Deny => {
                    refusals.push(report.message)
                }
                Some(report) => answer.push_warning(report.message),
                None => {}
            }
        }
        if !refusals.is_empty() {
            let what: Vec<&str> = refusals
                .iter()
                .map(|m| m.trim_start_matches("kvinject: "))
                .collect();
            answer = answer.deny(&Denial::new(what.join("; and ")).because("keyvault"));
        }
        answer
    }
}

/// The HTTPS router: `POST /mutate`, `/validate-workloads`, `/validate-pod-identity`, hardened.
pub fn admission_router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let max_in_flight = state.limits.max_in_flight;
    let router = Router::new()
        .route("/mutate", post(|s, h, b| handle(Route::Mutate, s, h, b)))
        .route(
            "/validate-workloads",
            post(|s, h, b| handle(Route::ValidateWorkloads, s, h, b)),
        )
        .route(
            "/validate-pod-identity",
            post(|s, h, b| handle(Route::ValidatePodIdentity, s, h, b)),
        )
        .with_state(state);
    harden(router, metrics, max_in_flight)
}

/// Wraps a router so that a panicking handler answers 500 for its request only (and is
/// counted), and requests beyond `max_in_flight` are answered 503 at once instead of queueing.
pub fn harden(router: Router, metrics: SharedMetrics, max_in_flight: usize) -> Router {
    let on_panic = metrics.clone();
    let on_overload = metrics;
    // Turning handlers into routes first means the layers below are built once and shared by
    // every request (a handler left boxed would get its own concurrency limit per request).
    let router: Router = router.with_state(());
    router.layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(
                move |_panic: Box<dyn std::any::Any + Send>| {
                    on_panic.panic();
                    tracing::error!("request handler panicked");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "kvinject: internal error\n",
                    )
                        .into_response()
                },
            ))
            .layer(HandleErrorLayer::new(move |_: BoxError| {
                let metrics = on_overload.clone();
                async move {
                    metrics.rejected(503);
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "kvinject: overloaded, retry\n",
                    )
                }
            }))
            .load_shed()
            .concurrency_limit(max_in_flight.max(1)),
    )
}

/// The health router: `GET /healthz` (alive), `GET /readyz` (serving admissions: listener up and
/// every cache synced; otherwise 503 saying what is missing) and `GET /metrics`.
pub fn health_router(
    readiness: Arc<Readiness>,
    metrics: SharedMetrics,
    cluster: Option<Cluster>,
) -> Router {
    let scrape_readiness = readiness.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                if let Some(cluster) = &cluster {
                    let synced = scrape_readiness.synced();
                    for (cache, objects) in cluster.cache_sizes() {
                        metrics.cache(cache, synced.contains(&cache), objects);
                    }
                }
                let body = metrics.render();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let state = readiness.check();
                let note = readiness.note();
                async move {
                    match (state, note) {
                        (Ok(()), None) => (StatusCode::OK, "ready\n".to_owned()),
                        (Ok(()), Some(note)) => (StatusCode::OK, format!("ready; {note}\n")),
                        (Err(reason), _) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {reason}\n"),
                        ),
                    }
                }
            }),
        )
}

/// An HTTP-level failure: the request never reached the core.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Content-Type missing or not JSON.
    #[error("Content-Type must be application/json, got {0:?}")]
    UnsupportedMediaType(String),
    /// Body larger than [`MAX_BODY_BYTES`].
    #[error("body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// Body did not arrive in time.
    #[error("body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// Body could not be read.
    #[error("reading body: {0}")]
    BodyRead(String),
    /// Not an admission request kvinject can answer.
    #[error(transparent)]
    Review(#[from] ReviewError),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, close) = match &self {
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, true),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, true),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, true),
            Self::BodyRead(_) => (StatusCode::BAD_REQUEST, true),
            Self::Review(_) => (StatusCode::BAD_REQUEST, false),
        };
        tracing::warn!(status = status.as_u16(), error = %self, "rejected request");
        let mut response = (status, format!("kvinject: {self}\n")).into_response();
        if close {
            // The rest of the body may still be on the wire: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

async fn handle(
    route: Route,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = state.metrics.clone();
    match answer_http(route, state, headers, body).await {
        Ok(response) => response,
        Err(error) => {
            let response = error.into_response();
            metrics.rejected(response.status().as_u16());
            response
        }
    }
}

async fn answer_http(
    route: Route,
    state: AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let started = Instant::now();
    check_content_type(&headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(HttpError::PayloadTooLarge);
    }
    let body = read_body(body, state.limits.body_timeout).await?;
    let decoded = admission::decode(&body)?;
    let answer = state.answer(route, &decoded).await?;
    let kind = &decoded.request.kind.kind;
    state.metrics.admission(
        route.as_str(),
        kind,
        answer.outcome.as_str(),
        started.elapsed().as_secs_f64(),
    );
    if let Some(reason) = answer.denial_reason {
        state.metrics.denial(route.as_str(), reason);
    }
    tracing::info!(
        route = route.as_str(),
        kind = %decoded.request.kind.kind,
        operation = ?decoded.request.operation,
        namespace = %decoded.namespace(),
        name = %decoded.name(),
        workload = %decoded.workload(),
        outcome = answer.outcome.as_str(),
        skipped = answer.skipped.map(|r| r.as_str()),
        dry_run = decoded.request.dry_run,
        duration_us = started.elapsed().as_micros() as u64,
        denial = answer.denial_message(),
        "admission"
    );
    let encoded = admission::encode(answer.into_review());
    Ok(([(header::CONTENT_TYPE, "application/json")], encoded).into_response())
}

fn check_content_type(headers: &HeaderMap) -> Result<(), HttpError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(HttpError::UnsupportedMediaType(value))
    }
}

async fn read_body(body: Body, limit: Duration) -> Result<Bytes, HttpError> {
    let collected = tokio::time::timeout(limit, Limited::new(body, MAX_BODY_BYTES).collect())
        .await
        .map_err(|_| HttpError::BodyTimeout(limit))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(HttpError::PayloadTooLarge),
        Err(error) => Err(HttpError::BodyRead(error.to_string())),
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
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timeout would also close idle keep-alive connections; DeadlineIo does both
    // jobs apart (see `deadlines`).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let request_deadline = limits.header_timeout + limits.body_timeout;
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            // HTTP/2 multiplexes and pings; its idle handling is the protocol's own.
            let (idle, request) = if http2 {
                (
                    Duration::from_secs(24 * 3600),
                    Duration::from_secs(24 * 3600),
                )
            } else {
                (limits.idle_timeout, request_deadline)
            };
            let io = DeadlineIo::new(tls, idle, request);
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
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
