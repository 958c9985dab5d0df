//! Helpers for tests that talk to the webhook: AdmissionReview fixtures, the facts of
//! `tests/fixtures/facts.yaml`, a TLS client that trusts given CAs, one admission through the
//! router, a free loopback port, and `kvinject serve` run as a process against the API server
//! double.

use std::sync::Arc;
use std::time::Duration;

use super::apiserver::ApiServer;
use axum::body::{Body, Bytes};
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

/// `kvinject serve` run as a process against the double (through a kubeconfig), with files
/// certificates and loopback ports; killed when dropped.
pub struct Served {
    pub child: tokio::process::Child,
    pub https: u16,
    pub health: u16,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Served {
    /// POSTs an AdmissionReview to `/mutate` over TLS, as the API server does; the answer.
    pub async fn mutate(&self, review: &Value) -> Value {
        use http_body_util::Full;
        use hyper_util::rt::TokioIo;
        let config = client_config(&[&self.ca_pem], &[&rustls::version::TLS13], &[b"http/1.1"]);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.https))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("kvinject.kvinject.svc").unwrap();
        let tls = connector.connect(name, stream).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::post("/mutate")
            .header("content-type", "application/json")
            .header("host", "kvinject.kvinject.svc:443")
            .body(Full::new(Bytes::from(review.to_string())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let body = body_bytes(response.into_body()).await;
        serde_json::from_slice(&body).unwrap()
    }
}

/// Starts `kvinject serve` against the API server double `api` with `args` besides the usual
/// ones (replica `replica-x`, kvinject's namespace `kvinject`), and waits until `/readyz` says 200.
pub async fn serve_against(api: &ApiServer, args: &[&str]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\ncontexts:\n- name: double\n  \
                 context:\n    cluster: double\n    user: nobody\ncurrent-context: double\nusers:\n- name: nobody\n  user: {{}}\n",
                api.url
            ),
        )
        .unwrap();
    let certs = kvinject::certs::generate("kvinject", "kvinject", 30, 7).unwrap();
    kvinject::certs::write(dir.path(), &certs).unwrap();
    let (https, health) = (free_port(), free_port());
    let path = |file: &str| dir.path().join(file).to_str().unwrap().to_owned();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvinject"))
        .args(["serve", "--kubeconfig", &path("kubeconfig")])
        .args(["--tls-cert-file", &path("tls.crt")])
        .args(["--tls-key-file", &path("tls.key")])
        .args(["--listen", &format!("127.0.0.1:{https}")])
        .args(["--health-listen", &format!("127.0.0.1:{health}")])
        .args([
            "--pod-name",
            "replica-x",
            "--kvinject-namespace",
            "kvinject",
        ])
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = || async {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", health)).await else {
            return false;
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer.starts_with("HTTP/1.1 200")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ready().await {
        assert!(
            std::time::Instant::now() < deadline,
            "serve never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Served {
        child,
        https,
        health,
        ca_pem: certs.ca_pem,
        _dir: dir,
    }
}
