//! A local HTTPS endpoint that speaks the Key Vault REST API as the Azure SDK expects it: an
//! unauthenticated first request answered 401 with a `WWW-Authenticate` challenge, then bearer
//! requests; version lists with `nextLink` paging; `{"error":{"code":…}}` errors. It records
//! every request and flags any that would read a value.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const TOKEN: &str = "test-token";
pub const SUFFIX: &str = "vault.localhost";

/// How a vault behaves.
#[derive(Clone, Debug)]
pub enum Behaviour {
    Normal,
    Status(u16, Option<u64>),
    Slow(Duration),
}

#[derive(Default)]
struct Inner {
    /// (vault, kind, name) -> versions (JSON items).
    objects: BTreeMap<(String, String, String), Vec<Value>>,
    behaviour: BTreeMap<String, Behaviour>,
    requests: Vec<(String, String)>,
    value_reads: Vec<String>,
}

#[derive(Clone)]
pub struct KeyVaultDouble {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
    pub ca_pem: String,
}

/// One version's attributes, as Unix seconds.
pub struct Attrs {
    pub enabled: bool,
    pub created: i64,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn attrs(created: i64) -> Attrs {
    Attrs {
        enabled: true,
        created,
        exp: None,
        nbf: None,
    }
}

impl KeyVaultDouble {
    pub async fn start(vaults: &[&str]) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = kvinject::certs::new_ca(
            "keyvault-double",
            "test",
            kvinject::certs::Validity::days(2),
        )
        .unwrap();
        let names: Vec<String> = vaults.iter().map(|v| format!("{v}.{SUFFIX}")).collect();
        let (cert, key) = kvinject::certs::issue_for(
            &ca,
            &names,
            "vault.localhost",
            kvinject::certs::Validity::days(1),
        )
        .unwrap();
        let store = kvinject::webhook::tls::CertStore::new(
            kvinject::webhook::tls::ServingCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(),
        );
        let config = kvinject::webhook::tls::server_config_with(store).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let double = Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            addr,
            ca_pem: ca.cert_pem,
        };
        let app = Router::new().fallback(handle).with_state(double.clone());
        tokio::spawn(kvinject::webhook::listener::serve_tls(
            listener,
            config,
            app,
            kvinject::webhook::listener::Limits::default(),
            std::future::pending(),
        ));
        double
    }

    /// Adds a version of an object (`kind`: secrets, keys, certificates).
    pub fn add(&self, vault: &str, kind: &str, name: &str, version: &str, attributes: Attrs) {
        let id = format!("https://{vault}.{SUFFIX}/{kind}/{name}/{version}");
        let mut attrs = json!({"enabled": attributes.enabled, "created": attributes.created, "updated": attributes.created, "recoveryLevel": "Recoverable+Purgeable"});
        if let Some(exp) = attributes.exp {
            attrs["exp"] = json!(exp);
        }
        if let Some(nbf) = attributes.nbf {
            attrs["nbf"] = json!(nbf);
        }
        let mut item = json!({"attributes": attrs, "tags": {}});
        match kind {
            "keys" => item["kid"] = json!(id),
            "certificates" => {
                item["id"] = json!(id);
                item["x5t"] = json!("dGVzdA");
            }
            _ => {
                item["id"] = json!(id);
                item["contentType"] = json!("text/plain");
            }
        }
        self.inner
            .lock()
            .unwrap()
            .objects
            .entry((vault.into(), kind.into(), name.into()))
            .or_default()
            .push(item);
    }

    pub fn behave(&self, vault: &str, behaviour: Behaviour) {
        self.inner
            .lock()
            .unwrap()
            .behaviour
            .insert(vault.into(), behaviour);
    }

    /// (vault, path and query) of every request.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap().requests.clear();
    }

    /// Requests that would have returned a value or private key: must stay empty.
    pub fn value_reads(&self) -> Vec<String> {
        self.inner.lock().unwrap().value_reads.clone()
    }

    /// An HTTP client for the SDK that trusts the double's CA and resolves its vaults to it.
    pub fn transport(&self, vaults: &[&str]) -> azure_core::http::Transport {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none());
        for vault in vaults {
            builder = builder.resolve(&format!("{vault}.{SUFFIX}"), self.addr);
        }
        azure_core::http::Transport::new(Arc::new(builder.build().unwrap()))
    }

    /// The DNS suffix to give kvinject (the port rides along in the vault URL).
    pub fn suffix(&self) -> String {
        format!("{SUFFIX}:{}", self.addr.port())
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

const PAGE: usize = 2;

async fn handle(State(double): State<KeyVaultDouble>, request: Request) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let vault = host.split('.').next().unwrap_or("").to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    double
        .inner
        .lock()
        .unwrap()
        .requests
        .push((vault.clone(), format!("{path}?{query}")));
    if !query.contains("api-version=") {
        return error(400, "MissingApiVersionParameter", "api-version is required");
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    match authorization.as_deref() {
        None => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, format!("Bearer authorization=\"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47\", resource=\"https://{SUFFIX}\""))],
                "",
            )
                .into_response();
        }
        Some(value) if value != format!("Bearer {TOKEN}") => {
            return error(401, "Unauthorized", "bad token");
        }
        Some(_) => {}
    }
    let behaviour = double
        .inner
        .lock()
        .unwrap()
        .behaviour
        .get(&vault)
        .cloned()
        .unwrap_or(Behaviour::Normal);
    match behaviour {
        Behaviour::Normal => {}
        Behaviour::Slow(delay) => tokio::time::sleep(delay).await,
        Behaviour::Status(status, retry_after) => {
            let mut response = error(
                status,
                "Forbidden",
                "The user, group or application does not have secrets list permission",
            );
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
            }
            return response;
        }
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (kind, name) = match parts.as_slice() {
        [kind, name, "versions"] => (*kind, *name),
        _ => {
            double.inner.lock().unwrap().value_reads.push(path.clone());
            return error(
                500,
                "TestFailure",
                "kvinject asked for a value or private key",
            );
        }
    };
    let items = double
        .inner
        .lock()
        .unwrap()
        .objects
        .get(&(vault.clone(), kind.to_owned(), name.to_owned()))
        .cloned();
    let Some(items) = items else {
        let code = match kind {
            "keys" => "KeyNotFound",
            "certificates" => "CertificateNotFound",
            _ => "SecretNotFound",
        };
        return error(
            404,
            code,
            &format!("A {kind} with (name/id) {name} was not found in this key vault."),
        );
    };
    let skip: usize = query
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix("$skiptoken=")
                .or_else(|| kv.strip_prefix("%24skiptoken="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = items.iter().skip(skip).take(PAGE).cloned().collect();
    let next = (skip + PAGE < items.len()).then(|| {
        format!(
            "https://{host}/{kind}/{name}/versions?api-version=2025-07-01&$skiptoken={}",
            skip + PAGE
        )
    });
    let body = json!({"value": page, "nextLink": next});
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A credential standing in for Entra ID.
#[derive(Debug)]
pub struct TestCredential;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for TestCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            TOKEN.to_owned(),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}
