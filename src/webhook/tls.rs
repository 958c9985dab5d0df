//! rustls server configuration whose certificate can be replaced while serving: TLS 1.2 and 1.3
//! only, HTTP/2 and HTTP/1.1 by ALPN.
//!
//! [`CertStore`] holds the certificate every new handshake gets. A replacement (new files from a
//! Secret volume or cert-manager, or a renewal kvinject made itself) is checked first: it must
//! parse, its key must match, and it must be valid now. A bad one is refused and reported; the
//! store keeps serving the one it has. Handshakes in progress and open connections are never
//! disturbed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use crate::lifecycle::readiness::HealthCheck;
use crate::lifecycle::ticks::Ticks;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file that cannot be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate or key rustls refuses, or a key that does not match the certificate.
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A certificate outside its validity period.
    #[error("certificate is not valid now: valid from {not_before} until {not_after}")]
    NotValidNow {
        /// Start of validity.
        not_before: OffsetDateTime,
        /// End of validity.
        not_after: OffsetDateTime,
    },
    /// A certificate that does not parse as X.509.
    #[error("certificate does not parse: {0}")]
    Parse(String),
}

/// A certificate with its key, checked and ready to serve.
#[derive(Debug, Clone)]
pub struct ServingCert {
    key: Arc<CertifiedKey>,
    /// End of the end-entity certificate's validity.
    pub not_after: OffsetDateTime,
    /// Start of its validity.
    pub not_before: OffsetDateTime,
}

impl ServingCert {
    /// Parses a PEM chain and key and checks they belong together and are valid now.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let pem = |reason: String| TlsError::Pem {
            path: PathBuf::from("<pem>"),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| pem(e.to_string()))?;
        let Some(leaf) = chain.first() else {
            return Err(pem("no CERTIFICATE block".into()));
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| TlsError::Parse(e.to_string()))?;
        let validity = parsed.validity();
        let not_before = validity.not_before.to_datetime();
        let not_after = validity.not_after.to_datetime();
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem(e.to_string()))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = CertifiedKey::from_der(chain, key, &provider)?;
        let now = OffsetDateTime::now_utc();
        if now < not_before || now >= not_after {
            return Err(TlsError::NotValidNow {
                not_before,
                not_after,
            });
        }
        Ok(Self {
            key: Arc::new(key),
            not_after,
            not_before,
        })
    }

    /// Reads a PEM chain and key from files.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| TlsError::Pem {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        };
        Self::from_pem(&read(cert_file)?, &read(key_file)?).map_err(|error| match error {
            TlsError::Pem { reason, .. } => TlsError::Pem {
                path: cert_file.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

#[derive(Debug)]
struct Current {
    cert: ServingCert,
    problem: Option<String>,
}

/// The certificate new handshakes get; replaceable while serving.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Current>,
}

impl CertStore {
    /// A store serving `cert`.
    pub fn new(cert: ServingCert) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Current {
                cert,
                problem: None,
            }),
        })
    }

    /// Serves `cert` from the next handshake on, and clears any reported problem.
    pub fn replace(&self, cert: ServingCert) {
        if let Ok(mut current) = self.current.write() {
            tracing::info!(not_after = %cert.not_after, "serving a new certificate");
            *current = Current {
                cert,
                problem: None,
            };
        }
    }

    /// Records why a replacement was refused; the current certificate stays.
    pub fn report(&self, problem: String) {
        tracing::error!(%problem, "certificate not replaced; still serving the previous one");
        if let Ok(mut current) = self.current.write() {
            current.problem = Some(problem);
        }
    }

    /// The current certificate's end of validity.
    pub fn not_after(&self) -> Option<OffsetDateTime> {
        self.current.read().ok().map(|c| c.cert.not_after)
    }
}

impl HealthCheck for CertStore {
    /// `Err` when the served certificate has expired (the API server would refuse it); the last
    /// refused replacement is reported alongside but does not make kvinject unready.
    fn health(&self) -> Result<Option<String>, String> {
        let current = self
            .current
            .read()
            .map_err(|_| "certificate state poisoned".to_owned())?;
        if OffsetDateTime::now_utc() >= current.cert.not_after {
            return Err(format!(
                "serving certificate expired at {}",
                current.cert.not_after
            ));
        }
        Ok(current.problem.clone())
    }

    fn expiry(&self) -> Option<i64> {
        Some(self.not_after()?.unix_timestamp())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.cert.key.clone())
    }
}

/// The server configuration over a [`CertStore`], without client certificates.
pub fn server_config_with(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for_clients(store, None)
}

/// The server configuration over a [`CertStore`]; with `client_ca_file`, every client must
/// present a certificate that CA signed (the API server does, when its AdmissionConfiguration
/// gives it one for webhooks), and a handshake without one fails.
pub fn server_config_for_clients(
    store: Arc<CertStore>,
    client_ca_file: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = |reason: String| TlsError::Pem {
                path: path.to_owned(),
                reason,
            };
            let bytes = std::fs::read(path).map_err(|e| pem(e.to_string()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                roots
                    .add(cert.map_err(|e| pem(e.to_string()))?)
                    .map_err(|e| pem(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(pem("no CERTIFICATE block".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| pem(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Builds the server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(CertStore::new(ServingCert::from_files(
        cert_file, key_file,
    )?))
}

/// Re-reads the files every `interval` until `shutdown`, and serves them when they change and
/// check out; a change that does not is reported and the previous certificate kept. Secret
/// volumes swap both files through a symlink, so a half-written pair is caught by the checks and
/// picked up whole on a later pass.
pub async fn watch_files(
    store: Arc<CertStore>,
    cert_file: PathBuf,
    key_file: PathBuf,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let read_pair = || {
        Some((
            std::fs::read(&cert_file).ok()?,
            std::fs::read(&key_file).ok()?,
        ))
    };
    // No baseline: the first pass checks whatever the files hold by then (re-serving an
    // unchanged pair is harmless), so a change made before this task first ran is not missed.
    let mut last = None;
    let mut ticks = Ticks::new(interval, shutdown);
    while ticks.next().await {
        let pair = read_pair();
        if last.is_some() && pair == last {
            continue;
        }
        match &pair {
            Some((cert, key)) => match ServingCert::from_pem(cert, key) {
                Ok(serving) => store.replace(serving),
                Err(error) => store.report(format!("{}: {error}", cert_file.display())),
            },
            None => store.report(format!(
                "{} or {} cannot be read",
                cert_file.display(),
                key_file.display()
            )),
        }
        last = pair;
    }
}
