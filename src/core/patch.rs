//! Turns what a pod needs into RFC 6902 operations against the pod exactly as received.
//!
//! Only `add` operations: existing entries are checked, never replaced or removed. An entry
//! kvinject would add that already exists in exactly kvinject's form is skipped (that is what
//! makes a second pass empty); one that exists in another form is a conflict and a [`Denial`].

use json_patch::PatchOperation;

use crate::core::annotations::{CSI_DRIVER, INJECTED, MOUNT_PATH};
use crate::core::denial::{Denial, DenialReason};
use crate::core::json;
use crate::core::node::Node;
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

/// A JSON Patch (RFC 6902) of `add` operations, held as the compact JSON text the API server
/// reads: written once, operation by operation, never built as a tree and serialised again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPatch {
    /// The whole array, `[` to `]`.
    text: String,
    /// How many operations it holds.
    operations: usize,
}

impl Default for JsonPatch {
    fn default() -> Self {
        Self {
            text: String::from("[]"),
            operations: 0,
        }
    }
}

impl JsonPatch {
    /// No operation: the pod already carries everything.
    pub fn is_empty(&self) -> bool {
        self.operations == 0
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.operations
    }

    /// The patch as JSON text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The patch as JSON text, owned.
    pub fn into_string(self) -> String {
        self.text
    }

    /// The operations, read back from the text by `json-patch`: what an RFC 6902 implementation
    /// makes of the bytes the API server is sent.
    pub fn operations(&self) -> Result<Vec<PatchOperation>, serde_json::Error> {
        serde_json::from_str(&self.text)
    }

    /// Appends `{"op":"add","path":<tokens as a JSON pointer>,"value":<written by value>}`.
    fn add<'t>(
        &mut self,
        tokens: impl IntoIterator<Item = &'t str>,
        value: impl FnOnce(&mut String),
    ) {
        let text = &mut self.text;
        text.pop(); // the closing `]`
        if self.operations > 0 {
            text.push(',');
        }
        text.push_str(r#"{"op":"add","path":""#);
        // The pointer is written into the JSON string as it is made (RFC 6901: `~` is `~0`,
        // `/` is `~1`), then escaped as JSON.
        for token in tokens {
            text.push('/');
            let mut rest = token;
            while let Some(at) = rest.find(['~', '/']) {
                json::push_escaped(text, &rest[..at]);
                text.push_str(if rest.as_bytes()[at] == b'~' {
                    "~0"
                } else {
                    "~1"
                });
                rest = &rest[at + 1..];
            }
            json::push_escaped(text, rest);
        }
        text.push_str(r#"","value":"#);
        value(text);
        text.push_str("}]");
        self.operations += 1;
    }

    /// Appends `items` to the array at `path`, creating it with them when it does not exist.
    fn append<T>(
        &mut self,
        path: &[&str],
        exists: bool,
        items: &[T],
        write: impl Fn(&mut String, &T),
    ) {
        if exists {
            for item in items {
                let tokens = path.iter().copied().chain(["-"]);
                self.add(tokens, |out| write(out, item));
            }
        } else {
            self.add(path.iter().copied(), |out| {
                json::push_array(out, items, &write)
            });
        }
    }
}

/// The operations that bring `pod` to `wiring`; empty when it is already there.
pub fn operations(pod: &PodView<'_>, wiring: &Wiring<'_>) -> Result<JsonPatch, Denial> {
    let mut patch = JsonPatch::default();
    // About what each operation takes as text, so that the text is seldom copied as it grows.
    let per_container = 192 * (1 + wiring.env.len());
    let estimate = 256 + 256 * wiring.volumes.len() + per_container * wiring.targets.len();
    patch.text.reserve(estimate.min(64 * 1024));
    volume_ops(pod, wiring, &mut patch)?;
    for container in wiring.targets {
        let index = container.index.to_string();
        mount_ops(container, &index, wiring, &mut patch)?;
        env_ops(container, &index, wiring, &mut patch)?;
    }
    marker_ops(pod, wiring, &mut patch);
    Ok(patch)
}

fn volume_ops(pod: &PodView<'_>, wiring: &Wiring<'_>, patch: &mut JsonPatch) -> Result<(), Denial> {
    let mut missing = Vec::new();
    for wanted in wiring.volumes {
        let existing = pod
            .volumes()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == wanted.name.as_str());
        let Some(existing) = existing else {
            missing.push(wanted);
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
        patch.append(
            &["spec", "volumes"],
            pod.volumes().is_some(),
            &missing,
            |out, volume| {
                out.push_str(r#"{"name":"#);
                json::push_string(out, &volume.name);
                out.push_str(r#","csi":{"driver":"#);
                json::push_string(out, CSI_DRIVER);
                out.push_str(r#","readOnly":true,"volumeAttributes":{"secretProviderClass":"#);
                json::push_string(out, &volume.spc_name);
                out.push_str("}}}");
            },
        );
    }
    Ok(())
}

fn mount_ops(
    container: &ContainerView<'_>,
    index: &str,
    wiring: &Wiring<'_>,
    patch: &mut JsonPatch,
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
        missing.push(volume);
    }
    if !missing.is_empty() {
        patch.append(
            &container_path(container, index, "volumeMounts"),
            mounts.is_some(),
            &missing,
            |out, volume| {
                out.push_str(r#"{"name":"#);
                json::push_string(out, &volume.name);
                out.push_str(r#","mountPath":"#);
                json::push_string(out, &volume.mount_path);
                out.push_str(r#","readOnly":true}"#);
            },
        );
    }
    Ok(())
}

fn env_ops(
    container: &ContainerView<'_>,
    index: &str,
    wiring: &Wiring<'_>,
    patch: &mut JsonPatch,
) -> Result<(), Denial> {
    let existing = container.value["env"].as_array();
    let mut missing = Vec::with_capacity(wiring.env.len());
    for wire in wiring.env {
        match existing
            .into_iter()
            .flatten()
            .find(|e| e["name"] == wire.var.as_str())
        {
            Some(current) if reads_secret_key(current, wire) => {}
            Some(_) => {
                return Err(conflict_on(
                    &wire.annotation,
                    format!(
                        "container {} already defines env var {}; remove it from the container or drop the annotation",
                        container.name, wire.var
                    ),
                ));
            }
            None => missing.push(wire),
        }
    }
    if !missing.is_empty() {
        patch.append(
            &container_path(container, index, "env"),
            existing.is_some(),
            &missing,
            |out, wire| {
                out.push_str(r#"{"name":"#);
                json::push_string(out, &wire.var);
                out.push_str(r#","valueFrom":{"secretKeyRef":{"name":"#);
                json::push_string(out, &wire.secret);
                out.push_str(r#","key":"#);
                json::push_string(out, &wire.key);
                out.push_str("}}}");
            },
        );
    }
    Ok(())
}

fn marker_ops(pod: &PodView<'_>, wiring: &Wiring<'_>, patch: &mut JsonPatch) {
    if pod.annotation(INJECTED) == Some(wiring.marker) {
        return;
    }
    let marker = |out: &mut String| json::push_string(out, wiring.marker);
    if pod.annotations().is_some() {
        // `add` on an existing member replaces it, so a stale marker is corrected without `replace`.
        patch.add(["metadata", "annotations", INJECTED], marker);
    } else if pod.value().get("metadata").is_some() {
        patch.add(["metadata", "annotations"], |out| {
            out.push('{');
            json::push_key(out, INJECTED);
            marker(out);
            out.push('}');
        });
    } else {
        patch.add(["metadata"], |out| {
            out.push_str(r#"{"annotations":{"#);
            json::push_key(out, INJECTED);
            marker(out);
            out.push_str("}}");
        });
    }
}

fn conflict(what: String) -> Denial {
    Denial::new(what).because(DenialReason::Conflict)
}

fn conflict_on(key: &str, what: String) -> Denial {
    Denial::annotation(key, what).because(DenialReason::Conflict)
}

/// An env entry that reads the Secret key `wire` wires (extra fields such as `optional` are the
/// user's).
fn reads_secret_key(current: &Node, wire: &EnvWire) -> bool {
    let have = &current["valueFrom"]["secretKeyRef"];
    current.get("value").is_none()
        && have["name"] == wire.secret.as_str()
        && have["key"] == wire.key.as_str()
}

fn container_path<'a>(
    container: &ContainerView<'_>,
    index: &'a str,
    field: &'a str,
) -> [&'a str; 4] {
    ["spec", container.list.field(), index, field]
}

fn trim_slash(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_json_pointers_written_as_json_strings() {
        let mut patch = JsonPatch::default();
        patch.add(["metadata", "annotations", "kvinject.io/injected"], |out| {
            out.push('1')
        });
        patch.add(["a~b/c", "~~//", "q\"\\\u{1}", ""], |out| out.push('2'));
        let expected = serde_json::json!([
            {"op": "add", "path": "/metadata/annotations/kvinject.io~1injected", "value": 1},
            {"op": "add", "path": "/a~0b~1c/~0~0~1~1/q\"\\\u{1}/", "value": 2},
        ]);
        assert_eq!(patch.as_str(), expected.to_string());
        assert_eq!(patch.len(), 2);
    }
}
