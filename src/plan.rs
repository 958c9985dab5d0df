//! The pure core: (pod JSON, namespace, cluster facts, settings) -> [`Decision`] or [`Denial`].
//!
//! Implements contract sections 2-6 for one pod or pod template. No I/O: every answer about the
//! cluster comes through [`ClusterFacts`], and the result is data (patch operations, the SPC to
//! write, warnings) for an adapter to deliver.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::PatchOperation;
use serde_json::Value;

use crate::annotations::{
    self as keys, CLIENT_ID, CONTAINERS, DEFAULT_MOUNT_PATH, ENV_PREFIX, FILE_PREFIX, INJECT,
    INJECTED, KNOWN_POD_KEYS, MAX_KEY_NAME_LEN, MIRROR_POD, MOUNT_PATH, PREFIX,
    SECRET_PROVIDER_CLASS, TENANT_ID, VAULT,
};
use crate::denial::Denial;
use crate::facts::ClusterFacts;
use crate::identity::{self, AAD_POD_IDENTITY_DEPRECATED, PodIdentity};
use crate::patch::{self, EnvWire, Wiring};
use crate::pod::{ContainerList, ContainerView, PodView};
use crate::reference::ObjectRef;
use crate::spc::{self, GeneratedSpc, SpcContent, SyncedVar};

/// Server-wide settings the core reads (the adapters' flags).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--default-vault`: the vault when neither pod nor namespace names one.
    pub default_vault: Option<String>,
    /// `--default-tenant-id`: the tenant when neither pod nor namespace names one.
    pub default_tenant_id: Option<String>,
    /// Namespaces whose pods are never mutated, even if sent.
    pub ignored_namespaces: BTreeSet<String>,
}

impl Settings {
    /// Settings with the namespaces that are always left alone: `kube-system`, `kube-node-lease`
    /// and kvinject's own.
    pub fn new(
        default_vault: Option<String>,
        default_tenant_id: Option<String>,
        own_namespace: &str,
    ) -> Self {
        Self {
            default_vault,
            default_tenant_id,
            ignored_namespaces: ["kube-system", "kube-node-lease", own_namespace]
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// A generate-mode pod's vault and its object references, each with the annotation that made
/// it: what Key Vault verification checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodObjects {
    /// The Key Vault.
    pub vault: String,
    /// (annotation key, reference).
    pub references: Vec<(String, ObjectRef)>,
}

/// Why a pod was left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No `kvinject.io/inject: "true"` label.
    NotLabelled,
    /// Annotation `kvinject.io/inject: "false"`.
    OptedOut,
    /// `kube-system`, `kube-node-lease` or kvinject's own namespace.
    IgnoredNamespace,
    /// A static pod's mirror, owned by the kubelet.
    MirrorPod,
    /// Labelled, but no annotation asks for anything.
    NothingRequested,
}

impl SkipReason {
    /// Stable kebab-case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotLabelled => "not-labelled",
            Self::OptedOut => "opted-out",
            Self::IgnoredNamespace => "ignored-namespace",
            Self::MirrorPod => "mirror-pod",
            Self::NothingRequested => "nothing-requested",
        }
    }
}

/// What to do with an admitted pod.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectionPlan {
    /// JSON Patch against the pod as received; empty when it already carries everything.
    pub patch: Vec<PatchOperation>,
    /// The SecretProviderClass the pod's volume names.
    pub spc_name: String,
    /// Generate mode: the SPC that must exist for the pod to start.
    pub generated_spc: Option<GeneratedSpc>,
    /// Soft problems to return to the user.
    pub warnings: Vec<String>,
    /// Generate mode: the vault, and every object reference with the annotation that made it,
    /// for verification against Key Vault.
    pub objects: Option<PodObjects>,
}

/// The core's answer for a pod it does not deny.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Leave the pod alone.
    Skip {
        /// Why.
        reason: SkipReason,
        /// Soft problems to return to the user.
        warnings: Vec<String>,
    },
    /// Mutate the pod (possibly with an empty patch).
    Inject(InjectionPlan),
}

impl Decision {
    /// The warnings, whichever the decision.
    pub fn warnings(&self) -> &[String] {
        match self {
            Self::Skip { warnings, .. } => warnings,
            Self::Inject(plan) => &plan.warnings,
        }
    }
}

/// Decides what to do with `pod` (a Pod, or a workload's pod template) in `namespace`.
pub fn plan_pod(
    pod: &Value,
    namespace: &str,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Decision, Denial> {
    let view = PodView::new(pod)?;
    let labelled = view.label(INJECT) == Some("true");
    let skip = |reason, warnings| Ok(Decision::Skip { reason, warnings });
    if settings.ignored_namespaces.contains(namespace) {
        let warnings = labelled
            .then(|| format!("kvinject: namespace {namespace} is never injected; run the pod in another namespace"))
            .into_iter()
            .collect();
        return skip(SkipReason::IgnoredNamespace, warnings);
    }
    if view.annotation(MIRROR_POD).is_some() {
        return skip(SkipReason::MirrorPod, Vec::new());
    }
    if !labelled {
        let warnings = has_request_annotations(&view)
            .then(|| {
                format!(
                    "kvinject: pod has {PREFIX} annotations but not the label {INJECT}: \"true\", so nothing is \
                     injected; add the label to the pod (template) labels"
                )
            })
            .into_iter()
            .collect();
        return skip(SkipReason::NotLabelled, warnings);
    }
    if view.annotation(INJECT) == Some("false") {
        return skip(SkipReason::OptedOut, Vec::new());
    }

    let request = Request::read(&view)?;
    let mut warnings = request.warnings.clone();
    if request.spc.is_none() && request.env.is_empty() && request.files.is_empty() {
        warnings.push(format!(
            "kvinject: pod is labelled {INJECT}: \"true\" but asks for nothing; add {ENV_PREFIX}<VAR> or \
             {FILE_PREFIX}<NAME> annotations, or remove the label"
        ));
        return skip(SkipReason::NothingRequested, warnings);
    }
    if facts
        .namespace(namespace)
        .is_some_and(|ns| !ns.injection_enabled)
    {
        warnings.push(format!(
            "kvinject: namespace {namespace} is not labelled {}: {}; the webhook only sees pods of namespaces that are",
            keys::NAMESPACE_INJECTION_LABEL,
            keys::NAMESPACE_INJECTION_ENABLED
        ));
    }
    let targets = target_containers(&view, request.containers)?;
    let mount_path = request.mount_path()?;
    // Everything the annotations say is checked before the cluster is asked about identity.
    let mode = match request.spc {
        None => Mode::Generate(mounted_objects(&request)?),
        Some(spc_name) => {
            refuse_files_in_reference_mode(&request, spc_name)?;
            Mode::Reference(spc_name)
        }
    };
    let identity = identity::resolve(&view, namespace, request.client_id, facts)?;
    if matches!(identity, PodIdentity::AadPodIdentity { .. }) {
        warnings.push(AAD_POD_IDENTITY_DEPRECATED.to_owned());
    }
    let wired = match mode {
        Mode::Generate(mounted) => {
            generate_mode(&request, mounted, namespace, &identity, facts, settings)?
        }
        Mode::Reference(spc_name) => reference_mode(
            &request,
            spc_name,
            namespace,
            &identity,
            facts,
            &mut warnings,
        )?,
    };
    let patch = patch::operations(
        &view,
        &Wiring {
            spc_name: &wired.spc_name,
            mount_path,
            env: &wired.env,
            targets: &targets,
        },
    )?;
    Ok(Decision::Inject(InjectionPlan {
        patch,
        spc_name: wired.spc_name,
        generated_spc: wired.generated,
        warnings,
        objects: wired.objects,
    }))
}

/// Warnings for a workload (Deployment, CronJob, ...) whose own metadata carries kvinject keys
/// that only mean something on its pod template.
pub fn workload_warnings(workload: &Value, template_path: &str) -> Vec<String> {
    let misplaced: Vec<&str> = ["labels", "annotations"]
        .iter()
        .filter_map(|field| workload["metadata"][field].as_object())
        .flat_map(|map| map.keys())
        .filter(|key| key.starts_with(PREFIX) && key.as_str() != INJECTED)
        .map(String::as_str)
        .collect();
    if misplaced.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "kvinject: {} on the {}'s own metadata have no effect; move them to {template_path}.metadata",
        misplaced.join(", "),
        workload["kind"].as_str().unwrap_or("workload")
    )]
}

/// The pod's kvinject annotations, checked for form.
#[derive(Debug, Default)]
struct Request<'a> {
    vault: Option<&'a str>,
    tenant_id: Option<&'a str>,
    mount_path: Option<&'a str>,
    containers: Option<&'a str>,
    client_id: Option<&'a str>,
    spc: Option<&'a str>,
    env: BTreeMap<&'a str, &'a str>,
    files: BTreeMap<&'a str, &'a str>,
    warnings: Vec<String>,
}

impl<'a> Request<'a> {
    fn read(view: &PodView<'a>) -> Result<Self, Denial> {
        let mut request = Self::default();
        for (key, value) in view.annotations().into_iter().flatten() {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            let Some(value) = value.as_str() else {
                return Err(Denial::annotation(
                    key,
                    "the value must be a string; quote it",
                ));
            };
            if name.len() > MAX_KEY_NAME_LEN || !is_qualified_name(name) {
                return Err(Denial::annotation(
                    key,
                    format!(
                        "`{name}` is not a valid annotation name (at most {MAX_KEY_NAME_LEN} letters, digits, \
                         `-`, `_` or `.`, starting and ending with a letter or digit); shorten or rename it"
                    ),
                ));
            }
            match key.as_str() {
                VAULT => request.vault = Some(value),
                TENANT_ID => request.tenant_id = Some(value),
                MOUNT_PATH => request.mount_path = Some(value),
                CONTAINERS => request.containers = Some(value),
                CLIENT_ID => request.client_id = Some(value),
                SECRET_PROVIDER_CLASS => request.spc = Some(value),
                INJECTED => {}
                INJECT if value != "true" && value != "false" => request.warnings.push(format!(
                    "kvinject: annotation {INJECT}: {value:?} means nothing; only \"false\" (skip this pod) does"
                )),
                INJECT => {}
                _ => {
                    if let Some(var) = key.strip_prefix(ENV_PREFIX) {
                        check_env_var(key, var)?;
                        request.env.insert(var, value);
                    } else if let Some(file) = key.strip_prefix(FILE_PREFIX) {
                        check_file_name(key, file)?;
                        request.files.insert(file, value);
                    } else {
                        debug_assert!(!KNOWN_POD_KEYS.contains(&key.as_str()));
                        request.warnings.push(format!(
                            "kvinject: unknown annotation {key} is ignored; the keys are {}",
                            KNOWN_POD_KEYS.join(", ")
                        ));
                    }
                }
            }
        }
        Ok(request)
    }

    fn mount_path(&self) -> Result<&'a str, Denial> {
        let Some(path) = self.mount_path else {
            return Ok(DEFAULT_MOUNT_PATH);
        };
        let problem = if !path.starts_with('/') {
            Some("is not an absolute path")
        } else if path.trim_end_matches('/').is_empty() {
            Some("is the root directory")
        } else if path.split('/').any(|segment| segment == "..") {
            Some("contains `..`")
        } else if path.contains(['\0', ':']) {
            Some("contains `:` or NUL")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(Denial::annotation(
                MOUNT_PATH,
                format!(
                    "{path:?} {problem}; use an absolute directory such as {DEFAULT_MOUNT_PATH}"
                ),
            )),
            None => Ok(path),
        }
    }
}

/// Where the pod's SecretProviderClass comes from.
enum Mode<'a> {
    /// kvinject generates it from these files and synced vars.
    Generate(Mounted),
    /// The pod names an existing one.
    Reference(&'a str),
}

/// What the pod's volume and env point at.
struct Wired {
    spc_name: String,
    env: Vec<EnvWire>,
    generated: Option<GeneratedSpc>,
    objects: Option<PodObjects>,
}

fn generate_mode(
    request: &Request<'_>,
    mounted: Mounted,
    namespace: &str,
    identity: &PodIdentity,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Wired, Denial> {
    let namespace_facts = facts.namespace(namespace).unwrap_or_default();
    let vault = resolve_setting(
        VAULT,
        request.vault,
        namespace_facts.vault.as_deref(),
        settings.default_vault.as_deref(),
        namespace,
        "--default-vault",
        check_vault_name,
    )?;
    let tenant_id = resolve_setting(
        TENANT_ID,
        request.tenant_id,
        namespace_facts.tenant_id.as_deref(),
        settings.default_tenant_id.as_deref(),
        namespace,
        "--default-tenant-id",
        |t| {
            identity::is_guid(t)
                .then_some(())
                .ok_or_else(|| "is not a tenant ID (GUID)".to_owned())
        },
    )?;

    let (files, synced) = mounted;
    let generated = spc::generate(
        namespace,
        &SpcContent {
            vault,
            tenant_id,
            identity,
            files: &files,
            synced: &synced,
        },
    );
    if let Some(existing) = facts.secret_provider_class(namespace, &generated.name)
        && !existing.managed_by_kvinject
    {
        return Err(Denial::new(format!(
            "SecretProviderClass {} in namespace {namespace} exists but is not labelled {}: {}; kvinject \
                 will not overwrite it: rename or delete that SecretProviderClass",
            generated.name,
            keys::MANAGED_BY_LABEL,
            keys::MANAGED_BY_VALUE
        ))
        .because("conflict"));
    }
    let env = synced
        .iter()
        .map(|s| EnvWire {
            var: s.var.clone(),
            secret: generated.name.clone(),
            key: s.var.clone(),
            annotation: format!("{ENV_PREFIX}{}", s.var),
        })
        .collect();
    let mut references = Vec::new();
    for (prefix, entries) in [(FILE_PREFIX, &request.files), (ENV_PREFIX, &request.env)] {
        for (name, value) in entries {
            let key = format!("{prefix}{name}");
            references.push((key.clone(), parse_reference(&key, value)?));
        }
    }
    Ok(Wired {
        spc_name: generated.name.clone(),
        env,
        generated: Some(generated),
        objects: Some(PodObjects {
            vault: vault.to_owned(),
            references,
        }),
    })
}

/// Generate mode's files by alias, and the env vars synced from them.
type Mounted = (BTreeMap<String, ObjectRef>, Vec<SyncedVar>);

/// Every object of the request as a file: `file.<NAME>` names its file; an object only used by
/// `env.<VAR>` becomes the file `<VAR>`; one name for two objects is a conflict.
fn mounted_objects(request: &Request<'_>) -> Result<Mounted, Denial> {
    let mut files: BTreeMap<String, ObjectRef> = BTreeMap::new();
    for (name, value) in &request.files {
        files.insert(
            (*name).to_owned(),
            parse_reference(&format!("{FILE_PREFIX}{name}"), value)?,
        );
    }
    let mut synced = Vec::new();
    let mut env_only: BTreeMap<ObjectRef, String> = BTreeMap::new();
    for (var, value) in &request.env {
        let key = format!("{ENV_PREFIX}{var}");
        let object = parse_reference(&key, value)?;
        let alias = match files.iter().find(|(_, o)| **o == object) {
            Some((alias, _)) => alias.clone(),
            None => match env_only.get(&object) {
                Some(alias) => alias.clone(),
                None => {
                    if let Some(other) = files.get(*var) {
                        return Err(Denial::annotation(
                            &key,
                            format!(
                                "mounts {object} as file {var}, but annotation {FILE_PREFIX}{var} mounts {other} \
                                 under that name; rename one of the two, or point both at the same object"
                            ),
                        ));
                    }
                    files.insert((*var).to_owned(), object.clone());
                    env_only.insert(object, (*var).to_owned());
                    (*var).to_owned()
                }
            },
        };
        synced.push(SyncedVar {
            alias,
            var: (*var).to_owned(),
        });
    }
    Ok((files, synced))
}

/// Reference mode's checks on the annotations alone: a valid SPC name and no `file.` annotations.
fn refuse_files_in_reference_mode(request: &Request<'_>, spc_name: &str) -> Result<(), Denial> {
    if let Some(file) = request.files.keys().next() {
        return Err(Denial::annotation(
            &format!("{FILE_PREFIX}{file}"),
            format!(
                "file annotations cannot be used with {SECRET_PROVIDER_CLASS}: SecretProviderClass {spc_name} \
                 decides the files; remove the file annotation, or remove {SECRET_PROVIDER_CLASS} to let kvinject \
                 generate the SecretProviderClass"
            ),
        ));
    }
    if !is_dns_subdomain(spc_name) {
        return Err(Denial::annotation(
            SECRET_PROVIDER_CLASS,
            format!(
                "{spc_name:?} is not a valid object name (lowercase letters, digits, `-` and `.`)"
            ),
        ));
    }
    Ok(())
}

fn reference_mode(
    request: &Request<'_>,
    spc_name: &str,
    namespace: &str,
    identity: &PodIdentity,
    facts: &dyn ClusterFacts,
    warnings: &mut Vec<String>,
) -> Result<Wired, Denial> {
    let Some(spc) = facts.secret_provider_class(namespace, spc_name) else {
        return Err(Denial::missing(format!(
            "annotation {SECRET_PROVIDER_CLASS}: SecretProviderClass {spc_name} does not exist in namespace \
             {namespace}; create it first, or fix the name"
        )));
    };
    if !identity::matches_spc(identity, &spc.identity) {
        return Err(Denial::annotation(
            SECRET_PROVIDER_CLASS,
            format!(
                "SecretProviderClass {spc_name} authenticates as {}, but the pod's identity is {identity}; \
                 a pod may only use a SecretProviderClass of its own identity: fix the SecretProviderClass's \
                 usePodIdentity/clientID or use another one",
                describe_spc_identity(&spc.identity)
            ),
        ));
    }
    for (key, value) in [(VAULT, request.vault), (TENANT_ID, request.tenant_id)] {
        if value.is_some() {
            warnings.push(format!(
                "kvinject: annotation {key} is unused: SecretProviderClass {spc_name} names the vault and tenant; remove it"
            ));
        }
    }
    let mut env = Vec::new();
    for (var, wanted) in &request.env {
        let annotation = format!("{ENV_PREFIX}{var}");
        let (secret_filter, key) = match wanted.split_once('/') {
            Some((secret, key)) => (Some(secret), key),
            None => (None, *wanted),
        };
        let candidates: Vec<_> = spc
            .synced_keys
            .iter()
            .filter(|k| k.key == key && secret_filter.is_none_or(|s| s == k.secret_name))
            .collect();
        let found = match candidates.as_slice() {
            [one] => one,
            [] => {
                let available: Vec<String> = spc
                    .synced_keys
                    .iter()
                    .map(|k| format!("{}/{}", k.secret_name, k.key))
                    .collect();
                return Err(Denial::annotation(
                    &annotation,
                    format!(
                        "SecretProviderClass {spc_name} syncs no key {wanted:?}; it syncs [{}]: use one of them, \
                         or add the key to its secretObjects",
                        available.join(", ")
                    ),
                ));
            }
            many => {
                let choices: Vec<String> = many
                    .iter()
                    .map(|k| format!("{}/{}", k.secret_name, k.key))
                    .collect();
                return Err(Denial::annotation(
                    &annotation,
                    format!(
                        "key {key:?} is synced into several Secrets by SecretProviderClass {spc_name}; write \
                         <secretName>/<key>, one of [{}]",
                        choices.join(", ")
                    ),
                ));
            }
        };
        env.push(EnvWire {
            var: (*var).to_owned(),
            secret: found.secret_name.clone(),
            key: found.key.clone(),
            annotation,
        });
    }
    Ok(Wired {
        spc_name: spc_name.to_owned(),
        env,
        generated: None,
        objects: None,
    })
}

fn describe_spc_identity(identity: &crate::facts::SpcIdentity) -> String {
    use crate::facts::SpcIdentity;
    match identity {
        SpcIdentity::PodIdentity => "AAD Pod Identity (usePodIdentity)".to_owned(),
        SpcIdentity::ClientId(id) => format!("workload identity {id} (clientID)"),
        SpcIdentity::VmManagedIdentity => {
            "the node's managed identity (useVMManagedIdentity), which is not a pod identity"
                .to_owned()
        }
        SpcIdentity::Unspecified => "no identity".to_owned(),
    }
}

/// The pod value, else the namespace's, else the server default; validated, with its source in
/// the denial.
fn resolve_setting<'a>(
    key: &str,
    pod: Option<&'a str>,
    namespace_value: Option<&'a str>,
    default: Option<&'a str>,
    namespace: &str,
    flag: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<&'a str, Denial> {
    let (value, source) = match (pod, namespace_value, default) {
        (Some(v), _, _) => (v, format!("annotation {key}")),
        (None, Some(v), _) => (v, format!("namespace {namespace} annotation {key}")),
        (None, None, Some(v)) => (v, format!("server flag {flag}")),
        (None, None, None) => {
            return Err(Denial::new(format!(
                "no {key} for this pod: set annotation {key} on the pod (template) or on namespace {namespace}, \
                 or start kvinject with {flag}"
            )));
        }
    };
    check(value)
        .map_err(|problem| Denial::new(format!("{source}: {value:?} {problem}; fix it")))?;
    Ok(value)
}

fn check_vault_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let valid = (3..=24).contains(&name.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err("is not a Key Vault name (3-24 letters, digits and single `-`, starting with a letter, ending with a letter or digit)".to_owned())
    }
}

fn parse_reference(annotation: &str, value: &str) -> Result<ObjectRef, Denial> {
    ObjectRef::parse(value)
        .map_err(|e| Denial::annotation(annotation, format!("reference {value:?} {e}")))
}

fn check_env_var(key: &str, var: &str) -> Result<(), Denial> {
    let mut chars = var.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Denial::annotation(
            key,
            format!(
                "`{var}` is not an env var name (letters, digits and `_`, not starting with a digit); rename it"
            ),
        ))
    }
}

fn check_file_name(key: &str, name: &str) -> Result<(), Denial> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        Err(Denial::annotation(
            key,
            format!("`{name}` is not a file name; name the file, e.g. {FILE_PREFIX}tls.crt"),
        ))
    } else {
        Ok(())
    }
}

/// A Kubernetes annotation key name part: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain, the form of most Kubernetes object names.
fn is_dns_subdomain(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=253).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
}

fn has_request_annotations(view: &PodView<'_>) -> bool {
    view.annotations()
        .into_iter()
        .flatten()
        .any(|(key, _)| key.starts_with(PREFIX) && key != INJECTED && key != INJECT)
}

fn target_containers<'a>(
    view: &PodView<'a>,
    annotation: Option<&str>,
) -> Result<Vec<ContainerView<'a>>, Denial> {
    let containers: Vec<_> = view.containers(ContainerList::Containers).collect();
    let Some(list) = annotation else {
        if containers.is_empty() {
            return Err(Denial::new("pod has no containers to inject into"));
        }
        return Ok(containers);
    };
    let init: Vec<_> = view.containers(ContainerList::InitContainers).collect();
    let mut targets: Vec<ContainerView<'a>> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(found) = containers.iter().chain(&init).find(|c| c.name == name) else {
            let known: Vec<&str> = containers.iter().chain(&init).map(|c| c.name).collect();
            return Err(Denial::annotation(
                CONTAINERS,
                format!(
                    "names container {name:?}, which the pod does not have; its containers are [{}]",
                    known.join(", ")
                ),
            ));
        };
        if !targets
            .iter()
            .any(|t| t.list == found.list && t.index == found.index)
        {
            targets.push(*found);
        }
    }
    if targets.is_empty() {
        return Err(Denial::annotation(
            CONTAINERS,
            "names no container; list container names separated by commas, or remove the annotation",
        ));
    }
    Ok(targets)
}
