//! The webhook over a real TLS socket, verified the way the API server verifies it: the CA from
//! `kvinject certs` as the only root and SNI `kvinject.kvinject.svc`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kvinject::core::plan::Settings;
use kvinject::webhook::listener::{self, Limits};
use kvinject::webhook::{http, review::Reviewer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use support::webhook::{client_config, fixture_facts, review_bytes as fixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

struct Webhook {
    addr: SocketAddr,
    ca_pem: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(limits: Limits) -> Webhook {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certs = kvinject::certs::generate("kvinject", "kvinject", 30, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    kvinject::certs::write(dir.path(), &certs).unwrap();
    let tls = kvinject::webhook::tls::server_config(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
    )
    .unwrap();
    let facts = fixture_facts();
    let app = http::admission_router(Reviewer::new(
        Arc::new(facts),
        Settings::new(None, None, "kvinject"),
        limits,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(listener::serve_tls(listener, tls, app, limits, async {
        let _ = stopped.await;
    }));
    Webhook {
        addr,
        ca_pem: certs.ca_pem,
        _stop: stop,
        _dir: dir,
    }
}

async fn connect(
    webhook: &Webhook,
    server_name: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = TlsConnector::from(Arc::new(client_config(&[&webhook.ca_pem], versions, alpn)));
    let stream = TcpStream::connect(webhook.addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    connector.connect(name, stream).await
}

fn mutate_request(body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post("/mutate")
        .header("content-type", "application/json")
        .header("host", "kvinject.kvinject.svc:443")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn post_http1(webhook: &Webhook, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let tls = connect(
        webhook,
        "kvinject.kvinject.svc",
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(mutate_request(body)).await.unwrap();
    let status = response.status();
    (
        status,
        support::webhook::body_bytes(response.into_body()).await,
    )
}

#[tokio::test]
async fn admission_over_tls_as_the_api_server_calls_it() {
    let webhook = start(Limits::default()).await;
    let (status, body) = post_http1(&webhook, fixture("patch-workload-identity")).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    let patch = answer["response"]["patch"]
        .as_str()
        .expect("base64 string on the wire");
    let ops: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        ops.as_array().unwrap().last().unwrap()["path"],
        "/metadata/annotations/kvinject.io~1injected"
    );

    let (status, body) = post_http1(&webhook, fixture("deny-env-conflict")).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["status"]["code"], 403);
}

#[tokio::test]
async fn http2_and_tls12_are_served_too() {
    let webhook = start(Limits::default()).await;
    let tls = connect(
        &webhook,
        "kvinject.kvinject.svc",
        &[&rustls::version::TLS13],
        &[b"h2"],
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(mutate_request(fixture("allow-update")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let tls12 = connect(
        &webhook,
        "kvinject.kvinject.svc",
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn the_certificate_covers_exactly_the_service_names() {
    let webhook = start(Limits::default()).await;
    for name in [
        "kvinject",
        "kvinject.kvinject",
        "kvinject.kvinject.svc",
        "kvinject.kvinject.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ] {
        connect(&webhook, name, &[&rustls::version::TLS13], &[])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in ["kvinject.other.svc", "evil.example.com"] {
        let error = connect(&webhook, name, &[&rustls::version::TLS13], &[])
            .await
            .expect_err(name);
        assert!(error.to_string().contains("certificate"), "{name}: {error}");
    }
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused_promptly() {
    let webhook = start(Limits::default()).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(webhook.addr).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "connection not closed");
    assert!(
        !buffer.starts_with(b"HTTP/"),
        "answered plain HTTP: {:?}",
        String::from_utf8_lossy(&buffer)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn short_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(500),
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

async fn raw_exchange(webhook: &Webhook, head: &[u8], body_part: &[u8]) -> String {
    let mut tls = connect(
        webhook,
        "kvinject.kvinject.svc",
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    tls.write_all(head).await.unwrap();
    tls.write_all(body_part).await.unwrap();
    tls.flush().await.unwrap();
    let mut buffer = Vec::new();
    // The server answers and closes; a read error after the answer (no close_notify) is fine.
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buffer))
        .await
        .expect("server kept the stalled connection");
    String::from_utf8_lossy(&buffer).into_owned()
}

#[tokio::test]
async fn a_stalled_body_is_cut_off_by_the_read_timeout() {
    let webhook = start(short_limits()).await;
    let answer = raw_exchange(
        &webhook,
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        b"{\"kind\":",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn stalled_headers_close_the_connection() {
    let webhook = start(short_limits()).await;
    let started = Instant::now();
    // raw_exchange fails the test if the server keeps the connection open.
    let answer = raw_exchange(&webhook, b"POST /mutate HTTP/1.1\r\nHost: x\r\n", b"").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed by the header timeout, not at once"
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused_without_reading_it() {
    let webhook = start(Limits::default()).await;
    let started = Instant::now();
    let answer = raw_exchange(
        &webhook,
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9000000\r\n\r\n",
        b"{",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered without waiting for the body"
    );
}

/// A client CA and a client certificate it signed (clientAuth), PEM: (CA, certificate, key).
fn client_pki() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["kube-apiserver".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// One admission over HTTP/1.1 as a client presenting `identity` (certificate, key), if any.
async fn post_as(
    addr: SocketAddr,
    server_ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<StatusCode, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("kvinject.kvinject.svc").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(mutate_request(fixture("allow-update")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status())
}

#[tokio::test]
async fn with_a_client_ca_only_clients_holding_its_certificate_are_served() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let server = kvinject::certs::generate("kvinject", "kvinject", 30, 7).unwrap();
    kvinject::certs::write(dir.path(), &server).unwrap();
    let (client_ca, client_cert, client_key) = client_pki();
    let (_, stranger_cert, stranger_key) = client_pki();
    std::fs::write(dir.path().join("client-ca.crt"), &client_ca).unwrap();
    let store = kvinject::webhook::tls::CertStore::new(
        kvinject::webhook::tls::ServingCert::from_files(
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
        )
        .unwrap(),
    );
    let tls = kvinject::webhook::tls::server_config_for_clients(
        store,
        Some(&dir.path().join("client-ca.crt")),
    )
    .unwrap();
    let app = http::admission_router(Reviewer::new(
        Arc::new(fixture_facts()),
        Settings::new(None, None, "kvinject"),
        Limits::default(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(listener::serve_tls(
        listener,
        tls,
        app,
        Limits::default(),
        std::future::pending(),
    ));

    let trusted = post_as(addr, &server.ca_pem, Some((&client_cert, &client_key))).await;
    assert_eq!(trusted, Ok(StatusCode::OK));
    let anonymous = post_as(addr, &server.ca_pem, None).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let stranger = post_as(addr, &server.ca_pem, Some((&stranger_cert, &stranger_key))).await;
    assert!(
        stranger.is_err(),
        "a certificate of another CA: {stranger:?}"
    );
}
