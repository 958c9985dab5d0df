//! Turns what a pod needs into RFC 6902 operations against the pod exactly as received.
//!
//! Only `add` operations: existing entries are checked, never replaced or removed. An entry
//! kvinject would add that already exists in exactly kvinject's form is skipped (that is what
//! makes a second pass empty); one that exists in another form is a conflict and a [`Denial`].

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use serde_json::{Value, json};

use crate::core::annotations::{CSI_DRIVER, INJECTED, MOUNT_PATH};
use crate::core::denial::{Denial, DenialReason};
use crate::core::pod::{ContainerView, PodView};

/// One env var to wire: `<var>` from key `<key>` of Secret `<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvWire {
    /// Env var name.
    pub var: String,
    /// Kubernetes Secret name.
    pub secret: String,
    /// Key in that Secret.
    pub key: String,
    /// The annotation that asked for it (named in conflicts).
    pub annotation: String,
}

/// One CSI volume: its name, the SPC it mounts and where each target container mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeWire {
    /// Volume name.
    pub name: String,
    /// SPC the CSI volume points at.
    pub spc_name: String,
    /// Where each target container mounts the volume.
    pub mount_path: String,
}

/// Everything the patch adds to a pod.
#[derive(Debug, Clone)]
pub struct Wiring<'a> {
    /// The CSI volumes, one per SPC.
    pub volumes: &'a [VolumeWire],
    /// The marker's value: every SPC name, comma-separated.
    pub marker: &'a str,
    /// Env vars for each target container, sorted by var.
    pub env: &'a [EnvWire],
    /// Containers (and init containers) to wire.
    pub targets: &'a [ContainerView<'a>],
}

/// The length of `patch` as compact JSON, counted without building the text.
pub fn encoded_len(patch: &[PatchOperation]) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing JSON values into a counter cannot fail; a failure would count as oversized.
    match serde_json::to_writer(&mut counter, patch) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// The operations that bring `pod` to `wiring`; empty when it is already there.
pub fn operations(pod: &PodView<'_>, wiring: &Wiring<'_>) -> Result<Vec<PatchOperation>, Denial> {
    let mut ops = Vec::new();
    volume_ops(pod, wiring, &mut ops)?;
    for container in wiring.targets {
        mount_ops(container, wiring, &mut ops)?;
        env_ops(container, wiring, &mut ops)?;
    }
    marker_ops(pod, wiring, &mut ops);
    Ok(ops)
}

fn volume_ops(
    pod: &PodView<'_>,
    wiring: &Wiring<'_>,
    ops: &mut Vec<PatchOperation>,
) -> Result<(), Denial> {
    let mut missing = Vec::new();
    for wanted in wiring.volumes {
        let existing = pod
            .volumes()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == wanted.name.as_str());
        let Some(existing) = existing else {
            missing.push(json!({
                "name": wanted.name,
                "csi": {
                    "driver": CSI_DRIVER,
                    "readOnly": true,
                    "volumeAttributes": { "secretProviderClass": wanted.spc_name },
                },
            }));
            continue;
        };
        let csi = &existing["csi"];
        if csi["driver"] != CSI_DRIVER
            || csi["volumeAttributes"]["secretProviderClass"] != wanted.spc_name.as_str()
        {
            return Err(conflict(format!(
                "pod already has a volume named {} that does not mount SecretProviderClass {}; \
                 kvinject owns that volume name: rename your volume",
                wanted.name, wanted.spc_name
            )));
        }
    }
    if !missing.is_empty() {
        append(ops, &["spec", "volumes"], pod.volumes().is_some(), missing);
    }
    Ok(())
}

fn mount_ops(
    container: &ContainerView<'_>,
    wiring: &Wiring<'_>,
    ops: &mut Vec<PatchOperation>,
) -> Result<(), Denial> {
    let mounts = container.value["volumeMounts"].as_array();
    let mut missing = Vec::new();
    'volumes: for volume in wiring.volumes {
        let wanted = trim_slash(&volume.mount_path);
        for mount in mounts.into_iter().flatten() {
            let name = mount["name"].as_str().unwrap_or("");
            let path = trim_slash(mount["mountPath"].as_str().unwrap_or(""));
            match (name == volume.name, path == wanted) {
                (true, true) => continue 'volumes,
                (false, false) => continue,
                (true, false) => {
                    return Err(conflict(format!(
                        "container {} already mounts volume {name} at {path}, not at {wanted}; remove that \
                         volumeMount or set annotation {MOUNT_PATH}: {path}",
                        container.name
                    )));
                }
                (false, true) => {
                    return Err(conflict(format!(
                        "container {} already mounts volume {name} at {wanted}, where annotation {MOUNT_PATH} \
                         puts the Key Vault objects; set {MOUNT_PATH} to another directory",
                        container.name
                    )));
                }
            }
        }
        missing
            .push(json!({ "name": volume.name, "mountPath": volume.mount_path, "readOnly": true }));
    }
    if !missing.is_empty() {
        append(
            ops,
            &container_path(container, "volumeMounts"),
            mounts.is_some(),
            missing,
        );
    }
    Ok(())
}

fn env_ops(
    container: &ContainerView<'_>,
    wiring: &Wiring<'_>,
    ops: &mut Vec<PatchOperation>,
) -> Result<(), Denial> {
    let existing = container.value["env"].as_array();
    let mut missing = Vec::new();
    for wire in wiring.env {
        let entry = json!({
            "name": wire.var,
            "valueFrom": { "secretKeyRef": { "name": wire.secret, "key": wire.key } },
        });
        match existing
            .into_iter()
            .flatten()
            .find(|e| e["name"] == wire.var.as_str())
        {
            Some(current) if same_secret_ref(current, &entry) => {}
            Some(_) => {
                return Err(conflict_on(
                    &wire.annotation,
                    format!(
                        "container {} already defines env var {}; remove it from the container or drop the annotation",
                        container.name, wire.var
                    ),
                ));
            }
            None => missing.push(entry),
        }
    }
    if !missing.is_empty() {
        append(
            ops,
            &container_path(container, "env"),
            existing.is_some(),
            missing,
        );
    }
    Ok(())
}

fn marker_ops(pod: &PodView<'_>, wiring: &Wiring<'_>, ops: &mut Vec<PatchOperation>) {
    if pod.annotation(INJECTED) == Some(wiring.marker) {
        return;
    }
    let value = Value::String(wiring.marker.to_owned());
    if pod.annotations().is_some() {
        // `add` on an existing member replaces it, so a stale marker is corrected without `replace`.
        add(ops, &["metadata", "annotations", INJECTED], value);
    } else if pod.value().get("metadata").is_some() {
        add(
            ops,
            &["metadata", "annotations"],
            json!({ INJECTED: value }),
        );
    } else {
        add(
            ops,
            &["metadata"],
            json!({ "annotations": { INJECTED: value } }),
        );
    }
}

fn conflict(what: String) -> Denial {
    Denial::new(what).because(DenialReason::Conflict)
}

fn conflict_on(key: &str, what: String) -> Denial {
    Denial::annotation(key, what).because(DenialReason::Conflict)
}

/// Two env entries that read the same Secret key (extra fields such as `optional` are the user's).
fn same_secret_ref(current: &Value, wanted: &Value) -> bool {
    let (have, want) = (
        &current["valueFrom"]["secretKeyRef"],
        &wanted["valueFrom"]["secretKeyRef"],
    );
    current.get("value").is_none() && have["name"] == want["name"] && have["key"] == want["key"]
}

fn container_path(container: &ContainerView<'_>, field: &str) -> Vec<String> {
    vec![
        "spec".into(),
        container.list.field().into(),
        container.index.to_string(),
        field.into(),
    ]
}

/// Appends `items` to the array at `path`, creating it with them when it does not exist.
fn append<S: AsRef<str>>(
    ops: &mut Vec<PatchOperation>,
    path: &[S],
    exists: bool,
    items: Vec<Value>,
) {
    if exists {
        for item in items {
            let mut tokens: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
            tokens.push("-");
            add(ops, &tokens, item);
        }
    } else {
        add(ops, path, Value::Array(items));
    }
}

fn add<S: AsRef<str>>(ops: &mut Vec<PatchOperation>, path: &[S], value: Value) {
    let path = PointerBuf::from_tokens(path.iter().map(AsRef::as_ref));
    ops.push(PatchOperation::Add(AddOperation { path, value }));
}

fn trim_slash(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}
