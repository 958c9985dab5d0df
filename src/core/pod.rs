//! A small borrowed view of the pod fields kvinject reads.
//!
//! The pod stays the JSON it arrived as; nothing here copies or re-serialises it, so fields
//! kvinject does not know are never touched.

use crate::core::denial::Denial;
use crate::core::node::{Key, Node};

/// The kinds that carry a pod, in the apiVersion kvinject handles, and where each keeps it (JSON
/// pointer tokens; empty for a Pod).
const POD_BEARERS: [(&str, &str, &[&str]); 7] = [
    ("v1", "Pod", &[]),
    ("apps/v1", "Deployment", &["spec", "template"]),
    ("apps/v1", "StatefulSet", &["spec", "template"]),
    ("apps/v1", "DaemonSet", &["spec", "template"]),
    ("apps/v1", "ReplicaSet", &["spec", "template"]),
    ("batch/v1", "Job", &["spec", "template"]),
    (
        "batch/v1",
        "CronJob",
        &["spec", "jobTemplate", "spec", "template"],
    ),
];

/// Where a kind keeps its pod template, as JSON pointer tokens (empty for a Pod); `None` for kinds
/// without one, and for apiVersions kvinject does not read (see [`unhandled_pod_bearer`]).
pub fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    POD_BEARERS
        .iter()
        .find(|(version, k, _)| *version == api_version && *k == kind)
        .map(|(_, _, path)| *path)
}

/// A pod-bearing kind in an apiVersion kvinject does not read (`extensions/v1beta1` DaemonSet,
/// `batch/v1beta1` CronJob, ...): where its pod template is, and the apiVersion to use.
pub fn unhandled_pod_bearer(
    api_version: &str,
    kind: &str,
) -> Option<(&'static [&'static str], &'static str)> {
    let (handled, _, path) = POD_BEARERS.iter().find(|(_, k, _)| *k == kind)?;
    (*handled != api_version).then_some((*path, *handled))
}

/// Which list of the pod spec a container sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerList {
    /// `spec.containers`.
    Containers,
    /// `spec.initContainers` (including native sidecars).
    InitContainers,
}

impl ContainerList {
    /// The pod spec field name.
    pub fn field(self) -> &'static str {
        match self {
            Self::Containers => "containers",
            Self::InitContainers => "initContainers",
        }
    }
}

/// One container of the pod, with where it sits.
#[derive(Debug, Clone, Copy)]
pub struct ContainerView<'a> {
    /// The list it belongs to.
    pub list: ContainerList,
    /// Its index in that list.
    pub index: usize,
    /// Its `name`.
    pub name: &'a str,
    /// The container object.
    pub value: &'a Node<'a>,
}

/// Borrowed view of a Pod, or of a pod template (`metadata` + `spec`).
#[derive(Debug, Clone, Copy)]
pub struct PodView<'a> {
    pod: &'a Node<'a>,
}

impl<'a> PodView<'a> {
    /// Wraps a pod; refuses JSON that is not a pod-shaped object.
    pub fn new(pod: &'a Node<'a>) -> Result<Self, Denial> {
        if !pod.is_object() {
            return Err(Denial::new("the pod is not a JSON object"));
        }
        for field in ["metadata", "spec"] {
            if !matches!(pod.get(field), None | Some(Node::Object(_))) {
                return Err(Denial::new(format!("pod field `{field}` is not an object")));
            }
        }
        Ok(Self { pod })
    }

    /// The whole pod.
    pub fn value(&self) -> &'a Node<'a> {
        self.pod
    }

    /// `metadata.labels[key]` when it is a string.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.pod["metadata"]["labels"][key].as_str()
    }

    /// `metadata.annotations`, if present.
    pub fn annotations(&self) -> Option<&'a [(Key<'a>, Node<'a>)]> {
        self.pod["metadata"]["annotations"].as_object()
    }

    /// `metadata.annotations[key]` when it is a string.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.pod["metadata"]["annotations"][key].as_str()
    }

    /// `metadata.name`, else `metadata.generateName` (controller-made pods have no name yet).
    pub fn display_name(&self) -> &'a str {
        let metadata = &self.pod["metadata"];
        metadata["name"]
            .as_str()
            .or_else(|| metadata["generateName"].as_str())
            .unwrap_or("")
    }

    /// `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&'a str> {
        self.pod["metadata"]["namespace"].as_str()
    }

    /// The ServiceAccount the pod runs as (`default` when unset, as the API server defaults it).
    pub fn service_account_name(&self) -> &'a str {
        let spec = &self.pod["spec"];
        spec["serviceAccountName"]
            .as_str()
            .or_else(|| spec["serviceAccount"].as_str())
            .filter(|name| !name.is_empty())
            .unwrap_or("default")
    }

    /// `spec.volumes`, if present.
    pub fn volumes(&self) -> Option<&'a [Node<'a>]> {
        self.pod["spec"]["volumes"].as_array()
    }

    /// Every container of one list, in order.
    pub fn containers(&self, list: ContainerList) -> impl Iterator<Item = ContainerView<'a>> {
        let items = self.pod["spec"][list.field()]
            .as_array()
            .unwrap_or_default();
        items
            .iter()
            .enumerate()
            .map(move |(index, value)| ContainerView {
                list,
                index,
                name: value["name"].as_str().unwrap_or(""),
                value,
            })
    }
}
