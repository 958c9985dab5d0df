//! Faults and hostile clients: idle keep-alive, slow clients, bursts, panics, old TLS versions,
//! a slow API server, SIGTERM drains and a killed replica. Every test sends traffic to loopback
//! only and is bounded in count and time.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kvinject::core::facts::DocumentFacts;
use kvinject::core::plan::Settings;
use kvinject::webhook::listener::{self, Limits};
use kvinject::webhook::metrics::Metrics;
use kvinject::webhook::{http, review::Reviewer};
use rustls::pki_types::ServerName;
use support::webhook::{client_config, free_port, review_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

struct Tls {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
    dir: tempfile::TempDir,
}

fn tls() -> Tls {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certs = kvinject::certs::generate("kvinject", "kvinject", 30, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    kvinject::certs::write(dir.path(), &certs).unwrap();
    let config = kvinject::webhook::tls::server_config(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
    )
    .unwrap();
    Tls {
        ca_pem: certs.ca_pem,
        config,
        dir,
    }
}

async fn serve(app: Router, limits: Limits, tls: &Tls) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(listener::serve_tls(
        listener,
        tls.config.clone(),
        app,
        limits,
        std::future::pending(),
    ));
    addr
}

fn webhook_app(limits: Limits) -> Router {
    http::admission_router(Reviewer::new(
        Arc::new(DocumentFacts::default()),
        Settings::new(None, None, "kvinject"),
        limits,
    ))
}

/// A client that trusts `ca_pem` and speaks HTTP/1.1, as the API server does.
fn connector(ca_pem: &str) -> TlsConnector {
    let versions = rustls::DEFAULT_VERSIONS;
    TlsConnector::from(Arc::new(client_config(&[ca_pem], versions, &[b"http/1.1"])))
}

async fn connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    connector
        .connect(
            ServerName::try_from("kvinject.kvinject.svc").unwrap(),
            stream,
        )
        .await
}

fn fixture() -> Vec<u8> {
    review_bytes("patch-workload-identity")
}

fn request(path: &str, body: &[u8]) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

/// A keep-alive HTTP/1.1 client connection.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn open(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<Self> {
        let tls = connect(addr, connector).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> Result<u16, String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request(path, body))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_outlives_the_api_servers_90_s_reuse_window() {
    let tls = tls();
    let limits = Limits::default();
    let addr = serve(webhook_app(limits), limits, &tls).await;
    let connector = connector(&tls.ca_pem);
    let mut client = Client::open(addr, &connector).await.unwrap();
    assert_eq!(client.post("/mutate", &fixture()).await, Ok(200));
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert_eq!(
        client.post("/mutate", &fixture()).await,
        Ok(200),
        "same connection after 91 s idle"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let tls = tls();
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let addr = serve(webhook_app(limits), limits, &tls).await;
    let mut stream = connect(addr, &connector(&tls.ca_pem)).await.unwrap();
    let started = Instant::now();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer))
        .await
        .expect("closed");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed for idleness, not at once: {elapsed:?}"
    );
}

#[tokio::test]
async fn an_http2_connection_without_requests_is_closed_after_the_idle_timeout() {
    let tls = tls();
    let limits = Limits {
        idle_timeout: Duration::from_millis(400),
        http2_keep_alive: Duration::from_millis(100),
        ..Limits::default()
    };
    let addr = serve(webhook_app(limits), limits, &tls).await;
    let h2 = TlsConnector::from(Arc::new(client_config(
        &[&tls.ca_pem],
        rustls::DEFAULT_VERSIONS,
        &[b"h2"],
    )));
    let stream = connect(addr, &h2).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    // Requests keep it open past the idle timeout (pings alone would not).
    let started = Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let response = sender
            .send_request(request("/mutate", &fixture()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(!connection.is_finished(), "open while used");
    let idle_from = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("closed when idle")
        .unwrap()
        .unwrap();
    assert!(
        idle_from.elapsed() >= Duration::from_millis(300),
        "{:?}",
        idle_from.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slowloris_connections_do_not_stop_real_requests() {
    let tls = tls();
    let limits = Limits {
        header_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let addr = serve(webhook_app(limits), limits, &tls).await;
    let connector = connector(&tls.ca_pem);
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut stream = connect(addr, &connector).await.unwrap();
        stream
            .write_all(
                b"POST /mutate HTTP/1.1\r\nHost: kvinject\r\nContent-Type: application/json\r\n",
            )
            .await
            .unwrap();
        slow.push(stream);
    }
    // Real requests are answered while all of them hang.
    for _ in 0..20 {
        let mut client = Client::open(addr, &connector).await.unwrap();
        assert_eq!(client.post("/mutate", &fixture()).await, Ok(200));
    }
    // Then the slow ones are cut off by the request deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = 0;
    for mut stream in slow {
        let mut byte = [0u8; 1];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => closed += 1, // an error response, then close
            Err(_) => {}
        }
    }
    assert_eq!(closed, 1000, "every slow connection was closed");
}

async fn panicking() -> &'static str {
    panic!("handler bug")
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_for_its_request_only_and_counted() {
    let tls = tls();
    let metrics = Arc::new(Metrics::new());
    let app = Router::new()
        .route("/panic", post(panicking))
        .route("/ok", post(|| async { "fine" }));
    let app = http::harden(app, metrics.clone());
    let addr = serve(app, Limits::default(), &tls).await;
    let connector = connector(&tls.ca_pem);
    let mut client = Client::open(addr, &connector).await.unwrap();
    assert_eq!(client.post("/panic", b"{}").await, Ok(500));
    assert_eq!(
        client.post("/ok", b"{}").await,
        Ok(200),
        "the same connection keeps serving"
    );
    let mut other = Client::open(addr, &connector).await.unwrap();
    assert_eq!(
        other.post("/ok", b"{}").await,
        Ok(200),
        "the process keeps serving"
    );
    assert!(
        metrics.render().contains("kvinject_handler_panics_total 1"),
        "{}",
        metrics.render()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_capacity_gets_fast_503s_not_a_queue() {
    let tls = tls();
    let metrics = Arc::new(Metrics::new());
    // The admission routes' gate, in front of a handler that takes its time.
    let gate = Arc::new(http::Gate::new(4, http::MAX_BODY_BYTES));
    let rejected = metrics.clone();
    let app = Router::new().route(
        "/slow",
        post(move |headers: HeaderMap, body: Body| async move {
            match gate.admit(&headers, body, Duration::from_secs(2)).await {
                Ok(_admitted) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    "done".into_response()
                }
                Err(error) => error.respond(&rejected),
            }
        }),
    );
    let app = http::harden(app, metrics.clone());
    let addr = serve(app, Limits::default(), &tls).await;
    let connector = connector(&tls.ca_pem);
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(Client::open(addr, &connector).await.unwrap());
    }
    let started = Instant::now();
    let results = futures_util::future::join_all(clients.iter_mut().map(|c| async {
        let sent = Instant::now();
        (c.post("/slow", b"{}").await, sent.elapsed())
    }))
    .await;
    let ok = results.iter().filter(|(r, _)| *r == Ok(200)).count();
    let shed: Vec<_> = results.iter().filter(|(r, _)| *r == Ok(503)).collect();
    assert_eq!(ok + shed.len(), 40, "{results:?}");
    assert_eq!(ok, 4, "exactly the capacity was served");
    for (_, took) in &shed {
        assert!(
            *took < Duration::from_millis(450),
            "a 503 does not wait for capacity: {took:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        metrics
            .render()
            .contains("kvinject_http_rejected_total{status=\"503\"} 36"),
        "{}",
        metrics.render()
    );
}

/// A ClientHello that offers only `version` (no supported_versions extension), as a TLS 1.0 or
/// 1.1 client sends it.
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&version); // client_version
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, version[0], version[1]];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_0_1_1_and_plain_http_are_refused_promptly() {
    let tls = tls();
    let limits = Limits::default();
    let addr = serve(webhook_app(limits), limits, &tls).await;
    for (name, version) in [("TLS 1.0", [0x03, 0x01]), ("TLS 1.1", [0x03, 0x02])] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(&legacy_client_hello(version))
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer))
            .await
            .expect("closed promptly");
        assert_eq!(
            answer.first(),
            Some(&0x15),
            "{name}: answered with an alert record: {answer:?}"
        );
        assert_eq!(answer.get(5), Some(&0x02), "{name}: a fatal alert");
        assert!(
            matches!(answer.get(6), Some(&70) | Some(&40)),
            "{name}: protocol_version or handshake_failure: {answer:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "{name}");
    }
    // The server is unharmed.
    let mut client = Client::open(addr, &connector(&tls.ca_pem)).await.unwrap();
    assert_eq!(client.post("/mutate", &fixture()).await, Ok(200));
}

#[tokio::test]
async fn a_slow_api_server_costs_at_most_the_write_deadline() {
    let api = support::apiserver::ApiServer::start().await;
    api.put(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
        "labels": {"kvinject.io/injection": "enabled"},
        "annotations": {"kvinject.io/vault": "shop-prod-kv", "kvinject.io/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}}));
    api.put(serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "checkout", "namespace": "shop",
        "annotations": {"azure.workload.identity/client-id": "5e2c6f4a-9d1b-4c3e-8a7f-0b1c2d3e4f50"}}}));
    let readiness = Arc::new(kvinject::lifecycle::readiness::Readiness::default());
    let cluster = kvinject::cluster::Cluster::start(
        api.client(),
        readiness.clone(),
        Duration::from_millis(300),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while readiness.check().is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let limits = Limits {
        write_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let state = Reviewer::live(
        cluster,
        Settings::new(None, None, "kvinject"),
        limits,
        Duration::from_secs(60),
    );
    api.delay_next("PATCH", "secretproviderclasses", Duration::from_secs(5));
    let started = Instant::now();
    let response = tower::ServiceExt::oneshot(
        http::admission_router(state),
        axum::http::Request::post("/mutate")
            .header("content-type", "application/json")
            .body(Body::from(fixture()))
            .unwrap(),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        answer["response"]["allowed"], false,
        "never admitted without its SPC"
    );
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer from the API server within")
    );
    assert!(
        took < Duration::from_secs(2),
        "answered within the deadline: {took:?}"
    );
}

// ---- Processes: SIGTERM drain and a killed replica ----

struct Replica {
    child: Child,
    https: u16,
    health: u16,
}

impl Drop for Replica {
    /// A failing test must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_replica(dir: &Path) -> Replica {
    let (https, health) = (free_port(), free_port());
    let child = replica_command(dir, https, health, "500ms")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Replica {
        child,
        https,
        health,
    }
}

/// `kvinject serve --facts` on loopback with the certificates of `dir`.
fn replica_command(dir: &Path, https: u16, health: u16, shutdown_delay: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvinject"));
    command
        .args(["serve", "--facts", "tests/fixtures/facts.yaml"])
        .args(["--tls-cert-file", dir.join("tls.crt").to_str().unwrap()])
        .args(["--tls-key-file", dir.join("tls.key").to_str().unwrap()])
        .args([
            "--listen",
            &format!("127.0.0.1:{https}"),
            "--health-listen",
            &format!("127.0.0.1:{health}"),
        ])
        .args(["--shutdown-delay", shutdown_delay])
        .stdout(Stdio::null());
    command
}

async fn readyz(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    answer.get(9..12)?.parse().ok()
}

async fn wait_ready(replica: &Replica) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(replica.health).await != Some(200) {
        assert!(Instant::now() < deadline, "replica never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `count` reviews over keep-alive connections spread on the replicas, like the API
/// server behind a Service; a failed request is retried once on a fresh connection to the next
/// replica. Returns (requests that failed even after the retry, requests that needed one).
async fn drive(
    ports: Vec<u16>,
    ca_pem: String,
    count: usize,
    during: impl Future<Output = ()>,
) -> (usize, usize) {
    let connector = connector(&ca_pem);
    let body = fixture();
    let load = async {
        let mut failed = 0;
        let mut retried = 0;
        let mut clients: Vec<Option<Client>> = ports.iter().map(|_| None).collect();
        for i in 0..count {
            let mut ok = false;
            for attempt in 0..2 {
                let slot = (i + attempt) % ports.len();
                if clients[slot].is_none() {
                    let addr = SocketAddr::from(([127, 0, 0, 1], ports[slot]));
                    clients[slot] = Client::open(addr, &connector).await.ok();
                }
                let Some(client) = clients[slot].as_mut() else {
                    continue;
                };
                match client.post("/mutate", &body).await {
                    Ok(200) => {
                        ok = true;
                        break;
                    }
                    _ => {
                        clients[slot] = None;
                        if attempt == 0 {
                            retried += 1;
                        }
                    }
                }
            }
            if !ok {
                failed += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (failed, retried)
    };
    let (result, ()) = tokio::join!(load, during);
    result
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_replica_and_a_retrying_client_sees_no_failure() {
    let tls = tls();
    let mut a = start_replica(tls.dir.path());
    let mut b = start_replica(tls.dir.path());
    wait_ready(&a).await;
    wait_ready(&b).await;
    let health_a = a.health;
    let pid_a = a.child.id();
    let during = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &pid_a.to_string()])
            .status();
        // /readyz turns 503 at once (the health port answers during the drain).
        let mut saw_unready = false;
        while sent.elapsed() < Duration::from_secs(2) {
            match readyz(health_a).await {
                Some(503) => {
                    saw_unready = true;
                    break;
                }
                None => break,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        assert!(saw_unready, "readyz answered 503 during the drain");
    };
    let (failed, _retried) = drive(vec![a.https, b.https], tls.ca_pem.clone(), 400, during).await;
    assert_eq!(
        failed, 0,
        "no request failed once retried on a fresh connection"
    );
    let exited = Instant::now();
    loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            assert!(status.success(), "clean exit: {status}");
            break;
        }
        assert!(
            exited.elapsed() < Duration::from_secs(25),
            "exited within the drain bound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&b.child, "TERM");
    assert!(b.child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_fails_only_in_flight_requests() {
    let tls = tls();
    let mut a = start_replica(tls.dir.path());
    let mut b = start_replica(tls.dir.path());
    wait_ready(&a).await;
    wait_ready(&b).await;
    let pid_a = a.child.id();
    let during = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = Command::new("kill")
            .args(["-KILL", &pid_a.to_string()])
            .status();
    };
    let (failed, retried) = drive(vec![a.https, b.https], tls.ca_pem.clone(), 400, during).await;
    assert_eq!(failed, 0, "every request succeeded on retry");
    assert!(retried >= 1, "the kill was noticed");
    let _ = a.child.wait();
    signal(&b.child, "TERM");
    assert!(b.child.wait().unwrap().success());
}

/// A replica with `args` whose logs are kept, ready, a client connected to it, and its health
/// port.
async fn logging_replica(tls: &Tls, args: &[&str]) -> (Child, Client, u16) {
    let (https, health) = (free_port(), free_port());
    let child = replica_command(tls.dir.path(), https, health, "0s")
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let replica = Replica {
        child: Command::new("true").spawn().unwrap(),
        https,
        health,
    };
    wait_ready(&replica).await;
    let connector = connector(&tls.ca_pem);
    let client = Client::open(SocketAddr::from(([127, 0, 0, 1], https)), &connector)
        .await
        .unwrap();
    (child, client, health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_one_json_log_line_per_admission() {
    let tls = tls();
    let (child, mut client, health) = logging_replica(&tls, &["--log-format", "json"]).await;
    // The first pod twice: the second is answered from the remembered plan, its object unread.
    for name in [
        "patch-workload-identity",
        "patch-workload-identity",
        "deny-env-conflict",
        "allow-deployment",
    ] {
        let body = std::fs::read(format!("tests/fixtures/reviews/{name}.json")).unwrap();
        assert_eq!(client.post("/mutate", &body).await, Ok(200));
    }
    assert_eq!(client.post("/mutate", b"not json").await, Ok(400));
    let mut stream = TcpStream::connect(("127.0.0.1", health)).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut metrics = String::new();
    stream.read_to_string(&mut metrics).await.unwrap();
    for line in [
        "kvinject_admissions_total{route=\"mutate\",kind=\"Pod\",outcome=\"patched\"} 2",
        "kvinject_plan_cache_lookups_total{result=\"hit\"} 1",
        "kvinject_admissions_total{route=\"mutate\",kind=\"Pod\",outcome=\"denied\"} 1",
        "kvinject_admissions_total{route=\"mutate\",kind=\"Deployment\",outcome=\"allowed\"} 1",
        "kvinject_denials_total{route=\"mutate\",reason=\"conflict\"} 1",
        "kvinject_http_rejected_total{status=\"400\"} 1",
        "kvinject_admission_duration_seconds_bucket{le=\"0.005\",route=\"mutate\"}",
        "kvinject_ready 1",
        "kvinject_admissions_in_flight 0",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kvinject_serving_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the certificate's expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(expiry > now, "{expiry} is after {now}");
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    let admissions: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "admission")
        .collect();
    assert_eq!(admissions.len(), 4, "one line per admission:\n{logs}");
    // The remembered answer's line names the pod as the planned one's did.
    for field in ["namespace", "name", "workload", "outcome"] {
        assert_eq!(admissions[1][field], admissions[0][field], "{field}");
    }
    assert_eq!(admissions[0]["name"], "checkout-7d9f8c6b5-");
    let first = &admissions[0];
    assert_eq!(first["namespace"], "shop");
    assert_eq!(
        first["operation"], "CREATE",
        "spelt as in the AdmissionReview"
    );
    assert_eq!(first["workload"], "ReplicaSet/checkout-7d9f8c6b5");
    assert_eq!(first["outcome"], "patched");
    assert!(first["duration_us"].is_u64());
    assert!(
        !logs.contains("kvinject.io/env.DB_PASSWORD\":"),
        "never whole objects in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_no_escape_codes_and_no_forged_lines() {
    let tls = tls();
    let (child, mut client, _) = logging_replica(&tls, &[]).await;
    assert_eq!(client.post("/mutate", &fixture()).await, Ok(200));
    // Text a sender controls, reaching the admission line and the rejection line: the API server
    // validates owner names only after the mutating webhooks, and serde quotes an unknown
    // operation as sent.
    let forged = "x\n2026-01-01T00:00:00Z  INFO forged: admission outcome=\"patched\"\u{1b}[2J";
    let mut review: serde_json::Value = serde_json::from_slice(&fixture()).unwrap();
    review["request"]["object"]["metadata"]["ownerReferences"][0]["name"] = forged.into();
    let body = serde_json::to_vec(&review).unwrap();
    assert_eq!(client.post("/mutate", &body).await, Ok(200));
    review["request"]["operation"] = forged.into();
    let body = serde_json::to_vec(&review).unwrap();
    assert_eq!(client.post("/mutate", &body).await, Ok(400));
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        logs.matches("kvinject::webhook::http: admission ").count(),
        2,
        "two admission lines:\n{logs}"
    );
    assert!(
        logs.contains("rejected request"),
        "the rejection line:\n{logs}"
    );
    assert!(!logs.contains('\u{1b}'), "no escape codes:\n{logs:?}");
    assert!(
        !logs
            .lines()
            .any(|line| line.starts_with("2026-01-01T00:00:00Z")),
        "no line of the sender's making:\n{logs}"
    );
    assert_eq!(
        logs.matches("INFO forged").count(),
        2,
        "the sender's text, escaped, in both lines:\n{logs}"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_the_held_ones_keep_serving() {
    let tls = tls();
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let addr = serve(webhook_app(limits), limits, &tls).await;
    let connector = connector(&tls.ca_pem);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::open(addr, &connector).await.unwrap());
    }
    // The fourth is closed before any TLS: the handshake fails.
    assert!(connect(addr, &connector).await.is_err(), "over the cap");
    for client in &mut held {
        assert_eq!(client.post("/mutate", &fixture()).await, Ok(200));
    }
    // A slot freed is a slot to take.
    held.pop();
    let mut again = None;
    for _ in 0..50 {
        if let Ok(client) = Client::open(addr, &connector).await {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = again.expect("a freed slot is served again");
    assert_eq!(again.post("/mutate", &fixture()).await, Ok(200));
}
