//! The load run's baseline: kvinject's HTTPS stack (`serve_tls`, `tls::server_config`,
//! `harden`) with one route, `POST /mutate`, that reads the body and answers a constant
//! AdmissionReview allow response of `--response-bytes` bytes. What `bench/load` measures on it is
//! the cost of the stack alone, to compare kvinject's own work against. With `--decode true` it
//! also reads the review as kvinject does (`admission::decode`) before answering: what reading
//! alone costs, the floor under any answer that depends on the review.
//!
//! usage: baseline-server --listen ADDR --tls-cert-file F --tls-key-file F --response-bytes N
//!        [--decode true]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::post;
use kvinject::webhook::listener::{self, Limits};
use kvinject::webhook::metrics::SharedMetrics;
use kvinject::webhook::tls;
use kvinject::webhook::{admission, http};
use serde_json::json;

const USAGE: &str = "usage: baseline-server --listen ADDR --tls-cert-file F --tls-key-file F \
     --response-bytes N [--decode true]";

/// An allowed AdmissionReview response of exactly `size` bytes (or the smallest one, if larger),
/// padded with an audit annotation.
fn allow_response(size: usize) -> Vec<u8> {
    let review = |padding: String| {
        let response = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": "b8f7a1d2-ab0a-592a-afd0-6ef76d774844",
                "allowed": true,
                "auditAnnotations": {"padding": padding},
            },
        });
        serde_json::to_vec(&response).expect("JSON values serialise")
    };
    let smallest = review(String::new()).len();
    review("x".repeat(size.saturating_sub(smallest)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags: HashMap<&str, &str> = args
        .chunks(2)
        .filter_map(|pair| match pair {
            [flag, value] => Some((flag.as_str(), value.as_str())),
            _ => None,
        })
        .collect();
    let (Some(listen), Some(cert), Some(key), Some(size)) = (
        flags
            .get("--listen")
            .and_then(|a| a.parse::<SocketAddr>().ok()),
        flags.get("--tls-cert-file"),
        flags.get("--tls-key-file"),
        flags
            .get("--response-bytes")
            .and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let decode = match flags.get("--decode") {
        None | Some(&"false") => false,
        Some(&"true") => true,
        Some(_) => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let tls = match tls::server_config(Path::new(cert), Path::new(key)) {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("baseline-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("baseline-server: listening on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let response = Bytes::from(allow_response(size));
    let limits = Limits::default();
    let metrics = SharedMetrics::default();
    // The same gate as the admission routes: body read and counted, an answering slot taken.
    let gate = Arc::new(http::Gate::for_limits(&limits));
    let rejected = metrics.clone();
    let router = Router::new().route(
        "/mutate",
        post(move |headers: HeaderMap, body: Body| async move {
            match gate.admit(&headers, body, limits.body_timeout).await {
                Ok(admitted) => {
                    if decode {
                        let _ = std::hint::black_box(admission::decode(&admitted.body));
                    }
                    ([(header::CONTENT_TYPE, "application/json")], response).into_response()
                }
                Err(error) => error.respond(&rejected),
            }
        }),
    );
    let app = http::harden(router, metrics);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    listener::serve_tls(listener, tls, app, limits, shutdown).await;
    ExitCode::SUCCESS
}
