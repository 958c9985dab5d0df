//! The pod's kvinject annotations, read and checked for form: names, values, mount path,
//! target containers. Nothing here asks the cluster; `plan` decides what the request means.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::annotations::{
    CLIENT_ID, CONTAINERS, DEFAULT_MOUNT_PATH, ENV_PREFIX, FILE_PREFIX, GENERATED_NAME_PREFIX,
    INJECT, INJECTED, KNOWN_POD_KEYS, MAX_KEY_NAME_LEN, MOUNT_PATH, PREFIX, RESTART_ON_ROTATION,
    RESTARTED_AT, SECRET_PROVIDER_CLASS, TENANT_ID, TLS_SECRET_PREFIX, VAULT,
};
use crate::core::denial::{Denial, warning};
use crate::core::pod::{ContainerList, ContainerView, PodView};
use crate::core::reference::ObjectRef;

/// The pod's kvinject annotations, checked for form.
#[derive(Debug, Default)]
pub struct Request<'a> {
    /// `kvinject.io/vault`.
    pub vault: Option<&'a str>,
    /// `kvinject.io/tenant-id`.
    pub tenant_id: Option<&'a str>,
    /// `kvinject.io/mount-path`, unchecked: see [`Request::mount_path`].
    mount_path: Option<&'a str>,
    /// `kvinject.io/containers`.
    pub containers: Option<&'a str>,
    /// `kvinject.io/client-id`.
    pub client_id: Option<&'a str>,
    /// `kvinject.io/secret-provider-class` (reference mode).
    pub spc: Option<&'a str>,
    /// `env.<VAR>` annotations: VAR -> reference (generate mode) or synced key (reference mode).
    pub env: BTreeMap<&'a str, &'a str>,
    /// `file.<NAME>` annotations: NAME -> reference.
    pub files: BTreeMap<&'a str, &'a str>,
    /// `tls-secret.<SECRET>` annotations: SECRET -> reference (generate mode) or the SPC object
    /// it is synced from (reference mode).
    pub tls_secrets: BTreeMap<&'a str, &'a str>,
    /// Soft problems found while reading.
    pub warnings: Vec<String>,
}

impl<'a> Request<'a> {
    /// Reads every `kvinject.io/` annotation of the pod; denies a malformed one.
    pub fn read(view: &PodView<'a>) -> Result<Self, Denial> {
        let mut request = Self::default();
        for (key, value) in view.annotations().into_iter().flatten() {
            let key: &str = key;
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
            match key {
                VAULT => request.vault = Some(value),
                TENANT_ID => request.tenant_id = Some(value),
                MOUNT_PATH => request.mount_path = Some(value),
                CONTAINERS => request.containers = Some(value),
                CLIENT_ID => request.client_id = Some(value),
                SECRET_PROVIDER_CLASS => request.spc = Some(value),
                INJECTED | RESTARTED_AT => {}
                RESTART_ON_ROTATION if value != "true" && value != "false" => {
                    request.warnings.push(warning(format_args!(
                        "annotation {RESTART_ON_ROTATION}: {value:?} means nothing; only \"true\" restarts the workload when an object its env vars read is rotated"
                    )))
                }
                RESTART_ON_ROTATION => {}
                INJECT if value != "true" && value != "false" => request.warnings.push(warning(
                    format_args!(
                        "annotation {INJECT}: {value:?} means nothing; only \"false\" (skip this pod) does"
                    ),
                )),
                INJECT => {}
                _ => {
                    if let Some(var) = key.strip_prefix(ENV_PREFIX) {
                        check_env_var(key, var)?;
                        request.env.insert(var, value);
                    } else if let Some(file) = key.strip_prefix(FILE_PREFIX) {
                        check_file_name(key, file)?;
                        request.files.insert(file, value);
                    } else if let Some(secret) = key.strip_prefix(TLS_SECRET_PREFIX) {
                        check_tls_secret_name(key, secret)?;
                        request.tls_secrets.insert(secret, value);
                    } else {
                        debug_assert!(!KNOWN_POD_KEYS.contains(&key));
                        request.warnings.push(warning(format_args!(
                            "unknown annotation {key} is ignored; the keys are {}",
                            KNOWN_POD_KEYS.join(", ")
                        )));
                    }
                }
            }
        }
        Ok(request)
    }

    /// How many Key Vault objects the annotations ask for (`env.`, `file.` and `tls-secret.`).
    pub fn object_count(&self) -> usize {
        self.env.len() + self.files.len() + self.tls_secrets.len()
    }

    /// Whether no annotation asks for anything.
    pub fn asks_nothing(&self) -> bool {
        self.spc.is_none() && self.object_count() == 0
    }

    /// The mount path: the annotation, checked, or the default.
    pub fn mount_path(&self) -> Result<&'a str, Denial> {
        let Some(path) = self.mount_path else {
            return Ok(DEFAULT_MOUNT_PATH);
        };
        let problem = if !path.starts_with('/') {
            Some("is not an absolute path")
        } else if path.trim_end_matches('/').is_empty() {
            Some("is the root directory")
        } else if path
            .split('/')
            .any(|segment| segment == ".." || segment == ".")
        {
            Some("contains a `.` or `..` segment")
        } else if path.trim_end_matches('/').contains("//") {
            Some("contains an empty segment (`//`)")
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

/// Reference mode's checks on the annotations alone: a valid SPC name, no `file.` annotations
/// and no `?vault=` option (the SPC names its one vault).
pub fn check_reference_mode(request: &Request<'_>, spc_name: &str) -> Result<(), Denial> {
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
    let values = [
        (ENV_PREFIX, &request.env),
        (TLS_SECRET_PREFIX, &request.tls_secrets),
    ];
    for (prefix, entries) in values {
        if let Some((name, _)) = entries.iter().find(|(_, value)| names_vault_option(value)) {
            return Err(Denial::annotation(
                &format!("{prefix}{name}"),
                format!(
                    "the option ?vault= cannot be used with {SECRET_PROVIDER_CLASS}: SecretProviderClass {spc_name} \
                     names the one vault the pod reads; remove the option, or remove {SECRET_PROVIDER_CLASS} to let \
                     kvinject generate one SecretProviderClass per vault"
                ),
            ));
        }
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

/// Whether an annotation value carries a `vault=` option.
fn names_vault_option(value: &str) -> bool {
    value.split_once('?').is_some_and(|(_, options)| {
        options
            .split('&')
            .any(|o| o.trim_start().starts_with("vault="))
    })
}

/// Parses an object reference; a denial naming the annotation when it is malformed.
pub fn parse_reference(annotation: &str, value: &str) -> Result<ObjectRef, Denial> {
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

fn check_tls_secret_name(key: &str, secret: &str) -> Result<(), Denial> {
    let problem = if !is_dns_subdomain(secret) {
        "is not a Secret name (lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit)"
    } else if secret.starts_with(GENERATED_NAME_PREFIX) {
        "starts with kvinject-, which is kept for the Secrets kvinject generates"
    } else {
        return Ok(());
    };
    Err(Denial::annotation(
        key,
        format!(
            "`{secret}` {problem}; name the Secret as the Ingress's spec.tls[].secretName does, e.g. {TLS_SECRET_PREFIX}shop-tls"
        ),
    ))
}

/// A DNS-1123 subdomain, the form of most Kubernetes object names: at most 253 characters,
/// dot-separated labels of lowercase letters, digits and `-`, each starting and ending with a
/// letter or digit.
fn is_dns_subdomain(name: &str) -> bool {
    let label = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

/// Whether the pod carries kvinject annotations that ask for something.
pub fn has_request_annotations(view: &PodView<'_>) -> bool {
    view.annotations()
        .into_iter()
        .flatten()
        .any(|(key, _)| key.starts_with(PREFIX) && key != INJECTED && key != INJECT)
}

/// The containers to wire: those `kvinject.io/containers` names, else every app container.
pub fn target_containers<'a>(
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
    // By name, the first of each name: looking names up stays linear in the pod's size.
    let mut by_name: BTreeMap<&str, ContainerView<'a>> = BTreeMap::new();
    for container in containers.iter().chain(&init) {
        by_name.entry(container.name).or_insert(*container);
    }
    let mut targets: Vec<ContainerView<'a>> = Vec::new();
    let mut chosen = BTreeSet::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(found) = by_name.get(name) else {
            let known: Vec<&str> = containers.iter().chain(&init).map(|c| c.name).collect();
            return Err(Denial::annotation(
                CONTAINERS,
                format!(
                    "names container {name:?}, which the pod does not have; its containers are [{}]",
                    known.join(", ")
                ),
            ));
        };
        if chosen.insert(found.name) {
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
