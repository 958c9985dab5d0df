//! The offline adapter: `kvinject inject` over manifests (`docs/contract.md` section 10).
//!
//! Finds every pod and pod template among the documents, runs the same core the webhook runs,
//! applies its patch, and appends the SecretProviderClasses the pods need. Every other document
//! comes back equal in content. No I/O here: `cli` reads and prints.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::core::denial::Denial;
use crate::core::facts::{ClusterFacts, DocumentFacts, LayeredFacts, str_at};
use crate::core::plan::{self, Decision, Settings};
use crate::core::pod::template_path;

/// The result of injecting a set of documents.
#[derive(Debug, Clone, Default)]
pub struct Injected {
    /// The input documents, pods and templates mutated, then the generated SPCs not already present.
    pub documents: Vec<Value>,
    /// Soft problems, each prefixed with the document it concerns.
    pub warnings: Vec<String>,
    /// Per generate-mode pod: the document it concerns, its vault and object references.
    pub objects: Vec<(String, plan::PodObjects)>,
}

/// Every denial, each prefixed with the document it concerns.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Denied(pub Vec<String>);

/// Injects `documents`; facts are read from the documents themselves. Documents without a
/// namespace belong to `namespace`.
pub fn inject(
    documents: Vec<Value>,
    namespace: &str,
    settings: &Settings,
) -> Result<Injected, Denied> {
    let facts = DocumentFacts::from_documents(&documents, namespace);
    let mut run = Run {
        facts: &facts,
        settings,
        namespace,
        result: Injected::default(),
        generated: Vec::new(),
        generated_facts: DocumentFacts::default(),
        denials: Vec::new(),
    };
    let mut documents = documents;
    for document in &mut documents {
        run.document(document);
    }
    if !run.denials.is_empty() {
        return Err(Denied(run.denials));
    }
    let mut seen = BTreeSet::new();
    for spc in run.generated {
        let key = (
            str_at(&spc, &["metadata", "namespace"])
                .unwrap_or_default()
                .to_owned(),
            str_at(&spc, &["metadata", "name"])
                .unwrap_or_default()
                .to_owned(),
        );
        if facts.secret_provider_class(&key.0, &key.1).is_none() && seen.insert(key) {
            documents.push(spc);
        }
    }
    run.result.documents = documents;
    Ok(run.result)
}

struct Run<'a> {
    facts: &'a DocumentFacts,
    settings: &'a Settings,
    namespace: &'a str,
    result: Injected,
    generated: Vec<Value>,
    /// The SPCs generated so far, as facts for the documents after them: as in a cluster, where
    /// the webhook has written them by then (a second TLS Secret conflicts with the first).
    generated_facts: DocumentFacts,
    denials: Vec<String>,
}

impl Run<'_> {
    fn document(&mut self, document: &mut Value) {
        let api_version = str_at(document, &["apiVersion"])
            .unwrap_or_default()
            .to_owned();
        let kind = str_at(document, &["kind"]).unwrap_or_default().to_owned();
        if kind == "List" {
            for item in document["items"].as_array_mut().into_iter().flatten() {
                self.document(item);
            }
            return;
        }
        let label = format!(
            "{kind}/{}",
            str_at(document, &["metadata", "name"]).unwrap_or_default()
        );
        let Some(path) = template_path(&api_version, &kind) else {
            if let Some(warning) = plan::unhandled_workload_warning(&api_version, &kind, document) {
                self.result.warnings.push(format!("{label}: {warning}"));
            }
            return;
        };
        let namespace = str_at(document, &["metadata", "namespace"])
            .unwrap_or(self.namespace)
            .to_owned();
        if !path.is_empty() {
            let template_name = format!("{}.{}", kind, path.join("."));
            for warning in plan::workload_warnings(document, &template_name) {
                self.result.warnings.push(format!("{label}: {warning}"));
            }
        }
        let Some(pod) = path
            .iter()
            .try_fold(&mut *document, |node, key| node.get_mut(*key))
        else {
            let denial = Denial::new(format_args!("has no pod template at .{}", path.join(".")));
            self.denials.push(format!("{label}: {denial}"));
            return;
        };
        let facts = LayeredFacts {
            overlay: &self.generated_facts,
            base: self.facts,
        };
        let decision = match plan::plan_pod(pod, &namespace, &facts, self.settings) {
            Ok(decision) => decision,
            Err(denial) => return self.denials.push(format!("{label}: {denial}")),
        };
        for warning in decision.warnings() {
            self.result.warnings.push(format!("{label}: {warning}"));
        }
        if let Decision::Inject(plan) = decision {
            if let Err(error) = json_patch::patch(pod, &plan.patch) {
                // The core built the patch against this very value; failing here is a bug.
                let denial =
                    Denial::new(format_args!("internal error applying the patch: {error}"));
                self.denials.push(format!("{label}: {denial}"));
                return;
            }
            for spc in plan.generated_spcs {
                self.generated_facts.add(&spc.manifest, &namespace);
                self.generated.push(spc.manifest);
            }
            for objects in plan.objects {
                self.result.objects.push((label.clone(), objects));
            }
        }
    }
}
