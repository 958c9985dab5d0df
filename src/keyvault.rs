//! Object verification against Azure Key Vault: does each object a pod references exist (in the
//! pinned version), is it enabled, and valid now? The only module that imports `azure_*`.
//!
//! Metadata only: kvinject lists an object's versions (their properties), never reads a secret
//! value or a private key, so the Azure role "Key Vault Reader" is enough. Anything that is not
//! an answer about the object (timeout, 401/403, DNS, throttling) is "unverified", never a
//! denial. Answers are cached per (vault, type, name, version) with separate TTLs for good and
//! bad news; each vault has a bounded number of requests in flight; every check of one
//! admission runs concurrently under one deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, StatusCode, Transport};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures_util::TryStreamExt;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::core::denial::{Denial, DenialReason};
use crate::core::reference::{ObjectRef, ObjectType};

/// What to do with a pod whose objects do not check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyMode {
    /// Do not ask Key Vault.
    Off,
    /// Admit, with a warning per problem.
    Warn,
    /// Deny a pod that references a missing, disabled or expired object.
    Deny,
}

/// Key Vault's answer about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Exists, enabled, valid now.
    Ok,
    /// No such object.
    Missing,
    /// The pinned version does not exist.
    VersionMissing,
    /// The version that would be mounted is disabled.
    Disabled,
    /// It expired at this time.
    Expired(OffsetDateTime),
    /// It is not valid before this time.
    NotYetValid(OffsetDateTime),
}

/// The result of checking one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Key Vault answered about the object.
    Answered(Finding),
    /// No answer about the object; why.
    Unverified(String),
}

impl Checked {
    /// Every [`Checked::label`], so a metric can start each at zero.
    pub const LABELS: [&'static str; 7] = [
        "ok",
        "missing",
        "version-missing",
        "disabled",
        "expired",
        "not-yet-valid",
        "unverified",
    ];

    /// A short stable name, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Answered(Finding::Ok) => "ok",
            Self::Answered(Finding::Missing) => "missing",
            Self::Answered(Finding::VersionMissing) => "version-missing",
            Self::Answered(Finding::Disabled) => "disabled",
            Self::Answered(Finding::Expired(_)) => "expired",
            Self::Answered(Finding::NotYetValid(_)) => "not-yet-valid",
            Self::Unverified(_) => "unverified",
        }
    }
}

/// A problem to report for one annotation: the sentence, and whether it is about the object
/// (a denial in `deny` mode) or about not knowing (always a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The sentence, as a denial of the annotation (`kvinject: annotation …: …`); in `warn`
    /// mode, or when not about the object, its message is returned as a warning.
    pub denial: Denial,
    /// Key Vault answered that the object is unusable.
    pub about_object: bool,
}

/// Settings of the verifier.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// DNS suffix of vaults (`vault.azure.net`, or a sovereign cloud's).
    pub dns_suffix: String,
    /// How long a good answer is kept.
    pub positive_ttl: Duration,
    /// How long a bad answer (or no answer) is kept.
    pub negative_ttl: Duration,
    /// Requests in flight per vault.
    pub max_in_flight_per_vault: usize,
    /// Deadline for all the checks of one admission.
    pub deadline: Duration,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        Self {
            dns_suffix: "vault.azure.net".to_owned(),
            positive_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(60),
            max_in_flight_per_vault: 8,
            deadline: Duration::from_secs(2),
        }
    }
}

type CacheKey = (String, ObjectType, String, Option<String>);

/// Answers kept at most: when full, expired ones go first, then all (a bounded cache, so a
/// stream of ever-new references cannot grow it).
const MAX_CACHED_ANSWERS: usize = 10_000;
/// Vaults whose clients are kept at most.
const MAX_CACHED_VAULTS: usize = 256;

/// Checks objects against Key Vault, with caching and bounds.
pub struct Verifier {
    credential: Result<Arc<dyn TokenCredential>, String>,
    settings: VerifierSettings,
    transport: Option<Transport>,
    cache: Mutex<HashMap<CacheKey, (Instant, Checked)>>,
    vaults: Mutex<HashMap<String, Arc<Vault>>>,
}

struct Vault {
    secrets: SecretClient,
    keys: KeyClient,
    certificates: CertificateClient,
    permits: Semaphore,
}

/// One version's properties.
struct Version {
    id: Option<String>,
    enabled: Option<bool>,
    expires: Option<OffsetDateTime>,
    not_before: Option<OffsetDateTime>,
    created: Option<OffsetDateTime>,
}

impl Verifier {
    /// A verifier authenticating with `credential` (an error says why there is none: every
    /// check is then unverified with that reason).
    pub fn new(
        credential: Result<Arc<dyn TokenCredential>, String>,
        settings: VerifierSettings,
    ) -> Self {
        Self {
            credential,
            settings,
            transport: None,
            cache: Mutex::new(HashMap::new()),
            vaults: Mutex::new(HashMap::new()),
        }
    }

    /// The same verifier sending requests through `transport` (a test vault, a proxy).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = Some(transport);
        self
    }

    /// kvinject's own identity in a cluster: Azure Workload Identity when its environment is
    /// present (`AZURE_FEDERATED_TOKEN_FILE`), the managed identity otherwise.
    pub fn cluster_credential() -> Result<Arc<dyn TokenCredential>, String> {
        if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            let credential = azure_identity::WorkloadIdentityCredential::new(None)
                .map_err(|e| format!("workload identity: {e}"))?;
            Ok(credential)
        } else {
            let credential = azure_identity::ManagedIdentityCredential::new(None)
                .map_err(|e| format!("managed identity: {e}"))?;
            Ok(credential)
        }
    }

    /// The Azure CLI's login, for `kvinject inject` on a laptop.
    pub fn cli_credential() -> Result<Arc<dyn TokenCredential>, String> {
        let credential =
            azure_identity::AzureCliCredential::new(None).map_err(|e| format!("Azure CLI: {e}"))?;
        Ok(credential)
    }

    /// Checks every `(annotation, reference)` in `vault`, concurrently, within the deadline;
    /// returns, per object, its result's label and a report when there is a problem.
    pub async fn verify(
        &self,
        vault: &str,
        references: &[(String, ObjectRef)],
    ) -> Vec<(&'static str, Option<Report>)> {
        let checks = references.iter().map(|(annotation, reference)| async move {
            let checked = self.check(vault, reference).await;
            (
                checked.label(),
                report(annotation, vault, reference, &checked),
            )
        });
        futures_util::future::join_all(checks).await
    }

    /// Checks one object (cached).
    pub async fn check(&self, vault: &str, reference: &ObjectRef) -> Checked {
        let key: CacheKey = (
            vault.to_owned(),
            reference.object_type,
            reference.name.clone(),
            reference.version.clone(),
        );
        if let Some((expires, checked)) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned())
            && Instant::now() < expires
        {
            return checked;
        }
        let checked = match tokio::time::timeout(self.settings.deadline, self.ask(vault, reference))
            .await
        {
            Ok(checked) => checked,
            Err(_) => Checked::Unverified(format!("no answer within {:?}", self.settings.deadline)),
        };
        let ttl = if checked == Checked::Answered(Finding::Ok) {
            self.settings.positive_ttl
        } else {
            self.settings.negative_ttl
        };
        if let Ok(mut cache) = self.cache.lock() {
            let now = Instant::now();
            if cache.len() >= MAX_CACHED_ANSWERS {
                cache.retain(|_, (expires, _)| *expires > now);
            }
            if cache.len() >= MAX_CACHED_ANSWERS {
                cache.clear();
            }
            cache.insert(key, (now + ttl, checked.clone()));
        }
        checked
    }

    async fn ask(&self, vault: &str, reference: &ObjectRef) -> Checked {
        let vault_clients = match self.vault(vault) {
            Ok(clients) => clients,
            Err(reason) => return Checked::Unverified(reason),
        };
        let Ok(_permit) = vault_clients.permits.acquire().await else {
            return Checked::Unverified("verifier shutting down".into());
        };
        match vault_clients.versions(reference).await {
            Ok(versions) => Checked::Answered(judge(
                &versions,
                reference.version.as_deref(),
                OffsetDateTime::now_utc(),
            )),
            Err(error) if error.http_status() == Some(StatusCode::NotFound) => {
                Checked::Answered(Finding::Missing)
            }
            Err(error) => Checked::Unverified(describe(&error)),
        }
    }

    fn vault(&self, vault: &str) -> Result<Arc<Vault>, String> {
        let mut vaults = self
            .vaults
            .lock()
            .map_err(|_| "verifier state poisoned".to_owned())?;
        if let Some(clients) = vaults.get(vault) {
            return Ok(clients.clone());
        }
        let credential = self.credential.clone()?;
        let url = format!("https://{vault}.{}", self.settings.dns_suffix);
        let client_options = ClientOptions {
            transport: self.transport.clone(),
            // Admission has a deadline: a throttled vault is reported, not waited for.
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        };
        let error = |e: azure_core::Error| format!("vault URL {url}: {e}");
        let clients = Arc::new(Vault {
            secrets: SecretClient::new(
                &url,
                credential.clone(),
                Some(SecretClientOptions {
                    client_options: client_options.clone(),
                    ..Default::default()
                }),
            )
            .map_err(error)?,
            keys: KeyClient::new(
                &url,
                credential.clone(),
                Some(KeyClientOptions {
                    client_options: client_options.clone(),
                    ..Default::default()
                }),
            )
            .map_err(error)?,
            certificates: CertificateClient::new(
                &url,
                credential,
                Some(CertificateClientOptions {
                    client_options,
                    ..Default::default()
                }),
            )
            .map_err(error)?,
            permits: Semaphore::new(self.settings.max_in_flight_per_vault.max(1)),
        });
        if vaults.len() >= MAX_CACHED_VAULTS {
            // Callers hold their own Arc: dropping the map's copies interrupts nobody.
            vaults.clear();
        }
        vaults.insert(vault.to_owned(), clients.clone());
        Ok(clients)
    }
}

/// Collects every version of a listing: the three object types have their own property types
/// with the same attribute fields.
macro_rules! collect_versions {
    ($pager:expr, $resource_ext:path) => {{
        use $resource_ext as _;
        let mut pager = $pager;
        let mut versions = Vec::new();
        while let Some(item) = pager.try_next().await? {
            let attributes = item.attributes.clone().unwrap_or_default();
            versions.push(Version {
                id: item.resource_id().ok().and_then(|id| id.version),
                enabled: attributes.enabled,
                expires: attributes.expires,
                not_before: attributes.not_before,
                created: attributes.created,
            });
        }
        versions
    }};
}

impl Vault {
    /// Every version's properties (no value is ever requested).
    async fn versions(&self, reference: &ObjectRef) -> azure_core::Result<Vec<Version>> {
        let name = reference.name.as_str();
        Ok(match reference.object_type {
            ObjectType::Secret => collect_versions!(
                self.secrets.list_secret_properties_versions(name, None)?,
                azure_security_keyvault_secrets::ResourceExt
            ),
            ObjectType::Key => collect_versions!(
                self.keys.list_key_properties_versions(name, None)?,
                azure_security_keyvault_keys::ResourceExt
            ),
            ObjectType::Cert => collect_versions!(
                self.certificates
                    .list_certificate_properties_versions(name, None)?,
                azure_security_keyvault_certificates::ResourceExt
            ),
        })
    }
}

/// What Key Vault's version list says about the version that would be mounted: the pinned one,
/// or the latest created.
fn judge(versions: &[Version], pinned: Option<&str>, now: OffsetDateTime) -> Finding {
    let chosen = match pinned {
        Some(pinned) => match versions.iter().find(|v| {
            v.id.as_deref()
                .is_some_and(|id| id.eq_ignore_ascii_case(pinned))
        }) {
            Some(version) => version,
            None if versions.is_empty() => return Finding::Missing,
            None => return Finding::VersionMissing,
        },
        None => match versions.iter().max_by_key(|v| v.created) {
            Some(version) => version,
            None => return Finding::Missing,
        },
    };
    if chosen.enabled == Some(false) {
        Finding::Disabled
    } else if let Some(expires) = chosen.expires.filter(|e| *e <= now) {
        Finding::Expired(expires)
    } else if let Some(not_before) = chosen.not_before.filter(|n| *n > now) {
        Finding::NotYetValid(not_before)
    } else {
        Finding::Ok
    }
}

fn describe(error: &azure_core::Error) -> String {
    match error.http_status() {
        Some(StatusCode::Unauthorized) | Some(StatusCode::Forbidden) => format!(
            "Key Vault refused kvinject's identity ({}): grant it the role Key Vault Reader",
            u16::from(error.http_status().unwrap_or(StatusCode::Forbidden))
        ),
        Some(StatusCode::TooManyRequests) => "Key Vault is throttling requests (429)".to_owned(),
        Some(status) => format!("Key Vault answered {}", u16::from(status)),
        None => {
            let text = error.to_string();
            text.lines().next().unwrap_or("request failed").to_owned()
        }
    }
}

fn report(
    annotation: &str,
    vault: &str,
    reference: &ObjectRef,
    checked: &Checked,
) -> Option<Report> {
    let object = format!("{} {}", reference.object_type.as_str(), reference.name);
    let about = |what: String| Report {
        denial: Denial::annotation(annotation, what).because(DenialReason::KeyVault),
        about_object: true,
    };
    match checked {
        Checked::Answered(Finding::Ok) => None,
        Checked::Answered(Finding::Missing) => Some(about(format!(
            "{object} does not exist in Key Vault {vault}; fix the name, or create it"
        ))),
        Checked::Answered(Finding::VersionMissing) => Some(about(format!(
            "{object} has no version {} in Key Vault {vault}; fix the version, or drop it to use the latest",
            reference.version.as_deref().unwrap_or_default()
        ))),
        Checked::Answered(Finding::Disabled) => Some(about(format!(
            "{object} is disabled in Key Vault {vault}; enable it, or pin an enabled version"
        ))),
        Checked::Answered(Finding::Expired(at)) => Some(about(format!(
            "{object} in Key Vault {vault} expired at {at}; renew it, or pin a valid version"
        ))),
        Checked::Answered(Finding::NotYetValid(from)) => Some(about(format!(
            "{object} in Key Vault {vault} is not valid before {from}; wait, or pin a valid version"
        ))),
        Checked::Unverified(reason) => Some(Report {
            denial: Denial::annotation(
                annotation,
                format!(
                    "could not verify {object} in Key Vault {vault}: {reason}; admitted without verification"
                ),
            )
            .because(DenialReason::KeyVault),
            about_object: false,
        }),
    }
}
