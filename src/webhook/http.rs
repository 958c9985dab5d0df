//! The HTTP side of the webhook: the admission routes over HTTPS, `/healthz`, `/readyz` and
//! `/metrics` over plain HTTP, and the layers that keep bad clients from hurting good ones.
//!
//! Translates HTTP to and from the review pipeline; every HTTP error is mapped in one place
//! ([`HttpError`]). Decisions about pods are never made here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;

use crate::cluster::Cluster;
use crate::core::denial::MESSAGE_PREFIX;
use crate::lifecycle::readiness::Readiness;
use crate::webhook::admission::{self, ReviewError, Route};
use crate::webhook::metrics::SharedMetrics;
use crate::webhook::review::{Budget, Reviewer};

/// Largest AdmissionReview body accepted.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The HTTPS router: `POST /mutate`, `/validate-workloads`, `/validate-pod-identity`, hardened.
pub fn admission_router(state: Reviewer) -> Router {
    let metrics = state.metrics().clone();
    let max_in_flight = state.limits().max_in_flight;
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
                        format!("{MESSAGE_PREFIX}internal error\n"),
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
                        format!("{MESSAGE_PREFIX}overloaded, retry\n"),
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
        let mut response = (status, format!("{MESSAGE_PREFIX}{self}\n")).into_response();
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
    State(state): State<Reviewer>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let budget = Budget::for_timeout(started, webhook_timeout(query.as_deref()));
    let metrics = state.metrics().clone();
    match answer_http(route, state, headers, body, (started, budget)).await {
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
    state: Reviewer,
    headers: HeaderMap,
    body: Body,
    (started, budget): (Instant, Budget),
) -> Result<Response, HttpError> {
    check_content_type(&headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(HttpError::PayloadTooLarge);
    }
    let body = read_body(body, state.limits().body_timeout).await?;
    let decoded = admission::decode(&body)?;
    let answer = state.review(route, &decoded, budget).await?;
    let kind = &decoded.request.kind.kind;
    state.metrics().admission(
        route.as_str(),
        kind,
        answer.outcome.as_str(),
        started.elapsed().as_secs_f64(),
    );
    if let Some(reason) = answer.denial_reason {
        state.metrics().denial(route.as_str(), reason);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::webhook_timeout;

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
