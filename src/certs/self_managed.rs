//! Self-managed certificates: kvinject makes its own CA and serving certificate, keeps them in a
//! Secret in its namespace, keeps `caBundle` current in its webhook configurations, and renews
//! before expiry.
//!
//! One replica writes at a time (a Lease); every replica serves what the Secret holds and picks
//! up a renewal within one pass. The Secret is the only one kvinject touches, by name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use time::OffsetDateTime;

use crate::certs::{self, CaPair, Validity};
use crate::cluster::lease::{LEASE_DURATION, LeaseLock};
use crate::lifecycle::ticks::Ticks;
use crate::webhook::tls::{CertStore, ServingCert};

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// Why self-managed certificates could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    /// The API server refused or failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// Generation failed.
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    /// No usable certificate appeared in time.
    #[error(
        "no serving certificate in Secret {0} after {1:?}: is another replica holding the Lease but failing to write it? check kvinject's logs and RBAC"
    )]
    Timeout(String, Duration),
}

/// Where the certificates live and whom they serve.
#[derive(Clone)]
pub struct SelfManaged {
    secrets: Api<Secret>,
    client: Client,
    secret_name: String,
    webhook_configuration: String,
    service: String,
    namespace: String,
    lease: LeaseLock,
    /// Lifetimes of what kvinject issues.
    pub ca_days: i64,
    /// Serving certificate lifetime.
    pub cert_days: i64,
}

/// The Secret's contents that matter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Stored {
    ca_cert: String,
    ca_key: String,
    tls_cert: String,
    tls_key: String,
}

impl SelfManaged {
    /// Certificates for `service` in `namespace`, kept in Secret `secret_name`; the caBundle goes
    /// into the Mutating- and ValidatingWebhookConfiguration named `webhook_configuration`.
    pub fn new(
        client: Client,
        namespace: &str,
        secret_name: &str,
        webhook_configuration: &str,
        service: &str,
        holder: &str,
    ) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            lease: LeaseLock::new(
                client.clone(),
                namespace,
                &format!("{secret_name}-writer"),
                holder,
                LEASE_DURATION,
            ),
            client,
            secret_name: secret_name.to_owned(),
            webhook_configuration: webhook_configuration.to_owned(),
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            ca_days: certs::DEFAULT_CA_DAYS,
            cert_days: certs::DEFAULT_CERT_DAYS,
        }
    }

    /// The certificate to start serving: the Secret's when it is usable, else one this replica
    /// writes (holding the Lease) or waits for another replica to write.
    pub async fn bootstrap(&self, wait: Duration) -> Result<ServingCert, SelfManagedError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(serving) = self.reconcile().await? {
                return Ok(serving);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SelfManagedError::Timeout(self.secret_name.clone(), wait));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One pass: as the writer, renew what is due and keep caBundle current; as anyone, return
    /// the Secret's serving certificate when it is usable.
    pub async fn reconcile(&self) -> Result<Option<ServingCert>, SelfManagedError> {
        let (stored, resource_version) = self.read().await?;
        let writer = self.lease.acquire_or_renew().await.unwrap_or(false);
        let stored = if writer && self.needs_renewal(&stored) {
            let renewed = self.renew(&stored)?;
            self.write(&renewed, resource_version).await?;
            renewed
        } else {
            stored
        };
        if writer && !stored.ca_cert.is_empty() {
            self.publish_ca_bundle(&stored.ca_cert).await?;
        }
        Ok(ServingCert::from_pem(stored.tls_cert.as_bytes(), stored.tls_key.as_bytes()).ok())
    }

    /// Runs passes every `interval` until `shutdown`, serving each new certificate in `store`.
    pub async fn run(
        self,
        store: Arc<CertStore>,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut ticks = Ticks::new(interval, shutdown);
        while ticks.next().await {
            match self.reconcile().await {
                Ok(Some(serving)) if Some(serving.not_after) != store.not_after() => {
                    store.replace(serving)
                }
                Ok(_) => {}
                Err(error) => store.report(format!("self-managed certificates: {error}")),
            }
        }
    }

    async fn read(&self) -> Result<(Stored, Option<String>), kube::Error> {
        let Some(secret) = self.secrets.get_opt(&self.secret_name).await? else {
            return Ok((Stored::default(), None));
        };
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default()
        };
        Ok((
            Stored {
                ca_cert: text(CA_CERT),
                ca_key: text(CA_KEY),
                tls_cert: text(TLS_CERT),
                tls_key: text(TLS_KEY),
            },
            secret.metadata.resource_version.or(Some(String::new())),
        ))
    }

    /// A third of the serving certificate's lifetime left (or unusable) means renew; likewise
    /// for the CA.
    fn needs_renewal(&self, stored: &Stored) -> bool {
        let due = |pem: &str| match validity_of(pem) {
            Some((not_before, not_after)) => {
                let now = OffsetDateTime::now_utc();
                now >= not_after || (not_after - now) * 3 < (not_after - not_before)
            }
            None => true,
        };
        due(&stored.ca_cert)
            || stored.ca_key.is_empty()
            || due(&stored.tls_cert)
            || ServingCert::from_pem(stored.tls_cert.as_bytes(), stored.tls_key.as_bytes()).is_err()
    }

    fn renew(&self, stored: &Stored) -> Result<Stored, SelfManagedError> {
        let current_ca = CaPair {
            cert_pem: stored.ca_cert.clone(),
            key_pem: stored.ca_key.clone(),
        };
        let ca_usable = !stored.ca_key.is_empty()
            && validity_of(&stored.ca_cert).is_some_and(|(from, until)| {
                let now = OffsetDateTime::now_utc();
                (until - now) * 3 >= (until - from)
            });
        let ca = if ca_usable {
            current_ca
        } else {
            tracing::info!(secret = %self.secret_name, "issuing a new CA");
            certs::new_ca(&self.service, &self.namespace, Validity::days(self.ca_days))?
        };
        let (tls_cert, tls_key) = certs::issue(
            &ca,
            &self.service,
            &self.namespace,
            Validity::days(self.cert_days),
        )?;
        tracing::info!(secret = %self.secret_name, "issued a new serving certificate");
        Ok(Stored {
            ca_cert: ca.cert_pem,
            ca_key: ca.key_pem,
            tls_cert,
            tls_key,
        })
    }

    async fn write(
        &self,
        stored: &Stored,
        resource_version: Option<String>,
    ) -> Result<(), kube::Error> {
        let data: BTreeMap<String, ByteString> = [
            (CA_CERT, &stored.ca_cert),
            (CA_KEY, &stored.ca_key),
            (TLS_CERT, &stored.tls_cert),
            (TLS_KEY, &stored.tls_key),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), ByteString(value.clone().into_bytes())))
        .collect();
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name.clone()),
                labels: Some(BTreeMap::from([(
                    crate::core::annotations::MANAGED_BY_LABEL.to_owned(),
                    crate::core::annotations::MANAGED_BY_VALUE.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Secret::default()
        };
        match resource_version {
            None => {
                self.secrets.create(&PostParams::default(), &secret).await?;
            }
            Some(version) => {
                // Conditioned on what was read: a concurrent writer makes this a 409.
                secret.metadata.resource_version = Some(version);
                self.secrets
                    .replace(&self.secret_name, &PostParams::default(), &secret)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sets `caBundle` on every webhook of both configurations that does not carry it yet.
    async fn publish_ca_bundle(&self, ca_pem: &str) -> Result<(), kube::Error> {
        let bundle = STANDARD.encode(ca_pem.as_bytes());
        self.patch_bundle::<MutatingWebhookConfiguration>(&bundle, |c| {
            c.webhooks
                .iter()
                .flatten()
                .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                .collect()
        })
        .await?;
        self.patch_bundle::<ValidatingWebhookConfiguration>(&bundle, |c| {
            c.webhooks
                .iter()
                .flatten()
                .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                .collect()
        })
        .await
    }

    async fn patch_bundle<K>(
        &self,
        bundle: &str,
        webhooks: impl Fn(&K) -> Vec<(String, Option<ByteString>)>,
    ) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let Some(configuration) = api.get_opt(&self.webhook_configuration).await? else {
            return Ok(());
        };
        let wanted = STANDARD.decode(bundle).unwrap_or_default();
        let stale: Vec<String> = webhooks(&configuration)
            .into_iter()
            .filter(|(_, current)| current.as_ref().map(|b| &b.0) != Some(&wanted))
            .map(|(name, _)| name)
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        // Webhooks merge by name in a strategic merge patch: only caBundle changes.
        let patch = json!({ "webhooks": stale.iter().map(|name| json!({
            "name": name, "clientConfig": { "caBundle": bundle }
        })).collect::<Vec<_>>() });
        api.patch(
            &self.webhook_configuration,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await?;
        tracing::info!(configuration = %self.webhook_configuration, webhooks = stale.len(), "caBundle updated");
        Ok(())
    }
}

fn validity_of(pem: &str) -> Option<(OffsetDateTime, OffsetDateTime)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).ok()?;
    let validity = parsed.validity();
    Some((
        validity.not_before.to_datetime(),
        validity.not_after.to_datetime(),
    ))
}
