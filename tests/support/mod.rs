//! Tiny fluent fixtures for pods and cluster facts, shared by the integration tests.
#![allow(dead_code)]

use kvinject::core::facts::DocumentFacts;
use kvinject::core::patch::JsonPatch;
use kvinject::core::plan::{self, Decision, InjectionPlan, Settings};
use serde_json::{Value, json};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT: &str = "5e2c6f4a-9d1b-4c3e-8a7f-0b1c2d3e4f50";
pub const OTHER_CLIENT: &str = "11111111-2222-3333-4444-555555555555";
pub const NS: &str = "shop";

/// A pod under construction.
#[derive(Clone)]
pub struct PodBuilder(pub Value);

/// A labelled pod with no containers yet, running as ServiceAccount `api`.
pub fn pod() -> PodBuilder {
    PodBuilder(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": NS,
            "labels": { "kvinject.io/inject": "true" },
            "annotations": {},
        },
        "spec": { "serviceAccountName": "api", "containers": [] },
    }))
}

impl PodBuilder {
    pub fn container(mut self, name: &str) -> Self {
        self.0["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": name, "image": format!("example/{name}:1") }));
        self
    }

    pub fn init_container(mut self, name: &str, sidecar: bool) -> Self {
        let spec = self.0["spec"].as_object_mut().unwrap();
        let list = spec.entry("initContainers").or_insert(json!([]));
        let mut container = json!({ "name": name, "image": format!("example/{name}:1") });
        if sidecar {
            container["restartPolicy"] = json!("Always");
        }
        list.as_array_mut().unwrap().push(container);
        self
    }

    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["annotations"][key] = json!(value);
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["labels"][key] = json!(value);
        self
    }

    pub fn without_label(mut self, key: &str) -> Self {
        self.0["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(key);
        self
    }

    pub fn service_account(mut self, name: &str) -> Self {
        self.0["spec"]["serviceAccountName"] = json!(name);
        self
    }

    /// Sets any field by JSON pointer, creating nothing: the parent must exist.
    pub fn set(mut self, pointer: &str, value: Value) -> Self {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let key = &key.replace("~1", "/").replace("~0", "~");
        let target = if parent.is_empty() {
            &mut self.0
        } else {
            self.0.pointer_mut(parent).unwrap()
        };
        match target {
            Value::Object(map) => {
                map.insert(key.to_owned(), value);
            }
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            _ => panic!("{pointer}: parent is not a container"),
        }
        self
    }

    /// Removes a field by JSON pointer.
    pub fn remove(mut self, pointer: &str) -> Self {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        self.0
            .pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key);
        self
    }

    /// The usual request: one secret as env var, vault and tenant on the pod.
    pub fn wants_db_password(self) -> Self {
        self.annotate("kvinject.io/vault", "shop-kv")
            .annotate("kvinject.io/tenant-id", TENANT)
            .annotate("kvinject.io/env.DB_PASSWORD", "db-password")
    }

    pub fn build(self) -> Value {
        self.0
    }
}

/// Facts: namespace `shop` opted in, ServiceAccount `api` with [`CLIENT`], plus `extra` documents.
pub fn facts_with(extra: &[Value]) -> DocumentFacts {
    let mut documents = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS,
            "labels": {"kvinject.io/injection": "enabled"}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api", "namespace": NS,
            "annotations": {"azure.workload.identity/client-id": CLIENT}}}),
    ];
    documents.extend(extra.iter().cloned());
    DocumentFacts::from_documents(&documents, NS)
}

pub fn facts() -> DocumentFacts {
    facts_with(&[])
}

pub fn settings() -> Settings {
    Settings::new(None, None, "kvinject")
}

pub fn binding(selector: &str) -> Value {
    json!({"apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
        "metadata": {"name": format!("{selector}-binding"), "namespace": NS},
        "spec": {"azureIdentity": "id", "selector": selector}})
}

pub fn service_account(name: &str, client_id: Option<&str>) -> Value {
    let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NS}});
    if let Some(id) = client_id {
        sa["metadata"]["annotations"] = json!({"azure.workload.identity/client-id": id});
    }
    sa
}

/// Runs the core in namespace [`NS`].
pub fn decide(pod: &Value, facts: &DocumentFacts) -> Result<Decision, String> {
    plan::plan_pod(
        &kvinject::core::node::Node::from(pod),
        NS,
        facts,
        &settings(),
    )
    .map_err(|d| d.message().to_owned())
}

/// Runs the core and expects an injection.
pub fn inject(pod: &Value, facts: &DocumentFacts) -> InjectionPlan {
    match decide(pod, facts) {
        Ok(Decision::Inject(plan)) => plan,
        other => panic!("expected an injection, got {other:?}"),
    }
}

/// Runs the core and expects a denial; returns its message.
pub fn deny(pod: &Value, facts: &DocumentFacts) -> String {
    match decide(pod, facts) {
        Err(message) => message,
        Ok(decision) => panic!("expected a denial, got {decision:?}"),
    }
}

/// An SPC's `objects` parameter read as the provider reads it: one mapping per object.
pub fn provider_objects(spc: &Value) -> Vec<Value> {
    let text = spc["spec"]["parameters"]["objects"].as_str().unwrap();
    let parsed: Value = serde_yaml_ng::from_str(text).unwrap();
    parsed["array"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| serde_yaml_ng::from_str(entry.as_str().unwrap()).unwrap())
        .collect()
}

/// Applies a patch, read from its text, with the json-patch crate (the oracle suite re-checks
/// with other implementations).
pub fn apply(pod: &Value, patch: &JsonPatch) -> Value {
    let operations = patch.operations().expect("the patch text is a JSON Patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &operations).expect("patch applies to the pod it was made for");
    patched
}
pub mod apiserver;
pub mod keyvault;
pub mod webhook;
