//! The HTTP side of the webhook: the admission routes over HTTPS, `/healthz`, `/readyz` and
//! `/metrics` over plain HTTP, and the layers that keep bad clients from hurting good ones.
//!
//! Translates HTTP to and from the review pipeline; every HTTP error is mapped in one place
//! ([`HttpError`]). Decisions about pods are never made here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, SemaphorePermit};
use tower_http::catch_panic::CatchPanicLayer;

use crate::cluster::Cluster;
use crate::core::denial::MESSAGE_PREFIX;
use crate::lifecycle::readiness::Readiness;
use crate::webhook::admission::{self, Answer, ReviewError, Route};
use crate::webhook::listener::Limits;
use crate::webhook::metrics::SharedMetrics;
use crate::webhook::review::{Budget, Reviewer};

/// Largest AdmissionReview body accepted. The API server accepts request bodies up to 3 MiB and
/// etcd stores objects up to 1.5 MiB; an UPDATE's review carries the object and `oldObject`,
/// both as JSON (larger than the protobuf some clients send), plus the envelope. 8 MiB holds
/// the largest review a real API server can send, with room.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What one replica admits at once, counted after the headers: bytes of bodies being read or
/// held, and requests being answered (taken once the body is read, so a slow sender holds
/// bytes, never an answering slot). Beyond either, the request is answered 503 at once.
#[derive(Debug)]
pub struct Gate {
    body_bytes: Semaphore,
    in_flight: Semaphore,
}

/// A request let through the [`Gate`]: its body, and the permits held until it is answered.
#[derive(Debug)]
pub struct Admitted<'a> {
    /// The whole body.
    pub body: Vec<u8>,
    _bytes: SemaphorePermit<'a>,
    _in_flight: SemaphorePermit<'a>,
}

impl Gate {
    /// A gate for `max_in_flight` answers and `max_body_bytes` of bodies at once.
    pub fn new(max_in_flight: usize, max_body_bytes: usize) -> Self {
        Self {
            body_bytes: Semaphore::new(max_body_bytes.max(MAX_BODY_BYTES)),
            in_flight: Semaphore::new(max_in_flight.max(1)),
        }
    }

    /// The gate of `limits`.
    pub fn for_limits(limits: &Limits) -> Self {
        Self::new(limits.max_in_flight, limits.max_body_bytes_in_flight)
    }

    /// Checks the headers, reads the body (at most [`MAX_BODY_BYTES`], within `timeout`, each
    /// byte counted against the budget as it arrives) and takes an answering slot.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        body: Body,
        timeout: Duration,
    ) -> Result<Admitted<'_>, HttpError> {
        check_content_type(headers)?;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(HttpError::PayloadTooLarge);
        }
        // Bytes count as they arrive, not as declared: a sender that declares 8 MiB and stalls
        // holds only what it sent. The buffer is sized once from the declared length (address
        // space only until written).
        let mut bytes = self.take_bytes(0)?;
        let read = tokio::time::timeout(timeout, async {
            let mut body = body;
            let mut buffer = Vec::with_capacity(declared.unwrap_or(0) as usize);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| HttpError::BodyRead(e.to_string()))?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                if buffer.len() + data.len() > MAX_BODY_BYTES {
                    return Err(HttpError::PayloadTooLarge);
                }
                bytes.merge(self.take_bytes(data.len())?);
                buffer.extend_from_slice(&data);
            }
            Ok((buffer, bytes))
        });
        let (body, bytes) = read.await.map_err(|_| HttpError::BodyTimeout(timeout))??;
        let in_flight = self
            .in_flight
            .try_acquire()
            .map_err(|_| HttpError::Overloaded)?;
        Ok(Admitted {
            body,
            _bytes: bytes,
            _in_flight: in_flight,
        })
    }

    fn take_bytes(&self, count: usize) -> Result<SemaphorePermit<'_>, HttpError> {
        let count = u32::try_from(count).map_err(|_| HttpError::PayloadTooLarge)?;
        self.body_bytes
            .try_acquire_many(count)
            .map_err(|_| HttpError::Overloaded)
    }
}

/// The state of the admission routes.
struct Admission {
    reviewer: Reviewer,
    gate: Arc<Gate>,
}

/// The HTTPS router: `POST /mutate`, `/validate-workloads`, `/validate-pod-identity`, behind one
/// [`Gate`] for all three, hardened.
pub fn admission_router(reviewer: Reviewer) -> Router {
    let metrics = reviewer.metrics().clone();
    let gate = Arc::new(Gate::for_limits(&reviewer.limits()));
    let router = Router::new()
        .route(
            "/mutate",
            post(|s, q, h, b| handle(Route::Mutate, s, q, h, b)),
        )
        .route(
            "/validate-workloads",
            post(|s, q, h, b| handle(Route::ValidateWorkloads, s, q, h, b)),
        )
        .route(
            "/validate-pod-identity",
            post(|s, q, h, b| handle(Route::ValidatePodIdentity, s, q, h, b)),
        )
        .with_state(Arc::new(Admission { reviewer, gate }));
    harden(router, metrics)
}

/// Wraps a router so that a panicking handler answers 500 for its request only (and is
/// counted).
pub fn harden(router: Router, metrics: SharedMetrics) -> Router {
    router.layer(CatchPanicLayer::custom(
        move |_panic: Box<dyn std::any::Any + Send>| {
            metrics.panic();
            tracing::error!("request handler panicked");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{MESSAGE_PREFIX}internal error\n"),
            )
                .into_response()
        },
    ))
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
                metrics.health(
                    scrape_readiness.check().is_ok(),
                    scrape_readiness.certificate_expiry(),
                );
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
    /// More requests or body bytes at once than the [`Gate`] lets through.
    #[error("overloaded, retry")]
    Overloaded,
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
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, true),
            Self::Review(_) => (StatusCode::BAD_REQUEST, false),
        };
        let error = self.to_string();
        // A string field, escaped by both log formats: the error can quote the sender's text
        // (serde names an unknown variant as sent).
        tracing::warn!(
            status = status.as_u16(),
            error = error.as_str(),
            "rejected request"
        );
        let mut response = (status, format!("{MESSAGE_PREFIX}{error}\n")).into_response();
        if close {
            // The rest of the body may still be on the wire: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl HttpError {
    /// The response, counted in the metrics.
    pub fn respond(self, metrics: &SharedMetrics) -> Response {
        let response = self.into_response();
        metrics.rejected(response.status().as_u16());
        response
    }
}

async fn handle(
    route: Route,
    State(admission): State<Arc<Admission>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Admission { reviewer, gate } = &*admission;
    let started = Instant::now();
    let budget = Budget::for_timeout(started, webhook_timeout(query.as_deref()));
    let admitted = gate
        .admit(&headers, body, reviewer.limits().body_timeout)
        .await;
    let answered = match admitted {
        Ok(admitted) => {
            let _counted = reviewer.metrics().in_flight();
            // Boxed: the review's future is large, and this one is moved whole on its way in.
            Box::pin(answer_http(
                route,
                reviewer,
                &admitted.body,
                (started, budget),
            ))
            .await
        }
        Err(error) => Err(error),
    };
    answered.unwrap_or_else(|error| error.respond(reviewer.metrics()))
}

async fn answer_http(
    route: Route,
    state: &Reviewer,
    body: &[u8],
    (started, budget): (Instant, Budget),
) -> Result<Response, HttpError> {
    let decoded = match state.decode(route, body) {
        Ok(decoded) => decoded,
        Err(error) => return refused(route, state, body, error, started),
    };
    let answer = state.review(route, &decoded, budget).await?;
    // One reading of the clock for the metric and the log line.
    let took = started.elapsed();
    count(state, route, &decoded.request.kind.kind, &answer, took);
    let workload = decoded.workload();
    tracing::info!(
        route = route.as_str(),
        kind = decoded.request.kind.kind.as_ref(),
        operation = admission::operation_name(&decoded.request.operation),
        namespace = decoded.namespace(),
        name = decoded.name(),
        // Strings, which both log formats escape: names come from the request, unvalidated.
        workload = workload.as_str(),
        outcome = answer.outcome.as_str(),
        skipped = answer.skipped.map(|r| r.as_str()),
        dry_run = decoded.request.dry_run,
        duration_us = took.as_micros() as u64,
        denial = answer.denial_message(),
        "admission"
    );
    let encoded = answer.encode();
    Ok(([(header::CONTENT_TYPE, "application/json")], encoded).into_response())
}

/// Counts an answered review of `kind` in the metrics.
fn count(state: &Reviewer, route: Route, kind: &str, answer: &Answer, took: Duration) {
    let metrics = state.metrics();
    let seconds = took.as_secs_f64();
    metrics.admission(route.as_str(), kind, answer.outcome.as_str(), seconds);
    if let Some(reason) = answer.denial_reason {
        metrics.denial(route.as_str(), reason);
    }
}

/// A review `decode` refused: denied by its uid when [`admission::refusal`] can answer it
/// (counted and logged as a denial), else the HTTP error.
fn refused(
    route: Route,
    state: &Reviewer,
    body: &[u8],
    error: ReviewError,
    started: Instant,
) -> Result<Response, HttpError> {
    let Some(answer) = admission::refusal(body, &error) else {
        return Err(error.into());
    };
    let took = started.elapsed();
    count(state, route, "other", &answer, took);
    tracing::warn!(
        route = route.as_str(),
        outcome = answer.outcome.as_str(),
        duration_us = took.as_micros() as u64,
        denial = answer.denial_message(),
        "admission"
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        answer.encode(),
    )
        .into_response())
}

/// The webhook timeout the API server names in the URL (`?timeout=10s`, a Go duration of whole
/// seconds as it writes them), else its default. Anything unreadable counts as the default,
/// and no timeout is taken as longer than the 30 s the API server allows.
fn webhook_timeout(query: Option<&str>) -> Duration {
    const MAX: Duration = Duration::from_secs(30);
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout="));
    let parsed = value.and_then(|v| {
        let (number, scale) = if let Some(ms) = v.strip_suffix("ms") {
            (ms, 1)
        } else if let Some(s) = v.strip_suffix('s') {
            (s, 1000)
        } else {
            return None;
        };
        number
            .parse::<u64>()
            .ok()
            .map(|n| Duration::from_millis(n.saturating_mul(scale)))
    });
    parsed.unwrap_or(Budget::DEFAULT_TIMEOUT).min(MAX)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, HeaderValue, header};
    use futures_util::StreamExt;
    use futures_util::stream;

    use super::{Gate, HttpError, MAX_BODY_BYTES, webhook_timeout};

    fn headers(length: Option<usize>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(length) = length {
            headers.insert(header::CONTENT_LENGTH, length.into());
        }
        headers
    }

    /// A body that sends `chunks` and then never ends.
    fn stalled(chunks: Vec<Vec<u8>>) -> Body {
        let chunks = stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
        );
        Body::from_stream(chunks.chain(stream::pending()))
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_slow_body_holds_bytes_never_an_answering_slot() {
        let gate = std::sync::Arc::new(Gate::new(1, 16 * 1024 * 1024));
        let slow = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _ = gate
                    .admit(&headers(Some(100)), stalled(vec![b"{".to_vec()]), LONG)
                    .await;
            }
        });
        tokio::task::yield_now().await;
        let admitted = gate
            .admit(&headers(None), Body::from("{}"), LONG)
            .await
            .unwrap();
        assert_eq!(admitted.body, b"{}");
        // The one answering slot is taken now: the next complete body is refused at once.
        let refused = gate.admit(&headers(None), Body::from("{}"), LONG).await;
        assert!(matches!(refused, Err(HttpError::Overloaded)), "{refused:?}");
        drop(admitted);
        assert!(
            gate.admit(&headers(None), Body::from("{}"), LONG)
                .await
                .is_ok()
        );
        slow.abort();
    }

    #[tokio::test]
    async fn bodies_beyond_the_byte_budget_are_refused_at_once_as_their_bytes_arrive() {
        let gate = std::sync::Arc::new(Gate::new(64, MAX_BODY_BYTES));
        // A declared length holds nothing until bytes arrive: declaring 8 MiB and stalling
        // does not shut others out.
        let declared = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _ = gate
                    .admit(&headers(Some(MAX_BODY_BYTES)), stalled(vec![]), LONG)
                    .await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            gate.admit(&headers(Some(2)), Body::from("{}"), LONG)
                .await
                .is_ok()
        );
        declared.abort();
        let _ = declared.await;
        // Bytes sent and held count: a second body passing the budget is refused.
        let half = vec![b' '; MAX_BODY_BYTES / 2 + 1];
        let chunked = tokio::spawn({
            let gate = gate.clone();
            let half = half.clone();
            async move {
                let _ = gate.admit(&headers(None), stalled(vec![half]), LONG).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = gate.admit(&headers(None), stalled(vec![half]), LONG).await;
        assert!(matches!(refused, Err(HttpError::Overloaded)), "{refused:?}");
        chunked.abort();
        let _ = chunked.await;
        assert!(
            gate.admit(&headers(None), Body::from("{}"), LONG)
                .await
                .is_ok()
        );
    }

    #[test]
    fn the_timeout_comes_from_the_query_as_the_api_server_writes_it() {
        assert_eq!(webhook_timeout(Some("timeout=5s")), Duration::from_secs(5));
        assert_eq!(
            webhook_timeout(Some("a=b&timeout=1500ms")),
            Duration::from_millis(1500)
        );
        // Unreadable or absent: the API server's default; never more than it allows.
        assert_eq!(
            webhook_timeout(Some("timeout=soon")),
            Duration::from_secs(10)
        );
        assert_eq!(webhook_timeout(None), Duration::from_secs(10));
        assert_eq!(
            webhook_timeout(Some("timeout=3600s")),
            Duration::from_secs(30)
        );
    }
}
