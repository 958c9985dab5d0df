//! What kvinject needs to know about the cluster: namespace defaults, ServiceAccount client IDs,
//! AzureIdentityBindings and SecretProviderClasses.
//!
//! The core asks through the [`ClusterFacts`] trait and never learns where the answers come from.
//! [`DocumentFacts`] answers from manifests (the `inject` input, or `serve --facts`); a live
//! implementation over watch caches can answer the same questions.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::core::annotations;
use crate::core::held::Held;

/// What kvinject reads from a Namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceFacts {
    /// Whether the namespace carries `kvinject.io/injection: enabled`.
    pub injection_enabled: bool,
    /// `kvinject.io/vault` annotation.
    pub vault: Option<String>,
    /// `kvinject.io/tenant-id` annotation.
    pub tenant_id: Option<String>,
    /// `kvinject.io/allowed-vaults`: the only vaults its pods may use, when set.
    pub allowed_vaults: Option<Vec<String>>,
}

impl NamespaceFacts {
    /// Reads a Namespace through lookups of its labels and annotations.
    pub fn read<'a>(
        label: impl Fn(&str) -> Option<&'a str>,
        annotation: impl Fn(&str) -> Option<&'a str>,
    ) -> Self {
        Self {
            injection_enabled: label(annotations::NAMESPACE_INJECTION_LABEL)
                == Some(annotations::NAMESPACE_INJECTION_ENABLED),
            vault: annotation(annotations::VAULT).map(str::to_owned),
            tenant_id: annotation(annotations::TENANT_ID).map(str::to_owned),
            allowed_vaults: annotation(annotations::ALLOWED_VAULTS).map(annotations::comma_list),
        }
    }
}

/// What kvinject reads from a ServiceAccount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAccountFacts {
    /// `azure.workload.identity/client-id` annotation.
    pub client_id: Option<String>,
}

/// What kvinject reads from an AzureIdentityBinding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityBindingFacts {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.selector`: the `aadpodidbinding` label value that claims it.
    pub selector: String,
    /// `kvinject.io/allowed-service-accounts`, when the binding opts into the identity policy.
    pub allowed_service_accounts: Option<Vec<String>>,
}

impl IdentityBindingFacts {
    /// Reads a binding manifest (in `default_namespace` when it names none); `None` without a
    /// name or selector.
    pub fn from_manifest(binding: &Value, default_namespace: &str) -> Option<Self> {
        Some(Self {
            namespace: str_at(binding, &["metadata", "namespace"])
                .unwrap_or(default_namespace)
                .to_owned(),
            name: str_at(binding, &["metadata", "name"])?.to_owned(),
            selector: str_at(binding, &["spec", "selector"])?.to_owned(),
            allowed_service_accounts: str_at(
                binding,
                &[
                    "metadata",
                    "annotations",
                    annotations::ALLOWED_SERVICE_ACCOUNTS,
                ],
            )
            .map(annotations::comma_list),
        })
    }
}

/// The identity an existing SecretProviderClass authenticates with, read as the Azure provider
/// reads its parameters: booleans with Go's `strconv.ParseBool` after trimming spaces (empty is
/// false), `clientID` when non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpcIdentity {
    /// `usePodIdentity` true.
    PodIdentity,
    /// `clientID: <id>` (workload identity).
    ClientId(String),
    /// `useVMManagedIdentity` true: the node's identity, not the pod's.
    VmManagedIdentity,
    /// None of the above.
    Unspecified,
    /// More than one of them: the parameters that each name an identity.
    Several(Vec<&'static str>),
    /// A boolean parameter the provider cannot read (it fails the mount).
    Unreadable {
        /// The parameter.
        parameter: &'static str,
        /// Its value.
        value: String,
    },
}

/// The identity an SPC's parameters name, read with the provider's rules.
fn spc_identity(parameters: &Value) -> SpcIdentity {
    let parameter = |key: &str| parameters.get(key).and_then(Value::as_str);
    let mut named = Vec::new();
    for flag in ["usePodIdentity", "useVMManagedIdentity"] {
        let value = parameter(flag).unwrap_or("");
        match parse_go_bool(value) {
            Some(true) => named.push(flag),
            Some(false) => {}
            None => {
                return SpcIdentity::Unreadable {
                    parameter: flag,
                    value: value.to_owned(),
                };
            }
        }
    }
    let client_id = parameter("clientID")
        .map(str::trim)
        .filter(|v| !v.is_empty());
    if client_id.is_some() {
        named.push("clientID");
    }
    match (named.as_slice(), client_id) {
        ([], _) => SpcIdentity::Unspecified,
        (["usePodIdentity"], _) => SpcIdentity::PodIdentity,
        (["useVMManagedIdentity"], _) => SpcIdentity::VmManagedIdentity,
        (["clientID"], Some(id)) => SpcIdentity::ClientId(id.to_owned()),
        _ => SpcIdentity::Several(named),
    }
}

/// Go's `strconv.ParseBool` after `strings.TrimSpace`, with empty meaning false, as the Azure
/// provider reads `usePodIdentity` and `useVMManagedIdentity`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        _ => None,
    }
}

/// One `secretObjects[*].data[*]` entry: a key of a synced Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedKey {
    /// `secretObjects[*].secretName`.
    pub secret_name: String,
    /// `data[*].key`.
    pub key: String,
}

/// What kvinject reads from an existing SecretProviderClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpcFacts {
    /// Labelled `app.kubernetes.io/managed-by: kvinject`.
    pub managed_by_kvinject: bool,
    /// The identity its parameters name.
    pub identity: SpcIdentity,
    /// `parameters.keyvaultName`, trimmed, as the provider reads it.
    pub vault: Option<String>,
    /// Every key it syncs into a Kubernetes Secret.
    pub synced_keys: Vec<SyncedKey>,
    /// Its `kubernetes.io/tls` Secrets.
    pub tls_secrets: Vec<TlsSecretFacts>,
    /// The objects it copies into a synced Secret of another type (what env vars read), as the
    /// CSI driver's SecretProviderClassPodStatus names them: `<objectType>/<objectName>`.
    pub env_objects: Vec<String>,
}

/// A `secretObjects` entry of type `kubernetes.io/tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSecretFacts {
    /// `secretName`.
    pub secret_name: String,
    /// The one `objectName` both `tls.key` and `tls.crt` come from; `None` when a key is
    /// missing or the two come from different objects, which the provider would not split.
    pub object: Option<String>,
    /// The certificate that object is ([`certificate_id`]): `None` when the `objects` parameter
    /// does not say.
    pub certificate: Option<String>,
}

/// How two SPCs tell they sync a TLS Secret from the same certificate: vault, object name and
/// pinned version (Key Vault names are case-insensitive), `<vault>/<name>[@<version>]`.
pub fn certificate_id(vault: &str, name: &str, version: Option<&str>) -> String {
    let mut id = format!("{vault}/{name}").to_ascii_lowercase();
    if let Some(version) = version {
        id.push('@');
        id.push_str(&version.to_ascii_lowercase());
    }
    id
}

/// An SPC that syncs a Secret of a given name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSync {
    /// The SPC's name.
    pub spc: String,
    /// Labelled as kvinject's.
    pub managed_by_kvinject: bool,
    /// When it syncs the Secret as `kubernetes.io/tls`, the certificate ([`certificate_id`]).
    pub tls_certificate: Option<String>,
}

impl SpcFacts {
    /// Whether this SPC syncs a Secret named `secret`, and from what.
    pub fn sync_of(&self, name: &str, secret: &str) -> Option<SecretSync> {
        let tls = self.tls_secrets.iter().find(|t| t.secret_name == secret);
        let syncs = tls.is_some() || self.synced_keys.iter().any(|k| k.secret_name == secret);
        syncs.then(|| SecretSync {
            spc: name.to_owned(),
            managed_by_kvinject: self.managed_by_kvinject,
            tls_certificate: tls.and_then(|t| t.certificate.clone()),
        })
    }
}

/// Questions the core asks about the cluster. Answers must be cheap: they are asked per admission.
pub trait ClusterFacts {
    /// The namespace, if known.
    fn namespace(&self, name: &str) -> Option<NamespaceFacts>;
    /// The ServiceAccount `name` in `namespace`, if known.
    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountFacts>;
    /// The AzureIdentityBindings whose `spec.selector` is `selector`: in `namespace`, or in every
    /// namespace when it is `None` (as AAD Pod Identity matches them unless `forceNamespaced`).
    fn identity_bindings(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Vec<IdentityBindingFacts>;
    /// Whether the cluster serves the AzureIdentityBinding API at all (AAD Pod Identity installed).
    fn identity_bindings_available(&self) -> bool {
        true
    }
    /// The SecretProviderClass `name` in `namespace`, if known.
    fn secret_provider_class(&self, namespace: &str, name: &str) -> Option<SpcFacts>;
    /// The SecretProviderClasses of `namespace` that sync a Secret named `secret` and may be in
    /// use: every one not labelled as kvinject's, and kvinject's own unless the answer knows no
    /// pod's marker names it.
    fn secret_syncs(&self, namespace: &str, secret: &str) -> Vec<SecretSync>;

    /// Whether [`Self::namespace`] answers `answer`. A source that holds its facts compares them
    /// where they are, without the copy `namespace` makes: a remembered plan asks this of every
    /// review it answers ([`Asked::holds`]).
    fn namespace_is(&self, name: &str, answer: Option<&NamespaceFacts>) -> bool {
        self.namespace(name).as_ref() == answer
    }

    /// Whether [`Self::service_account`] answers `answer` (see [`Self::namespace_is`]).
    fn service_account_is(
        &self,
        namespace: &str,
        name: &str,
        answer: Option<&ServiceAccountFacts>,
    ) -> bool {
        self.service_account(namespace, name).as_ref() == answer
    }

    /// Whether [`Self::secret_provider_class`] answers `answer` (see [`Self::namespace_is`]).
    fn secret_provider_class_is(
        &self,
        namespace: &str,
        name: &str,
        answer: Option<&SpcFacts>,
    ) -> bool {
        self.secret_provider_class(namespace, name).as_ref() == answer
    }
}

/// Facts of namespaced objects by namespace, then name: found from borrowed names.
type ByNamespace<V> = BTreeMap<String, BTreeMap<String, V>>;

/// The facts of `name` in `namespace`.
fn in_namespace<'m, V>(map: &'m ByNamespace<V>, namespace: &str, name: &str) -> Option<&'m V> {
    map.get(namespace)?.get(name)
}

/// Facts read from Kubernetes manifests.
#[derive(Debug, Clone, Default)]
pub struct DocumentFacts {
    namespaces: BTreeMap<String, NamespaceFacts>,
    service_accounts: ByNamespace<ServiceAccountFacts>,
    identity_bindings: BTreeMap<String, Vec<IdentityBindingFacts>>,
    spcs: ByNamespace<SpcFacts>,
}

impl DocumentFacts {
    /// Collects the facts among `documents` (a `List` counts as its items). Objects without a
    /// namespace belong to `default_namespace`, as `kubectl apply` would place them.
    pub fn from_documents<'a>(
        documents: impl IntoIterator<Item = &'a Value>,
        default_namespace: &str,
    ) -> Self {
        let mut facts = Self::default();
        for document in documents {
            facts.add(document, default_namespace);
        }
        facts
    }

    /// Adds one document (or each item of a `List`); documents that are not facts are ignored.
    pub fn add(&mut self, document: &Value, default_namespace: &str) {
        let api_version = str_at(document, &["apiVersion"]).unwrap_or_default();
        let kind = str_at(document, &["kind"]).unwrap_or_default();
        let Some(name) = str_at(document, &["metadata", "name"]) else {
            if kind == "List" || kind.ends_with("List") {
                for item in document["items"].as_array().into_iter().flatten() {
                    self.add(item, default_namespace);
                }
            }
            return;
        };
        let name = name.to_owned();
        let namespace = str_at(document, &["metadata", "namespace"])
            .unwrap_or(default_namespace)
            .to_owned();
        let annotation = |key: &str| str_at(document, &["metadata", "annotations", key]);
        match (api_version, kind) {
            ("v1", "Namespace") => {
                let label = |key: &str| str_at(document, &["metadata", "labels", key]);
                self.namespaces
                    .insert(name, NamespaceFacts::read(label, annotation));
            }
            ("v1", "ServiceAccount") => {
                let facts = ServiceAccountFacts {
                    client_id: annotation(annotations::WORKLOAD_IDENTITY_CLIENT_ID)
                        .map(str::to_owned),
                };
                let names = self.service_accounts.entry(namespace).or_default();
                names.insert(name, facts);
            }
            (version, "AzureIdentityBinding")
                if version.starts_with(annotations::AAD_POD_IDENTITY_GROUP) =>
            {
                if let Some(binding) = IdentityBindingFacts::from_manifest(document, &namespace) {
                    let bindings = self.identity_bindings.entry(namespace).or_default();
                    bindings.retain(|b| b.name != binding.name);
                    bindings.push(binding);
                }
            }
            (version, "SecretProviderClass")
                if version.starts_with("secrets-store.csi.x-k8s.io/") =>
            {
                let names = self.spcs.entry(namespace).or_default();
                names.insert(name, spc_facts(document));
            }
            _ => {}
        }
    }
}

impl ClusterFacts for DocumentFacts {
    fn namespace(&self, name: &str) -> Option<NamespaceFacts> {
        self.namespaces.get(name).cloned()
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountFacts> {
        in_namespace(&self.service_accounts, namespace, name).cloned()
    }

    fn identity_bindings(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Vec<IdentityBindingFacts> {
        let in_scope: Vec<&Vec<IdentityBindingFacts>> = match namespace {
            Some(namespace) => self.identity_bindings.get(namespace).into_iter().collect(),
            None => self.identity_bindings.values().collect(),
        };
        in_scope
            .into_iter()
            .flatten()
            .filter(|b| b.selector == selector)
            .cloned()
            .collect()
    }

    fn secret_provider_class(&self, namespace: &str, name: &str) -> Option<SpcFacts> {
        in_namespace(&self.spcs, namespace, name).cloned()
    }

    fn secret_syncs(&self, namespace: &str, secret: &str) -> Vec<SecretSync> {
        self.spcs
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|(name, spc)| spc.sync_of(name, secret))
            .collect()
    }

    fn namespace_is(&self, name: &str, answer: Option<&NamespaceFacts>) -> bool {
        self.namespaces.get(name) == answer
    }

    fn service_account_is(
        &self,
        namespace: &str,
        name: &str,
        answer: Option<&ServiceAccountFacts>,
    ) -> bool {
        in_namespace(&self.service_accounts, namespace, name) == answer
    }

    fn secret_provider_class_is(
        &self,
        namespace: &str,
        name: &str,
        answer: Option<&SpcFacts>,
    ) -> bool {
        in_namespace(&self.spcs, namespace, name) == answer
    }
}

/// A question [`ClusterFacts`] could not answer: the object may exist but not be known yet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Miss {
    /// An unknown Namespace.
    Namespace(String),
    /// An unknown ServiceAccount (namespace, name).
    ServiceAccount(String, String),
    /// No AzureIdentityBinding with a selector (namespace, or every namespace; selector).
    IdentityBinding(Option<String>, String),
    /// An unknown SecretProviderClass (namespace, name).
    SecretProviderClass(String, String),
}

/// One question asked of [`ClusterFacts`], with the answer it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// [`ClusterFacts::namespace`].
    Namespace(String, Option<NamespaceFacts>),
    /// [`ClusterFacts::service_account`].
    ServiceAccount(String, String, Option<ServiceAccountFacts>),
    /// [`ClusterFacts::identity_bindings`].
    IdentityBindings(Option<String>, String, Vec<IdentityBindingFacts>),
    /// [`ClusterFacts::identity_bindings_available`].
    IdentityBindingsAvailable(bool),
    /// [`ClusterFacts::secret_provider_class`].
    SecretProviderClass(String, String, Option<SpcFacts>),
    /// [`ClusterFacts::secret_syncs`].
    SecretSyncs(String, String, Vec<SecretSync>),
}

impl Asked {
    /// Whether `facts` gives the same answer now.
    pub fn holds(&self, facts: &dyn ClusterFacts) -> bool {
        match self {
            Self::Namespace(name, answer) => facts.namespace_is(name, answer.as_ref()),
            Self::ServiceAccount(namespace, name, answer) => {
                facts.service_account_is(namespace, name, answer.as_ref())
            }
            Self::IdentityBindings(namespace, selector, answer) => {
                facts.identity_bindings(namespace.as_deref(), selector) == *answer
            }
            Self::IdentityBindingsAvailable(answer) => {
                facts.identity_bindings_available() == *answer
            }
            Self::SecretProviderClass(namespace, name, answer) => {
                facts.secret_provider_class_is(namespace, name, answer.as_ref())
            }
            Self::SecretSyncs(namespace, secret, answer) => {
                facts.secret_syncs(namespace, secret) == *answer
            }
        }
    }

    /// The question as a [`Miss`], when nothing was known of what it asked for.
    fn miss(&self) -> Option<Miss> {
        match self {
            Self::Namespace(name, None) => Some(Miss::Namespace(name.clone())),
            Self::ServiceAccount(namespace, name, None) => {
                Some(Miss::ServiceAccount(namespace.clone(), name.clone()))
            }
            Self::IdentityBindings(namespace, selector, found) if found.is_empty() => {
                Some(Miss::IdentityBinding(namespace.clone(), selector.clone()))
            }
            Self::SecretProviderClass(namespace, name, None) => {
                Some(Miss::SecretProviderClass(namespace.clone(), name.clone()))
            }
            _ => None,
        }
    }
}

impl Held for Asked {
    /// The question's strings and its answer's.
    fn heap(&self) -> usize {
        match self {
            Self::Namespace(name, answer) => name.heap() + answer.heap(),
            Self::ServiceAccount(namespace, name, answer) => {
                namespace.heap() + name.heap() + answer.heap()
            }
            Self::IdentityBindings(namespace, selector, answer) => {
                namespace.heap() + selector.heap() + answer.heap()
            }
            Self::IdentityBindingsAvailable(_) => 0,
            Self::SecretProviderClass(namespace, name, answer) => {
                namespace.heap() + name.heap() + answer.heap()
            }
            Self::SecretSyncs(namespace, secret, answer) => {
                namespace.heap() + secret.heap() + answer.heap()
            }
        }
    }
}

impl Held for NamespaceFacts {
    fn heap(&self) -> usize {
        self.vault.heap() + self.tenant_id.heap() + self.allowed_vaults.heap()
    }
}

impl Held for ServiceAccountFacts {
    fn heap(&self) -> usize {
        self.client_id.heap()
    }
}

impl Held for IdentityBindingFacts {
    fn heap(&self) -> usize {
        self.namespace.heap()
            + self.name.heap()
            + self.selector.heap()
            + self.allowed_service_accounts.heap()
    }
}

impl Held for SpcIdentity {
    fn heap(&self) -> usize {
        match self {
            Self::ClientId(id) => id.heap(),
            Self::Several(named) => named.heap(),
            Self::Unreadable { value, .. } => value.heap(),
            Self::PodIdentity | Self::VmManagedIdentity | Self::Unspecified => 0,
        }
    }
}

impl Held for SyncedKey {
    fn heap(&self) -> usize {
        self.secret_name.heap() + self.key.heap()
    }
}

impl Held for TlsSecretFacts {
    fn heap(&self) -> usize {
        self.secret_name.heap() + self.object.heap() + self.certificate.heap()
    }
}

impl Held for SpcFacts {
    fn heap(&self) -> usize {
        self.identity.heap()
            + self.vault.heap()
            + self.synced_keys.heap()
            + self.tls_secrets.heap()
            + self.env_objects.heap()
    }
}

impl Held for SecretSync {
    fn heap(&self) -> usize {
        self.spc.heap() + self.tls_certificate.heap()
    }
}

/// Answers from `inner`, remembering every question and its answer in the order asked: the
/// questions it had no answer for ([`RecordingFacts::misses`]), and what a result computed from
/// these answers alone rests on ([`RecordingFacts::into_asked`]).
pub struct RecordingFacts<'a> {
    inner: &'a dyn ClusterFacts,
    asked: std::sync::Mutex<Vec<Asked>>,
}

impl<'a> RecordingFacts<'a> {
    /// Wraps `inner`.
    pub fn new(inner: &'a dyn ClusterFacts) -> Self {
        Self {
            inner,
            asked: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The questions without an answer, each once, in order.
    pub fn misses(&self) -> Vec<Miss> {
        let asked = self.asked.lock();
        let mut misses: Vec<Miss> = asked.map_or_else(
            |_| Vec::new(),
            |asked| asked.iter().filter_map(Asked::miss).collect(),
        );
        misses.sort();
        misses.dedup();
        misses
    }

    /// The questions asked and their answers, in order; `None` if one could not be remembered.
    /// A deterministic computation that asked only these gives the same result for as long as
    /// every answer [`Asked::holds`]: it would ask the same questions again and get the same
    /// answers.
    pub fn into_asked(self) -> Option<Vec<Asked>> {
        self.asked.into_inner().ok()
    }

    fn remember<T: Clone>(&self, answer: T, asked: impl FnOnce(T) -> Asked) -> T {
        if let Ok(mut list) = self.asked.lock() {
            list.push(asked(answer.clone()));
        }
        answer
    }
}

impl ClusterFacts for RecordingFacts<'_> {
    fn namespace(&self, name: &str) -> Option<NamespaceFacts> {
        self.remember(self.inner.namespace(name), |answer| {
            Asked::Namespace(name.to_owned(), answer)
        })
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountFacts> {
        self.remember(self.inner.service_account(namespace, name), |answer| {
            Asked::ServiceAccount(namespace.to_owned(), name.to_owned(), answer)
        })
    }

    fn identity_bindings(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Vec<IdentityBindingFacts> {
        self.remember(
            self.inner.identity_bindings(namespace, selector),
            |answer| {
                Asked::IdentityBindings(namespace.map(str::to_owned), selector.to_owned(), answer)
            },
        )
    }

    fn identity_bindings_available(&self) -> bool {
        self.remember(
            self.inner.identity_bindings_available(),
            Asked::IdentityBindingsAvailable,
        )
    }

    fn secret_provider_class(&self, namespace: &str, name: &str) -> Option<SpcFacts> {
        self.remember(
            self.inner.secret_provider_class(namespace, name),
            |answer| Asked::SecretProviderClass(namespace.to_owned(), name.to_owned(), answer),
        )
    }

    fn secret_syncs(&self, namespace: &str, secret: &str) -> Vec<SecretSync> {
        self.remember(self.inner.secret_syncs(namespace, secret), |answer| {
            Asked::SecretSyncs(namespace.to_owned(), secret.to_owned(), answer)
        })
    }
}

/// Answers from `overlay` first (objects just looked up), then from `base`.
pub struct LayeredFacts<'a> {
    /// Objects fetched directly.
    pub overlay: &'a DocumentFacts,
    /// The usual source.
    pub base: &'a dyn ClusterFacts,
}

impl ClusterFacts for LayeredFacts<'_> {
    fn namespace(&self, name: &str) -> Option<NamespaceFacts> {
        self.overlay
            .namespace(name)
            .or_else(|| self.base.namespace(name))
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountFacts> {
        self.overlay
            .service_account(namespace, name)
            .or_else(|| self.base.service_account(namespace, name))
    }

    fn identity_bindings(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Vec<IdentityBindingFacts> {
        let mut bindings = self.overlay.identity_bindings(namespace, selector);
        for binding in self.base.identity_bindings(namespace, selector) {
            if !bindings
                .iter()
                .any(|b| b.name == binding.name && b.namespace == binding.namespace)
            {
                bindings.push(binding);
            }
        }
        bindings
    }

    fn identity_bindings_available(&self) -> bool {
        self.base.identity_bindings_available()
    }

    fn secret_provider_class(&self, namespace: &str, name: &str) -> Option<SpcFacts> {
        self.overlay
            .secret_provider_class(namespace, name)
            .or_else(|| self.base.secret_provider_class(namespace, name))
    }

    fn secret_syncs(&self, namespace: &str, secret: &str) -> Vec<SecretSync> {
        let mut syncs = self.overlay.secret_syncs(namespace, secret);
        for sync in self.base.secret_syncs(namespace, secret) {
            if !syncs.iter().any(|known| known.spc == sync.spc) {
                syncs.push(sync);
            }
        }
        syncs
    }
}

/// Reads the identity and synced keys of a SecretProviderClass manifest.
pub fn spc_facts(spc: &Value) -> SpcFacts {
    let managed_by = str_at(spc, &["metadata", "labels", annotations::MANAGED_BY_LABEL]);
    spc_facts_of(&spc["spec"], managed_by)
}

/// [`spc_facts`] from an SPC's `spec` and its `app.kubernetes.io/managed-by` label.
pub fn spc_facts_of(spec: &Value, managed_by: Option<&str>) -> SpcFacts {
    let identity = spc_identity(&spec["parameters"]);
    let objects = str_at(spec, &["parameters", "objects"])
        .map(provider_objects)
        .unwrap_or_default();
    let mut synced_keys = Vec::new();
    let mut env_objects = Vec::new();
    for secret in spec["secretObjects"].as_array().into_iter().flatten() {
        let Some(secret_name) = secret["secretName"].as_str() else {
            continue;
        };
        let tls = secret["type"] == annotations::TLS_SECRET_TYPE;
        for entry in secret["data"].as_array().into_iter().flatten() {
            if let Some(key) = entry["key"].as_str() {
                synced_keys.push(SyncedKey {
                    secret_name: secret_name.to_owned(),
                    key: key.to_owned(),
                });
            }
            let file = entry["objectName"].as_str();
            let source = objects
                .iter()
                .find(|object| Some(object.file.as_str()) == file);
            if let (false, Some(object)) = (tls, source) {
                let id = object.status_id();
                if !env_objects.contains(&id) {
                    env_objects.push(id);
                }
            }
        }
    }
    let vault = str_at(spec, &["parameters", "keyvaultName"])
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let tls_secrets = tls_secrets_of(spec, &objects, vault.as_deref());
    SpcFacts {
        managed_by_kvinject: annotations::is_managed_by_kvinject(managed_by),
        identity,
        vault,
        synced_keys,
        tls_secrets,
        env_objects,
    }
}

/// The `kubernetes.io/tls` entries of an SPC's `secretObjects`, each with the certificate its
/// object is (read from the `objects` parameter as the provider reads it).
fn tls_secrets_of(
    spec: &Value,
    objects: &[ProviderObject],
    vault: Option<&str>,
) -> Vec<TlsSecretFacts> {
    let entries: Vec<&Value> = spec["secretObjects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|secret| secret["type"] == annotations::TLS_SECRET_TYPE)
        .collect();
    entries
        .into_iter()
        .filter_map(|secret| {
            let secret_name = secret["secretName"].as_str()?.to_owned();
            let source = |key: &str| {
                secret["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|entry| entry["key"] == key)
                    .and_then(|entry| entry["objectName"].as_str())
            };
            let object = match (source("tls.key"), source("tls.crt")) {
                (Some(key), Some(crt)) if key == crt => Some(key.to_owned()),
                _ => None,
            };
            let certificate = object.as_deref().and_then(|file| {
                let object = objects.iter().find(|object| object.file == file)?;
                Some(certificate_id(
                    vault?,
                    &object.name,
                    object.version.as_deref(),
                ))
            });
            Some(TlsSecretFacts {
                secret_name,
                object,
                certificate,
            })
        })
        .collect()
}

/// One entry of the provider's `objects` parameter.
struct ProviderObject {
    /// The file it is written to: the `objectAlias`, else the `objectName`.
    file: String,
    /// `objectName`.
    name: String,
    /// `objectType`.
    object_type: String,
    /// `objectVersion`, when pinned.
    version: Option<String>,
}

impl ProviderObject {
    /// How the Azure provider names the object in a SecretProviderClassPodStatus.
    fn status_id(&self) -> String {
        format!("{}/{}", self.object_type, self.name)
    }
}

/// The provider's `objects` parameter (a YAML `array:` of YAML mappings), as the provider reads it
/// (fields trimmed).
fn provider_objects(parameter: &str) -> Vec<ProviderObject> {
    #[derive(serde::Deserialize)]
    struct Objects {
        array: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Object {
        object_name: String,
        #[serde(default)]
        object_alias: Option<String>,
        #[serde(default)]
        object_type: Option<String>,
        #[serde(default)]
        object_version: Option<String>,
    }
    let Ok(objects) = serde_yaml_ng::from_str::<Objects>(parameter) else {
        return Vec::new();
    };
    let present =
        |field: Option<String>| field.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    objects
        .array
        .iter()
        .filter_map(|entry| serde_yaml_ng::from_str::<Object>(entry).ok())
        .map(|object| {
            let name = object.object_name.trim().to_owned();
            ProviderObject {
                file: present(object.object_alias).unwrap_or_else(|| name.clone()),
                object_type: present(object.object_type).unwrap_or_default(),
                version: present(object.object_version),
                name,
            }
        })
        .collect()
}

/// The string at `path` in `value`, if every step exists and the leaf is a string.
pub fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |node, key| node.get(key))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each question and answer built twice, every string one byte long and then 101: their
    /// weights differ by 100 for each string they hold, so none goes uncounted.
    #[test]
    fn a_remembered_answer_counts_every_string_it_holds() {
        let asked = |text: &str| {
            let s = || text.to_owned();
            let spc = |identity| SpcFacts {
                managed_by_kvinject: true,
                identity,
                vault: Some(s()),
                synced_keys: vec![SyncedKey {
                    secret_name: s(),
                    key: s(),
                }],
                tls_secrets: vec![TlsSecretFacts {
                    secret_name: s(),
                    object: Some(s()),
                    certificate: Some(s()),
                }],
                env_objects: vec![s()],
            };
            let unreadable = SpcIdentity::Unreadable {
                parameter: "usePodIdentity",
                value: s(),
            };
            [
                Asked::Namespace(
                    s(),
                    Some(NamespaceFacts {
                        injection_enabled: true,
                        vault: Some(s()),
                        tenant_id: Some(s()),
                        allowed_vaults: Some(vec![s(), s()]),
                    }),
                ),
                Asked::ServiceAccount(
                    s(),
                    s(),
                    Some(ServiceAccountFacts {
                        client_id: Some(s()),
                    }),
                ),
                Asked::IdentityBindings(
                    Some(s()),
                    s(),
                    vec![IdentityBindingFacts {
                        namespace: s(),
                        name: s(),
                        selector: s(),
                        allowed_service_accounts: Some(vec![s()]),
                    }],
                ),
                Asked::SecretProviderClass(s(), s(), Some(spc(SpcIdentity::ClientId(s())))),
                Asked::SecretProviderClass(s(), s(), Some(spc(unreadable))),
                Asked::SecretSyncs(
                    s(),
                    s(),
                    vec![SecretSync {
                        spc: s(),
                        managed_by_kvinject: true,
                        tls_certificate: Some(s()),
                    }],
                ),
            ]
        };
        let strings = [5, 3, 6, 10, 10, 4];
        let long = "a".repeat(101);
        for ((short, long), count) in asked("a").iter().zip(&asked(&long)).zip(strings) {
            assert_eq!(long.heap() - short.heap(), 100 * count, "{short:?}");
        }
    }

    #[test]
    fn reads_every_kind_of_fact_and_list_items() {
        let documents = [
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
                "labels": {"kvinject.io/injection": "enabled"},
                "annotations": {"kvinject.io/vault": "shop-kv", "kvinject.io/tenant-id": "t"}}}),
            json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api",
                    "annotations": {"azure.workload.identity/client-id": "c"}}},
                {"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
                    "metadata": {"name": "b", "namespace": "legacy"}, "spec": {"selector": "sel",
                    "azureIdentity": "id"}},
            ]}),
            json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                "metadata": {"name": "hand", "namespace": "shop"},
                "spec": {"provider": "azure", "parameters": {"clientID": "c"},
                    "secretObjects": [{"secretName": "s", "type": "Opaque",
                        "data": [{"objectName": "o", "key": "k"}]}]}}),
        ];
        let facts = DocumentFacts::from_documents(&documents, "apps");
        let shop = facts.namespace("shop").unwrap();
        assert!(shop.injection_enabled);
        assert_eq!(shop.vault.as_deref(), Some("shop-kv"));
        assert_eq!(
            facts
                .service_account("apps", "api")
                .unwrap()
                .client_id
                .as_deref(),
            Some("c"),
            "a ServiceAccount without namespace lands in the default namespace"
        );
        assert_eq!(facts.identity_bindings(Some("legacy"), "sel")[0].name, "b");
        assert!(facts.identity_bindings(Some("apps"), "sel").is_empty());
        assert_eq!(facts.identity_bindings(None, "sel")[0].namespace, "legacy");
        let spc = facts.secret_provider_class("shop", "hand").unwrap();
        assert_eq!(spc.identity, SpcIdentity::ClientId("c".into()));
        assert!(!spc.managed_by_kvinject);
        assert_eq!(
            spc.synced_keys,
            vec![SyncedKey {
                secret_name: "s".into(),
                key: "k".into()
            }]
        );
    }

    /// What each `*_is` question says of `facts`, for the held answer, a changed one and none,
    /// asked of a known object, of one in an unknown namespace and (namespaced objects) of an
    /// unknown name in a known namespace.
    fn compared(facts: &dyn ClusterFacts) -> Vec<bool> {
        let namespace = facts.namespace("shop");
        let mut other_namespace = namespace.clone().unwrap();
        other_namespace.tenant_id = Some("another".into());
        let account = facts.service_account("apps", "api");
        let other_account = ServiceAccountFacts { client_id: None };
        let spc = facts.secret_provider_class("shop", "hand");
        let mut other_spc = spc.clone().unwrap();
        other_spc.env_objects.push("secret/more".into());
        vec![
            facts.namespace_is("shop", namespace.as_ref()),
            facts.namespace_is("shop", Some(&other_namespace)),
            facts.namespace_is("shop", None),
            facts.namespace_is("gone", None),
            facts.namespace_is("gone", namespace.as_ref()),
            facts.service_account_is("apps", "api", account.as_ref()),
            facts.service_account_is("apps", "api", Some(&other_account)),
            facts.service_account_is("apps", "api", None),
            facts.service_account_is("shop", "api", None),
            facts.service_account_is("shop", "api", account.as_ref()),
            facts.service_account_is("apps", "gone", None),
            facts.service_account_is("apps", "gone", account.as_ref()),
            facts.secret_provider_class_is("shop", "hand", spc.as_ref()),
            facts.secret_provider_class_is("shop", "hand", Some(&other_spc)),
            facts.secret_provider_class_is("shop", "hand", None),
            facts.secret_provider_class_is("apps", "hand", None),
            facts.secret_provider_class_is("apps", "hand", spc.as_ref()),
            facts.secret_provider_class_is("shop", "gone", None),
            facts.secret_provider_class_is("shop", "gone", spc.as_ref()),
        ]
    }

    #[test]
    fn a_held_fact_is_compared_in_place_as_its_copy_would_be() {
        let documents = [
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
                "annotations": {"kvinject.io/vault": "shop-kv", "kvinject.io/tenant-id": "t"}}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api",
                "annotations": {"azure.workload.identity/client-id": "c"}}}),
            json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                "metadata": {"name": "hand", "namespace": "shop"},
                "spec": {"provider": "azure", "parameters": {"clientID": "c"}}}),
        ];
        let facts = DocumentFacts::from_documents(&documents, "apps");
        let expected = [
            true, false, false, true, false, // the Namespace
            true, false, false, true, false, true, false, // the ServiceAccount
            true, false, false, true, false, true, false, // the SPC
        ];
        assert_eq!(compared(&facts), expected, "in place");
        // The trait's own answers, which copy: a source that only overlays another uses them.
        let empty = DocumentFacts::default();
        let layered = LayeredFacts {
            overlay: &empty,
            base: &facts,
        };
        assert_eq!(compared(&layered), expected, "copied");
        // A remembered question holds by them.
        let asked = Asked::Namespace("shop".into(), facts.namespace("shop"));
        assert!(asked.holds(&facts));
        assert!(!Asked::Namespace("shop".into(), None).holds(&facts));
        let asked = Asked::SecretProviderClass("apps".into(), "hand".into(), None);
        assert!(asked.holds(&facts));
    }
}
