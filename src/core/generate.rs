//! Generate mode (`docs/contract.md` section 4): the pod's objects grouped by vault, one
//! generated SecretProviderClass and one CSI volume per vault, the env vars each syncs into its
//! Opaque Secret and the `kubernetes.io/tls` Secrets each syncs for Ingress controllers.
//!
//! Pure like the rest of the core: names and manifests are computed here, written elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::annotations::{
    self as keys, ENV_PREFIX, FILE_PREFIX, TENANT_ID, TLS_FILE_SUFFIX, TLS_SECRET_PREFIX, VAULT,
    VOLUME_NAME,
};
use crate::core::denial::{Denial, DenialReason};
use crate::core::facts::{ClusterFacts, certificate_id};
use crate::core::identity::{self, PodIdentity};
use crate::core::patch::{EnvWire, VolumeWire};
use crate::core::plan::{PodObjects, Settings, refuse_vault_not_allowed, resolve_setting};
use crate::core::reference::{
    ObjectEncoding, ObjectFormat, ObjectRef, ObjectType, check_vault_name,
};
use crate::core::request::{Request, parse_reference};
use crate::core::spc::{self, GeneratedSpc, SpcContent, SyncedVar, TlsSync};

/// How an annotation uses its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// `file.<NAME>`: mounted as file NAME.
    File,
    /// `env.<VAR>`: synced into the Opaque Secret as key VAR.
    Env,
    /// `tls-secret.<SECRET>`: synced into `kubernetes.io/tls` Secret SECRET.
    Tls,
}

/// One object the pod asks for.
#[derive(Debug, Clone)]
struct Wanted {
    /// The annotation key that asks.
    annotation: String,
    /// The file name, env var or Secret name after the annotation's prefix.
    name: String,
    use_: Use,
    /// The object, without its `vault` option: that is [`Wanted::vault`].
    object: ObjectRef,
    /// The object's `?vault=`, if any.
    vault: Option<String>,
}

/// Every object a generate-mode pod asks for, parsed and checked for form.
#[derive(Debug)]
pub struct Asked {
    wanted: Vec<Wanted>,
    /// Each group of [`by_vault`]`(None)` as files, in the groups' order: what `read` checked,
    /// kept for [`generate`], which groups the same way unless a `?vault=` names the pod's vault.
    mounted: Vec<VaultObjects>,
}

/// What one vault's SPC mounts and syncs.
#[derive(Debug, Default)]
struct VaultObjects {
    /// Mounted files by alias.
    files: BTreeMap<String, ObjectRef>,
    /// Env vars synced into the Opaque Secret, sorted by var.
    synced: Vec<SyncedVar>,
    /// TLS Secrets, sorted by Secret name.
    tls: Vec<TlsSync>,
    /// (annotation, the file its object is mounted as), in the group's order.
    placed: Vec<(String, String)>,
}

/// What a generate-mode pod's volumes and env point at.
#[derive(Debug, Default)]
pub struct Generated {
    /// One CSI volume per vault, the pod's vault first.
    pub volumes: Vec<VolumeWire>,
    /// Env vars, sorted by var, each pointing at its vault's Secret.
    pub env: Vec<EnvWire>,
    /// The SPCs, in the order of `volumes`.
    pub spcs: Vec<GeneratedSpc>,
    /// Each vault's objects, for Key Vault verification.
    pub objects: Vec<PodObjects>,
}

impl Asked {
    /// Parses every `file.`, `env.` and `tls-secret.` reference of `request`, and checks what
    /// needs no fact: the TLS rules and file names colliding within one vault.
    pub fn read(request: &Request<'_>) -> Result<Self, Denial> {
        let entries = [
            (FILE_PREFIX, Use::File, &request.files),
            (ENV_PREFIX, Use::Env, &request.env),
            (TLS_SECRET_PREFIX, Use::Tls, &request.tls_secrets),
        ];
        let mut wanted = Vec::new();
        for (prefix, use_, annotations) in entries {
            for (name, value) in annotations {
                let annotation = [prefix, name].concat();
                let mut object = parse_reference(&annotation, value)?;
                if use_ == Use::Tls {
                    check_tls_object(&annotation, &object)?;
                }
                let vault = object.vault.take();
                wanted.push(Wanted {
                    annotation,
                    name: (*name).to_owned(),
                    use_,
                    object,
                    vault,
                });
            }
        }
        let mounted = by_vault(&wanted, None)
            .values()
            .map(|group| mount(group))
            .collect::<Result<_, _>>()?;
        Ok(Self { wanted, mounted })
    }

    /// How many vaults the objects name, the pod's own counted once (at most one more than
    /// there are distinct `?vault=` values).
    pub fn vault_count(&self) -> usize {
        let vaults: BTreeSet<Option<&str>> =
            self.wanted.iter().map(|w| w.vault.as_deref()).collect();
        vaults.len()
    }

    /// Whether some object lives in the pod's own vault (has no `?vault=`).
    fn uses_pod_vault(&self) -> bool {
        self.wanted.iter().any(|w| w.vault.is_none())
    }

    /// Whether a `?vault=` names `pod_vault`: its objects then join the pod's vault's group.
    fn names_pod_vault(&self, pod_vault: Option<&str>) -> bool {
        pod_vault.is_some_and(|pod| {
            let named = |w: &Wanted| {
                w.vault
                    .as_deref()
                    .is_some_and(|v| pod.eq_ignore_ascii_case(v))
            };
            self.wanted.iter().any(named)
        })
    }
}

/// The objects by vault: `None` is the pod's vault, which a `?vault=` naming `pod_vault` joins.
fn by_vault<'a>(
    wanted: &'a [Wanted],
    pod_vault: Option<&str>,
) -> BTreeMap<Option<&'a str>, Vec<&'a Wanted>> {
    let mut groups: BTreeMap<Option<&str>, Vec<&Wanted>> = BTreeMap::new();
    for wanted in wanted {
        let vault = wanted
            .vault
            .as_deref()
            .filter(|v| pod_vault.is_none_or(|pod| !pod.eq_ignore_ascii_case(v)));
        groups.entry(vault).or_default().push(wanted);
    }
    groups
}

/// Generates one SPC per vault for a pod in `namespace`, with the volume that mounts each at
/// `mount_path` (the pod's vault) or `<mount_path>-<vault>` (another vault).
pub fn generate(
    request: &Request<'_>,
    asked: Asked,
    mount_path: &str,
    namespace: &str,
    pod_identity: &PodIdentity,
    facts: &dyn ClusterFacts,
    settings: &Settings,
) -> Result<Generated, Denial> {
    let namespace_facts = facts.namespace(namespace).unwrap_or_default();
    let pod_vault = resolve_setting(
        VAULT,
        request.vault,
        namespace_facts.vault.as_deref(),
        settings.default_vault.as_deref(),
        namespace,
        "--default-vault",
        check_vault_name,
    )
    .map(str::to_owned);
    // The pod's vault is required when an object is in it, and checked when the pod names one.
    let merged_into = if asked.uses_pod_vault() || request.vault.is_some() {
        Some(pod_vault.clone()?)
    } else {
        pod_vault.clone().ok()
    };
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
    let mut generated = Generated::default();
    let groups = by_vault(&asked.wanted, merged_into.as_deref());
    // Grouped as `read` grouped them, the groups are mounted already.
    let mut mounted = if asked.names_pod_vault(merged_into.as_deref()) {
        Vec::new()
    } else {
        asked.mounted
    }
    .into_iter();
    for (other_vault, group) in groups {
        let vault = match other_vault {
            Some(vault) => vault.to_owned(),
            None => pod_vault.clone()?,
        };
        let named_by = || match other_vault {
            Some(_) => format!("annotation {}", group[0].annotation),
            None => pod_vault_source(request),
        };
        let allowed = namespace_facts.allowed_vaults.as_deref();
        refuse_vault_not_allowed(&vault, named_by, namespace, allowed, settings)?;
        let objects = match mounted.next() {
            Some(objects) => objects,
            None => mount(&group)?,
        };
        let content = SpcContent {
            vault: &vault,
            tenant_id,
            identity: pod_identity,
            files: &objects.files,
            synced: &objects.synced,
            tls: &objects.tls,
        };
        let spc = spc::generate(namespace, &content);
        refuse_foreign_spc(&spc, namespace, facts)?;
        refuse_tls_conflicts(&group, &vault, &spc.name, namespace, facts)?;
        generated
            .volumes
            .push(volume(other_vault, mount_path, &spc.name));
        generated.env.extend(objects.synced.iter().map(|s| EnvWire {
            var: s.var.clone(),
            secret: spc.name.clone(),
            key: s.var.clone(),
            annotation: [ENV_PREFIX, &s.var].concat(),
        }));
        generated.objects.push(PodObjects {
            vault,
            files: objects.placed,
            references: group
                .iter()
                .map(|w| (w.annotation.clone(), w.object.clone()))
                .collect(),
        });
        generated.spcs.push(spc);
    }
    generated.env.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(generated)
}

/// The volume of a vault's SPC: the pod's vault keeps the name and path it always had; another
/// vault's sits beside it, never inside (the kubelet cannot make a mount point in a read-only
/// CSI volume).
fn volume(other_vault: Option<&str>, mount_path: &str, spc_name: &str) -> VolumeWire {
    let (name, mount_path) = match other_vault {
        None => (VOLUME_NAME.to_owned(), mount_path.to_owned()),
        Some(vault) => (
            format!("{VOLUME_NAME}-{vault}"),
            format!("{}-{vault}", mount_path.trim_end_matches('/')),
        ),
    };
    VolumeWire {
        name,
        spc_name: spc_name.to_owned(),
        mount_path,
    }
}

/// One vault's objects as files: `file.<NAME>` names its file; an object only used by
/// `env.<VAR>` becomes the file `<VAR>`, one only used by `tls-secret.<SECRET>` the file
/// `<SECRET>.pem`; one name for two objects is a conflict.
fn mount(group: &[&Wanted]) -> Result<VaultObjects, Denial> {
    let mut mounted = VaultObjects::default();
    // The first file name of each object: files come first, then env vars, then TLS Secrets.
    let mut alias_of: BTreeMap<&ObjectRef, String> = BTreeMap::new();
    for wanted in group {
        let object = &wanted.object;
        let alias = match (wanted.use_, alias_of.get(object)) {
            (Use::File, _) => {
                alias_of
                    .entry(object)
                    .or_insert_with(|| wanted.name.clone());
                mounted.files.insert(wanted.name.clone(), object.clone());
                wanted.name.clone()
            }
            (_, Some(alias)) => alias.clone(),
            (use_, None) => {
                let file = match use_ {
                    Use::Tls => format!("{}{TLS_FILE_SUFFIX}", wanted.name),
                    _ => wanted.name.clone(),
                };
                if let Some(other) = mounted.files.get(&file) {
                    return Err(Denial::annotation(
                        &wanted.annotation,
                        format!(
                            "mounts {object} as file {file}, but annotation {FILE_PREFIX}{file} mounts {other} \
                             under that name; rename one of the two, or point both at the same object"
                        ),
                    ));
                }
                mounted.files.insert(file.clone(), object.clone());
                alias_of.insert(object, file.clone());
                file
            }
        };
        match wanted.use_ {
            Use::Env => mounted.synced.push(SyncedVar {
                alias: alias.clone(),
                var: wanted.name.clone(),
            }),
            Use::Tls => mounted.tls.push(TlsSync {
                alias: alias.clone(),
                secret: wanted.name.clone(),
            }),
            Use::File => {}
        }
        mounted.placed.push((wanted.annotation.clone(), alias));
    }
    Ok(mounted)
}

/// A `tls-secret.` object must be a certificate's backing secret read as PEM: the provider
/// splits that file into the private key and the chain. A `cert/` gives only the public part,
/// a `key/` only the public key, PKCS#12 or an encoding the provider decodes are not PEM.
fn check_tls_object(annotation: &str, object: &ObjectRef) -> Result<(), Denial> {
    let problem = match (object.object_type, object.format, object.encoding) {
        (ObjectType::Cert | ObjectType::Key, ..) => format!(
            "names a {} object, which holds no private key",
            object.object_type.as_str()
        ),
        (_, Some(ObjectFormat::Pfx), _) => {
            "asks format=pfx, which is not the PEM the provider splits into tls.key and tls.crt"
                .to_owned()
        }
        (_, _, Some(encoding @ (ObjectEncoding::Hex | ObjectEncoding::Base64))) => format!(
            "asks encoding={}, which would turn the PEM into bytes the provider cannot split",
            encoding.as_str()
        ),
        _ => return Ok(()),
    };
    Err(Denial::annotation(
        annotation,
        format!(
            "{problem}; name the certificate as a secret (`{}`, the default type): its backing secret holds \
             the private key and the chain",
            object.name
        ),
    ))
}

/// A generated name held by an SPC that is not kvinject's: never overwritten.
fn refuse_foreign_spc(
    spc: &GeneratedSpc,
    namespace: &str,
    facts: &dyn ClusterFacts,
) -> Result<(), Denial> {
    match facts.secret_provider_class(namespace, &spc.name) {
        Some(existing) if !existing.managed_by_kvinject => Err(Denial::new(format!(
            "SecretProviderClass {} in namespace {namespace} exists but is not labelled {}: {}; kvinject \
             will not overwrite it: rename or delete that SecretProviderClass",
            spc.name,
            keys::MANAGED_BY_LABEL,
            keys::MANAGED_BY_VALUE
        ))
        .because(DenialReason::Conflict)),
        _ => Ok(()),
    }
}

/// A TLS Secret another SPC of the namespace already syncs, unless it is a kvinject SPC in use
/// syncing it from the same certificate (a rollout that changed other annotations): the CSI
/// driver would let the two overwrite each other's Secret.
fn refuse_tls_conflicts(
    group: &[&Wanted],
    vault: &str,
    spc_name: &str,
    namespace: &str,
    facts: &dyn ClusterFacts,
) -> Result<(), Denial> {
    for wanted in group.iter().filter(|w| w.use_ == Use::Tls) {
        let object = &wanted.object;
        let certificate = certificate_id(vault, &object.name, object.version.as_deref());
        let syncs = facts.secret_syncs(namespace, &wanted.name);
        let Some(other) = syncs.iter().find(|sync| {
            sync.spc != spc_name
                && !(sync.managed_by_kvinject
                    && sync.tls_certificate.as_ref() == Some(&certificate))
        }) else {
            continue;
        };
        let secret = &wanted.name;
        let problem = match (&other.tls_certificate, other.managed_by_kvinject) {
            (_, false) => format!(
                "Secret {secret} in namespace {namespace} is synced by SecretProviderClass {}, which is not \
                 kvinject's; kvinject will not have the CSI driver overwrite it: name another Secret",
                other.spc
            ),
            (source, true) => format!(
                "Secret {secret} in namespace {namespace} is synced from {} by SecretProviderClass {}, which \
                 pods use, and this pod asks for certificate {certificate}; a Secret holds one certificate: \
                 name another Secret (and point the Ingress at it), or let the pods of the other certificate go \
                 first (scale them to zero, or roll out with the Recreate strategy). To renew a certificate, \
                 leave its version unpinned and enable the CSI driver's rotation",
                source
                    .as_deref()
                    .map_or("an object kvinject cannot read".to_owned(), |c| {
                        format!("certificate {c}")
                    }),
                other.spc
            ),
        };
        return Err(Denial::annotation(&wanted.annotation, problem).because(DenialReason::Conflict));
    }
    Ok(())
}

/// What named the pod's vault, for a guardrail denial.
fn pod_vault_source(request: &Request<'_>) -> String {
    match request.vault {
        Some(_) => format!("annotation {VAULT}"),
        None => "the vault of its namespace or --default-vault".to_owned(),
    }
}
