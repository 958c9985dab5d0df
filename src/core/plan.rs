//! The pure core: (pod JSON, namespace, cluster facts, settings) -> [`Decision`] or [`Denial`].
//!
//! Implements `docs/contract.md` sections 2-6 for one pod or pod template. No I/O: every answer about the
//! cluster comes through [`ClusterFacts`], and the result is data (patch operations, the SPC to
//! write, warnings) for an adapter to deliver.

use std::collections::BTreeSet;

use crate::core::annotations::{
    self as keys, ENV_PREFIX, FILE_PREFIX, INJECT, INJECTED, MIRROR_POD, PREFIX,
    SECRET_PROVIDER_CLASS, TENANT_ID, TLS_SECRET_PREFIX, VAULT, VOLUME_NAME,
};
use crate::core::denial::{Denial, DenialReason, warning};
use crate::core::facts::{ClusterFacts, SpcFacts, SpcIdentity, SyncedKey};
use crate::core::generate::{self, Asked};
use crate::core::held::Held;
use crate::core::identity::{self, AAD_POD_IDENTITY_DEPRECATED, BindingScope, PodIdentity};
use crate::core::node::Node;
use crate::core::patch::{self, EnvWire, JsonPatch, VolumeWire, Wiring};
use crate::core::pod::{self, PodView};
use crate::core::reference::ObjectRef;
use crate::core::request::{
    Request, check_reference_mode, has_request_annotations, target_containers,
};
use crate::core::spc::GeneratedSpc;

/// Server-wide settings the core reads (the adapters' flags).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--default-vault`: the vault when neither pod nor namespace names one.
    pub default_vault: Option<String>,
    /// `--default-tenant-id`: the tenant when neither pod nor namespace names one.
    pub default_tenant_id: Option<String>,
    /// Namespaces whose pods are never mutated, even if sent.
    pub ignored_namespaces: BTreeSet<String>,
    /// How much work one pod may ask for.
    pub limits: PodLimits,
    /// `--allowed-vaults`: the only vaults any pod may use, when set.
    pub allowed_vaults: Option<Vec<String>>,
    /// Where AAD Pod Identity finds bindings (`--aad-pod-identity-force-namespaced`).
    pub binding_scope: BindingScope,
}

/// How much work one pod may ask for: a request over a limit is denied naming it, so no pod can
/// make kvinject (or the API server) hold an answer far larger than a real workload's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodLimits {
    /// `env.`, `file.` and `tls-secret.` annotations of one pod (`--max-objects-per-pod`).
    pub max_objects: usize,
    /// Vaults one pod reads from, each an SPC and a volume (`--max-vaults-per-pod`).
    pub max_vaults: usize,
    /// Containers wired in one pod (`--max-target-containers`).
    pub max_target_containers: usize,
    /// The JSON Patch for one pod, in bytes (`--max-patch-bytes`).
    pub max_patch_bytes: usize,
}

impl Default for PodLimits {
    /// 100 objects is several times what real workloads reference (the annotations alone then
    /// take a few KiB of the API server's 256 KiB); 4 vaults is twice the platform-and-team pair
    /// several vaults exist for, while a pod naming many would cost an SPC write, a volume and
    /// Key Vault requests each; 100 containers is well past any real pod;
    /// 1 MiB of patch is more than the patched pod could hold in etcd (1.5 MiB per object) with
    /// its own spec.
    fn default() -> Self {
        Self {
            max_objects: 100,
            max_vaults: 4,
            max_target_containers: 100,
            max_patch_bytes: 1024 * 1024,
        }
    }
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
            limits: PodLimits::default(),
            allowed_vaults: None,
            binding_scope: BindingScope::default(),
        }
    }
}

/// A vault of a generate-mode pod and its object references there, each with the annotation
/// that made it: what Key Vault verification checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodObjects {
    /// The Key Vault.
    pub vault: String,
    /// (annotation key, reference).
    pub references: Vec<(String, ObjectRef)>,
    /// (annotation key, the file its object is mounted as in this vault's volume).
    pub files: Vec<(String, String)>,
}

impl Held for PodObjects {
    fn heap(&self) -> usize {
        self.vault.heap() + self.references.heap() + self.files.heap()
    }
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
    pub patch: JsonPatch,
    /// Generate mode: the SPCs that must exist for the pod to start, one per vault.
    pub generated_spcs: Vec<GeneratedSpc>,
    /// Soft problems to return to the user.
    pub warnings: Vec<String>,
    /// Generate mode: each vault with every object reference there and the annotation that
    /// made it, for verification against Key Vault.
    pub objects: Vec<PodObjects>,
    /// The identity the SPCs authenticate as.
    pub identity: PodIdentity,
    /// The CSI volumes, one per SPC: the pod's vault first, then the others by name.
    pub volumes: Vec<VolumeWire>,
    /// The env vars wired, sorted by var.
    pub env: Vec<EnvWire>,
    /// The containers (and init containers) wired, by name.
    pub containers: Vec<String>,
}

impl InjectionPlan {
    /// The SecretProviderClasses the pod's volumes name, one per vault, in volume order.
    pub fn spc_names(&self) -> Vec<&str> {
        spc_names(&self.volumes)
    }
}

fn spc_names(volumes: &[VolumeWire]) -> Vec<&str> {
    volumes.iter().map(|v| v.spc_name.as_str()).collect()
}

/// The core's answer for a pod it does not deny.
// One per admission, moved once and never stored in bulk: boxing the plan would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    pod: &Node,
    namespace: &str,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Decision, Denial> {
    let view = PodView::new(pod)?;
    if let Some(skip) = not_ours(&view, namespace, settings) {
        return Ok(skip);
    }
    let request = Request::read(&view)?;
    let limits = &settings.limits;
    limits.check_objects(request.object_count())?;
    let mut warnings = request.warnings.clone();
    if request.asks_nothing() {
        warnings.push(warning(format_args!(
            "pod is labelled {INJECT}: \"true\" but asks for nothing; add {ENV_PREFIX}<VAR>, \
             {FILE_PREFIX}<NAME> or {TLS_SECRET_PREFIX}<SECRET> annotations, or remove the label"
        )));
        return Ok(Decision::Skip {
            reason: SkipReason::NothingRequested,
            warnings,
        });
    }
    warnings.extend(namespace_not_opted_in(namespace, facts));
    let targets = target_containers(&view, request.containers)?;
    limits.check_targets(targets.len())?;
    let mount_path = request.mount_path()?;
    // Everything the annotations say is checked before the cluster is asked about identity.
    let mode = match request.spc {
        None => {
            let asked = Asked::read(&request)?;
            limits.check_vaults(asked.vault_count())?;
            Mode::Generate(asked)
        }
        Some(spc_name) => {
            check_reference_mode(&request, spc_name)?;
            Mode::Reference(spc_name)
        }
    };
    let identity = identity::resolve(
        &view,
        namespace,
        request.client_id,
        facts,
        settings.binding_scope,
    )?;
    if matches!(identity, PodIdentity::AadPodIdentity { .. }) {
        warnings.push(warning(AAD_POD_IDENTITY_DEPRECATED));
    }
    let wired = match mode {
        Mode::Generate(asked) => generate::generate(
            &request, asked, mount_path, namespace, &identity, facts, settings,
        )?,
        Mode::Reference(spc_name) => generate::Generated {
            volumes: vec![VolumeWire {
                name: VOLUME_NAME.to_owned(),
                spc_name: spc_name.to_owned(),
                mount_path: mount_path.to_owned(),
            }],
            env: reference_mode(
                &request,
                spc_name,
                namespace,
                &identity,
                facts,
                settings,
                &mut warnings,
            )?,
            spcs: Vec::new(),
            objects: Vec::new(),
        },
    };
    // The `kvinject.io/injected` marker names every SPC, comma-separated.
    let marker = spc_names(&wired.volumes).join(",");
    let wiring = Wiring {
        volumes: &wired.volumes,
        marker: &marker,
        env: &wired.env,
        targets: &targets,
    };
    let patch = patch::operations(&view, &wiring)?;
    limits.check_patch(&patch)?;
    Ok(Decision::Inject(InjectionPlan {
        patch,
        generated_spcs: wired.spcs,
        warnings,
        objects: wired.objects,
        identity,
        volumes: wired.volumes,
        env: wired.env,
        containers: targets.iter().map(|c| c.name.to_owned()).collect(),
    }))
}

/// The warning for a pod of a namespace known not to be opted in.
fn namespace_not_opted_in(namespace: &str, facts: &dyn ClusterFacts) -> Option<String> {
    let known_not_opted_in = facts
        .namespace(namespace)
        .is_some_and(|ns| !ns.injection_enabled);
    known_not_opted_in.then(|| {
        warning(format_args!(
            "namespace {namespace} is not labelled {}: {}; the webhook only sees pods of namespaces that are",
            keys::NAMESPACE_INJECTION_LABEL,
            keys::NAMESPACE_INJECTION_ENABLED
        ))
    })
}

impl PodLimits {
    /// The objects (`env.` and `file.` annotations) of one pod.
    fn check_objects(&self, count: usize) -> Result<(), Denial> {
        let what = "Key Vault objects (env., file. and tls-secret. annotations)";
        check_limit(what, count, self.max_objects, "--max-objects-per-pod")
    }

    /// The vaults the objects are in.
    fn check_vaults(&self, count: usize) -> Result<(), Denial> {
        let what = "Key Vaults (the pod's and those named by ?vault=)";
        check_limit(what, count, self.max_vaults, "--max-vaults-per-pod")
    }

    /// The containers to wire.
    fn check_targets(&self, count: usize) -> Result<(), Denial> {
        let (limit, flag) = (self.max_target_containers, "--max-target-containers");
        check_limit("target containers", count, limit, flag)
    }

    /// The patch, as the JSON it is sent as.
    fn check_patch(&self, patch: &JsonPatch) -> Result<(), Denial> {
        check_limit(
            "bytes of JSON Patch",
            patch.as_str().len(),
            self.max_patch_bytes,
            "--max-patch-bytes",
        )
    }
}

/// Denies a pod that asks for more than `limit` of `what`, naming the count, the limit and the
/// flag that sets it.
fn check_limit(what: &str, count: usize, limit: usize, flag: &str) -> Result<(), Denial> {
    if count <= limit {
        return Ok(());
    }
    Err(Denial::new(format!(
        "pod needs {count} {what}, over the limit of {limit} ({flag}); split the workload, or ask the \
         cluster admins to raise {flag}"
    ))
    .because(DenialReason::Limit))
}

/// The skip for a pod kvinject must leave alone (contract: opt-in and never-injected
/// namespaces), with the warning that tells a user why when they seem to expect injection.
fn not_ours(view: &PodView<'_>, namespace: &str, settings: &Settings) -> Option<Decision> {
    let labelled = view.label(INJECT) == Some("true");
    let (reason, warning) = if settings.ignored_namespaces.contains(namespace) {
        let warning = labelled.then(|| {
            warning(format_args!(
                "namespace {namespace} is never injected; run the pod in another namespace"
            ))
        });
        (SkipReason::IgnoredNamespace, warning)
    } else if view.annotation(MIRROR_POD).is_some() {
        (SkipReason::MirrorPod, None)
    } else if !labelled {
        let warning = has_request_annotations(view).then(|| {
            warning(format_args!(
                "pod has {PREFIX} annotations but not the label {INJECT}: \"true\", so nothing is \
                 injected; add the label to the pod (template) labels"
            ))
        });
        (SkipReason::NotLabelled, warning)
    } else if view.annotation(INJECT) == Some("false") {
        (SkipReason::OptedOut, None)
    } else {
        return None;
    };
    Some(Decision::Skip {
        reason,
        warnings: warning.into_iter().collect(),
    })
}

/// Warnings for a workload (Deployment, CronJob, ...) whose own metadata carries kvinject keys
/// that only mean something on its pod template.
pub fn workload_warnings(workload: &Node, template_path: &str) -> Vec<String> {
    let mut misplaced = kvinject_keys(workload);
    misplaced.retain(|key| *key != INJECTED);
    if misplaced.is_empty() {
        return Vec::new();
    }
    vec![warning(format_args!(
        "{} on the {}'s own metadata have no effect; move them to {template_path}.metadata",
        misplaced.join(", "),
        workload["kind"].as_str().unwrap_or("workload")
    ))]
}

/// The `kvinject.io/` keys among an object's labels, then its annotations.
fn kvinject_keys<'a>(object: &'a Node<'_>) -> Vec<&'a str> {
    ["labels", "annotations"]
        .iter()
        .flat_map(|field| object["metadata"][field].members())
        .map(|(key, _)| key)
        .filter(|key| key.starts_with(PREFIX))
        .collect()
}

/// A warning for a pod-bearing document in an apiVersion kvinject does not read (a retired one
/// such as `extensions/v1beta1`) whose pod template has kvinject labels or annotations: without
/// it, `inject` would pass it through unchanged and silent. `None` for every other document.
pub fn unhandled_workload_warning(
    api_version: &str,
    kind: &str,
    document: &Node,
) -> Option<String> {
    let (path, handled) = pod::unhandled_pod_bearer(api_version, kind)?;
    let template = path.iter().try_fold(document, |node, key| node.get(key))?;
    let keys = kvinject_keys(template);
    if keys.is_empty() {
        return None;
    }
    Some(warning(format_args!(
        "{kind} of apiVersion {api_version} is not one kvinject reads: {} in its pod template are \
         not checked, and `kvinject inject` leaves it unchanged; use apiVersion {handled}",
        keys.join(", ")
    )))
}

/// Where the pod's SecretProviderClasses come from.
enum Mode<'a> {
    /// kvinject generates one per vault for these objects.
    Generate(Asked),
    /// The pod names an existing one.
    Reference(&'a str),
}

/// Namespace guardrails: a vault outside the namespace's `kvinject.io/allowed-vaults`, or the
/// server's `--allowed-vaults`, is denied naming the list that refuses it. Vault names are
/// DNS labels: compared without case. `named_by` says what named the vault, asked only for a
/// denial.
pub(crate) fn refuse_vault_not_allowed(
    vault: &str,
    named_by: impl FnOnce() -> String,
    namespace: &str,
    namespace_list: Option<&[String]>,
    settings: &Settings,
) -> Result<(), Denial> {
    let allows = |list: &[String]| list.iter().any(|v| v.eq_ignore_ascii_case(vault));
    let refused_by = match (namespace_list, settings.allowed_vaults.as_deref()) {
        (Some(list), _) if !allows(list) => Some((
            format!(
                "namespace {namespace}'s annotation {}",
                keys::ALLOWED_VAULTS
            ),
            list,
        )),
        (_, Some(list)) if !allows(list) => {
            Some(("the server's --allowed-vaults".to_owned(), list))
        }
        _ => None,
    };
    let Some((source, list)) = refused_by else {
        return Ok(());
    };
    Err(Denial::new(format!(
        "{}: Key Vault {vault} is not among the vaults {source} allows ([{}]); use one of them, \
         or ask the cluster admins to allow it",
        named_by(),
        list.join(", ")
    ))
    .because(DenialReason::Namespace))
}

/// Reference mode's checks of the named SPC; the env vars it syncs.
fn reference_mode(
    request: &Request<'_>,
    spc_name: &str,
    namespace: &str,
    identity: &PodIdentity,
    facts: &dyn ClusterFacts,
    settings: &Settings,
    warnings: &mut Vec<String>,
) -> Result<Vec<EnvWire>, Denial> {
    let Some(spc) = facts.secret_provider_class(namespace, spc_name) else {
        return Err(Denial::missing(format!(
            "annotation {SECRET_PROVIDER_CLASS}: SecretProviderClass {spc_name} does not exist in namespace \
             {namespace}; create it first, or fix the name"
        )));
    };
    refuse_unusable_spc_identity(spc_name, &spc.identity)?;
    if let Some(vault) = &spc.vault {
        let what =
            || format!("annotation {SECRET_PROVIDER_CLASS} (SecretProviderClass {spc_name})");
        let namespace_list = facts.namespace(namespace).and_then(|ns| ns.allowed_vaults);
        refuse_vault_not_allowed(vault, what, namespace, namespace_list.as_deref(), settings)?;
    }
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
            warnings.push(warning(format_args!(
                "annotation {key} is unused: SecretProviderClass {spc_name} names the vault and tenant; remove it"
            )));
        }
    }
    let env = request
        .env
        .iter()
        .map(|(var, wanted)| synced_key_env(&spc, spc_name, var, wanted))
        .collect::<Result<_, _>>()?;
    for (secret, object) in &request.tls_secrets {
        check_synced_tls_secret(&spc, spc_name, secret, object)?;
    }
    Ok(env)
}

/// Reference mode's `tls-secret.<SECRET>: <object>`: the SPC must already sync Secret SECRET
/// as `kubernetes.io/tls`, both keys from `object`; nothing is written for it.
fn check_synced_tls_secret(
    spc: &SpcFacts,
    spc_name: &str,
    secret: &str,
    object: &str,
) -> Result<(), Denial> {
    let annotation = format!("{TLS_SECRET_PREFIX}{secret}");
    let Some(synced) = spc.tls_secrets.iter().find(|t| t.secret_name == secret) else {
        let names: Vec<&str> = spc
            .tls_secrets
            .iter()
            .map(|t| t.secret_name.as_str())
            .collect();
        return Err(Denial::annotation(
            &annotation,
            format!(
                "SecretProviderClass {spc_name} syncs no {} Secret {secret}; it syncs [{}]: use one of them, \
                 or add a secretObjects entry of type {} named {secret} to it",
                keys::TLS_SECRET_TYPE,
                names.join(", "),
                keys::TLS_SECRET_TYPE
            ),
        ));
    };
    match &synced.object {
        Some(source) if source == object.trim() => Ok(()),
        Some(source) => Err(Denial::annotation(
            &annotation,
            format!(
                "SecretProviderClass {spc_name} syncs Secret {secret} from object {source}, not {object:?}; \
                 write {TLS_SECRET_PREFIX}{secret}: {source}"
            ),
        )),
        None => Err(Denial::annotation(
            &annotation,
            format!(
                "SecretProviderClass {spc_name} syncs Secret {secret} without tls.key and tls.crt from one \
                 object, so the provider cannot fill it: map one objectName to both keys in its secretObjects"
            ),
        )),
    }
}

/// Reference mode's `env.<VAR>: [<secretName>/]<key>`: the one synced key of the SPC it names.
fn synced_key_env(
    spc: &SpcFacts,
    spc_name: &str,
    var: &str,
    wanted: &str,
) -> Result<EnvWire, Denial> {
    let annotation = format!("{ENV_PREFIX}{var}");
    let (secret_filter, key) = match wanted.split_once('/') {
        Some((secret, key)) => (Some(secret), key),
        None => (None, wanted),
    };
    let candidates: Vec<&SyncedKey> = spc
        .synced_keys
        .iter()
        .filter(|k| k.key == key && secret_filter.is_none_or(|s| s == k.secret_name))
        .collect();
    let listed = |keys: &mut dyn Iterator<Item = &SyncedKey>| -> String {
        let names: Vec<String> = keys
            .map(|k| format!("{}/{}", k.secret_name, k.key))
            .collect();
        names.join(", ")
    };
    match candidates.as_slice() {
        [found] => Ok(EnvWire {
            var: var.to_owned(),
            secret: found.secret_name.clone(),
            key: found.key.clone(),
            annotation,
        }),
        [] => Err(Denial::annotation(
            &annotation,
            format!(
                "SecretProviderClass {spc_name} syncs no key {wanted:?}; it syncs [{}]: use one of them, \
                 or add the key to its secretObjects",
                listed(&mut spc.synced_keys.iter())
            ),
        )),
        many => Err(Denial::annotation(
            &annotation,
            format!(
                "key {key:?} is synced into several Secrets by SecretProviderClass {spc_name}; write \
                 <secretName>/<key>, one of [{}]",
                listed(&mut many.iter().copied())
            ),
        )),
    }
}

/// An SPC whose identity parameters the provider cannot use as one identity: denied, naming them.
fn refuse_unusable_spc_identity(spc_name: &str, identity: &SpcIdentity) -> Result<(), Denial> {
    let problem = match identity {
        SpcIdentity::Several(parameters) => format!(
            "SecretProviderClass {spc_name} names more than one identity ({}); the Azure provider would \
             not authenticate as the pod: keep exactly one of them",
            parameters.join(" and ")
        ),
        SpcIdentity::Unreadable { parameter, value } => format!(
            "SecretProviderClass {spc_name} has {parameter}: {value:?}, which the Azure provider cannot read \
             as a boolean (true, false, 1, 0, t, f): fix the SecretProviderClass"
        ),
        _ => return Ok(()),
    };
    Err(Denial::annotation(SECRET_PROVIDER_CLASS, problem).because(DenialReason::Identity))
}

fn describe_spc_identity(identity: &SpcIdentity) -> String {
    match identity {
        SpcIdentity::PodIdentity => "AAD Pod Identity (usePodIdentity)".to_owned(),
        SpcIdentity::ClientId(id) => format!("workload identity {id} (clientID)"),
        SpcIdentity::VmManagedIdentity => {
            "the node's managed identity (useVMManagedIdentity), which is not a pod identity"
                .to_owned()
        }
        SpcIdentity::Unspecified => "no identity".to_owned(),
        SpcIdentity::Several(parameters) => {
            format!("several identities ({})", parameters.join(", "))
        }
        SpcIdentity::Unreadable { parameter, .. } => format!("an unreadable {parameter}"),
    }
}

/// The pod value, else the namespace's, else the server default; validated, with its source in
/// the denial.
pub(crate) fn resolve_setting<'a>(
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
