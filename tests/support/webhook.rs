//! Helpers for tests that talk to the webhook: AdmissionReview fixtures, the facts of
//! `tests/fixtures/facts.yaml`, a TLS client that trusts given CAs, one admission through the
//! router, a free loopback port.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine;
use http_body_util::BodyExt;
use kvinject::core::facts::DocumentFacts;
use kvinject::offline::manifest::{self, Format};
use kvinject::webhook::http;
use kvinject::webhook::review::Reviewer;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::Value;
use tower::ServiceExt;

/// `tests/fixtures/reviews/<name>.json`, as bytes.
pub fn review_bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!("tests/fixtures/reviews/{name}.json")).unwrap()
}

/// `tests/fixtures/reviews/<name>.json`, as JSON.
pub fn review(name: &str) -> Value {
    serde_json::from_slice(&review_bytes(name)).unwrap()
}

/// The cluster facts of `tests/fixtures/facts.yaml` (namespaces, ServiceAccounts, bindings).
pub fn fixture_facts() -> DocumentFacts {
    let text = std::fs::read("tests/fixtures/facts.yaml").unwrap();
    let documents = manifest::parse(&text, Format::Yaml, "facts").unwrap();
    DocumentFacts::from_documents(&documents, "default")
}

/// A TLS client configuration that trusts exactly `cas` (PEM), for `versions`, offering `alpn`.
pub fn client_config(
    cas: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// POSTs `review` to `path` of the admission router; returns the AdmissionReview's `response`,
/// with its base64 `patch` decoded to JSON.
pub async fn admit(reviewer: &Reviewer, path: &str, review: &Value) -> Value {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(review.to_string()))
        .unwrap();
    let response = http::admission_router(reviewer.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let mut answer: Value = serde_json::from_slice(&body).unwrap();
    if let Some(patch) = answer["response"]["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        answer["response"]["patch"] = serde_json::from_slice(&bytes).unwrap();
    }
    answer["response"].take()
}

/// The whole body of a response, as bytes.
pub async fn body_bytes<B>(body: B) -> Vec<u8>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes().to_vec()
}

/// A loopback port nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
