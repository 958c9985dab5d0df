//! `kvinject certs`: a CA and a serving certificate for the webhook Service.
//!
//! Generation only; where the files go and how `caBundle` is filled is the caller's business
//! (see `certs/README.md`).

use std::fs;
use std::io::Write;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Default CA lifetime, in days: the `certs` command's and self-managed certificates'.
pub const DEFAULT_CA_DAYS: i64 = 3650;
/// Default serving certificate lifetime, in days.
pub const DEFAULT_CERT_DAYS: i64 = 365;

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// The output could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// PEM-encoded CA certificate, serving certificate and serving key.
#[derive(Debug, Clone)]
pub struct WebhookCerts {
    /// The CA certificate: what goes into `caBundle`.
    pub ca_pem: String,
    /// The serving certificate, signed by the CA.
    pub cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub key_pem: String,
}

/// DNS names the API server may use for `service` in `namespace`, plus loopback for local runs.
pub fn subject_alt_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ]
}

/// A CA certificate and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPair {
    /// The CA certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A validity period.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start.
    pub not_before: OffsetDateTime,
    /// End.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From five minutes ago (clock skew) for `days`.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(days),
        }
    }
}

/// Makes a CA for the webhook of `service` in `namespace`.
pub fn new_ca(service: &str, namespace: &str, validity: Validity) -> Result<CaPair, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(&format!("kvinject CA for {service}.{namespace}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = KeyPair::generate()?;
    let ca = CertifiedIssuer::self_signed(params, key)?;
    Ok(CaPair {
        cert_pem: ca.pem(),
        key_pem: ca.key().serialize_pem(),
    })
}

/// Issues a serving certificate for the Service's DNS names, signed by `ca`; returns the
/// certificate and key, PEM.
pub fn issue(
    ca: &CaPair,
    service: &str,
    namespace: &str,
    validity: Validity,
) -> Result<(String, String), CertError> {
    let names = subject_alt_names(service, namespace);
    issue_for(ca, &names, &format!("{service}.{namespace}.svc"), validity)
}

/// Issues a serving certificate for `names` (DNS names or IP addresses), signed by `ca`.
pub fn issue_for(
    ca: &CaPair,
    names: &[String],
    common_name: &str,
    validity: Validity,
) -> Result<(String, String), CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = name(common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Makes a CA (valid `ca_days`) and a serving certificate for the Service (valid `cert_days`).
pub fn generate(
    service: &str,
    namespace: &str,
    ca_days: i64,
    cert_days: i64,
) -> Result<WebhookCerts, CertError> {
    let ca = new_ca(service, namespace, Validity::days(ca_days))?;
    let (cert_pem, key_pem) = issue(&ca, service, namespace, Validity::days(cert_days))?;
    Ok(WebhookCerts {
        ca_pem: ca.cert_pem,
        cert_pem,
        key_pem,
    })
}

/// Writes `ca.crt`, `tls.crt` (0644) and `tls.key` (0600) into `dir`, creating it.
///
/// Each file is written to a new temporary file, created exclusively with its final mode, then
/// renamed over the target: an existing file's permissions are never kept, and a symlink in
/// the target's place is replaced, never followed.
pub fn write(dir: &Path, certs: &WebhookCerts) -> Result<(), CertError> {
    let fail = |path: &Path, source| CertError::Write {
        path: path.display().to_string(),
        source,
    };
    fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    for (file, contents, private) in [
        ("ca.crt", &certs.ca_pem, false),
        ("tls.crt", &certs.cert_pem, false),
        ("tls.key", &certs.key_pem, true),
    ] {
        let path = dir.join(file);
        let staged = dir.join(format!(".{file}.{}.tmp", std::process::id()));
        // A leftover of an interrupted run (or a link planted there) goes first.
        match fs::remove_file(&staged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(&staged, e)),
            _ => {}
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        let mut out = options.open(&staged).map_err(|e| fail(&staged, e))?;
        out.write_all(contents.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(|e| fail(&staged, e))?;
        fs::rename(&staged, &path).map_err(|e| fail(&path, e))?;
    }
    Ok(())
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
