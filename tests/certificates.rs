//! Certificates that change while serving: files swapped under load (Secret volume updates,
//! cert-manager renewals), bad replacements refused, and self-managed certificates kept in a
//! Secret with caBundle published, against the API server double.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kvinject::certs::self_managed::SelfManaged;
use kvinject::certs::{self, Validity};
use kvinject::core::facts::DocumentFacts;
use kvinject::core::plan::Settings;
use kvinject::lifecycle::readiness::{HealthCheck, Readiness};
use kvinject::webhook::listener::{self, Limits};
use kvinject::webhook::tls::{self, CertStore, ServingCert};
use kvinject::webhook::{http, review::Reviewer};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::webhook::client_config;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn write_pair(dir: &Path, cert: &str, key: &str) {
    // As a Secret volume does: write aside, then rename into place.
    for (name, contents) in [("tls.crt", cert), ("tls.key", key)] {
        let staged = dir.join(format!(".{name}.new"));
        std::fs::write(&staged, contents).unwrap();
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }
}

fn connector(cas: &[&str]) -> TlsConnector {
    let mut config = client_config(cas, rustls::DEFAULT_VERSIONS, &[]);
    // Every connection shows the server's current certificate (no session resumption).
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// Posts one review on a fresh connection; returns the DER of the certificate the server showed.
async fn post_once(
    addr: SocketAddr,
    connector: &TlsConnector,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("kvinject.kvinject.svc").unwrap();
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::post("/mutate")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(peer)
}

async fn serve(store: Arc<CertStore>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = tls::server_config_with(store).unwrap();
    let app = http::admission_router(Reviewer::new(
        Arc::new(DocumentFacts::default()),
        Settings::new(None, None, "kvinject"),
        Limits::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(listener::serve_tls(
        listener,
        config,
        app,
        Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

fn leaf_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_certificate_swapped_under_load_is_picked_up_with_zero_failures() {
    let first = certs::generate("kvinject", "kvinject", 30, 7).unwrap();
    let second = certs::generate("kvinject", "kvinject", 30, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), &first.cert_pem, &first.key_pem);
    let store = CertStore::new(
        ServingCert::from_files(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap(),
    );
    let (addr, _stop) = serve(store.clone()).await;
    let _stop_watch = watch_dir(&store, dir.path(), Duration::from_millis(50));
    let connector = connector(&[&first.ca_pem, &second.ca_pem]);
    let body = std::fs::read("tests/fixtures/reviews/allow-update.json").unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let saw_second = Arc::new(AtomicBool::new(false));
    let second_der = leaf_der(&second.cert_pem);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (connector, body, failures, served, saw_second, second_der) = (
                connector.clone(),
                body.clone(),
                failures.clone(),
                served.clone(),
                saw_second.clone(),
                second_der.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..60 {
                    match post_once(addr, &connector, &body).await {
                        Ok(peer) => {
                            served.fetch_add(1, Ordering::Relaxed);
                            if peer == second_der {
                                saw_second.store(true, Ordering::Relaxed);
                            }
                        }
                        Err(error) => {
                            eprintln!("request failed: {error}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    write_pair(dir.path(), &second.cert_pem, &second.key_pem);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request failed during the swap"
    );
    assert_eq!(served.load(Ordering::Relaxed), 240);
    assert!(
        saw_second.load(Ordering::Relaxed),
        "new connections see the new certificate"
    );
    assert_eq!(
        post_once(addr, &connector, &body).await.unwrap(),
        second_der
    );
}

#[tokio::test]
async fn a_bad_replacement_is_refused_and_reported_while_the_old_one_serves() {
    let good = certs::generate("kvinject", "kvinject", 30, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), &good.cert_pem, &good.key_pem);
    let store = CertStore::new(
        ServingCert::from_files(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap(),
    );
    let readiness = Arc::new(Readiness::default());
    readiness.watch_certificate(store.clone());
    let (addr, _stop) = serve(store.clone()).await;
    let _stop_watch = watch_dir(&store, dir.path(), Duration::from_millis(30));
    let connector = connector(&[&good.ca_pem]);
    let body = std::fs::read("tests/fixtures/reviews/allow-update.json").unwrap();
    let good_der = leaf_der(&good.cert_pem);

    let expired = {
        let ca = certs::new_ca("kvinject", "kvinject", Validity::days(30)).unwrap();
        issued_between(&ca, time::Duration::days(10), time::Duration::days(-1))
    };
    let other_key = certs::generate("kvinject", "kvinject", 30, 7)
        .unwrap()
        .key_pem;
    let cases: [(&str, String, String, &str); 3] = [
        (
            "unreadable",
            "not a certificate".into(),
            good.key_pem.clone(),
            "no CERTIFICATE block",
        ),
        (
            "expired",
            expired.0.clone(),
            expired.1.clone(),
            "not valid now",
        ),
        (
            "mismatched key",
            good.cert_pem.clone(),
            other_key,
            "do not make a TLS configuration",
        ),
    ];
    for (name, cert, key, reason) in cases {
        write_pair(dir.path(), &cert, &key);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !store.health().unwrap().is_some_and(|p| p.contains(reason)) {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: not reported: {:?}",
                store.health()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            post_once(addr, &connector, &body).await.unwrap(),
            good_der,
            "{name}: the old one still serves"
        );
        assert_eq!(readiness.check(), Ok(()), "{name}: still ready");
        assert!(
            readiness.note().unwrap().contains(reason),
            "{name}: readiness says so"
        );
    }
    // Repaired: served, and the report clears.
    write_pair(dir.path(), &good.cert_pem, &good.key_pem);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.health().unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Watches `dir`'s tls.crt and tls.key for `store` every `interval`, until the sender returned
/// is dropped.
fn watch_dir(
    store: &Arc<CertStore>,
    dir: &Path,
    interval: Duration,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tls::watch_files(
        store.clone(),
        dir.join("tls.crt"),
        dir.join("tls.key"),
        interval,
        async {
            let _ = stopped.await;
        },
    ));
    stop
}

/// A serving certificate of `ca` valid from `ago` before now until `ahead` after it: (PEM
/// certificate, PEM key).
fn issued_between(
    ca: &certs::CaPair,
    ago: time::Duration,
    ahead: time::Duration,
) -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let validity = Validity {
        not_before: now - ago,
        not_after: now + ahead,
    };
    certs::issue(ca, "kvinject", "kvinject", validity).unwrap()
}

#[test]
fn an_expired_serving_certificate_makes_kvinject_unready() {
    let ca = certs::new_ca("kvinject", "kvinject", Validity::days(30)).unwrap();
    let (cert, key) = issued_between(&ca, time::Duration::hours(1), time::Duration::seconds(1));
    let store = CertStore::new(ServingCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    let readiness = Readiness::default();
    readiness.watch_certificate(store);
    assert_eq!(readiness.check(), Ok(()));
    std::thread::sleep(Duration::from_millis(1100));
    let reason = readiness.check().unwrap_err();
    assert!(reason.contains("serving certificate expired"), "{reason}");
}

fn webhook_configuration(kind: &str, names: &[&str]) -> Value {
    let webhooks: Vec<Value> = names
        .iter()
        .map(|name| json!({"name": name, "clientConfig": {"service": {"name": "kvinject", "namespace": "kvinject", "path": "/mutate"}},
            "admissionReviewVersions": ["v1"], "sideEffects": "None"}))
        .collect();
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": "kvinject"}, "webhooks": webhooks})
}

fn secret_text(api: &ApiServer, key: &str) -> String {
    use base64::Engine;
    let secret = api
        .get("secrets", "kvinject", "kvinject-tls")
        .expect("the Secret exists");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn self_managed_certificates_are_made_once_published_and_shared() {
    let api = ApiServer::start().await;
    api.put(webhook_configuration(
        "MutatingWebhookConfiguration",
        &["pods.kvinject.io"],
    ));
    api.put(webhook_configuration(
        "ValidatingWebhookConfiguration",
        &["workloads.kvinject.io", "pod-identity.kvinject.io"],
    ));
    let manager = |holder: &str| {
        SelfManaged::new(
            api.client(),
            "kvinject",
            "kvinject-tls",
            "kvinject",
            "kvinject",
            holder,
        )
    };
    let (a, b) = (manager("replica-a"), manager("replica-b"));
    let (first, second) = tokio::join!(
        a.bootstrap(Duration::from_secs(10)),
        b.bootstrap(Duration::from_secs(10))
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        first.not_after, second.not_after,
        "both replicas serve the one certificate"
    );
    let creates = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/secrets"))
        .count();
    assert_eq!(creates, 1, "one replica wrote the Secret");
    let secret = api.get("secrets", "kvinject", "kvinject-tls").unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(secret_text(&api, key).starts_with("-----BEGIN"), "{key}");
    }
    // The certificate chains to the CA for the Service's name, as the API server checks it.
    let ca = secret_text(&api, "ca.crt");
    let store = CertStore::new(first);
    let (addr, _stop) = serve(store).await;
    let body = std::fs::read("tests/fixtures/reviews/allow-update.json").unwrap();
    post_once(addr, &connector(&[&ca]), &body)
        .await
        .expect("verified with the published CA");
    // caBundle on every webhook of both configurations, through a strategic merge patch.
    use base64::Engine;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca.as_bytes());
    for plural in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ] {
        let configuration = api.get(plural, "", "kvinject").unwrap();
        for webhook in configuration["webhooks"].as_array().unwrap() {
            assert_eq!(
                webhook["clientConfig"]["caBundle"],
                bundle.as_str(),
                "{plural} {}",
                webhook["name"]
            );
            assert_eq!(
                webhook["clientConfig"]["service"]["path"], "/mutate",
                "the rest is untouched"
            );
        }
    }
    let patches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(
        patches
            .iter()
            .all(|r| r.content_type == "application/strategic-merge-patch+json"),
        "{patches:?}"
    );
    // Steady state: nothing more is written.
    api.clear_requests();
    a.reconcile().await.unwrap().unwrap();
    assert!(
        api.requests().iter().all(|r| r.method == "GET"
            || r.path.contains("/leases/")
            || r.method == "PUT" && r.path.contains("/leases/")),
        "{:?}",
        api.requests()
    );
}

#[tokio::test]
async fn a_serving_certificate_near_expiry_is_renewed_and_picked_up() {
    let api = ApiServer::start().await;
    let ca = certs::new_ca("kvinject", "kvinject", Validity::days(3650)).unwrap();
    let (cert, key) = issued_between(&ca, time::Duration::days(300), time::Duration::days(20));
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    api.put(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kvinject-tls", "namespace": "kvinject"}, "type": "kubernetes.io/tls",
        "data": {"ca.crt": b64(&ca.cert_pem), "ca.key": b64(&ca.key_pem), "tls.crt": b64(&cert), "tls.key": b64(&key)}}));
    let manager = SelfManaged::new(
        api.client(),
        "kvinject",
        "kvinject-tls",
        "kvinject",
        "kvinject",
        "replica-a",
    );
    let store = CertStore::new(ServingCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    let old_expiry = store.not_after().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        manager.run(store.clone(), Duration::from_millis(50), async {
            let _ = stopped.await;
        }),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.not_after() == Some(old_expiry) {
        assert!(std::time::Instant::now() < deadline, "not renewed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store.not_after().unwrap() > time::OffsetDateTime::now_utc() + time::Duration::days(280),
        "a fresh year"
    );
    assert_eq!(
        secret_text(&api, "ca.crt"),
        ca.cert_pem,
        "the CA, still valid, is kept"
    );
    let replace = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT" && r.path.ends_with("/secrets/kvinject-tls"))
        .expect("Secret replaced");
    let body: Value = serde_json::from_str(&replace.body).unwrap();
    assert!(
        body["metadata"]["resourceVersion"].is_string(),
        "conditioned on what was read"
    );
}
