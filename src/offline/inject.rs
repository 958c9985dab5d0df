//! The offline adapter: `kvinject inject` over manifests (`docs/contract.md` section 10).
//!
//! Finds every pod and pod template among the documents, runs the same core the webhook runs,
//! applies its patch, and appends the SecretProviderClasses the pods need. Every other document
//! comes back equal in content. No I/O here: `cli` reads and prints.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::core::denial::Denial;
use crate::core::facts::{ClusterFacts, DocumentFacts, LayeredFacts, str_at};
use crate::core::identity::PodIdentity;
use crate::core::node::Node;
use crate::core::plan::{self, Decision, InjectionPlan, Settings, SkipReason};
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

/// What the core decided for one pod or pod template: what `kvinject explain` prints.
#[derive(Debug, Clone)]
pub struct PodReport {
    /// `<Kind>/<name>` of the document.
    pub document: String,
    /// The namespace the pod runs in.
    pub namespace: String,
    /// The decision.
    pub outcome: Outcome,
    /// Soft problems with the document and the pod.
    pub warnings: Vec<String>,
    /// AAD Pod Identity: the AzureIdentityBindings the pod's selector matches.
    pub bindings: Vec<String>,
}

/// How a pod came out.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Injected as the plan says.
    Injected(Box<InjectionPlan>),
    /// Left alone.
    Skipped(SkipReason),
    /// Denied: the message, which names the annotation and the fix.
    Denied(String),
}

/// Every denial, each prefixed with the document it concerns.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Denied(pub Vec<String>);

/// Injects `documents`; facts are read from the documents themselves. Documents without a
/// namespace belong to `namespace`.
pub fn inject(
    mut documents: Vec<Value>,
    namespace: &str,
    settings: &Settings,
) -> Result<Injected, Denied> {
    let mut run = Run::over(&mut documents, namespace, settings);
    if !run.denials.is_empty() {
        return Err(Denied(run.denials));
    }
    let mut seen = BTreeSet::new();
    for (namespace, spc) in run.generated {
        let name = str_at(&spc, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned();
        if run.facts.secret_provider_class(&namespace, &name).is_none()
            && seen.insert((namespace, name))
        {
            documents.push(spc);
        }
    }
    run.result.documents = documents;
    Ok(run.result)
}

/// What the core decides for every pod and pod template of `documents`, denied ones included,
/// in document order; facts are read from the documents as for [`inject`].
pub fn explain(mut documents: Vec<Value>, namespace: &str, settings: &Settings) -> Vec<PodReport> {
    Run::over(&mut documents, namespace, settings).reports
}

struct Run<'a> {
    /// The facts the documents themselves hold.
    facts: DocumentFacts,
    settings: &'a Settings,
    namespace: &'a str,
    result: Injected,
    /// Each generated SPC with the namespace its pod runs in.
    generated: Vec<(String, Value)>,
    /// The SPCs generated so far, as facts for the documents after them: as in a cluster, where
    /// the webhook has written them by then (a second TLS Secret conflicts with the first).
    generated_facts: DocumentFacts,
    denials: Vec<String>,
    reports: Vec<PodReport>,
}

impl<'a> Run<'a> {
    /// Reads the facts among `documents`, then runs the core over each pod and template of
    /// them, in order, applying every patch in place.
    fn over(documents: &mut [Value], namespace: &'a str, settings: &'a Settings) -> Self {
        let mut run = Self {
            facts: DocumentFacts::from_documents(documents.iter(), namespace),
            settings,
            namespace,
            result: Injected::default(),
            generated: Vec::new(),
            generated_facts: DocumentFacts::default(),
            denials: Vec::new(),
            reports: Vec::new(),
        };
        for document in documents {
            run.document(document);
        }
        run
    }

    /// Records a pod's outcome; a denial is also one of the run's denials.
    fn report(&mut self, label: &str, namespace: &str, outcome: Outcome, warnings: Vec<String>) {
        if let Outcome::Denied(message) = &outcome {
            self.denials.push(format!("{label}: {message}"));
        }
        for warning in &warnings {
            self.result.warnings.push(format!("{label}: {warning}"));
        }
        let bindings = match &outcome {
            Outcome::Injected(plan) => match &plan.identity {
                PodIdentity::AadPodIdentity { selector } => self
                    .facts
                    .identity_bindings(None, selector)
                    .into_iter()
                    .map(|b| format!("{}/{}", b.namespace, b.name))
                    .collect(),
                PodIdentity::WorkloadIdentity { .. } => Vec::new(),
            },
            _ => Vec::new(),
        };
        self.reports.push(PodReport {
            document: label.to_owned(),
            namespace: namespace.to_owned(),
            outcome,
            warnings,
            bindings,
        });
    }

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
            let read = Node::from(&*document);
            if let Some(warning) = plan::unhandled_workload_warning(&api_version, &kind, &read) {
                self.result.warnings.push(format!("{label}: {warning}"));
            }
            return;
        };
        let named_namespace = str_at(document, &["metadata", "namespace"]).map(str::to_owned);
        let namespace = named_namespace
            .clone()
            .unwrap_or_else(|| self.namespace.to_owned());
        let mut warnings = Vec::new();
        if !path.is_empty() {
            let template_name = format!("{}.{}", kind, path.join("."));
            warnings.extend(plan::workload_warnings(
                &Node::from(&*document),
                &template_name,
            ));
        }
        let Some(pod) = path
            .iter()
            .try_fold(&mut *document, |node, key| node.get_mut(*key))
        else {
            let denial = Denial::new(format_args!("has no pod template at .{}", path.join(".")));
            let outcome = Outcome::Denied(denial.to_string());
            return self.report(&label, &namespace, outcome, warnings);
        };
        let facts = LayeredFacts {
            overlay: &self.generated_facts,
            base: &self.facts,
        };
        let decision = match plan::plan_pod(&Node::from(&*pod), &namespace, &facts, self.settings) {
            Ok(decision) => decision,
            Err(denial) => {
                let outcome = Outcome::Denied(denial.to_string());
                return self.report(&label, &namespace, outcome, warnings);
            }
        };
        warnings.extend(decision.warnings().iter().cloned());
        let plan = match decision {
            Decision::Skip { reason, .. } => {
                return self.report(&label, &namespace, Outcome::Skipped(reason), warnings);
            }
            Decision::Inject(plan) => plan,
        };
        let applied = plan
            .patch
            .operations()
            .map_err(|e| e.to_string())
            .and_then(|ops| json_patch::patch(pod, &ops).map_err(|e| e.to_string()));
        if let Err(error) = applied {
            // The core built the patch against this very value; failing here is a bug.
            let denial = Denial::new(format_args!("internal error applying the patch: {error}"));
            let outcome = Outcome::Denied(denial.to_string());
            return self.report(&label, &namespace, outcome, warnings);
        }
        for spc in &plan.generated_spcs {
            let mut manifest = spc.manifest();
            self.generated_facts.add(&manifest, &namespace);
            if named_namespace.is_none()
                && let Some(metadata) = manifest["metadata"].as_object_mut()
            {
                // Like its pod, it goes where it is applied (`kubectl apply -n`, a Helm release).
                metadata.remove("namespace");
            }
            self.generated.push((namespace.clone(), manifest));
        }
        for objects in &plan.objects {
            self.result.objects.push((label.clone(), objects.clone()));
        }
        self.report(
            &label,
            &namespace,
            Outcome::Injected(Box::new(plan)),
            warnings,
        );
    }
}
